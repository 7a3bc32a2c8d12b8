//! Boot and reconcile: the tests file read, a predecessor's attempts reconciled, the workdir readied.

use chrono::Utc;
use ractor::{ActorProcessingErr, ActorRef};

use super::cycle::run_past;
use super::finish::{crash, set_state};
use super::records::{dedup_last, forget_cached, merge, own_tests, record_own};
use super::watch::{cross_loop_deps, external_snapshot, watch_other_loops};
use super::{BootWork, Booting, LoopActorState, LoopMsg};
use crate::config::{self, LoopConfig};
use crate::control::ControlError;
use crate::git::Workdir;
use crate::model::{Event, EventKind, LoopReason, LoopState, TestStatus};
use crate::plan;
use crate::reconcile;
use crate::runtime::Ctx;
use crate::store::Batch;

/// Loads the tests file, then reconciles what a predecessor left and readies git off the
/// actor's turn; [`booted`] syncs the store and starts the loop.
pub(super) async fn boot(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    if cfg.lanes > 1 && !cfg.checkpoints {
        // Lanes are worktrees at the checkpoint, and merges move it: without checkpoints there
        // is nothing to start a lane from.
        tracing::warn!(
            loop_name = %cfg.name,
            lanes = cfg.lanes,
            "`lanes` above 1 needs checkpoints = true; this loop runs one attempt at a time"
        );
    }
    if let Some(reason) = &state.record.reason {
        if matches!(state.record.state, LoopState::Stopped | LoopState::Paused)
            && *reason == LoopReason::ByUser
        {
            // A person's decision survives restarts: stay, idle, until started or resumed.
            start_boot_work(myself, state, Vec::new(), false);
            return Ok(());
        }
        if state.record.state == LoopState::Paused && reason.is_hold() {
            // Held for its workdir's git: only a person's resume retries (see `hold`).
            start_boot_work(myself, state, Vec::new(), false);
            return Ok(());
        }
    }
    let specs = match config::load_tests(&cfg) {
        Ok(s) => s,
        Err(report) => {
            crash(myself, state, &format!("invalid tests file:\n{report}")).await?;
            return Ok(());
        }
    };
    if let Some(t) = cfg.prompt_template.as_ref() {
        match tokio::fs::read_to_string(t).await {
            Ok(text) => state.template = text,
            Err(e) => {
                crash(
                    myself,
                    state,
                    &format!("cannot read prompt_template {}: {e}", t.display()),
                )
                .await?;
                return Ok(());
            }
        }
    }
    start_boot_work(myself, state, specs, true);
    Ok(())
}

/// Runs the boot's git work (the reconcile of a predecessor's attempts, then, with `workdir`,
/// the workdir's preparation) on a task of its own, and tells the actor when it is over.
pub(super) fn start_boot_work(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    specs: Vec<crate::tests_file::TestSpec>,
    workdir: bool,
) {
    state.booting = Some(Booting {
        specs,
        deferred: Vec::new(),
        replies: Vec::new(),
    });
    let (ctx, cfg, me) = (state.ctx.clone(), state.config.clone(), myself.clone());
    let mut record = state.record.clone();
    let work = tokio::spawn(async move {
        let reconciled = reconcile_loop(&ctx, &cfg).await.map_err(|e| e.to_string());
        let go_on = workdir && matches!(reconciled, Ok(false));
        // Git work a hold left (a resume brought us here) comes before the workdir's checks.
        let retried = match go_on && record.pending_git.is_some() {
            true => Some(crate::hold::retry(&ctx, &cfg, &mut record).await),
            false => None,
        };
        let mut workdir = match (go_on, &retried) {
            (true, None | Some(Ok(_))) => {
                // A merge killed after it moved the branch, before the workdir's files
                // followed: loopd's own half-done reset, finished before the dirt check.
                match super::merge::finish_moved_checkpoint(&ctx, &cfg).await {
                    Ok(()) => Some(prepare_workdir(ctx.state_dir(), &cfg, false).await),
                    Err(e) => Some(Err(e)),
                }
            }
            _ => None,
        };
        let mut merged = Vec::new();
        if let Some(Ok(Some(checkpoint))) = &workdir {
            match super::merge::boot_lanes(&ctx, &cfg, checkpoint).await {
                Ok(m) => merged = m,
                Err(e) => workdir = Some(Err(e)),
            }
        }
        BootWork {
            reconciled,
            retried,
            workdir,
            merged,
        }
    });
    tokio::spawn(async move {
        let work = work.await.unwrap_or_else(|e| BootWork {
            reconciled: Err(format!("the boot's git work failed: {e}")),
            retried: None,
            workdir: None,
            merged: Vec::new(),
        });
        let _ = me.send_message(LoopMsg::Booted(Box::new(work)));
    });
}

