//! The tests file: the user's machine-readable list of work for one loop.
//!
//! `{"tests": [{"id", "title", "spec" | "spec_file", "verify", "depends_on", ...}]}`

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tests file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestsFile {
    /// The tests of this loop, in the order the user wrote them.
    pub tests: Vec<TestSpec>,
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Unique in its loop; `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (it becomes paths and git refs).
    pub id: String,
    /// One line for people.
    pub title: String,
    /// What to build, given to the agent. Either this or `spec_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// A spec document under the loop's `specs_dir`, used when `spec` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_file: Option<PathBuf>,
    /// Shell command run by loopd in the workdir after the agent; exit 0 means passed.
    pub verify: String,
    /// Ids of tests that must pass (or be skipped) first; `other-loop:ID` names another loop's test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// 1 is highest; defaults to the loop's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Overrides the loop's `iteration_timeout` for this test (humantime, e.g. "20m").
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Tests of one group (a name like an id) never run at once, e.g. tests that edit one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_group: Option<String>,
}
