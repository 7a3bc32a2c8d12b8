//! `LOOPD_*` environment overrides (DESIGN.md, Contracts → Environment).
//!
//! - `LOOPD_STATE_DIR` sets `fleet.state_dir`.
//! - `LOOPD_FLEET__<KEY>` sets a key of `[fleet]`, e.g. `LOOPD_FLEET__MAX_CONCURRENT_AGENTS=4`.
//! - `LOOPD_LOOPS__<LOOP>__<KEY>[__<KEY>...]` sets a key of one loop, e.g.
//!   `LOOPD_LOOPS__AUTH__AGENT__COMMAND='["./agent.sh"]'`. The loop name is matched ignoring case,
//!   with `-` and `.` written as `_`.
//!
//! Keys are lower-cased, except the names under `env` (they are environment variable names).
//! Values are TOML values when they parse as one (`4`, `true`, `["a", "b"]`), JSON objects when
//! they parse as one, else strings; a key whose schema type is a string always gets the raw text.
//! Every other variable (`LOOPD_CONFIG`, `LOOPD_PROMPT_FILE`, ...) is not configuration.

use serde_json::{Map, Value};

use super::check::subschema_at;
use super::locate::escape_segment;

/// What one variable overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `LOOPD_STATE_DIR`.
    StateDir,
    /// `LOOPD_FLEET__...`: keys under `[fleet]`.
    Fleet(Vec<String>),
    /// `LOOPD_LOOPS__...`: the rest of the name, loop name and keys, still to be matched.
    Loop(String),
}

/// One configuration variable from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvVar {
    /// The variable's name, shown in problems it causes.
    pub var: String,
    /// Its value as written.
    pub raw: String,
    /// What it overrides.
    pub target: Target,
}

/// The configuration variables among `vars`, in name order so overrides apply deterministically.
pub(crate) fn read(vars: impl IntoIterator<Item = (String, String)>) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = vars
        .into_iter()
        .filter_map(|(var, raw)| {
            let target = if var == "LOOPD_STATE_DIR" {
                Target::StateDir
            } else if let Some(rest) = var.strip_prefix("LOOPD_FLEET__") {
                Target::Fleet(keys(rest))
            } else if let Some(rest) = var.strip_prefix("LOOPD_LOOPS__") {
                Target::Loop(rest.to_string())
            } else {
                return None;
            };
            Some(EnvVar { var, raw, target })
        })
        .collect();
    out.sort_by(|a, b| a.var.cmp(&b.var));
    out
}

/// `AGENT__COMMAND` → `["agent", "command"]`; names under `env` keep their case.
pub(crate) fn keys(rest: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in rest.split("__") {
        let under_env = out.last().is_some_and(|k| k == "env") && out.len() == 1;
        out.push(if under_env {
            part.to_string()
        } else {
            part.to_ascii_lowercase()
        });
    }
    out
}

/// How a loop name is written in a variable name: upper case, `-` and `.` as `_`.
pub(crate) fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace(['-', '.'], "_")
}

/// Which of `names` the rest of a `LOOPD_LOOPS__` variable names, and the keys after it. The
/// longest matching name wins, so `A__B` and `A` can both be loop names.
pub(crate) fn match_loop(rest: &str, names: &[&str]) -> Option<(usize, Vec<String>)> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let prefix = format!("{}__", env_name(n));
            let tail = rest.strip_prefix(&prefix)?;
            (!tail.is_empty()).then(|| (prefix.len(), i, keys(tail)))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, i, keys)| (i, keys))
}

/// Parses a variable's value for the key whose schema is `schema` (if known).
pub(crate) fn parse_value(raw: &str, schema: Option<&Value>) -> Value {
    let wants_string = schema.is_some_and(|s| match s.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    });
    if wants_string {
        return Value::String(raw.to_string());
    }
    if let Ok(mut table) = toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        if let Some(v) = table.remove("v") {
            let is_plain = !matches!(v, toml::Value::Datetime(_))
                && !matches!(v, toml::Value::Float(f) if !f.is_finite());
            if let (true, Ok(json)) = (is_plain, serde_json::to_value(v)) {
                return json;
            }
        }
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(raw.to_string()),
    }
}

