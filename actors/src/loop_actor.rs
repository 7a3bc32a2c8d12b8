//! The loop actor: drives one loop through its tests, one attempt at a time.
//!
//! It keeps nothing in memory that the store does not also have: a restarted loop actor boots
//! from the store, reconciles what its predecessor left running, and carries on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::scheduler::{Grant, Slot};
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::agent::ProviderFailure;
use crate::attempt::{AttemptActor, AttemptDone, AttemptMsg, AttemptPlan, CancelReason};
use crate::config::{self, LoopConfig};
use crate::control::{Control, ControlError};
use crate::git::Workdir;
use crate::healer::HealStrategy;
use crate::model::{
    AttemptRecord, Event, EventKind, LoopRecord, LoopState, Outcome, TestRecord, TestStatus,
};
use crate::plan;
use crate::prompt::{self, PromptInput};
use crate::reconcile;
use crate::runtime::Ctx;
use crate::store::Batch;

/// How long a loop waits before it looks again at tests that wait on other loops.
const CROSS_LOOP_POLL: Duration = Duration::from_millis(500);

/// Messages of a loop actor.
#[derive(Debug)]
pub enum LoopMsg {
    /// Load the tests file, reconcile with the store, prepare the workdir.
    Boot,
    /// The boot's git work (reconcile, workdir), done off the actor's turn, is over.
    Booted(Box<BootWork>),
    /// Look for the next runnable test.
    Next,
    /// The scheduler granted an agent slot.
    SlotGranted(Slot),
    /// The scheduler says the agent's provider is out of credits.
    ProviderPaused(String),
    /// Time to see whether the provider has credits again.
    ProbeCredits,
    /// The monitor's liveness check.
    Ping(RpcReplyPort<()>),
    /// The running attempt finished.
    AttemptDone(Box<AttemptDone>),
    /// Interrupt the running attempt (recorded as `interrupted`) and stop.
    Interrupt,
    /// A request from a person or program (the supervisor routes only this loop's requests).
    Control(Control, RpcReplyPort<Result<(), ControlError>>),
    /// A test of another loop changed (passed, reset, skipped, ...): tests of this one that
    /// depend on it may be blocked or runnable now.
    OtherLoopChanged(String),
}

/// The loop actor.
pub struct LoopActor;

/// Arguments of a loop actor.
#[derive(Debug, Clone)]
pub struct LoopArgs {
    /// The fleet's shared context.
    pub ctx: Ctx,
    /// The loop's configuration.
    pub config: Arc<LoopConfig>,
    /// Boot and run at once (a loop created with `start: false` waits for `Start`).
    pub autostart: bool,
    /// The `[fleet]` settings (credit probe interval, fleet-wide budgets).
    pub fleet: Arc<crate::config::FleetSettings>,
}

/// A loop actor's state: a cache of its loop record and the attempt it runs.
pub struct LoopActorState {
    ctx: Ctx,
    config: Arc<LoopConfig>,
    record: LoopRecord,
    template: String,
    attempt: Option<ActorRef<AttemptMsg>>,
    waiting_for_slot: bool,
    stopping: bool,
    /// The `[fleet]` settings.
    fleet: Arc<crate::config::FleetSettings>,
    /// The loop's tests as stored, in order; `None` until read. This actor is the only writer
    /// of its tests while it lives (every write goes through [`record_own`], which keeps the copy in
    /// step); after a reconcile or a rollback, which write them elsewhere, the copy is dropped.
    /// Debug builds check the copy against the store on every use. A table with the
    /// dependencies resolved, shared with the decisions of one turn (never copied per attempt).
    tests: Option<Arc<plan::TestTable>>,
    /// The finished attempts of the test attempted last, by start, kept the same way: a retry
    /// of the test needs no read for its history. Shared, not copied, with each attempt's use
    /// of it: a test with a long history would copy every earlier attempt's output twice per
    /// attempt.
    history: Option<(String, Arc<Vec<AttemptRecord>>)>,
    /// Batches handed to the journal by [`record_own_later`] and not yet known to be durable.
    unsettled: Vec<crate::runtime::Recording>,
    /// Whether other loops' test events are forwarded to this actor (only once one of its tests
    /// depends on another loop: every loop following every event would cost O(loops²)).
    watching: bool,
    /// Set while the boot's git work runs off the actor's turn.
    booting: Option<Booting>,
}

/// What the boot's git work found: whether the reconcile of a predecessor's attempts went
/// through, and the workdir's checkpoint (`None` when the loop only waits for a person).
#[derive(Debug)]
pub struct BootWork {
    /// True when the reconcile held the loop (see `hold`).
    reconciled: Result<bool, String>,
    /// The retry of git work a hold left, when there was some.
    retried: Option<Result<Batch, crate::hold::Hold>>,
    workdir: Option<Result<Option<String>, String>>,
}

/// A boot waiting for its git work. Git on a big repository can take longer than the
/// monitor's `ping_timeout`: the actor answers pings meanwhile, and holds back everything
/// else (replayed, in order, once the boot is over) so nothing acts on a half-booted loop.
struct Booting {
    /// The tests file's tests, read before the git work.
    specs: Vec<crate::tests_file::TestSpec>,
    /// Messages that came meanwhile.
    deferred: Vec<LoopMsg>,
    /// Requests (`start`, `resume`) answered once the loop runs.
    replies: Vec<RpcReplyPort<Result<(), ControlError>>>,
}

/// Writes `batch` (one flushed transaction, after every batch handed over before it) and brings
/// the cached tests up to date with it.
async fn record_own(
    state: &mut LoopActorState,
    batch: Batch,
) -> Result<Vec<Event>, crate::store::StoreError> {
    let changes = OwnChanges::of(state, &batch);
    let recording = state.ctx.enqueue(batch);
    // The journal writes in order: batches handed over earlier are durable no later than this
    // one, and a failure of theirs is this actor's to learn.
    settle(state).await?;
    let result = recording.durable().await;
    match &result {
        Ok(_) => changes.apply(state),
        // What reached the store is unknown: read it again next time.
        Err(_) => forget_cached(state),
    }
    result
}

/// Hands `batch` to the journal and brings the cached copies up to date at once, without
/// waiting for the flush: for an attempt's outcome, whose flush then runs while the next
/// attempt is scheduled and its prompt rendered. Nothing that depends on the write may happen
/// before [`settle`] (or a [`record_own`], which settles): the next attempt's start record is
/// written after it, and its agent starts only once that is durable. Its events are published
/// when it is durable, as always.
fn record_own_later(state: &mut LoopActorState, batch: Batch) {
    let changes = OwnChanges::of(state, &batch);
    let recording = state.ctx.enqueue(batch);
    state.unsettled.push(recording);
    changes.apply(state);
}

