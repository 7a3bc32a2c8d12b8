//! The attempt engine under faults: timeouts, stalls, `kill -9` and signals to `loopd run`, and
//! bad input (corrupt tests file, missing agent, crashing and flooding agents, hanging verify,
//! dirty workdir, a store from a newer loopd), against the built binary with scripted agents.

mod common;

use std::time::{Duration, Instant};

use common::{alive, group_members, read_pids, wait_for_text, Fleet, LOOP, WAIT};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn outcome(a: &Value) -> &str {
    a["outcome"].as_str().unwrap_or("<none>")
}

/// A test whose verify passes once `done.txt` says `ok`.
fn done_test(id: &str) -> Value {
    json!({
        "id": id,
        "title": format!("{id} writes done.txt"),
        "spec": "Write `ok` into done.txt.",
        "verify": "grep -qx ok done.txt",
    })
}

/// An agent that records its own pid and two children's in `$ROOT/pids.$LOOPD_ATTEMPT`, says
/// `AGENT-READY`, then waits on the children for ever. Once its line is in the transcript the
/// group is findable after a crash: by its record in the store (written while the first output
/// is read, a few milliseconds after the spawn) or by `LOOPD_ATTEMPT_KEY` in its environment.
const HANGING_AGENT: &str = r#"echo $$ > "$ROOT/pids.$LOOPD_ATTEMPT"
sleep 300 &
echo $! >> "$ROOT/pids.$LOOPD_ATTEMPT"
sleep 300 &
echo $! >> "$ROOT/pids.$LOOPD_ATTEMPT"
echo scribble > scribble.txt
echo AGENT-READY
wait
"#;

/// Waits until attempt `n` of `test` runs the hanging agent and returns its recorded pids.
fn wait_for_hanging_agent(fleet: &Fleet, test: &str, n: u32) -> Vec<i32> {
    wait_for_text(&fleet.transcript(test, n), "AGENT-READY");
    let pids = read_pids(&fleet.root().join(format!("pids.{n}")));
    assert_eq!(pids.len(), 3, "{pids:?}");
    pids
}

/// Asserts that none of `pids` and no member of the group led by `pids[0]` lives on.
fn assert_group_gone(pids: &[i32], when: &str) {
    let survivors = alive(pids);
    assert!(
        survivors.is_empty(),
        "{when}: agent processes survive: {survivors:?}"
    );
    let members = group_members(pids[0]);
    assert!(
        members.is_empty(),
        "{when}: the agent's group has members: {members:?}"
    );
}

#[test]
fn iteration_timeout_kills_the_agent_and_every_child_of_its_group() {
    let fleet = Fleet::new()
        .set("iteration_timeout", "\"2s\"")
        .set("stall_timeout", "\"60s\"")
        .tests(json!([done_test("T1")]))
        .agent(HANGING_AGENT)
        .write();
    let started = Instant::now();
    fleet.run().expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let pids = read_pids(&fleet.root().join("pids.1"));
    assert_group_gone(&pids, "after the timeout");
    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(outcome(a), "timed_out", "{a:#}");
    assert_eq!(a["counted"], true);
    assert!(
        a.get("process").is_none(),
        "a finished attempt names live processes: {a:#}"
    );
    // The attempt's leftovers were saved and the workdir reset.
    assert!(!fleet.workdir().join("scribble.txt").exists());
    assert_eq!(
        fleet.git(&["show", "refs/loopd/attempts/T1/1:scribble.txt"]),
        "scribble\n"
    );
}

#[test]
fn a_tests_own_timeout_overrides_iteration_timeout() {
    let fleet = Fleet::new()
        .set("iteration_timeout", "\"10m\"")
        .set("stall_timeout", "\"10m\"")
        .tests(json!([{
            "id": "T1", "title": "t", "spec": "s", "verify": "test -f never", "timeout": "2s"
        }]))
        .agent(HANGING_AGENT)
        .write();
    let started = Instant::now();
    fleet.run().expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let a = &fleet.attempts("T1")[0];
    assert_eq!(outcome(a), "timed_out", "{a:#}");
    let pids = read_pids(&fleet.root().join("pids.1"));
    assert_group_gone(&pids, "after the test's timeout");
}

