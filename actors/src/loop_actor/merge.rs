//! The merge queue of a loop with lanes (DESIGN.md, "Lanes"): a lane's pass waits in the queue
//! (kept on the loop's record, so it enters in its outcome's transaction), and one merge at a
//! time puts it onto the checkpoint:
//!
//! ```text
//! waiting ──> merging: combine (fast-forward, rebase, or merge) in the scratch worktree,
//!             the test's verify there (with `regression`, the passed tests' verifies too)
//!        ──> the combined commit recorded ──> one `update-ref` of the loop's branch that
//!            names the old checkpoint ──> merged: the test is `passed`
//!        └─> a conflict or a failed re-verify: the attempt's outcome is `conflict` (its work
//!            stays under its ref) and the test is tried again on the new checkpoint
//! ```
//!
//! The git work and the verifies run on tasks of their own, off the actor's turn, like the
//! boot's. A lane's only output is the commit under its attempt's ref: the queue reads nothing
//! else of a lane. After a crash, an entry whose combined commit is in the checkpoint's history
//! is marked merged (never merged twice); any other that was merging waits again.

use chrono::Utc;
use ractor::{ActorProcessingErr, ActorRef};

use super::cycle::{lanes, run_past};
use super::finish::{crash, exhausted};
use super::records::{dedup_last, own_history, own_tests, record_own};
use super::watch::external_snapshot;
use super::{LoopActorState, LoopMsg};
use crate::config::LoopConfig;
use crate::git::{Merge, Workdir, SCRATCH};
use crate::model::{
    Event, EventKind, MergeConflict, MergeEntry, MergeState, Outcome, TestRecord, TestStatus,
};
use crate::plan::{self, AfterOutcome};
use crate::runtime::{lanes_dir, Ctx};
use crate::store::Batch;

/// How many merged or conflicted entries the queue keeps for people to look at.
const KEPT_FINISHED: usize = 16;

/// What the combine and re-verify of a queue entry found.
#[derive(Debug)]
pub struct Checked {
    test_id: String,
    attempt: u32,
    result: Result<Combined, String>,
}

/// A combined commit ready to become the checkpoint, or why the pass does not merge.
#[derive(Debug)]
enum Combined {
    Ready {
        commit: String,
        how: &'static str,
    },
    Conflict {
        conflict: MergeConflict,
        /// The failing verify's output tail, when a re-verify failed.
        tail: String,
    },
}

/// What the checkpoint move of a queue entry did.
#[derive(Debug)]
pub struct Moved {
    test_id: String,
    attempt: u32,
    commit: String,
    /// True when the checkpoint moved; false when git refused (the branch was not at the old
    /// checkpoint any more).
    result: Result<bool, String>,
}

/// The boot's git work for lanes, off the actor's turn: the lane worktrees made to match
/// `lanes` (all removed when the loop has one lane and nothing left to merge), and the queue
/// entries a predecessor merged without recording so (their combined commit is in the history
/// of `checkpoint`).
pub(super) async fn boot_lanes(
    ctx: &Ctx,
    cfg: &LoopConfig,
    checkpoint: &str,
) -> Result<Vec<(String, u32)>, String> {
    let name = cfg.name.clone();
    let queue = ctx
        .read(move |s| s.get_loop(&name))
        .await
        .map_err(|e| e.to_string())?
        .map(|r| r.merge_queue)
        .unwrap_or_default();
    let workdir = Workdir::new(cfg.workdir.clone().expect("the loader fills in workdir"));
    let folder = lanes_dir(ctx.state_dir(), &cfg.name);
    let open = queue.iter().any(|e| e.state.is_open());
    let n = lanes(cfg);
    if n > 1 || open {
        // A queue left by a loop whose lanes were lowered to 1 still needs its scratch tree.
        workdir
            .sync_lanes(&folder, n.max(1), checkpoint)
            .await
            .map_err(|e| format!("loopd could not make the lanes of loop `{}`: {e}", cfg.name))?;
    } else if tokio::fs::metadata(&folder).await.is_ok() {
        workdir.remove_lanes(&folder).await.map_err(|e| {
            format!(
                "loopd could not remove the lanes of loop `{}`: {e}",
                cfg.name
            )
        })?;
    }
    let mut merged = Vec::new();
    for e in queue.iter().filter(|e| e.state == MergeState::Merging) {
        if let Some(c) = &e.combined {
            if workdir.is_ancestor(c, checkpoint).await {
                merged.push((e.test_id.clone(), e.attempt));
            }
        }
    }
    Ok(merged)
}