/// Sets `keys` under `value` (creating tables on the way) to the parsed `raw`, checked against
/// `schema` at `base`. Returns the JSON pointer of the key set (relative to `value`), or why it
/// could not be set.
pub(crate) fn apply(
    value: &mut Value,
    base: &str,
    keys: &[String],
    raw: &str,
    schema: &Value,
) -> Result<String, String> {
    let mut pointer = String::new();
    let mut node = value;
    for (i, key) in keys.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(format!(
                "cannot set `{}`: `{}` is not a table",
                keys.join("."),
                keys[..i].join(".")
            ));
        };
        pointer.push('/');
        pointer.push_str(&escape_segment(key));
        if i + 1 == keys.len() {
            let key_schema = subschema_at(schema, &format!("{base}{pointer}"));
            map.insert(key.clone(), parse_value(raw, key_schema));
            return Ok(pointer);
        }
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Err("names no key".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::inputs::by_name;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_only_configuration_variables() {
        let read = read(vars(&[
            ("LOOPD_PROMPT_FILE", "/tmp/p"),
            ("LOOPD_RESULT_FILE", "/tmp/r"),
            ("LOOPD_LOOP", "auth"),
            ("LOOPD_TEST_ID", "T1"),
            ("LOOPD_ATTEMPT", "2"),
            ("LOOPD_CONFIG", "x.toml"),
            ("LOOPD_BIND", "0.0.0.0:1"),
            ("LOOPD_ADDR", "x"),
            ("LOOPD_TOKEN", "secret"),
            ("LOOPD_LOG", "debug"),
            ("HOME", "/root"),
            ("LOOPD_STATE_DIR", "/s"),
            ("LOOPD_FLEET__MAX_CONCURRENT_AGENTS", "4"),
            ("LOOPD_LOOPS__AUTH__MAX_ATTEMPTS", "5"),
        ]));
        let targets: Vec<_> = read.iter().map(|v| v.target.clone()).collect();
        assert_eq!(
            targets,
            vec![
                Target::Fleet(vec!["max_concurrent_agents".into()]),
                Target::Loop("AUTH__MAX_ATTEMPTS".into()),
                Target::StateDir,
            ]
        );
    }

    #[test]
    fn matches_loop_names_loosely_and_prefers_the_longest() {
        let names = ["auth", "web-ui.v2", "a", "a__b"];
        assert_eq!(
            match_loop("WEB_UI_V2__AGENT__COMMAND", &names),
            Some((1, vec!["agent".into(), "command".into()]))
        );
        assert_eq!(
            match_loop("A__B__PRIORITY", &names),
            Some((3, vec!["priority".into()]))
        );
        assert_eq!(match_loop("NOPE__PRIORITY", &names), None);
        assert_eq!(keys("ENV__Api_Key"), ["env", "Api_Key"]);
    }

    #[test]
    fn parses_values_by_what_the_key_expects() {
        let schema = by_name("loop.schema.json").unwrap();
        let mut v = json!({"name": "a", "agent": {"kind": "command", "command": ["x"]}});
        apply(&mut v, "", &["max_attempts".into()], "5", &schema).unwrap();
        apply(&mut v, "", &["model".into()], "3", &schema).unwrap();
        apply(&mut v, "", &["env".into(), "TOKEN".into()], "42", &schema).unwrap();
        let p = apply(
            &mut v,
            "",
            &["agent".into(), "command".into()],
            r#"["./agent.sh", "--fast"]"#,
            &schema,
        )
        .unwrap();
        assert_eq!(p, "/agent/command");
        apply(&mut v, "", &["auto_heal".into()], "true", &schema).unwrap();
        apply(&mut v, "", &["priority".into()], "abc", &schema).unwrap();
        assert_eq!(
            v,
            json!({"name": "a", "max_attempts": 5, "model": "3", "env": {"TOKEN": "42"},
                   "auto_heal": true, "priority": "abc",
                   "agent": {"kind": "command", "command": ["./agent.sh", "--fast"]}})
        );
        let err = apply(&mut v, "", &["name".into(), "x".into()], "1", &schema).unwrap_err();
        assert_eq!(err, "cannot set `name.x`: `name` is not a table");
    }
}
