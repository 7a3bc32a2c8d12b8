//! The healer: what loopd learns from failures and does about them (DESIGN.md, Self-healing).
//!
//! Everything here is a pure function of the recorded history; the loop actor decides when to
//! call it and records what it returns.
//!
//! # Layout
//! - `diagnosis`: [`diagnose`] a test that used up its attempts: classes, repeated fingerprints,
//!   last errors, suggestions.
//! - `lessons`: [`lesson_from_pass`] and [`lessons_for_prompt`]: a pass after failures, offered to
//!   other tests that fail the same way.
//! - `patterns`: [`failure_patterns`] across loops, for `loopd insights`.
//! - `strategies`: [`next_strategy`], [`heal_budget_left`], [`on_exhausted`]: what to try after
//!   `max_attempts`, and when to call a person.
//! - here: [`error_line`] and [`repeated_failure`], shared by the prompt and the diagnosis.

mod diagnosis;
mod fingerprint;
mod lessons;
mod patterns;
mod strategies;

pub use crate::model::{
    AttemptRun, Diagnosis, HealStrategy, LastError, OutcomeCount, RepeatedFingerprint,
};
pub use diagnosis::diagnose;
pub use fingerprint::{fingerprint, normalise};
pub use lessons::{history_fingerprints, lesson_from_pass, lessons_for_prompt, Lesson};
pub use patterns::{failure_patterns, FailurePattern};
pub use strategies::{
    alternative_prompt, heal_budget_left, next_strategy, on_exhausted, reset_healing, HealDecision,
    HealPolicy,
};

use crate::model::{runs, AttemptRecord};

/// Longest error line kept, in characters.
const MAX_LINE: usize = 200;

/// The line of some output that says best what went wrong, trimmed; `None` when it is empty.
///
/// A missing command first (it explains everything after it), then the first line that names an
/// error, a panic or an assertion, then the first that mentions a failure, else the last line.
/// The first rather than the last, because test runners end with a generic "test failed" line.
pub fn error_line(output: &str) -> Option<String> {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let rank = |l: &str| {
        let l = l.to_lowercase();
        if l.contains("command not found")
            || l.ends_with(": not found")
            || l.contains("no such file or directory")
        {
            0
        } else if ["error", "panicked", "assert", "exception", "expected"]
            .iter()
            .any(|w| l.contains(w))
        {
            1
        } else if l.contains("fail") {
            2
        } else {
            3
        }
    };
    let best = lines.iter().map(|l| rank(l)).min()?;
    let line = if best == 3 {
        lines.last()?
    } else {
        lines.iter().find(|l| rank(l) == best)?
    };
    Some(shorten(line))
}

/// [`error_line`] of an attempt (verify's output, else its reason), normalised the way
/// fingerprints are, so that it reads the same for every attempt with that fingerprint.
pub fn normalised_error(attempt: &AttemptRecord) -> Option<String> {
    error_line(&attempt.verify_tail)
        .or_else(|| attempt.reason.as_deref().and_then(error_line))
        .map(|l| normalise(&l).trim().to_string())
}

