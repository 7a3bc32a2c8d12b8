//! `loopd serve [CONFIG] [--bind ADDR]`: run the fleet as a daemon and serve the API until
//! SIGTERM or Ctrl-C. Unlike `run` it does not end when the loops are done: new loops, injected
//! tests and resets put it back to work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use loopd_actors::config::{self, Fleet};
use loopd_actors::control::Control;
use loopd_actors::fleet::FleetHandle;
use loopd_actors::launch::{self, StartError};
use loopd_actors::statedir::StateDirLock;
use loopd_actors::store::Store;
use tokio::signal::unix::{signal, SignalKind};

use super::fleet_start;
use super::Exit;
use crate::api::server::{self, ApiConfig, ApiServer, DEFAULT_BIND};

/// Arguments of `loopd serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
    /// Where the API listens (`host:port`; port 0 picks a free one). Default 127.0.0.1:7433.
    #[arg(long, env = "LOOPD_BIND")]
    pub bind: Option<String>,
}

/// Runs the daemon until a signal; 0 after a graceful stop.
pub fn serve(file: &Path, args: &ServeArgs) -> anyhow::Result<Exit> {
    let prepared = match fleet_start::prepare(file, "serve") {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bind = args.bind.clone().unwrap_or_else(|| DEFAULT_BIND.into());
    let fleet_start::Prepared { fleet, lock, store } = prepared;
    let exit = runtime.block_on(serve_fleet(file, fleet, store, &lock, &bind));
    drop(lock);
    exit
}

/// Starts the API for a fleet that `run` or `serve` started, and says it is ready.
pub async fn try_start_api(
    handle: &FleetHandle,
    lock: &StateDirLock,
    fleet: &Fleet,
    bind: &str,
    command: &'static str,
) -> anyhow::Result<ApiServer> {
    let fleet_dir = fleet
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let fleet_dir = std::fs::canonicalize(&fleet_dir).unwrap_or(fleet_dir);
    let api = server::start(
        handle.clone(),
        lock,
        ApiConfig {
            bind: bind.to_string(),
            command,
            fleet_dir,
            loops: fleet.loops.clone(),
        },
    )
    .await?;
    api.state
        .set_templates_dir(fleet.settings.templates_dir.clone());
    api.state.set_ready(true);
    Ok(api)
}

/// [`try_start_api`] for `run`, where the API is a convenience: a failure is a warning.
pub async fn start_api(
    handle: &FleetHandle,
    lock: &StateDirLock,
    fleet: &Fleet,
    bind: &str,
    command: &'static str,
) -> Option<ApiServer> {
    match try_start_api(handle, lock, fleet, bind, command).await {
        Ok(api) => Some(api),
        Err(e) => {
            say!("loopd {command}: the API is not available: {e:#}");
            None
        }
    }
}

async fn serve_fleet(
    file: &Path,
    mut fleet: Fleet,
    store: Store,
    lock: &StateDirLock,
    bind: &str,
) -> anyhow::Result<Exit> {
    let running = match launch::start(&fleet, store).await {
        Ok(running) => running,
        Err(StartError::Workdir(e)) => {
            say!("loopd serve: {e}");
            return Ok(Exit::Invalid);
        }
        Err(e) => return Err(super::fleet_start::start_failed(e)),
    };
    let api = match try_start_api(running.handle(), lock, &fleet, bind, "serve").await {
        Ok(api) => api,
        Err(e) => {
            say!("loopd serve: {e:#}");
            running.stop().await?;
            return Ok(Exit::Invalid);
        }
    };
    let _ = super::out(&format!("loopd serve: listening on http://{}\n", api.addr));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let handle = running.handle().clone();
    let until_asked = async {
        let mut watchdog = tokio::time::interval(watchdog_interval());
        let mut sighup = signal(SignalKind::hangup())?;
        let mut signalled = std::pin::pin!(fleet_start::shutdown_signal());
        // `POST /api/shutdown` (`loopd shutdown`): the same graceful stop as SIGTERM.
        let mut asked = std::pin::pin!(api.state.shutdown_requested());
        loop {
            tokio::select! {
                _ = &mut signalled => break,
                _ = &mut asked => break,
                _ = sighup.recv() => reload(file, &mut fleet, &handle).await,
                _ = watchdog.tick() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
        say!("loopd serve: stopping: ending the running agents' process groups ...");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        api.state.set_ready(false);
        anyhow::Ok(())
    };
    let mut asked = Ok(());
    let stopped = running.run_until(async { asked = until_asked.await }).await;
    api.stop().await;
    asked?;
    stopped?;
    Ok(Exit::Ok)
}

/// Half the systemd watchdog period, or an hour when there is no watchdog.
fn watchdog_interval() -> Duration {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Duration::from_micros(usec / 2)
    } else {
        Duration::from_secs(3600)
    }
}

/// SIGHUP: re-reads the fleet file. An invalid one is refused with its report and the running
/// fleet is left as it is; loops new to the file are added and started. Loops removed from or
/// changed in the file are reported: applying those needs a restart (their history stays).
async fn reload(file: &Path, running: &mut Fleet, handle: &FleetHandle) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let file = file.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || {
        let report = config::validate_fleet(&file);
        if report.is_empty() {
            config::load_fleet(&file)
        } else {
            Err(report)
        }
    })
    .await;
    let new = match checked {
        Ok(Ok(f)) => {
            fleet_start::keep_secrets_from_agents(&f);
            f
        }
        Ok(Err(report)) => {
            say!("loopd serve: SIGHUP: the new fleet file is invalid; the old one keeps running\n{report}");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            return;
        }
        Err(e) => {
            say!("loopd serve: SIGHUP: {e}");
            return;
        }
    };
    if new.pricing != running.pricing {
        handle.ctx().set_pricing(new.pricing.clone());
        running.pricing = new.pricing.clone();
        say!("loopd serve: SIGHUP: the [pricing] table changed; attempts that end from now on use it");
    }
    for lp in &new.loops {
        match running.loops.iter().find(|l| l.name == lp.name) {
            None => {
                let request = Control::AddLoop {
                    config: Box::new(lp.clone()),
                    start: true,
                };
                match handle.control(request).await {
                    Ok(()) => {
                        say!("loopd serve: SIGHUP: added loop `{}`", lp.name);
                        running.loops.push(lp.clone());
                    }
                    Err(e) => say!("loopd serve: SIGHUP: loop `{}`: {e}", lp.name),
                }
            }
            Some(old) if old != lp => {
                // Applied to that loop alone: its attempt is interrupted (not counted) and its
                // actor restarted with the new configuration; its history stays.
                match handle
                    .control(Control::ReplaceLoop(Box::new(lp.clone())))
                    .await
                {
                    Ok(()) => {
                        say!(
                            "loopd serve: SIGHUP: applied the changes to loop `{}`",
                            lp.name
                        );
                        if let Some(slot) = running.loops.iter_mut().find(|l| l.name == lp.name) {
                            *slot = lp.clone();
                        }
                    }
                    Err(e) => say!("loopd serve: SIGHUP: loop `{}`: {e}", lp.name),
                }
            }
            Some(_) => {}
        }
    }
    let gone: Vec<String> = running
        .loops
        .iter()
        .filter(|old| !new.loops.iter().any(|l| l.name == old.name))
        .map(|l| l.name.clone())
        .collect();
    for name in gone {
        // Stopped, not forgotten: its history stays in the store (DELETE /api/loops/:id forgets).
        match handle.control(Control::RetireLoop(name.clone())).await {
            Ok(()) => {
                say!("loopd serve: SIGHUP: loop `{name}` left the fleet file; stopped");
                running.loops.retain(|l| l.name != name);
            }
            Err(e) => say!("loopd serve: SIGHUP: loop `{name}`: {e}"),
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}