/// The boot's git work is over: syncs the tests file into the store and starts the loop (or
/// stays, for a person's pause), then lets the messages held back meanwhile through.
pub(super) async fn booted(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    work: BootWork,
) -> Result<(), ActorProcessingErr> {
    let Some(booting) = state.booting.take() else {
        return Ok(());
    };
    // The reconcile wrote tests and attempts on its own.
    forget_cached(state);
    let result = finish_boot(myself, state, booting.specs, work).await;
    for reply in booting.replies {
        let _ = reply.send(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(ControlError::Internal(e.to_string())),
        });
    }
    if state.stopping && state.attempts.is_empty() && !state.merging {
        if state.record.state == LoopState::Running {
            set_state(state, LoopState::Idle, Some(LoopReason::Interrupted)).await?;
        }
        myself.stop(None);
        return result;
    }
    for msg in booting.deferred {
        myself.send_message(msg)?;
    }
    result
}

pub(super) async fn finish_boot(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    specs: Vec<crate::tests_file::TestSpec>,
    work: BootWork,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    // As if the reconcile had failed on the actor's turn: a failure its supervisor restarts.
    if work.reconciled.map_err(ActorProcessingErr::from)? {
        return adopt_hold(state).await;
    }
    match work.retried {
        Some(Ok(batch)) => {
            if let Some(r) = batch.loops.last() {
                state.record.checkpoint = r.checkpoint.clone();
            }
            state.record.pending_git = None;
            record_own(state, batch).await?;
        }
        Some(Err(hold)) => {
            let mut batch = Batch::default();
            hold.pause(&mut state.record, &mut batch);
            record_own(state, batch).await?;
            return Ok(());
        }
        None => {}
    }
    let checkpoint = match work.workdir {
        // A person's pause: nothing else to do.
        None => return Ok(()),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            crash(myself, state, &e).await?;
            return Ok(());
        }
    };
    if state.stopping {
        return Ok(());
    }
    let stored = own_tests(state).await?;
    let mut changed = plan::sync_tests(&cfg.name, stored.tests(), &specs);
    // The merge queue as a predecessor left it: what it merged without recording so is
    // merged, what it was merging waits again.
    let (resumed, resumed_events) = super::merge::resume_queue(state, stored.tests(), &work.merged);
    changed.extend(resumed);
    // Tests left `running` by a predecessor have no live attempt any more (those whose pass
    // waits in the merge queue stay busy).
    let mut merged = merge(stored.tests(), &changed);
    drop(stored);
    let queued: std::collections::HashSet<String> = state
        .record
        .merge_queue
        .iter()
        .filter(|e| e.state.is_open())
        .map(|e| e.test_id.clone())
        .collect();
    for t in merged
        .iter_mut()
        .filter(|t| t.status == TestStatus::Running && !queued.contains(&t.spec.id))
    {
        t.status = TestStatus::Pending;
        changed.push(t.clone());
    }
    let others = external_snapshot(&state.ctx, &cross_loop_deps(&merged)).await?;
    changed.extend(plan::refresh_blocked(
        &merged,
        run_past(&cfg),
        &|d: &str| others.get(d).copied().flatten(),
    ));
    let mut batch = Batch {
        tests: dedup_last(changed),
        ..Batch::default()
    };
    state.record.checkpoint = checkpoint;
    state.record.priority = Some(cfg.priority);
    state.record.model = cfg.model.clone();
    state.record.state = LoopState::Running;
    state.record.reason = None;
    state.record.started_at = Some(Utc::now());
    state.record.updated_at = Utc::now();
    batch.loops.push(state.record.clone());
    batch.events.extend(resumed_events);
    batch
        .events
        .push(Event::new(EventKind::LoopState, &cfg.name, "running"));
    record_own(state, batch).await?;
    watch_other_loops(myself, state, &merged);
    if super::cycle::lanes(&cfg) > 1 {
        state.expected = super::merge::expected_durations(state).await?;
    }
    myself.send_message(LoopMsg::Next)?;
    super::merge::drive(myself, state).await?;
    Ok(())
}