#[test]
fn a_silent_agent_is_stalled_and_its_group_ended() {
    let fleet = Fleet::new()
        .set("iteration_timeout", "\"60s\"")
        .set("stall_timeout", "\"2s\"")
        .tests(json!([done_test("T1")]))
        .agent(r#"echo $$ > "$ROOT/pids.$LOOPD_ATTEMPT"; echo "thinking ..."; sleep 300"#)
        .write();
    let started = Instant::now();
    fleet.run().expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let a = &fleet.attempts("T1")[0];
    assert_eq!(outcome(a), "stalled", "{a:#}");
    assert_eq!(a["counted"], true);
    let reason = a["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("2s"),
        "the reason does not give stall_timeout: {reason}"
    );
    let transcript = std::fs::read_to_string(fleet.transcript("T1", 1)).unwrap();
    assert!(transcript.contains("thinking ..."), "{transcript}");
    let pids = read_pids(&fleet.root().join("pids.1"));
    assert_group_gone(&pids, "after the stall");
}

#[test]
fn kill_9_mid_attempt_then_rerun_reaps_the_orphans_and_does_not_count_the_attempt() {
    let fleet = Fleet::new()
        .set("max_attempts", "1")
        .tests(json!([done_test("T1")]))
        .agent(HANGING_AGENT)
        .write();
    let running = fleet.spawn_run();
    let pids = wait_for_hanging_agent(&fleet, "T1", 1);
    running.signal(Signal::SIGKILL);
    let run = running.wait(WAIT);
    assert_eq!(run.status.code(), None, "{run}");
    // The agent's group outlives a parent killed with no chance to clean up.
    assert_eq!(
        alive(&pids),
        pids,
        "the scenario needs the agent alive after kill -9"
    );
    assert_eq!(
        group_members(pids[0]).len(),
        3,
        "the agent's group after kill -9"
    );

    // The agent would now succeed; max_attempts = 1 shows the first attempt did not count.
    fleet.write_agent("echo ok > done.txt");
    fleet.run().expect_code(0);
    assert_group_gone(&pids, "after the rerun");

    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(outcome(&attempts[0]), "interrupted", "{:#}", attempts[0]);
    assert_eq!(attempts[0]["counted"], false);
    assert!(attempts[0].get("process").is_none(), "{:#}", attempts[0]);
    assert_eq!(outcome(&attempts[1]), "passed");
    let test = fleet.test_status("T1");
    assert_eq!(test["status"], "passed");
    assert_eq!(test["counted_attempts"], 0);
    // What the interrupted attempt left was saved, not committed.
    assert!(!fleet.git_ok(&["cat-file", "-e", "HEAD:scribble.txt"]));
    assert_eq!(
        fleet.git(&["show", "refs/loopd/attempts/T1/1:scribble.txt"]),
        "scribble\n"
    );
}

/// SIGTERM or SIGINT during an attempt: exit 130, the attempt `interrupted`, the group gone,
/// and a rerun resumes without re-running what passed.
fn signal_mid_attempt_then_resume(signal: Signal) {
    let fleet = Fleet::new()
        .set("max_attempts", "1")
        .tests(json!([
            done_test("FIRST"),
            {"id": "SECOND", "title": "t", "spec": "s", "verify": "grep -qx ok second.txt",
             "depends_on": ["FIRST"]},
        ]))
        .agent(&format!(
            r#"echo "$LOOPD_TEST_ID" >> "$ROOT/attempted"
case "$LOOPD_TEST_ID" in
  FIRST) echo ok > done.txt ;;
  SECOND) {HANGING_AGENT} ;;
esac"#
        ))
        .write();
    let running = fleet.spawn_run();
    let pids = wait_for_hanging_agent(&fleet, "SECOND", 1);
    running.signal(signal);
    let run = running.wait(WAIT);
    assert_eq!(run.status.code(), Some(130), "{run}");
    // loopd waits for the group to end before it exits.
    assert_group_gone(&pids, "when loopd exited");

    let a = &fleet.attempts("SECOND")[0];
    assert_eq!(outcome(a), "interrupted", "{a:#}");
    assert_eq!(a["counted"], false);
    assert_eq!(fleet.test_status("FIRST")["status"], "passed");
    // What the interrupted attempt left is saved under its ref, and the workdir is clean.
    assert_eq!(
        fleet.git(&["show", "refs/loopd/attempts/SECOND/1:scribble.txt"]),
        "scribble\n"
    );
    assert_eq!(fleet.git(&["status", "--porcelain"]), "");

    fleet.write_agent(
        r#"echo "$LOOPD_TEST_ID" >> "$ROOT/attempted"
echo ok > second.txt"#,
    );
    fleet.run().expect_code(0);
    let attempted = std::fs::read_to_string(fleet.root().join("attempted")).unwrap();
    assert_eq!(
        attempted.lines().collect::<Vec<_>>(),
        ["FIRST", "SECOND", "SECOND"],
        "a passed test was re-run, or the interrupted one was not resumed"
    );
    assert_eq!(fleet.attempts("FIRST").len(), 1);
    let second = fleet.test_status("SECOND");
    assert_eq!(second["status"], "passed", "{second:#}");
    assert_eq!(second["counted_attempts"], 0);
    assert_eq!(second["attempts"].as_array().unwrap().len(), 2);
}

