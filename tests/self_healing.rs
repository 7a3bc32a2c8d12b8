//! Self-healing end to end: the healer's strategies and escalation, `on_blocked = "skip"`,
//! regression rollbacks and budgets, with scripted agents that read their prompts.

mod common;

use common::{Fleet, LOOP};
use serde_json::json;

/// The agent logs the healing hints it sees in its prompt, pays $0.01 an attempt, and fails.
const FAILING_AGENT: &str = r#"
if grep -q "Earlier attempts" "$LOOPD_PROMPT_FILE"; then h=history; else h=fresh; fi
if grep -qi "different approach" "$LOOPD_PROMPT_FILE"; then a=alternative; else a=plain; fi
echo "$LOOPD_TEST_ID $LOOPD_ATTEMPT $h $a" >> "$ROOT/prompts.log"
echo '{"cost_usd": 0.01}' > "$LOOPD_RESULT_FILE"
echo attempt >> "attempt-$LOOPD_ATTEMPT.txt"
"#;

#[test]
fn auto_heal_tries_other_strategies_then_escalates_to_a_person() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "never", "spec": "x",
                       "verify": "echo 'error: widget missing' >&2; exit 1"}]))
        .agent(FAILING_AGENT)
        .set("max_attempts", "2")
        .set("auto_heal", "true")
        .set("heal_attempts", "2")
        .write();
    let run = fleet.run();
    run.expect_code(1);
    let t = fleet.test_status("T1");
    assert_eq!(t["status"], "needs_human", "{t:#}");
    // max_attempts, then one attempt per heal strategy within the heal budget.
    assert_eq!(t["attempts"].as_array().unwrap().len(), 4);
    let diagnosis = &t["diagnosis"];
    assert!(
        diagnosis["summary"]
            .as_str()
            .unwrap()
            .contains("widget missing"),
        "{diagnosis:#}"
    );
    assert!(run.stderr.contains("needs a person"), "{run}");
    let log = std::fs::read_to_string(fleet.root().join("prompts.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // Attempt 3 is a fresh start (no history); attempt 4 asks for a different approach.
    assert_eq!(lines[2], "T1 3 fresh plain", "{log}");
    assert!(lines[3].starts_with("T1 4 history alternative"), "{log}");
}

#[test]
fn without_auto_heal_the_test_fails_with_a_diagnosis() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "never", "spec": "x",
                       "verify": "echo 'error: widget missing' >&2; exit 1"}]))
        .agent(FAILING_AGENT)
        .set("max_attempts", "2")
        .write();
    fleet.run().expect_code(1);
    let t = fleet.test_status("T1");
    assert_eq!(t["status"], "failed");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 2);
    let d = &t["diagnosis"];
    assert_eq!(d["attempts"], 2, "{d:#}");
    assert!(!d["suggestions"].as_array().unwrap().is_empty(), "{d:#}");
}

#[test]
fn on_blocked_skip_runs_dependents_past_a_failed_test() {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "fails", "spec": "x", "verify": "false"},
            {"id": "T2", "title": "after", "spec": "x", "verify": "test -f T2.done",
             "depends_on": ["T1"]}
        ]))
        .agent("touch \"$LOOPD_TEST_ID.done\"")
        .set("on_blocked", "\"skip\"")
        .write();
    fleet.run().expect_code(1);
    assert_eq!(fleet.test_status("T1")["status"], "failed");
    assert_eq!(fleet.test_status("T2")["status"], "passed");
}

#[test]
fn with_on_blocked_wait_dependents_stay_blocked() {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "fails", "spec": "x", "verify": "false"},
            {"id": "T2", "title": "after", "spec": "x", "verify": "true", "depends_on": ["T1"]}
        ]))
        .agent("touch \"$LOOPD_TEST_ID.done\"")
        .write();
    fleet.run().expect_code(1);
    let t2 = fleet.test_status("T2");
    assert_eq!(t2["status"], "blocked");
    assert!(t2["attempts"].as_array().unwrap().is_empty());
}

#[test]
fn a_pass_that_breaks_an_earlier_test_is_rolled_back_as_a_regression() {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "a", "spec": "x", "verify": "test -f a"},
            {"id": "T2", "title": "b", "spec": "x", "verify": "test -f b", "depends_on": ["T1"]}
        ]))
        // T2's first attempt "refactors" a away; its second keeps it.
        .agent(
            r#"case "$LOOPD_TEST_ID" in
                 T1) touch a ;;
                 T2) touch b; [ "$LOOPD_ATTEMPT" = 1 ] && rm -f a ;;
               esac"#,
        )
        .set("max_attempts", "2")
        .set("regression", "true")
        .write();
    fleet.run().expect_code(0);
    let outcomes: Vec<String> = fleet
        .attempts("T2")
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["regression", "passed"]);
    let first = &fleet.attempts("T2")[0];
    assert_eq!(first["counted"], true);
    assert!(first["reason"].as_str().unwrap().contains("T1"), "{first}");
    // The rolled-back pass is kept under its attempt ref, not on the branch.
    assert!(fleet.git_ok(&["rev-parse", "--verify", "refs/loopd/attempts/T2/1"]));
    let log = fleet.git(&["log", "--format=%s"]);
    assert_eq!(log.matches("T2 passed").count(), 1, "{log}");
    assert!(fleet.workdir().join("a").exists() && fleet.workdir().join("b").exists());
}

#[test]
fn a_spent_budget_pauses_the_loop_and_run_exits_3() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "never", "spec": "x", "verify": "false"}]))
        .agent(FAILING_AGENT)
        .set("max_attempts", "9")
        .set("budget_usd", "0.025")
        .write();
    let run = fleet.run();
    run.expect_code(3);
    let status = fleet.loop_status();
    assert_eq!(status["status"], "paused");
    assert_eq!(status["reason"], "budget_exhausted");
    // $0.01 an attempt: the third brings the total to $0.03 >= $0.025, then no more.
    assert_eq!(fleet.attempts("T1").len(), 3);
    assert_eq!(status["name"], LOOP);
}

#[test]
fn rollback_returns_the_workdir_to_a_tests_checkpoint_and_reopens_later_passes() {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "a", "spec": "x", "verify": "test -f a"},
            {"id": "T2", "title": "b", "spec": "x", "verify": "test -f b", "depends_on": ["T1"]}
        ]))
        .agent(r#"case "$LOOPD_TEST_ID" in T1) touch a ;; T2) touch b ;; esac"#)
        .write();
    fleet.run().expect_code(0);
    let t1_commit = fleet.test_status("T1")["commit"]
        .as_str()
        .unwrap()
        .to_string();

    let out = fleet.cmd(&["rollback", LOOP, "T1"]);
    out.expect_code(0);
    assert!(out.stdout.contains("pending again: T2"), "{out}");
    assert_eq!(fleet.git(&["rev-parse", "HEAD"]).trim(), t1_commit);
    assert!(!fleet.workdir().join("b").exists());
    assert_eq!(fleet.test_status("T2")["status"], "pending");
    assert_eq!(fleet.test_status("T1")["status"], "passed");

    // A test that never passed has no checkpoint to return to.
    fleet.cmd(&["rollback", LOOP, "T2"]).expect_code(2);
    // The next run does T2 again from T1's checkpoint.
    fleet.run().expect_code(0);
    assert!(fleet.workdir().join("b").exists());
}
