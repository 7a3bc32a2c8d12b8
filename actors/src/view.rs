//! The JSON shapes that `status --json`, `attempts --json`, `export` and the API print.
//!
//! `status --json` is `{"loops": [LOOP]}` where LOOP is exactly what `GET /api/loops/:id`
//! returns (DESIGN.md, Contracts).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{
    AttemptRecord, LoopReason, LoopRecord, LoopState, Origin, Outcome, TestRecord, TestStatus,
};
use crate::store::{Store, StoreError};
use crate::tests_file::TestSpec;

mod detail;
mod insights;
mod report;

pub use detail::{LoopDetail, LoopSettings};
pub use insights::{insights, InsightsDoc};
pub use report::{parse_since, report, LoopReport, ReportDoc, ReportTotals};

/// The version `export` writes.
pub const EXPORT_VERSION: &str = "1";

/// `loopd status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusDoc {
    /// Every loop in the store.
    pub loops: Vec<LoopView>,
}

/// Counts of a loop's tests by status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Progress {
    /// Tests that passed.
    pub passed: usize,
    /// Tests counted in `total` (every test not `removed`).
    pub total: usize,
    /// Tests that failed for good.
    pub failed: usize,
    /// Tests held back by a dependency.
    pub blocked: usize,
    /// Tests set aside.
    pub skipped: usize,
    /// Tests waiting for a person.
    pub needs_human: usize,
    /// Tests not attempted to the end yet (pending or running).
    pub pending: usize,
}

/// One loop: its record, progress, and tests with their attempts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoopView {
    /// The loop's name.
    pub name: String,
    /// What it is doing.
    pub status: LoopState,
    /// Why it is paused, stopped or crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reason: Option<LoopReason>,
    /// When it last started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The test being attempted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_test: Option<String>,
    /// The number of the attempt running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_attempt: Option<u32>,
    /// The running agent's process group leader, when an attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// When the running agent last printed a line (from the monitor; only when a daemon answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Scheduling priority (1 is highest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// What the loop may use.
    pub resources: Resources,
    /// The monitor's view of the running attempt (seconds since its last output, whether it
    /// looks stuck); only when a daemon answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<crate::monitor::AttemptHealth>,
    /// Counts of tests by status.
    pub progress: Progress,
    /// Attempts recorded for this loop.
    pub attempts: usize,
    /// Cost of all its attempts, in US dollars.
    pub cost_usd: f64,
    /// The last checkpoint commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Every running attempt with its lane (a loop with `lanes` above 1 runs several; lane 0
    /// is the workdir itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<LaneView>,
    /// The merge queue of a loop with lanes: passes waiting, the one merging, the last ones
    /// merged or in conflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_queue: Vec<crate::model::MergeEntry>,
    /// The guidance from a person its next prompts carry (`loopd hint LOOP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<crate::hints::Hint>,
    /// Its tests, in the tests file's order.
    pub tests: Vec<TestView>,
}

/// An attempt running in one of a loop's lanes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LaneView {
    /// The lane (0: the workdir).
    pub lane: u32,
    /// The test.
    pub test_id: String,
    /// The attempt's number.
    pub attempt: u32,
    /// The checkpoint it started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// When its agent was spawned.
    pub started_at: DateTime<Utc>,
    /// Its agent's process group leader, once recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// What a loop may use (the critique's registry field).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// The agent's model, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Attempts it runs at once: 1 (one attempt at a time in its workdir).
    pub max_concurrent: u32,
}

/// One test with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TestView {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Where it is in its life.
    pub status: TestStatus,
    /// Why, where there is more to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What holds it back, when blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    /// The tests it depends on (`other-loop:ID` across loops), as in the tests file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Attempts that counted toward `max_attempts`.
    pub counted_attempts: u32,
    /// Its checkpoint commit, when passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The healer's diagnosis, once `max_attempts` was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<crate::healer::Diagnosis>,
    /// The healer's current strategy, while it heals this test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_strategy: Option<crate::healer::HealStrategy>,
    /// The guidance from a person this test's next prompts carry (`loopd hint LOOP TEST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<crate::hints::Hint>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// `GET /api/loops?view=summary` and `loopd ls --json`: every loop, each test with its last
/// attempt only.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SummaryDoc {
    /// Every loop in the store.
    pub loops: Vec<LoopSummary>,
}

