//! The fleet view's rows, kept per loop and reused while the store says nothing about the loop
//! changed ([`Store::loop_version`]), like the API's view cache: a page of 1,000 idle loops
//! costs a key scan and a sort, not a decode of their records. A row is only what the fleet
//! table shows (no attempt history), so it is small and computed from the loop record, its
//! test records and the store's running totals. The running attempt's heartbeat is the
//! monitor's, added when the page is rendered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use loopd_actors::model::{LoopReason, LoopState, Outcome, TestStatus};
use loopd_actors::store::{Store, StoreError};
use loopd_actors::view::Progress;

/// One loop as the fleet table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The loop's name.
    pub name: String,
    /// What it is doing.
    pub state: LoopState,
    /// Why it is paused, stopped or crashed.
    pub reason: Option<LoopReason>,
    /// The test being attempted now.
    pub current_test: Option<String>,
    /// The number of the attempt running now.
    pub current_attempt: Option<u32>,
    /// When that attempt started (the heartbeat until the monitor says more).
    pub attempt_started: Option<DateTime<Utc>>,
    /// Counts of tests by status.
    pub progress: Progress,
    /// Spent so far, in US dollars.
    pub cost_usd: f64,
    /// What it may spend, when limited.
    pub budget_usd: Option<f64>,
    /// The agent's model, when configured.
    pub model: Option<String>,
    /// How its most recently changed test's last attempt ended.
    pub last_outcome: Option<Outcome>,
}

/// What a loop asks of a person, most urgent first: the fleet view's sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// A test waits for a person.
    NeedsHuman,
    /// Paused: its provider's credit balance is empty.
    OutOfCredits,
    /// Paused: it spent its budget.
    BudgetExhausted,
    /// Crashed.
    Crashed,
    /// Paused for another reason (by a person, agent unavailable, ...).
    Paused,
    /// Some of its tests failed for good.
    FailedTests,
    /// Its last attempt hit the provider's API errors: backing off.
    Backoff,
    /// Running.
    Running,
    /// Idle or stopped.
    Idle,
    /// Finished.
    Finished,
}

impl Need {
    /// Every need, in order, with the word `?state=` takes and a label.
    pub const ALL: [(Need, &'static str, &'static str); 10] = [
        (Need::NeedsHuman, "needs_human", "needs a person"),
        (Need::OutOfCredits, "out_of_credits", "out of credits"),
        (
            Need::BudgetExhausted,
            "budget_exhausted",
            "budget exhausted",
        ),
        (Need::Crashed, "crashed", "crashed"),
        (Need::Paused, "paused", "paused"),
        (Need::FailedTests, "failed", "failed tests"),
        (Need::Backoff, "backoff", "provider backoff"),
        (Need::Running, "running", "running"),
        (Need::Idle, "idle", "idle or stopped"),
        (Need::Finished, "finished", "finished"),
    ];

    /// The word of `?state=` and of the row's `data-need`.
    pub fn word(self) -> &'static str {
        Need::ALL
            .iter()
            .find(|(n, _, _)| *n == self)
            .map(|(_, w, _)| *w)
            .unwrap_or("idle")
    }

    /// Whether a person should look (everything before running).
    pub fn wants_a_person(self) -> bool {
        self < Need::Running
    }
}

impl Row {
    /// What it asks of a person.
    pub fn need(&self) -> Need {
        let reason = self.reason.as_ref();
        if self.progress.needs_human > 0 {
            Need::NeedsHuman
        } else if reason == Some(&LoopReason::OutOfCredits) {
            Need::OutOfCredits
        } else if reason == Some(&LoopReason::BudgetExhausted) {
            Need::BudgetExhausted
        } else if self.state == LoopState::Crashed {
            Need::Crashed
        } else if self.state == LoopState::Paused {
            Need::Paused
        } else if self.progress.failed > 0 {
            Need::FailedTests
        } else if self.last_outcome == Some(Outcome::ApiError) && self.state == LoopState::Running {
            Need::Backoff
        } else {
            match self.state {
                LoopState::Running => Need::Running,
                LoopState::Finished => Need::Finished,
                _ => Need::Idle,
            }
        }
    }

    /// Reads one loop's row from the store (blocking reads); `None` when it is gone.
    pub fn read(
        store: &Store,
        name: &str,
        budget_of: &dyn Fn(&loopd_actors::model::LoopRecord) -> Option<f64>,
    ) -> Result<Option<Row>, StoreError> {
        let Some(record) = store.get_loop(name)? else {
            return Ok(None);
        };
        let tests = store.list_tests(name)?;
        let spent = store.spent(name)?;
        let running = tests.iter().find(|t| t.status == TestStatus::Running);
        let attempt = match running {
            Some(t) => store
                .get_attempt(name, &t.spec.id, t.attempts)?
                .filter(|a| a.outcome.is_none()),
            None => None,
        };
        let last_outcome = tests
            .iter()
            .filter(|t| t.last_outcome.is_some())
            .max_by_key(|t| t.updated_at)
            .and_then(|t| t.last_outcome);
        Ok(Some(Row {
            name: record.name.clone(),
            state: record.state,
            reason: record.reason.clone(),
            current_test: attempt.as_ref().map(|a| a.test_id.clone()),
            current_attempt: attempt.as_ref().map(|a| a.number),
            attempt_started: attempt.as_ref().map(|a| a.started_at),
            progress: loopd_actors::view::progress(&tests),
            cost_usd: spent.cost_usd,
            budget_usd: budget_of(&record),
            model: record.model.clone(),
            last_outcome,
        }))
    }
}

