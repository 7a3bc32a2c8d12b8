//! The loops supervisor: one loop actor per loop, one_for_one, with Erlang restart intensity.
//!
//! A loop actor that fails is restarted after an exponential backoff; one that fails more than
//! `max_restarts` times within `restart_window` is marked `crashed` (reason
//! `restart_intensity`), an alert is raised, and the rest of the fleet keeps running. A loop that
//! stops normally (finished, paused, stopped, crashed on bad input) is not restarted. When the
//! last loop has stopped the supervisor reports that the fleet is done.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;

use crate::config::LoopConfig;
use crate::control::{Control, ControlError};
use crate::loop_actor::{LoopActor, LoopArgs, LoopMsg};
use crate::model::{Event, EventKind, LoopReason, LoopRecord, LoopState};
use crate::monitor::MonitorMsg;
use crate::runtime::Ctx;
use crate::store::Batch;

/// Restart intensity of the loops supervisor.
#[derive(Debug, Clone, Copy)]
pub struct Intensity {
    /// At most this many restarts of one loop ...
    pub max_restarts: usize,
    /// ... within this window; more and the loop is marked `crashed`.
    pub window: Duration,
    /// The first backoff; doubled for each restart still inside the window.
    pub backoff: Duration,
}

impl Intensity {
    /// The restart intensity a fleet file asks for.
    pub fn from_settings(s: &crate::config::FleetSettings) -> Self {
        Intensity {
            max_restarts: s.max_restarts,
            window: s.restart_window,
            backoff: s.restart_backoff,
        }
    }
}

impl Intensity {
    /// One more restart of a child whose earlier restarts are `history`: the backoff to wait
    /// before it (the restart is noted in `history`), or, when the child has used up its
    /// intensity, `Err` with the number of restarts within the window.
    pub fn admit(&self, history: &mut VecDeque<Instant>, now: Instant) -> Result<Duration, usize> {
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            history.pop_front();
        }
        if history.len() >= self.max_restarts {
            return Err(history.len());
        }
        let backoff = self.backoff.saturating_mul(1 << history.len().min(16));
        history.push_back(now);
        Ok(backoff)
    }
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
        }
    }
}

/// Messages of the loops supervisor.
#[derive(Debug)]
pub enum FleetMsg {
    /// Start (again) the loop of this name.
    Restart(String),
    /// Interrupt every loop (their attempts are recorded `interrupted`) and stop.
    Shutdown,
    /// A request from a person or program.
    Control(Control, RpcReplyPort<Result<(), ControlError>>),
}

/// Arguments of the loops supervisor.
pub struct FleetArgs {
    /// The fleet's shared context.
    pub ctx: Ctx,
    /// The loops to run.
    pub loops: Vec<LoopConfig>,
    /// Restart intensity.
    pub intensity: Intensity,
    /// The `[fleet]` settings (credit probe interval, fleet-wide budgets).
    pub settings: crate::config::FleetSettings,
    /// Told when every loop has stopped.
    pub done: oneshot::Sender<()>,
}

/// The loops supervisor.
pub struct FleetSupervisor;

/// Its state.
pub struct FleetState {
    ctx: Ctx,
    intensity: Intensity,
    settings: Arc<crate::config::FleetSettings>,
    configs: HashMap<String, Arc<LoopConfig>>,
    running: HashMap<ActorId, (String, ActorRef<LoopMsg>)>,
    restarts: HashMap<String, VecDeque<Instant>>,
    pending_restarts: usize,
    shutting_down: bool,
    done: Option<oneshot::Sender<()>>,
    /// Loops being removed: they are forgotten by the store once their actor has stopped.
    removals: HashMap<String, RpcReplyPort<Result<(), ControlError>>>,
    /// Loops whose configuration changed: started again with it once their actor has stopped.
    replacing: std::collections::HashSet<String>,
    /// Loops that left the fleet file: marked stopped once their actor has stopped.
    retiring: std::collections::HashSet<String>,
}

