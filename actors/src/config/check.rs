//! Validation of a JSON value against one of our generated schemas, with every error turned into
//! `(pointer, what was expected)` in the words of the file format the user wrote.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

use super::locate::escape_segment;

/// Which file format the user wrote, so messages say "table" or "object".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// A TOML file (tables, arrays, integers, strings, booleans).
    Toml,
    /// JSON (a tests file, an API body).
    Json,
}

/// Every schema error of `value` as `(pointer, expected)`; pointers are prefixed with `prefix`.
pub(crate) fn schema_errors(
    schema: &Value,
    value: &Value,
    prefix: &str,
    dialect: Dialect,
) -> Vec<(String, String)> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        // Our own generated schemas always compile; a unit test in `schema` holds that.
        Err(e) => return vec![(prefix.to_string(), format!("internal schema error: {e}"))],
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(value) {
        describe(schema, value, &error, dialect, &mut out);
    }
    for (pointer, _) in &mut out {
        pointer.insert_str(0, prefix);
    }
    out.dedup();
    out
}

fn describe(
    root: &Value,
    instance_root: &Value,
    error: &ValidationError<'_>,
    dialect: Dialect,
    out: &mut Vec<(String, String)>,
) {
    let path = error.instance_path().as_str().to_string();
    let instance = error.instance();
    let found = || found(instance, dialect);
    let sub = subschema_at(root, &path);
    match error.kind() {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => type_name(&t.to_string(), dialect),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| type_name(&t.to_string(), dialect))
                    .filter(|t| t != "null")
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let min = sub
                .and_then(|s| s.get("minimum"))
                .filter(|_| expected == "an integer")
                .map(|m| format!(" >= {m}"))
                .unwrap_or_default();
            out.push((path, format!("expected {expected}{min}, found {}", found())));
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known: Vec<String> = sub
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            for key in unexpected {
                let hint = closest(key, &known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                out.push((
                    format!("{path}/{}", escape_segment(key)),
                    format!("unknown key `{key}`{hint}"),
                ));
            }
        }
        ValidationErrorKind::Required { property } => {
            let key = property.as_str().unwrap_or_default();
            out.push((path, format!("missing required key `{key}`")));
        }
        ValidationErrorKind::Minimum { limit } => {
            out.push((
                path,
                format!("expected a number >= {limit}, found {}", found()),
            ));
        }
        ValidationErrorKind::Maximum { limit } => {
            out.push((
                path,
                format!("expected a number <= {limit}, found {}", found()),
            ));
        }
        ValidationErrorKind::MinItems { limit } => {
            let s = if *limit == 1 { "" } else { "s" };
            out.push((
                path,
                format!("expected at least {limit} item{s}, found {}", found()),
            ));
        }
        ValidationErrorKind::MinLength { limit } => {
            out.push((
                path,
                format!("expected at least {limit} characters, found {}", found()),
            ));
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push((
                path,
                format!("expected {expected_value}, found {}", found()),
            ));
        }
        ValidationErrorKind::Enum { options } => {
            out.push((
                path,
                format!("expected one of {options}, found {}", found()),
            ));
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            one_of(root, instance_root, &path, context, dialect, out)
        }
        _ => out.push((path, error.to_string())),
    }
}

/// A `oneOf`/`anyOf` failed. Tagged enums (`kind = ...`) fail every branch on the tag but one:
/// report that branch's errors. Otherwise name the tag's choices or the alternative keys.
fn one_of(
    root: &Value,
    instance_root: &Value,
    path: &str,
    context: &[Vec<ValidationError<'static>>],
    dialect: Dialect,
    out: &mut Vec<(String, String)>,
) {
    let is_tag_error = |e: &ValidationError<'_>| {
        matches!(
            e.kind(),
            ValidationErrorKind::Constant { .. } | ValidationErrorKind::Enum { .. }
        )
    };
    let matching: Vec<_> = context
        .iter()
        .filter(|branch| !branch.iter().any(is_tag_error))
        .collect();
    let consts: Vec<(String, String)> = context
        .iter()
        .flatten()
        .filter_map(|e| match e.kind() {
            ValidationErrorKind::Constant { expected_value } => Some((
                e.instance_path().as_str().to_string(),
                expected_value.to_string(),
            )),
            _ => None,
        })
        .collect();
    if matching.len() == 1 && !consts.is_empty() {
        for e in matching[0] {
            describe(root, instance_root, e, dialect, out);
        }
        return;
    }
    if !consts.is_empty() && consts.len() == context.len() {
        let tag_path = consts[0].0.clone();
        let choices: Vec<_> = consts.iter().map(|(_, v)| v.as_str()).collect();
        let found = instance_root
            .pointer(&tag_path)
            .map(|v| found(v, dialect))
            .unwrap_or_default();
        out.push((
            tag_path,
            format!("expected one of {}, found {found}", choices.join(", ")),
        ));
        return;
    }
    // A key every branch requires and the value lacks (an enum's tag), or alternative keys of
    // which one is required (an alias).
    let required_in = |branch: &Vec<ValidationError<'static>>| -> Vec<String> {
        branch
            .iter()
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::Required { property } => property.as_str().map(String::from),
                _ => None,
            })
            .collect()
    };
    let per_branch: Vec<Vec<String>> = context.iter().map(required_in).collect();
    if let Some(common) = per_branch.first().and_then(|first| {
        first
            .iter()
            .find(|k| per_branch.iter().all(|b| b.contains(k)))
    }) {
        out.push((path.to_string(), format!("missing required key `{common}`")));
        return;
    }
    let only_required =
        context.iter().all(|b| b.len() == 1) && per_branch.iter().all(|b| b.len() == 1);
    if only_required && !per_branch.is_empty() {
        let keys: Vec<String> = per_branch.iter().map(|b| format!("`{}`", b[0])).collect();
        out.push((
            path.to_string(),
            format!(
                "missing required key {} (or {})",
                keys[0],
                keys[1..].join(" or ")
            ),
        ));
        return;
    }
    let all: Vec<String> = context.iter().flatten().map(|e| e.to_string()).collect();
    out.push((
        path.to_string(),
        format!("expected one of several shapes: {}", all.join("; ")),
    ));
}