/// Before the boot checks the workdir: when a predecessor was killed in a merge after the
/// loop's branch moved to the combined commit and before the workdir's files followed it (the
/// workdir is loopd's own with lanes: no agent works there), the files are brought to it.
pub async fn finish_moved_checkpoint(ctx: &Ctx, cfg: &LoopConfig) -> Result<(), String> {
    let name = cfg.name.clone();
    let queue = ctx
        .read(move |s| s.get_loop(&name))
        .await
        .map_err(|e| e.to_string())?
        .map(|r| r.merge_queue)
        .unwrap_or_default();
    let combined: Vec<String> = queue
        .iter()
        .filter(|e| e.state == MergeState::Merging)
        .filter_map(|e| e.combined.clone())
        .collect();
    if combined.is_empty() || !cfg.checkpoints {
        return Ok(());
    }
    let workdir = Workdir::new(cfg.workdir.clone().expect("the loader fills in workdir"));
    let tip = workdir.checkpoint_tip().await.map_err(|e| e.to_string())?;
    if let Some(tip) = tip.filter(|t| combined.contains(t)) {
        workdir.reset_to(&tip).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// At boot, the queue as a predecessor left it: entries it merged without recording so
/// (`merged`) are merged and their tests passed; an entry it was merging waits again; entries
/// whose test is no longer busy (reset, removed) leave the queue. Returns the changed tests and
/// their events; the loop's record (with the queue) is written by the boot's batch.
pub(super) fn resume_queue(
    state: &mut LoopActorState,
    stored: &[TestRecord],
    merged: &[(String, u32)],
) -> (Vec<TestRecord>, Vec<Event>) {
    let mut changed = Vec::new();
    let mut events = Vec::new();
    let name = state.config.name.clone();
    let busy = |id: &str| {
        stored
            .iter()
            .any(|t| t.spec.id == id && t.status == TestStatus::Running)
    };
    state
        .record
        .merge_queue
        .retain(|e| !e.state.is_open() || busy(&e.test_id));
    for e in state.record.merge_queue.iter_mut() {
        if !e.state.is_open() {
            continue;
        }
        if merged.contains(&(e.test_id.clone(), e.attempt)) {
            e.state = MergeState::Merged;
            e.finished_at = Some(Utc::now());
            if let Some(mut t) = stored.iter().find(|t| t.spec.id == e.test_id).cloned() {
                t.status = TestStatus::Passed;
                t.commit = e.combined.clone();
                t.reason = None;
                t.heal_strategy = None;
                t.updated_at = Utc::now();
                events.push(
                    Event::new(
                        EventKind::TestPassed,
                        &name,
                        format!("{} passed", t.spec.id),
                    )
                    .about(&t.spec.id, Some(e.attempt)),
                );
                changed.push(t);
            }
        } else if e.state == MergeState::Merging {
            e.state = MergeState::Waiting;
            e.combined = None;
        }
    }
    (changed, events)
}

/// The expected duration of each of the loop's tests, from its recorded attempts.
pub(super) async fn expected_durations(
    state: &LoopActorState,
) -> Result<std::collections::HashMap<String, f64>, ActorProcessingErr> {
    let name = state.config.name.clone();
    let attempts = state
        .ctx
        .read(move |s| s.list_attempts(&name, None))
        .await?;
    Ok(plan::expected_durations(attempts.iter()))
}

/// Makes the lanes match `lanes` again (an agent broke one).
pub(super) async fn resync_lanes(state: &LoopActorState) -> Result<(), ActorProcessingErr> {
    let (Some(workdir), Some(checkpoint)) = (&state.config.workdir, &state.record.checkpoint)
    else {
        return Ok(());
    };
    Workdir::new(workdir)
        .sync_lanes(
            &lanes_dir(state.ctx.state_dir(), &state.config.name),
            lanes(&state.config),
            checkpoint,
        )
        .await?;
    Ok(())
}

/// Starts the merge of the queue's first waiting entry, unless one runs, the loop does not
/// run, or nothing waits.
pub(super) async fn drive(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
) -> Result<(), ActorProcessingErr> {
    if state.merging
        || state.stopping
        || state.record.state != crate::model::LoopState::Running
        || !state
            .record
            .merge_queue
            .iter()
            .any(|e| e.state == MergeState::Waiting)
    {
        return Ok(());
    }
    let tests = own_tests(state).await?;
    let Some(at) = state
        .record
        .merge_queue
        .iter()
        .position(|e| e.state == MergeState::Waiting)
    else {
        return Ok(());
    };
    let entry = state.record.merge_queue[at].clone();
    let Some(test) = tests
        .get(&entry.test_id)
        .filter(|t| t.status == TestStatus::Running)
        .cloned()
    else {
        // Its test was reset or removed meanwhile: nothing to merge.
        drop(tests);
        state.record.merge_queue.remove(at);
        record_own(
            state,
            Batch {
                loops: vec![state.record.clone()],
                ..Batch::default()
            },
        )
        .await?;
        return Box::pin(drive(myself, state)).await;
    };
    let regression: Vec<(String, String)> = if state.config.regression {
        tests
            .tests()
            .iter()
            .filter(|o| o.status == TestStatus::Passed && o.spec.id != test.spec.id)
            .map(|o| (o.spec.id.clone(), o.spec.verify.clone()))
            .collect()
    } else {
        Vec::new()
    };
    drop(tests);
    let Some(checkpoint) = state.record.checkpoint.clone() else {
        return Ok(());
    };
    state.record.merge_queue[at].state = MergeState::Merging;
    state.record.updated_at = Utc::now();
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            events: vec![queue_event(state, &entry, "merging")],
            ..Batch::default()
        },
    )
    .await?;
    state.merging = true;
    let (ctx, cfg, me) = (state.ctx.clone(), state.config.clone(), myself.clone());
    tokio::spawn(async move {
        let result = check(
            &ctx,
            &cfg,
            &entry,
            &checkpoint,
            &test.spec.verify,
            &regression,
        )
        .await;
        let _ = me.send_message(LoopMsg::MergeChecked(Box::new(Checked {
            test_id: entry.test_id,
            attempt: entry.attempt,
            result,
        })));
    });
    Ok(())
}

