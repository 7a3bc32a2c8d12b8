//! The diagnosis written onto a test that used up its attempts: derived from its recorded
//! history, never a template with blanks.

use std::collections::BTreeMap;

use chrono::Utc;

use super::{attempts_word, error_line, list_numbers, normalised_error, outcome_name};
use crate::model::{
    AttemptRecord, AttemptRun, Diagnosis, LastError, Outcome, OutcomeCount, RepeatedFingerprint,
    TestRecord,
};

/// How many of the last failed attempts the diagnosis quotes.
const LAST_ERRORS: usize = 3;

/// How many repeated failures a diagnosis lists (the most frequent), and how many runs of
/// attempt numbers each keeps (the newest): a diagnosis stays small whatever the history.
const MAX_REPEATED: usize = 5;
const MAX_RUNS: usize = 20;

/// A repeated failure's attempts for people: "1 and 3-296".
fn attempts_list(r: &RepeatedFingerprint) -> String {
    let numbers: Vec<u32> = r.attempts.iter().flat_map(|r| r.numbers()).collect();
    list_numbers(&numbers)
}

/// Diagnoses `test` from its attempts (oldest first).
pub fn diagnose(test: &TestRecord, history: &[AttemptRecord]) -> Diagnosis {
    let finished: Vec<&AttemptRecord> = history
        .iter()
        .filter(|a| a.outcome.is_some_and(|o| o != Outcome::Interrupted))
        .collect();
    let failures: Vec<&AttemptRecord> = finished
        .iter()
        .copied()
        .filter(|a| a.outcome != Some(Outcome::Passed))
        .collect();

    let mut by_outcome: BTreeMap<String, OutcomeCount> = BTreeMap::new();
    for a in &finished {
        let o = a.outcome.expect("filtered on outcome");
        by_outcome
            .entry(outcome_name(o))
            .or_insert(OutcomeCount {
                outcome: o,
                count: 0,
            })
            .count += 1;
    }
    let mut classes: Vec<OutcomeCount> = by_outcome.into_values().collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.count));

    let mut by_fingerprint: BTreeMap<&str, Vec<&AttemptRecord>> = BTreeMap::new();
    for a in &failures {
        if let Some(f) = a.fingerprint.as_deref() {
            by_fingerprint.entry(f).or_default().push(a);
        }
    }
    let mut repeated: Vec<RepeatedFingerprint> = by_fingerprint
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(f, v)| {
            let numbers: Vec<u32> = v.iter().map(|a| a.number).collect();
            let mut runs = AttemptRun::of(&numbers);
            runs.drain(..runs.len().saturating_sub(MAX_RUNS));
            RepeatedFingerprint {
                fingerprint: f.to_string(),
                count: v.len() as u32,
                attempts: runs,
                example: v
                    .iter()
                    .rev()
                    .find_map(|a| normalised_error(a))
                    .unwrap_or_default(),
            }
        })
        .collect();
    repeated.sort_by_key(|r| std::cmp::Reverse(r.count));
    repeated.truncate(MAX_REPEATED);

    let last_errors: Vec<LastError> = failures
        .iter()
        .rev()
        .take(LAST_ERRORS)
        .map(|a| LastError {
            attempt: a.number,
            outcome: a.outcome.expect("filtered on outcome"),
            line: error_line(&a.verify_tail)
                .or_else(|| a.reason.clone())
                .unwrap_or_else(|| "(no output)".into()),
        })
        .collect();

    let suggestions = suggest(&failures, &classes, &repeated);
    let summary = summarise(
        test,
        &finished,
        &classes,
        &repeated,
        &last_errors,
        &suggestions,
    );
    Diagnosis {
        attempts: finished.len() as u32,
        classes,
        repeated,
        last_errors,
        suggestions,
        summary,
        diagnosed_at: Utc::now(),
    }
}

fn count(classes: &[OutcomeCount], o: Outcome) -> u32 {
    classes
        .iter()
        .find(|c| c.outcome == o)
        .map_or(0, |c| c.count)
}

