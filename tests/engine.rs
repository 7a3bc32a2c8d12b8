//! The attempt engine end to end: the built `loopd run` against scripted bash agents.
//!
//! Each test writes its own fleet (one loop `main`, a tests file, an agent script) into a
//! temporary folder, runs the binary, and checks what loopd recorded (`status --json`,
//! `attempts --json`), the git workdir, transcripts and prompt files, and /proc.
//! Signals, crashes and timeouts are in `engine_faults.rs`.

mod common;

use common::{Fleet, LOOP};
use serde_json::{json, Value};

/// A test whose verify passes once `done.txt` says `ok`.
fn done_test(id: &str) -> Value {
    json!({
        "id": id,
        "title": format!("{id} writes done.txt"),
        "spec": "Write `ok` into done.txt.",
        "verify": "grep -qx ok done.txt",
    })
}

fn outcome(a: &Value) -> &str {
    a["outcome"].as_str().unwrap_or("<none>")
}

#[test]
fn pass_first_time_commits_with_trailers_and_records_the_cost() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1")]))
        .agent(
            r#"echo "working on $LOOPD_TEST_ID, attempt $LOOPD_ATTEMPT"
test -s "$LOOPD_PROMPT_FILE" || { echo "no prompt"; exit 9; }
echo ok > done.txt
printf '{"cost_usd": 0.4242, "input_tokens": 1234, "output_tokens": 56, "summary": "wrote done.txt"}' > "$LOOPD_RESULT_FILE"
"#,
        )
        .write();
    let before = fleet.git(&["rev-parse", "HEAD"]);
    fleet.run().expect_code(0);

    let test = fleet.test_status("T1");
    assert_eq!(test["status"], "passed", "{test:#}");
    let attempts = test["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{test:#}");
    let a = &attempts[0];
    assert_eq!(outcome(a), "passed");
    assert_eq!(a["counted"], false);
    assert_eq!(a["exit_code"], 0);
    assert_eq!(a["verify_exit"], 0);
    assert_eq!(a["cost_usd"], 0.4242);
    assert_eq!(a["input_tokens"], 1234);
    assert_eq!(a["output_tokens"], 56);
    assert_eq!(a["summary"], "wrote done.txt");
    assert_eq!(fleet.loop_status()["status"], "finished");

    // The transcript holds what the agent printed.
    let transcript = std::fs::read_to_string(fleet.transcript("T1", 1)).unwrap();
    assert!(
        transcript.contains("working on T1, attempt 1"),
        "{transcript}"
    );
    assert_eq!(
        a["transcript"],
        fleet.transcript("T1", 1).display().to_string()
    );

    // One new commit on top of the initial one, holding the agent's work and the trailers.
    let head = fleet.git(&["rev-parse", "HEAD"]).trim().to_string();
    assert_ne!(head, before.trim());
    assert_eq!(fleet.git(&["rev-parse", "HEAD~1"]).trim(), before.trim());
    assert_eq!(a["commit"], head.as_str());
    assert_eq!(test["commit"], head.as_str());
    assert_eq!(fleet.git(&["show", "HEAD:done.txt"]), "ok\n");
    let trailers = fleet.git(&["log", "-1", "--format=%(trailers:only,unfold)"]);
    let trailers: Vec<&str> = trailers.lines().filter(|l| !l.is_empty()).collect();
    assert!(trailers.contains(&"Loopd-Test: T1"), "{trailers:?}");
    assert!(trailers.contains(&"Loopd-Attempt: 1"), "{trailers:?}");
    assert!(
        trailers.iter().any(|t| t.starts_with("Loopd-Cost: 0.424")),
        "{trailers:?}"
    );
    // Nothing left uncommitted.
    assert_eq!(fleet.git(&["status", "--porcelain"]), "");
}

