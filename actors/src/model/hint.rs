//! A hint: a person's guidance, kept by the store and put into prompts by `hints`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One person's guidance to a loop, or to one of its tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hint {
    /// The loop it is for.
    pub loop_name: String,
    /// The test it is for; absent: every test of the loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    /// The guidance, as the person wrote it.
    pub text: String,
    /// Who gave it (`$USER` for the CLI, the body's `author` or `api` for the API).
    pub author: String,
    /// When it was given.
    pub at: DateTime<Utc>,
}

/// Which hint, to clear: the loop's own, or one test's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintKey {
    /// The loop.
    pub loop_name: String,
    /// The test; `None`: the loop's own hint.
    pub test_id: Option<String>,
}
