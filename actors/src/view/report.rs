//! `loopd report` and `GET /api/report`: the morning report. What each loop got done in a
//! period (passes with their commits, failures with their diagnoses, tests waiting for a person,
//! tests set aside), what its attempts cost and how they ended, its slowest tests and most
//! frequent failures, the alerts raised, and what the fleet is doing now.
//!
//! An attempt belongs to the period when it finished in it (one still running, when it started
//! in it): the period's cost and time are those attempts' only, beside the loop's totals. A
//! test's verdict belongs to it when its record last changed in it. The end of the period is
//! an argument, not the clock, so that a scheduled report covers exactly the time since the
//! last one and a test can fix every time it prints.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::healer::{self, FailurePattern, OutcomeCount};
use crate::hints::Hint;
use crate::model::{
    AttemptRecord, EventKind, LoopReason, LoopRecord, LoopState, TestRecord, TestStatus,
};
use crate::store::{Store, StoreError};

use super::{progress, Progress};

/// The slowest tests and failure patterns a loop's report lists.
const TOP: usize = 5;
/// Events read from the journal at a time, while looking for the period's alerts.
const EVENT_PAGE: usize = 1024;

/// The morning report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReportDoc {
    /// The start of the period.
    pub since: DateTime<Utc>,
    /// When the report was made: the end of the period.
    pub generated_at: DateTime<Utc>,
    /// The period's sums over every loop.
    pub totals: ReportTotals,
    /// Every loop, by name.
    pub loops: Vec<LoopReport>,
    /// Alerts of the period that concern no one loop (the scheduler's, the fleet's), or a loop
    /// no longer in the store.
    pub fleet_alerts: Vec<ReportAlert>,
}

/// The period's sums over the fleet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReportTotals {
    /// Tests that passed in the period.
    pub passed: usize,
    /// Tests that failed for good in the period.
    pub failed: usize,
    /// Tests that came to need a person in the period.
    pub needs_human: usize,
    /// Tests set aside in the period.
    pub skipped: usize,
    /// Attempts of the period.
    pub attempts: usize,
    /// What the period's attempts cost, in US dollars.
    pub cost_usd: f64,
    /// The wall time of the period's attempts, in milliseconds.
    pub duration_ms: u64,
    /// Alerts raised in the period, the fleet's own included.
    pub alerts: usize,
}

/// One loop's period.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoopReport {
    /// The loop's name.
    pub name: String,
    /// What it is doing now.
    pub now: LoopNow,
    /// Tests that passed in the period.
    pub passed: Vec<ReportPass>,
    /// Tests that failed for good in the period.
    pub failed: Vec<ReportVerdict>,
    /// Tests that came to need a person in the period.
    pub needs_human: Vec<ReportVerdict>,
    /// Tests set aside in the period.
    pub skipped: Vec<ReportVerdict>,
    /// Attempts of the period.
    pub attempts: usize,
    /// The period's attempts by how they ended, most frequent first (running ones left out).
    pub outcomes: Vec<OutcomeCount>,
    /// What the period's attempts cost, in US dollars.
    pub cost_usd: f64,
    /// The wall time of the period's attempts, in milliseconds.
    pub duration_ms: u64,
    /// Every attempt the loop ever made, the period's and earlier ones.
    pub total_attempts: usize,
    /// What every attempt of the loop cost, in US dollars.
    pub total_cost_usd: f64,
    /// The tests whose attempts took longest in the period, slowest first.
    pub slowest: Vec<SlowTest>,
    /// The period's most frequent failures.
    pub patterns: Vec<FailurePattern>,
    /// The loop's alerts of the period, oldest first.
    pub alerts: Vec<ReportAlert>,
    /// The hints a person gave that are current as the report is made: the loop's, then its
    /// tests', with who gave them and when.
    pub hints: Vec<Hint>,
}

/// What a loop is doing as the report is made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoopNow {
    /// Its state.
    pub status: LoopState,
    /// Why it is paused, stopped or crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reason: Option<LoopReason>,
    /// The test being attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_test: Option<String>,
    /// The number of the attempt running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_attempt: Option<u32>,
    /// When the attempt running started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// Its tests by status.
    pub progress: Progress,
}

