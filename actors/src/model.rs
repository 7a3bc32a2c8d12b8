//! The records loopd keeps about loops, tests and attempts, and the events it publishes.
//!
//! These are the words of DESIGN.md's Contracts: their serialized names are part of the interface
//! that scripts, the API and later versions rely on.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tests_file::TestSpec;

mod delivery;
mod heal;
mod hint;
mod lesson;
pub use delivery::{DeliveryRecord, DeliveryStatus};
pub(crate) use heal::runs;
pub use heal::{AttemptRun, Diagnosis, HealStrategy, LastError, OutcomeCount, RepeatedFingerprint};
pub use hint::{Hint, HintKey};
pub use lesson::Lesson;

/// Where a test is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Waiting to be attempted.
    Pending,
    /// An attempt is running now.
    Running,
    /// Verify passed and the checkpoint commit was made.
    Passed,
    /// `max_attempts` counted failures; holds back its dependents.
    Failed,
    /// A dependency has not passed and cannot pass without help; never attempted.
    Blocked,
    /// Set aside by a decision; does not hold back its dependents.
    Skipped,
    /// The healer gave up; a person has to look.
    NeedsHuman,
    /// The id disappeared from the tests file; its history stays.
    Removed,
}

impl TestStatus {
    /// Whether dependents may run after this test.
    pub fn releases_dependents(self) -> bool {
        matches!(self, TestStatus::Passed | TestStatus::Skipped)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Verify exited 0.
    Passed,
    /// Verify exited non-zero (or overran `verify_timeout`).
    Failed,
    /// The agent crashed or exited non-zero without an API cause.
    AgentError,
    /// Verify failed and the tree equals the last checkpoint.
    NoChange,
    /// No agent output for `stall_timeout`.
    Stalled,
    /// The agent overran `iteration_timeout` (or the test's `timeout`).
    TimedOut,
    /// The provider's API failed (429, 5xx, 529, network); not counted.
    ApiError,
    /// The provider's credit balance is empty; not counted.
    OutOfCredits,
    /// loopd stopped, paused or died during the attempt; not counted.
    Interrupted,
    /// The pass broke a test that passed before and was rolled back.
    Regression,
    /// The agent could not be started at all (missing binary, not executable): a configuration
    /// problem, not counted; the loop pauses (`agent_unavailable`) until a person resumes it.
    AgentUnavailable,
    /// A pass in a lane that could not be merged onto the loop's checkpoint: the rebase and the
    /// merge conflict, or the test's verify (with `regression`, a passed test's) fails on the
    /// merged tree. Usually another lane's fault, so counted only when the test's previous
    /// attempt was a conflict too ([`Outcome::counts_after`]).
    Conflict,
}

impl Outcome {
    /// Whether this outcome counts toward `max_attempts` (`count_timeouts` decides for
    /// `stalled` and `timed_out`).
    pub fn counts(self, count_timeouts: bool) -> bool {
        match self {
            Outcome::Failed | Outcome::AgentError | Outcome::NoChange | Outcome::Regression => true,
            Outcome::Stalled | Outcome::TimedOut => count_timeouts,
            Outcome::Passed
            | Outcome::ApiError
            | Outcome::OutOfCredits
            | Outcome::Interrupted
            | Outcome::AgentUnavailable
            | Outcome::Conflict => false,
        }
    }

    /// Whether this outcome counts toward `max_attempts`, given the test's earlier attempts
    /// (oldest first): as [`Outcome::counts`], except that a `conflict` counts only when the
    /// last earlier attempt that finished (not `interrupted`) was a `conflict` too.
    pub fn counts_after(self, count_timeouts: bool, earlier: &[AttemptRecord]) -> bool {
        if self != Outcome::Conflict {
            return self.counts(count_timeouts);
        }
        earlier
            .iter()
            .rev()
            .filter_map(|a| a.outcome)
            .find(|o| *o != Outcome::Interrupted)
            == Some(Outcome::Conflict)
    }
}

/// Why the monitor ended an attempt's agent. Recorded whatever the outcome: a pass after a kill
/// is still a pass, and still a hang that people must be able to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Killed {
    /// No agent output for `stall_timeout`.
    Stalled,
    /// The agent overran `iteration_timeout` (or the test's `timeout`).
    TimedOut,
}