/// The merge's first half, in the scratch worktree: the loop's branch put back at the
/// checkpoint if something (an agent in a lane) moved it, the lane's commit combined with the
/// checkpoint, then the verifies.
async fn check(
    ctx: &Ctx,
    cfg: &LoopConfig,
    entry: &MergeEntry,
    checkpoint: &str,
    verify: &str,
    regression: &[(String, String)],
) -> Result<Combined, String> {
    let text = |e: crate::git::GitError| e.to_string();
    let workdir_path = cfg.workdir.clone().expect("the loader fills in workdir");
    let workdir = Workdir::new(&workdir_path);
    if workdir.checkpoint_tip().await.map_err(text)?.as_deref() != Some(checkpoint) {
        tracing::warn!(loop_name = %cfg.name, "the loop's branch was moved away from its checkpoint (by an agent?); loopd put it back");
        workdir.reset_to(checkpoint).await.map_err(text)?;
    }
    crate::fault::point("merge_combine", &cfg.name).await;
    let scratch_path = lanes_dir(ctx.state_dir(), &cfg.name).join(SCRATCH);
    let scratch = Workdir::new(&scratch_path);
    let combined = scratch
        .combine(&entry.commit, &entry.base, checkpoint)
        .await
        .map_err(text)?;
    let with_tests = || async {
        workdir
            .tests_merged_between(&entry.base, checkpoint)
            .await
            .unwrap_or_default()
    };
    let (commit, how) = match combined {
        Merge::Conflict { files } => {
            return Ok(Combined::Conflict {
                conflict: MergeConflict {
                    files,
                    with_tests: with_tests().await,
                    failed_verify_of: None,
                },
                tail: String::new(),
            })
        }
        Merge::Ready { commit, how } => (commit, how),
    };
    let key =
        crate::runtime::attempt_key(ctx.state_dir(), &cfg.name, &entry.test_id, entry.attempt);
    // A fast-forward's tree is the one the lane's own verify passed on: only the passed tests'
    // verifies have something new to say.
    let own = (how != "fast-forward").then(|| (entry.test_id.clone(), verify.to_string()));
    for (id, verify) in own.iter().chain(regression.iter()) {
        let v = crate::attempt::run_verify(verify, &scratch_path, cfg, &key).await;
        if !v.passed {
            return Ok(Combined::Conflict {
                conflict: MergeConflict {
                    files: Vec::new(),
                    with_tests: with_tests().await,
                    failed_verify_of: Some(id.clone()),
                },
                tail: v.tail,
            });
        }
    }
    Ok(Combined::Ready { commit, how })
}

