//! The HTTP API of a running fleet (axum): REST under `/api`, the SSE tail, `/metrics`,
//! `/healthz`, `/readyz` and the OpenAPI document.
//!
//! # Layout
//! - `error`: [`ApiError`], the one JSON error shape with stable codes.
//! - `auth`: the bearer token (where it comes from) and the middleware that asks for it.
//! - `loops`: loops, tests, control, health, transcripts.
//! - `hints`: a person's guidance for a loop's next prompts.
//! - `fleet`: insights, export, a loop in detail, and the shutdown asked over the API.
//! - `body`: reading and validating request bodies (size limit, JSON pointers).
//! - `host`: the loopback `Host` check (DNS rebinding).
//! - `events`: `GET /api/events`, server-sent events resumable with `Last-Event-ID`.
//! - `metrics`: `GET /metrics` in the Prometheus text format.
//! - `openapi`: `GET /api/openapi.json`, built from the route table and the Rust types.
//! - `server`: binding, `daemon.json`, graceful shutdown.

pub mod auth;
mod body;
pub mod error;
mod events;
mod fleet;
mod hints;
pub mod host;
mod loops;
mod metrics;
pub mod openapi;
pub mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dashboard;
mod view_cache;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use loopd_actors::config::LoopConfig;
use loopd_actors::control::{Control, ControlError};
use loopd_actors::runtime::Ctx;
use loopd_actors::view;
use serde_json::json;

pub use auth::AuthPolicy;
pub use error::{ApiError, Code};

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What drives the fleet: the loops supervisor's handle in the daemon.
pub trait Controller: Send + Sync + 'static {
    /// Sends one control request and waits for its answer.
    fn control(&self, request: Control) -> BoxFuture<'_, Result<(), ControlError>>;
}

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reads (store) and live events.
    ctx: Ctx,
    /// Changes (the loops supervisor).
    controller: Arc<dyn Controller>,
    /// Relative paths in `POST /api/loops` bodies resolve against this (the fleet file's folder).
    fleet_dir: PathBuf,
    /// The fleet file's loops, for validating tests injected into them (API-created loops keep
    /// their config in the store).
    file_loops: HashMap<String, LoopConfig>,
    /// Set once the supervisor has started its loops; `/readyz` says 503 before.
    ready: AtomicBool,
    /// The fleet's `templates_dir` (loop factory); `<fleet_dir>/loop-templates` until set.
    templates_dir: std::sync::OnceLock<PathBuf>,
    /// Serialized `GET /api/loops` entries of loops that are not running.
    views: view_cache::ViewCache,
    /// Set when the server stops: open event streams say `shutdown` and end, so that a
    /// follower knows the daemon went away on purpose.
    closing: tokio::sync::watch::Sender<bool>,
    /// Set by `POST /api/shutdown`; `run` and `serve` stop as on SIGTERM.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The dashboard's rows and alerts.
    dashboard: crate::dashboard::Cache,
}

impl ApiState {
    /// The state of an API over `ctx`, driving the fleet through `controller`.
    pub fn new(
        ctx: Ctx,
        controller: Arc<dyn Controller>,
        fleet_dir: PathBuf,
        file_loops: Vec<LoopConfig>,
    ) -> Self {
        ApiState {
            inner: Arc::new(Inner {
                ctx,
                controller,
                fleet_dir,
                file_loops: file_loops
                    .into_iter()
                    .map(|l| (l.name.clone(), l))
                    .collect(),
                ready: AtomicBool::new(false),
                templates_dir: std::sync::OnceLock::new(),
                views: view_cache::ViewCache::default(),
                closing: tokio::sync::watch::Sender::new(false),
                shutdown: tokio::sync::watch::Sender::new(false),
                dashboard: crate::dashboard::Cache::default(),
            }),
        }
    }

    /// Marks the fleet as started (or not), for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Sets the folder of loop templates (the fleet's `templates_dir`); only the first call counts.
    pub fn set_templates_dir(&self, dir: PathBuf) {
        let _ = self.inner.templates_dir.set(dir);
    }

    fn templates_dir(&self) -> PathBuf {
        self.inner
            .templates_dir
            .get()
            .cloned()
            .unwrap_or_else(|| self.inner.fleet_dir.join("loop-templates"))
    }

    /// Asks the daemon to stop (what `POST /api/shutdown` does).
    pub fn request_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once a shutdown was asked through the API (at once if it already was).
    pub async fn shutdown_requested(&self) {
        let mut asked = self.inner.shutdown.subscribe();
        let _ = asked.wait_for(|a| *a).await;
    }

    pub(crate) fn ctx(&self) -> &Ctx {
        &self.inner.ctx
    }

    pub(crate) fn dashboard(&self) -> &crate::dashboard::Cache {
        &self.inner.dashboard
    }

    /// A loop's configuration: the stored one of a loop created through the API, else the
    /// fleet file's.
    pub(crate) fn config_of(&self, record: &loopd_actors::model::LoopRecord) -> Option<LoopConfig> {
        record
            .config
            .clone()
            .or_else(|| self.inner.file_loops.get(&record.name).cloned())
    }

