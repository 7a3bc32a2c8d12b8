//! What the healer writes onto a test: its diagnosis and the strategy of its next heal attempt.
//! The records only; the healer (`crate::healer`) derives them from the history.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Outcome;

/// What the healer makes of a test's failures, for people and for the next strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnosis {
    /// Finished attempts it is drawn from (interrupted ones are left out).
    pub attempts: u32,
    /// How many attempts ended each way, most frequent first.
    pub classes: Vec<OutcomeCount>,
    /// Failure fingerprints seen more than once, most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeated: Vec<RepeatedFingerprint>,
    /// The last failed attempts' errors, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_errors: Vec<LastError>,
    /// What a person (or the next strategy) could do, most specific first.
    pub suggestions: Vec<String>,
    /// All of the above in one paragraph, for people.
    pub summary: String,
    /// When it was written.
    pub diagnosed_at: DateTime<Utc>,
}

/// Attempts that ended one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeCount {
    /// The outcome.
    pub outcome: Outcome,
    /// How many attempts ended so.
    pub count: u32,
}

/// A failure that happened more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepeatedFingerprint {
    /// Hash of the normalised verify output.
    pub fingerprint: String,
    /// How many attempts failed this way.
    pub count: u32,
    /// Their numbers as runs, oldest first: `[1, [3, 296]]` is attempts 1 and 3 to 296. At
    /// most the newest 20 runs; `count` is the whole.
    pub attempts: Vec<AttemptRun>,
    /// A representative error line, normalised.
    pub example: String,
}

/// One attempt number, or a run of consecutive ones (`[first, last]`). A plain number is also
/// what diagnoses written before runs existed hold, so they still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AttemptRun {
    /// A single attempt.
    One(u32),
    /// Attempts `first` to `last`, both included.
    Range(u32, u32),
}

impl AttemptRun {
    /// The runs of `numbers` (ascending).
    pub fn of(numbers: &[u32]) -> Vec<AttemptRun> {
        runs(numbers)
            .into_iter()
            .map(|(a, b)| {
                if a == b {
                    AttemptRun::One(a)
                } else {
                    AttemptRun::Range(a, b)
                }
            })
            .collect()
    }

    /// Every number of the run.
    pub fn numbers(self) -> std::ops::RangeInclusive<u32> {
        match self {
            AttemptRun::One(n) => n..=n,
            AttemptRun::Range(a, b) => a..=b,
        }
    }
}

/// What one failed attempt said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LastError {
    /// The attempt's number.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Its error line as printed (verify's output, else the reason).
    pub line: String,
}

/// One way of trying a failed test again, cheapest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealStrategy {
    /// Start from the last checkpoint with a prompt that carries no earlier attempts, so the
    /// agent is not led down the same path again.
    FreshStart,
    /// The usual prompt plus [`alternative_prompt`]: what failed, and a request for a different
    /// approach.
    AlternativePrompt,
    /// The same prompt as [`HealStrategy::AlternativePrompt`], run by this (stronger) model.
    StrongerModel(String),
}

impl std::fmt::Display for HealStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealStrategy::FreshStart => f.write_str("a fresh start from the last checkpoint"),
            HealStrategy::AlternativePrompt => f.write_str("a prompt asking for another approach"),
            HealStrategy::StrongerModel(m) => write!(f, "the stronger model `{m}`"),
        }
    }
}

/// Runs of consecutive numbers, in the order given: `[1, 2, 3, 5]` is `[(1, 3), (5, 5)]`.
pub(crate) fn runs(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(n) => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}
