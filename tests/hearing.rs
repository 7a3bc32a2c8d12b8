//! Hearing the agent right, against the built binary with scripted agents: output without a
//! newline is a sign of life, a monitor kill stays on the record when verify then passes, and
//! transcripts are capped (head and tail kept) and keep the agent's bytes as they were.

mod common;
mod serving;

use common::{wait_until, Fleet, LOOP, WAIT};
use serde_json::{json, Value};
use serving::{http, Daemon};

/// A test whose verify passes once `done.txt` says `ok`.
fn done_test(id: &str) -> Value {
    json!({
        "id": id,
        "title": format!("{id} writes done.txt"),
        "spec": "Write `ok` into done.txt.",
        "verify": "grep -qx ok done.txt",
    })
}

fn only_attempt(fleet: &Fleet, test: &str) -> Value {
    let attempts = fleet.attempts(test);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    attempts[0].clone()
}

#[test]
fn a_progress_bar_without_newlines_is_not_a_stall() {
    // Twice stall_timeout of `\r` progress and not one newline, then the work is done.
    let fleet = Fleet::new()
        .set("stall_timeout", "\"2s\"")
        .tests(json!([done_test("T1")]))
        .agent(
            "for i in $(seq 1 40); do printf '\\rworking %3d%%' $((i * 100 / 40)); sleep 0.1; done\n\
             echo ok > done.txt",
        )
        .write();
    fleet.run().expect_code(0);
    let a = only_attempt(&fleet, "T1");
    assert_eq!(a["outcome"], "passed", "{a:#}");
    assert!(a.get("killed").is_none(), "{a:#}");
    let transcript = std::fs::read(fleet.transcript("T1", 1)).unwrap();
    assert!(transcript.starts_with(b"\rworking   2%\rworking   5%"));
    assert!(transcript.ends_with(b"\rworking 100%"), "nothing was added");
}

/// T1 finishes its work, then hangs in silence (stalled); T2 finishes its work, then keeps
/// talking past its time limit (timed out). Both verify passes.
const HANG_AFTER_WORK: &str = r#"echo ok > done.txt
echo "work done"
if [ "$LOOPD_TEST_ID" = T1 ]; then sleep 300; fi
while true; do echo still here; sleep 0.2; done
"#;

