//! Request bodies: size-limited JSON, loop configs and injected tests validated with every
//! problem listed with its JSON pointer (the same checks as the fleet file and tests files).

use std::path::Path;

use axum::body::Bytes;
use loopd_actors::config::{self, LoopConfig, Problem, Report};
use loopd_actors::tests_file::TestSpec;
use serde_json::{json, Value};

use super::error::{ApiError, Code};

/// Parses a JSON body; an empty or malformed one is a 400 that says where it broke.
pub fn json(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(Code::BadRequest, "expected a JSON body"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(Code::BadRequest, format!("the body is not valid JSON: {e}"))
            .with_details(json!({"line": e.line(), "column": e.column()}))
    })
}

/// A `POST /api/loops` body as a loop config: schema, name, durations, files, tests file.
pub fn loop_config(
    value: Value,
    fleet_dir: &Path,
    state_dir: &Path,
) -> Result<LoopConfig, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(
            "loop",
            &Problem::new(
                "",
                "",
                "expected a JSON object (a loop, as in the fleet file)",
            )
            .into(),
        ));
    }
    config::parse_loop_value(value, fleet_dir, fleet_dir, state_dir)
        .map_err(|r| ApiError::invalid("loop", &r))
}

/// The tests of a `POST /api/loops/:id/tests` body, validated as if they were appended to the
/// loop's tests file: schema, ids (valid, new to the loop), specs, verify commands, dependencies
/// (on the loop's tests or each other) and cycles.
///
/// The body is `{"tests": [...]}` (a tests file) or a bare array; pointers in the answer point
/// into the body as sent.
pub fn injected_tests(
    value: Value,
    lp: &LoopConfig,
    existing: &[TestSpec],
) -> Result<Vec<TestSpec>, ApiError> {
    let (doc, bare) = match value {
        Value::Array(items) => (json!({ "tests": items }), true),
        Value::Object(map) => (Value::Object(map), false),
        _ => {
            return Err(ApiError::invalid(
                "tests",
                &Problem::new("", "", "expected {\"tests\": [...]} or an array of tests").into(),
            ))
        }
    };
    let given = match doc.get("tests") {
        Some(Value::Array(items)) => items.clone(),
        _ => {
            let pointer = if doc.get("tests").is_some() {
                "/tests"
            } else {
                ""
            };
            return Err(ApiError::invalid(
                "tests",
                &Problem::new("", pointer, "expected `tests`, an array of tests").into(),
            ));
        }
    };
    if given.is_empty() {
        return Err(ApiError::invalid(
            "tests",
            &Problem::new(
                "",
                if bare { "" } else { "/tests" },
                "expected at least one test",
            )
            .into(),
        ));
    }
    // The loop's tests first, so that dependencies on them and duplicate ids are found by the
    // tests-file checks themselves; problems are then mapped back to the body.
    let n = existing.len();
    let mut merged = doc.clone();
    let mut all: Vec<Value> = existing
        .iter()
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    all.extend(given.iter().cloned());
    merged["tests"] = Value::Array(all);
    let dir = tempfile::tempdir().map_err(ApiError::internal)?;
    let file = dir.path().join("tests.json");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&merged).map_err(ApiError::internal)?,
    )
    .map_err(ApiError::internal)?;
    let mut probe = lp.clone();
    probe.tests_file = file;
    let report = match config::load_tests(&probe) {
        Ok(all) => return Ok(all.into_iter().skip(n).collect()),
        Err(r) => r,
    };
    let mut mapped = Report::default();
    for p in report.problems {
        let Some(pointer) = map_pointer(&p.pointer, n, bare) else {
            continue;
        };
        let expected = rewrite_first_at(&p.expected, n, bare);
        mapped.push(Problem::new("", pointer, expected));
    }
    if mapped.is_empty() {
        // Only the loop's own tests have problems (say, a spec_file gone since): not the body's
        // fault, and nothing in the body to point at.
        let all = given
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<TestSpec>, _>>()
            .map_err(|e| ApiError::new(Code::BadRequest, e.to_string()))?;
        return Ok(all);
    }
    mapped.sort();
    Err(ApiError::invalid("tests", &mapped))
}

/// `/tests/{i}/...` of the merged file to the body's pointer; `None` for the loop's own tests.
fn map_pointer(pointer: &str, n: usize, bare: bool) -> Option<String> {
    let Some(rest) = pointer.strip_prefix("/tests/") else {
        return Some(pointer.to_string());
    };
    let (index, tail) = rest.split_once('/').map_or((rest, ""), |(i, t)| (i, t));
    let i: usize = index.parse().ok()?;
    let i = i.checked_sub(n)?;
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!("/{tail}")
    };
    Some(if bare {
        format!("/{i}{tail}")
    } else {
        format!("/tests/{i}{tail}")
    })
}

/// "duplicate test id `x` (first at /tests/3)": say "already in the loop" when 3 is the loop's.
fn rewrite_first_at(message: &str, n: usize, bare: bool) -> String {
    let Some((head, tail)) = message.split_once("(first at /tests/") else {
        return message.to_string();
    };
    let index: usize = tail.trim_end_matches(')').parse().unwrap_or(0);
    match index.checked_sub(n) {
        None => format!("{}(already in the loop)", head),
        Some(i) if bare => format!("{head}(first at /{i})"),
        Some(i) => format!("{head}(first at /tests/{i})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_point_into_the_body() {
        assert_eq!(
            map_pointer("/tests/5/id", 3, false).as_deref(),
            Some("/tests/2/id")
        );
        assert_eq!(map_pointer("/tests/5", 3, true).as_deref(), Some("/2"));
        assert_eq!(map_pointer("/tests/1/id", 3, true), None);
        assert_eq!(map_pointer("/extra", 3, false).as_deref(), Some("/extra"));
        assert_eq!(
            rewrite_first_at("duplicate test id `a` (first at /tests/1)", 3, false),
            "duplicate test id `a` (already in the loop)"
        );
        assert_eq!(
            rewrite_first_at("duplicate test id `a` (first at /tests/4)", 3, true),
            "duplicate test id `a` (first at /1)"
        );
    }
}