#[test]
fn sigterm_mid_attempt_exits_130_and_a_rerun_resumes() {
    signal_mid_attempt_then_resume(Signal::SIGTERM);
}

#[test]
fn ctrl_c_mid_attempt_exits_130_and_a_rerun_resumes() {
    signal_mid_attempt_then_resume(Signal::SIGINT);
}

/// A client command while `loopd run` holds the state directory either refuses, naming the
/// run's pid (issue 3), or answers through the run's API (the control plane), never from a
/// store another process is writing. Returns the JSON answer, if any.
fn live_answer_or_refusal(run: &common::Run, pid: i32) -> Option<Value> {
    if run.status.code() == Some(0) {
        return Some(run.json());
    }
    assert!(
        run.stderr.contains(&format!("pid {pid}")),
        "neither an answer nor a refusal naming the run's pid {pid}\n{run}"
    );
    None
}

#[test]
fn status_while_a_run_holds_the_state_dir_names_its_pid_or_asks_it() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1")]))
        .agent(HANGING_AGENT)
        .write();
    let running = fleet.spawn_run();
    wait_for_hanging_agent(&fleet, "T1", 1);
    let pid = running.pid();
    let daemon: Value =
        serde_json::from_slice(&std::fs::read(fleet.state_dir().join("daemon.json")).unwrap())
            .unwrap();
    assert_eq!(daemon["pid"], pid, "{daemon:#}");

    let status = fleet.cmd(&["status", "loopd.toml", "--json"]);
    if let Some(doc) = live_answer_or_refusal(&status, pid) {
        // Live, from the run: the attempt in progress shows.
        let lp = &doc["loops"][0];
        assert_eq!(lp["status"], "running", "{doc:#}");
        assert_eq!(lp["current_test"], "T1", "{doc:#}");
        assert_eq!(lp["current_attempt"], 1, "{doc:#}");
    }
    let attempts = fleet.cmd(&["-c", "loopd.toml", "attempts", LOOP, "--json"]);
    if let Some(doc) = live_answer_or_refusal(&attempts, pid) {
        assert_eq!(doc["attempts"][0]["test_id"], "T1", "{doc:#}");
        assert!(doc["attempts"][0].get("outcome").is_none(), "{doc:#}");
    }
    let export = fleet.cmd(&["export", "loopd.toml"]);
    if let Some(doc) = live_answer_or_refusal(&export, pid) {
        assert_eq!(doc["loops"][0]["tests"][0]["id"], "T1", "{doc:#}");
    }
    running.signal(Signal::SIGTERM);
    running.wait(WAIT).expect_code(130);
    assert!(!fleet.state_dir().join("daemon.json").exists());
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn a_corrupt_tests_file_is_refused_naming_file_and_line_and_the_store_is_untouched() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1")]))
        .agent("echo ok > done.txt")
        .write();
    fleet.run().expect_code(0);
    let status_before = fleet.status();
    let store_before = common::snapshot_dir(&fleet.state_dir().join("store"));

    let corrupt = "{\"tests\": [\n  {\"id\": \"T1\", \"title\": \"t\", \"spec\": \"s\", \"verify\": \"true\"},\n  {\"id\": \"T2\", \"title\": oops}\n]}\n";
    std::fs::write(fleet.tests_file(), corrupt).unwrap();
    let run = fleet.run();
    run.expect_code(2);
    assert!(run.stderr.contains("tests.json"), "{run}");
    assert!(run.stderr.contains("line 3"), "no line number\n{run}");

    assert_eq!(
        std::fs::read_to_string(fleet.tests_file()).unwrap(),
        corrupt
    );
    assert_eq!(
        common::snapshot_dir(&fleet.state_dir().join("store")),
        store_before,
        "the refused run changed the store"
    );
    assert_eq!(fleet.status(), status_before);
}