impl Killed {
    /// Its snake_case word, as in the JSON.
    pub fn word(self) -> &'static str {
        match self {
            Killed::Stalled => "stalled",
            Killed::TimedOut => "timed_out",
        }
    }
}

/// What a loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoopState {
    /// Known but not started.
    Idle,
    /// Attempting tests.
    Running,
    /// Starts no new attempt until resumed (see `reason`).
    Paused,
    /// Stopped by a person; survives restarts until started again.
    Stopped,
    /// No runnable test is left.
    Finished,
    /// Its actor crashed more often than the restart intensity allows.
    Crashed,
}

/// Why a loop is paused, stopped, idle or crashed: a code for programs ([`LoopReason::code`]) and
/// words for people ([`LoopReason::message`]). Stored and sent as one string, as it always was:
/// the code alone (`by_user`), the code and its detail (`restart_intensity: 6 restarts ...`), or,
/// for a loop that crashed on its input, the message alone (`invalid tests file: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopReason {
    /// A person paused or stopped it; survives restarts until resumed or started.
    ByUser,
    /// Its provider's credit balance is empty.
    OutOfCredits,
    /// The loop or the fleet spent its `budget_usd` or `max_attempts_total`.
    BudgetExhausted,
    /// Its agent cannot be started (configuration for a person to fix).
    AgentUnavailable,
    /// Its attempt was interrupted (stop, shutdown, reload); resumed later.
    Interrupted,
    /// A pass whose checkpoint commit failed (see `hold`).
    CheckpointFailed,
    /// A workdir whose git state loopd could not save, reset or restore (see `hold`).
    WorkdirBroken,
    /// The loop left the fleet file (its history stays).
    RemovedFromConfig,
    /// Its actor failed more often than the restart intensity allows (the detail says how).
    RestartIntensity(String),
    /// It cannot run its input (an invalid tests file, ...): the message says what.
    Crashed(String),
}

impl LoopReason {
    /// The codes of the variants without a message of their own, as stored.
    const CODES: [(&'static str, LoopReason); 8] = [
        ("by_user", LoopReason::ByUser),
        ("out_of_credits", LoopReason::OutOfCredits),
        ("budget_exhausted", LoopReason::BudgetExhausted),
        ("agent_unavailable", LoopReason::AgentUnavailable),
        ("interrupted", LoopReason::Interrupted),
        ("checkpoint_failed", LoopReason::CheckpointFailed),
        ("workdir_broken", LoopReason::WorkdirBroken),
        ("removed_from_config", LoopReason::RemovedFromConfig),
    ];

    /// The stable code (`by_user`, `restart_intensity`, `crashed`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            LoopReason::RestartIntensity(_) => "restart_intensity",
            LoopReason::Crashed(_) => "crashed",
            unit => {
                Self::CODES
                    .iter()
                    .find(|(_, r)| r == unit)
                    .expect("every unit variant has a code")
                    .0
            }
        }
    }

    /// Words for people.
    pub fn message(&self) -> &str {
        match self {
            LoopReason::ByUser => "paused or stopped by a person",
            LoopReason::OutOfCredits => "the provider is out of credits",
            LoopReason::BudgetExhausted => "the budget is spent",
            LoopReason::AgentUnavailable => "the agent cannot be started",
            LoopReason::Interrupted => "its attempt was interrupted",
            LoopReason::CheckpointFailed => "a pass could not be committed",
            LoopReason::WorkdirBroken => "the workdir's git state could not be restored",
            LoopReason::RemovedFromConfig => "it left the fleet file",
            LoopReason::RestartIntensity(m) | LoopReason::Crashed(m) => m,
        }
    }

    /// Whether the loop is held for its workdir's git, until a person's resume (see `hold`).
    pub fn is_hold(&self) -> bool {
        matches!(
            self,
            LoopReason::CheckpointFailed | LoopReason::WorkdirBroken
        )
    }

    /// The reason a stored string names (any string: one without a known code is a crash's
    /// message).
    pub fn parse(s: &str) -> LoopReason {
        if let Some((_, r)) = Self::CODES.iter().find(|(c, _)| *c == s) {
            return r.clone();
        }
        match s.strip_prefix("restart_intensity") {
            Some("") => LoopReason::RestartIntensity(String::new()),
            Some(rest) if rest.starts_with(": ") => LoopReason::RestartIntensity(rest[2..].into()),
            _ => LoopReason::Crashed(s.into()),
        }
    }
}

