//! Reading and checking a loop's tests file: schema, ids, specs, verify commands, dependencies.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::check::{schema_errors, Dialect};
use super::locate::Locator;
use super::{LoopConfig, Problem, Report};
use crate::config::inputs::by_name;
use crate::names::check_name;
use crate::tests_file::TestSpec;

/// Reads the tests file of `lp` (paths already resolved) and checks it; every problem at once.
///
/// A dependency `other-loop:ID` is only checked for its form here; [`super::validate_fleet`]
/// checks that the loop and the test exist.
pub fn load_tests(lp: &LoopConfig) -> Result<Vec<TestSpec>, Report> {
    let loaded = read_tests(lp);
    let report = loaded.report();
    report.into_result(loaded.tests.into_iter().map(|(_, t)| t).collect())
}

/// The spec text of `t`: inline, or the content of its `spec_file` under the loop's `specs_dir`.
pub fn resolve_spec(lp: &LoopConfig, t: &TestSpec) -> std::io::Result<String> {
    if let Some(spec) = &t.spec {
        return Ok(spec.clone());
    }
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let file = t
        .spec_file
        .as_ref()
        .ok_or_else(|| invalid(format!("test `{}` has neither spec nor spec_file", t.id)))?;
    let dir = lp.specs_dir.as_ref().ok_or_else(|| {
        invalid(format!(
            "test `{}` names a spec_file but loop `{}` has no specs_dir",
            t.id, lp.name
        ))
    })?;
    std::fs::read_to_string(dir.join(file))
}

/// A `depends_on` entry naming another loop's test.
#[derive(Debug, Clone)]
pub(crate) struct CrossRef {
    /// Pointer of the entry (`/tests/3/depends_on/0`).
    pub pointer: String,
    /// The other loop.
    pub other_loop: String,
    /// The test id in that loop.
    pub id: String,
}

/// A tests file as read, with what is needed to report and cross-check it.
#[derive(Debug)]
pub(crate) struct LoadedTests {
    /// The tests file.
    pub file: PathBuf,
    /// Finds lines in it.
    pub locator: Locator,
    /// Every test that deserialized, with its index in the file.
    pub tests: Vec<(usize, TestSpec)>,
    /// `other-loop:ID` dependencies, to check against the fleet.
    pub cross: Vec<CrossRef>,
    /// `(pointer, expected)`.
    pub problems: Vec<(String, String)>,
}

impl LoadedTests {
    /// A problem at `pointer` in this file.
    pub(crate) fn problem(&self, pointer: &str, expected: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            pointer: pointer.to_string(),
            line: self.locator.line(pointer),
            expected: expected.into(),
        }
    }

    /// Every problem found, as a report.
    pub(crate) fn report(&self) -> Report {
        let mut report = Report::default();
        for (pointer, expected) in &self.problems {
            report.push(self.problem(pointer, expected.clone()));
        }
        report.sort();
        report
    }
}

