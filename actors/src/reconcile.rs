//! After a crash (or a crashed loop actor): attempts left without an outcome become
//! `interrupted`, their agents' process groups are reaped by the ownership rule, their changes
//! are kept under the attempt's ref and the workdir is reset to the checkpoint.

use chrono::Utc;

use crate::config::LoopConfig;
use crate::git::Workdir;
use crate::model::{Event, EventKind, Outcome, TestStatus};
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
    let only = loop_cfg.map(|c| c.name.clone());
    let unfinished = ctx
        .read(move |s| s.unfinished_attempts())
        .await?
        .into_iter()
        .filter(|a| only.as_ref().is_none_or(|n| *n == a.loop_name))
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
        if let (Some(cfg), Some(cp)) = (loop_cfg, checkpoint) {
            if cfg.checkpoints {
                if let Some(wd) = &cfg.workdir {
                    let git = Workdir::new(wd);
                    match git.save_attempt(&attempt.test_id, attempt.number, cp).await {
                        Ok(c) => attempt.commit = c,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not save an interrupted attempt's changes")
                        }
                    }
                    if let Err(e) = git.reset_to(cp).await {
                        tracing::error!(error = %e, "could not reset the workdir after an interrupted attempt");
                    }
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
        let test = ctx.read(move |s| s.get_test(&name, &id)).await?;
        let mut batch = Batch::default();
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