fn suggest(
    failures: &[&AttemptRecord],
    classes: &[OutcomeCount],
    repeated: &[RepeatedFingerprint],
) -> Vec<String> {
    let mut out = Vec::new();
    let n = failures.len() as u32;
    if let Some(tool) = failures.iter().rev().find_map(|a| missing_tool(a)) {
        out.push(format!(
            "verify needs a tool that is missing (`{tool}`): install it where loopd runs, or fix \
             the verify command"
        ));
    }
    let no_change = count(classes, Outcome::NoChange);
    if n > 0 && no_change == n {
        out.push(
            "the agent changes nothing: the spec may be unclear or already satisfied; check that \
             verify really tests this task (run it by hand in the workdir)"
                .into(),
        );
    } else if no_change * 2 > n {
        out.push(format!(
            "the agent changed nothing in {no_change} of {}: make the spec say what has to \
             change",
            crate::words::count(n, "failed attempt", "failed attempts")
        ));
    }
    if let Some(r) = repeated.first() {
        out.push(format!(
            "the same failure repeats ({} times, attempts {}): `{}`; retrying the same way will \
             not help: give the spec a hint about this error, split the test, or fix the cause \
             by hand",
            r.count,
            attempts_list(r),
            r.example
        ));
    }
    let timed_out = count(classes, Outcome::TimedOut);
    let stalled = count(classes, Outcome::Stalled);
    if timed_out + stalled > 0 {
        let which = match (timed_out > 0, stalled > 0) {
            (true, true) => "iteration_timeout or stall_timeout",
            (true, false) => "iteration_timeout",
            _ => "stall_timeout",
        };
        out.push(format!(
            "{} ran out of time ({timed_out} timed out, {stalled} stalled): raise {which} or \
             split the test into smaller ones",
            attempts_word(timed_out + stalled)
        ));
    }
    let crashes: Vec<&&AttemptRecord> = failures
        .iter()
        .filter(|a| a.outcome == Some(Outcome::AgentError))
        .collect();
    if !crashes.is_empty() {
        let mut codes: Vec<String> = crashes
            .iter()
            .map(|a| match (a.exit_code, a.exit_signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "no exit status".into(),
            })
            .collect();
        codes.sort();
        codes.dedup();
        let hint = if crashes.iter().any(|a| a.exit_code == Some(127)) {
            "its command was not found: check the agent's command and PATH"
        } else {
            "check its command, its binary and its output (`loopd logs`)"
        };
        out.push(format!(
            "the agent crashes ({}: {}): {hint}",
            attempts_word(crashes.len() as u32),
            codes.join(", ")
        ));
    }
    let regressions = count(classes, Outcome::Regression);
    if regressions > 0 {
        out.push(format!(
            "{} broke tests that passed before and {} rolled back: the task may conflict \
             with an earlier one; say in the spec what must keep working",
            crate::words::count(regressions, "pass", "passes"),
            if regressions == 1 { "was" } else { "were" }
        ));
    }
    if out.is_empty() && n > 0 {
        let distinct = failures
            .iter()
            .filter_map(|a| a.fingerprint.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct > 1 {
            out.push(format!(
                "each attempt failed differently ({distinct} different failures): the agent may \
                 be close; compare the last errors, or raise max_attempts"
            ));
        } else {
            out.push(
                "read the last attempt's transcript (`loopd logs`) and the verify output".into(),
            );
        }
    }
    out
}

/// The tool verify could not find, when its output says so (exit 127, "command not found").
fn missing_tool(a: &AttemptRecord) -> Option<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"(?:^|\s)(?:[\w.-]+: )?(?:line \d+: |\d+: )?([\w.+-]+): (?:command )?not found",
        )
        .expect("a valid pattern")
    });
    let found = a
        .verify_tail
        .lines()
        .find_map(|l| re.captures(l).map(|c| c[1].to_string()));
    match found {
        Some(tool) => Some(tool),
        None if a.verify_exit == Some(127) => Some("a command of verify".into()),
        None => None,
    }
}

