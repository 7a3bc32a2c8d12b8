//! The ledger against the workdirs' git history.
//!
//! Every pass leaves a commit with `Loopd-Test`, `Loopd-Attempt` and `Loopd-Cost` trailers on
//! the loop's branch. That history outlives the store, so it tells two things apart that an
//! empty store alone cannot: a loop that never ran, and a loop whose ledger was lost (the store
//! and its generation record both deleted, by an agent or by hand). The first starts from
//! nothing; the second is refused ([`forgotten_loops`]) until `loopd recover` has rebuilt what
//! the history holds ([`recover_loop`]): the passed tests, their commits and the cost of the
//! passing attempt. Everything else is gone and is said to be.

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;

use crate::config::{self, LoopConfig};
use crate::git::Workdir;
use crate::model::{
    AttemptRecord, Event, EventKind, LoopRecord, Origin, Outcome, TestRecord, TestStatus,
};
use crate::runtime::AttemptPaths;
use crate::store::{Batch, Store, StoreError};

/// What the store does not hold and no rebuild can bring back, for `loopd recover` to say.
pub const NOT_RECOVERABLE: &[&str] = &[
    "attempts that did not pass: their outcomes, outputs, fingerprints, diagnoses and costs \
     (every test that has not passed starts with a full max_attempts budget)",
    "the passing attempts' durations, tokens, exit codes and summaries (only their number, \
     cost and commit are in the trailers)",
    "states a person set (paused, stopped), tests set aside (skipped) or reset after they passed",
    "tests injected and loops created through the API (neither is in the fleet's files)",
    "lessons, the event journal and the webhook delivery log",
];

/// Names of the loops of `loops` that `store` knows nothing about (no loop record, no test)
/// while their workdir's history holds loopd's pass commits: their ledger was lost. `None` for
/// the store means there is no store at all. A workdir git cannot read is left to the checks
/// of the start-up, which name what is wrong with it.
pub async fn forgotten_loops(
    store: Option<&Store>,
    loops: &[LoopConfig],
) -> Result<Vec<String>, StoreError> {
    let mut forgotten = Vec::new();
    for lp in loops {
        if let Some(store) = store {
            if store.get_loop(&lp.name)?.is_some() || !store.list_tests(&lp.name)?.is_empty() {
                continue;
            }
        }
        let Some(workdir) = lp.workdir.as_ref().filter(|w| w.is_dir()) else {
            continue;
        };
        if Workdir::new(workdir)
            .has_pass_commits()
            .await
            .unwrap_or(false)
        {
            forgotten.push(lp.name.clone());
        }
    }
    Ok(forgotten)
}

/// The refusal for [`forgotten_loops`]: what happened and how to recover.
pub fn forgotten_message(state_dir: &Path, names: &[String]) -> String {
    let list = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "the store at {} has no record of loop {list}, but the workdir's git history holds passes loopd committed (Loopd-Test trailers): the store and its generation record were deleted or replaced after those passes (an agent can reach the state directory), or the workdir was used by another state directory. Nothing was changed; starting now would redo every test. Run `loopd recover CONFIG` to rebuild the passed tests and their commits from that history (it says what it cannot recover)",
        state_dir.join("store").display()
    )
}

/// What [`recover_loop`] rebuilt for one loop.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Passed tests and the commit each passed in, in tests-file order.
    pub passed: Vec<(String, String)>,
    /// Tests marked pending.
    pub pending: Vec<String>,
    /// Pass commits of tests the tests file no longer names (or that were injected through
    /// the API): `(test, commit)`, not recovered.
    pub unknown: Vec<(String, String)>,
    /// Why the workdir's history could not be read, when it could not.
    pub unreadable: Option<String>,
}

/// Rebuilds `lp`'s records in `store` from its tests file and its workdir's history: tests
/// with a pass commit on HEAD's history are `passed` with that commit and its attempt (number
/// and cost from the trailers), every other test is `pending`, numbered after the attempts
/// kept under `refs/loopd/attempts/` so that none of those refs is overwritten.
pub async fn recover_loop(
    store: &Store,
    state_dir: &Path,
    lp: &LoopConfig,
) -> Result<Recovered, String> {
    let specs = config::load_tests(lp).map_err(|r| format!("its tests file:\n{r}"))?;
    let mut out = Recovered::default();
    let workdir = lp.workdir.clone().expect("the loader fills in workdir");
    let git = Workdir::new(&workdir);
    let history = async {
        let head = git.head().await?;
        Ok::<_, crate::git::GitError>((head, git.pass_commits().await?, git.attempt_refs().await?))
    };
    let (head, passes, refs) = match history.await {
        Ok(h) => h,
        Err(e) => {
            out.unreadable = Some(e.to_string());
            (None, Vec::new(), Vec::new())
        }
    };
    // Newest first: a test that passed again after a rollback keeps its latest pass.
    let mut newest: HashMap<&str, &crate::git::PassCommit> = HashMap::new();
    for p in &passes {
        newest.entry(p.test_id.as_str()).or_insert(p);
    }
    let kept: HashMap<&str, u32> = refs.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    let mut batch = Batch::default();
    for (order, spec) in specs.iter().enumerate() {
        let id = spec.id.as_str();
        let mut t = TestRecord::new(&lp.name, spec.clone(), Origin::File);
        t.order = order as u32;
        t.attempts = kept.get(id).copied().unwrap_or(0);
        match newest.remove(id) {
            Some(p) => {
                let why = format!(
                    "recovered by `loopd recover` from commit {}",
                    short(&p.commit)
                );
                t.status = TestStatus::Passed;
                t.commit = Some(p.commit.clone());
                t.last_outcome = Some(Outcome::Passed);
                t.attempts = t.attempts.max(p.attempt);
                t.reason = Some(why.clone());
                let mut a = AttemptRecord::started(
                    &lp.name,
                    id,
                    p.attempt,
                    AttemptPaths::under(state_dir, &lp.name, id, p.attempt).transcript,
                );
                a.outcome = Some(Outcome::Passed);
                a.started_at = p.at;
                a.finished_at = Some(p.at);
                a.verify_exit = Some(0);
                a.cost_usd = p.cost_usd;
                a.commit = Some(p.commit.clone());
                a.reason = Some(why);
                batch.attempts.push(a);
                out.passed.push((id.to_string(), p.commit.clone()));
            }
            None => out.pending.push(id.to_string()),
        }
        batch.tests.push(t);
    }
    // What is left passed in git but is not in the tests file: say so, keep nothing.
    let mut unknown: Vec<_> = newest
        .into_values()
        .map(|p| (p.test_id.clone(), p.commit.clone()))
        .collect();
    unknown.sort();
    out.unknown = unknown;
    // Idle: the next run boots it like a loop it has not seen start.
    let mut record = LoopRecord::new(&lp.name);
    record.checkpoint = head;
    record.priority = Some(lp.priority);
    record.model = lp.model.clone();
    batch.loops.push(record);
    batch.events.push(
        Event::new(
            EventKind::Alert,
            &lp.name,
            format!(
                "ledger rebuilt from git history by `loopd recover`: {} passed, {} pending",
                out.passed.len(),
                out.pending.len()
            ),
        )
        .with_data(serde_json::json!({"reason": "ledger_recovered"})),
    );
    store.apply(batch).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The first 10 characters of a commit id.
fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// When a store was set aside by `loopd recover`: a name beside it that sorts by time.
pub fn set_aside_name(now: chrono::DateTime<Utc>) -> String {
    format!("store.lost-{}", now.format("%Y%m%dT%H%M%SZ"))
}
