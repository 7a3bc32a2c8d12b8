//! What `run` and `serve` do before the fleet starts ([`loopd_actors::launch::start`]):
//! validate, load, take the state directory, open the store, refuse a store that forgot its
//! loops, and one shutdown signal.

use std::path::Path;

use loopd_actors::config::{self, Fleet};
use loopd_actors::launch::StartError;
use loopd_actors::statedir::StateDirLock;
use loopd_actors::store::Store;
use tokio::signal::unix::{signal, SignalKind};

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

/// The error of a fleet that did not start, for the exit code: the store's own error when the
/// store is the cause (its chain decides the code, see [`Exit::of_error`]).
pub fn start_failed(e: StartError) -> anyhow::Error {
    match e {
        StartError::Store(e) => e.into(),
        e => e.into(),
    }
}

/// The signal that asked a process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

/// The one shutdown signal of `run` and `serve`: resolves on the first Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> Signal {
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops loopd");
            let _ = tokio::signal::ctrl_c().await;
            return Signal::Interrupt;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Interrupt,
        _ = sigterm.recv() => Signal::Terminate,
    }
}
