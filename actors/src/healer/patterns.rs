//! Failure patterns across loops: which fingerprints come back most, for `loopd insights`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::normalised_error;
use crate::model::{AttemptRecord, Outcome};

/// The fingerprint of failures whose verify printed nothing: they have no hash of their own,
/// yet they are failures, and often the same one (a verify that only sets its exit status).
pub const SILENT_FINGERPRINT: &str = "silent";

/// The example of [`SILENT_FINGERPRINT`].
const SILENT_EXAMPLE: &str = "verify failed with no output";

/// A failure (one fingerprint) and where it was seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FailurePattern {
    /// Hash of the normalised verify output.
    pub fingerprint: String,
    /// Failed attempts with this fingerprint.
    pub count: u32,
    /// Its error line, normalised.
    pub example: String,
    /// The tests that failed this way, as `loop:test`, in the order first seen.
    pub tests: Vec<String>,
    /// When it was last seen.
    pub last_seen: DateTime<Utc>,
}

/// Failures of `attempts` grouped by fingerprint (those whose verify printed nothing under
/// [`SILENT_FINGERPRINT`]), most frequent first (then the most recent).
pub fn failure_patterns(attempts: &[AttemptRecord]) -> Vec<FailurePattern> {
    let mut by: BTreeMap<&str, FailurePattern> = BTreeMap::new();
    let mut sorted: Vec<&AttemptRecord> = attempts.iter().collect();
    sorted.sort_by_key(|a| a.started_at);
    for a in sorted {
        let silent = a.fingerprint.is_none()
            && matches!(
                a.outcome,
                Some(Outcome::Failed | Outcome::NoChange | Outcome::AgentError)
            )
            && a.verify_tail.trim().is_empty();
        let Some(f) = a
            .fingerprint
            .as_deref()
            .or(silent.then_some(SILENT_FINGERPRINT))
        else {
            continue;
        };
        let p = by.entry(f).or_insert_with(|| FailurePattern {
            fingerprint: f.to_string(),
            count: 0,
            example: String::new(),
            tests: Vec::new(),
            last_seen: a.started_at,
        });
        p.count += 1;
        p.last_seen = a.finished_at.unwrap_or(a.started_at);
        if silent {
            p.example = SILENT_EXAMPLE.into();
        } else if let Some(line) = normalised_error(a) {
            p.example = line;
        }
        let test = format!("{}:{}", a.loop_name, a.test_id);
        if !p.tests.contains(&test) {
            p.tests.push(test);
        }
    }
    let mut out: Vec<FailurePattern> = by.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healer::testing::attempt;

    #[test]
    fn failures_are_grouped_by_fingerprint_across_loops() {
        let mut b = attempt(
            1,
            Outcome::Failed,
            "error: missing table users at /db/x.sql:3",
        );
        b.loop_name = "billing".into();
        b.test_id = "B-1".into();
        let h = [
            attempt(
                1,
                Outcome::Failed,
                "error: missing table users at /db/a.sql:1",
            ),
            attempt(
                2,
                Outcome::Failed,
                "error: missing table users at /db/a.sql:9",
            ),
            attempt(3, Outcome::Failed, "error: wrong password"),
            attempt(4, Outcome::TimedOut, ""),
            attempt(5, Outcome::Passed, "ok"),
            b,
        ];
        let mut h = h;
        h[5].started_at = chrono::Utc::now(); // billing fails last
        let p = failure_patterns(&h);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].count, 3);
        assert_eq!(p[0].example, "error: missing table users at <path>");
        assert_eq!(p[0].tests, vec!["auth:T-1", "billing:B-1"]);
        assert_eq!(Some(&p[0].fingerprint), h[0].fingerprint.as_ref());
        assert_eq!(
            (p[1].count, p[1].example.as_str()),
            (1, "error: wrong password")
        );
    }

    #[test]
    fn failures_whose_verify_printed_nothing_are_one_pattern() {
        let h = [
            attempt(1, Outcome::Failed, ""),
            attempt(2, Outcome::NoChange, "  \n"),
            attempt(3, Outcome::TimedOut, ""),
            attempt(4, Outcome::Interrupted, ""),
        ];
        let p = failure_patterns(&h);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].fingerprint.as_str(), p[0].count, p[0].example.as_str()),
            (SILENT_FINGERPRINT, 2, "verify failed with no output")
        );
    }
}
