//! The start-up that `run` and `serve` share: validate, load, take the state directory, open the
//! store, reconcile what a dead predecessor left, ready the workdirs, start the loops supervisor.

use std::path::Path;

use anyhow::Context;
use loopd_actors::config::{self, Fleet};
use loopd_actors::fleet::{FleetArgs, FleetHandle, FleetMsg, FleetSupervisor, Intensity};
use loopd_actors::loop_actor::prepare_workdir;
use loopd_actors::monitor::MonitorConfig;
use loopd_actors::notifier::Notifier;
use loopd_actors::reconcile;
use loopd_actors::reporter::Reporter;
use loopd_actors::runtime::Ctx;
use loopd_actors::scheduler::SchedulerConfig;
use loopd_actors::statedir::StateDirLock;
use loopd_actors::store::Store;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Exit;

/// A valid fleet whose state directory this process holds.
pub struct Prepared {
    /// The loaded fleet, paths absolute.
    pub fleet: Fleet,
    /// Held until the process ends; `daemon.json` goes with it.
    pub lock: StateDirLock,
    /// The open store.
    pub store: Store,
}

/// Validates and loads the fleet, takes the state directory for `command` and opens the store;
/// every refusal is printed and mapped to [`Exit::Invalid`].
pub fn prepare(file: &Path, command: &str) -> Result<Prepared, Exit> {
    let report = config::validate_fleet(file);
    if !report.is_empty() {
        say!("{report}");
        say!("loopd {command}: refusing to start an invalid fleet");
        return Err(Exit::Invalid);
    }
    let fleet = config::load_fleet(file).map_err(|report| {
        say!("{report}");
        Exit::Invalid
    })?;
    let secrets = config::unresolved_secrets(&fleet);
    if !secrets.is_empty() {
        say!("{secrets}");
        say!("loopd {command}: a webhook's secret is missing from the environment");
        return Err(Exit::Invalid);
    }
    keep_secrets_from_agents(&fleet);
    let lock = StateDirLock::acquire(&fleet.settings.state_dir, command).map_err(|e| {
        say!("loopd {command}: {e}");
        Exit::Invalid
    })?;
    let store = Store::open(&fleet.settings.state_dir).map_err(|e| {
        say!("loopd {command}: {e}");
        Exit::Invalid
    })?;
    refuse_forgotten(&format!("loopd {command}"), &fleet, Some(&store))?;
    Ok(Prepared { fleet, lock, store })
}

/// Refuses a store (`None`: no store at all) that knows nothing of a loop whose workdir's
/// history holds loopd's passes: its ledger was lost, and starting would redo every test.
/// `who` starts each line printed (`loopd run`).
pub fn refuse_forgotten(who: &str, fleet: &Fleet, store: Option<&Store>) -> Result<(), Exit> {
    // On a thread of its own: `prepare` is also called from inside a runtime (the API's tests),
    // where a second runtime cannot block.
    let forgotten = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(loopd_actors::ledger::forgotten_loops(store, &fleet.loops))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("the history check panicked".into()))
    })
    .map_err(|e| {
        say!("{who}: {e}");
        Exit::Invalid
    })?;
    if forgotten.is_empty() {
        return Ok(());
    }
    say!(
        "{who}: {}",
        loopd_actors::ledger::forgotten_message(&fleet.settings.state_dir, &forgotten)
    );
    Err(Exit::Invalid)
}

/// Keeps the fleet's secrets that come from loopd's environment (webhook `secret_env`
/// variables, `LOOPD_TOKEN`) out of the environment of agents and verify commands.
pub fn keep_secrets_from_agents(fleet: &Fleet) {
    loopd_actors::process::keep_from_children(
        fleet
            .webhooks
            .iter()
            .filter_map(|h| h.secret_env.clone())
            .chain(["LOOPD_TOKEN".to_string()]),
    );
}

/// The fleet's context, after attempts left `running` became `interrupted` and the workdirs of
/// loops with checkpoints are ready. `Err` is a message for the user (a workdir refused).
pub async fn open_ctx(fleet: &Fleet, store: Store) -> anyhow::Result<Result<Ctx, String>> {
    let ctx = Ctx::start_with(
        Ctx::new(store, &fleet.settings.state_dir),
        SchedulerConfig::from_settings(&fleet.settings),
        MonitorConfig::from_settings(&fleet.settings),
        Intensity::from_settings(&fleet.settings),
    )
    .await?;
    // Attempts a dead predecessor left running become `interrupted`, before anything else.
    for lp in &fleet.loops {
        let name = lp.name.clone();
        let checkpoint = ctx
            .read(move |s| s.get_loop(&name))
            .await?
            .and_then(|r| r.checkpoint);
        reconcile::interrupted_attempts(&ctx, Some(lp), checkpoint.as_deref()).await?;
    }
    reconcile::interrupted_attempts(&ctx, None, None).await?;
    for lp in &fleet.loops {
        let name = lp.name.clone();
        // A loop with git work pending keeps that attempt's files in its tree (`hold`).
        let held = ctx
            .read(move |s| s.get_loop(&name))
            .await?
            .is_some_and(|r| r.pending_git.is_some());
        if let Err(e) = prepare_workdir(ctx.state_dir(), lp, held).await {
            return Ok(Err(e));
        }
    }
    Ok(Ok(ctx))
}

/// A running loops supervisor.
pub struct Started {
    /// The actor, for `FleetMsg::Shutdown` and `stop`.
    pub supervisor: ActorRef<FleetMsg>,
    /// Resolves when the actor has stopped.
    pub join: JoinHandle<()>,
    /// Told when every loop has stopped.
    pub done: oneshot::Receiver<()>,
    /// What the API drives the fleet with.
    pub handle: FleetHandle,
    /// The webhooks' deliveries (none without `[[webhooks]]`); dropping it stops them.
    #[allow(dead_code)] // only held: it runs on its own tasks for as long as the fleet does
    pub notifier: Option<Notifier>,
    /// The scheduled report (none without `report_every`); dropping it stops it.
    #[allow(dead_code)] // only held, as the notifier
    pub reporter: Option<Reporter>,
}

/// Starts the loops supervisor over `ctx` with the fleet file's loops (the registry adds the
/// loops created through the API).
pub async fn spawn(ctx: &Ctx, fleet: &Fleet) -> anyhow::Result<Started> {
    // Subscribed before the first loop starts, so that no event is missed.
    let notifier = Notifier::start(ctx, fleet.webhooks.clone()).await;
    // After the notifier, which must hear the first report.
    let reporter = Reporter::start(ctx, fleet.settings.report_every);
    let (done_tx, done) = oneshot::channel();
    let (supervisor, join) = Actor::spawn(
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
    .await
    .context("starting the loops supervisor")?;
    let handle = FleetHandle::new(supervisor.clone(), ctx.clone());
    Ok(Started {
        supervisor,
        join,
        done,
        handle,
        notifier,
        reporter,
    })
}