/// Waits until every batch of [`record_own_later`] is durable; on a failure, drops the cached
/// copies (they were brought up to date before the write) and returns the first error.
async fn settle(state: &mut LoopActorState) -> Result<(), crate::store::StoreError> {
    let mut first = Ok(());
    for recording in std::mem::take(&mut state.unsettled) {
        if let Err(e) = recording.durable().await {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    if first.is_err() {
        forget_cached(state);
    }
    first
}

/// What a batch changes in the actor's cached copies: its tests, and its finished attempts.
struct OwnChanges {
    tests: Vec<TestRecord>,
    finished: Vec<AttemptRecord>,
}

impl OwnChanges {
    fn of(state: &LoopActorState, batch: &Batch) -> OwnChanges {
        let name = &state.config.name;
        OwnChanges {
            tests: batch
                .tests
                .iter()
                .filter(|t| t.loop_name == *name)
                .cloned()
                .collect(),
            finished: batch
                .attempts
                .iter()
                .filter(|a| a.loop_name == *name && a.outcome.is_some())
                .cloned()
                .collect(),
        }
    }

    fn apply(self, state: &mut LoopActorState) {
        cache_written(state, self.tests);
        if let Some((id, history)) = state.history.as_mut() {
            let mut finished = self
                .finished
                .into_iter()
                .filter(|a| a.test_id == *id)
                .peekable();
            if finished.peek().is_none() {
                return;
            }
            let history = Arc::make_mut(history);
            for a in finished {
                // The common case, an attempt newer than every other: appended, not searched.
                if history
                    .last()
                    .is_none_or(|h| h.started_at <= a.started_at && h.number < a.number)
                {
                    history.push(a);
                    continue;
                }
                match history.iter_mut().find(|h| h.number == a.number) {
                    Some(h) => *h = a,
                    None => history.push(a),
                }
                history.sort_by_key(|a| a.started_at);
            }
        }
    }
}

/// Drops the cached tests and history (after something else wrote them).
fn forget_cached(state: &mut LoopActorState) {
    state.tests = None;
    state.history = None;
}

/// The finished attempts of test `id`, by start: the cached copy, or read from the store.
async fn own_history(
    state: &mut LoopActorState,
    id: &str,
) -> Result<Arc<Vec<AttemptRecord>>, crate::store::StoreError> {
    let (name, owned) = (state.config.name.clone(), id.to_string());
    let read =
        move |s: &crate::store::Store| -> Result<Vec<AttemptRecord>, crate::store::StoreError> {
            let mut h = s.list_attempts(&name, Some(&owned))?;
            h.retain(|a| a.outcome.is_some());
            Ok(h)
        };
    // A read of the store must see this actor's own writes.
    let cached = matches!(&state.history, Some((cached_id, _)) if cached_id == id);
    if cfg!(debug_assertions) || !cached {
        settle(state).await?;
    }
    match &state.history {
        Some((cached_id, cached)) if cached_id == id => {
            #[cfg(debug_assertions)]
            {
                let stored = state.ctx.read(read).await?;
                assert_eq!(
                    &stored,
                    cached.as_ref(),
                    "loop `{}`: the cached history of {id} differs from the store",
                    state.config.name
                );
            }
            Ok(cached.clone())
        }
        _ => {
            let stored = Arc::new(state.ctx.read(read).await?);
            state.history = Some((id.to_string(), stored.clone()));
            Ok(stored)
        }
    }
}

/// Puts tests just written into the cached copy (kept in the store's order: by `order`, ties by
/// id, its key order). In place: callers drop their handles on the table before they write.
fn cache_written(state: &mut LoopActorState, written: Vec<TestRecord>) {
    if let Some(cached) = state.tests.as_mut() {
        Arc::make_mut(cached).upsert(written);
    }
}

/// The loop's tests, in order: the cached copy, or read from the store.
async fn own_tests(
    state: &mut LoopActorState,
) -> Result<Arc<plan::TestTable>, crate::store::StoreError> {
    let name = state.config.name.clone();
    // A read of the store must see this actor's own writes.
    if cfg!(debug_assertions) || state.tests.is_none() {
        settle(state).await?;
    }
    match &state.tests {
        Some(cached) => {
            #[cfg(debug_assertions)]
            {
                let stored = state.ctx.read(move |s| s.list_tests(&name)).await?;
                assert_eq!(
                    stored.as_slice(),
                    cached.tests(),
                    "loop `{}`: the cached tests differ from the store",
                    state.config.name
                );
            }
            Ok(cached.clone())
        }
        None => {
            let stored = state.ctx.read(move |s| s.list_tests(&name)).await?;
            let table = Arc::new(plan::TestTable::new(stored));
            state.tests = Some(table.clone());
            Ok(table)
        }
    }
}

impl Actor for LoopActor {
    type Msg = LoopMsg;
    type State = LoopActorState;
    type Arguments = LoopArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LoopMsg>,
        args: LoopArgs,
    ) -> Result<LoopActorState, ActorProcessingErr> {
        // A crashed incarnation of this actor may have handed an outcome to the journal that is
        // not written yet (`record_own_later`). The journal writes in order: once an empty batch
        // is through, the store has everything recorded before this start.
        args.ctx.record(Batch::default()).await?;
        let name = args.config.name.clone();
        let record = args
            .ctx
            .read(move |s| s.get_loop(&name))
            .await?
            .unwrap_or_else(|| LoopRecord::new(&args.config.name));
        if args.autostart {
            myself.send_message(LoopMsg::Boot)?;
        }
        Ok(LoopActorState {
            ctx: args.ctx,
            config: args.config,
            record,
            template: prompt::DEFAULT_TEMPLATE.to_string(),
            attempt: None,
            waiting_for_slot: false,
            stopping: false,
            fleet: args.fleet,
            tests: None,
            history: None,
            unsettled: Vec::new(),
            watching: false,
            booting: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<LoopMsg>,
        msg: LoopMsg,
        state: &mut LoopActorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(booting) = state.booting.as_mut() {
            match msg {
                LoopMsg::Ping(_) | LoopMsg::Booted(_) => {}
                // Stops once the git work is over: a successor must not reconcile beside it.
                LoopMsg::Interrupt => {
                    state.stopping = true;
                    return Ok(());
                }
                other => {
                    booting.deferred.push(other);
                    return Ok(());
                }
            }
        }
        // An outcome handed to the journal without waiting (`record_own_later`) is durable
        // before anything but the next attempt's scheduling touches the store or the loop.
        if !matches!(
            msg,
            LoopMsg::Next | LoopMsg::SlotGranted(_) | LoopMsg::Ping(_)
        ) {
            settle(state).await?;
        }
        match msg {
            LoopMsg::Boot => {
                crate::fault::point("loop_boot", &state.config.name).await;
                boot(&myself, state).await?
            }
            LoopMsg::Booted(work) => booted(&myself, state, *work).await?,
            LoopMsg::Next => {
                crate::fault::point("loop_next", &state.config.name).await;
                next(&myself, state).await?
            }
            LoopMsg::SlotGranted(permit) => {
                state.waiting_for_slot = false;
                start_attempt(&myself, state, permit).await?
            }
            LoopMsg::ProviderPaused(message) => {
                state.waiting_for_slot = false;
                pause_for_credits(&myself, state, &message, Vec::new()).await?;
            }
            LoopMsg::Ping(reply) => {
                crate::fault::point("loop_ping", &state.config.name).await;
                let _ = reply.send(());
            }
            LoopMsg::ProbeCredits => {
                let paused_for_credits = state.record.state == LoopState::Paused
                    && state.record.reason.as_deref() == Some("out_of_credits");
                if paused_for_credits {
                    set_state(state, LoopState::Running, None).await?;
                    myself.send_message(LoopMsg::Next)?;
                }
            }
            LoopMsg::AttemptDone(done) => {
                // Before anything is recorded: a restart must find the attempt unfinished.
                crate::fault::point("loop_attempt_done", &state.config.name).await;
                state.attempt = None;
                finish_attempt(&myself, state, *done).await?
            }
            LoopMsg::Interrupt => {
                state.stopping = true;
                match &state.attempt {
                    Some(a) => a.send_message(AttemptMsg::Cancel(CancelReason::Interrupt))?,
                    None => {
                        if state.record.state == LoopState::Running {
                            set_state(state, LoopState::Idle, Some("interrupted")).await?;
                        }
                        myself.stop(None)
                    }
                }
            }
            LoopMsg::Control(request, reply) => {
                let result = control(&myself, state, request).await;
                match state.booting.as_mut() {
                    // A start that boots is answered once the loop runs.
                    Some(booting) if result.is_ok() => booting.replies.push(reply),
                    _ => {
                        let _ = reply.send(result);
                    }
                }
            }
            LoopMsg::OtherLoopChanged(other) => {
                // A running loop looks at other loops' tests on every step anyway.
                if state.record.state == LoopState::Finished {
                    recheck_other_loops(&myself, state, &other).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<LoopMsg>,
        evt: SupervisionEvent,
        state: &mut LoopActorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(loop_name = %state.config.name, actor = ?cell.get_id(), %err, "attempt actor failed");
                if state.attempt.as_ref().map(|a| a.get_id()) == Some(cell.get_id()) {
                    state.attempt = None;
                    // Its runner may have been mid-way: reconcile from the store, then go on.
                    reconcile_own(state).await?;
                    myself.send_message(LoopMsg::Next)?;
                }
            }
            SupervisionEvent::ActorTerminated(..) | SupervisionEvent::ActorStarted(_) => {}
            other => {
                tracing::debug!(loop_name = %state.config.name, ?other, "unexpected supervision event")
            }
        }
        Ok(())
    }
}

/// Once a test of this loop depends on another loop's: forwards the test events of other loops
/// to this loop's actor, for as long as it lives.
fn watch_other_loops(myself: &ActorRef<LoopMsg>, state: &mut LoopActorState, tests: &[TestRecord]) {
    if state.watching || cross_loop_deps(tests).is_empty() {
        return;
    }
    state.watching = true;
    let mut events = state.ctx.subscribe();
    let (me, own) = (myself.clone(), state.config.name.clone());
    tokio::spawn(async move {
        loop {
            let other = match events.recv().await {
                Ok(e) if e.loop_name == own || e.test_id.is_none() => continue,
                Ok(e) => match e.kind {
                    EventKind::TestPassed
                    | EventKind::TestFailed
                    | EventKind::TestBlocked
                    | EventKind::TestChanged => e.loop_name,
                    _ => continue,
                },
                // Missed some: look at every loop this one depends on.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => String::new(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if me.send_message(LoopMsg::OtherLoopChanged(other)).is_err() {
                return;
            }
        }
    });
}

/// A finished loop whose tests depend on loop `other` (any loop when empty): blocks or
/// unblocks them on what the other loop's tests are now, and goes back to work when that
/// leaves something to run.
async fn recheck_other_loops(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    other: &str,
) -> Result<(), ActorProcessingErr> {
    let tests = own_tests(state).await?;
    let prefix = format!("{other}:");
    if !tests
        .cross_deps()
        .iter()
        .any(|d| other.is_empty() || d.starts_with(&prefix))
    {
        return Ok(());
    }
    let others = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let changed = tests.refresh_blocked(None, run_past(&state.config), &|d: &str| {
        others.get(d).copied().flatten()
    });
    drop(tests);
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = changed.iter().map(|t| t.spec.id.as_str()).collect();
    let event = Event::new(
        EventKind::TestChanged,
        &state.config.name,
        if other.is_empty() {
            format!("{} changed with the loops it depends on", ids.join(", "))
        } else {
            format!("{} changed with loop `{other}`", ids.join(", "))
        },
    );
    apply_test_changes(myself, state, changed, event).await?;
    Ok(())
}

/// Loads the tests file, then reconciles what a predecessor left and readies git off the
/// actor's turn; [`booted`] syncs the store and starts the loop.
async fn boot(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    if let Some(reason) = state.record.reason.as_deref() {
        if matches!(state.record.state, LoopState::Stopped | LoopState::Paused)
            && reason == "by_user"
        {
            // A person's decision survives restarts: stay, idle, until started or resumed.
            start_boot_work(myself, state, Vec::new(), false);
            return Ok(());
        }
        if state.record.state == LoopState::Paused && crate::hold::is_hold(Some(reason)) {
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
fn start_boot_work(
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
        let workdir = match (go_on, &retried) {
            (true, None | Some(Ok(_))) => Some(prepare_workdir(ctx.state_dir(), &cfg, false).await),
            _ => None,
        };
        BootWork {
            reconciled,
            retried,
            workdir,
        }
    });
    tokio::spawn(async move {
        let work = work.await.unwrap_or_else(|e| BootWork {
            reconciled: Err(format!("the boot's git work failed: {e}")),
            retried: None,
            workdir: None,
        });
        let _ = me.send_message(LoopMsg::Booted(Box::new(work)));
    });
}

/// The boot's git work is over: syncs the tests file into the store and starts the loop (or
/// stays, for a person's pause), then lets the messages held back meanwhile through.
async fn booted(
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
    if state.stopping && state.attempt.is_none() {
        if state.record.state == LoopState::Running {
            set_state(state, LoopState::Idle, Some("interrupted")).await?;
        }
        myself.stop(None);
        return result;
    }
    for msg in booting.deferred {
        myself.send_message(msg)?;
    }
    result
}

async fn finish_boot(
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
    // Tests left `running` by a predecessor have no live attempt any more.
    let mut merged = merge(stored.tests(), &changed);
    drop(stored);
    for t in merged
        .iter_mut()
        .filter(|t| t.status == TestStatus::Running)
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
    batch
        .events
        .push(Event::new(EventKind::LoopState, &cfg.name, "running"));
    record_own(state, batch).await?;
    watch_other_loops(myself, state, &merged);
    myself.send_message(LoopMsg::Next)?;
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
async fn adopt_checkpoint(
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
async fn reconcile_own(state: &mut LoopActorState) -> Result<bool, ActorProcessingErr> {
    let held = reconcile_loop(&state.ctx, &state.config).await?;
    // The reconcile wrote tests and attempts on its own, and the git work it could not do.
    forget_cached(state);
    if held {
        adopt_hold(state).await?;
    }
    Ok(held)
}

/// Takes the hold a reconcile stored on the loop into the actor's copy of its record.
async fn adopt_hold(state: &mut LoopActorState) -> Result<(), ActorProcessingErr> {
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
async fn reconcile_loop(ctx: &Ctx, cfg: &LoopConfig) -> Result<bool, crate::store::StoreError> {
    let name = cfg.name.clone();
    let record = ctx.read(move |s| s.get_loop(&name)).await?;
    let checkpoint = record.and_then(|r| r.checkpoint);
    if reconcile::interrupted_attempts(ctx, Some(cfg), checkpoint.as_deref()).await? == 0 {
        return Ok(false);
    }
    let name = cfg.name.clone();
    Ok(ctx
        .read(move |s| s.get_loop(&name))
        .await?
        .is_some_and(|r| r.state == LoopState::Paused && crate::hold::is_hold(r.reason.as_deref())))
}

/// Picks the next runnable test and asks for a slot, or finishes the loop.
async fn next(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
) -> Result<(), ActorProcessingErr> {
    if state.attempt.is_some() || state.waiting_for_slot || state.stopping {
        return Ok(());
    }
    if state.record.state != LoopState::Running {
        return Ok(());
    }
    let priority = state.config.priority;
    let run_past = run_past(&state.config);
    let tests = own_tests(state).await?;
    let others = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let external = |d: &str| others.get(d).copied().flatten();
    let runnable = tests.next_runnable(priority, run_past, &external).is_some();
    let finished = tests.is_finished();
    // Tests of other loops change under us: block or unblock on what they are now. Only they
    // can: every change of this loop's own tests refreshed the blocking when it was written.
    let reblocked = if tests.cross_deps().is_empty() {
        Vec::new()
    } else {
        tests.refresh_blocked(None, run_past, &external)
    };
    drop(tests);
    if !reblocked.is_empty() {
        let events = reblocked
            .iter()
            .map(|t| {
                let what = if t.status == TestStatus::Blocked {
                    format!("{} is blocked by {}", t.spec.id, t.blocked_by.join(", "))
                } else {
                    format!("{} is no longer blocked", t.spec.id)
                };
                let kind = if t.status == TestStatus::Blocked {
                    EventKind::TestBlocked
                } else {
                    EventKind::TestChanged
                };
                Event::new(kind, &state.config.name, what).about(&t.spec.id, None)
            })
            .collect();
        record_own(
            state,
            Batch {
                tests: reblocked,
                events,
                ..Batch::default()
            },
        )
        .await?;
        myself.send_message(LoopMsg::Next)?;
        return Ok(());
    }
    if runnable {
        if let Some(why) = budget_exhausted(state).await? {
            set_state(state, LoopState::Paused, Some("budget_exhausted")).await?;
            record_own(
                state,
                Batch {
                    events: vec![Event::new(EventKind::Alert, &state.config.name, why)
                        .with_data(serde_json::json!({"reason": "budget_exhausted"}))],
                    ..Batch::default()
                },
            )
            .await?;
            return Ok(());
        }
        state.waiting_for_slot = true;
        let scheduler = state.ctx.scheduler().clone();
        let me = myself.clone();
        let (name, priority, provider) = (
            state.config.name.clone(),
            state.config.priority,
            state.config.agent.provider().to_string(),
        );
        tokio::spawn(async move {
            // If the loop is gone when the grant comes, the slot is dropped and given back.
            match scheduler.acquire(&name, priority, &provider).await {
                Some(Grant::Slot(slot)) => {
                    let _ = me.send_message(LoopMsg::SlotGranted(slot));
                }
                Some(Grant::ProviderPaused { message }) => {
                    let _ = me.send_message(LoopMsg::ProviderPaused(message));
                }
                None => {}
            }
        });
    } else if finished {
        // The actor stays: a reset, skip or injected test brings the loop back to work.
        set_state(state, LoopState::Finished, None).await?;
    } else {
        // Pending tests wait on tests of other loops.
        settle(state).await?;
        myself.send_after(CROSS_LOOP_POLL, || LoopMsg::Next);
    }
    Ok(())
}

/// The statuses of `deps`, `other-loop:ID` dependencies.
async fn external_snapshot(
    ctx: &Ctx,
    deps: &[String],
) -> Result<ExternalStatuses, ActorProcessingErr> {
    if deps.is_empty() {
        return Ok(ExternalStatuses::new());
    }
    let deps = deps.to_vec();
    Ok(ctx.read(move |s| external_statuses(s, &deps)).await)
}

/// Every `other-loop:ID` dependency of `tests`.
fn cross_loop_deps(tests: &[TestRecord]) -> Vec<String> {
    tests
        .iter()
        .flat_map(|t| t.spec.depends_on.iter())
        .filter(|d| d.contains(':'))
        .cloned()
        .collect()
}

/// Statuses of other loops' tests, by `other-loop:ID`.
type ExternalStatuses = std::collections::HashMap<String, Option<TestStatus>>;

/// [`external_snapshot`] from inside a store read.
fn external_statuses(store: &crate::store::Store, deps: &[String]) -> ExternalStatuses {
    deps.iter()
        .map(|d| (d.clone(), external_status(store, d)))
        .collect()
}

/// Why no new attempt may start for lack of budget (the loop's or the fleet's), if so.
async fn budget_exhausted(
    state: &mut LoopActorState,
) -> Result<Option<String>, ActorProcessingErr> {
    let cfg = state.config.clone();
    let fleet = state.fleet.clone();
    let check_fleet = fleet.budget_usd.is_some() || fleet.max_attempts_total.is_some();
    let check_loop = cfg.budget_usd.is_some() || cfg.max_attempts_total.is_some();
    if !check_fleet && !check_loop {
        return Ok(None);
    }
    // The last outcome's cost counts.
    settle(state).await?;
    let why = state
        .ctx
        .read(
            move |s| -> Result<Option<String>, crate::store::StoreError> {
                let spent = |name: &str| -> Result<(u32, f64), crate::store::StoreError> {
                    let a = s.spent(name)?;
                    Ok((a.attempts, a.cost_usd))
                };
                let over = |what: &str,
                            (n, usd): (u32, f64),
                            max_n: Option<u32>,
                            max_usd: Option<f64>| {
                    if let Some(m) = max_n.filter(|m| n >= *m) {
                        return Some(format!(
                            "{what} made {} (max_attempts_total = {m}); paused",
                            crate::words::count(n, "attempt", "attempts")
                        ));
                    }
                    if let Some(m) = max_usd.filter(|m| usd >= *m) {
                        return Some(format!("{what} spent ${usd:.4} (budget_usd = {m}); paused"));
                    }
                    None
                };
                if check_loop {
                    let why = over(
                        &format!("loop `{}`", cfg.name),
                        spent(&cfg.name)?,
                        cfg.max_attempts_total,
                        cfg.budget_usd,
                    );
                    if why.is_some() {
                        return Ok(why);
                    }
                }
                if check_fleet {
                    let mut total = (0u32, 0f64);
                    for l in s.list_loops()? {
                        let (n, usd) = spent(&l.name)?;
                        total = (total.0 + n, total.1 + usd);
                    }
                    return Ok(over(
                        "the fleet",
                        total,
                        fleet.max_attempts_total,
                        fleet.budget_usd,
                    ));
                }
                Ok(None)
            },
        )
        .await?;
    Ok(why)
}

/// What another loop's test is, for `other-loop:ID` dependencies.
/// A test the other loop has not loaded yet (it may not have booted) is waited for, not a
/// blocker: `validate` already refuses references to tests that exist nowhere.
fn external_status(store: &crate::store::Store, dep: &str) -> Option<TestStatus> {
    let (other, id) = dep.split_once(':')?;
    Some(
        store
            .get_test(other, id)
            .ok()
            .flatten()
            .map_or(TestStatus::Pending, |t| t.status),
    )
}

/// Whether dependents run past a test that failed for good (`on_blocked = "skip"`).
fn run_past(cfg: &LoopConfig) -> bool {
    cfg.on_blocked == crate::config::OnBlocked::Skip
}

/// Records the attempt as started (flushed) and spawns its actor.
async fn start_attempt(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    permit: Slot,
) -> Result<(), ActorProcessingErr> {
    if state.stopping || state.record.state != LoopState::Running {
        return Ok(());
    }
    let priority = state.config.priority;
    let run_past = run_past(&state.config);
    let tests = own_tests(state).await?;
    let others = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let picked = tests
        .next_runnable(priority, run_past, &|d: &str| {
            others.get(d).copied().flatten()
        })
        .cloned();
    let picked = match picked {
        Some(t) => {
            // Only with `regression` on: a list of every passed test per attempt otherwise.
            let passed: Vec<(String, String)> = if state.config.regression {
                tests
                    .tests()
                    .iter()
                    .filter(|o| o.status == TestStatus::Passed && o.spec.id != t.spec.id)
                    .map(|o| (o.spec.id.clone(), o.spec.verify.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            drop(tests);
            let history = own_history(state, &t.spec.id).await?;
            let fingerprints = crate::healer::history_fingerprints(&history);
            let lessons = if fingerprints.is_empty() {
                Vec::new()
            } else {
                state
                    .ctx
                    .read(move |s| crate::healer::lessons_for_prompt(s, &fingerprints))
                    .await
            };
            Some((t, history, passed, lessons))
        }
        None => None,
    };
    let Some((mut test, history, passed, lessons)) = picked else {
        drop(permit);
        myself.send_message(LoopMsg::Next)?;
        return Ok(());
    };
    let mut cfg = state.config.clone();
    let number = test.attempts + 1;
    let paths = state.ctx.attempt_paths(&cfg.name, &test.spec.id, number);
    let strategy = test.heal_strategy.clone();
    if let Some(HealStrategy::StrongerModel(model)) = &strategy {
        let mut stronger = (*cfg).clone();
        stronger.model = Some(model.clone());
        cfg = Arc::new(stronger);
    }
    let spec_text = match config::resolve_spec(&cfg, &test.spec) {
        Ok(s) => s,
        Err(e) => format!("(loopd could not read the spec file: {e})"),
    };
    let mut prompt = prompt::render(
        &state.template,
        &PromptInput {
            loop_name: &cfg.name,
            test_id: &test.spec.id,
            title: &test.spec.title,
            spec: &spec_text,
            verify: &test.spec.verify,
            attempt: number,
            max_attempts: cfg.max_attempts,
            // A fresh start forgets the earlier attempts on purpose.
            history: if strategy == Some(HealStrategy::FreshStart) {
                &[]
            } else {
                &history
            },
            lessons: &lessons,
        },
    );
    if matches!(
        strategy,
        Some(HealStrategy::AlternativePrompt | HealStrategy::StrongerModel(_))
    ) {
        prompt.push_str(&crate::healer::alternative_prompt(&history));
    }
    // Read now, not kept: a hint given while the last attempt ran reaches this one.
    let (name, id) = (cfg.name.clone(), test.spec.id.clone());
    let hints = state
        .ctx
        .read(move |s| crate::hints::for_prompt(s, &name, &id))
        .await;
    prompt.push_str(&crate::hints::section(&hints));
    test.attempts = number;
    test.status = TestStatus::Running;
    test.updated_at = Utc::now();
    let record = AttemptRecord::started(&cfg.name, &test.spec.id, number, paths.transcript.clone());
    // The attempt's files and its durable record do not depend on each other, and the agent
    // needs both: write them at the same time.
    let (transcript, recorded) = tokio::join!(
        crate::attempt::write_attempt_files(&paths, &prompt),
        record_own(
            state,
            Batch {
                tests: vec![test.clone()],
                attempts: vec![record.clone()],
                events: vec![Event::new(
                    EventKind::AttemptStarted,
                    &cfg.name,
                    format!("attempt {number} of {} started", test.spec.id),
                )
                .about(&test.spec.id, Some(number))],
                ..Batch::default()
            }
        )
    );
    recorded?;
    let transcript = transcript?;
    let plan = AttemptPlan {
        ctx: state.ctx.clone(),
        config: cfg.clone(),
        record,
        verify: test.spec.verify.clone(),
        timeout: test.spec.timeout,
        prompt,
        paths,
        transcript,
        checkpoint: state.record.checkpoint.clone().filter(|_| cfg.checkpoints),
        permit: Some(permit),
        regression_checks: if cfg.regression { passed } else { Vec::new() },
        reply_to: myself.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, AttemptActor, plan, myself.get_cell()).await?;
    state.attempt = Some(actor);
    Ok(())
}

/// Records the outcome, the test's new status and what it does to its dependents, in one
/// transaction.
async fn finish_attempt(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    done: AttemptDone,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    let record = done.record;
    let outcome = record.outcome.unwrap_or(Outcome::Interrupted);
    let test_id = record.test_id.clone();
    // From the actor's own copies; the store only for other loops' tests this loop depends on.
    let tests = own_tests(state).await?;
    let earlier = own_history(state, &test_id).await?;
    let external = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let mut events = Vec::new();
    // The one record this outcome changes, and what that does to the others.
    let Some(mut test) = tests.get(&test_id).cloned() else {
        return Ok(());
    };
    {
        let test = &mut test;
        if record.counted {
            test.counted_attempts += 1;
        }
        test.last_outcome = Some(outcome);
        test.updated_at = Utc::now();
        test.status = match outcome {
            Outcome::Passed if done.hold.is_some() => {
                // Not passed until its checkpoint is made: dependents must not build on it.
                test.reason = done.hold.as_ref().map(|h| h.message.clone());
                TestStatus::Pending
            }
            Outcome::Passed => {
                test.commit = record.commit.clone();
                test.reason = None;
                test.heal_strategy = None;
                events.push(
                    Event::new(
                        EventKind::TestPassed,
                        &cfg.name,
                        format!("{} passed", test_id),
                    )
                    .about(&test_id, Some(record.number)),
                );
                TestStatus::Passed
            }
            _ if record.counted && test.counted_attempts >= cfg.max_attempts => {
                // The healer diagnoses from the recorded history and, with auto_heal (or
                // on_blocked = "heal"), picks another strategy within the heal budget.
                let policy = crate::healer::HealPolicy {
                    auto_heal: cfg.auto_heal || cfg.on_blocked == crate::config::OnBlocked::Heal,
                    heal_model: cfg.heal_model.clone(),
                    budget_attempts: Some(cfg.heal_attempts),
                    budget_usd: cfg.heal_budget_usd,
                };
                let history: Vec<AttemptRecord> = earlier
                    .iter()
                    .filter(|a| a.number != record.number)
                    .chain(std::iter::once(&record))
                    .cloned()
                    .collect();
                let d = crate::healer::on_exhausted(test, &history, &policy);
                test.reason = Some(d.reason.clone());
                let event = if d.alert {
                    Event::new(
                        EventKind::Alert,
                        &cfg.name,
                        format!("{test_id} needs a person: {}", d.reason),
                    )
                    .with_data(serde_json::json!({ "diagnosis": test.diagnosis }))
                } else if d.status == TestStatus::Failed {
                    Event::new(
                        EventKind::TestFailed,
                        &cfg.name,
                        format!("{test_id} failed for good: {}", d.reason),
                    )
                    .with_data(serde_json::json!({ "diagnosis": test.diagnosis }))
                } else {
                    Event::new(
                        EventKind::TestChanged,
                        &cfg.name,
                        format!("{test_id}: {}", d.reason),
                    )
                };
                events.push(event.about(&test_id, Some(record.number)));
                d.status
            }
            _ => TestStatus::Pending,
        };
    }
    let external = |d: &str| external.get(d).copied().flatten();
    let unblocked_or_blocked = tests.refresh_blocked(Some(&test), run_past(&cfg), &external);
    // The cached table is updated in place by the write below, once no one else holds it.
    drop(tests);
    for t in &unblocked_or_blocked {
        if t.status == TestStatus::Blocked {
            events.push(
                Event::new(
                    EventKind::TestBlocked,
                    &cfg.name,
                    format!("{} is blocked by {}", t.spec.id, t.blocked_by.join(", ")),
                )
                .about(&t.spec.id, None),
            );
        }
    }
    events.insert(
        0,
        Event::new(
            EventKind::AttemptFinished,
            &cfg.name,
            format!(
                "attempt {} of {}: {}{}",
                record.number,
                test_id,
                crate::healer::outcome_name(outcome),
                record
                    .killed
                    .map(|k| format!(" (the agent was killed: {})", k.word()))
                    .unwrap_or_default()
            ),
        )
        .about(&test_id, Some(record.number))
        .with_data(serde_json::json!({
            "outcome": outcome,
            "killed": record.killed,
            "counted": record.counted,
            "cost_usd": record.cost_usd,
            "duration_ms": record.duration_ms,
            "reason": record.reason,
            // What a display shows of why it failed, without reading the ledger.
            "verify_lines": record.verify_first_lines(crate::model::WHY_LINES),
        })),
    );
    let reason = record.reason.clone();
    let mut changed = vec![test];
    changed.extend(unblocked_or_blocked);
    let mut lessons = Vec::new();
    if outcome == Outcome::Passed {
        // Before the checkpoint moves: what the pass changed since the last one.
        let diff = match (&state.record.checkpoint, &cfg.workdir, cfg.checkpoints) {
            (Some(old), Some(w), true) => crate::git::Workdir::new(w)
                .diff_summary(old)
                .await
                .unwrap_or_default(),
            _ => String::new(),
        };
        // The attempts it overcame are the actor's own copy of the test's history; the lesson
        // is written with the pass.
        lessons.extend(crate::healer::lesson_from_pass(&earlier, &record, &diff));
    }
    // The cached history is appended to by the write below, in place once this is gone.
    drop(earlier);
    if let Some(c) = &done.new_checkpoint {
        state.record.checkpoint = Some(c.clone());
    }
    state.record.updated_at = Utc::now();
    let mut batch = Batch {
        loops: vec![state.record.clone()],
        tests: dedup_last(changed),
        attempts: vec![record],
        events,
        lessons,
        ..Batch::default()
    };
    if let Some(hold) = &done.hold {
        // In the outcome's transaction: a restart finds the loop held, with its git work.
        hold.pause(&mut state.record, &mut batch);
        record_own(state, batch).await?;
        if state.stopping {
            myself.stop(None);
        }
        return Ok(());
    }

    if state.stopping {
        if state.record.state == LoopState::Running {
            state.record.state = LoopState::Idle;
            state.record.reason = Some("interrupted".into());
        }
        batch.loops = vec![state.record.clone()];
        record_own(state, batch).await?;
        myself.stop(None);
        return Ok(());
    }
    match (&done.provider_failure, outcome) {
        // The attempt already told the scheduler how the provider fared.
        (Some(ProviderFailure::OutOfCredits { message }), Outcome::OutOfCredits) => {
            let message = message.clone();
            pause_for_credits(myself, state, &message, vec![batch]).await?;
        }
        (_, Outcome::AgentUnavailable) => {
            // A configuration problem: retrying would fail the same way until a person fixes it.
            let alert = format!(
                "the agent of loop `{}` cannot start; loop paused (fix it, then `loopd resume {}`): {}",
                cfg.name,
                cfg.name,
                reason.as_deref().unwrap_or("no cause recorded")
            );
            pause_for(state, "agent_unavailable", alert, vec![batch]).await?;
        }
        _ => {
            // After an API error the scheduler holds every loop of the provider back until
            // its backoff has passed. The outcome's flush runs while the next attempt is
            // scheduled; that attempt's start record, written after it, waits for it.
            record_own_later(state, batch);
            myself.send_message(LoopMsg::Next)?;
        }
    }
    Ok(())
}

/// Pauses the loop because its provider has no credits (with `before` written in the same
/// transaction), and schedules a probe after `credit_probe_interval`.
async fn pause_for_credits(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    message: &str,
    before: Vec<Batch>,
) -> Result<(), ActorProcessingErr> {
    let alert = format!(
        "provider `{}` is out of credits; loop paused: {message}",
        state.config.agent.provider()
    );
    pause_for(state, "out_of_credits", alert, before).await?;
    myself.send_after(state.fleet.credit_probe_interval, || LoopMsg::ProbeCredits);
    Ok(())
}

/// Pauses the loop for `reason`, something only a person can fix, with an alert, `before`
/// written in the same transaction; a `resume` carries on.
async fn pause_for(
    state: &mut LoopActorState,
    reason: &str,
    alert: String,
    before: Vec<Batch>,
) -> Result<(), ActorProcessingErr> {
    let mut batch = Batch::default();
    for b in before {
        batch.loops.extend(b.loops);
        batch.tests.extend(b.tests);
        batch.attempts.extend(b.attempts);
        batch.events.extend(b.events);
    }
    state.record.state = LoopState::Paused;
    state.record.reason = Some(reason.into());
    state.record.updated_at = Utc::now();
    batch.loops = vec![state.record.clone()];
    batch.events.push(
        Event::new(EventKind::Alert, &state.config.name, alert)
            .with_data(serde_json::json!({"reason": reason})),
    );
    batch.events.push(
        Event::new(EventKind::LoopState, &state.config.name, "paused")
            .with_data(serde_json::json!({"state": "paused", "reason": reason})),
    );
    record_own(state, batch).await?;
    Ok(())
}

async fn set_state(
    state: &mut LoopActorState,
    to: LoopState,
    reason: Option<&str>,
) -> Result<(), ActorProcessingErr> {
    state.record.state = to;
    state.record.reason = reason.map(String::from);
    state.record.updated_at = Utc::now();
    let word = serde_json::to_value(to)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            events: vec![Event::new(EventKind::LoopState, &state.config.name, word)
                .with_data(serde_json::json!({"state": to, "reason": reason}))],
            ..Batch::default()
        },
    )
    .await?;
    Ok(())
}

/// Marks the loop `crashed` with a reason a person can act on, raises an alert, stops.
async fn crash(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    tracing::error!(loop_name = %state.config.name, reason, "loop cannot run");
    state.record.state = LoopState::Crashed;
    state.record.reason = Some(reason.to_string());
    state.record.updated_at = Utc::now();
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            events: vec![
                Event::new(EventKind::LoopState, &state.config.name, "crashed")
                    .with_data(serde_json::json!({"state": "crashed", "reason": reason})),
                Event::new(EventKind::Alert, &state.config.name, reason.to_string()),
            ],
            ..Batch::default()
        },
    )
    .await?;
    // The actor stays, so that `start` can try again once the cause is fixed.
    let _ = myself;
    Ok(())
}

/// `stored` with the records of `changed` in place of theirs (by id, through a map: the first
/// boot of a 100,000-test loop changes every test).
fn merge(stored: &[TestRecord], changed: &[TestRecord]) -> Vec<TestRecord> {
    let mut out: Vec<TestRecord> = stored.to_vec();
    let mut at: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, t)| (t.spec.id.clone(), i))
        .collect();
    for c in changed {
        match at.get(&c.spec.id) {
            Some(&i) => out[i] = c.clone(),
            None => {
                at.insert(c.spec.id.clone(), out.len());
                out.push(c.clone());
            }
        }
    }
    out
}

/// Keeps the last record per test id (later changes win), in first-seen order.
fn dedup_last(records: Vec<TestRecord>) -> Vec<TestRecord> {
    let mut out: Vec<TestRecord> = Vec::with_capacity(records.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(records.len());
    for r in records {
        match at.get(&r.spec.id) {
            Some(&i) => out[i] = r,
            None => {
                at.insert(r.spec.id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// Applies a person's or program's request to this loop.
async fn control(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    request: Control,
) -> Result<(), ControlError> {
    let internal = |e: ActorProcessingErr| ControlError::Internal(e.to_string());
    match request {
        Control::Pause { now, .. } => {
            let already = state.record.state == LoopState::Paused
                && state.record.reason.as_deref() == Some("by_user");
            if !already {
                set_state(state, LoopState::Paused, Some("by_user"))
                    .await
                    .map_err(internal)?;
            }
            if now {
                cancel_attempt(state);
            }
        }
        Control::Stop(_) => {
            if state.record.state != LoopState::Stopped {
                set_state(state, LoopState::Stopped, Some("by_user"))
                    .await
                    .map_err(internal)?;
            }
            cancel_attempt(state);
        }
        Control::Start(_) | Control::Resume(_) => {
            if state.record.state == LoopState::Running {
                return Ok(());
            }
            if state.record.reason.as_deref() == Some("out_of_credits") {
                // A person says the credits are back: every loop of the provider may go.
                state
                    .ctx
                    .scheduler()
                    .resume_provider(state.config.agent.provider());
            }
            if state.attempt.is_some() {
                // Paused without --now: the attempt still runs; carry on after it.
                set_state(state, LoopState::Running, None)
                    .await
                    .map_err(internal)?;
            } else {
                // Boot here rather than by message, so the caller's answer shows the loop running.
                state.record.state = LoopState::Idle;
                state.record.reason = None;
                boot(myself, state).await.map_err(internal)?;
            }
        }
        Control::ResetTest { test, .. } => {
            let mut t = find_test(state, &test).await?;
            refuse_running(&t)?;
            t.status = TestStatus::Pending;
            t.counted_attempts = 0;
            crate::healer::reset_healing(&mut t);
            t.reason = Some("reset by a person".into());
            t.commit = None;
            t.blocked_by.clear();
            t.updated_at = Utc::now();
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("{test} was reset"),
            )
            .about(&test, None);
            apply_test_changes(myself, state, vec![t], event).await?;
        }
        Control::SkipTest { test, .. } => {
            let mut t = find_test(state, &test).await?;
            refuse_running(&t)?;
            t.status = TestStatus::Skipped;
            t.reason = Some("skipped by a person".into());
            t.blocked_by.clear();
            t.updated_at = Utc::now();
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("{test} was skipped"),
            )
            .about(&test, None);
            apply_test_changes(myself, state, vec![t], event).await?;
        }
        Control::InjectTests { tests, .. } => {
            let existing = own_tests(state).await?;
            let taken: Vec<&str> = tests
                .iter()
                .map(|t| t.id.as_str())
                .filter(|id| existing.get(id).is_some())
                .collect();
            if !taken.is_empty() {
                return Err(ControlError::Conflict(format!(
                    "loop `{}` already has tests {}",
                    state.config.name,
                    taken.join(", ")
                )));
            }
            let mut order = existing
                .tests()
                .iter()
                .map(|t| t.order)
                .max()
                .map_or(0, |o| o + 1);
            let new: Vec<TestRecord> = tests
                .into_iter()
                .map(|spec| {
                    let mut t =
                        TestRecord::new(&state.config.name, spec, crate::model::Origin::Api);
                    t.order = order;
                    order += 1;
                    t
                })
                .collect();
            let ids: Vec<String> = new.iter().map(|t| t.spec.id.clone()).collect();
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("injected {}", ids.join(", ")),
            )
            .with_data(serde_json::json!({ "injected": ids }));
            apply_test_changes(myself, state, new, event).await?;
        }
        Control::Rollback { test, .. } => {
            if state.attempt.is_some() {
                return Err(ControlError::Conflict(
                    "an attempt is running; pause the loop with --now first".into(),
                ));
            }
            crate::rollback::rollback(&state.ctx, &state.config, &test).await?;
            // The rollback wrote tests on its own.
            forget_cached(state);
            let name = state.config.name.clone();
            if let Some(r) = state.ctx.read(move |s| s.get_loop(&name)).await? {
                state.record.checkpoint = r.checkpoint;
            }
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("back at {test}'s checkpoint"),
            );
            apply_test_changes(myself, state, Vec::new(), event).await?;
        }
        Control::AddLoop { .. }
        | Control::RemoveLoop(_)
        | Control::ReplaceLoop(_)
        | Control::RetireLoop(_) => {
            return Err(ControlError::Internal(
                "fleet requests go to the supervisor, not to a loop".into(),
            ))
        }
    }
    Ok(())
}

fn refuse_running(t: &TestRecord) -> Result<(), ControlError> {
    if t.status == TestStatus::Running {
        return Err(ControlError::Conflict(format!(
            "test `{}` is running; pause the loop with --now first",
            t.spec.id
        )));
    }
    Ok(())
}

fn cancel_attempt(state: &LoopActorState) {
    if let Some(a) = &state.attempt {
        let _ = a.send_message(AttemptMsg::Cancel(CancelReason::Interrupt));
    }
}

async fn find_test(state: &LoopActorState, test: &str) -> Result<TestRecord, ControlError> {
    let (name, id) = (state.config.name.clone(), test.to_string());
    state
        .ctx
        .read(move |s| s.get_test(&name, &id))
        .await?
        .ok_or_else(|| ControlError::UnknownTest {
            loop_name: state.config.name.clone(),
            test: test.to_string(),
        })
}

/// Writes changed tests with what they do to blocking, and puts a finished loop back to work.
async fn apply_test_changes(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    changed: Vec<TestRecord>,
    event: Event,
) -> Result<(), ControlError> {
    let stored = own_tests(state).await?;
    let merged = merge(stored.tests(), &changed);
    drop(stored);
    let others = external_snapshot(&state.ctx, &cross_loop_deps(&merged))
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let mut all = changed;
    all.extend(plan::refresh_blocked(
        &merged,
        run_past(&state.config),
        &|d: &str| others.get(d).copied().flatten(),
    ));
    let mut batch = Batch {
        tests: dedup_last(all),
        events: vec![event],
        ..Batch::default()
    };
    if state.record.state == LoopState::Finished {
        state.record.state = LoopState::Running;
        state.record.reason = None;
        state.record.updated_at = Utc::now();
        batch.loops.push(state.record.clone());
        batch.events.push(Event::new(
            EventKind::LoopState,
            &state.config.name,
            "running",
        ));
    }
    record_own(state, batch).await?;
    watch_other_loops(myself, state, &merged);
    let _ = myself.send_message(LoopMsg::Next);
    Ok(())
}