#[test]
fn an_agent_binary_that_is_not_on_path_is_refused_before_anything_runs() {
    // It would only pause the loop (`agent_unavailable`, tests/why.rs) once running.
    let fleet = Fleet::new().tests(json!([done_test("T1")])).write();
    std::fs::write(
        fleet.config_file(),
        std::fs::read_to_string(fleet.config_file())
            .unwrap()
            .replace("\"./agent.sh\"", "\"loopd-e2e-no-such-agent\""),
    )
    .unwrap();
    let run = fleet.run();
    run.expect_code(2);
    assert!(
        run.stdout
            .contains("the agent program `loopd-e2e-no-such-agent` is not on PATH")
            || run
                .stderr
                .contains("the agent program `loopd-e2e-no-such-agent` is not on PATH"),
        "{run}"
    );
    assert!(
        !fleet.state_dir().join("store").exists(),
        "a store was created"
    );
}

#[test]
fn an_agent_path_that_does_not_exist_is_refused_before_anything_runs() {
    let fleet = Fleet::new().tests(json!([done_test("T1")])).write();
    std::fs::write(
        fleet.config_file(),
        std::fs::read_to_string(fleet.config_file())
            .unwrap()
            .replace("\"./agent.sh\"", "\"./missing-agent.sh\""),
    )
    .unwrap();
    let run = fleet.run();
    run.expect_code(2);
    assert!(run.stderr.contains("missing-agent.sh"), "{run}");
    assert!(
        !fleet.state_dir().join("store").exists(),
        "a store was created"
    );
}

#[test]
fn an_agent_that_exits_at_once_with_status_1_is_an_agent_error() {
    let fleet = Fleet::new()
        .set("max_attempts", "2")
        .tests(json!([done_test("T1")]))
        .agent(r#"echo "fatal: cannot start" >&2; exit 1"#)
        .write();
    fleet.run().expect_code(1);
    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(outcome(a), "agent_error", "{a:#}");
        assert_eq!(a["counted"], true);
        assert_eq!(a["exit_code"], 1);
        let reason = a["reason"].as_str().unwrap_or("");
        assert!(reason.contains("exit status 1"), "{reason}");
    }
    let transcript = std::fs::read_to_string(fleet.transcript("T1", 1)).unwrap();
    assert!(
        transcript.contains("fatal: cannot start"),
        "stderr is not in the transcript"
    );
    assert_eq!(fleet.test_status("T1")["status"], "failed");
}