fn shorten(line: &str) -> String {
    shorten_to(line, MAX_LINE)
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(crate) fn shorten_to(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// The latest fingerprinted failure, when an earlier attempt failed the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedFailure {
    /// The fingerprint they share.
    pub fingerprint: String,
    /// Attempt numbers that failed this way, oldest first (the latest is last).
    pub attempts: Vec<u32>,
    /// The agent's own summary of each of those attempts that recorded one.
    pub summaries: Vec<(u32, String)>,
    /// The normalised error line.
    pub error_line: String,
}

/// Whether the latest attempt with a fingerprint failed like an earlier one, and how.
pub fn repeated_failure(history: &[AttemptRecord]) -> Option<RepeatedFailure> {
    let last = history.iter().rev().find(|a| a.fingerprint.is_some())?;
    let fingerprint = last.fingerprint.clone()?;
    let same: Vec<&AttemptRecord> = history
        .iter()
        .filter(|a| a.fingerprint.as_deref() == Some(&fingerprint))
        .collect();
    if same.len() < 2 {
        return None;
    }
    Some(RepeatedFailure {
        attempts: same.iter().map(|a| a.number).collect(),
        summaries: same
            .iter()
            .filter_map(|a| {
                let s = a.summary.as_deref()?.trim();
                (!s.is_empty()).then(|| (a.number, s.to_string()))
            })
            .collect(),
        error_line: normalised_error(last).unwrap_or_else(|| "(no output)".into()),
        fingerprint,
    })
}

/// An outcome's snake_case word, as in the JSON.
pub(crate) fn outcome_name(o: crate::model::Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// "1 attempt", "3 attempts".
pub(crate) fn attempts_word(n: u32) -> String {
    crate::words::count(n, "attempt", "attempts")
}

/// Most runs of attempt numbers [`list_numbers`] writes out; beyond them the middle is elided.
const MAX_RUNS: usize = 6;

/// Attempt numbers for people, as ranges: "1, 2 and 4", "1-296", "3, 5-9 and 12". A history
/// of any length reads in a bounded line: past [`MAX_RUNS`] runs the middle ones become "…".
pub(crate) fn list_numbers(numbers: &[u32]) -> String {
    let mut words: Vec<String> = Vec::new();
    for (a, b) in runs(numbers) {
        match b - a {
            0 => words.push(a.to_string()),
            1 => words.extend([a.to_string(), b.to_string()]),
            _ => words.push(format!("{a}-{b}")),
        }
    }
    if words.len() > MAX_RUNS {
        let tail = words.split_off(words.len() - 1);
        words.truncate(MAX_RUNS - 2);
        words.push("…".into());
        words.extend(tail);
    }
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Scripted histories for the healer's and the prompt's tests.
    use super::fingerprint;
    use crate::model::{AttemptRecord, Outcome};
    use chrono::Utc;

    /// A finished attempt whose fingerprint is computed from `verify_tail`, as attempt.rs does.
    pub fn attempt(n: u32, outcome: Outcome, verify_tail: &str) -> AttemptRecord {
        let failed = matches!(
            outcome,
            Outcome::Failed | Outcome::NoChange | Outcome::AgentError
        );
        let mut a = AttemptRecord::started("auth", "T-1", n, "t".into());
        a.outcome = Some(outcome);
        a.counted = outcome.counts(true);
        a.finished_at = Some(Utc::now());
        a.duration_ms = Some(1000);
        a.exit_code = Some(0);
        a.verify_exit = Some(if outcome == Outcome::Passed { 0 } else { 1 });
        a.verify_tail = verify_tail.into();
        a.cost_usd = 0.5;
        if failed {
            a.fingerprint = fingerprint(verify_tail);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::testing::attempt;
    use super::*;
    use crate::model::Outcome;

    #[test]
    fn error_line_prefers_a_missing_command_then_the_first_error() {
        let cargo = "running 1 test\ntest login ... FAILED\nthread 'login' panicked at src/a.rs:3:5:\nassertion failed: ok\nerror: test failed, to rerun pass `--lib`";
        assert_eq!(
            error_line(cargo).unwrap(),
            "thread 'login' panicked at src/a.rs:3:5:"
        );
        let sh = "building\nsh: 1: pytest: not found\nerror: exit 127";
        assert_eq!(error_line(sh).unwrap(), "sh: 1: pytest: not found");
        assert_eq!(error_line("all quiet\nbye").unwrap(), "bye");
        assert_eq!(error_line(" \n"), None);
    }

    #[test]
    fn a_repeat_is_found_only_when_the_latest_fingerprint_was_seen_before() {
        let mut a1 = attempt(1, Outcome::Failed, "error: expected 200, got 500 at /tmp/x");
        a1.summary = Some("Added a login handler".into());
        let a2 = attempt(2, Outcome::Failed, "error: missing field `user`");
        let a3 = attempt(
            3,
            Outcome::Failed,
            "error: expected 200, got 404 at /home/y",
        );
        assert_eq!(repeated_failure(&[a1.clone(), a2.clone()]), None);
        let r = repeated_failure(&[a1, a2, a3.clone()]).unwrap();
        assert_eq!(r.attempts, vec![1, 3]);
        assert_eq!(r.summaries, vec![(1, "Added a login handler".to_string())]);
        assert_eq!(r.error_line, "error: expected #, got # at <path>");
        assert_eq!(Some(r.fingerprint), a3.fingerprint);
    }

    #[test]
    fn numbers_read_as_a_list() {
        assert_eq!(list_numbers(&[2]), "2");
        assert_eq!(list_numbers(&[1, 2, 4]), "1, 2 and 4");
        let all: Vec<u32> = (1..=296).collect();
        assert_eq!(list_numbers(&all), "1-296");
        assert_eq!(list_numbers(&[3, 5, 6, 7, 8, 9, 12]), "3, 5-9 and 12");
        let odd: Vec<u32> = (1..=299).step_by(2).collect();
        assert_eq!(list_numbers(&odd), "1, 3, 5, 7, … and 299");
    }
}
