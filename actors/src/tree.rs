//! The services supervisor: the scheduler and the monitor as children of the supervision tree,
//! one_for_one, restarted with the same intensity and backoff as loop actors.
//!
//! A member that panics (or is killed) is started again after a backoff; while it is down its
//! handle keeps what must survive (the scheduler's book of grants, the monitor's registrations),
//! and [`TreeHealth`] says `restarting`, for `/readyz`, `/healthz` and `/metrics`. A member that
//! fails more than `max_restarts` times within `restart_window` is given up: it is `failed`, an
//! alert is raised, and waiting loops are told the scheduler is gone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fleet::Intensity;
use crate::model::{Event, EventKind};
use crate::monitor::{Monitor, MonitorConfig};
use crate::runtime::Ctx;
use crate::scheduler::{Scheduler, SchedulerConfig};

/// A child of the services supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// Agent slots and providers' health.
    Scheduler,
    /// Heartbeats, stall and time limits, loop liveness.
    Monitor,
}

impl Member {
    /// The member's name in health reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Member::Scheduler => "scheduler",
            Member::Monitor => "monitor",
        }
    }
}

/// Where a member of the tree stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Running.
    Running,
    /// Failed; started again after its backoff.
    Restarting,
    /// Failed more often than the restart intensity allows; not started again.
    Failed,
}

/// One member's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberHealth {
    /// `scheduler` or `monitor`.
    pub name: String,
    /// Where it stands.
    pub state: MemberState,
    /// Restarts since loopd started.
    pub restarts: u64,
    /// What its last failure said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The health of the tree's members, shared with the API; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TreeHealth(Arc<Mutex<BTreeMap<Member, MemberHealth>>>);

impl TreeHealth {
    /// Every member, by name.
    pub fn members(&self) -> Vec<MemberHealth> {
        self.lock().values().cloned().collect()
    }

    /// True when every member runs.
    pub fn all_running(&self) -> bool {
        self.lock()
            .values()
            .all(|m| m.state == MemberState::Running)
    }

    /// True when a member was given up.
    pub fn any_failed(&self) -> bool {
        self.given_up().is_some()
    }

    /// The first member given up, as an error for the exit code.
    pub fn given_up(&self) -> Option<GivenUp> {
        self.lock()
            .values()
            .find(|m| m.state == MemberState::Failed)
            .map(|m| GivenUp {
                member: m.name.clone(),
                restarts: m.restarts,
                last_error: m.last_error.clone().unwrap_or_default(),
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Member, MemberHealth>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, member: Member, state: MemberState, error: Option<String>) {
        let mut all = self.lock();
        let m = all.entry(member).or_insert_with(|| MemberHealth {
            name: member.name().to_string(),
            state,
            restarts: 0,
            last_error: None,
        });
        if state == MemberState::Restarting {
            m.restarts += 1;
        }
        m.state = state;
        if error.is_some() {
            m.last_error = error;
        }
    }
}

/// A member of the tree failed more often than the restart intensity allows: loopd cannot go
/// on without a restart.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {member} failed after {restarts} restarts and was given up: {last_error}")]
pub struct GivenUp {
    /// `scheduler` or `monitor`.
    pub member: String,
    /// Its restarts.
    pub restarts: u64,
    /// Its last failure.
    pub last_error: String,
}

/// Messages of the services supervisor.
#[derive(Debug)]
pub enum TreeMsg {
    /// Start (again) this member.
    Restart(Member),
}

/// Arguments of the services supervisor.
pub struct TreeArgs {
    /// The fleet's context (its scheduler and monitor handles are the members').
    pub ctx: Ctx,
    /// The scheduler's handle and settings.
    pub scheduler: (Scheduler, SchedulerConfig),
    /// The monitor's handle and settings.
    pub monitor: (Monitor, MonitorConfig),
    /// Restart intensity.
    pub intensity: Intensity,
    /// Where the members' health is reported.
    pub health: TreeHealth,
}

/// The services supervisor.
pub struct ServicesSupervisor;

/// Its state.
pub struct TreeState {
    args: TreeArgs,
    running: HashMap<ActorId, Member>,
    restarts: HashMap<Member, VecDeque<Instant>>,
}

impl Actor for ServicesSupervisor {
    type Msg = TreeMsg;
    type State = TreeState;
    type Arguments = TreeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TreeMsg>,
        args: TreeArgs,
    ) -> Result<TreeState, ActorProcessingErr> {
        let mut state = TreeState {
            args,
            running: HashMap::new(),
            restarts: HashMap::new(),
        };
        for member in [Member::Scheduler, Member::Monitor] {
            start(&myself, &mut state, member).await;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<TreeMsg>,
        msg: TreeMsg,
        state: &mut TreeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TreeMsg::Restart(member) => start(&myself, state, member).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TreeMsg>,
        evt: SupervisionEvent,
        state: &mut TreeState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(member) = state.running.remove(&cell.get_id()) {
                    tracing::error!(member = member.name(), %err, "member of the tree failed");
                    restart_or_give_up(&myself, state, member, err.to_string()).await;
                }
            }
            // A member stops only when the tree is stopped; anything else (a kill) is a failure.
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(member) = state.running.remove(&cell.get_id()) {
                    let why = reason.unwrap_or_else(|| "stopped".to_string());
                    tracing::error!(member = member.name(), reason = %why, "member of the tree ended");
                    restart_or_give_up(&myself, state, member, why).await;
                }
            }
            SupervisionEvent::ActorStarted(_) => {}
            other => tracing::debug!(?other, "unexpected supervision event"),
        }
        Ok(())
    }
}