impl std::fmt::Display for LoopReason {
    /// The stored form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopReason::RestartIntensity(d) if d.is_empty() => f.write_str(self.code()),
            LoopReason::RestartIntensity(d) => write!(f, "{}: {d}", self.code()),
            LoopReason::Crashed(m) => f.write_str(m),
            unit => f.write_str(unit.code()),
        }
    }
}

impl Serialize for LoopReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LoopReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(LoopReason::parse(&s))
    }
}

/// Where a test came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The loop's tests file.
    #[default]
    File,
    /// Injected through the API.
    Api,
}

/// A loop as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoopRecord {
    /// The loop's name (validated; it becomes paths).
    pub name: String,
    /// What the loop is doing.
    pub state: LoopState,
    /// Why it is paused, stopped or crashed (`by_user`, `out_of_credits`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reason: Option<LoopReason>,
    /// The last checkpoint commit of its workdir; failed attempts reset to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// When the loop last started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When this record last changed.
    pub updated_at: DateTime<Utc>,
    /// Its priority (1 is highest), as last configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Its agent's model, as last configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The configuration of a loop created through the API (the registry brings it back after
    /// a restart); `None` for loops of the fleet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::config::LoopConfig>,
    /// Git work an attempt's end could not do (the loop is paused for it); retried on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_git: Option<PendingGit>,
    /// The loop's merge queue (loops with `lanes` above 1): lanes' passes waiting to be merged
    /// onto the checkpoint, the one being merged, and the last few that merged or conflicted.
    /// Kept on the loop's record, so that a pass enters the queue in its outcome's transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_queue: Vec<MergeEntry>,
}

/// A lane's pass in its loop's merge queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct MergeEntry {
    /// The test that passed in the lane.
    pub test_id: String,
    /// The attempt's number.
    pub attempt: u32,
    /// The lane it passed in.
    pub lane: u32,
    /// The checkpoint the attempt started from.
    pub base: String,
    /// The lane's commit (kept under the attempt's ref).
    pub commit: String,
    /// Where the entry is.
    pub state: MergeState,
    /// The commit the checkpoint moves to, once the merge made it (written before the
    /// checkpoint moves: after a crash, a checkpoint that holds it means the merge is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<String>,
    /// When the pass entered the queue.
    pub queued_at: DateTime<Utc>,
    /// When the merge ended (merged or conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a [`MergeEntry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeState {
    /// Waiting for the merges before it.
    Waiting,
    /// Being combined with the checkpoint and re-verified.
    Merging,
    /// On the checkpoint: the test passed.
    Merged,
    /// Not merged: the outcome `conflict`, retried on the new checkpoint.
    Conflict,
}

impl MergeState {
    /// Whether the entry is still to be merged (waiting or merging).
    pub fn is_open(self) -> bool {
        matches!(self, MergeState::Waiting | MergeState::Merging)
    }
}

/// Git work left undone at the end of an attempt: a pass whose checkpoint commit failed, or a
/// workdir that could not be reset to the checkpoint. The attempt's files stay in the working
/// tree until it is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingGit {
    /// The attempt's test.
    pub test_id: String,
    /// The attempt's number.
    pub attempt: u32,
    /// What is left to do.
    pub action: PendingAction,
    /// Why it was left undone, with what git said (for the console and the API).
    #[serde(default)]
    pub message: String,
}

/// What [`PendingGit`] has left to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PendingAction {
    /// The pass's checkpoint commit (with the attempt's cost in its trailer).
    Checkpoint {
        /// The attempt's cost, for the `Loopd-Cost` trailer.
        cost_usd: f64,
    },
    /// Saving the attempt's changes to its ref and resetting the workdir to the checkpoint.
    Reset,
}

