//! The loop factory: loops made from templates in the fleet's `templates_dir`.
//!
//! A template `<templates_dir>/<NAME>.toml` is one loop table, in the same schema as an included
//! loop file, with `{{var}}` placeholders inside its double-quoted strings:
//!
//! ```toml
//! name = "{{name}}"
//! workdir = "../repos/{{name}}"
//! init_workdir = true
//! tests_file = "../tests/{{name}}.json"
//! ```
//!
//! Every placeholder must get a value (the missing ones are listed together), and every value
//! must be used (a misspelt variable is refused rather than ignored). Values are inserted escaped
//! for a TOML basic string, so a value can never add keys to the loop. Placeholders on comment
//! lines are ignored. Relative paths resolve against the template's folder, as those of an
//! included loop file resolve against theirs. The rendered loop is then checked exactly like a
//! `POST /api/loops` body.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::{parse_loop_value, LoopConfig, Problem, Report};
use crate::names::check_name;

/// Why a loop could not be made from a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template name is not `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (it becomes a path).
    #[error("invalid template name: {0}")]
    InvalidName(String),
    /// No `<NAME>.toml` in the templates folder.
    #[error("no template named `{name}` in {}", .dir.display())]
    NotFound {
        /// The template name.
        name: String,
        /// The templates folder.
        dir: PathBuf,
    },
    /// Variables that are not `[A-Za-z_][A-Za-z0-9_]*`, or whose value is not a string,
    /// number or boolean, as `(variable, why)`.
    #[error("invalid variables: {}", list(.0))]
    BadVars(Vec<(String, String)>),
    /// Placeholders without a value (`missing`) and values without a placeholder (`unused`).
    #[error("{}", vars_message(.missing, .unused))]
    Vars {
        /// Placeholders of the template that got no value, sorted.
        missing: Vec<String>,
        /// Variables given that the template does not use, sorted.
        unused: Vec<String>,
    },
    /// The rendered loop is not valid: every problem, pointers into the loop table.
    #[error("invalid loop from template `{name}`:\n{report}")]
    Invalid {
        /// The template name.
        name: String,
        /// The problems.
        report: Report,
    },
    /// The template could not be read, or its workdir created.
    #[error("{0}")]
    Io(String),
}

fn list(vars: &[(String, String)]) -> String {
    vars.iter()
        .map(|(k, why)| format!("`{k}` {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn vars_message(missing: &[String], unused: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing values for {}", missing.join(", ")));
    }
    if !unused.is_empty() {
        parts.push(format!("the template does not use {}", unused.join(", ")));
    }
    parts.join("; ")
}

/// The placeholders of `text`, sorted, without those on comment lines.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        scan(line, |name| {
            found.insert(name.to_string());
            None
        });
    }
    found
}

/// Calls `f` with each placeholder name of `line`; where it returns a value, the placeholder
/// is replaced by it. Returns the line with the replacements.
fn scan(line: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match (
            is_var_name(name),
            is_var_name(name).then(|| f(name)).flatten(),
        ) {
            (true, Some(value)) => out.push_str(&value),
            _ => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `value` escaped for the inside of a TOML basic string (`"..."`).
pub fn toml_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Renders `text` with `vars`: every placeholder needs a value, every value a placeholder.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let used = placeholders(text);
    let missing: Vec<String> = used
        .iter()
        .filter(|p| !vars.contains_key(*p))
        .cloned()
        .collect();
    let unused: Vec<String> = vars
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    if !missing.is_empty() || !unused.is_empty() {
        return Err(TemplateError::Vars { missing, unused });
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            out.push_str(&scan(line, |name| vars.get(name).map(|v| toml_escape(v))));
        }
    }
    Ok(out)
}

/// The variables of a request (`{"name": "x", "port": 8080}`) as strings; numbers and booleans
/// are written as in JSON.
pub fn vars_from_json(
    value: &serde_json::Value,
) -> Result<BTreeMap<String, String>, TemplateError> {
    use serde_json::Value;
    let map = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(map) => map,
        _ => {
            return Err(TemplateError::BadVars(vec![(
                "vars".into(),
                "must be an object of strings".into(),
            )]))
        }
    };
    let mut vars = BTreeMap::new();
    let mut bad = Vec::new();
    for (k, v) in map {
        if !is_var_name(k) {
            bad.push((
                k.clone(),
                "is not a variable name ([A-Za-z_][A-Za-z0-9_]*)".into(),
            ));
            continue;
        }
        match v {
            Value::String(s) => {
                vars.insert(k.clone(), s.clone());
            }
            Value::Number(_) | Value::Bool(_) => {
                vars.insert(k.clone(), v.to_string());
            }
            _ => bad.push((k.clone(), "must be a string, number or boolean".into())),
        }
    }
    if bad.is_empty() {
        Ok(vars)
    } else {
        Err(TemplateError::BadVars(bad))
    }
}

/// The file of template `name` in `dir`, after checking the name.
pub fn template_file(dir: &Path, name: &str) -> Result<PathBuf, TemplateError> {
    check_name(name).map_err(TemplateError::InvalidName)?;
    let file = dir.join(format!("{name}.toml"));
    if file.is_file() {
        Ok(file)
    } else {
        Err(TemplateError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })
    }
}

