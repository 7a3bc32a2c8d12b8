//! `loopd validate` and `loopd init`, end to end against the built binary.

use std::path::Path;
use std::process::{Command, Output};

fn loopd(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopd"));
    cmd.args(args).current_dir(dir).env_remove("LOOPD_CONFIG");
    // Only the variables a test sets: a developer's own LOOPD_* must not change the outcome.
    for (k, _) in std::env::vars() {
        if k.starts_with("LOOPD_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("loopd runs")
}

fn stdout(out: &Output, dir: &Path) -> String {
    String::from_utf8_lossy(&out.stdout).replace(&dir.display().to_string(), "<DIR>")
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const BROKEN_FLEET: &str = r#"include = ["loops/*.toml"]

[fleet]
max_concurrent_agents = 0
colour = "blue"

[[loops]]
name = "bad name"
workdir = "nowhere"
tests_file = "missing.json"
agent = { kind = "command", command = ["true"] }

[[loops]]
name = "api"
init_workdir = true
tests_file = "api.tests.json"
max_attempts = "three"
stall_timeout = "a while"
agent = { kind = "command", command = [] }

[[loops]]
name = "core"
init_workdir = true
tests_file = "core.tests.json"
prompt_template = "prompt.md"
agent = { kind = "shell", command = ["true"] }
"#;

const CORE_LOOP: &str = r#"name = "core"
init_workdir = true
test_state_file = "../core.tests.json"
specs_dir = "../specs"
[agent]
kind = "command"
command = ["true"]
"#;

const CORE_TESTS: &str = r#"{
  "tests": [
    {"id": "a", "title": "A", "spec": "x", "verify": "true", "depends_on": ["c"]},
    {"id": "b", "title": "B", "spec": "x", "verify": "  "},
    {"id": "b", "title": "B again", "spec": "x", "verify": "true"},
    {"id": "c", "title": "C", "spec": "x", "verify": "true", "depends_on": ["a", "zzz"]},
    {"id": "d", "title": "D", "spec_file": "d.md", "verify": "true",
     "depends_on": ["nope:T1"]},
    {"id": "e", "title": "E", "spec": "x", "verify": "true", "colour": "red"}
  ]
}
"#;

#[test]
fn lists_every_problem_of_a_broken_fleet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "loopd.toml", BROKEN_FLEET);
    write(dir, "loops/core.toml", CORE_LOOP);
    write(dir, "core.tests.json", CORE_TESTS);
    std::fs::create_dir(dir.join("specs")).unwrap();
    let out = loopd(&["validate", "loopd.toml"], dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Loops with schema problems still have their files and tests checked: `api`'s tests file
    // and `core`'s prompt template. The fleet file's `core` (no `specs_dir`) and the included
    // `core` read the same tests file, so `d.md` is reported for each.
    assert_eq!(
        stdout(&out, dir),
        "\
loopd.toml:4: /fleet/max_concurrent_agents: expected a number >= 1, found 0
loopd.toml:5: /fleet/colour: unknown key `colour`
loopd.toml:8: /loops/0/name: invalid loop name: `bad name` contains ` `; only letters, digits, `.`, `_` and `-` are allowed
loopd.toml:9: /loops/0/workdir: the workdir `<DIR>/nowhere` does not exist (create it, or set `init_workdir = true`)
loopd.toml:10: /loops/0/tests_file: the tests file `<DIR>/missing.json` does not exist
loopd.toml:16: /loops/1/tests_file: the tests file `<DIR>/api.tests.json` does not exist
loopd.toml:17: /loops/1/max_attempts: expected an integer >= 1, found \"three\"
loopd.toml:18: /loops/1/stall_timeout: expected a duration such as \"30m\" or \"1h 30m\", found \"a while\"
loopd.toml:19: /loops/1/agent/command: expected at least 1 item, found an empty array
loopd.toml:25: /loops/2/prompt_template: the prompt template `<DIR>/prompt.md` does not exist
loopd.toml:26: /loops/2/agent/kind: expected one of \"command\", \"claude-code\", \"codex\", found \"shell\"
loops/core.toml:1: /name: duplicate loop name `core` (first defined at loopd.toml:22)
<DIR>/core.tests.json:3: /tests/0/depends_on: dependency cycle: a -> c -> a
<DIR>/core.tests.json:4: /tests/1/verify: expected a non-empty verify command
<DIR>/core.tests.json:5: /tests/2/id: duplicate test id `b` (first at /tests/1)
<DIR>/core.tests.json:6: /tests/3/depends_on/1: unknown test id `zzz`
<DIR>/core.tests.json:7: /tests/4/spec_file: `spec_file` needs the loop's `specs_dir`
<DIR>/core.tests.json:7: /tests/4/spec_file: the spec file `<DIR>/specs/d.md` does not exist
<DIR>/core.tests.json:8: /tests/4/depends_on/0: unknown loop `nope` in `nope:T1`
<DIR>/core.tests.json:9: /tests/5/colour: unknown key `colour`
20 problems
"
    );
}

#[test]
fn checks_the_file_system_and_references_across_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "loopd.toml",
        r#"[[loops]]
name = "web"
workdir = "nowhere"
tests_file = "missing.json"
prompt_template = "prompt.md"
agent = { kind = "command", command = ["./agent.sh"] }

[[loops]]
name = "core"
init_workdir = true
tests_file = "core.tests.json"
specs_dir = "specs"
agent = { kind = "claude-code" }
"#,
    );
    write(
        dir,
        "core.tests.json",
        r#"{"tests": [
  {"id": "a", "title": "A", "spec_file": "a.md", "verify": "true",
   "depends_on": ["web:x", "nope:T1"]},
  {"id": "b", "title": "B", "spec": "x", "spec_file": "a.md", "verify": "true"}
]}"#,
    );
    // A PATH without `claude`, whatever the machine has installed.
    let empty = tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = loopd(&["validate"], dir, &[("PATH", empty.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stdout(&out, dir),
        "\
loopd.toml:3: /loops/0/workdir: the workdir `<DIR>/nowhere` does not exist (create it, or set `init_workdir = true`)
loopd.toml:4: /loops/0/tests_file: the tests file `<DIR>/missing.json` does not exist
loopd.toml:5: /loops/0/prompt_template: the prompt template `<DIR>/prompt.md` does not exist
loopd.toml:6: /loops/0/agent/command/0: the agent program `<DIR>/agent.sh` does not exist
loopd.toml:12: /loops/1/specs_dir: the specs folder `<DIR>/specs` does not exist
loopd.toml:13: /loops/1/agent/kind: the agent program `claude` is not on PATH (install it, or give its path)
<DIR>/core.tests.json:2: /tests/0/spec_file: the spec file `<DIR>/specs/a.md` does not exist
<DIR>/core.tests.json:3: /tests/0/depends_on/1: unknown loop `nope` in `nope:T1`
<DIR>/core.tests.json:4: /tests/1: has both `spec` and `spec_file`; keep one
9 problems
"
    );
}

#[test]
fn an_agent_program_missing_from_path_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    write(
        dir,
        "tests.json",
        r#"{"tests": [{"id": "a", "title": "A", "spec": "x", "verify": "true"}]}"#,
    );
    write(
        dir,
        "loopd.toml",
        r#"[[loops]]
name = "cmd"
workdir = "work"
tests_file = "tests.json"
agent = { kind = "command", command = ["no-such-agent-program"] }

[[loops]]
name = "cc"
workdir = "work"
tests_file = "tests.json"
agent = { kind = "claude-code", binary = "no-such-claude" }

[[loops]]
name = "cx"
workdir = "work"
tests_file = "tests.json"
agent = { kind = "codex", binary = "no-such-codex" }
"#,
    );
    let out = loopd(&["validate"], dir, &[("PATH", "/usr/bin:/bin")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stdout(&out, dir),
        "\
loopd.toml:5: /loops/0/agent/command/0: the agent program `no-such-agent-program` is not on PATH (install it, or give its path)
loopd.toml:11: /loops/1/agent/binary: the agent program `no-such-claude` is not on PATH (install it, or give its path)
loopd.toml:17: /loops/2/agent/binary: the agent program `no-such-codex` is not on PATH (install it, or give its path)
3 problems
"
    );
}

#[test]
fn a_cycle_across_loops_is_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut fleet = String::new();
    for name in ["a", "b"] {
        fleet.push_str(&format!(
            "[[loops]]\nname = \"{name}\"\ninit_workdir = true\ntests_file = \"{name}.json\"\n\
             agent = {{ kind = \"command\", command = [\"true\"] }}\n\n"
        ));
    }
    write(dir, "loopd.toml", &fleet);
    write(
        dir,
        "a.json",
        r#"{"tests": [{"id": "x", "title": "X", "spec": "s", "verify": "true", "depends_on": ["b:y"]}]}"#,
    );
    write(
        dir,
        "b.json",
        r#"{"tests": [{"id": "y", "title": "Y", "spec": "s", "verify": "true", "depends_on": ["a:x", "a:q"]}]}"#,
    );
    let out = loopd(&["validate", "loopd.toml"], dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stdout(&out, dir),
        "\
<DIR>/a.json:1: /tests/0/depends_on: dependency cycle across loops: a:x -> b:y -> a:x
<DIR>/b.json:1: /tests/0/depends_on/1: unknown test id `q` in loop `a`
2 problems
"
    );
}

