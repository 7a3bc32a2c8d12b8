//! "Why did it fail?" against the built binary: verify's first lines in `run --plain`, the run
//! summary and `attempts`; an agent that cannot start pausing its loop (`agent_unavailable`)
//! without a counted attempt, and `resume` carrying on once it is back; `insights` after
//! failures whose verify printed nothing.

mod common;
mod serving;

use common::{wait_until, Fleet, LOOP, WAIT};
use serde_json::json;
use serving::Daemon;

/// A verify that prints a failure of four lines (one empty) and exits 1.
const NOISY_VERIFY: &str =
    "echo 'FAIL: expected 42, got 41'; echo second; echo; echo third; echo fourth; exit 1";

#[test]
fn verifys_first_lines_are_in_plain_output_the_summary_and_attempts() {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "noisy", "title": "n", "spec": "s", "verify": NOISY_VERIFY},
            // More than the 40 lines the tail keeps: the first one is still shown.
            {"id": "long", "title": "l", "spec": "s",
             "verify": "for i in $(seq 1 60); do echo \"line $i\"; done; exit 1"},
        ]))
        .agent("echo work >> \"$LOOPD_TEST_ID.txt\"")
        .write();
    let run = fleet.run();
    run.expect_code(1);
    for needle in ["│ FAIL: expected 42, got 41", "│ second", "│ third"] {
        assert!(run.stderr.contains(needle), "`{needle}` live\n{run}");
        assert!(
            run.stdout.contains(needle),
            "`{needle}` in the summary\n{run}"
        );
    }
    assert!(
        !run.stderr.contains("│ fourth"),
        "three lines at most\n{run}"
    );
    assert!(run.stderr.contains("verify exited non-zero"), "{run}");

    let attempts = fleet.cmd(&["-c", "loopd.toml", "attempts", LOOP]);
    attempts.expect_code(0);
    assert!(
        attempts.stdout.contains("│ FAIL: expected 42, got 41"),
        "{attempts}"
    );
    assert!(attempts.stdout.contains("│ line 1\n"), "{attempts}");
    assert!(!attempts.stdout.contains("│ line 60"), "{attempts}");
    let long = fleet.attempts("long");
    assert!(long[0]["verify_head"]
        .as_str()
        .is_some_and(|h| h.starts_with("line 1\n")));
}

/// Two tests; the agent of the first moves itself away (after `validate`, which would refuse a
/// missing program), so that the second's cannot start.
fn vanishing_agent(claude_code: bool) -> Fleet {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "a", "title": "a", "spec": "s", "verify": "test -f a.txt"},
            {"id": "b", "title": "b", "spec": "s", "verify": "test -f b.txt",
             "depends_on": ["a"]},
        ]))
        .agent(
            "touch \"$LOOPD_TEST_ID.txt\"\n\
             if [ \"$LOOPD_TEST_ID\" = a ]; then mv \"$ROOT/agent.sh\" \"$ROOT/agent.gone\"; fi",
        )
        .write();
    if claude_code {
        fleet.use_claude_code_preset();
    }
    fleet
}

/// Puts the agent back where the config names it.
fn restore_agent(fleet: &Fleet) {
    std::fs::rename(
        fleet.root().join("agent.gone"),
        fleet.root().join("agent.sh"),
    )
    .unwrap();
}

fn assert_paused_uncounted(fleet: &Fleet) {
    let lp = fleet.loop_status();
    assert_eq!(
        (lp["status"].as_str(), lp["reason"].as_str()),
        (Some("paused"), Some("agent_unavailable")),
        "{lp:#}"
    );
    let b = fleet.attempts("b");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(b[0]["outcome"], "agent_unavailable", "{:#}", b[0]);
    assert_eq!(b[0]["counted"], false);
    assert!(
        b[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("cannot start the agent `")
                && r.ends_with("agent.sh`: No such file or directory")),
        "{:#}",
        b[0]
    );
    let t = fleet.test_status("b");
    assert_eq!(
        (t["status"].as_str(), t["counted_attempts"].as_u64()),
        (Some("pending"), Some(0)),
        "{t:#}"
    );
}

fn a_missing_agent_pauses_the_run_and_the_next_run_carries_on(claude_code: bool) {
    let fleet = vanishing_agent(claude_code);
    let run = fleet.run();
    // Paused for a person: exit 3, with the cause said.
    run.expect_code(3);
    assert!(
        run.stderr.contains("cannot start the agent `") && run.stderr.contains("agent_unavailable"),
        "{run}"
    );
    // The summary names the cause too, in the system's words.
    assert!(
        run.stdout
            .contains("agent.sh`: No such file or directory\n"),
        "{run}"
    );
    assert_paused_uncounted(&fleet);
    // Nothing was counted, so a run after the fix has all of max_attempts (1) left.
    restore_agent(&fleet);
    fleet.run().expect_code(0);
    assert_eq!(fleet.test_status("b")["status"], "passed");
}

#[test]
fn a_missing_command_agent_pauses_the_run_without_counting() {
    a_missing_agent_pauses_the_run_and_the_next_run_carries_on(false);
}

#[test]
fn a_missing_claude_code_binary_pauses_the_run_without_counting() {
    a_missing_agent_pauses_the_run_and_the_next_run_carries_on(true);
}

#[test]
fn resume_carries_on_once_the_agent_is_back() {
    let fleet = vanishing_agent(false);
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("the loop paused for its agent", WAIT, || {
        let lp = fleet.loop_status();
        lp["reason"] == "agent_unavailable"
    });
    assert_paused_uncounted(&fleet);
    // The alert is in the journal (and so goes to webhooks and SSE).
    let mut events = serving::http()
        .get(daemon.url("/api/events?after=0"))
        .header(
            "Authorization",
            format!("Bearer {}", serving::token(&fleet)),
        )
        .send()
        .unwrap();
    let mut seen = String::new();
    while !(seen.contains("event: alert") && seen.contains("cannot start the agent")) {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut events, &mut buf).unwrap();
        assert!(n > 0, "the journal has no alert: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(events);
    restore_agent(&fleet);
    fleet
        .cmd(&["-c", "loopd.toml", "resume", LOOP])
        .expect_code(0);
    wait_until("the loop finished after resume", WAIT, || {
        fleet.loop_status()["status"] == "finished"
    });
    assert_eq!(fleet.test_status("b")["status"], "passed");
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn insights_counts_failures_whose_verify_printed_nothing() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "quiet", "title": "q", "spec": "s", "verify": "exit 1"}]))
        .agent("echo work >> w.txt")
        .set("max_attempts", "2")
        .write();
    fleet.run().expect_code(1);
    let out = fleet.cmd(&["insights", "loopd.toml"]);
    out.expect_code(0);
    assert!(!out.stdout.contains("No failures recorded"), "{out}");
    assert!(
        out.stdout.contains("2x") && out.stdout.contains("verify failed with no output"),
        "{out}"
    );
    assert!(out.stdout.contains("main:quiet"), "{out}");
}
