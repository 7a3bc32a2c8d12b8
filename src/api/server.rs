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

/// How long a connection may take to send a request's header, counted from the moment the
/// server waits for it: a half-sent header (slowloris) and a connection that stays idle
/// between requests (or never sends one) are both closed after it. hyper runs one timer for
/// both, so the idle timeout is the same figure.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Stops accepting, ends the event streams (each with a `shutdown` event), lets open requests
    /// finish and waits.
    pub async fn stop(self) {
        // Event streams first: they end with `shutdown` instead of being cut.
        self.state.close();
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
    let mut app = router(state.clone(), policy);
    if addr.ip().is_loopback() {
        app = app.layer(axum::middleware::from_fn(super::host::loopback_hosts_only));
    }
    let pid = std::process::id() as i32;
    lock.write_info(&DaemonInfo {
        pid,
        start_time: loopd_actors::process::proc_start_time(pid).unwrap_or(0),
        command: config.command.to_string(),
        addr: Some(addr.to_string()),
    })
    .context("writing daemon.json")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, stopped));
    tracing::info!(%addr, "API listening");
    Ok(ApiServer {
        addr,
        state,
        stop,
        task,
    })
}

/// Accepts connections until `stopped`, serving each with HTTP/1.1 and
/// [`HEADER_READ_TIMEOUT`]; then lets open requests finish.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, do not spin.
                    tracing::warn!(error = %e, "API: cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