#[test]
fn init_scaffolds_a_fleet_that_validates_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = loopd(&["init", "fleet", "--name", "my-loop"], dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for file in ["loopd.toml", "tests.json", "prompt.md", "agent.sh"] {
        assert!(dir.join("fleet").join(file).is_file(), "{file}");
    }
    let out = loopd(&["validate", "fleet/loopd.toml"], dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out, dir),
        "fleet `fleet/loopd.toml` is valid: 1 loop, 2 tests\n"
    );
    // `-c` and LOOPD_CONFIG find the fleet too.
    let out = loopd(&["-c", "fleet/loopd.toml", "validate"], dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = loopd(&["validate"], dir, &[("LOOPD_CONFIG", "fleet/loopd.toml")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let before = std::fs::read_to_string(dir.join("fleet/tests.json")).unwrap();
    let out = loopd(&["init", "fleet"], dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("fleet/tests.json")).unwrap(),
        before
    );
}

#[test]
fn the_example_fleet_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The example's frontend loop runs `claude` from PATH: a stand-in, on machines without it.
    let tmp = tempfile::tempdir().unwrap();
    let claude = tmp.path().join("claude");
    std::fs::write(&claude, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = loopd(
        &["validate", "config/loopd.example.toml"],
        root,
        &[("PATH", &path)],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(loopd(&["init", "--name", "web.ui"], dir, &[])
        .status
        .success());
    let out = loopd(
        &["validate"],
        dir,
        &[
            ("LOOPD_LOOPS__WEB_UI__MAX_ATTEMPTS", "abc"),
            ("LOOPD_FLEET__MAX_CONCURRENT_AGENTS", "4"),
            ("LOOPD_LOOPS__API__PRIORITY", "1"),
            ("LOOPD_PROMPT_FILE", "/nonexistent"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stdout(&out, dir),
        "\
loopd.toml: $LOOPD_LOOPS__API__PRIORITY: names no loop of this fleet (loops: web.ui)
loopd.toml: /loops/0/max_attempts: expected an integer >= 1, found \"abc\" (set by $LOOPD_LOOPS__WEB_UI__MAX_ATTEMPTS)
2 problems
"
    );
    // A good override is applied: a workdir that does not exist is refused once
    // init_workdir is turned off from the environment.
    let out = loopd(
        &["validate"],
        dir,
        &[("LOOPD_LOOPS__WEB_UI__INIT_WORKDIR", "false")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stdout(&out, dir)
            .contains("/loops/0/workdir: the workdir `<DIR>/workdirs/web.ui` does not exist"),
        "{}",
        stdout(&out, dir)
    );
}

#[test]
fn a_missing_fleet_file_is_named_as_missing_not_as_a_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let out = loopd(&["validate"], tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(stdout(&out, tmp.path()), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loopd validate: no fleet file found (tried ./loopd.toml (the default"),
        "{stderr}"
    );
}

#[test]
fn one_run_lists_the_problems_of_every_layer() {
    // An unknown key in the loop used to stop its tests file from being read; a test without a
    // title used to be left out of the id, verify, dependency and cycle checks.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "loopd.toml",
        r#"[[loops]]
name = "web"
init_workdir = true
tests_file = "web.tests.json"
colour = "blue"
agent = { kind = "command", command = ["true"] }
"#,
    );
    write(
        dir,
        "web.tests.json",
        r#"{"tests": [
  {"id": "a", "title": "A", "spec": "x", "verify": "true", "depends_on": ["b"]},
  {"id": "b", "spec": "x", "verify": "true", "depends_on": ["a", "zzz"]},
  {"id": "a", "spec": "x", "verify": " "}
]}"#,
    );
    let out = loopd(&["validate", "loopd.toml"], dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stdout(&out, dir),
        "\
loopd.toml:5: /loops/0/colour: unknown key `colour`
<DIR>/web.tests.json:2: /tests/0/depends_on: dependency cycle: a -> b -> a
<DIR>/web.tests.json:3: /tests/1: missing required key `title`
<DIR>/web.tests.json:3: /tests/1/depends_on/1: unknown test id `zzz`
<DIR>/web.tests.json:4: /tests/2: missing required key `title`
<DIR>/web.tests.json:4: /tests/2/id: duplicate test id `a` (first at /tests/0)
<DIR>/web.tests.json:4: /tests/2/verify: expected a non-empty verify command
7 problems
"
    );
}

/// A 100,000-test dependency chain (each test depends on the one before) validates: the checks
/// are linear, and nothing recurses once per link (a recursive walk overflows the stack here).
/// Before the dependency lookups were maps, this took minutes; the timing is in benches/scale.rs.
#[test]
fn a_chain_of_100000_tests_validates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 100_000;
    let tests: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = (i > 0)
                .then(|| format!("T-{}", i - 1))
                .into_iter()
                .collect();
            serde_json::json!({"id": format!("T-{i}"), "title": "t", "spec": "x",
                               "verify": "true", "depends_on": deps})
        })
        .collect();
    write(
        d,
        "chain.tests.json",
        &serde_json::json!({ "tests": tests }).to_string(),
    );
    write(
        d,
        "loopd.toml",
        "[[loops]]\nname = \"chain\"\ninit_workdir = true\ntests_file = \"chain.tests.json\"\n\
         agent = { kind = \"command\", command = [\"true\"] }\n",
    );
    let out = loopd(&["validate"], d, &[]);
    let text = stdout(&out, d);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 loop, 100000 tests"), "{text}");
}
