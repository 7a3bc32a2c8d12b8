//! The monitor: the one place that decides an attempt is `stalled` (no output for
//! `stall_timeout`) or has overrun its time (`iteration_timeout`, or the test's `timeout`), and
//! that a loop actor stopped answering.
//!
//! Every read of agent output is a heartbeat, whether or not it ends a line: the attempt's
//! runner stamps a shared [`Heartbeat`]; the monitor reads the stamps on a short tick, so a quiet agent is noticed
//! within one tick of its timeout without a message per line. A loop actor that does not answer
//! a liveness ping within `ping_timeout` is killed; its supervisor restarts it.
//!
//! The monitor is a child of the supervision tree. The registrations (attempts with their
//! heartbeats and limits, loop actors to ping) are kept in its handle, not in the actor: a
//! restarted monitor goes on watching everything its predecessor watched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::attempt::{AttemptMsg, CancelReason};
use crate::loop_actor::LoopMsg;
use crate::model::{Event, EventKind};
use crate::runtime::Ctx;

/// How often the monitor looks at every attempt's heartbeat.
pub const TICK: Duration = Duration::from_millis(50);

/// The output clock of one attempt, stamped by its runner on every read of output.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    /// Milliseconds after `started` of the last read of output.
    last_output_ms: AtomicU64,
    /// Lines seen so far.
    lines: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that starts now.
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            started: Instant::now(),
            last_output_ms: AtomicU64::new(0),
            lines: AtomicU64::new(0),
        })
    }

    /// Output was read (any bytes, a whole line or not).
    pub fn stamp(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_output_ms.store(ms, Ordering::Relaxed);
    }

    /// One line of output.
    pub fn line(&self) {
        self.stamp();
        self.lines.fetch_add(1, Ordering::Relaxed);
    }

    /// Time since the last output (or since the start, before any).
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_output_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Identifies an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    /// The loop.
    pub loop_name: String,
    /// The test.
    pub test_id: String,
    /// The attempt number.
    pub number: u32,
}

/// What the monitor knows about a running attempt, for `status` and the health endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct AttemptHealth {
    /// The loop.
    pub loop_name: String,
    /// The test.
    pub test_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// Seconds since the agent started.
    pub running_for_s: f64,
    /// Seconds since the agent's last output (the last heartbeat).
    pub since_heartbeat_s: f64,
    /// Output lines so far.
    pub lines: u64,
    /// No output for more than half of `stall_timeout`: likely stuck, killed at the full timeout.
    pub stuck: bool,
}

/// Messages of the monitor.
#[derive(Debug)]
pub enum MonitorMsg {
    /// Watch a starting attempt.
    Watch {
        /// Which attempt.
        key: AttemptKey,
        /// Its output clock.
        heartbeat: Arc<Heartbeat>,
        /// Longest allowed silence.
        stall_timeout: Duration,
        /// Longest allowed run.
        time_limit: Duration,
        /// Where to send the verdict.
        attempt: ActorRef<AttemptMsg>,
    },
    /// The attempt's agent is gone.
    Unwatch(AttemptKey),
    /// Ping a loop actor now and then.
    WatchLoop(String, ActorRef<LoopMsg>),
    /// Stop pinging it.
    UnwatchLoop(String),
    /// Look at every heartbeat.
    Tick,
    /// Ping every loop actor.
    PingLoops,
    /// A loop did not answer.
    LoopSilent(String),
    /// Running attempts, for health reports.
    Health(RpcReplyPort<Vec<AttemptHealth>>),
}

/// Monitor settings.
#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    /// How often loop actors are pinged.
    pub ping_interval: Duration,
    /// How long a loop actor may take to answer.
    pub ping_timeout: Duration,
}

impl MonitorConfig {
    /// The monitor a fleet file asks for.
    pub fn from_settings(s: &crate::config::FleetSettings) -> Self {
        MonitorConfig {
            ping_interval: s.ping_interval,
            ping_timeout: s.ping_timeout,
        }
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(10),
        }
    }
}

