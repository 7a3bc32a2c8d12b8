//! A loop held for its workdir's git: a pass whose checkpoint commit failed
//! (`checkpoint_failed`), or a workdir that could not be saved, reset or restored
//! (`workdir_broken`).
//!
//! The loop pauses with that reason and an alert that says what git said; the git work left
//! undone is stored on the loop ([`PendingGit`]) and the attempt's files stay in the working
//! tree, across restarts, until a `resume` (or `start`) retries it. A person's resume is what
//! ends the pause: a restart of loopd alone does not retry, so a disk that is still full does
//! not turn into an alert per restart.

use chrono::Utc;

use crate::config::LoopConfig;
use crate::git::Workdir;
use crate::model::{
    AttemptRecord, Event, EventKind, LoopReason, LoopRecord, LoopState, PendingAction, PendingGit,
    TestStatus,
};
use crate::runtime::Ctx;
use crate::store::Batch;

/// Why a loop must wait for a person, and the git work left undone.
#[derive(Debug, Clone)]
pub struct Hold {
    /// [`LoopReason::CheckpointFailed`] or [`LoopReason::WorkdirBroken`].
    pub reason: LoopReason,
    /// What happened, with what git said.
    pub message: String,
    /// What a resume retries.
    pub pending: PendingGit,
}

impl Hold {
    /// The pass of `attempt` could not be committed.
    pub fn checkpoint_failed(
        attempt: &AttemptRecord,
        message: String,
        action: PendingAction,
    ) -> Hold {
        Hold::new(LoopReason::CheckpointFailed, attempt, message, action)
    }

    /// The workdir could not be saved, reset or restored after `attempt`.
    pub fn workdir_broken(attempt: &AttemptRecord, message: String, action: PendingAction) -> Hold {
        Hold::new(LoopReason::WorkdirBroken, attempt, message, action)
    }

    fn new(
        reason: LoopReason,
        attempt: &AttemptRecord,
        message: String,
        action: PendingAction,
    ) -> Hold {
        Hold {
            reason,
            message,
            pending: PendingGit {
                test_id: attempt.test_id.clone(),
                attempt: attempt.number,
                action,
                message: String::new(),
            },
        }
    }

    /// Pauses `record` for this hold and adds the alert and the state change to `batch`.
    pub fn pause(&self, record: &mut LoopRecord, batch: &mut Batch) {
        record.state = LoopState::Paused;
        record.reason = Some(self.reason.clone());
        record.pending_git = Some(PendingGit {
            message: self.message.clone(),
            ..self.pending.clone()
        });
        record.updated_at = Utc::now();
        batch.loops = vec![record.clone()];
        let data = serde_json::json!({
            "reason": self.reason,
            "test": self.pending.test_id,
            "attempt": self.pending.attempt,
            "message": self.message,
        });
        batch.events.push(
            Event::new(
                EventKind::Alert,
                &record.name,
                format!(
                    "{}; loop paused ({}): fix the cause, then `loopd resume {}` retries it",
                    self.message, self.reason, record.name
                ),
            )
            .about(&self.pending.test_id, Some(self.pending.attempt))
            .with_data(data.clone()),
        );
        batch.events.push(
            Event::new(EventKind::LoopState, &record.name, "paused")
                .with_data(serde_json::json!({"state": "paused", "reason": self.reason})),
        );
    }
}

/// Does the git work `record.pending_git` names. On success, returns what changed (the test
/// passed, the attempt's commit) with `record` updated in it (new checkpoint, nothing pending);
/// otherwise the hold that still stands.
pub async fn retry(ctx: &Ctx, cfg: &LoopConfig, record: &mut LoopRecord) -> Result<Batch, Hold> {
    let Some(pending) = record.pending_git.clone() else {
        return Ok(Batch::default());
    };
    let (Some(workdir), Some(checkpoint)) = (cfg.workdir.as_ref(), record.checkpoint.clone())
    else {
        record.pending_git = None;
        return Ok(Batch::default());
    };
    let (name, id, n) = (cfg.name.clone(), pending.test_id.clone(), pending.attempt);
    let stored = ctx
        .read(move |s| -> Result<_, crate::store::StoreError> {
            Ok((s.get_test(&name, &id)?, s.get_attempt(&name, &id, n)?))
        })
        .await;
    let hold = |reason: LoopReason, message: String| Hold {
        reason,
        message,
        pending: pending.clone(),
    };
    let (test, attempt) = match stored {
        Ok(found) => found,
        Err(e) => {
            return Err(hold(
                LoopReason::WorkdirBroken,
                format!("cannot read the store: {e}"),
            ))
        }
    };
    let git = Workdir::new(workdir);
    if let Err(e) = git.clear_stale_locks().await {
        tracing::warn!(error = %e, "could not look for stale git locks");
    }
    let mut batch = Batch::default();
    match &pending.action {
        PendingAction::Checkpoint { cost_usd } => {
            let problem = git
                .check_position(&checkpoint)
                .await
                .unwrap_or_else(|e| Some(e.to_string()));
            if let Some(problem) = problem {
                return Err(hold(
                    LoopReason::CheckpointFailed,
                    format!(
                        "the checkpoint of {} cannot be made: {problem}",
                        pending.test_id
                    ),
                ));
            }
            let committed = if crate::fault::fails("git_checkpoint", &cfg.name) {
                Err(format!(
                    "{}: injected checkpoint failure",
                    crate::fault::ENV
                ))
            } else {
                git.commit_pass(
                    &pending.test_id,
                    pending.attempt,
                    *cost_usd,
                    &crate::attempt::commit_title(&pending.test_id, pending.attempt),
                )
                .await
                .map_err(|e| e.to_string())
            };
            let commit = committed.map_err(|e| {
                hold(
                    LoopReason::CheckpointFailed,
                    format!("verify passed, but the checkpoint commit failed again: {e}"),
                )
            })?;
            if let Some(mut a) = attempt {
                a.commit = Some(commit.clone());
                a.reason = Some("verify passed; the checkpoint commit was made on resume".into());
                batch.attempts.push(a);
            }
            if let Some(mut t) = test {
                t.status = TestStatus::Passed;
                t.commit = Some(commit.clone());
                t.reason = None;
                t.heal_strategy = None;
                t.updated_at = Utc::now();
                batch.tests.push(t);
            }
            batch.events.push(
                Event::new(
                    EventKind::TestPassed,
                    &cfg.name,
                    format!(
                        "{} passed (its checkpoint was made on resume)",
                        pending.test_id
                    ),
                )
                .about(&pending.test_id, Some(pending.attempt)),
            );
            record.checkpoint = Some(commit);
        }
        PendingAction::Reset => {
            let saved = git
                .save_attempt(&pending.test_id, pending.attempt, &checkpoint)
                .await
                .map_err(|e| {
                    hold(
                        LoopReason::WorkdirBroken,
                        format!("loopd still cannot save the attempt's changes: {e}"),
                    )
                })?;
            git.reset_to(&checkpoint).await.map_err(|e| {
                hold(
                    LoopReason::WorkdirBroken,
                    format!("loopd still cannot reset the workdir to the checkpoint: {e}"),
                )
            })?;
            if let (Some(mut a), Some(c)) = (attempt, saved) {
                a.commit = Some(c);
                batch.attempts.push(a);
            }
        }
    }
    record.pending_git = None;
    record.updated_at = Utc::now();
    batch.loops.push(record.clone());
    Ok(batch)
}