fn summarise(
    test: &TestRecord,
    finished: &[&AttemptRecord],
    classes: &[OutcomeCount],
    repeated: &[RepeatedFingerprint],
    last_errors: &[LastError],
    suggestions: &[String],
) -> String {
    let mut s = format!(
        "{} (loop {}) ended {}: {}.",
        test.spec.id,
        test.loop_name,
        attempts_word(finished.len() as u32),
        classes
            .iter()
            .map(|c| format!("{} {}", c.count, outcome_name(c.outcome)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in repeated {
        s.push_str(&format!(
            " The same failure came back {} times (attempts {}): `{}`.",
            r.count,
            attempts_list(r),
            r.example
        ));
    }
    if let Some(e) = last_errors.first() {
        s.push_str(&format!(
            " Last error (attempt {}): `{}`.",
            e.attempt, e.line
        ));
    }
    if !suggestions.is_empty() {
        s.push_str(&format!(" Suggested: {}.", suggestions.join("; ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healer::testing::attempt;
    use crate::model::Origin;
    use crate::tests_file::TestSpec;

    fn test_record() -> TestRecord {
        let spec: TestSpec = serde_json::from_value(serde_json::json!({
            "id": "T-1", "title": "Login", "spec": "build it", "verify": "make test"
        }))
        .unwrap();
        TestRecord::new("auth", spec, Origin::File)
    }

    #[test]
    fn a_repeated_failure_is_counted_with_its_attempts_and_line() {
        let h = [
            attempt(
                1,
                Outcome::Failed,
                "FAIL login\nerror: expected 200, got 500 (12ms)",
            ),
            attempt(
                2,
                Outcome::NoChange,
                "FAIL login\nerror: missing field `user`",
            ),
            attempt(3, Outcome::Interrupted, ""),
            attempt(
                4,
                Outcome::Failed,
                "FAIL login\nerror: expected 200, got 404 (7ms)",
            ),
            attempt(5, Outcome::ApiError, ""),
            attempt(
                6,
                Outcome::Failed,
                "FAIL login\nerror: expected 200, got 401 (3ms)",
            ),
        ];
        let d = diagnose(&test_record(), &h);
        assert_eq!(d.attempts, 5, "the interrupted attempt is left out");
        assert_eq!(
            d.classes,
            vec![
                OutcomeCount {
                    outcome: Outcome::Failed,
                    count: 3
                },
                OutcomeCount {
                    outcome: Outcome::ApiError,
                    count: 1
                },
                OutcomeCount {
                    outcome: Outcome::NoChange,
                    count: 1
                },
            ]
        );
        assert_eq!(d.repeated.len(), 1);
        assert_eq!(d.repeated[0].count, 3);
        assert_eq!(
            d.repeated[0].attempts,
            [1, 4, 6].map(AttemptRun::One).to_vec()
        );
        assert_eq!(Some(&d.repeated[0].fingerprint), h[0].fingerprint.as_ref());
        assert_eq!(d.repeated[0].example, "error: expected #, got # (#ms)");
        let last: Vec<(u32, &str)> = d
            .last_errors
            .iter()
            .map(|e| (e.attempt, e.line.as_str()))
            .collect();
        assert_eq!(
            last,
            vec![
                (6, "error: expected 200, got 401 (3ms)"),
                (5, "(no output)"),
                (4, "error: expected 200, got 404 (7ms)"),
            ]
        );
        assert!(
            d.suggestions[0].starts_with("the same failure repeats (3 times, attempts 1, 4 and 6)")
        );
        assert!(
            d.summary
                .contains("T-1 (loop auth) ended 5 attempts: 3 failed, 1 api_error, 1 no_change."),
            "{}",
            d.summary
        );
        assert!(
            d.summary.contains(
                "came back 3 times (attempts 1, 4 and 6): `error: expected #, got # (#ms)`"
            ),
            "{}",
            d.summary
        );
        assert!(d
            .summary
            .contains("Last error (attempt 6): `error: expected 200, got 401 (3ms)`"));
    }

    #[test]
    fn nothing_changed_every_time_points_at_the_spec_and_verify() {
        let h = [
            attempt(1, Outcome::NoChange, "1 failed: test_login"),
            attempt(2, Outcome::NoChange, "2 failed: test_login, test_logout"),
        ];
        let d = diagnose(&test_record(), &h);
        assert_eq!(
            d.classes,
            vec![OutcomeCount {
                outcome: Outcome::NoChange,
                count: 2
            }]
        );
        assert!(
            d.repeated.is_empty(),
            "different outputs, different fingerprints"
        );
        assert_eq!(d.suggestions.len(), 1, "{:?}", d.suggestions);
        assert!(d.suggestions[0].starts_with("the agent changes nothing"));
    }

    #[test]
    fn timeouts_crashes_and_a_missing_tool_each_get_their_suggestion() {
        let mut crash = attempt(2, Outcome::AgentError, "");
        crash.exit_code = Some(127);
        crash.reason = Some("the agent exited with 127".into());
        let mut missing = attempt(3, Outcome::Failed, "sh: 1: pytest: not found");
        missing.verify_exit = Some(127);
        let h = [
            attempt(1, Outcome::TimedOut, ""),
            crash,
            missing,
            attempt(4, Outcome::Stalled, ""),
        ];
        let d = diagnose(&test_record(), &h);
        let s = d.suggestions.join("\n");
        assert!(
            s.contains("verify needs a tool that is missing (`pytest`)"),
            "{s}"
        );
        assert!(s.contains("2 attempts ran out of time (1 timed out, 1 stalled): raise iteration_timeout or stall_timeout"), "{s}");
        assert!(
            s.contains("the agent crashes (1 attempt: exit 127): its command was not found"),
            "{s}"
        );
        assert!(!s.contains("same failure"), "{s}");
        assert_eq!(d.last_errors[2].line, "the agent exited with 127");
    }

    #[test]
    fn a_long_history_is_named_by_ranges_in_a_bounded_diagnosis() {
        let same: Vec<AttemptRecord> = (1..=300)
            .map(|n| attempt(n, Outcome::Failed, "error: expected 200, got 500"))
            .collect();
        let d = diagnose(&test_record(), &same);
        assert_eq!(d.repeated[0].attempts, vec![AttemptRun::Range(1, 300)]);
        assert_eq!(d.repeated[0].count, 300);
        assert!(d.summary.contains("(attempts 1-300)"), "{}", d.summary);

        // Two failures taking turns: 150 runs each, of which the diagnosis keeps the newest.
        let size = |n: u32| {
            let h: Vec<AttemptRecord> = (1..=n)
                .map(|i| {
                    let tail = ["error: no table", "error: no column"][i as usize % 2];
                    attempt(i, Outcome::Failed, tail)
                })
                .collect();
            let d = diagnose(&test_record(), &h);
            assert_eq!(d.repeated.len(), 2);
            assert!(d.repeated.iter().all(|r| r.attempts.len() == MAX_RUNS));
            assert!(d.summary.contains("…"), "{}", d.summary);
            serde_json::to_string(&d).unwrap().len()
        };
        let (small, big) = (size(300), size(3000));
        assert!(big < 4096 && big <= small + 200, "{small} then {big} bytes");
    }

    #[test]
    fn a_diagnosis_written_with_plain_numbers_still_reads() {
        let r: RepeatedFingerprint = serde_json::from_value(serde_json::json!({
            "fingerprint": "f", "count": 2, "attempts": [1, 4], "example": "e"
        }))
        .unwrap();
        assert_eq!(r.attempts, vec![AttemptRun::One(1), AttemptRun::One(4)]);
        let ranged = serde_json::to_value(AttemptRun::of(&[1, 2, 3, 7])).unwrap();
        assert_eq!(ranged, serde_json::json!([[1, 3], 7]));
    }

    #[test]
    fn a_diagnosis_round_trips_through_json() {
        let h = [
            attempt(1, Outcome::Failed, "error: x"),
            attempt(2, Outcome::Failed, "error: x"),
        ];
        let d = diagnose(&test_record(), &h);
        let back: Diagnosis = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
