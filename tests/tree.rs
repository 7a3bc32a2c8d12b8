//! The scheduler and the monitor are children of the supervision tree: each one panics mid-fleet
//! (`LOOPD_TEST_FAULT`, actors/src/fault.rs) and the fleet still finishes, with no slot granted
//! twice and no hang left undetected; `/readyz` and `/metrics` show the restart.

mod common;
mod serving;

use std::time::Duration;

use common::{wait_until, Fleet, Running, LOOP, RUN_TIMEOUT, WAIT};
use serde_json::{json, Value};
use serving::{http, Daemon};

fn tests(n: usize) -> Value {
    (1..=n)
        .map(|i| json!({"id": format!("T{i}"), "title": "t", "spec": "touch it", "verify": format!("test -f T{i}.done")}))
        .collect()
}

/// Three loops sharing `max_concurrent_agents` slots, the same tests file and agent.
fn write_fleet(fleet: &Fleet, slots: usize, fleet_keys: &str, loop_keys: &str) {
    let mut toml =
        format!("[fleet]\nstate_dir = \"state\"\nmax_concurrent_agents = {slots}\n{fleet_keys}\n");
    for name in [LOOP, "second", "third"] {
        let workdir = if name == LOOP {
            "workdir = \"work\"\n".to_string()
        } else {
            format!("workdir = \"{name}\"\ninit_workdir = true\n")
        };
        toml.push_str(&format!(
            "[[loops]]\nname = \"{name}\"\n{workdir}tests_file = \"tests.json\"\n{loop_keys}\n\
             kill_grace = \"1s\"\n[loops.agent]\nkind = \"command\"\ncommand = [\"{}/agent.sh\"]\n\n",
            fleet.root().display()
        ));
    }
    std::fs::write(fleet.config_file(), toml).unwrap();
}

fn run_with_fault(fleet: &Fleet, fault: &str) -> common::Run {
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("LOOPD_TEST_FAULT", fault);
    Running::spawn(cmd).wait(RUN_TIMEOUT)
}

fn statuses(fleet: &Fleet) -> Vec<(String, Vec<String>)> {
    let status = fleet.status();
    status["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let tests = l["tests"].as_array().unwrap();
            let words = tests
                .iter()
                .map(|t| t["status"].as_str().unwrap().to_string());
            (l["name"].as_str().unwrap().to_string(), words.collect())
        })
        .collect()
}

#[test]
fn the_scheduler_panics_mid_fleet_and_the_fleet_finishes_within_its_slots() {
    // Each agent takes one of two slot folders; finding both taken means a third agent runs.
    let agent = "cd \"$ROOT\"\n\
                 if mkdir slot-a 2>/dev/null; then s=slot-a; elif mkdir slot-b 2>/dev/null; then s=slot-b; \
                 else echo \"$LOOPD_LOOP $LOOPD_TEST_ID\" >> overlaps; s=; fi\n\
                 sleep 0.4\n\
                 [ -n \"$s\" ] && rmdir \"$s\"\n\
                 cd - >/dev/null\n\
                 touch \"$LOOPD_TEST_ID.done\"";
    let fleet = Fleet::new().tests(tests(3)).agent(agent).write();
    write_fleet(&fleet, 2, "restart_backoff = \"50ms\"", "max_attempts = 2");
    // The second grant panics the scheduler: one loop holds a slot, the others wait for one.
    let run = run_with_fault(&fleet, "panic:scheduler_grant:*:1:1");
    run.expect_code(0);
    assert!(
        run.stderr.contains("the scheduler failed and is restarted"),
        "{run}"
    );
    for (name, tests) in statuses(&fleet) {
        assert_eq!(tests, ["passed", "passed", "passed"], "loop {name}");
    }
    let overlaps = std::fs::read_to_string(fleet.root().join("overlaps")).unwrap_or_default();
    assert!(
        overlaps.is_empty(),
        "more agents ran than slots:\n{overlaps}"
    );
}

#[test]
fn the_monitor_panics_mid_attempt_and_still_ends_the_hung_agent() {
    // T1's first attempt hangs without a word; the monitor panics on its first look at it.
    let agent =
        "if [ \"$LOOPD_TEST_ID\" = T1 ] && [ \"$LOOPD_ATTEMPT\" = 1 ]; then sleep 600; fi\n\
                 touch \"$LOOPD_TEST_ID.done\"";
    let fleet = Fleet::new()
        .tests(tests(2))
        .agent(agent)
        .set("max_attempts", "2")
        .set("stall_timeout", "\"2s\"")
        .write();
    let run = run_with_fault(&fleet, "panic:monitor_tick:main:1");
    run.expect_code(0);
    assert!(
        run.stderr.contains("the monitor failed and is restarted"),
        "{run}"
    );
    let t1 = fleet.attempts("T1");
    assert_eq!(t1.len(), 2, "{t1:?}");
    assert_eq!(t1[0]["outcome"], "stalled", "{t1:?}");
    assert_eq!(t1[1]["outcome"], "passed");
    assert_eq!(fleet.test_status("T2")["status"], "passed");
}

#[test]
fn readyz_and_metrics_report_a_scheduler_that_is_restarting() {
    let fleet = Fleet::new().tests(tests(1)).agent("touch T1.done").write();
    // A long backoff keeps the scheduler down long enough to be seen.
    let toml = std::fs::read_to_string(fleet.config_file())
        .unwrap()
        .replace("[fleet]\n", "[fleet]\nrestart_backoff = \"3s\"\n");
    std::fs::write(fleet.config_file(), toml).unwrap();
    let daemon = Daemon::start(&fleet, &[("LOOPD_TEST_FAULT", "panic:scheduler_grant:*:1")]);
    let client = http();
    let get = |path: &str| {
        let r = client.get(daemon.url(path)).send().unwrap();
        let code = r.status().as_u16();
        (code, r.text().unwrap())
    };
    let mut seen = String::new();
    wait_until("readyz to say the scheduler restarts", WAIT, || {
        let (code, body) = get("/readyz");
        seen = body.clone();
        code == 503 && body.contains("the scheduler is restarting")
    });
    let (code, health) = get("/healthz");
    assert_eq!(code, 200, "{health}");
    assert!(health.contains("degraded"), "{health}");
    wait_until("readyz to be ready again", WAIT, || get("/readyz").0 == 200);
    let (_, metrics) = get("/metrics");
    assert!(
        metrics.contains("loopd_tree_restarts_total{member=\"scheduler\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("loopd_tree_member_up{member=\"scheduler\",state=\"running\"} 1"),
        "{metrics}"
    );
    wait_until("the loop to finish", WAIT, || {
        fleet.test_status("T1")["status"] == "passed"
    });
    assert_eq!(daemon.terminate(), 0, "{seen}");
    let _ = Duration::ZERO;
}

#[test]
fn a_scheduler_that_fails_past_its_restart_intensity_ends_the_run_with_the_internal_code() {
    let fleet = Fleet::new().tests(tests(1)).agent("touch T1.done").write();
    let toml = std::fs::read_to_string(fleet.config_file())
        .unwrap()
        .replace(
            "[fleet]\n",
            "[fleet]\nmax_restarts = 1\nrestart_backoff = \"10ms\"\n",
        );
    std::fs::write(fleet.config_file(), toml).unwrap();
    // Every incarnation of the scheduler panics as it starts.
    let run = run_with_fault(&fleet, "panic:scheduler_start:*");
    run.expect_code(70);
    assert!(
        run.stderr
            .contains("the scheduler failed after 1 restarts and was given up"),
        "{run}"
    );
}
