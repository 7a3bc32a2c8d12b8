//! `validate_fleet`: everything `load_fleet` checks, plus the file system (workdirs, tests files,
//! templates), every tests file, and references across loops.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::check::Dialect;
use super::load::{check_loop_value, load, resolve_paths, workdir_in_state_dir};
use super::tests_check::{find_cycles, read_tests, LoadedTests};
use super::{AgentConfig, LoopConfig, Problem, Report};
use crate::config::inputs::by_name;

/// Validates the fleet at `path` with the process environment; an empty report means valid.
pub fn validate_fleet(path: &Path) -> Report {
    validate_fleet_with_env(path, std::env::vars())
}

/// [`validate_fleet`] with the environment given explicitly.
pub fn validate_fleet_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Report {
    let mut loaded = load(path, env);
    let mut report = std::mem::take(&mut loaded.report);
    let mut tests: Vec<Option<LoadedTests>> = Vec::new();
    for (lp, origin) in &loaded.loops {
        let doc = &loaded.docs[origin.doc];
        let file_problems = check_loop_files(lp);
        let tests_file_ok = !file_problems.iter().any(|(k, _)| k == "/tests_file");
        for (key, expected) in file_problems {
            report.push(doc.problem(&format!("{}{key}", origin.pointer), expected));
        }
        tests.push(tests_file_ok.then(|| read_tests(lp)));
    }
    cross_check(&loaded.loops, &loaded.names, &tests, &mut report);
    for t in tests.iter().flatten() {
        report.extend(t.report());
    }
    // Files in a stable order: the fleet file, its includes, then tests files by loop.
    let order: Vec<_> = loaded
        .docs
        .iter()
        .map(|d| d.display.clone())
        .chain(tests.iter().flatten().map(|t| t.file.clone()))
        .collect();
    report.sort_with_files(&order);
    report
}

/// Parses and checks one loop body (a `POST /api/loops` request): schema, names, durations,
/// then the same file checks as [`validate_fleet`] and its tests file. Relative paths resolve
/// against `base_dir` (for a body sent to the API, the fleet file's folder); a missing workdir
/// becomes `<fleet_dir>/workdirs/<name>`, and one inside `state_dir` is refused. Problems have
/// an empty file and pointers into the body.
pub fn parse_loop_value(
    value: Value,
    base_dir: &Path,
    fleet_dir: &Path,
    state_dir: &Path,
) -> Result<LoopConfig, Report> {
    let schema = by_name("loop.schema.json").unwrap_or_default();
    let (lp, problems) = check_loop_value(&value, "", Dialect::Json, &schema);
    let mut report = Report::default();
    for (pointer, expected) in problems {
        report.push(Problem::new("", pointer, expected));
    }
    // A salvaged body still has its files and tests checked (it is refused at the end), unless
    // its name is bad: the default workdir is made from the name.
    let bad_name = report.problems.iter().any(|p| p.pointer == "/name");
    let Some(mut lp) = lp.filter(|_| !bad_name) else {
        report.sort();
        return Err(report);
    };
    resolve_paths(&mut lp, base_dir, base_dir, &[], fleet_dir);
    if let Some(why) = workdir_in_state_dir(&lp, state_dir) {
        report.push(Problem::new("", "/workdir", why));
    }
    let file_problems = check_loop_files(&lp);
    let tests_file_ok = !file_problems.iter().any(|(k, _)| k == "/tests_file");
    for (pointer, expected) in file_problems {
        report.push(Problem::new("", pointer, expected));
    }
    if tests_file_ok {
        report.extend(read_tests(&lp).report());
    }
    report.into_result(lp)
}