/// Starts `member`; a start that fails (its `pre_start` panicked) counts as a failure. Never
/// propagates: the tree must outlive its members' failures.
async fn start(myself: &ActorRef<TreeMsg>, state: &mut TreeState, member: Member) {
    let ctx = state.args.ctx.clone();
    let cell = Some(myself.get_cell());
    let started = match member {
        Member::Scheduler => {
            let (s, config) = &state.args.scheduler;
            s.spawn(ctx, *config, cell).await.map(|a| a.get_id())
        }
        Member::Monitor => {
            let (m, config) = &state.args.monitor;
            m.spawn(ctx, *config, cell).await.map(|a| a.get_id())
        }
    };
    match started {
        Ok(id) => {
            state.running.insert(id, member);
            state.args.health.set(member, MemberState::Running, None);
        }
        Err(e) => {
            tracing::error!(member = member.name(), error = %e, "member of the tree failed to start");
            restart_or_give_up(myself, state, member, e.to_string()).await;
        }
    }
}

async fn restart_or_give_up(
    myself: &ActorRef<TreeMsg>,
    state: &mut TreeState,
    member: Member,
    error: String,
) {
    let intensity = state.args.intensity;
    let history = state.restarts.entry(member).or_default();
    let name = member.name();
    match intensity.admit(history, Instant::now()) {
        Ok(backoff) => {
            state
                .args
                .health
                .set(member, MemberState::Restarting, Some(error.clone()));
            state
                .args
                .ctx
                .record_event(Event::new(
                    EventKind::Alert,
                    "",
                    format!("the {name} failed and is restarted: {error}"),
                ))
                .await;
            myself.send_after(backoff, move || TreeMsg::Restart(member));
        }
        Err(restarts) => {
            state
                .args
                .health
                .set(member, MemberState::Failed, Some(error.clone()));
            if member == Member::Scheduler {
                // No loop may wait for a slot that will never come.
                state.args.scheduler.0.close();
            }
            state
                .args
                .ctx
                .record_event(Event::new(
                    EventKind::Alert,
                    "",
                    format!(
                        "the {name} failed {restarts} times within {} and is given up; loopd needs a restart: {error}",
                        humantime::format_duration(intensity.window)
                    ),
                ))
                .await;
        }
    }
}
