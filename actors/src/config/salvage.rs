//! What is left of a loop or a test once the parts with problems are taken out, so that one
//! problem does not hide the others: a loop with an unknown key still has its files and its tests
//! file checked, a test without `title` still gets its id, verify and dependency checks.
//!
//! A salvaged value is only ever checked, never run: the loader refuses a fleet with any
//! problem, so a stand-in here can never reach an agent.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::LoopConfig;
use crate::tests_file::TestSpec;

/// `value` without what `pointers` name under `prefix` (pointers outside it are ignored). An
/// array element is taken out with its whole array: removing one would renumber the others.
pub(crate) fn without<'a>(
    value: &Value,
    pointers: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> Value {
    let mut out = value.clone();
    for pointer in pointers {
        let Some(rel) = pointer.strip_prefix(prefix) else {
            continue;
        };
        if rel.starts_with('/') {
            remove(&mut out, rel);
        }
    }
    out
}

fn remove(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&key);
        }
        Some(Value::Array(_)) if !parent.is_empty() => remove(value, parent),
        _ => {}
    }
}

/// A loop to check further despite `problems` (pointers under `prefix`), if enough of it is
/// sound: its name and tests file at least.
pub(crate) fn salvage_loop<'a>(
    value: &Value,
    problems: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> Option<LoopConfig> {
    let mut left = without(value, problems, prefix);
    let map = left.as_object_mut()?;
    for key in ["workdir", "init_workdir"] {
        if value.get(key).is_some() && !map.contains_key(key) {
            // Where the workdir is (or whether loopd makes it) is unknown: do not report it
            // missing on top of the problem that hid it.
            map.insert("init_workdir".into(), json!(true));
        }
    }
    if let Some(lp) = parse(&left) {
        return Some(lp);
    }
    // The files and the tests of a loop do not depend on its agent.
    left.as_object_mut()?.insert(
        "agent".into(),
        json!({"kind": "command", "command": ["true"]}),
    );
    parse(&left)
}

/// A test to check further despite `problems` (pointers under `prefix`, `/tests/N`), if its id
/// and verify command are sound.
pub(crate) fn salvage_test<'a>(
    item: &Value,
    problems: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> Option<TestSpec> {
    let mut left = without(item, problems, prefix);
    let map = left.as_object_mut()?;
    // A title is for people; no other check depends on it.
    map.entry("title").or_insert_with(|| json!(""));
    let had_spec = item.get("spec").is_some() || item.get("spec_file").is_some();
    if had_spec && !map.contains_key("spec") && !map.contains_key("spec_file") {
        // Its spec was reported already; do not add "missing `spec`" to it.
        map.insert("spec".into(), json!("(reported above)"));
    }
    parse(&left)
}

fn parse<T: DeserializeOwned>(value: &Value) -> Option<T> {
    serde_json::from_value(value.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_out_what_the_pointers_name_and_nothing_else() {
        let v = json!({"a": 1, "b": {"c": 2, "d/e": 3}, "f": [1, "x"], "g": 4});
        let left = without(
            &v,
            ["/l/a", "/l/b/d~1e", "/l/f/1", "/l", "/other/g", "/lg"],
            "/l",
        );
        assert_eq!(left, json!({"b": {"c": 2}, "g": 4}));
    }

    #[test]
    fn a_loop_with_an_unknown_key_and_a_broken_agent_is_still_checked() {
        let v = json!({"name": "auth", "tests_file": "t.json", "colour": "blue",
                       "max_attempts": "three", "workdir": 3,
                       "agent": {"kind": "shell"}});
        let lp = salvage_loop(
            &v,
            ["/colour", "/max_attempts", "/workdir", "/agent/kind"],
            "",
        )
        .unwrap();
        assert_eq!(lp.name, "auth");
        assert_eq!(lp.max_attempts, 3);
        assert!(lp.init_workdir);
        assert!(
            salvage_loop(&json!({"name": "x", "tests_file": 3}), ["/tests_file"], "").is_none()
        );
    }

    #[test]
    fn a_test_without_title_is_still_checked() {
        let item = json!({"id": "a", "verify": " ", "spec": 7, "depends_on": ["b"], "x": 1});
        let t = salvage_test(
            &item,
            ["/tests/2/spec", "/tests/2/x", "/tests/20/id"],
            "/tests/2",
        )
        .unwrap();
        assert_eq!((t.id.as_str(), t.verify.as_str()), ("a", " "));
        assert_eq!(t.depends_on, ["b"]);
        assert!(
            salvage_test(&json!({"title": "no id", "verify": "true"}), [], "/tests/0").is_none()
        );
    }
}