#[test]
fn an_agent_printing_megabytes_without_newlines_does_not_sink_loopd() {
    // One 64 MiB line: a loopd that held it whole would need that much on top of the ~60 MiB
    // a debug build uses anyway; a reader with a line cap stays near its baseline.
    const MB: u64 = 64;
    let fleet = Fleet::new()
        .set("stall_timeout", "\"30s\"")
        .tests(json!([done_test("T1")]))
        .agent(&format!(
            "head -c {} /dev/zero | tr '\\0' x\necho\necho AFTER-THE-FLOOD\necho ok > done.txt",
            MB * 1024 * 1024
        ))
        .write();
    let run = fleet.run();
    run.expect_code(0);
    eprintln!("loopd's peak RSS: {} KiB", run.peak_rss_kib);
    assert!(
        run.peak_rss_kib < 110 * 1024,
        "loopd's peak RSS was {} MiB for {MB} MiB of output",
        run.peak_rss_kib / 1024
    );
    let a = &fleet.attempts("T1")[0];
    assert_eq!(outcome(a), "passed", "{a:#}");
    let transcript = fleet.transcript("T1", 1);
    let size = std::fs::metadata(&transcript).unwrap().len();
    assert!(size > 0, "empty transcript");
    let text = std::fs::read(&transcript).unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("AFTER-THE-FLOOD"),
        "the line after the flood is missing from the transcript"
    );
    // The record keeps a bounded tail, not the flood.
    let record = serde_json::to_string(a).unwrap();
    assert!(
        record.len() < 256 * 1024,
        "attempt record is {} bytes",
        record.len()
    );
}

/// Runs `fleet` with one test whose verify is `verify` and an agent that does its work, expects
/// the test to fail within 30 s (`max_attempts = 1`), and returns its only attempt.
fn one_failed_attempt(fleet: Fleet, verify: &str) -> (Fleet, Value) {
    let fleet = fleet
        .tests(json!([{ "id": "T1", "title": "t", "spec": "s", "verify": verify }]))
        .agent("echo ok > done.txt")
        .write();
    let started = Instant::now();
    fleet.run().expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let a = fleet.attempts("T1")[0].clone();
    assert_eq!(outcome(&a), "failed", "{a:#}");
    assert_eq!(a["counted"], true);
    (fleet, a)
}

#[test]
fn a_hanging_verify_fails_the_attempt_with_verify_timeout_and_is_killed() {
    let (fleet, a) = one_failed_attempt(
        Fleet::new().set("verify_timeout", "\"2s\""),
        "echo $$ > ../verify.pid; sleep 300",
    );
    let reason = a["reason"].as_str().unwrap_or("");
    assert!(reason.contains("verify_timeout"), "{reason}");
    let pid = read_pids(&fleet.root().join("verify.pid"));
    assert_group_gone(&pid, "after verify overran");
}

#[test]
fn a_verify_whose_background_child_holds_its_pipes_ends_with_its_exit() {
    // The child inherits verify's stdout and stderr, so the pipes stay open after verify exits:
    // what verify printed is kept, the attempt does not wait for the child, and the child (in
    // verify's process group) is ended.
    let (fleet, a) = one_failed_attempt(
        Fleet::new(),
        "echo on-stdout; echo on-stderr >&2; sleep 300 & echo $! > ../bg.pid; exit 3",
    );
    assert_eq!(a["verify_exit"], 3, "{a:#}");
    let tail = a["verify_tail"].as_str().unwrap_or("");
    assert!(
        tail.contains("on-stdout") && tail.contains("on-stderr"),
        "{tail}"
    );
    let pid = read_pids(&fleet.root().join("bg.pid"));
    assert_group_gone(&pid, "after verify exited");
}

#[test]
fn a_dirty_workdir_is_refused_unless_allow_dirty() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1")]))
        .agent(r#"echo ran >> "$ROOT/agent-ran"; echo ok > done.txt"#)
        .write();
    std::fs::write(fleet.workdir().join("stray.txt"), "not committed\n").unwrap();
    let run = fleet.run();
    run.expect_code(2);
    assert!(run.stderr.contains("uncommitted changes"), "{run}");
    assert!(
        !fleet.root().join("agent-ran").exists(),
        "the agent ran in a dirty workdir"
    );
    assert!(
        fleet.workdir().join("stray.txt").exists(),
        "the user's uncommitted file was removed"
    );

    let fleet = fleet.set("allow_dirty", "true");
    fleet.write_config();
    fleet.run().expect_code(0);
    assert!(fleet.root().join("agent-ran").exists());
    assert_eq!(fleet.test_status("T1")["status"], "passed");
}