/// The combine and re-verify are over: a ready commit is recorded, then the checkpoint moves
/// (off the actor's turn); a conflict is recorded as the attempt's outcome.
pub(super) async fn checked(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    checked: Checked,
) -> Result<(), ActorProcessingErr> {
    let Some(at) = entry_at(state, &checked.test_id, checked.attempt) else {
        state.merging = false;
        return after_merge(myself, state).await;
    };
    match checked.result {
        Err(e) => {
            state.merging = false;
            state.record.merge_queue[at].state = MergeState::Waiting;
            crash(
                myself,
                state,
                &format!("the merge queue could not merge {}: {e}", checked.test_id),
            )
            .await?;
            after_merge(myself, state).await
        }
        Ok(Combined::Conflict { conflict, tail }) => {
            state.merging = false;
            conflicted(state, at, conflict, tail).await?;
            after_merge(myself, state).await
        }
        Ok(Combined::Ready { commit, how }) => {
            // Durable before the checkpoint moves: after a crash in between, a checkpoint
            // that holds this commit says the merge is done.
            state.record.merge_queue[at].combined = Some(commit.clone());
            state.record.updated_at = Utc::now();
            let entry = state.record.merge_queue[at].clone();
            let event = queue_event(state, &entry, "ready").with_data(serde_json::json!({
                "merge": "ready", "lane": entry.lane, "commit": commit, "how": how,
            }));
            record_own(
                state,
                Batch {
                    loops: vec![state.record.clone()],
                    events: vec![event],
                    ..Batch::default()
                },
            )
            .await?;
            let old = state.record.checkpoint.clone().unwrap_or_default();
            let (cfg, me) = (state.config.clone(), myself.clone());
            tokio::spawn(async move {
                crate::fault::point("merge_update_ref", &cfg.name).await;
                let workdir =
                    Workdir::new(cfg.workdir.clone().expect("the loader fills in workdir"));
                let result = workdir
                    .move_checkpoint(&commit, &old)
                    .await
                    .map_err(|e| e.to_string());
                // After the move, before it is recorded: the boot finds the combined commit in
                // the checkpoint's history and marks the entry merged.
                crate::fault::point("merge_moved", &cfg.name).await;
                let _ = me.send_message(LoopMsg::MergeMoved(Box::new(Moved {
                    test_id: entry.test_id,
                    attempt: entry.attempt,
                    commit,
                    result,
                })));
            });
            Ok(())
        }
    }
}