/// Handle to the monitor: stays valid across restarts of the actor.
#[derive(Debug, Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

/// What outlives an incarnation of the monitor: the registrations. Callers write them here,
/// not into the actor's mailbox, so a restarted monitor watches every attempt and pings every
/// loop that its predecessor did, from its first tick.
#[derive(Debug, Default)]
struct Shared {
    /// The running incarnation, for the timers' messages and the loops' silence.
    current: Mutex<Option<ActorRef<MonitorMsg>>>,
    registered: Mutex<Registered>,
}

#[derive(Debug, Default)]
struct Registered {
    attempts: HashMap<AttemptKey, Watched>,
    loops: HashMap<String, ActorRef<LoopMsg>>,
}

impl Shared {
    fn registered(&self) -> std::sync::MutexGuard<'_, Registered> {
        // Every change to the registrations is one insert or remove: a panic while holding
        // the lock leaves them consistent.
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Option<ActorRef<MonitorMsg>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a registration; gives back any other message.
    fn register(&self, msg: MonitorMsg) -> Option<MonitorMsg> {
        let mut r = self.registered();
        match msg {
            MonitorMsg::Watch {
                key,
                heartbeat,
                stall_timeout,
                time_limit,
                attempt,
            } => {
                r.attempts.insert(
                    key,
                    Watched {
                        heartbeat,
                        stall_timeout,
                        time_limit,
                        attempt,
                        verdict_sent: false,
                    },
                );
            }
            MonitorMsg::Unwatch(key) => {
                r.attempts.remove(&key);
            }
            MonitorMsg::WatchLoop(name, actor) => {
                r.loops.insert(name, actor);
            }
            MonitorMsg::UnwatchLoop(name) => {
                r.loops.remove(&name);
            }
            other => return Some(other),
        }
        None
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new()
    }
}

impl Monitor {
    /// A handle without a running monitor yet: [`Monitor::spawn`] starts one.
    pub fn new() -> Monitor {
        Monitor {
            shared: Arc::default(),
        }
    }

    /// Starts a monitor on its own, unsupervised (for tests of the monitor alone).
    pub async fn start(ctx: Ctx, config: MonitorConfig) -> Result<Monitor, ractor::SpawnErr> {
        let m = Monitor::new();
        m.spawn(ctx, config, None).await?;
        Ok(m)
    }

    /// Starts an incarnation of the monitor, linked to `supervisor`; it watches everything
    /// registered so far.
    pub async fn spawn(
        &self,
        ctx: Ctx,
        config: MonitorConfig,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<ActorRef<MonitorMsg>, ractor::SpawnErr> {
        let args = (ctx, config, self.shared.clone());
        let (actor, _) = match supervisor {
            Some(s) => Actor::spawn_linked(None, MonitorActor, args, s).await?,
            None => Actor::spawn(None, MonitorActor, args).await?,
        };
        Ok(actor)
    }

    /// Registers or unregisters an attempt or a loop (kept across restarts of the monitor);
    /// any other message goes to the running monitor, and is lost only if none runs.
    pub fn send(&self, msg: MonitorMsg) {
        if let Some(other) = self.shared.register(msg) {
            if let Some(actor) = self.shared.current() {
                let _ = actor.send_message(other);
            }
        }
    }

    /// Running attempts and their heartbeats (read from the registrations: answered even
    /// while the monitor restarts).
    pub async fn health(&self) -> Vec<AttemptHealth> {
        attempt_health(&self.shared.registered())
    }

    /// Stops the monitor.
    pub fn stop(&self) {
        let current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(actor) = current {
            actor.stop(None);
        }
    }
}

fn attempt_health(r: &Registered) -> Vec<AttemptHealth> {
    r.attempts
        .iter()
        .map(|(k, w)| {
            let quiet = w.heartbeat.quiet_for();
            AttemptHealth {
                loop_name: k.loop_name.clone(),
                test_id: k.test_id.clone(),
                attempt: k.number,
                running_for_s: w.heartbeat.started.elapsed().as_secs_f64(),
                since_heartbeat_s: quiet.as_secs_f64(),
                lines: w.heartbeat.lines.load(Ordering::Relaxed),
                stuck: quiet * 2 > w.stall_timeout,
            }
        })
        .collect()
}

struct MonitorActor;

#[derive(Debug)]
struct Watched {
    heartbeat: Arc<Heartbeat>,
    stall_timeout: Duration,
    time_limit: Duration,
    attempt: ActorRef<AttemptMsg>,
    /// Set when the verdict went out, so an attempt is cancelled once, by any incarnation.
    verdict_sent: bool,
}

struct MonitorState {
    ctx: Ctx,
    config: MonitorConfig,
    shared: Arc<Shared>,
}

impl Actor for MonitorActor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = (Ctx, MonitorConfig, Arc<Shared>);

