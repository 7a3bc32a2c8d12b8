//! The fleet, started and stopped with one call each: the one start-up that `run`, `serve` and
//! the tests share.
//!
//! [`start`] opens the fleet's context (the journal, the services supervisor over the scheduler
//! and the monitor), reconciles what a dead predecessor left (attempts left `running` become
//! `interrupted`, their process groups reaped), readies the workdirs, starts the notifier, then
//! the loops supervisor with its loops. [`Running::run_until`] runs it until a shutdown future
//! resolves, then stops it gracefully: every loop interrupted and recorded, the supervisors
//! stopped, the last webhooks given a moment, the store flushed.

use std::future::Future;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Fleet;
use crate::fleet::{FleetArgs, FleetHandle, FleetMsg, FleetSupervisor, Intensity};
use crate::loop_actor::prepare_workdir;
use crate::monitor::MonitorConfig;
use crate::notifier::Notifier;
use crate::reconcile;
use crate::reporter::Reporter;
use crate::runtime::Ctx;
use crate::scheduler::SchedulerConfig;
use crate::store::{Store, StoreError};

/// How long a stop waits for every loop to be down.
const LOOPS_DOWN: Duration = Duration::from_secs(60);
/// How long a stop waits for the interrupted attempts to be recorded.
const ATTEMPTS_RECORDED: Duration = Duration::from_secs(60);
/// How long a stop waits for webhook deliveries still queued.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(5);

/// Why a fleet did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A loop's workdir cannot be made ready (the message names the loop and the cause).
    #[error("{0}")]
    Workdir(String),
    /// The store cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An actor of the tree did not start.
    #[error("starting {what}: {error}")]
    Spawn {
        /// Which actor.
        what: &'static str,
        /// Why.
        #[source]
        error: ractor::SpawnErr,
    },
}

/// A fleet whose tree runs.
pub struct Running {
    /// The fleet's shared context.
    ctx: Ctx,
    /// The loops supervisor.
    supervisor: ActorRef<FleetMsg>,
    /// Resolves when the loops supervisor has stopped.
    join: JoinHandle<()>,
    /// True once every loop has stopped (clones wait for it in [`Running::finished`]).
    finished: watch::Receiver<bool>,
    /// What the API drives the fleet with.
    handle: FleetHandle,
    /// The webhooks' deliveries (none without `[[webhooks]]`); dropping it stops them.
    notifier: Option<Notifier>,
    /// The scheduled report (none without `report_every`); dropping it stops it.
    reporter: Option<Reporter>,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Webhook deliveries still queued when the stop gave up waiting (they stay `pending` in
    /// the delivery log, for the next start).
    pub webhooks_pending: bool,
}

/// Starts `fleet` over the open `store`: the context and its services, reconciliation, the
/// workdirs, the notifier, the loops supervisor and its loops (the fleet file's and the
/// registry's).
pub async fn start(fleet: &Fleet, store: Store) -> Result<Running, StartError> {
    let ctx = Ctx::start_with(
        Ctx::new(store, &fleet.settings.state_dir),
        SchedulerConfig::from_settings(&fleet.settings),
        MonitorConfig::from_settings(&fleet.settings),
        Intensity::from_settings(&fleet.settings),
    )
    .await
    .map_err(|error| StartError::Spawn {
        what: "the services supervisor",
        error,
    })?;
    ctx.set_pricing(fleet.pricing.clone());
    reconcile_and_ready(&ctx, fleet).await?;
    // Subscribed before the first loop starts, so that no event is missed.
    let notifier = Notifier::start(&ctx, fleet.webhooks.clone()).await;
    // After the notifier, which must hear the first report.
    let reporter = Reporter::start(&ctx, fleet.settings.report_every);
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let spawned = Actor::spawn(
        None,
        FleetSupervisor,
        FleetArgs {
            ctx: ctx.clone(),
            loops: fleet.loops.clone(),
            intensity: Intensity::from_settings(&fleet.settings),
            settings: fleet.settings.clone(),
            done: done_tx,
        },
    )
    .await;
    let (supervisor, join) = match spawned {
        Ok(s) => s,
        Err(error) => {
            ctx.stop_services();
            // A store that cannot be made durable is the cause worth naming.
            return Err(match ctx.store_failure() {
                Some(e) => StartError::Store(e),
                None => StartError::Spawn {
                    what: "the loops supervisor",
                    error,
                },
            });
        }
    };
    let (finished_tx, finished) = watch::channel(false);
    tokio::spawn(async move {
        if done.await.is_ok() {
            let _ = finished_tx.send(true);
        }
    });
    let handle = FleetHandle::new(supervisor.clone(), ctx.clone());
    Ok(Running {
        ctx,
        supervisor,
        join,
        finished,
        handle,
        notifier,
        reporter,
    })
}

/// Attempts a dead predecessor left `running` become `interrupted` (before anything else), then
/// the workdirs of the fleet file's loops are made ready.
async fn reconcile_and_ready(ctx: &Ctx, fleet: &Fleet) -> Result<(), StartError> {
    for lp in &fleet.loops {
        let name = lp.name.clone();
        let checkpoint = ctx
            .read(move |s| s.get_loop(&name))
            .await?
            .and_then(|r| r.checkpoint);
        reconcile::interrupted_attempts(ctx, Some(lp), checkpoint.as_deref()).await?;
    }
    reconcile::interrupted_attempts(ctx, None, None).await?;
    for lp in &fleet.loops {
        let name = lp.name.clone();
        // A loop with git work pending keeps that attempt's files in its tree (`hold`).
        let held = ctx
            .read(move |s| s.get_loop(&name))
            .await?
            .is_some_and(|r| r.pending_git.is_some());
        if !held {
            // A merge killed between its checkpoint move and the workdir's reset.
            crate::loop_actor::finish_moved_checkpoint(ctx, lp)
                .await
                .map_err(StartError::Workdir)?;
        }
        prepare_workdir(ctx.state_dir(), lp, held)
            .await
            .map_err(StartError::Workdir)?;
    }
    Ok(())
}

impl Running {
    /// The fleet's shared context.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// What the API and the CLI drive the fleet with.
    pub fn handle(&self) -> &FleetHandle {
        &self.handle
    }