/// The checkpoint move is over: the test passed with the merged commit (or, when git refused
/// the move, the entry waits again).
pub(super) async fn moved(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    moved: Moved,
) -> Result<(), ActorProcessingErr> {
    state.merging = false;
    let Some(at) = entry_at(state, &moved.test_id, moved.attempt) else {
        return after_merge(myself, state).await;
    };
    match moved.result {
        Err(e) => {
            crash(
                myself,
                state,
                &format!(
                    "the merge queue could not move the checkpoint to {}: {e}",
                    moved.commit
                ),
            )
            .await?;
        }
        Ok(false) => {
            // The branch moved under the merge: the next try puts it back first.
            state.record.merge_queue[at].state = MergeState::Waiting;
            state.record.merge_queue[at].combined = None;
            record_own(
                state,
                Batch {
                    loops: vec![state.record.clone()],
                    ..Batch::default()
                },
            )
            .await?;
        }
        Ok(true) => merged(state, at, moved.commit).await?,
    }
    after_merge(myself, state).await
}

/// Records a merged entry: the checkpoint, the test `passed` with the merged commit, what that
/// does to its dependents, in one transaction.
async fn merged(
    state: &mut LoopActorState,
    at: usize,
    commit: String,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    let entry = state.record.merge_queue[at].clone();
    let tests = own_tests(state).await?;
    let external = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let mut events = Vec::new();
    let mut changed = Vec::new();
    if let Some(mut t) = tests.get(&entry.test_id).cloned() {
        t.status = TestStatus::Passed;
        t.commit = Some(commit.clone());
        t.reason = None;
        t.heal_strategy = None;
        t.updated_at = Utc::now();
        changed.extend(tests.refresh_blocked(Some(&t), run_past(&cfg), &|d: &str| {
            external.get(d).copied().flatten()
        }));
        events.push(
            Event::new(
                EventKind::TestPassed,
                &cfg.name,
                format!("{} passed", entry.test_id),
            )
            .about(&entry.test_id, Some(entry.attempt)),
        );
        changed.insert(0, t);
    }
    drop(tests);
    let e = &mut state.record.merge_queue[at];
    e.state = MergeState::Merged;
    e.finished_at = Some(Utc::now());
    state.record.checkpoint = Some(commit);
    state.record.updated_at = Utc::now();
    trim_finished(&mut state.record.merge_queue);
    events.insert(0, queue_event(state, &entry, "merged"));
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            tests: dedup_last(changed),
            events,
            ..Batch::default()
        },
    )
    .await?;
    Ok(())
}