/// The schema that applies at `pointer` (following `$ref`s into `$defs`, properties and items).
pub(crate) fn subschema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut schema = resolve(root, root)?;
    for seg in super::locate::split_pointer(pointer) {
        let next = schema
            .get("properties")
            .and_then(|p| p.get(&seg))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
            .or_else(|| schema.get("items").filter(|_| seg.parse::<usize>().is_ok()))?;
        schema = resolve(root, next)?;
    }
    Some(schema)
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => root.pointer(r.strip_prefix('#')?),
        None => Some(schema),
    }
}

fn type_name(t: &str, dialect: Dialect) -> String {
    match (t, dialect) {
        ("integer", _) => "an integer".into(),
        ("number", _) => "a number".into(),
        ("string", _) => "a string".into(),
        ("boolean", _) => "a boolean (true or false)".into(),
        ("array", _) => "an array".into(),
        ("object", Dialect::Toml) => "a table".into(),
        ("object", Dialect::Json) => "an object".into(),
        (other, _) => other.into(),
    }
}

/// How a value is shown after "found": scalars as written, containers by kind.
pub(crate) fn found(v: &Value, dialect: Dialect) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "an empty array".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => type_name("object", dialect),
        Value::Null => "nothing".into(),
        other => other.to_string(),
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::inputs::by_name;
    use serde_json::json;

    fn errors(schema: &str, v: Value) -> Vec<(String, String)> {
        schema_errors(&by_name(schema).unwrap(), &v, "", Dialect::Toml)
    }

    #[test]
    fn lists_every_error_with_its_pointer() {
        let v = json!({
            "fleet": {"max_concurent_agents": 2, "state_dir": 3},
            "loops": [
                {"name": "a", "tests_file": "t.json", "max_attempts": "three",
                 "agent": {"kind": "command", "command": []}},
                {"name": "b", "agent": {"kind": "aider"}},
            ]
        });
        let mut got = errors("fleet.schema.json", v);
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "/fleet/max_concurent_agents".into(),
                    "unknown key `max_concurent_agents` (did you mean `max_concurrent_agents`?)"
                        .into()
                ),
                (
                    "/fleet/state_dir".into(),
                    "expected a string, found 3".into()
                ),
                (
                    "/loops/0/agent/command".into(),
                    "expected at least 1 item, found an empty array".into()
                ),
                (
                    "/loops/0/max_attempts".into(),
                    "expected an integer >= 1, found \"three\"".into()
                ),
                (
                    "/loops/1".into(),
                    "missing required key `tests_file` (or `test_state_file`)".into()
                ),
                (
                    "/loops/1/agent/kind".into(),
                    "expected one of \"command\", \"claude-code\", \"codex\", found \"aider\""
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn a_missing_tag_is_named() {
        let v = json!({"name": "a", "tests_file": "t", "agent": {"command": ["x"]}});
        assert_eq!(
            errors("loop.schema.json", v),
            vec![("/agent".into(), "missing required key `kind`".into())]
        );
    }

    #[test]
    fn the_alias_of_tests_file_is_accepted() {
        let v = json!({"name": "a", "test_state_file": "t", "agent": {"kind": "claude-code"}});
        assert_eq!(errors("loop.schema.json", v), vec![]);
    }

    #[test]
    fn typos_get_a_suggestion_only_when_close() {
        let known = vec!["max_attempts".to_string(), "priority".to_string()];
        assert_eq!(closest("max_attempt", &known), Some("max_attempts"));
        assert_eq!(closest("colour", &known), None);
    }
}