/// What is missing on disk for `lp` (paths resolved), as `(pointer in the loop, expected)`.
fn check_loop_files(lp: &LoopConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |key: &str, msg: String| out.push((format!("/{key}"), msg));
    if let Some(w) = &lp.workdir {
        if w.exists() && !w.is_dir() {
            push(
                "workdir",
                format!("the workdir `{}` is not a folder", w.display()),
            );
        } else if !w.exists() && !lp.init_workdir {
            push(
                "workdir",
                format!(
                    "the workdir `{}` does not exist (create it, or set `init_workdir = true`)",
                    w.display()
                ),
            );
        }
    }
    if !lp.tests_file.is_file() {
        push(
            "tests_file",
            format!(
                "the tests file `{}` does not exist",
                lp.tests_file.display()
            ),
        );
    }
    if let Some(p) = lp.prompt_template.as_ref().filter(|p| !p.is_file()) {
        push(
            "prompt_template",
            format!("the prompt template `{}` does not exist", p.display()),
        );
    }
    if let Some(p) = lp.specs_dir.as_ref().filter(|p| !p.is_dir()) {
        push(
            "specs_dir",
            format!("the specs folder `{}` does not exist", p.display()),
        );
    }
    if let Some(p) = lp.workdir_template.as_ref().filter(|p| !p.is_dir()) {
        push(
            "workdir_template",
            format!("the workdir template `{}` does not exist", p.display()),
        );
    }
    let program = match &lp.agent {
        AgentConfig::ClaudeCode {
            binary: Some(b), ..
        } => Some(("agent/binary", b.clone())),
        // The preset's default, which a fresh machine often lacks.
        AgentConfig::ClaudeCode { binary: None, .. } => {
            Some(("agent/kind", std::path::PathBuf::from("claude")))
        }
        AgentConfig::Codex {
            binary: Some(b), ..
        } => Some(("agent/binary", b.clone())),
        AgentConfig::Codex { binary: None, .. } => {
            Some(("agent/kind", std::path::PathBuf::from("codex")))
        }
        AgentConfig::Command { command, .. } => command
            .first()
            .map(|c| ("agent/command/0", std::path::PathBuf::from(c))),
    };
    if let Some((key, program)) = program {
        if let Some(problem) = program_problem(&program, &lp.env) {
            push(key, problem);
        }
    }
    out
}