/// One loop in the summary view: a [`LoopView`] whose tests carry counts and their last attempt
/// instead of every attempt, so that its size does not grow with the history. The other
/// attempts are at `GET /api/loops/:id/tests/:test/attempts`, a page at a time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoopSummary {
    /// The loop's name.
    pub name: String,
    /// What it is doing.
    pub status: LoopState,
    /// Why it is paused, stopped or crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reason: Option<LoopReason>,
    /// When it last started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The test being attempted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_test: Option<String>,
    /// The number of the attempt running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_attempt: Option<u32>,
    /// The running agent's process group leader, when an attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// When the running agent last printed a line (from the monitor; only when a daemon answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Scheduling priority (1 is highest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// What the loop may use.
    pub resources: Resources,
    /// The monitor's view of the running attempt; only when a daemon answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<crate::monitor::AttemptHealth>,
    /// Counts of tests by status.
    pub progress: Progress,
    /// Attempts recorded for this loop.
    pub attempts: usize,
    /// Cost of all its attempts, in US dollars.
    pub cost_usd: f64,
    /// The last checkpoint commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Every running attempt with its lane (a loop with `lanes` above 1 runs several; lane 0
    /// is the workdir itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<LaneView>,
    /// The merge queue of a loop with lanes: passes waiting, the one merging, the last ones
    /// merged or in conflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_queue: Vec<crate::model::MergeEntry>,
    /// Its tests, in the tests file's order.
    pub tests: Vec<TestSummary>,
}

/// One test in the summary view: status, counts and the last attempt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TestSummary {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Where it is in its life.
    pub status: TestStatus,
    /// Why, where there is more to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What holds it back, when blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    /// The tests it depends on (`other-loop:ID` across loops), as in the tests file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Attempts recorded.
    pub attempts: usize,
    /// Attempts that counted toward `max_attempts`.
    pub counted_attempts: u32,
    /// Its checkpoint commit, when passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The healer's diagnosis, once `max_attempts` was reached (bounded: runs of attempt
    /// numbers, a few repeated failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<crate::healer::Diagnosis>,
    /// The healer's current strategy, while it heals this test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_strategy: Option<crate::healer::HealStrategy>,
    /// The newest attempt, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptRecord>,
}

impl From<LoopView> for LoopSummary {
    fn from(v: LoopView) -> LoopSummary {
        LoopSummary {
            name: v.name,
            status: v.status,
            reason: v.reason,
            started_at: v.started_at,
            current_test: v.current_test,
            current_attempt: v.current_attempt,
            pid: v.pid,
            last_heartbeat: v.last_heartbeat,
            priority: v.priority,
            resources: v.resources,
            heartbeat: v.heartbeat,
            progress: v.progress,
            attempts: v.attempts,
            cost_usd: v.cost_usd,
            checkpoint: v.checkpoint,
            running: v.running,
            merge_queue: v.merge_queue,
            tests: v.tests.into_iter().map(TestSummary::from).collect(),
        }
    }
}

impl From<TestView> for TestSummary {
    fn from(mut t: TestView) -> TestSummary {
        TestSummary {
            attempts: t.attempts.len(),
            last_attempt: t.attempts.pop(),
            id: t.id,
            title: t.title,
            status: t.status,
            reason: t.reason,
            blocked_by: t.blocked_by,
            depends_on: t.depends_on,
            counted_attempts: t.counted_attempts,
            commit: t.commit,
            diagnosis: t.diagnosis,
            heal_strategy: t.heal_strategy,
        }
    }
}