impl LoopRecord {
    /// A loop the store has not seen before.
    pub fn new(name: &str) -> Self {
        LoopRecord {
            name: name.to_string(),
            state: LoopState::Idle,
            reason: None,
            checkpoint: None,
            started_at: None,
            updated_at: Utc::now(),
            priority: None,
            model: None,
            config: None,
            pending_git: None,
            merge_queue: Vec::new(),
        }
    }
}

/// A test as the store knows it: the user's definition plus its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestRecord {
    /// The loop this test belongs to.
    pub loop_name: String,
    /// The definition, as last read from the tests file or the API.
    pub spec: TestSpec,
    /// Where the test came from.
    #[serde(default)]
    pub origin: Origin,
    /// Position in the tests file (injected tests come after), to keep the user's order.
    #[serde(default)]
    pub order: u32,
    /// Where the test is in its life.
    pub status: TestStatus,
    /// Attempts started, counted or not (the next attempt's number is this plus one).
    pub attempts: u32,
    /// Attempts that counted toward `max_attempts`.
    pub counted_attempts: u32,
    /// How the last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// The tests that hold this one back, when it is `blocked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    /// Why the status is what it is, in a sentence, where there is more to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The checkpoint commit made when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When this record last changed.
    pub updated_at: DateTime<Utc>,
    /// What the healer made of the failures once `max_attempts` was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// The strategy of the next attempt while the healer is at work (`auto_heal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_strategy: Option<HealStrategy>,
    /// Heal attempts that failed, against the heal budget.
    #[serde(default)]
    pub heal_attempts: u32,
    /// What the heal attempts cost, in US dollars, against the heal budget.
    #[serde(default)]
    pub heal_cost_usd: f64,
}

impl TestRecord {
    /// A test seen for the first time.
    pub fn new(loop_name: &str, spec: TestSpec, origin: Origin) -> Self {
        TestRecord {
            loop_name: loop_name.to_string(),
            spec,
            origin,
            order: 0,
            status: TestStatus::Pending,
            attempts: 0,
            counted_attempts: 0,
            last_outcome: None,
            blocked_by: Vec::new(),
            reason: None,
            commit: None,
            updated_at: Utc::now(),
            diagnosis: None,
            heal_strategy: None,
            heal_attempts: 0,
            heal_cost_usd: 0.0,
        }
    }
}

/// The agent's process group, recorded before it may do anything, so that a later start can
/// reap it after a crash without ever killing a process loopd did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessRecord {
    /// Leader pid (equal to the process group id).
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot when the leader started.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when the leader was spawned.
    pub boot_id: String,
}

/// One agent run on one test, then loopd's own run of verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptRecord {
    /// The loop.
    pub loop_name: String,
    /// The test.
    pub test_id: String,
    /// 1 for the test's first attempt, then 2, ...
    pub number: u32,
    /// How it ended; `None` while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Whether it counted toward `max_attempts`.
    #[serde(default)]
    pub counted: bool,
    /// The monitor ended the agent (`stalled` or `timed_out`), whatever the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed: Option<Killed>,
    /// When the agent was spawned.
    pub started_at: DateTime<Utc>,
    /// When the outcome was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time of the whole attempt (agent and verify), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The agent's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the agent, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    /// Verify's exit code (`None` when it did not run or overran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_exit: Option<i32>,
    /// The last lines of verify's output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verify_tail: String,
    /// The first lines of verify's output, kept only when there was more than `verify_tail`
    /// holds (otherwise the tail begins with them): where a failure usually says what broke.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verify_head: String,
    /// The last lines of the agent's output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_tail: String,
    /// One sentence on why the outcome is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Cost in US dollars: the agent's own figure, else its tokens at the fleet file's
    /// `[pricing]`; 0 when unknown (then `cost_unknown` says so).
    #[serde(default)]
    pub cost_usd: f64,
    /// The cost of this attempt is not known: the agent reported none, and its tokens (if
    /// any) had no `[pricing."<model>"]` entry to be priced by. `cost_usd` is 0 then, and
    /// totals leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cost_unknown: bool,
    /// Input tokens reported by the agent (cached ones included).
    #[serde(default)]
    pub input_tokens: u64,
    /// Of the input tokens, those the agent reported as read from the provider's cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// Output tokens reported by the agent.
    #[serde(default)]
    pub output_tokens: u64,
    /// The agent's own summary of what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The transcript file (everything the agent printed).
    pub transcript: PathBuf,
    /// The checkpoint commit a pass produced, or the ref commit that keeps a failure's diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Hash of the normalised verify output of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The agent's process group while it may be alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
    /// The lane the attempt ran in: 0 for a loop with one lane (the workdir itself), else the
    /// number of its worktree under `<state_dir>/lanes/<loop>/`. Records older than lanes say 0.
    #[serde(default)]
    pub lane: u32,
    /// The checkpoint commit the attempt started from (`None` with checkpoints off, and in
    /// records older than lanes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Why a `conflict` did not merge: what the next attempt's prompt tells the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<MergeConflict>,
}