/// Records a pass that does not merge: the attempt's outcome becomes `conflict` (its work
/// stays under its ref), counted only after a conflict in a row; the test is tried again on
/// the new checkpoint, or goes to the healer when its counted attempts are used up.
async fn conflicted(
    state: &mut LoopActorState,
    at: usize,
    conflict: MergeConflict,
    tail: String,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    let entry = state.record.merge_queue[at].clone();
    let tests = own_tests(state).await?;
    let history = own_history(state, &entry.test_id).await?;
    let external = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let earlier: Vec<_> = history
        .iter()
        .filter(|a| a.number < entry.attempt)
        .cloned()
        .collect();
    let Some(mut record) = history.iter().find(|a| a.number == entry.attempt).cloned() else {
        return Ok(());
    };
    record.outcome = Some(Outcome::Conflict);
    record.counted = Outcome::Conflict.counts_after(cfg.count_timeouts, &earlier);
    record.reason = Some(match &conflict.failed_verify_of {
        Some(t) => format!(
            "passed in lane {}, but the verify of {t} failed on the merged tree",
            entry.lane
        ),
        None => format!(
            "passed in lane {}, but it conflicts with work merged meanwhile in {}",
            entry.lane,
            if conflict.files.is_empty() {
                "some files".to_string()
            } else {
                conflict.files.join(", ")
            }
        ),
    });
    if conflict.failed_verify_of.is_some() {
        record.verify_tail = tail;
        record.verify_head.clear();
    }
    record.conflict = Some(conflict);
    let mut events = Vec::new();
    let mut changed = Vec::new();
    if let Some(mut t) = tests.get(&entry.test_id).cloned() {
        if record.counted {
            t.counted_attempts += 1;
        }
        t.last_outcome = Some(Outcome::Conflict);
        t.updated_at = Utc::now();
        t.status = match plan::after_outcome(plan::OutcomeFacts {
            outcome: Outcome::Conflict,
            counted: record.counted,
            counted_attempts: t.counted_attempts,
            max_attempts: cfg.max_attempts,
            unmerged_lane_pass: false,
            held: false,
        }) {
            AfterOutcome::Exhausted => exhausted(&cfg, &mut t, &earlier, &record, &mut events),
            _ => {
                t.reason = record.reason.clone();
                TestStatus::Pending
            }
        };
        changed.extend(tests.refresh_blocked(Some(&t), run_past(&cfg), &|d: &str| {
            external.get(d).copied().flatten()
        }));
        changed.insert(0, t);
    }
    drop(tests);
    drop(history);
    events.insert(
        0,
        Event::new(
            EventKind::AttemptFinished,
            &cfg.name,
            format!("attempt {} of {}: conflict", entry.attempt, entry.test_id),
        )
        .about(&entry.test_id, Some(entry.attempt))
        .with_data(serde_json::json!({
            "outcome": Outcome::Conflict,
            "counted": record.counted,
            "reason": record.reason,
            "conflict": record.conflict,
            "lane": entry.lane,
        })),
    );
    let e = &mut state.record.merge_queue[at];
    e.state = MergeState::Conflict;
    e.finished_at = Some(Utc::now());
    state.record.updated_at = Utc::now();
    trim_finished(&mut state.record.merge_queue);
    events.insert(0, queue_event(state, &entry, "conflict"));
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            tests: dedup_last(changed),
            attempts: vec![record],
            events,
            ..Batch::default()
        },
    )
    .await?;
    Ok(())
}

/// After a merge's step: a stopping loop stops once nothing runs; otherwise the next test and
/// the next merge.
async fn after_merge(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
) -> Result<(), ActorProcessingErr> {
    if state.stopping {
        if state.attempts.is_empty() && !state.merging {
            if state.record.state == crate::model::LoopState::Running {
                super::finish::set_state(
                    state,
                    crate::model::LoopState::Idle,
                    Some(crate::model::LoopReason::Interrupted),
                )
                .await?;
            }
            myself.stop(None);
        }
        return Ok(());
    }
    myself.send_message(LoopMsg::Next)?;
    drive(myself, state).await
}

fn entry_at(state: &LoopActorState, test_id: &str, attempt: u32) -> Option<usize> {
    state
        .record
        .merge_queue
        .iter()
        .position(|e| e.test_id == test_id && e.attempt == attempt && e.state.is_open())
}

/// Keeps the open entries and the last [`KEPT_FINISHED`] finished ones.
fn trim_finished(queue: &mut Vec<MergeEntry>) {
    let finished = queue.iter().filter(|e| !e.state.is_open()).count();
    let mut drop = finished.saturating_sub(KEPT_FINISHED);
    queue.retain(|e| {
        if drop > 0 && !e.state.is_open() {
            drop -= 1;
            return false;
        }
        true
    });
}

/// The event of an entry's step through the queue (`queued`, `merging`, `merged`, ...).
fn queue_event(state: &LoopActorState, entry: &MergeEntry, step: &str) -> Event {
    Event::new(
        EventKind::Merge,
        &state.config.name,
        format!(
            "{} (attempt {}, lane {}): {step}",
            entry.test_id, entry.attempt, entry.lane
        ),
    )
    .about(&entry.test_id, Some(entry.attempt))
    .with_data(serde_json::json!({
        "merge": step,
        "lane": entry.lane,
        "commit": entry.commit,
        "base": entry.base,
    }))
}