/// Why the agent's `program` could not be started, when it could not: a path that is missing
/// or not executable, or a bare name not found on the `PATH` the agent gets (the loop's `env`,
/// else loopd's). An agent that cannot start pauses its loop (`agent_unavailable`); saying so
/// here saves the run.
fn program_problem(
    program: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let bare = program.components().count() == 1 && !program.as_os_str().is_empty();
    if bare {
        let path = crate::child_env::child_path(env);
        let found = crate::child_env::resolve_program(program, path.as_deref());
        return (found == program).then(|| {
            format!(
                "the agent program `{}` is not on PATH (install it, or give its path)",
                program.display()
            )
        });
    }
    // Relative paths were made absolute when the file was loaded.
    if !program.is_file() {
        Some(format!(
            "the agent program `{}` does not exist",
            program.display()
        ))
    } else if !is_executable(program) {
        Some(format!(
            "the agent program `{}` is not executable",
            program.display()
        ))
    } else {
        None
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// `other-loop:ID` references: the loop and the test exist, and no cycle spans loops.
fn cross_check(
    loops: &[(LoopConfig, super::load::Origin)],
    names: &[String],
    tests: &[Option<LoadedTests>],
    report: &mut Report,
) {
    let index: HashMap<&str, usize> = loops
        .iter()
        .enumerate()
        .map(|(i, (lp, _))| (lp.name.as_str(), i))
        .collect();
    // Global graph over every test of every readable tests file.
    let mut nodes: Vec<(usize, usize)> = Vec::new(); // (loop, position in LoadedTests::tests)
    let mut node_of: HashMap<(usize, &str), usize> = HashMap::new();
    for (l, t) in tests.iter().enumerate() {
        for (k, (_, spec)) in t.iter().flat_map(|t| t.tests.iter().enumerate()) {
            node_of.entry((l, spec.id.as_str())).or_insert_with(|| {
                nodes.push((l, k));
                nodes.len() - 1
            });
        }
    }
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut crosses = vec![false; nodes.len()];
    for (l, t) in tests.iter().enumerate() {
        let Some(t) = t else { continue };
        for (k, (_, spec)) in t.tests.iter().enumerate() {
            let Some(&from) = node_of.get(&(l, spec.id.as_str())) else {
                continue;
            };
            if nodes[from].1 != k {
                continue; // a duplicate id, reported already
            }
            for dep in &spec.depends_on {
                let (other, id) = match dep.split_once(':') {
                    Some((o, id)) => (index.get(o).copied(), id),
                    None => (Some(l), dep.as_str()),
                };
                if let Some(&to) = other.and_then(|o| node_of.get(&(o, id))) {
                    edges[from].push(to);
                    crosses[from] |= nodes[to].0 != l;
                }
            }
        }
        for c in &t.cross {
            let expected = match index.get(c.other_loop.as_str()) {
                None if names.contains(&c.other_loop) => continue, // that loop has problems
                None => format!(
                    "unknown loop `{}` in `{}:{}`",
                    c.other_loop, c.other_loop, c.id
                ),
                // The graph's map, not a scan of that loop's tests per reference.
                Some(&o) => match &tests[o] {
                    Some(_) if !node_of.contains_key(&(o, c.id.as_str())) => {
                        format!("unknown test id `{}` in loop `{}`", c.id, c.other_loop)
                    }
                    _ => continue,
                },
            };
            report.push(t.problem(&c.pointer, expected));
        }
    }
    for cycle in find_cycles(&edges) {
        // Cycles inside one loop are reported with its tests file.
        if !cycle.iter().any(|n| crosses[*n]) {
            continue;
        }
        let label = |n: &usize| {
            let (l, k) = nodes[*n];
            format!(
                "{}:{}",
                loops[l].0.name,
                tests[l].as_ref().map_or("", |t| &t.tests[k].1.id)
            )
        };
        let names: Vec<String> = cycle.iter().map(label).collect();
        let (l, k) = nodes[cycle[0]];
        if let Some(t) = &tests[l] {
            let at = format!("/tests/{}/depends_on", t.tests[k].0);
            report.push(t.problem(
                &at,
                format!(
                    "dependency cycle across loops: {} -> {}",
                    names.join(" -> "),
                    names[0]
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_loop_body_with_paths_against_the_fleet_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.json"),
            r#"{"tests": [{"id": "a", "title": "A", "spec": "s", "verify": "true"}]}"#,
        )
        .unwrap();
        let body = json!({"name": "api", "tests_file": "t.json", "init_workdir": true,
                          "agent": {"kind": "command", "command": ["true"]}});
        let state = dir.path().join("state");
        let lp = parse_loop_value(body.clone(), dir.path(), dir.path(), &state).unwrap();
        assert_eq!(lp.tests_file, dir.path().join("t.json"));
        assert_eq!(lp.workdir, Some(dir.path().join("workdirs/api")));
        // A workdir inside the state directory is refused, named.
        let mut inside = body;
        inside["workdir"] = json!("state/work");
        let report = parse_loop_value(inside, dir.path(), dir.path(), &state).unwrap_err();
        assert!(
            report.to_string().contains("/workdir: the workdir")
                && report.to_string().contains("is inside the state directory"),
            "{report}"
        );
    }

    #[test]
    fn refuses_a_bad_loop_body_with_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let body = json!({"name": "a/b", "tests_file": 3, "max_attempts": 0,
                          "agent": {"kind": "command", "command": ["true"], "extra": 1}});
        let report = parse_loop_value(body, dir.path(), dir.path(), dir.path()).unwrap_err();
        assert_eq!(
            report.to_string(),
            "/agent/extra: unknown key `extra`\n\
             /max_attempts: expected a number >= 1, found 0\n\
             /name: invalid loop name: `a/b` contains `/`; only letters, digits, `.`, `_` and `-` are allowed\n\
             /tests_file: expected a string, found 3\n\
             4 problems"
        );
        let body = json!({"name": "ok", "tests_file": "missing.json",
                          "agent": {"kind": "claude-code", "binary": "/bin/sh"}});
        let state = dir.path().join("state");
        let report = parse_loop_value(body, dir.path(), dir.path(), &state).unwrap_err();
        assert_eq!(report.len(), 2, "{report}"); // workdir and tests file
    }
}