    /// `GET /api/loops/:id?view=detail`, for the dashboard.
    pub(crate) async fn loop_detail(&self, name: &str) -> Result<view::LoopDetail, ApiError> {
        fleet::loop_detail(self, name).await
    }

    /// What a loop may spend, when limited.
    pub(crate) fn budget_of(&self, record: &loopd_actors::model::LoopRecord) -> Option<f64> {
        match &record.config {
            Some(c) => c.budget_usd,
            None => self
                .inner
                .file_loops
                .get(&record.name)
                .and_then(|c| c.budget_usd),
        }
    }

    /// Tells the open event streams that the server is stopping.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    fn views(&self) -> &view_cache::ViewCache {
        &self.inner.views
    }

    async fn control(&self, request: Control) -> Result<(), ApiError> {
        self.inner
            .controller
            .control(request)
            .await
            .map_err(control_error)
    }
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::UnknownLoop(name) => ApiError::no_loop(&name),
        ControlError::UnknownTest { loop_name, test } => ApiError::no_test(&loop_name, &test),
        ControlError::Conflict(m) => ApiError::new(Code::Conflict, m),
        ControlError::Invalid(m) => ApiError::new(Code::BadRequest, m),
        ControlError::Internal(m) => ApiError::internal(m),
    }
}

/// The whole HTTP surface. `auth` decides who may do what.
pub fn router(state: ApiState, auth: AuthPolicy) -> Router {
    let api = Router::new()
        .route("/loops", get(loops::list).post(loops::create))
        .route("/loops/{id}", get(loops::get_one).delete(loops::remove))
        .route("/loops/{id}/start", post(loops::start))
        .route("/loops/{id}/stop", post(loops::stop))
        .route("/loops/{id}/pause", post(loops::pause))
        .route("/loops/{id}/resume", post(loops::resume))
        .route("/loops/{id}/tests", get(loops::tests).post(loops::inject))
        .route(
            "/loops/{id}/tests/{test}/attempts",
            get(loops::test_attempts),
        )
        .route("/loops/{id}/tests/{test}/reset", post(loops::reset))
        .route("/loops/{id}/tests/{test}/rollback", post(loops::rollback))
        .route("/loops/{id}/tests/{test}/skip", post(loops::skip))
        .route("/loops/{id}/hints", post(hints::give).delete(hints::clear))
        .route("/loops/{id}/health", get(loops::health))
        .route("/loops/{id}/insights", get(fleet::loop_insights))
        .route("/insights", get(fleet::insights))
        .route("/export", get(fleet::export))
        .route("/report", get(fleet::report))
        .route("/shutdown", post(fleet::shutdown))
        .route("/loops/{id}/transcripts", get(loops::transcripts))
        .route("/loops/{id}/transcripts/{attempt}", get(loops::transcript))
        .route("/events", get(events::stream))
        .route("/openapi.json", get(openapi::serve));
    let policy = Arc::new(auth);
    if tokio::runtime::Handle::try_current().is_ok() {
        // The dashboard's journal index fills while nobody looks yet.
        state.dashboard().journal(state.ctx());
    }
    Router::new()
        .nest("/api", api)
        .merge(crate::dashboard::routes())
        .route("/metrics", get(metrics::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            policy.clone(),
            auth::require_token,
        ))
        .layer(axum::Extension(policy))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .with_state(state)
}

/// 413 from the `Content-Length` alone, before a byte of the body is read (the body limit
/// itself only fires once the handler reads that far).
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ApiError::new(
            Code::PayloadTooLarge,
            format!("the body is larger than {BODY_LIMIT} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Alive: 200 while every member of the supervision tree runs (`ok`) or is being restarted
/// (`degraded`), with the members; 503 once one was given up (loopd then needs a restart).
async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    let tree = state.ctx().tree_health();
    if tree.any_failed() {
        return ApiError::new(Code::Unavailable, tree_trouble(&tree)).into_response();
    }
    let status = if tree.all_running() { "ok" } else { "degraded" };
    Json(json!({"status": status, "members": tree.members()})).into_response()
}

/// Ready: the fleet was started and every member of the supervision tree runs; 503 naming the
/// member that is restarting (or failed) otherwise.
async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    if !state.inner.ready.load(Ordering::SeqCst) {
        return ApiError::new(Code::Unavailable, "the fleet is not running").into_response();
    }
    let tree = state.ctx().tree_health();
    if !tree.all_running() {
        return ApiError::new(Code::Unavailable, tree_trouble(&tree)).into_response();
    }
    let body = json!({"status": "ready", "members": tree.members()});
    (StatusCode::OK, Json(body)).into_response()
}

/// "the scheduler is restarting (restart 2; last error: ...)", for every member not running.
fn tree_trouble(tree: &loopd_actors::tree::TreeHealth) -> String {
    tree.members()
        .iter()
        .filter(|m| m.state != loopd_actors::tree::MemberState::Running)
        .map(|m| {
            let state = serde_json::to_value(m.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            format!(
                "the {} is {state} (restarts: {}; last error: {})",
                m.name,
                m.restarts,
                m.last_error.as_deref().unwrap_or("none")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route; see /api/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        "this route does not take that method; see /api/openapi.json",
    )
}
