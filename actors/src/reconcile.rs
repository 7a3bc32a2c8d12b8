//! After a crash (or a crashed loop actor): attempts left without an outcome become
//! `interrupted`, their agents' process groups are reaped by the ownership rule, their changes
//! are kept under the attempt's ref and the workdir is reset to the checkpoint.

use chrono::Utc;

use crate::config::LoopConfig;
use crate::git::Workdir;
use crate::model::{AttemptRecord, Event, EventKind, Outcome, PendingAction, TestStatus};
use crate::process;
use crate::runtime::Ctx;
use crate::store::{Batch, StoreError};

/// Reconciles the unfinished attempts of `loop_cfg`'s loop. `checkpoint` is the loop's last
/// recorded checkpoint (the workdir is reset to it when checkpoints are on). Returns how many
/// attempts were reconciled.
pub async fn interrupted_attempts(
    ctx: &Ctx,
    loop_cfg: Option<&LoopConfig>,
    checkpoint: Option<&str>,
) -> Result<usize, StoreError> {
    interrupted_attempts_of(ctx, loop_cfg, checkpoint, None).await
}

/// [`interrupted_attempts`], of test `only_test` alone when given (an attempt actor of a loop
/// with lanes failed: the other lanes' attempts still run).
pub async fn interrupted_attempts_of(
    ctx: &Ctx,
    loop_cfg: Option<&LoopConfig>,
    checkpoint: Option<&str>,
    only_test: Option<&str>,
) -> Result<usize, StoreError> {
    let only = loop_cfg.map(|c| c.name.clone());
    let only_test = only_test.map(str::to_string);
    let unfinished = ctx
        .read(move |s| s.unfinished_attempts())
        .await?
        .into_iter()
        .filter(|a| only.as_ref().is_none_or(|n| *n == a.loop_name))
        .filter(|a| only_test.as_ref().is_none_or(|t| *t == a.test_id))
        .collect::<Vec<_>>();
    let count = unfinished.len();
    for mut attempt in unfinished {
        let grace = loop_cfg
            .map(|c| c.kill_grace)
            .unwrap_or(std::time::Duration::from_secs(5));
        // The agent's group when it was recorded, and in any case every process that carries
        // the attempt's unique key and started after the attempt did (an agent spawned just
        // before a crash may not have its group recorded yet; a descendant may have left it).
        let key = crate::runtime::attempt_key(
            ctx.state_dir(),
            &attempt.loop_name,
            &attempt.test_id,
            attempt.number,
        );
        let tracked = process::Tracked::after_crash(
            attempt.process.take().as_ref(),
            &key,
            attempt.started_at.into(),
        );
        let reaped = match tracked {
            Some(t) => process::end_tracked(&t, grace).await.members,
            None => 0,
        };
        // The agent's own home (codex: CODEX_HOME), which the attempt removes when it ends
        // normally: what the agent left there must not reach a later attempt either.
        let home = ctx
            .attempt_paths(&attempt.loop_name, &attempt.test_id, attempt.number)
            .home;
        match tokio::fs::remove_dir_all(&home).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove the agent's home {}: {e}", home.display()),
        }
        let mut pending = None;
        if let (Some(cfg), Some(cp)) = (loop_cfg, checkpoint) {
            if cfg.checkpoints && attempt.lane > 0 {
                // A lane: saved and reset to its base; a lane that cannot be is made again
                // by the loop's boot, so nothing waits for a person.
                let lane = crate::runtime::lanes_dir(ctx.state_dir(), &cfg.name)
                    .join(attempt.lane.to_string());
                let base = attempt.base.clone().unwrap_or_else(|| cp.to_string());
                let git = Workdir::new(&lane);
                if let Err(e) = git.clear_stale_locks().await {
                    tracing::warn!(error = %e, "could not look for stale git locks in a lane");
                }
                match git
                    .save_attempt(&attempt.test_id, attempt.number, &base)
                    .await
                {
                    Ok(c) => attempt.commit = c,
                    Err(e) => {
                        tracing::warn!(error = %e, lane = attempt.lane, "could not save an interrupted lane attempt")
                    }
                }
                if let Err(e) = git.reset_lane(&base).await {
                    tracing::warn!(error = %e, lane = attempt.lane, "could not reset a lane; it is made again");
                }
            } else if cfg.checkpoints {
                if let Some(wd) = &cfg.workdir {
                    pending = save_and_reset(&Workdir::new(wd), &mut attempt, cp).await;
                }
            }
        }
        attempt.outcome = Some(Outcome::Interrupted);
        attempt.counted = false;
        attempt.finished_at = Some(Utc::now());
        attempt.reason = Some(if reaped > 0 {
            format!(
                "loopd stopped during the attempt; {reaped} leftover agent process(es) were ended"
            )
        } else {
            "loopd stopped during the attempt".to_string()
        });
        let (name, id) = (attempt.loop_name.clone(), attempt.test_id.clone());
        let (test, record) = ctx
            .read(move |s| -> Result<_, StoreError> {
                Ok((s.get_test(&name, &id)?, s.get_loop(&name)?))
            })
            .await?;
        let mut batch = Batch::default();
        if let (Some(pending), Some(mut record)) = (pending, record) {
            // Not reset: the next start retries instead of refusing a dirty workdir forever.
            tracing::error!(loop_name = %record.name, "could not save and reset an interrupted attempt; the loop is held");
            let hold = crate::hold::Hold::workdir_broken(&attempt, pending, PendingAction::Reset);
            hold.pause(&mut record, &mut batch);
        }
        if let Some(mut t) = test {
            if t.status == TestStatus::Running {
                t.status = TestStatus::Pending;
            }
            t.last_outcome = Some(Outcome::Interrupted);
            t.updated_at = Utc::now();
            batch.tests.push(t);
        }
        batch.events.push(
            Event::new(
                EventKind::AttemptFinished,
                &attempt.loop_name,
                format!(
                    "attempt {} of {}: interrupted",
                    attempt.number, attempt.test_id
                ),
            )
            .about(&attempt.test_id, Some(attempt.number))
            .with_data(
                serde_json::json!({"outcome": "interrupted", "counted": false, "reaped": reaped}),
            ),
        );
        batch.attempts.push(attempt);
        ctx.record(batch).await?;
    }
    Ok(count)
}

/// Saves an interrupted attempt's files under its ref and resets the workdir to `checkpoint`,
/// after removing the lock files its killed git may have left (its processes are ended by now).
/// Returns what went wrong, with what git said, when the workdir could not be saved and reset.
async fn save_and_reset(
    git: &Workdir,
    attempt: &mut AttemptRecord,
    checkpoint: &str,
) -> Option<String> {
    if let Err(e) = git.clear_stale_locks().await {
        tracing::warn!(error = %e, "could not look for stale git locks");
    }
    match git
        .save_attempt(&attempt.test_id, attempt.number, checkpoint)
        .await
    {
        Ok(c) => attempt.commit = c,
        Err(e) => {
            return Some(format!(
                "loopd could not save the changes of interrupted attempt {} of {}, so it left the workdir as it is: {e}",
                attempt.number, attempt.test_id
            ))
        }
    }
    match git.reset_to(checkpoint).await {
        Ok(()) => None,
        Err(e) => Some(format!(
            "loopd could not reset the workdir after interrupted attempt {} of {}: {e}",
            attempt.number, attempt.test_id
        )),
    }
}