    /// Resolves once every loop has stopped (finished, paused, crashed, or shut down); a loop
    /// added later through the API does not undo it.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut finished = self.finished.clone();
        async move {
            // An error means the supervisor is gone: its loops are too.
            let _ = finished.wait_for(|done| *done).await;
        }
    }

    /// Runs the fleet until `shutdown` resolves, then stops it ([`Running::stop`]).
    pub async fn run_until(self, shutdown: impl Future) -> Result<Stopped, StoreError> {
        shutdown.await;
        self.stop().await
    }

    /// Stops the fleet: every loop is interrupted (its attempt recorded `interrupted`, never
    /// counted) and waited for, the loops supervisor, the notifier (after a short wait for the
    /// last deliveries) and the services stop, and the store is flushed.
    pub async fn stop(self) -> Result<Stopped, StoreError> {
        self.handle.shutdown();
        let _ = tokio::time::timeout(LOOPS_DOWN, self.finished()).await;
        // Attempts end as `interrupted` once their process groups are down; wait for the record
        // (unless the store has failed: what it records now may never come).
        let recorded = async {
            while self.ctx.store_failure().is_none() {
                let running = self
                    .ctx
                    .read(|s| s.unfinished_attempts())
                    .await
                    .map(|a| a.len())
                    .unwrap_or(0);
                if running == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let _ = tokio::time::timeout(ATTEMPTS_RECORDED, recorded).await;
        self.supervisor.stop(None);
        let _ = self.join.await;
        // No report of a fleet that is going away.
        drop(self.reporter);
        // The last events (the loops finishing) are worth a short wait; a dead endpoint is not
        // worth holding the exit for. What is left stays `pending` in the delivery log.
        let webhooks_pending = match &self.notifier {
            Some(n) => !n.drain(WEBHOOK_DRAIN).await,
            None => false,
        };
        if let Some(n) = &self.notifier {
            n.stop();
        }
        self.ctx.stop_services();
        self.ctx.store().flush()?;
        Ok(Stopped { webhooks_pending })
    }
}