/// A test that passed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReportPass {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The attempt that passed.
    pub attempt: u32,
    /// Its checkpoint commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When it passed.
    pub at: DateTime<Utc>,
}

/// A test that failed, needs a person, or was skipped.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReportVerdict {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Why, as the test's record says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The healer's diagnosis, in a paragraph, when it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// When its record last changed.
    pub at: DateTime<Utc>,
}

/// A test's time in the period.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SlowTest {
    /// Its id.
    pub id: String,
    /// The wall time of its attempts in the period, in milliseconds.
    pub duration_ms: u64,
    /// Its attempts in the period.
    pub attempts: usize,
}

/// An alert event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReportAlert {
    /// The loop it concerns; in `fleet_alerts` only, for a loop no longer in the store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub loop_name: String,
    /// When it was raised.
    pub at: DateTime<Utc>,
    /// The test it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    /// What it says.
    pub message: String,
}

/// The report of the period from `since` to `until` (now, but for a test or a schedule).
pub fn report(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<ReportDoc, StoreError> {
    let period = Period { since, until };
    let mut alerts = alerts_in(store, period)?;
    let mut loops = Vec::new();
    for record in store.list_loops()? {
        let mut mine = alerts.remove(&record.name).unwrap_or_default();
        for a in &mut mine {
            a.loop_name.clear();
        }
        loops.push(loop_report(store, &record, period, mine)?);
    }
    let fleet_alerts: Vec<ReportAlert> = alerts.into_values().flatten().collect();
    let mut totals = ReportTotals {
        alerts: fleet_alerts.len(),
        ..ReportTotals::default()
    };
    for l in &loops {
        totals.passed += l.passed.len();
        totals.failed += l.failed.len();
        totals.needs_human += l.needs_human.len();
        totals.skipped += l.skipped.len();
        totals.attempts += l.attempts;
        totals.cost_usd += l.cost_usd;
        totals.duration_ms += l.duration_ms;
        totals.alerts += l.alerts.len();
    }
    Ok(ReportDoc {
        since,
        generated_at: until,
        totals,
        loops,
        fleet_alerts,
    })
}

/// The report's period: from `since` to `until`, both included.
#[derive(Debug, Clone, Copy)]
struct Period {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Period {
    fn holds(self, t: DateTime<Utc>) -> bool {
        self.since <= t && t <= self.until
    }

    /// Whether attempt `a` ran in the period: it finished in it, or it started in it and is
    /// still running.
    fn has(self, a: &AttemptRecord) -> bool {
        self.holds(a.finished_at.unwrap_or(a.started_at))
    }
}

fn loop_report(
    store: &Store,
    record: &LoopRecord,
    within: Period,
    alerts: Vec<ReportAlert>,
) -> Result<LoopReport, StoreError> {
    let tests = store.list_tests(&record.name)?;
    let all = store.list_attempts(&record.name, None)?;
    let running = all.iter().find(|a| a.outcome.is_none());
    let now = LoopNow {
        status: record.state,
        reason: record.reason.clone(),
        current_test: running.map(|a| a.test_id.clone()),
        current_attempt: running.map(|a| a.number),
        attempt_started_at: running.map(|a| a.started_at),
        progress: progress(&tests),
    };
    let total_attempts = all.len();
    let total_cost_usd = all.iter().fold(0.0, |sum, a| sum + a.cost_usd);
    let period: Vec<AttemptRecord> = all.into_iter().filter(|a| within.has(a)).collect();
    let title = |id: &str| {
        tests
            .iter()
            .find(|t| t.spec.id == id)
            .map(|t| t.spec.title.clone())
            .unwrap_or_default()
    };
    let passed = period
        .iter()
        .filter(|a| a.outcome == Some(crate::model::Outcome::Passed))
        .map(|a| ReportPass {
            id: a.test_id.clone(),
            title: title(&a.test_id),
            attempt: a.number,
            commit: a.commit.clone(),
            at: a.finished_at.unwrap_or(a.started_at),
        })
        .collect();
    let verdicts = |status: TestStatus| -> Vec<ReportVerdict> {
        tests
            .iter()
            .filter(|t| t.status == status && within.holds(t.updated_at))
            .map(verdict)
            .collect()
    };
    let mut outcomes: BTreeMap<String, OutcomeCount> = BTreeMap::new();
    let mut slow: BTreeMap<&str, SlowTest> = BTreeMap::new();
    for a in &period {
        if let Some(o) = a.outcome {
            let key = serde_json::to_string(&o).unwrap_or_default();
            outcomes
                .entry(key)
                .or_insert(OutcomeCount {
                    outcome: o,
                    count: 0,
                })
                .count += 1;
        }
        let s = slow.entry(&a.test_id).or_insert_with(|| SlowTest {
            id: a.test_id.clone(),
            duration_ms: 0,
            attempts: 0,
        });
        s.duration_ms += a.duration_ms.unwrap_or(0);
        s.attempts += 1;
    }
    let mut outcomes: Vec<OutcomeCount> = outcomes.into_values().collect();
    outcomes.sort_by_key(|o| std::cmp::Reverse(o.count));
    let mut slowest: Vec<SlowTest> = slow.into_values().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.duration_ms));
    slowest.truncate(TOP);
    let mut patterns = healer::failure_patterns(&period);
    patterns.truncate(TOP);
    Ok(LoopReport {
        name: record.name.clone(),
        now,
        passed,
        failed: verdicts(TestStatus::Failed),
        needs_human: verdicts(TestStatus::NeedsHuman),
        skipped: verdicts(TestStatus::Skipped),
        attempts: period.len(),
        outcomes,
        cost_usd: period.iter().fold(0.0, |sum, a| sum + a.cost_usd),
        duration_ms: period.iter().map(|a| a.duration_ms.unwrap_or(0)).sum(),
        total_attempts,
        total_cost_usd,
        slowest,
        patterns,
        alerts,
        hints: store.hints_of(&record.name)?,
    })
}

