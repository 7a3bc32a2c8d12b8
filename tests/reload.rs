//! SIGHUP reloads `loopd serve`'s fleet file: an invalid file is refused with its report while
//! the old fleet keeps running; a valid one adds, changes and retires loops without touching
//! the others.

mod common;
mod serving;

use common::{wait_until, Fleet, LOOP, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use serving::Daemon;

fn loop_toml(name: &str, extra: &str) -> String {
    let place = if name == LOOP {
        "workdir = \"work\""
    } else {
        "init_workdir = true"
    };
    format!(
        "[[loops]]\nname = \"{name}\"\n{place}\ntests_file = \"tests.json\"\n{extra}\n\
         [loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n\n"
    )
}

fn write_config(fleet: &Fleet, loops: &[String]) {
    let mut toml = String::from("[fleet]\nstate_dir = \"state\"\nmax_concurrent_agents = 2\n\n");
    for l in loops {
        toml.push_str(l);
    }
    std::fs::write(fleet.config_file(), toml).unwrap();
}

fn hup(fleet: &Fleet) {
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(fleet.state_dir().join("daemon.json")).unwrap(),
    )
    .unwrap();
    let pid = info["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
}

/// The loop as the daemon's API shows it (the CLI would read the fleet file, which the test
/// makes invalid on purpose).
fn loop_entry(daemon: &Daemon, name: &str) -> Option<Value> {
    let resp = serving::http()
        .get(daemon.url(&format!("/api/loops/{name}")))
        .send()
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().ok()
}

#[test]
fn sighup_applies_a_valid_fleet_file_and_refuses_an_invalid_one() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "one", "spec": "x", "verify": "test -f T1.done"}]))
        .agent("touch \"$LOOPD_TEST_ID.done\"")
        .write();
    write_config(&fleet, &[loop_toml(LOOP, "")]);
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("main to finish", WAIT, || {
        loop_entry(&daemon, LOOP).is_some_and(|l| l["status"] == "finished")
    });

    // An invalid file: refused with its report, the old fleet keeps answering.
    std::fs::write(fleet.config_file(), "[[loops]]\nname = \"../bad\"\n").unwrap();
    hup(&fleet);
    wait_until("the refusal", WAIT, || daemon.log().contains("is invalid"));
    assert!(daemon.log().contains("/loops/0"), "{}", daemon.log());
    assert_eq!(loop_entry(&daemon, LOOP).unwrap()["status"], "finished");

    // A valid file: main changed (priority), a new loop `extra`.
    write_config(
        &fleet,
        &[loop_toml(LOOP, "priority = 2"), loop_toml("extra", "")],
    );
    hup(&fleet);
    wait_until("extra to finish", WAIT, || {
        loop_entry(&daemon, "extra").is_some_and(|l| l["status"] == "finished")
    });
    wait_until("main to be restarted with priority 2", WAIT, || {
        loop_entry(&daemon, LOOP).is_some_and(|l| l["priority"] == 2 && l["status"] == "finished")
    });
    // Its history is intact: T1 passed once, not re-run.
    let main = loop_entry(&daemon, LOOP).unwrap();
    assert_eq!(main["attempts"], 1, "{main:#}");

    // main leaves the file: stopped, its history kept.
    write_config(&fleet, &[loop_toml("extra", "")]);
    hup(&fleet);
    wait_until("main to be retired", WAIT, || {
        loop_entry(&daemon, LOOP).is_some_and(|l| l["reason"] == "removed_from_config")
    });
    let main = loop_entry(&daemon, LOOP).unwrap();
    assert_eq!(main["status"], "stopped");
    assert_eq!(main["progress"]["passed"], 1);
    assert_eq!(loop_entry(&daemon, "extra").unwrap()["status"], "finished");
    assert_eq!(daemon.terminate(), 0);
}
