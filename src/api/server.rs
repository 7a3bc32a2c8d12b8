//! Serving the API: bind, record the address in `daemon.json`, stop gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use loopd_actors::config::LoopConfig;
use loopd_actors::control::{Control, ControlError};
use loopd_actors::fleet::FleetHandle;
use loopd_actors::statedir::{DaemonInfo, StateDirLock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{auth, router, ApiState, AuthPolicy, Controller};

/// Where the API listens unless `--bind` or `LOOPD_BIND` say otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:7433";

impl Controller for FleetHandle {
    fn control(&self, request: Control) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(FleetHandle::control(self, request))
    }
}

/// A running API server; dropping it does not stop it, [`ApiServer::stop`] does.
pub struct ApiServer {
    /// The address it got (port 0 resolved).
    pub addr: SocketAddr,
    /// Its state, to say when the fleet is ready.
    pub state: ApiState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    /// Stops accepting, lets open requests finish (SSE streams are cut) and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // Open SSE streams never finish on their own: give requests a moment, then go.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

/// What `run` and `serve` start an API with.
pub struct ApiConfig {
    /// `host:port`; port 0 picks a free one.
    pub bind: String,
    /// `run` or `serve` (recorded in `daemon.json`).
    pub command: &'static str,
    /// The fleet file's folder (relative paths of created loops resolve against it).
    pub fleet_dir: PathBuf,
    /// The fleet file's loops.
    pub loops: Vec<LoopConfig>,
}

/// Binds, records the address in `daemon.json`, and serves in the background.
pub async fn start(
    handle: FleetHandle,
    lock: &StateDirLock,
    config: ApiConfig,
) -> anyhow::Result<ApiServer> {
    use anyhow::Context;
    let ctx = handle.ctx().clone();
    let token =
        auth::load_or_create(ctx.state_dir()).context("reading or creating the API token")?;
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    let policy = AuthPolicy {
        token,
        everything: !addr.ip().is_loopback(),
    };
    let state = ApiState::new(ctx, Arc::new(handle), config.fleet_dir, config.loops);
    let app = router(state.clone(), policy);
    let pid = std::process::id() as i32;
    lock.write_info(&DaemonInfo {
        pid,
        start_time: loopd_actors::process::proc_start_time(pid).unwrap_or(0),
        command: config.command.to_string(),
        addr: Some(addr.to_string()),
    })
    .context("writing daemon.json")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "API listening");
    Ok(ApiServer {
        addr,
        state,
        stop,
        task,
    })
}