fn verdict(t: &TestRecord) -> ReportVerdict {
    ReportVerdict {
        id: t.spec.id.clone(),
        title: t.spec.title.clone(),
        reason: t.reason.clone(),
        diagnosis: t.diagnosis.as_ref().map(|d| d.summary.clone()),
        at: t.updated_at,
    }
}

/// The alerts raised in the period, by loop (`""` for the fleet's). The journal is keyed by id,
/// not time, so it is read a page at a time from the start.
fn alerts_in(
    store: &Store,
    within: Period,
) -> Result<BTreeMap<String, Vec<ReportAlert>>, StoreError> {
    let mut by_loop: BTreeMap<String, Vec<ReportAlert>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, EVENT_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in page {
            if e.kind == EventKind::Alert && within.holds(e.at) {
                by_loop
                    .entry(e.loop_name.clone())
                    .or_default()
                    .push(ReportAlert {
                        loop_name: e.loop_name,
                        at: e.at,
                        test_id: e.test_id,
                        message: e.message,
                    });
            }
        }
    }
    Ok(by_loop)
}

/// The start of a period from `since`: a duration back from `now` (`8h`, `2d 4h`), or an RFC 3339
/// time (`2026-01-31T22:00:00Z`). The error says what was expected.
pub fn parse_since(since: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = since.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            format!(
                "expected a duration such as `8h` or `2d`, or an RFC 3339 time such as \
                 `2026-01-31T22:00:00Z`, found `{since}`"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Origin, Outcome};
    use crate::store::Batch;
    use crate::tests_file::TestSpec;

    fn failed_test(id: &str, at: DateTime<Utc>) -> (TestRecord, AttemptRecord) {
        let spec = TestSpec {
            id: id.into(),
            title: format!("test {id}"),
            spec: Some("build it".into()),
            spec_file: None,
            verify: "false".into(),
            depends_on: vec![],
            priority: None,
            timeout: None,
            tags: vec![],
            serial_group: None,
        };
        let mut a = AttemptRecord::started("lp", id, 1, "t".into());
        a.started_at = at;
        a.finished_at = Some(at);
        a.outcome = Some(Outcome::Failed);
        a.verify_tail = "error: bad sum".into();
        a.fingerprint = crate::healer::fingerprint(&a.verify_tail);
        let mut t = TestRecord::new("lp", spec, Origin::File);
        t.status = TestStatus::Failed;
        t.updated_at = at;
        t.reason = Some("max_attempts reached".into());
        t.diagnosis = Some(healer::diagnose(&t, std::slice::from_ref(&a)));
        (t, a)
    }

    #[test]
    fn a_failure_is_reported_with_its_diagnosis_in_its_period_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let old = now - chrono::Duration::hours(30);
        let (t1, a1) = failed_test("OLD", old);
        let (t2, a2) = failed_test("NEW", now);
        let mut alert = Event::new(EventKind::Alert, "", "the fleet is out of credits");
        alert.at = now;
        let mut gone = Event::new(EventKind::Alert, "gone", "a loop since forgotten crashed");
        gone.at = now;
        store
            .apply(Batch {
                loops: vec![LoopRecord::new("lp")],
                tests: vec![t1, t2],
                attempts: vec![a1, a2],
                events: vec![alert, gone],
                ..Batch::default()
            })
            .unwrap();
        let doc = report(&store, parse_since("24h", now).unwrap(), now).unwrap();
        let l = &doc.loops[0];
        assert_eq!(l.failed.len(), 1, "{l:?}");
        assert_eq!(l.failed[0].id, "NEW");
        assert!(l.failed[0]
            .diagnosis
            .as_ref()
            .unwrap()
            .contains("error: bad sum"));
        assert_eq!(l.attempts, 1);
        assert_eq!(l.patterns[0].tests, vec!["lp:NEW"]);
        assert_eq!(doc.fleet_alerts[0].message, "the fleet is out of credits");
        assert_eq!(
            doc.fleet_alerts[1].loop_name, "gone",
            "{:?}",
            doc.fleet_alerts
        );
        assert!(l.alerts.is_empty());
        assert_eq!(l.now.progress.failed, 2, "now counts every test");
    }

    #[test]
    fn cost_and_time_are_the_periods_beside_the_loops_totals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = |h: i64| {
            "2026-01-31T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::hours(h)
        };
        // Finished before, in, and after the period from hour 10 to hour 20; one running since
        // hour 12.
        let mut attempts = Vec::new();
        for (n, finished, cost) in [(1, 5, 1.0), (2, 11, 2.0), (3, 19, 4.0), (4, 21, 8.0)] {
            let (_, mut a) = failed_test("T", t(finished));
            a.number = n;
            a.cost_usd = cost;
            a.duration_ms = Some(1000 * n as u64);
            attempts.push(a);
        }
        let mut running = AttemptRecord::started("lp", "T", 5, "t".into());
        running.started_at = t(12);
        attempts.push(running);
        let (test, _) = failed_test("T", t(15));
        store
            .apply(Batch {
                loops: vec![LoopRecord::new("lp")],
                tests: vec![test],
                attempts,
                ..Batch::default()
            })
            .unwrap();
        let doc = report(&store, t(10), t(20)).unwrap();
        assert_eq!(doc.generated_at, t(20));
        let l = &doc.loops[0];
        assert_eq!(l.attempts, 3, "attempts 2, 3 and the running 5: {l:?}");
        assert_eq!(l.cost_usd, 6.0);
        assert_eq!(l.duration_ms, 5000);
        assert_eq!(l.total_attempts, 5);
        assert_eq!(l.total_cost_usd, 15.0);
        assert_eq!(l.now.current_attempt, Some(5));
        assert_eq!(l.now.attempt_started_at, Some(t(12)));
        assert_eq!(doc.totals.attempts, 3);
        assert_eq!(doc.totals.cost_usd, 6.0);
        assert_eq!(doc.totals.failed, 1);
        // The test's verdict changed at hour 15: not in a period that ended before it.
        let early = report(&store, t(0), t(14)).unwrap();
        assert!(early.loops[0].failed.is_empty());
        assert_eq!(early.loops[0].cost_usd, 3.0, "attempts 1 and 2");
    }

    #[test]
    fn since_is_a_duration_back_or_a_time() {
        let now = Utc::now();
        assert_eq!(
            parse_since("8h", now).unwrap(),
            now - chrono::Duration::hours(8)
        );
        assert_eq!(
            parse_since("2026-01-31T22:00:00+01:00", now).unwrap(),
            "2026-01-31T21:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let e = parse_since("noon", now).unwrap_err();
        assert!(e.contains("found `noon`") && e.contains("RFC 3339"), "{e}");
    }
}