#[test]
fn fail_then_pass_carries_verify_output_into_the_next_prompt_and_keeps_the_failed_diff() {
    // Verify computes the marker, so the verify command quoted in every prompt does not hold it.
    let marker = "VERIFY-SAYS-10191";
    let fleet = Fleet::new()
        .set("max_attempts", "3")
        .tests(json!([{
            "id": "T1",
            "title": "answer.txt holds 42",
            "spec": "Write 42 into answer.txt.",
            "verify": format!(
                "grep -qx 42 answer.txt || {{ echo \"VERIFY-SAYS-$((7000 + 3191)): answer.txt holds $(cat answer.txt 2>/dev/null)\"; exit 1; }}"
            ),
        }]))
        .agent(
            r#"# What the agent found in the workdir when it started.
ls -A | grep -v '^\.git$' | tr '\n' ' ' > "$ROOT/seen.$LOOPD_ATTEMPT"
if [ "$LOOPD_ATTEMPT" = 1 ]; then
  echo 41 > answer.txt
  echo scratch > scratch-from-attempt-1.txt
else
  echo 42 > answer.txt
fi
"#,
        )
        .write();
    fleet.run().expect_code(0);

    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(outcome(&attempts[0]), "failed");
    assert_eq!(attempts[0]["counted"], true);
    assert_eq!(attempts[0]["verify_exit"], 1);
    let tail = attempts[0]["verify_tail"].as_str().unwrap_or("");
    assert!(
        tail.contains(&format!("{marker}: answer.txt holds 41")),
        "{tail}"
    );
    assert_eq!(outcome(&attempts[1]), "passed");
    assert_eq!(fleet.test_status("T1")["counted_attempts"], 1);

    // The second prompt carries the first attempt's verify output; the first could not.
    let first = std::fs::read_to_string(fleet.prompt("T1", 1)).unwrap();
    let second = std::fs::read_to_string(fleet.prompt("T1", 2)).unwrap();
    assert!(first.contains("VERIFY-SAYS-$((7000 + 3191))"), "{first}");
    assert!(!first.contains(marker), "{first}");
    assert!(
        second.contains(&format!("{marker}: answer.txt holds 41")),
        "the second prompt lacks the first attempt's verify output:\n{second}"
    );

    // The failed attempt's changes, untracked files included, are kept under its ref ...
    let saved = "refs/loopd/attempts/T1/1";
    assert_eq!(
        fleet.git(&["rev-parse", saved]).trim(),
        attempts[0]["commit"].as_str().unwrap_or("<none>")
    );
    assert_eq!(fleet.git(&["show", &format!("{saved}:answer.txt")]), "41\n");
    assert_eq!(
        fleet.git(&["show", &format!("{saved}:scratch-from-attempt-1.txt")]),
        "scratch\n"
    );
    // ... and the workdir was reset before attempt 2: it saw only the checkpoint's files.
    let seen_by_2 = std::fs::read_to_string(fleet.root().join("seen.2")).unwrap();
    assert_eq!(
        seen_by_2.trim(),
        "README",
        "attempt 2 started in {seen_by_2:?}"
    );
    assert!(!fleet.workdir().join("scratch-from-attempt-1.txt").exists());
    assert!(!fleet.git_ok(&["cat-file", "-e", "HEAD:scratch-from-attempt-1.txt"]));
    assert_eq!(fleet.git(&["show", "HEAD:answer.txt"]), "42\n");
}

#[test]
fn an_agent_claiming_success_while_verify_fails_has_failed() {
    let fleet = Fleet::new()
        .tests(json!([{
            "id": "T1",
            "title": "feature.txt holds the feature",
            "spec": "Write `feature` into feature.txt.",
            "verify": "grep -qx feature feature.txt",
        }]))
        .agent(
            r#"echo "not quite" > feature.txt
echo "All tests pass!"
echo '{"type":"result","is_error":false,"result":"All tests pass!"}'
printf '{"cost_usd": 0.01, "summary": "All tests pass!"}' > "$LOOPD_RESULT_FILE"
exit 0
"#,
        )
        .write();
    let run = fleet.run();
    run.expect_code(1);

    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(outcome(a), "failed", "{a:#}");
    assert_eq!(a["counted"], true);
    assert_eq!(a["exit_code"], 0);
    assert_eq!(a["verify_exit"], 1);
    let test = fleet.test_status("T1");
    assert_eq!(test["status"], "failed", "{test:#}");
    assert_eq!(test["counted_attempts"], 1);
    // The claim did not make a checkpoint.
    assert_eq!(fleet.git(&["rev-list", "--count", "HEAD"]).trim(), "1");
    assert!(!fleet.workdir().join("feature.txt").exists());
}

#[test]
fn an_agent_that_changes_nothing_is_no_change_and_is_told_so() {
    let fleet = Fleet::new()
        .set("max_attempts", "2")
        .tests(json!([done_test("T1")]))
        .agent(r#"echo "I looked around and everything seems fine.""#)
        .write();
    fleet.run().expect_code(1);

    let attempts = fleet.attempts("T1");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for a in &attempts {
        assert_eq!(outcome(a), "no_change", "{a:#}");
        assert_eq!(a["counted"], true);
        assert_eq!(a["exit_code"], 0);
    }
    let test = fleet.test_status("T1");
    assert_eq!(test["status"], "failed");
    assert_eq!(test["counted_attempts"], 2);
    let second = std::fs::read_to_string(fleet.prompt("T1", 2)).unwrap();
    assert!(
        second.contains("changed nothing"),
        "the retry's prompt does not say the agent changed nothing:\n{second}"
    );
}

#[test]
fn max_attempts_fails_the_test_and_blocks_its_dependents_without_attempting_them() {
    let fleet = Fleet::new()
        .set("max_attempts", "2")
        .tests(json!([
            {"id": "ROOT", "title": "never passes", "spec": "s", "verify": "test -f impossible"},
            {"id": "CHILD", "title": "needs ROOT", "spec": "s", "verify": "true", "depends_on": ["ROOT"]},
            {"id": "GRANDCHILD", "title": "needs CHILD", "spec": "s", "verify": "true", "depends_on": ["CHILD"]},
            done_test("FREE"),
        ]))
        .agent(
            r#"echo "$LOOPD_TEST_ID" >> "$ROOT/attempted"
case "$LOOPD_TEST_ID" in
  ROOT) echo "try $LOOPD_ATTEMPT" > attempt.txt ;;
  FREE) echo ok > done.txt ;;
  *) echo "a blocked test was attempted" ;;