/// The cache: loop name to the row and the store version it was read at.
#[derive(Debug, Default)]
pub struct RowCache {
    rows: Mutex<HashMap<String, (u64, Arc<Row>)>>,
}

impl RowCache {
    /// The rows of `names` (in that order), reading from the store only those whose loop
    /// changed since they were cached (blocking reads); loops gone since are left out.
    pub fn rows(
        &self,
        store: &Store,
        names: &[String],
        budget_of: &dyn Fn(&loopd_actors::model::LoopRecord) -> Option<f64>,
    ) -> Result<Vec<Arc<Row>>, StoreError> {
        // Versions first: a write landing after them moves them on, so a row cached below
        // can only be older than its label, and is read again next time.
        let versions = store.loop_versions(names);
        let mut out = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        {
            let rows = self.lock();
            for (i, (name, version)) in names.iter().zip(&versions).enumerate() {
                match rows.get(name) {
                    Some((v, row)) if v == version => out.push(Some(row.clone())),
                    _ => {
                        out.push(None);
                        missing.push(i);
                    }
                }
            }
        }
        for i in missing {
            let name = &names[i];
            match Row::read(store, name, budget_of)? {
                Some(row) => {
                    let row = Arc::new(row);
                    self.lock().insert(name.clone(), (versions[i], row.clone()));
                    out[i] = Some(row);
                }
                None => {
                    self.lock().remove(name);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Arc<Row>)>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sorts rows so that what needs a person comes first, then by name.
pub fn sort(rows: &mut [Arc<Row>]) {
    rows.sort_by(|a, b| a.need().cmp(&b.need()).then_with(|| a.name.cmp(&b.name)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: LoopState, reason: Option<&str>) -> Arc<Row> {
        Arc::new(Row {
            name: name.into(),
            state,
            reason: reason.map(LoopReason::parse),
            current_test: None,
            current_attempt: None,
            attempt_started: None,
            progress: Progress::default(),
            cost_usd: 0.0,
            budget_usd: None,
            model: None,
            last_outcome: None,
        })
    }

    #[test]
    fn a_row_is_read_again_only_when_its_loop_changed() {
        use loopd_actors::model::LoopRecord;
        use loopd_actors::store::Batch;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let write = |r: LoopRecord| {
            store
                .write(Batch {
                    loops: vec![r],
                    ..Batch::default()
                })
                .unwrap();
        };
        write(LoopRecord::new("a"));
        write(LoopRecord::new("b"));
        let cache = RowCache::default();
        let names = vec!["a".to_string(), "b".to_string(), "gone".to_string()];
        let budget = |_: &LoopRecord| Some(5.0);
        let first = cache.rows(&store, &names, &budget).unwrap();
        assert_eq!(first.len(), 2, "a loop that is not in the store has no row");
        assert_eq!(first[0].budget_usd, Some(5.0));
        let again = cache.rows(&store, &names, &budget).unwrap();
        assert!(Arc::ptr_eq(&first[0], &again[0]) && Arc::ptr_eq(&first[1], &again[1]));
        let mut paused = LoopRecord::new("b");
        paused.state = LoopState::Paused;
        paused.reason = Some(LoopReason::OutOfCredits);
        write(paused);
        let after = cache.rows(&store, &names, &budget).unwrap();
        assert!(Arc::ptr_eq(&first[0], &after[0]), "a did not change");
        assert_eq!(after[1].state, LoopState::Paused);
        assert_eq!(after[1].need(), Need::OutOfCredits);
    }

    #[test]
    fn what_needs_a_person_comes_first() {
        let mut human = (*row("z-human", LoopState::Running, None)).clone();
        human.progress.needs_human = 1;
        let mut failed = (*row("f-failed", LoopState::Finished, None)).clone();
        failed.progress.failed = 2;
        let mut rows = vec![
            row("a-finished", LoopState::Finished, None),
            row("b-running", LoopState::Running, None),
            Arc::new(failed),
            row("c-paused", LoopState::Paused, Some("by_user")),
            row("d-crashed", LoopState::Crashed, Some("restart_intensity")),
            row("e-credits", LoopState::Paused, Some("out_of_credits")),
            row("g-budget", LoopState::Paused, Some("budget_exhausted")),
            Arc::new(human),
            row("h-idle", LoopState::Idle, None),
        ];
        sort(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "z-human",
                "e-credits",
                "g-budget",
                "d-crashed",
                "c-paused",
                "f-failed",
                "b-running",
                "h-idle",
                "a-finished"
            ]
        );
    }
}