#[test]
fn a_pass_after_a_monitor_kill_says_so_in_status_logs_events_and_metrics() {
    let mut timed = done_test("T2");
    timed["timeout"] = json!("2s");
    let fleet = Fleet::new()
        .set("stall_timeout", "\"2s\"")
        .set("iteration_timeout", "\"60s\"")
        .tests(json!([done_test("T1"), timed]))
        .agent(HANG_AFTER_WORK)
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("the loop to finish", WAIT, || {
        fleet.loop_status()["status"] == "finished"
    });

    // status --json: passed, and killed on the attempt.
    for (test, why) in [("T1", "stalled"), ("T2", "timed_out")] {
        let t = fleet.test_status(test);
        assert_eq!(t["status"], "passed", "{t:#}");
        let a = &t["attempts"][0];
        assert_eq!(a["outcome"], "passed", "{a:#}");
        assert_eq!(a["killed"], why, "{a:#}");
        assert!(
            a["reason"].as_str().unwrap_or("").contains("killed"),
            "{a:#}"
        );
    }
    let status = fleet.cmd(&["status", "loopd.toml"]);
    assert_eq!(status.code(), 0, "{status}");
    assert!(
        status.stdout.contains("(2 killed by the monitor)"),
        "{status}"
    );
    assert!(
        status.stdout.contains("[last agent killed: stalled]"),
        "{status}"
    );
    assert!(
        status.stdout.contains("[last agent killed: timed_out]"),
        "{status}"
    );

    // logs: the attempt's transcript, then how it ended.
    let logs = fleet.cmd(&["-c", "loopd.toml", "logs", LOOP, "--attempt", "T1:1"]);
    assert_eq!(logs.code(), 0, "{logs}");
    assert!(logs.stdout.contains("work done"), "{logs}");
    assert!(
        logs.stdout
            .contains("── T1:1: passed; the monitor killed the agent (stalled)"),
        "{logs}"
    );

    // The health report counts them as trouble.
    let health: Value = http()
        .get(daemon.url("/api/loops/main/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["recent_trouble"], 2, "{health:#}");

    // /metrics counts the kills.
    let metrics = http()
        .get(daemon.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "loopd_attempts_killed_total{loop=\"main\",reason=\"stalled\"} 1",
        "loopd_attempts_killed_total{loop=\"main\",reason=\"timed_out\"} 1",
        "loopd_attempts_total{loop=\"main\",outcome=\"passed\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }

    // The attempt_finished events carry it.
    let resp = http()
        .get(daemon.url("/api/events?loop=main&after=0"))
        .send()
        .unwrap();
    let mut finished = Vec::new();
    use std::io::BufRead;
    for line in std::io::BufReader::new(resp).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let e: Value = serde_json::from_str(data).unwrap();
        if e["kind"] == "attempt_finished" {
            finished.push(e);
            if finished.len() == 2 {
                break;
            }
        }
    }
    for (e, why) in finished.iter().zip(["stalled", "timed_out"]) {
        assert_eq!(e["data"]["outcome"], "passed", "{e:#}");
        assert_eq!(e["data"]["killed"], why, "{e:#}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("passed (the agent was killed: {why})")),
            "{message}"
        );
    }
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn a_flood_of_output_is_cut_to_the_cap_keeping_head_and_tail() {
    const CAP: usize = 1024 * 1024;
    let fleet = Fleet::new()
        .set("max_transcript_bytes", &CAP.to_string())
        .tests(json!([done_test("T1")]))
        .agent("echo HEAD-START\nseq 1 1500000\necho TAIL-END\necho ok > done.txt")
        .write();
    fleet.run().expect_code(0);
    let mut printed = String::from("HEAD-START\n");
    for i in 1..=1_500_000 {
        printed.push_str(&format!("{i}\n"));
    }
    printed.push_str("TAIL-END\n");
    let printed = printed.into_bytes();
    assert!(printed.len() > 10_000_000);

    let got = std::fs::read(fleet.transcript("T1", 1)).unwrap();
    let marker = format!("[loopd: {} bytes cut]\n", printed.len() - CAP);
    assert!(
        got.len() <= CAP + marker.len() + 1,
        "{} bytes kept",
        got.len()
    );
    assert_eq!(&got[..CAP / 2], &printed[..CAP / 2], "the head");
    assert_eq!(
        &got[got.len() - CAP / 2..],
        &printed[printed.len() - CAP / 2..],
        "the tail"
    );
    let middle = String::from_utf8_lossy(&got[CAP / 2..got.len() - CAP / 2]).into_owned();
    assert_eq!(middle.trim_start_matches('\n'), marker);
    let a = only_attempt(&fleet, "T1");
    assert_eq!(a["outcome"], "passed", "{a:#}");
}

#[test]
fn binary_output_is_kept_byte_for_byte() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1")]))
        .agent("head -c 1048576 /dev/urandom | tee \"$ROOT/printed.bin\"\necho ok > done.txt")
        .write();
    fleet.run().expect_code(0);
    let printed = std::fs::read(fleet.root().join("printed.bin")).unwrap();
    assert_eq!(printed.len(), 1024 * 1024);
    let got = std::fs::read(fleet.transcript("T1", 1)).unwrap();
    assert!(
        got == printed,
        "the transcript holds {} bytes, not the agent's",
        got.len()
    );
}

#[test]
fn a_stream_json_line_written_slowly_in_pieces_is_parsed_once_whole() {
    // Claude Code's final `result` event, written in six pieces over longer than stall_timeout.
    let parts = [
        r#"{"type":"result","subtype":"success","#,
        r#""is_error":false,"num_turns":1,"#,
        r#""result":"wrote done.txt","#,
        r#""total_cost_usd":0.25,"#,
        r#""usage":{"input_tokens":100,"#,
        r#""output_tokens":50}}"#,
    ];
    let mut script = String::from("echo ok > done.txt\n");
    for p in parts {
        script.push_str(&format!("printf '%s' '{p}'\nsleep 0.5\n"));
    }
    script.push_str("echo\n");
    let fleet = Fleet::new()
        .set("stall_timeout", "\"2s\"")
        .tests(json!([done_test("T1")]))
        .agent(&script)
        .write();
    // The same loop, driving the script as the claude-code preset.
    let config = std::fs::read_to_string(fleet.config_file()).unwrap();
    let (head, _) = config.split_once("[loops.agent]").unwrap();
    std::fs::write(
        fleet.config_file(),
        format!("{head}[loops.agent]\nkind = \"claude-code\"\nbinary = \"./agent.sh\"\n"),
    )
    .unwrap();
    fleet.run().expect_code(0);
    let a = only_attempt(&fleet, "T1");
    assert_eq!(a["outcome"], "passed", "{a:#}");
    assert!(a.get("killed").is_none(), "{a:#}");
    assert_eq!(a["cost_usd"], 0.25, "{a:#}");
    assert_eq!(a["input_tokens"], 100, "{a:#}");
    assert_eq!(a["output_tokens"], 50, "{a:#}");
}