esac
"#,
        )
        .write();
    let run = fleet.run();
    run.expect_code(1);

    let root = fleet.test_status("ROOT");
    assert_eq!(root["status"], "failed", "{root:#}");
    assert_eq!(root["counted_attempts"], 2);
    assert_eq!(root["attempts"].as_array().unwrap().len(), 2);
    for id in ["CHILD", "GRANDCHILD"] {
        let t = fleet.test_status(id);
        assert_eq!(t["status"], "blocked", "{t:#}");
        assert_eq!(t["attempts"], json!([]), "{id} was attempted: {t:#}");
        assert_eq!(t["counted_attempts"], 0);
        assert!(fleet.attempts(id).is_empty());
    }
    assert!(
        fleet.test_status("CHILD")["blocked_by"]
            .as_array()
            .is_some_and(|b| b.iter().any(|d| d == "ROOT")),
        "{:#}",
        fleet.test_status("CHILD")
    );
    // A test that does not depend on the failure still ran and passed.
    assert_eq!(fleet.test_status("FREE")["status"], "passed");
    let attempted = std::fs::read_to_string(fleet.root().join("attempted")).unwrap();
    let mut attempted: Vec<&str> = attempted.lines().collect();
    attempted.sort();
    assert_eq!(attempted, ["FREE", "ROOT", "ROOT"]);

    let progress = &fleet.loop_status()["progress"];
    assert_eq!(progress["blocked"], 2, "{progress:#}");
    assert_eq!(progress["failed"], 1);
    assert_eq!(progress["passed"], 1);
    // The summary names the failed and the blocked tests.
    let summary = &run.stdout;
    assert!(summary.contains("BLOCKED"), "{run}");
    // The totals so far (after what this run did; on a first run they agree).
    let row = summary
        .lines()
        .skip_while(|l| !l.starts_with("Totals so far"))
        .find(|l| l.starts_with(LOOP))
        .unwrap_or_else(|| panic!("no summary row for {LOOP}\n{run}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // LOOP STATE PASSED FAILED BLOCKED ...
    let passed = format!("1/{}", progress["total"]);
    assert_eq!(&cells[2..5], [passed.as_str(), "1", "2"], "{row}");
    assert!(summary.contains("blocked CHILD"), "{run}");
    assert!(summary.contains("blocked GRANDCHILD"), "{run}");
    assert!(summary.contains("failed ROOT"), "{run}");
}

#[test]
fn export_prints_tests_and_progress_and_never_rewrites_the_tests_file() {
    let fleet = Fleet::new()
        .tests(json!([
            done_test("T1"),
            {"id": "T2", "title": "never passes", "spec": "s", "verify": "false",
             "depends_on": ["T1"], "tags": ["slow"], "priority": 2},
        ]))
        .agent(r#"echo ok > done.txt; echo "$LOOPD_ATTEMPT" > "n-$LOOPD_TEST_ID.txt""#)
        .write();
    let tests_before = std::fs::read(fleet.tests_file()).unwrap();
    let mtime_before = std::fs::metadata(fleet.tests_file())
        .unwrap()
        .modified()
        .unwrap();
    fleet.run().expect_code(1);

    let doc = fleet.cmd(&["export", "loopd.toml"]).json();
    assert!(doc["version"].is_string(), "{doc:#}");
    let lp = doc["loops"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == LOOP))
        .unwrap_or_else(|| panic!("no loop in export: {doc:#}"));
    let tests = lp["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2);
    assert_eq!(tests[0]["id"], "T1");
    assert_eq!(tests[0]["title"], "T1 writes done.txt");
    assert_eq!(tests[0]["spec"], "Write `ok` into done.txt.");
    assert_eq!(tests[0]["verify"], "grep -qx ok done.txt");
    assert_eq!(tests[0]["status"], "passed");
    assert_eq!(tests[1]["id"], "T2");
    assert_eq!(tests[1]["depends_on"], json!(["T1"]));
    assert_eq!(tests[1]["tags"], json!(["slow"]));
    assert_eq!(tests[1]["priority"], 2);
    assert_eq!(tests[1]["status"], "failed");

    // The user's file is input only.
    assert_eq!(std::fs::read(fleet.tests_file()).unwrap(), tests_before);
    assert_eq!(
        std::fs::metadata(fleet.tests_file())
            .unwrap()
            .modified()
            .unwrap(),
        mtime_before
    );
}

#[test]
fn ignored_files_do_not_make_the_workdir_dirty() {
    let fleet = Fleet::new()
        .tests(json!([done_test("T1")]))
        .agent("echo ok > done.txt")
        .write();
    std::fs::write(fleet.workdir().join(".gitignore"), "*.log\n").unwrap();
    fleet.git(&["add", ".gitignore"]);
    fleet.git(&["commit", "-q", "-m", "ignore logs"]);
    std::fs::write(fleet.workdir().join("build.log"), "ignored\n").unwrap();
    fleet.run().expect_code(0);
    assert_eq!(fleet.test_status("T1")["status"], "passed");
}
