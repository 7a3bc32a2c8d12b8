//! What git does with an attempt's work once the agent and verify have ended: a pass becomes a
//! checkpoint commit, anything else is saved under the attempt's ref and reset.
//!
//! First, lock files a killed git left are removed, and the workdir's git state is checked: an
//! agent that left HEAD off the loop's branch, rewrote history below the checkpoint or deleted
//! `.git` made an `agent_error`, whatever verify said, and the branch and checkpoint are restored.
//! Git work that cannot be done holds the loop (see [`crate::hold`]); it never ends as a silent
//! `passed`, and the attempt's files are never thrown away unsaved.

use crate::git::Workdir;
use crate::hold::Hold;
use crate::model::{AttemptRecord, Outcome, PendingAction};

/// What came of the git work.
pub(super) struct Settled {
    /// The new checkpoint, when the pass was committed.
    pub new_checkpoint: Option<String>,
    /// Why the loop must wait for a person, when git work is left undone.
    pub hold: Option<Hold>,
}

/// Commits a pass or saves and resets anything else; `regression` runs the verifies of earlier
/// passes on the new commit (`None`: nothing broke).
pub(super) async fn settle<F>(
    git: &Workdir,
    checkpoint: &str,
    record: &mut AttemptRecord,
    outcome: &mut Outcome,
    regression: impl FnOnce() -> F,
) -> Settled
where
    F: std::future::Future<Output = Option<(String, String)>>,
{
    if let Err(e) = git.clear_stale_locks().await {
        tracing::warn!(error = %e, "could not look for stale git locks");
    }
    let problem = match git.check_position(checkpoint).await {
        Ok(p) => p,
        Err(e) => Some(format!("loopd could not read the workdir's git state: {e}")),
    };
    if let Some(problem) = problem {
        let what = format!("the agent broke the workdir's git state: {problem}");
        if matches!(
            outcome,
            Outcome::Passed | Outcome::Failed | Outcome::NoChange | Outcome::AgentError
        ) {
            *outcome = Outcome::AgentError;
        }
        record.reason = Some(what.clone());
        let settled = keep_and_reset(git, checkpoint, record).await;
        if let Some(mut hold) = settled.hold {
            hold.message = format!("{what}; {}", hold.message);
            record.reason = Some(hold.message.clone());
            return Settled {
                new_checkpoint: None,
                hold: Some(hold),
            };
        }
        record.reason = Some(format!(
            "{what}; loopd restored the loop's branch and checkpoint"
        ));
        return settled;
    }
    if *outcome != Outcome::Passed {
        return keep_and_reset(git, checkpoint, record).await;
    }
    let committed = if crate::fault::fails("git_checkpoint", &record.loop_name) {
        Err(format!(
            "{}: injected checkpoint failure",
            crate::fault::ENV
        ))
    } else {
        git.commit_pass(
            &record.test_id,
            record.number,
            record.cost_usd,
            &super::commit_title(&record.test_id, record.number),
        )
        .await
        .map_err(|e| e.to_string())
    };
    let commit = match committed {
        Ok(c) => c,
        Err(e) => {
            // The work stays in the working tree for the retry; a copy goes under the attempt's
            // ref too, where git can still write one.
            if let Err(save) = git
                .save_attempt(&record.test_id, record.number, checkpoint)
                .await
            {
                tracing::warn!(error = %save, "could not save the attempt whose checkpoint failed");
            }
            let message = format!("verify passed, but the checkpoint commit failed: {e}");
            record.reason = Some(message.clone());
            return Settled {
                new_checkpoint: None,
                hold: Some(Hold::checkpoint_failed(
                    record,
                    message,
                    PendingAction::Checkpoint {
                        cost_usd: record.cost_usd,
                    },
                )),
            };
        }
    };
    record.commit = Some(commit.clone());
    let Some(broken) = regression().await else {
        return Settled {
            new_checkpoint: Some(commit),
            hold: None,
        };
    };
    // Keep the pass under the attempt's ref, and go back to the checkpoint.
    *outcome = Outcome::Regression;
    record.reason = Some(format!(
        "verify passed, but it broke {} which passed before; the commit was rolled back",
        broken.0
    ));
    record.verify_tail = broken.1;
    // The first lines were the passing verify's; what broke is in the tail.
    record.verify_head.clear();
    record.fingerprint = crate::healer::fingerprint(&record.verify_tail);
    keep_and_reset(git, checkpoint, record).await
}