/// Makes a loop config from template `name` of `templates_dir` with `vars`, checked like a
/// `POST /api/loops` body (paths absolute; a missing workdir becomes
/// `<fleet_dir>/workdirs/<name>`). Blocking: it reads files.
pub fn loop_from_template(
    templates_dir: &Path,
    name: &str,
    vars: &BTreeMap<String, String>,
    fleet_dir: &Path,
    state_dir: &Path,
) -> Result<LoopConfig, TemplateError> {
    let file = template_file(templates_dir, name)?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| TemplateError::Io(format!("cannot read {}: {e}", file.display())))?;
    let rendered = render(&text, vars)?;
    let invalid = |expected: String| TemplateError::Invalid {
        name: name.to_string(),
        report: Problem::new("", "", expected).into(),
    };
    let table: toml::Value = toml::from_str(&rendered)
        .map_err(|e| invalid(format!("the rendered template is not valid TOML: {e}")))?;
    let value = serde_json::to_value(table).map_err(|e| invalid(e.to_string()))?;
    let base = file.parent().unwrap_or(templates_dir);
    parse_loop_value(value, base, fleet_dir, state_dir).map_err(|report| TemplateError::Invalid {
        name: name.to_string(),
        report,
    })
}

/// Creates the workdir of `lp` when it asks for it (`init_workdir`) and it does not exist yet:
/// the folder, the `workdir_template` copied in, `git init`.
pub async fn create_workdir(lp: &LoopConfig) -> Result<(), TemplateError> {
    let Some(workdir) = lp.workdir.as_ref().filter(|_| lp.init_workdir) else {
        return Ok(());
    };
    crate::git::Workdir::new(workdir)
        .prepare(true, lp.workdir_template.as_deref())
        .await
        .map_err(|e| TemplateError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_escaped_values_and_lists_missing_and_unused_variables() {
        let text = "# {{ignored}}\nname = \"{{name}}\"\nmodel = \"{{ model }}\"\nx = \"{{name}}-{{ 1bad }}\"\n";
        assert_eq!(
            placeholders(text).into_iter().collect::<Vec<_>>(),
            ["model", "name"]
        );
        let out = render(text, &vars(&[("name", "a\"b\\c\nd"), ("model", "m")])).unwrap();
        assert_eq!(
            out,
            "# {{ignored}}\nname = \"a\\\"b\\\\c\\nd\"\nmodel = \"m\"\nx = \"a\\\"b\\\\c\\nd-{{ 1bad }}\"\n"
        );
        // The escaped value stays one string: it cannot add keys.
        let v: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(v["name"].as_str(), Some("a\"b\\c\nd"));
        match render(text, &vars(&[("nme", "x")])) {
            Err(TemplateError::Vars { missing, unused }) => {
                assert_eq!(missing, ["model", "name"]);
                assert_eq!(unused, ["nme"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_names_that_are_paths_and_unknown_templates() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            template_file(dir.path(), "../x"),
            Err(TemplateError::InvalidName(_))
        ));
        assert!(matches!(
            template_file(dir.path(), "nope"),
            Err(TemplateError::NotFound { .. })
        ));
    }

    #[test]
    fn makes_a_checked_loop_with_paths_against_the_template_folder() {
        let dir = tempfile::tempdir().unwrap();
        let tpl = dir.path().join("loop-templates");
        std::fs::create_dir_all(&tpl).unwrap();
        std::fs::write(
            dir.path().join("t.json"),
            r#"{"tests": [{"id": "a", "title": "A", "spec": "s", "verify": "true"}]}"#,
        )
        .unwrap();
        std::fs::write(
            tpl.join("svc.toml"),
            "name = \"{{name}}\"\nworkdir = \"../repos/{{name}}\"\ninit_workdir = true\n\
             tests_file = \"../t.json\"\nmax_attempts = 0\n\
             [agent]\nkind = \"command\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let state = dir.path().join("state");
        match loop_from_template(&tpl, "svc", &vars(&[("name", "api")]), dir.path(), &state) {
            Err(TemplateError::Invalid { report, .. }) => {
                assert_eq!(report.problems[0].pointer, "/max_attempts", "{report}")
            }
            other => panic!("{other:?}"),
        }
        let text = std::fs::read_to_string(tpl.join("svc.toml")).unwrap();
        std::fs::write(tpl.join("svc.toml"), text.replace("max_attempts = 0\n", "")).unwrap();
        let lp =
            loop_from_template(&tpl, "svc", &vars(&[("name", "api")]), dir.path(), &state).unwrap();
        assert_eq!(lp.name, "api");
        assert_eq!(lp.workdir, Some(dir.path().join("repos/api")));
        assert_eq!(lp.tests_file, dir.path().join("t.json"));
        // A name that is a path is refused by the loop's own checks.
        match loop_from_template(&tpl, "svc", &vars(&[("name", "../x")]), dir.path(), &state) {
            Err(TemplateError::Invalid { report, .. }) => {
                assert!(report.to_string().contains("/name"), "{report}")
            }
            other => panic!("{other:?}"),
        }
    }
}
