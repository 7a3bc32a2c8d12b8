//! Supervision end to end: loop actors that panic or stop answering are restarted and finish
//! their tests; one that fails on every start is given up after the restart intensity while the
//! rest of the fleet completes. Faults come from `LOOPD_TEST_FAULT` (actors/src/fault.rs).

mod common;

use std::time::Duration;

use common::{Fleet, Running, LOOP, RUN_TIMEOUT};
use serde_json::{json, Value};

/// Two tests that the agent passes by touching `<id>.done`.
fn two_tests() -> Value {
    json!([
        {"id": "T1", "title": "one", "spec": "touch T1.done", "verify": "test -f T1.done"},
        {"id": "T2", "title": "two", "spec": "touch T2.done", "verify": "test -f T2.done",
         "depends_on": ["T1"]}
    ])
}

const AGENT: &str = "sleep 0.3; touch \"$LOOPD_TEST_ID.done\"";

/// Rewrites `loopd.toml` with `[fleet]` keys and, optionally, a second loop `other` whose
/// workdir loopd creates under the state directory.
fn write_fleet(fleet: &Fleet, fleet_keys: &str, second_loop: bool) {
    let mut toml =
        format!("[fleet]\nstate_dir = \"state\"\nmax_concurrent_agents = 2\n{fleet_keys}\n");
    for name in std::iter::once(LOOP).chain(second_loop.then_some("other")) {
        let workdir = if name == LOOP {
            "workdir = \"work\"\n"
        } else {
            "init_workdir = true\n"
        };
        toml.push_str(&format!(
            "[[loops]]\nname = \"{name}\"\n{workdir}tests_file = \"tests.json\"\nmax_attempts = 2\n\
             kill_grace = \"1s\"\n[loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n\n"
        ));
    }
    std::fs::write(fleet.config_file(), toml).unwrap();
}

fn run_with_fault(fleet: &Fleet, fault: &str) -> common::Run {
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("LOOPD_TEST_FAULT", fault);
    Running::spawn(cmd).wait(RUN_TIMEOUT)
}

fn loop_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["loops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no loop {name} in {status}"))
}

fn test_statuses(lp: &Value) -> Vec<String> {
    lp["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_loop_actor_that_panics_is_restarted_from_the_store_and_finishes() {
    let fleet = Fleet::new().tests(two_tests()).agent(AGENT).write();
    write_fleet(&fleet, "restart_backoff = \"10ms\"", false);
    // Panics once, after T1's attempt finished but before its outcome is recorded.
    let run = run_with_fault(&fleet, "panic:loop_attempt_done:main:1");
    run.expect_code(0);
    let status = fleet.status();
    let lp = loop_of(&status, LOOP);
    assert_eq!(test_statuses(lp), ["passed", "passed"], "{run}");
    // The attempt whose outcome was never recorded is reconciled as interrupted, not counted,
    // and not run twice under the same number.
    let t1 = fleet.attempts("T1");
    let outcomes: Vec<&str> = t1.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["interrupted", "passed"], "{t1:?}");
    assert_eq!(t1[0]["counted"], false);
    let numbers: Vec<u64> = t1.iter().map(|a| a["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2]);
}

#[test]
fn a_loop_that_panics_on_every_start_is_given_up_while_the_fleet_completes() {
    let fleet = Fleet::new().tests(two_tests()).agent(AGENT).write();
    write_fleet(
        &fleet,
        "max_restarts = 2\nrestart_window = \"60s\"\nrestart_backoff = \"10ms\"",
        true,
    );
    let run = run_with_fault(&fleet, "panic:loop_boot:other");
    run.expect_code(1);
    let status = fleet.status();
    let bad = loop_of(&status, "other");
    assert_eq!(bad["status"], "crashed", "{status}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.starts_with("restart_intensity"), "{reason}");
    let good = loop_of(&status, LOOP);
    assert_eq!(good["status"], "finished");
    assert_eq!(test_statuses(good), ["passed", "passed"]);
    assert!(run.stderr.contains("crashed"), "{run}");
}

#[test]
fn a_loop_actor_that_stops_answering_is_killed_and_restarted() {
    let fleet = Fleet::new()
        .tests(two_tests())
        .agent("sleep 1; touch \"$LOOPD_TEST_ID.done\"")
        .write();
    write_fleet(
        &fleet,
        "ping_interval = \"200ms\"\nping_timeout = \"300ms\"\nrestart_backoff = \"10ms\"",
        false,
    );
    let run = run_with_fault(&fleet, "hang:loop_ping:main:1");
    run.expect_code(0);
    assert!(run.stderr.contains("did not answer"), "{run}");
    let status = fleet.status();
    assert_eq!(test_statuses(loop_of(&status, LOOP)), ["passed", "passed"]);
    // Whatever attempt was cut short by the restart is recorded once, as interrupted.
    for t in ["T1", "T2"] {
        let attempts = fleet.attempts(t);
        assert_eq!(attempts.last().unwrap()["outcome"], "passed");
        assert!(attempts
            .iter()
            .all(|a| a["outcome"] == "passed" || a["outcome"] == "interrupted"));
    }
    let _ = Duration::ZERO;
}

#[test]
fn a_loop_whose_boot_git_is_slow_still_answers_pings_and_is_not_restarted() {
    let fleet = Fleet::new().tests(two_tests()).agent(AGENT).write();
    write_fleet(
        &fleet,
        "ping_interval = \"100ms\"\nping_timeout = \"300ms\"\nrestart_backoff = \"10ms\"",
        false,
    );
    // git as on a big repository: `status` takes several times the liveness limit.
    let real_git = String::from_utf8(
        std::process::Command::new("bash")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = fleet.root().join("slow-git");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = format!(
        "#!/usr/bin/env bash\nfor a in \"$@\"; do [ \"$a\" = status ] && sleep 1.5 && break; done\nexec {} \"$@\"\n",
        real_git.trim()
    );
    std::fs::write(bin.join("git"), wrapper).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    cmd.env("PATH", path);
    let run = Running::spawn(cmd).wait(RUN_TIMEOUT);
    run.expect_code(0);
    assert!(!run.stderr.contains("did not answer"), "{run}");
    let status = fleet.status();
    assert_eq!(test_statuses(loop_of(&status, LOOP)), ["passed", "passed"]);
    // Never restarted: no attempt was cut short.
    for t in ["T1", "T2"] {
        let outcomes: Vec<Value> = fleet
            .attempts(t)
            .iter()
            .map(|a| a["outcome"].clone())
            .collect();
        assert_eq!(outcomes, [json!("passed")], "{t}");
    }
}