/// Creates (with `init_workdir`) and checks the workdir; returns the checkpoint to reset failed
/// attempts to, or `None` when checkpoints are off. `held`: the loop has git work pending
/// (`hold`), and the working tree holds that attempt's files: nothing is done, and `None`.
pub async fn prepare_workdir(
    state_dir: &std::path::Path,
    cfg: &LoopConfig,
    held: bool,
) -> Result<Option<String>, String> {
    if held {
        // Its boot does no git either: the loop waits for a person (whose fix may be needed
        // first: a deleted `.git` would fail `prepare`).
        return Ok(None);
    }
    let workdir = cfg.workdir.clone().expect("the loader fills in workdir");
    let git = Workdir::new(&workdir);
    git.prepare(cfg.init_workdir, cfg.workdir_template.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    if !cfg.checkpoints {
        return Ok(None);
    }
    if let Ok(rel) = state_dir.strip_prefix(&workdir) {
        // The state directory lives inside the workdir: keep it out of git's view.
        let pattern = format!("/{}/", rel.display());
        git.exclude(&[&pattern]).await.map_err(|e| e.to_string())?;
    }
    // No attempt runs yet: a lock file now is left from a killed git.
    git.clear_stale_locks().await.map_err(|e| e.to_string())?;
    let checkpoint = adopt_checkpoint(&git, cfg, &workdir).await?;
    git.record_position(&checkpoint)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(checkpoint))
}

/// HEAD as the loop's checkpoint (an initial commit when there is none), refusing a dirty
/// workdir unless `allow_dirty`.
pub(super) async fn adopt_checkpoint(
    git: &Workdir,
    cfg: &LoopConfig,
    workdir: &std::path::Path,
) -> Result<String, String> {
    if git.head().await.map_err(|e| e.to_string())?.is_none() {
        // A repository without commits (fresh from `init_workdir`, or a template just copied
        // in): what is there becomes the first checkpoint.
        return git.ensure_checkpoint().await.map_err(|e| e.to_string());
    }
    if !cfg.allow_dirty && git.is_dirty().await.map_err(|e| e.to_string())? {
        return Err(format!(
            "the workdir {} of loop `{}` has uncommitted changes (git status --porcelain is not empty); commit or stash them, or set allow_dirty = true",
            workdir.display(),
            cfg.name
        ));
    }
    git.ensure_checkpoint().await.map_err(|e| e.to_string())
}

/// Reconciles what a predecessor left running; true when that holds the loop (an interrupted
/// attempt's workdir could not be saved and reset: see `hold`).
pub(super) async fn reconcile_own(
    state: &mut LoopActorState,
    only_test: Option<&str>,
) -> Result<bool, ActorProcessingErr> {
    let held = reconcile_loop_of(&state.ctx, &state.config, only_test).await?;
    // The reconcile wrote tests and attempts on its own, and the git work it could not do.
    forget_cached(state);
    if held {
        adopt_hold(state).await?;
    }
    Ok(held)
}

/// Takes the hold a reconcile stored on the loop into the actor's copy of its record.
pub(super) async fn adopt_hold(state: &mut LoopActorState) -> Result<(), ActorProcessingErr> {
    let name = state.config.name.clone();
    if let Some(r) = state.ctx.read(move |s| s.get_loop(&name)).await? {
        state.record.state = r.state;
        state.record.reason = r.reason;
        state.record.pending_git = r.pending_git;
    }
    Ok(())
}

/// Reconciles the attempts of loop `cfg` that a predecessor left without an outcome; true when
/// that held the loop (an interrupted attempt's workdir could not be saved and reset).
pub(super) async fn reconcile_loop(
    ctx: &Ctx,
    cfg: &LoopConfig,
) -> Result<bool, crate::store::StoreError> {
    reconcile_loop_of(ctx, cfg, None).await
}

/// [`reconcile_loop`], of one test's attempts when `only_test` is given.
async fn reconcile_loop_of(
    ctx: &Ctx,
    cfg: &LoopConfig,
    only_test: Option<&str>,
) -> Result<bool, crate::store::StoreError> {
    let name = cfg.name.clone();
    let record = ctx.read(move |s| s.get_loop(&name)).await?;
    let checkpoint = record.and_then(|r| r.checkpoint);
    if reconcile::interrupted_attempts_of(ctx, Some(cfg), checkpoint.as_deref(), only_test).await?
        == 0
    {
        return Ok(false);
    }
    let name = cfg.name.clone();
    Ok(ctx
        .read(move |s| s.get_loop(&name))
        .await?
        .is_some_and(|r| {
            r.state == LoopState::Paused && r.reason.as_ref().is_some_and(LoopReason::is_hold)
        }))
}