/// A sled tree's name and its key-value pairs, in key order.
type TreeDump = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Every tree of the sled store at `dir`, key by key.
fn dump_store(dir: &std::path::Path) -> Vec<TreeDump> {
    let db = sled::open(dir).expect("open the store with sled");
    let mut names = db.tree_names();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let tree = db.open_tree(&name).unwrap();
            let kvs = tree
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (name.to_vec(), kvs)
        })
        .collect()
}

#[test]
fn a_store_written_by_a_newer_loopd_is_refused_and_left_unchanged() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1"), {"id": "T2", "title": "t", "spec": "s", "verify": "true"}]))
        .agent(r#"echo ok > done.txt; echo "$LOOPD_TEST_ID" >> "$ROOT/attempted""#)
        .write();
    fleet.run().expect_code(0);
    let store = fleet.state_dir().join("store");
    let newer = loopd_actors::store::SCHEMA_VERSION + 1;
    {
        let db = sled::open(&store).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", &newer.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let before = dump_store(&store);
    // A new test would be recorded, were the store opened for writing.
    let fleet = fleet.tests(json!([done_test("T1"), done_test("T3")]));
    fleet.write_tests();

    let run = fleet.run();
    run.expect_code(2);
    assert!(run.stderr.contains("newer"), "{run}");
    let status = fleet.cmd(&["status", "loopd.toml", "--json"]);
    assert_ne!(status.code(), 0, "{status}");
    assert!(status.stderr.contains("newer"), "{status}");

    assert_eq!(
        dump_store(&store),
        before,
        "the refused run changed the store"
    );
    let attempted = std::fs::read_to_string(fleet.root().join("attempted")).unwrap();
    assert_eq!(
        attempted.lines().count(),
        2,
        "an agent ran against a newer store"
    );
}

#[test]
fn an_agent_whose_group_cannot_be_recorded_is_ended_at_once_and_not_counted() {
    // Attempt 1 leaves a child behind and would wait on it for five minutes; recording its
    // process group fails (injected). An agent the store does not know could not be reaped
    // after a crash, so loopd ends its group at once, records the attempt as interrupted (not
    // counted), and goes on: attempt 2 passes.
    let fleet = Fleet::new()
        .set("max_attempts", "1")
        .tests(json!([done_test("T1")]))
        .agent(
            r#"if [ "$LOOPD_ATTEMPT" = 1 ]; then
  sleep 293 &
  # Renamed into place: the group may be ended between creating the file and writing it.
  echo $! > "$ROOT/child.tmp" && mv "$ROOT/child.tmp" "$ROOT/child"
  wait
fi
echo ok > done.txt"#,
        )
        .write();
    let started = Instant::now();
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env(
        "LOOPD_TEST_FAULT",
        format!("fail:attempt_group_record:{LOOP}:1"),
    );
    let run = common::Running::spawn(cmd).wait(common::RUN_TIMEOUT);
    run.expect_code(0);
    assert!(started.elapsed() < Duration::from_secs(60), "{run}");

    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(outcome(&attempts[0]), "interrupted", "{:#}", attempts[0]);
    assert_eq!(attempts[0]["counted"], false);
    let reason = attempts[0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("could not record the agent's process group"),
        "{reason}"
    );
    assert_eq!(outcome(&attempts[1]), "passed", "{:#}", attempts[1]);
    // The group may be ended before the agent got to start its child; if it did, the child
    // is gone too (`sleep 293` is this test's own).
    if let Ok(pid) = std::fs::read_to_string(fleet.root().join("child")) {
        let pid: i32 = pid.trim().parse().unwrap();
        assert!(alive(&[pid]).is_empty(), "the agent's child lives on");
    }
    let leftovers: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c.as_slice() == b"sleep\x00293\x00")
        .collect();
    assert!(leftovers.is_empty(), "the agent's child lives on");
}