/// Why a lane's pass did not merge onto the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct MergeConflict {
    /// The files both the pass and the checkpoint changed (empty when the merge applied and
    /// the re-verify failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The tests merged since the attempt's base, whose work it met.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_tests: Vec<String>,
    /// The test whose verify failed on the merged tree, when that is why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_verify_of: Option<String>,
}

/// For `skip_serializing_if`: a count that is 0 is left out.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AttemptRecord {
    /// An attempt that starts now: no outcome, nothing measured yet.
    pub fn started(loop_name: &str, test_id: &str, number: u32, transcript: PathBuf) -> Self {
        AttemptRecord {
            loop_name: loop_name.to_string(),
            test_id: test_id.to_string(),
            number,
            outcome: None,
            counted: false,
            killed: None,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            exit_code: None,
            exit_signal: None,
            verify_exit: None,
            verify_tail: String::new(),
            verify_head: String::new(),
            output_tail: String::new(),
            reason: None,
            cost_usd: 0.0,
            cost_unknown: false,
            input_tokens: 0,
            cached_input_tokens: 0,
            output_tokens: 0,
            summary: None,
            transcript,
            commit: None,
            fingerprint: None,
            process: None,
            lane: 0,
            base: None,
            conflict: None,
        }
    }
}

/// How many of verify's first lines the views show of a failed attempt.
pub const WHY_LINES: usize = 3;

impl AttemptRecord {
    /// The first `n` non-empty lines of verify's output (from `verify_head` when the tail lost
    /// them), trimmed at the end: what a person reads first to learn why it failed.
    pub fn verify_first_lines(&self, n: usize) -> Vec<&str> {
        let text = if self.verify_head.is_empty() {
            &self.verify_tail
        } else {
            &self.verify_head
        };
        text.lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .take(n)
            .collect()
    }
}

/// What happened, as published to the journal, SSE, webhooks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A loop changed state.
    LoopState,
    /// An attempt started.
    AttemptStarted,
    /// An attempt ended (its outcome is in the data).
    AttemptFinished,
    /// A test passed.
    TestPassed,
    /// A test failed for good.
    TestFailed,
    /// A test became blocked.
    TestBlocked,
    /// A test became runnable again or was reset.
    TestChanged,
    /// Something a person should know about.
    Alert,
    /// A person gave or cleared a hint (`data.hint`: the hint given; `data.cleared`: true when
    /// it was removed).
    Hint,
    /// The scheduled morning report (`report_every`): `data` is the report.
    Report,
    /// A lane's pass moved through its loop's merge queue (queued, merging, merged, conflict).
    Merge,
}