    async fn pre_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        (ctx, config, shared): (Ctx, MonitorConfig, Arc<Shared>),
    ) -> Result<MonitorState, ActorProcessingErr> {
        crate::fault::panic_point("monitor_start", "*");
        myself.send_interval(TICK, || MonitorMsg::Tick);
        myself.send_interval(config.ping_interval, || MonitorMsg::PingLoops);
        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(myself);
        Ok(MonitorState {
            ctx,
            config,
            shared,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MonitorMsg>,
        msg: MonitorMsg,
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(msg) = state.shared.register(msg) else {
            return Ok(());
        };
        match msg {
            MonitorMsg::Tick => {
                let mut r = state.shared.registered();
                for (key, w) in r.attempts.iter_mut().filter(|(_, w)| !w.verdict_sent) {
                    crate::fault::panic_point("monitor_tick", &key.loop_name);
                    let verdict = if w.heartbeat.started.elapsed() >= w.time_limit {
                        Some(CancelReason::TimedOut)
                    } else if w.heartbeat.quiet_for() >= w.stall_timeout {
                        Some(CancelReason::Stalled)
                    } else {
                        None
                    };
                    if let Some(reason) = verdict {
                        w.verdict_sent = true;
                        let _ = w.attempt.send_message(AttemptMsg::Cancel(reason));
                    }
                }
            }
            MonitorMsg::PingLoops => {
                let loops = state.shared.registered().loops.clone();
                for (name, actor) in loops {
                    let me = myself.clone();
                    let timeout = state.config.ping_timeout.as_millis() as u64;
                    tokio::spawn(async move {
                        if ractor::call_t!(actor, LoopMsg::Ping, timeout).is_err()
                            && actor.get_status() == ractor::ActorStatus::Running
                        {
                            let _ = me.send_message(MonitorMsg::LoopSilent(name));
                        }
                    });
                }
            }
            MonitorMsg::LoopSilent(name) => {
                let silent = state.shared.registered().loops.remove(&name);
                if let Some(actor) = silent {
                    tracing::error!(loop_name = %name, "loop actor stopped answering; killing it");
                    // Its supervisor sees it terminate as killed and restarts it from the store.
                    actor.kill();
                    state
                        .ctx
                        .record_event(Event::new(
                            EventKind::Alert,
                            &name,
                            format!(
                                "loop `{name}` did not answer within {}; restarted",
                                humantime::format_duration(state.config.ping_timeout)
                            ),
                        ))
                        .await;
                }
            }
            MonitorMsg::Health(reply) => {
                let _ = reply.send(attempt_health(&state.shared.registered()));
            }
            MonitorMsg::Watch { .. }
            | MonitorMsg::Unwatch(_)
            | MonitorMsg::WatchLoop(..)
            | MonitorMsg::UnwatchLoop(_) => {}
        }
        Ok(())
    }
}
