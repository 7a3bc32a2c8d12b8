//! Nothing an agent starts outlives its attempt: processes that left the agent's process group
//! (`setsid`, a double fork, a child that cleared its environment inside such a session) are
//! ended when the attempt ends, and found by the next start after `kill -9` of loopd, while a
//! process that carries the attempt's key but is older than the attempt is never touched.

mod common;

use std::process::{Command, Stdio};

use common::{alive, read_pids, wait_for_text, Fleet, WAIT};
use nix::sys::signal::Signal;
use serde_json::json;

/// Starts three processes that leave the agent's group and records their pids in
/// `$ROOT/escaped`, one a line:
/// - a `setsid` sleeper (new session, keeps the environment);
/// - a double fork: a sleeper in a new session whose parent exits at once;
/// - a sleeper that cleared its environment (`env -i`), inside a new session whose leader waits.
const ESCAPE: &str = r#"export ROOT
setsid sleep 300 > /dev/null 2>&1 &
echo $! >> "$ROOT/escaped"
bash -c 'setsid sleep 300 > /dev/null 2>&1 & echo $! >> "$ROOT/escaped"'
setsid bash -c 'env -i sleep 300 > /dev/null 2>&1 & echo $! >> "$ROOT/escaped"; wait' > /dev/null 2>&1 &
while [ "$(wc -l < "$ROOT/escaped")" -lt 3 ]; do sleep 0.01; done
"#;

fn done_test() -> serde_json::Value {
    json!([{"id": "T1", "title": "t", "spec": "s", "verify": "grep -qx ok done.txt"}])
}

#[test]
fn what_left_the_agents_group_is_ended_with_the_attempt() {
    let fleet = Fleet::new()
        .tests(done_test())
        .agent(&format!("{ESCAPE}echo ok > done.txt"))
        .write();
    fleet.run().expect_code(0);
    let escaped = read_pids(&fleet.root().join("escaped"));
    assert_eq!(escaped.len(), 3, "{escaped:?}");
    assert_eq!(
        alive(&escaped),
        Vec::<i32>::new(),
        "processes the agent started outlived its attempt"
    );
}

#[test]
fn an_escaped_process_with_a_name_that_is_not_utf8_is_ended_too() {
    // A sleeper in a new session that renames itself to bytes that are not UTF-8 before it
    // waits: a name that cannot be read as text must not hide a process from loopd.
    let fleet = Fleet::new()
        .tests(done_test())
        .agent(
            r#"export ROOT
setsid bash -c 'printf "\377\376x" > /proc/$$/comm; echo $$ >> "$ROOT/escaped"; while :; do sleep 1; done' > /dev/null 2>&1 &
while [ ! -s "$ROOT/escaped" ]; do sleep 0.01; done
echo ok > done.txt"#,
        )
        .write();
    fleet.run().expect_code(0);
    let escaped = read_pids(&fleet.root().join("escaped"));
    assert_eq!(escaped.len(), 1, "{escaped:?}");
    assert_eq!(
        alive(&escaped),
        Vec::<i32>::new(),
        "the renamed process outlived its attempt"
    );
}

/// `LOOPD_ATTEMPT_KEY` of attempt `n` of test `test` in `fleet`'s loop (as `runtime::attempt_key`
/// makes it), to give a process that loopd did not start a copy of it.
fn attempt_key(fleet: &Fleet, test: &str, n: u32) -> String {
    use sha2::Digest;
    let state = fleet.state_dir();
    let digest = sha2::Sha256::digest(state.as_os_str().as_encoded_bytes());
    format!("{}/{}/{test}/{n}", hex::encode(&digest[..6]), common::LOOP)
}

#[test]
fn after_kill_9_the_next_start_ends_what_left_the_group_but_nothing_older() {
    let fleet = Fleet::new()
        .tests(done_test())
        .agent(&format!(
            "echo \"$LOOPD_ATTEMPT_KEY\" > \"$ROOT/key\"\n{ESCAPE}echo AGENT-READY\nsleep 300"
        ))
        .write();
    let key = attempt_key(&fleet, "T1", 1);
    // Started before the attempt, with a copy of its key: not loopd's to end. (Its folder is the
    // fleet's, so the fleet's cleanup ends it whatever happens.)
    let mut decoy = Command::new("sleep")
        .arg("300")
        .current_dir(fleet.root())
        .env("LOOPD_ATTEMPT_KEY", &key)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    let running = fleet.spawn_run();
    wait_for_text(&fleet.transcript("T1", 1), "AGENT-READY");
    running.signal(Signal::SIGKILL);
    let run = running.wait(WAIT);
    assert_eq!(run.status.code(), None, "{run}");
    let recorded = std::fs::read_to_string(fleet.root().join("key")).unwrap();
    assert_eq!(recorded.trim(), key, "the test's copy of the key is wrong");
    let escaped = read_pids(&fleet.root().join("escaped"));
    assert_eq!(escaped.len(), 3, "{escaped:?}");
    assert_eq!(
        alive(&escaped),
        escaped,
        "the scenario needs them alive after kill -9"
    );

    fleet.write_agent("echo ok > done.txt");
    fleet.run().expect_code(0);
    assert_eq!(
        alive(&escaped),
        Vec::<i32>::new(),
        "the agent's escaped processes survived the restart"
    );
    assert_eq!(
        decoy.try_wait().unwrap(),
        None,
        "a process older than the attempt was ended"
    );
    let a = &fleet.attempts("T1")[0];
    assert_eq!(a["outcome"], "interrupted", "{a:#}");
    let reason = a["reason"].as_str().unwrap_or_default();
    // The agent, its sleep, the three escaped sleepers and the session leader that waits.
    assert!(reason.contains("6 leftover"), "{reason}");
    let _ = decoy.kill();
    let _ = decoy.wait();
}