/// One entry of the event journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Monotonic id (0 until the store assigns one).
    pub id: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// The loop it concerns.
    pub loop_name: String,
    /// The test it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    /// The attempt number it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A sentence for people.
    pub message: String,
    /// Details for programs.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Event {
    /// An event about a loop (the store assigns the id).
    pub fn new(kind: EventKind, loop_name: &str, message: impl Into<String>) -> Self {
        Event {
            id: 0,
            at: Utc::now(),
            kind,
            loop_name: loop_name.to_string(),
            test_id: None,
            attempt: None,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// The same event about one test (and attempt).
    pub fn about(mut self, test_id: &str, attempt: Option<u32>) -> Self {
        self.test_id = Some(test_id.to_string());
        self.attempt = attempt;
        self
    }

    /// The same event with details for programs.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

#[cfg(test)]
mod reason_tests {
    use super::LoopReason;

    /// Every reason is stored as the string loopd always stored, and read back as itself.
    #[test]
    fn loop_reasons_keep_their_stored_strings() {
        let rows = [
            (LoopReason::ByUser, "by_user", "by_user"),
            (LoopReason::OutOfCredits, "out_of_credits", "out_of_credits"),
            (
                LoopReason::BudgetExhausted,
                "budget_exhausted",
                "budget_exhausted",
            ),
            (
                LoopReason::AgentUnavailable,
                "agent_unavailable",
                "agent_unavailable",
            ),
            (LoopReason::Interrupted, "interrupted", "interrupted"),
            (
                LoopReason::CheckpointFailed,
                "checkpoint_failed",
                "checkpoint_failed",
            ),
            (
                LoopReason::WorkdirBroken,
                "workdir_broken",
                "workdir_broken",
            ),
            (
                LoopReason::RemovedFromConfig,
                "removed_from_config",
                "removed_from_config",
            ),
            (
                LoopReason::RestartIntensity("6 restarts within 1m; last error: boom".into()),
                "restart_intensity: 6 restarts within 1m; last error: boom",
                "restart_intensity",
            ),
            (
                LoopReason::Crashed("invalid tests file:\n/tests/0: missing `id`".into()),
                "invalid tests file:\n/tests/0: missing `id`",
                "crashed",
            ),
        ];
        for (reason, stored, code) in rows {
            let json = serde_json::to_value(&reason).unwrap();
            assert_eq!(json, serde_json::Value::String(stored.into()), "{reason:?}");
            let back: LoopReason = serde_json::from_value(json).unwrap();
            assert_eq!(back, reason);
            assert_eq!(reason.code(), code);
            assert!(!reason.message().is_empty(), "{reason:?}");
            assert_eq!(
                reason.is_hold(),
                matches!(
                    reason,
                    LoopReason::CheckpointFailed | LoopReason::WorkdirBroken
                )
            );
        }
        // A code is matched whole: a crash message that merely starts like one stays a message.
        assert_eq!(
            LoopReason::parse("by_user or not"),
            LoopReason::Crashed("by_user or not".into())
        );
        assert_eq!(
            LoopReason::parse("restart_intensity_x"),
            LoopReason::Crashed("restart_intensity_x".into())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_counts_only_after_a_conflict() {
        let with = |outcomes: &[Outcome]| -> Vec<AttemptRecord> {
            outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let mut a = AttemptRecord::started("l", "t", i as u32 + 1, "x".into());
                    a.outcome = Some(*o);
                    a
                })
                .collect()
        };
        use Outcome::*;
        let table: &[(&[Outcome], bool)] = &[
            (&[], false),
            (&[Failed], false),
            (&[Conflict], true),
            (&[Conflict, Interrupted], true),
            (&[Conflict, Failed], false),
            (&[Conflict, Conflict], true),
            (&[Interrupted], false),
        ];
        for (earlier, counts) in table {
            assert_eq!(
                Conflict.counts_after(true, &with(earlier)),
                *counts,
                "after {earlier:?}"
            );
        }
        // Every other outcome counts as it always did, whatever came before.
        for o in [Passed, Failed, Stalled, ApiError, Regression] {
            assert_eq!(o.counts_after(true, &with(&[Conflict])), o.counts(true));
            assert_eq!(o.counts_after(false, &with(&[])), o.counts(false));
        }
    }

    #[test]
    fn an_attempt_recorded_before_lanes_reads_as_lane_zero_without_a_base() {
        let old = r#"{"loop_name": "a", "test_id": "t", "number": 2,
            "started_at": "2026-01-01T00:00:00Z", "transcript": "/x/transcript.log"}"#;
        let record: AttemptRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.lane, record.base.as_deref()), (0, None));
        let mut new = record.clone();
        new.lane = 3;
        new.base = Some("abc".into());
        let back: AttemptRecord =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!((back.lane, back.base.as_deref()), (3, Some("abc")));
    }
}