/// Reads and checks the tests file of `lp`.
pub(crate) fn read_tests(lp: &LoopConfig) -> LoadedTests {
    let mut out = LoadedTests {
        file: lp.tests_file.clone(),
        locator: Locator::None,
        tests: Vec::new(),
        cross: Vec::new(),
        problems: Vec::new(),
    };
    let text = match std::fs::read_to_string(&lp.tests_file) {
        Ok(t) => t,
        Err(e) => {
            out.problems
                .push((String::new(), format!("cannot read the tests file: {e}")));
            return out;
        }
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.line();
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            out.locator = Locator::None;
            out.problems
                .push((String::new(), format!("invalid JSON at line {line}: {msg}")));
            return out;
        }
    };
    out.locator = Locator::Json(text);
    let schema = by_name("tests.schema.json").unwrap_or_default();
    out.problems = schema_errors(&schema, &value, "", Dialect::Json);
    let Some(Value::Array(items)) = value.get("tests") else {
        return out;
    };
    // Items the schema already reported on, so that serde's message does not repeat it; a set,
    // not a scan of every problem per item (quadratic on a big file with many problems).
    let mut reported: std::collections::HashSet<usize> = out
        .problems
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("/tests/")?.split('/').next()?.parse().ok())
        .collect();
    for (i, item) in items.iter().enumerate() {
        let at = format!("/tests/{i}");
        if let Some(Value::String(s)) = item.get("timeout") {
            if humantime::parse_duration(s).is_err() {
                out.problems.push((
                    format!("{at}/timeout"),
                    format!("expected a duration such as \"20m\", found \"{s}\""),
                ));
                reported.insert(i);
            }
        }
        match serde_json::from_value::<TestSpec>(item.clone()) {
            Ok(t) => out.tests.push((i, t)),
            Err(e) => {
                if !reported.contains(&i) {
                    out.problems.push((at.clone(), e.to_string()));
                }
                // Still checked for its id, verify and dependencies, and still a node that
                // others may depend on.
                let pointers = out.problems.iter().map(|(p, _)| p.as_str());
                if let Some(t) = super::salvage::salvage_test(item, pointers, &at) {
                    out.tests.push((i, t));
                }
            }
        }
    }
    check_tests(lp, &mut out);
    out
}

fn check_tests(lp: &LoopConfig, out: &mut LoadedTests) {
    let mut problems = Vec::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, t) in &out.tests {
        let at = |key: &str| format!("/tests/{i}/{key}");
        if let Err(why) = check_name(&t.id) {
            problems.push((at("id"), format!("invalid test id: {why}")));
        }
        match first.get(t.id.as_str()) {
            Some(j) => problems.push((
                at("id"),
                format!("duplicate test id `{}` (first at /tests/{j})", t.id),
            )),
            None => {
                first.insert(&t.id, *i);
            }
        }
        match (&t.spec, &t.spec_file) {
            (Some(_), Some(_)) => problems.push((
                format!("/tests/{i}"),
                "has both `spec` and `spec_file`; keep one".to_string(),
            )),
            (None, None) => problems.push((
                format!("/tests/{i}"),
                "missing `spec` or `spec_file`".to_string(),
            )),
            (Some(spec), None) if spec.trim().is_empty() => {
                problems.push((at("spec"), "expected a non-empty spec".to_string()))
            }
            (None, Some(file)) => {
                if let Some(why) = check_spec_file(lp, file) {
                    problems.push((at("spec_file"), why));
                }
            }
            _ => {}
        }
        if let Some(group) = &t.serial_group {
            if let Err(why) = check_name(group) {
                problems.push((at("serial_group"), format!("invalid serial_group: {why}")));
            }
        }
        if t.verify.trim().is_empty() {
            problems.push((
                at("verify"),
                "expected a non-empty verify command".to_string(),
            ));
        }
    }
    for (i, t) in &out.tests {
        for (j, dep) in t.depends_on.iter().enumerate() {
            let pointer = format!("/tests/{i}/depends_on/{j}");
            if let Some((other, id)) = dep.split_once(':') {
                match check_name(other) {
                    Ok(()) if other == lp.name => {
                        if !first.contains_key(id) {
                            problems.push((pointer, format!("unknown test id `{id}`")));
                        }
                    }
                    Ok(()) => out.cross.push(CrossRef {
                        pointer,
                        other_loop: other.to_string(),
                        id: id.to_string(),
                    }),
                    Err(why) => problems.push((pointer, format!("invalid loop name: {why}"))),
                }
            } else if !first.contains_key(dep.as_str()) {
                problems.push((pointer, format!("unknown test id `{dep}`")));
            }
        }
    }
    // Cycles, over the first occurrence of each id. Node `k` is `out.tests[k]`; ids are looked
    // up in a map (a scan per dependency made a 100,000-test chain take minutes).
    let ids: Vec<&str> = out.tests.iter().map(|(_, t)| t.id.as_str()).collect();
    let mut nodes: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (k, id) in ids.iter().enumerate() {
        nodes.entry(id).or_insert(k);
    }
    let node_of = |id: &str| nodes.get(id).copied();
    let edges: Vec<Vec<usize>> = out
        .tests
        .iter()
        .map(|(_, t)| {
            t.depends_on
                .iter()
                .filter_map(|d| {
                    let local = match d.split_once(':') {
                        Some((l, id)) if l == lp.name => id,
                        Some(_) => return None,
                        None => d.as_str(),
                    };
                    node_of(local)
                })
                .collect()
        })
        .collect();
    for cycle in find_cycles(&edges) {
        let names: Vec<&str> = cycle.iter().map(|n| ids[*n]).collect();
        let start = out.tests[cycle[0]].0;
        problems.push((
            format!("/tests/{start}/depends_on"),
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        ));
    }
    out.problems.extend(problems);
}