/// `GET /api/loops/:id/tests/:test/attempts`: one page of a test's attempts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AttemptPage {
    /// The attempts of this page, by number.
    pub attempts: Vec<AttemptRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `loopd attempts --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AttemptsDoc {
    /// The attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// `loopd export`: the tests files plus progress.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportDoc {
    /// [`EXPORT_VERSION`].
    pub version: String,
    /// Every loop.
    pub loops: Vec<ExportLoop>,
}

/// One loop in an export.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportLoop {
    /// Its name.
    pub name: String,
    /// Its state.
    pub status: LoopState,
    /// Why, for paused, stopped and crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reason: Option<LoopReason>,
    /// Its tests: each a tests-file entry plus progress.
    pub tests: Vec<ExportTest>,
}

/// A tests-file entry plus its progress.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportTest {
    /// The definition, exactly as in a tests file.
    #[serde(flatten)]
    pub spec: TestSpec,
    /// Where it is in its life.
    pub status: TestStatus,
    /// Where it came from.
    pub origin: Origin,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts that counted.
    pub counted_attempts: u32,
    /// How the last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// Its checkpoint commit, when passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Counts tests by status.
pub fn progress(tests: &[TestRecord]) -> Progress {
    Progress::count(tests.iter().map(|t| t.status))
}

impl Progress {
    /// The counts of tests with these statuses (`removed` ones not counted).
    pub fn count(statuses: impl IntoIterator<Item = TestStatus>) -> Progress {
        let mut p = Progress::default();
        for status in statuses {
            match status {
                TestStatus::Removed => continue,
                TestStatus::Passed => p.passed += 1,
                TestStatus::Failed => p.failed += 1,
                TestStatus::Blocked => p.blocked += 1,
                TestStatus::Skipped => p.skipped += 1,
                TestStatus::NeedsHuman => p.needs_human += 1,
                TestStatus::Pending | TestStatus::Running => p.pending += 1,
            }
            p.total += 1;
        }
        p
    }
}

/// One loop as `GET /api/loops/:id` shows it.
pub fn loop_view(store: &Store, record: &LoopRecord) -> Result<LoopView, StoreError> {
    let tests = store.list_tests(&record.name)?;
    let attempts = store.list_attempts(&record.name, None)?;
    let running = attempts.iter().find(|a| a.outcome.is_none());
    let mut views: Vec<TestView> = tests
        .iter()
        .map(|t| TestView {
            id: t.spec.id.clone(),
            title: t.spec.title.clone(),
            status: t.status,
            reason: t.reason.clone(),
            blocked_by: t.blocked_by.clone(),
            depends_on: t.spec.depends_on.clone(),
            counted_attempts: t.counted_attempts,
            commit: t.commit.clone(),
            diagnosis: t.diagnosis.clone(),
            heal_strategy: t.heal_strategy.clone(),
            hint: None,
            attempts: Vec::new(),
        })
        .collect();
    // A map from id to view: a search of the tests per attempt cost tests x attempts.
    let index: std::collections::HashMap<&str, usize> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| (t.spec.id.as_str(), i))
        .collect();
    for a in &attempts {
        if let Some(&i) = index.get(a.test_id.as_str()) {
            views[i].attempts.push(a.clone());
        }
    }
    let mut loop_hint = None;
    for h in store.hints_of(&record.name)? {
        match h.test_id.as_deref().map(|t| index.get(t)) {
            None => loop_hint = Some(h),
            Some(Some(&i)) => views[i].hint = Some(h),
            // A hint for a test the loop no longer has waits for it to come back.
            Some(None) => {}
        }
    }
    Ok(LoopView {
        name: record.name.clone(),
        status: record.state,
        reason: record.reason.clone(),
        started_at: record.started_at,
        current_test: running.map(|a| a.test_id.clone()),
        current_attempt: running.map(|a| a.number),
        pid: running.and_then(|a| a.process.as_ref()).map(|p| p.pid),
        last_heartbeat: None,
        priority: record.priority,
        resources: Resources {
            model: record.model.clone(),
            max_concurrent: 1,
        },
        heartbeat: None,
        progress: progress(&tests),
        attempts: attempts.len(),
        cost_usd: attempts.iter().fold(0.0, |sum, a| sum + a.cost_usd),
        checkpoint: record.checkpoint.clone(),
        running: attempts
            .iter()
            .filter(|a| a.outcome.is_none())
            .map(|a| LaneView {
                lane: a.lane,
                test_id: a.test_id.clone(),
                attempt: a.number,
                base: a.base.clone(),
                started_at: a.started_at,
                pid: a.process.as_ref().map(|p| p.pid),
            })
            .collect(),
        merge_queue: record.merge_queue.clone(),
        hint: loop_hint,
        tests: views,
    })
}

/// Every loop of the store.
pub fn status(store: &Store) -> Result<StatusDoc, StoreError> {
    let loops = store
        .list_loops()?
        .iter()
        .map(|r| loop_view(store, r))
        .collect::<Result<_, _>>()?;
    Ok(StatusDoc { loops })
}

/// Every loop of the store, in the summary view.
pub fn summary(store: &Store) -> Result<SummaryDoc, StoreError> {
    let loops = store
        .list_loops()?
        .iter()
        .map(|r| loop_view(store, r).map(LoopSummary::from))
        .collect::<Result<_, _>>()?;
    Ok(SummaryDoc { loops })
}

/// The whole state as tests files plus progress.
pub fn export(store: &Store) -> Result<ExportDoc, StoreError> {
    let mut loops = Vec::new();
    for r in store.list_loops()? {
        let tests = store
            .list_tests(&r.name)?
            .into_iter()
            .map(|t| ExportTest {
                spec: t.spec,
                status: t.status,
                origin: t.origin,
                attempts: t.attempts,
                counted_attempts: t.counted_attempts,
                last_outcome: t.last_outcome,
                commit: t.commit,
            })
            .collect();
        loops.push(ExportLoop {
            name: r.name,
            status: r.state,
            reason: r.reason,
            tests,
        });
    }
    Ok(ExportDoc {
        version: EXPORT_VERSION.into(),
        loops,
    })
}
