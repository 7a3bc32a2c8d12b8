//! `loopd rollback LOOP TEST`: return a loop's workdir to the checkpoint made when TEST passed.
//!
//! The tests whose passes came after that checkpoint (their commits are no longer on the
//! branch) become `pending` again, and the loop's checkpoint is moved back; what was rolled
//! back stays reachable from `refs/loopd/rollbacks/<test>/<time>`.

use chrono::Utc;

use crate::config::LoopConfig;
use crate::control::ControlError;
use crate::git::Workdir;
use crate::model::{Event, EventKind, TestStatus};
use crate::runtime::Ctx;
use crate::store::Batch;

/// Rolls `cfg`'s workdir back to `test_id`'s checkpoint; returns the tests made pending again.
pub async fn rollback(
    ctx: &Ctx,
    cfg: &LoopConfig,
    test_id: &str,
) -> Result<Vec<String>, ControlError> {
    let (name, id) = (cfg.name.clone(), test_id.to_string());
    let (record, tests) = ctx
        .read(move |s| -> Result<_, crate::store::StoreError> {
            Ok((s.get_loop(&name)?, s.list_tests(&name)?))
        })
        .await?;
    let mut record = record.ok_or_else(|| ControlError::UnknownLoop(cfg.name.clone()))?;
    let test = tests
        .iter()
        .find(|t| t.spec.id == id)
        .ok_or_else(|| ControlError::UnknownTest {
            loop_name: cfg.name.clone(),
            test: id.clone(),
        })?;
    let target = match (test.status, &test.commit) {
        (TestStatus::Passed, Some(c)) => c.clone(),
        _ => {
            return Err(ControlError::Conflict(format!(
            "test `{id}` has no checkpoint to roll back to (it has not passed with checkpoints on)"
        )))
        }
    };
    let workdir = cfg
        .workdir
        .clone()
        .ok_or_else(|| ControlError::Internal("the loop has no workdir".into()))?;
    let keep = format!("refs/loopd/rollbacks/{id}/{}", Utc::now().timestamp());
    let git = Workdir::new(&workdir);
    let failed = |e: crate::git::GitError| ControlError::Internal(e.to_string());
    git.keep_head_as(&keep).await.map_err(failed)?;
    git.reset_to(&target).await.map_err(failed)?;

    let mut batch = Batch::default();
    let mut reopened = Vec::new();
    for t in &tests {
        let Some(commit) = t.commit.as_ref().filter(|_| t.status == TestStatus::Passed) else {
            continue;
        };
        if !git.is_ancestor(commit, &target).await {
            let mut t = t.clone();
            t.status = TestStatus::Pending;
            t.commit = None;
            t.reason = Some(format!("rolled back to {id}'s checkpoint"));
            t.updated_at = Utc::now();
            reopened.push(t.spec.id.clone());
            batch.tests.push(t);
        }
    }
    record.checkpoint = Some(target.clone());
    record.updated_at = Utc::now();
    batch.loops.push(record);
    batch.events.push(
        Event::new(
            EventKind::TestChanged,
            &cfg.name,
            format!(
                "rolled back to {id}'s checkpoint {}",
                &target[..target.len().min(10)]
            ),
        )
        .about(&id, None)
        .with_data(
            serde_json::json!({"checkpoint": target, "reopened": reopened, "kept_as": keep}),
        ),
    );
    ctx.record(batch).await?;
    Ok(reopened)
}