/// Why `file` is not a readable spec under the loop's `specs_dir`, if it is not.
fn check_spec_file(lp: &LoopConfig, file: &Path) -> Option<String> {
    let Some(dir) = &lp.specs_dir else {
        return Some("`spec_file` needs the loop's `specs_dir`".into());
    };
    let escapes = file
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Some(format!(
            "expected a path inside specs_dir, found `{}`",
            file.display()
        ));
    }
    let full = dir.join(file);
    (!full.is_file()).then(|| format!("the spec file `{}` does not exist", full.display()))
}

/// Cycles of a directed graph given as adjacency lists, each once, each starting at its smallest
/// node. Finds at least one cycle in every strongly connected part that has one.
pub(crate) fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Gray,
        Black,
    }
    let mut color = vec![Color::White; edges.len()];
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for start in 0..edges.len() {
        if color[start] != Color::White {
            continue;
        }
        // Iterative DFS: (node, next edge to follow).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = Color::Gray;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match color[to] {
                    Color::White => {
                        color[to] = Color::Gray;
                        stack.push((to, 0));
                    }
                    Color::Gray => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| **n)
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cycle.rotate_left(min);
                        if !cycles.contains(&cycle) {
                            cycles.push(cycle);
                        }
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(dir: &Path) -> LoopConfig {
        serde_json::from_value(serde_json::json!({
            "name": "auth",
            "tests_file": dir.join("tests.json"),
            "specs_dir": dir.join("specs"),
            "agent": {"kind": "command", "command": ["true"]},
        }))
        .unwrap()
    }

    /// Each problem as `line pointer expected`.
    fn lines(report: &Report) -> Vec<String> {
        report
            .problems
            .iter()
            .map(|p| format!("{:?} {} {}", p.line, p.pointer, p.expected))
            .collect()
    }

    #[test]
    fn finds_cycles_once_each() {
        // 0 -> 1 -> 2 -> 0, 3 -> 3, 4 -> 0
        let edges = vec![vec![1], vec![2], vec![0], vec![3], vec![0]];
        assert_eq!(find_cycles(&edges), vec![vec![0, 1, 2], vec![3]]);
        assert!(find_cycles(&[vec![1], vec![2], vec![]]).is_empty());
    }

    #[test]
    fn a_cycle_through_100000_tests_is_found_without_recursion() {
        let n = 100_000;
        let mut edges: Vec<Vec<usize>> = (0..n).map(|i| vec![i + 1]).collect();
        edges[n - 1] = vec![0];
        let cycles = find_cycles(&edges);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), n);
        edges[n - 1].clear();
        assert!(find_cycles(&edges).is_empty());
    }

    #[test]
    fn reports_every_problem_of_a_tests_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("specs")).unwrap();
        std::fs::write(dir.path().join("specs/ok.md"), "spec from file").unwrap();
        let text = r#"{"tests": [
  {"id": "a", "title": "A", "spec": "x", "verify": "true", "depends_on": ["c"]},
  {"id": "a", "title": "A again", "spec": "x", "verify": " "},
  {"id": "b", "title": "B", "spec_file": "missing.md", "verify": "true", "depends_on": ["nope", "other:T1"]},
  {"id": "c", "title": "C", "verify": "true", "depends_on": ["a"]},
  {"id": "d e", "title": "D", "spec_file": "ok.md", "verify": "true", "timeout": "soon"}
]}"#;
        std::fs::write(dir.path().join("tests.json"), text).unwrap();
        let report = load_tests(&lp(dir.path())).unwrap_err();
        let got = lines(&report);
        let specs = dir.path().join("specs");
        assert_eq!(
            got,
            vec![
                "Some(2) /tests/0/depends_on dependency cycle: a -> c -> a".to_string(),
                "Some(3) /tests/1/id duplicate test id `a` (first at /tests/0)".into(),
                "Some(3) /tests/1/verify expected a non-empty verify command".into(),
                "Some(4) /tests/2/depends_on/0 unknown test id `nope`".into(),
                format!(
                    "Some(4) /tests/2/spec_file the spec file `{}` does not exist",
                    specs.join("missing.md").display()
                ),
                "Some(5) /tests/3 missing `spec` or `spec_file`".into(),
                // A bad timeout no longer hides the id's problem.
                "Some(6) /tests/4/id invalid test id: `d e` contains ` `; only letters, digits, `.`, `_` and `-` are allowed".into(),
                "Some(6) /tests/4/timeout expected a duration such as \"20m\", found \"soon\""
                    .into(),
            ]
        );
    }

    #[test]
    fn a_bad_serial_group_is_named_by_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"tests": [
  {"id": "a", "title": "A", "spec": "x", "verify": "true", "serial_group": "db"},
  {"id": "b", "title": "B", "spec": "x", "verify": "true", "serial_group": "../db"},
  {"id": "c", "title": "C", "spec": "x", "verify": "true", "serial_group": ""},
  {"id": "d", "title": "D", "spec": "x", "verify": "true", "serial_group": 3}
]}"#;
        std::fs::write(dir.path().join("tests.json"), text).unwrap();
        let report = load_tests(&lp(dir.path())).unwrap_err();
        let got = lines(&report);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].starts_with("Some(3) /tests/1/serial_group invalid serial_group: `../db`"));
        assert_eq!(
            got[1],
            "Some(4) /tests/2/serial_group invalid serial_group: a name must not be empty"
        );
        assert!(
            got[2].starts_with("Some(5) /tests/3/serial_group "),
            "{}",
            got[2]
        );
        assert!(report
            .problems
            .iter()
            .all(|p| p.file == dir.path().join("tests.json")));
        let good = r#"{"tests": [{"id": "a", "title": "A", "spec": "x", "verify": "true", "serial_group": "db"}]}"#;
        std::fs::write(dir.path().join("tests.json"), good).unwrap();
        let tests = load_tests(&lp(dir.path())).unwrap();
        assert_eq!(tests[0].serial_group.as_deref(), Some("db"));
    }

    #[test]
    fn resolves_inline_and_file_specs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("specs")).unwrap();
        std::fs::write(dir.path().join("specs/a.md"), "from a file").unwrap();
        std::fs::write(
            dir.path().join("tests.json"),
            r#"{"tests": [{"id": "a", "title": "A", "spec_file": "a.md", "verify": "true"},
                          {"id": "b", "title": "B", "spec": "inline", "verify": "true", "depends_on": ["a"]}]}"#,
        )
        .unwrap();
        let lp = lp(dir.path());
        let tests = load_tests(&lp).unwrap();
        assert_eq!(resolve_spec(&lp, &tests[0]).unwrap(), "from a file");
        assert_eq!(resolve_spec(&lp, &tests[1]).unwrap(), "inline");
    }

    #[test]
    fn invalid_json_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tests.json"),
            "{\"tests\": [\n  {\"id\": }\n]}",
        )
        .unwrap();
        let report = load_tests(&lp(dir.path())).unwrap_err();
        assert_eq!(report.len(), 1);
        assert!(
            report.problems[0]
                .expected
                .starts_with("invalid JSON at line 2: "),
            "{}",
            report
        );
    }
}