impl Actor for FleetSupervisor {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FleetMsg>,
        args: FleetArgs,
    ) -> Result<FleetState, ActorProcessingErr> {
        let mut state = FleetState {
            ctx: args.ctx,
            intensity: args.intensity,
            settings: Arc::new(args.settings),
            configs: args
                .loops
                .into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
            running: HashMap::new(),
            restarts: HashMap::new(),
            pending_restarts: 0,
            shutting_down: false,
            done: Some(args.done),
            removals: HashMap::new(),
            replacing: Default::default(),
            retiring: Default::default(),
        };
        // The registry: loops created through the API come back exactly as they were.
        let registered = state
            .ctx
            .read(|s| s.list_loops())
            .await?
            .into_iter()
            .filter_map(|r| r.config)
            .filter(|c| !state.configs.contains_key(&c.name))
            .collect::<Vec<_>>();
        for c in registered {
            state.configs.insert(c.name.clone(), Arc::new(c));
        }
        let mut names: Vec<String> = state.configs.keys().cloned().collect();
        names.sort();
        // Every loop of the fleet is in the registry from the first moment the fleet runs, so
        // that status and the API list it before its actor has booted.
        let known = state.ctx.read(|s| s.list_loops()).await?;
        let new: Vec<LoopRecord> = names
            .iter()
            .filter(|n| !known.iter().any(|k| &k.name == *n))
            .map(|n| LoopRecord::new(n))
            .collect();
        if !new.is_empty() {
            state
                .ctx
                .record(Batch {
                    loops: new,
                    ..Batch::default()
                })
                .await?;
        }
        for name in names {
            start_loop(&myself, &mut state, &name).await;
        }
        check_done(&mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<FleetMsg>,
        msg: FleetMsg,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FleetMsg::Restart(name) => {
                state.pending_restarts = state.pending_restarts.saturating_sub(1);
                if !state.shutting_down {
                    start_loop(&myself, state, &name).await;
                }
                check_done(state);
            }
            FleetMsg::Control(request, reply) => control(&myself, state, request, reply).await,
            FleetMsg::Shutdown => {
                state.shutting_down = true;
                for (_, actor) in state.running.values() {
                    let _ = actor.send_message(LoopMsg::Interrupt);
                }
                state.pending_restarts = 0;
                check_done(state);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FleetMsg>,
        evt: SupervisionEvent,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some((name, _)) = state.running.remove(&cell.get_id()) {
                    state
                        .ctx
                        .monitor()
                        .send(MonitorMsg::UnwatchLoop(name.clone()));
                    if reason.as_deref() == Some("killed")
                        && !state.shutting_down
                        && !state.removals.contains_key(&name)
                    {
                        // Killed by the monitor for not answering: a failure like a panic.
                        restart_or_give_up(&myself, state, &name, "stopped answering").await;
                    } else if state.retiring.remove(&name) {
                        retire(&state.ctx, &name).await;
                    } else if state.replacing.remove(&name) && !state.shutting_down {
                        start_loop(&myself, state, &name).await;
                    } else if let Some(reply) = state.removals.remove(&name) {
                        let _ = reply.send(forget(&state.ctx, &name).await);
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some((name, _)) = state.running.remove(&cell.get_id()) {
                    state
                        .ctx
                        .monitor()
                        .send(MonitorMsg::UnwatchLoop(name.clone()));
                    tracing::error!(loop_name = %name, %err, "loop actor failed");
                    if !state.shutting_down {
                        restart_or_give_up(&myself, state, &name, &err.to_string()).await;
                    }
                }
            }
            SupervisionEvent::ActorStarted(_) => {}
            other => tracing::debug!(?other, "unexpected supervision event"),
        }
        check_done(state);
        Ok(())
    }
}

async fn start_loop(myself: &ActorRef<FleetMsg>, state: &mut FleetState, name: &str) {
    start_loop_with(myself, state, name, true).await
}

async fn start_loop_with(
    myself: &ActorRef<FleetMsg>,
    state: &mut FleetState,
    name: &str,
    autostart: bool,
) {
    let Some(config) = state.configs.get(name).cloned() else {
        return;
    };
    let args = LoopArgs {
        ctx: state.ctx.clone(),
        config,
        autostart,
        fleet: state.settings.clone(),
    };
    match Actor::spawn_linked(None, LoopActor, args, myself.get_cell()).await {
        Ok((actor, _)) => {
            state
                .ctx
                .monitor()
                .send(MonitorMsg::WatchLoop(name.to_string(), actor.clone()));
            state
                .running
                .insert(actor.get_id(), (name.to_string(), actor));
        }
        // A failure in pre_start reaches only this caller, never the supervision events.
        Err(e) => {
            tracing::error!(loop_name = %name, error = %e, "loop actor failed to start");
            restart_or_give_up(myself, state, name, &e.to_string()).await;
        }
    }
}

async fn restart_or_give_up(
    myself: &ActorRef<FleetMsg>,
    state: &mut FleetState,
    name: &str,
    error: &str,
) {
    let window = state.intensity.window;
    let history = state.restarts.entry(name.to_string()).or_default();
    let backoff = match state.intensity.admit(history, Instant::now()) {
        Ok(backoff) => backoff,
        Err(restarts) => {
            let reason = LoopReason::RestartIntensity(format!(
                "{restarts} restarts within {}; last error: {error}",
                humantime::format_duration(window)
            ));
            mark_crashed(&state.ctx, name, reason).await;
            return;
        }
    };
    state.pending_restarts += 1;
    let name = name.to_string();
    myself.send_after(backoff, move || FleetMsg::Restart(name));
}

/// Forgets a removed loop (its record, tests and attempts; events and lessons stay) in one
/// transaction through the journal, after everything its actor recorded.
async fn forget(ctx: &Ctx, name: &str) -> Result<(), ControlError> {
    let batch = Batch {
        forget_loops: vec![name.to_string()],
        ..Batch::default()
    };
    ctx.record(batch)
        .await
        .map(drop)
        .map_err(ControlError::from)
}

/// Marks a loop that left the fleet file as stopped (`removed_from_config`); history stays.
async fn retire(ctx: &Ctx, name: &str) {
    set_loop_state(ctx, name, LoopState::Stopped, LoopReason::RemovedFromConfig).await;
}

async fn mark_crashed(ctx: &Ctx, name: &str, reason: LoopReason) {
    set_loop_state(ctx, name, LoopState::Crashed, reason.clone()).await;
    ctx.record_event(Event::new(
        EventKind::Alert,
        name,
        format!("loop `{name}` crashed: {reason}"),
    ))
    .await;
}

/// Records a loop's new state (its actor is not running), with its event.
async fn set_loop_state(ctx: &Ctx, name: &str, to: LoopState, reason: LoopReason) {
    let owned = name.to_string();
    let mut record = ctx
        .read(move |s| s.get_loop(&owned))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| LoopRecord::new(name));
    record.state = to;
    record.reason = Some(reason.clone());
    record.updated_at = Utc::now();
    let word = serde_json::to_value(to)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let result = ctx
        .record(Batch {
            loops: vec![record],
            events: vec![Event::new(EventKind::LoopState, name, word.clone())
                .with_data(serde_json::json!({"state": word, "reason": reason}))],
            ..Batch::default()
        })
        .await;
    if let Err(e) = result {
        tracing::error!(loop_name = %name, error = %e, "could not record the loop's state");
    }
}

