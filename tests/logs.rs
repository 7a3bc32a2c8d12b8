//! `loopd logs` against the built binary: an attempt's transcript and then verify's output, the
//! same with and without a daemon; `logs -f` showing the last lines of the running attempt when
//! it connects, each line after a time, and ending with 0 when the daemon shuts down.

mod common;
mod serving;

use common::{wait_for_text, wait_until, Fleet, LOOP, WAIT};
use serde_json::json;
use serving::Daemon;

fn logs(fleet: &Fleet, args: &[&str]) -> common::Run {
    let mut all = vec!["-c", "loopd.toml", "logs", LOOP];
    all.extend_from_slice(args);
    fleet.cmd(&all)
}

#[test]
fn logs_shows_the_transcript_then_verify_with_and_without_a_daemon() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "t", "spec": "s",
                       "verify": "echo \"VERIFY-SAYS: no answer in $(cat n.txt)\"; exit 1"}]))
        .agent("echo \"agent line one of $LOOPD_ATTEMPT\"\necho \"agent line two\"\necho \"$LOOPD_ATTEMPT\" > n.txt")
        .set("max_attempts", "2")
        .write();
    fleet.run().expect_code(1);

    let first = logs(&fleet, &["T1:1"]);
    first.expect_code(0);
    let out = &first.stdout;
    let agent = out.find("agent line one of 1").expect(out);
    let verify = out.find("── verify (exit 1)").expect(out);
    let said = out.find("VERIFY-SAYS: no answer in 1").expect(out);
    assert!(agent < verify && verify < said, "{first}");
    assert!(
        out.ends_with("── T1:1: failed: verify exited non-zero\n"),
        "{first}"
    );
    // TEST alone is its latest attempt, and so is the loop alone.
    let latest = logs(&fleet, &["T1"]);
    assert!(
        latest.stdout.contains("VERIFY-SAYS: no answer in 2"),
        "{latest}"
    );
    assert_eq!(logs(&fleet, &[]).stdout, latest.stdout);
    let none = logs(&fleet, &["T1:9"]);
    none.expect_code(2);
    assert!(none.stderr.contains("has no attempt T1:9"), "{none}");

    // A daemon holds the store now: the same, through its API.
    let daemon = Daemon::start(&fleet, &[]);
    let through_api = logs(&fleet, &["T1:1"]);
    through_api.expect_code(0);
    assert_eq!(through_api.stdout, first.stdout);
    assert_eq!(logs(&fleet, &["T1"]).stdout, latest.stdout);
    assert_eq!(logs(&fleet, &[]).stdout, latest.stdout);
    logs(&fleet, &["T1:9"]).expect_code(2);
    assert_eq!(daemon.terminate(), 0);
}

/// Whether `line` begins with `HH:MM:SS `.
fn timed(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 9
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b' '
}

#[test]
fn logs_follow_shows_the_last_lines_on_connect_and_ends_when_the_daemon_shuts_down() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "t", "spec": "s", "verify": "true"}]))
        .agent(
            "for i in $(seq 1 30); do echo \"history $i\"; done\n\
             while [ ! -f \"$ROOT/go\" ]; do sleep 0.05; done\n\
             echo 'after connect'\n\
             while true; do sleep 0.05; done",
        )
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    wait_for_text(&fleet.transcript("T1", 1), "history 30\n");

    let out_file = fleet.root().join("follow.out");
    let err_file = fleet.root().join("follow.err");
    let mut follower = fleet
        .loopd(&["-c", "loopd.toml", "logs", "-f", LOOP, "-n", "5"])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    wait_for_text(&out_file, "history 30");
    std::fs::write(fleet.root().join("go"), "").unwrap();
    wait_for_text(&out_file, "after connect");
    let text = std::fs::read_to_string(&out_file).unwrap();
    for n in 26..=30 {
        assert!(text.contains(&format!("T1#1 │ history {n}\n")), "{text}");
    }
    assert!(
        !text.contains("history 25\n"),
        "only the last 5 lines\n{text}"
    );
    assert!(text.lines().all(timed), "every line after a time\n{text}");

    // SIGTERM: the daemon stops, and the follower with it, saying so.
    assert_eq!(daemon.terminate(), 0);
    let mut status = None;
    wait_until("the follower to end", WAIT, || {
        status = follower.try_wait().unwrap();
        status.is_some()
    });
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    assert!(err.contains("the daemon shut down"), "{err}");
}