/// Saves the attempt's state under its ref, then resets the workdir to `checkpoint`. Nothing
/// is reset that could not be saved first.
async fn keep_and_reset(git: &Workdir, checkpoint: &str, record: &mut AttemptRecord) -> Settled {
    let held = |record: &AttemptRecord, message: String| Settled {
        new_checkpoint: None,
        hold: Some(Hold::workdir_broken(record, message, PendingAction::Reset)),
    };
    match git
        .save_attempt(&record.test_id, record.number, checkpoint)
        .await
    {
        Ok(saved) => record.commit = saved,
        Err(e) => {
            return held(
                record,
                format!("loopd could not save the attempt's changes under its ref, so it left the workdir as it is: {e}"),
            )
        }
    }
    if let Err(e) = git.reset_to(checkpoint).await {
        return held(
            record,
            format!("loopd could not reset the workdir to the checkpoint: {e}"),
        );
    }
    Settled {
        new_checkpoint: None,
        hold: None,
    }
}

/// In a lane: commits a pass under the attempt's ref (the lane's output), or saves anything
/// else there and resets the lane to `base`. Never touches the loop's branch or checkpoint. An
/// agent that deleted its lane or rewrote its history below `base` made an `agent_error`
/// whatever verify said. Returns true when the lane is broken: the loop makes it again (a
/// lane holds no work of its own once its attempt is saved, so nothing waits for a person).
pub(super) async fn settle_lane(
    git: &Workdir,
    base: &str,
    record: &mut AttemptRecord,
    outcome: &mut Outcome,
) -> bool {
    if let Err(e) = git.clear_stale_locks().await {
        tracing::warn!(error = %e, "could not look for stale git locks in a lane");
    }
    let problem = match git.check_lane(base).await {
        Ok(p) => p,
        Err(e) => Some(format!("loopd could not read the lane's git state: {e}")),
    };
    if let Some(problem) = problem {
        if matches!(
            outcome,
            Outcome::Passed | Outcome::Failed | Outcome::NoChange | Outcome::AgentError
        ) {
            *outcome = Outcome::AgentError;
        }
        // What is left of the work is kept where git can still reach it.
        if let Ok(saved) = git.save_attempt(&record.test_id, record.number, base).await {
            record.commit = saved;
        }
        record.reason = Some(format!(
            "the agent broke its lane: {problem}; loopd makes the lane again"
        ));
        return true;
    }
    if *outcome == Outcome::Passed {
        let title = super::commit_title(&record.test_id, record.number);
        return match git
            .commit_lane_pass(
                &record.test_id,
                record.number,
                record.cost_usd,
                &title,
                base,
            )
            .await
        {
            Ok(commit) => {
                record.commit = Some(commit);
                false
            }
            Err(e) => {
                *outcome = Outcome::AgentError;
                record.reason = Some(format!(
                    "verify passed, but loopd could not commit the lane's work: {e}"
                ));
                true
            }
        };
    }
    match git.save_attempt(&record.test_id, record.number, base).await {
        Ok(saved) => record.commit = saved,
        Err(e) => {
            record.reason = Some(format!(
                "{}; loopd could not save the attempt's changes under its ref: {e}",
                record
                    .reason
                    .as_deref()
                    .unwrap_or("the attempt did not pass")
            ));
            return true;
        }
    }
    git.reset_lane(base).await.is_err()
}