fn check_done(state: &mut FleetState) {
    if state.running.is_empty() && state.pending_restarts == 0 {
        if let Some(done) = state.done.take() {
            let _ = done.send(());
        }
    }
}

fn actor_of(state: &FleetState, name: &str) -> Option<ActorRef<LoopMsg>> {
    state
        .running
        .values()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a.clone())
}

async fn control(
    myself: &ActorRef<FleetMsg>,
    state: &mut FleetState,
    request: Control,
    reply: RpcReplyPort<Result<(), ControlError>>,
) {
    if state.shutting_down {
        let _ = reply.send(Err(ControlError::Conflict("loopd is shutting down".into())));
        return;
    }
    let name = request.loop_name().to_string();
    match request {
        Control::AddLoop { config, start } => {
            if state.configs.contains_key(&name) {
                let _ = reply.send(Err(ControlError::Conflict(format!(
                    "a loop named `{name}` exists already"
                ))));
                return;
            }
            let mut record = LoopRecord::new(&name);
            record.config = Some((*config).clone());
            let result = state
                .ctx
                .record(Batch {
                    loops: vec![record],
                    events: vec![Event::new(EventKind::LoopState, &name, "created")
                        .with_data(serde_json::json!({"state": "idle", "reason": "created"}))],
                    ..Batch::default()
                })
                .await;
            if let Err(e) = result {
                let _ = reply.send(Err(e.into()));
                return;
            }
            state.configs.insert(name.clone(), Arc::new(*config));
            start_loop_with(myself, state, &name, start).await;
            let _ = reply.send(Ok(()));
        }
        Control::ReplaceLoop(config) => {
            if !state.configs.contains_key(&name) {
                let _ = reply.send(Err(ControlError::UnknownLoop(name)));
                return;
            }
            state.configs.insert(name.clone(), Arc::new(*config));
            match actor_of(state, &name) {
                Some(actor) => {
                    state.replacing.insert(name);
                    let _ = actor.send_message(LoopMsg::Interrupt);
                }
                None => start_loop(myself, state, &name).await,
            }
            let _ = reply.send(Ok(()));
        }
        Control::RetireLoop(_) => {
            if state.configs.remove(&name).is_none() {
                let _ = reply.send(Err(ControlError::UnknownLoop(name)));
                return;
            }
            match actor_of(state, &name) {
                Some(actor) => {
                    state.retiring.insert(name);
                    let _ = actor.send_message(LoopMsg::Interrupt);
                }
                None => retire(&state.ctx, &name).await,
            }
            let _ = reply.send(Ok(()));
        }
        Control::RemoveLoop(_) => {
            if state.configs.remove(&name).is_none() {
                let _ = reply.send(Err(ControlError::UnknownLoop(name)));
                return;
            }
            state.restarts.remove(&name);
            match actor_of(state, &name) {
                Some(actor) => {
                    state.removals.insert(name, reply);
                    let _ = actor.send_message(LoopMsg::Interrupt);
                }
                None => {
                    let _ = reply.send(forget(&state.ctx, &name).await);
                }
            }
        }
        other => {
            if !state.configs.contains_key(&name) {
                let _ = reply.send(Err(ControlError::UnknownLoop(name)));
                return;
            }
            match actor_of(state, &name) {
                Some(actor) => {
                    if let Err(e) = actor.send_message(LoopMsg::Control(other, reply)) {
                        tracing::error!(loop_name = %name, error = %e, "could not reach the loop actor");
                    }
                }
                None if matches!(other, Control::Start(_) | Control::Resume(_)) => {
                    // Crashed past its restart intensity: a person starts it afresh.
                    state.restarts.remove(&name);
                    start_loop(myself, state, &name).await;
                    let _ = reply.send(Ok(()));
                }
                None => {
                    let _ = reply.send(Err(ControlError::Conflict(format!(
                        "loop `{name}` is not running (crashed?); start it first"
                    ))));
                }
            }
        }
    }
}

/// How long a control request may take before the caller gives up.
const CONTROL_TIMEOUT_MS: u64 = 10_000;

/// What the API and the CLI use to drive a running fleet; cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetHandle {
    actor: ActorRef<FleetMsg>,
    ctx: Ctx,
}

impl FleetHandle {
    /// A handle on a running loops supervisor.
    pub fn new(actor: ActorRef<FleetMsg>, ctx: Ctx) -> Self {
        FleetHandle { actor, ctx }
    }

    /// The fleet's shared context (store reads, events).
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Applies a request and waits for its answer.
    pub async fn control(&self, request: Control) -> Result<(), ControlError> {
        match ractor::call_t!(self.actor, FleetMsg::Control, CONTROL_TIMEOUT_MS, request) {
            Ok(result) => result,
            Err(e) => Err(ControlError::Internal(format!(
                "the loops supervisor did not answer: {e}"
            ))),
        }
    }

    /// Interrupts every loop and stops the supervisor once they are down.
    pub fn shutdown(&self) {
        let _ = self.actor.send_message(FleetMsg::Shutdown);
    }
}
