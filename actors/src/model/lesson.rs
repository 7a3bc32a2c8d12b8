//! A lesson: what fixed a failure, kept by the store and offered by the healer.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What fixed a failure, learned from a pass that followed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Lesson {
    /// The fingerprint of the failure the pass overcame; lessons are found by it.
    pub fingerprint: String,
    /// That failure's error line, normalised, so a prompt can say which failure it was.
    #[serde(default)]
    pub error_line: String,
    /// The loop the test belongs to.
    pub loop_name: String,
    /// The test that passed.
    pub test_id: String,
    /// The attempt that passed.
    pub attempt: u32,
    /// What the pass changed: the diff summary, else its commit.
    pub what_changed: String,
    /// The agent's own summary of the passing attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When it was learned.
    pub learned_at: DateTime<Utc>,
}
