//! The loop actor: drives one loop through its tests, one attempt per lane at a time (one lane,
//! the workdir itself, unless the loop sets `lanes`).
//!
//! It keeps nothing in memory that the store does not also have: a restarted loop actor boots
//! from the store, reconciles what its predecessor left running, and carries on.
//!
//! This file holds the messages, the state and the one `match` over messages; the work is in:
//! - `boot`: the tests file read, a predecessor's attempts reconciled, the workdir readied.
//! - `cycle`: the next runnable tests, budgets, attempts started with their slots and prompts.
//! - `finish`: an attempt's outcome recorded, the test's status, pauses, crashes.
//! - `merge`: the merge queue of a loop with lanes: a lane's pass combined with the checkpoint
//!   and re-verified in a scratch worktree, then the checkpoint moved; or a `conflict`.
//! - `watch`: tests that depend on other loops' tests.
//! - `control`: requests from a person or program.
//! - `records`: the loop's writes, which keep its cached tests and history in step with the store.

use std::sync::Arc;
use std::time::Duration;

use crate::scheduler::Slot;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::attempt::{AttemptDone, AttemptMsg, CancelReason};
use crate::config::LoopConfig;
use crate::control::{Control, ControlError};
use crate::model::{AttemptRecord, LoopReason, LoopRecord, LoopState};
use crate::plan;
use crate::prompt;
use crate::runtime::Ctx;
use crate::store::Batch;

mod boot;
mod control;
mod cycle;
mod finish;
mod merge;
mod records;
mod watch;

pub use boot::prepare_workdir;
use boot::{boot, booted, reconcile_own};
use control::control;
use cycle::{next, start_attempt};
use finish::{finish_attempt, pause_for_credits, set_state};
pub use merge::finish_moved_checkpoint;
use records::settle;
use watch::recheck_other_loops;

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
    /// The merge queue's combine and re-verify of its head entry, done off the actor's turn.
    MergeChecked(Box<merge::Checked>),
    /// The merge queue's checkpoint move, done off the actor's turn.
    MergeMoved(Box<merge::Moved>),
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
    /// The running attempts, by lane (0: the workdir, for a loop with one lane).
    attempts: std::collections::BTreeMap<u32, RunningAttempt>,
    /// Slots asked of the scheduler and not granted yet: one per test a pick found.
    slots_wanted: usize,
    /// Set while a merge of the merge queue runs off the actor's turn.
    merging: bool,
    /// Expected duration of each test, in seconds, from its recorded attempts (lanes' picks).
    expected: std::collections::HashMap<String, f64>,
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

/// An attempt running in one of the loop's lanes.
struct RunningAttempt {
    actor: ActorRef<AttemptMsg>,
    test_id: String,
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
    /// Merge queue entries (test, attempt) a predecessor merged before it could record so: their
    /// combined commit is in the checkpoint's history.
    merged: Vec<(String, u32)>,
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
            attempts: Default::default(),
            slots_wanted: 0,
            merging: false,
            expected: Default::default(),
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
                state.slots_wanted = state.slots_wanted.saturating_sub(1);
                start_attempt(&myself, state, permit).await?
            }
            LoopMsg::ProviderPaused(message) => {
                state.slots_wanted = state.slots_wanted.saturating_sub(1);
                // Several lanes' requests get the same answer: one pause.
                let paused = state.record.state == LoopState::Paused
                    && state.record.reason == Some(LoopReason::OutOfCredits);
                if !paused {
                    pause_for_credits(&myself, state, &message, Vec::new()).await?;
                }
            }
            LoopMsg::Ping(reply) => {
                crate::fault::point("loop_ping", &state.config.name).await;
                let _ = reply.send(());
            }
            LoopMsg::ProbeCredits => {
                let paused_for_credits = state.record.state == LoopState::Paused
                    && state.record.reason == Some(LoopReason::OutOfCredits);
                if paused_for_credits {
                    set_state(state, LoopState::Running, None).await?;
                    myself.send_message(LoopMsg::Next)?;
                }
            }
            LoopMsg::AttemptDone(done) => {
                // Before anything is recorded: a restart must find the attempt unfinished.
                crate::fault::point("loop_attempt_done", &state.config.name).await;
                state.attempts.remove(&done.record.lane);
                finish_attempt(&myself, state, *done).await?
            }
            LoopMsg::Interrupt => {
                state.stopping = true;
                for a in state.attempts.values() {
                    a.actor
                        .send_message(AttemptMsg::Cancel(CancelReason::Interrupt))?;
                }
                // A merge in flight ends first: its checkpoint move is recorded, not guessed.
                if state.attempts.is_empty() && !state.merging {
                    if state.record.state == LoopState::Running {
                        set_state(state, LoopState::Idle, Some(LoopReason::Interrupted)).await?;
                    }
                    myself.stop(None)
                }
            }
            LoopMsg::MergeChecked(checked) => merge::checked(&myself, state, *checked).await?,
            LoopMsg::MergeMoved(moved) => merge::moved(&myself, state, *moved).await?,
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
                let lane = state
                    .attempts
                    .iter()
                    .find(|(_, a)| a.actor.get_id() == cell.get_id())
                    .map(|(k, a)| (*k, a.test_id.clone()));
                if let Some((lane, test_id)) = lane {
                    state.attempts.remove(&lane);
                    // Its runner may have been mid-way: reconcile from the store, then go on.
                    reconcile_own(state, Some(&test_id)).await?;
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
