//! `/api/loops/...`: the registry, control, tests, health and transcripts.
//!
//! Reads go straight to the store; changes go through the loops supervisor ([`Control`]) and
//! answer with the state after the change, so `start|stop|pause|resume` twice answer the same.
//! An attempt is addressed as `TEST:N` (`CALC-2:1`): a test id never contains `:`.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use loopd_actors::config::LoopConfig;
use loopd_actors::control::Control;
use loopd_actors::model::{AttemptRecord, Killed, LoopState, Outcome};
use loopd_actors::view::{self, AttemptPage, LoopSummary, LoopView, Progress, TestView};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::body;
use super::error::{check_name, ApiError, Code};
use super::view_cache::{Entry, View};
use super::ApiState;

/// The default and largest page of `GET /api/loops`.
pub const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `GET /api/loops`: one page of loops, by name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoopPage {
    /// The loops of this page, each exactly as `GET /api/loops/:id` returns it.
    pub loops: Vec<LoopView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /api/loops?view=summary`: one page of loops in the summary view.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SummaryPage {
    /// The loops of this page, each exactly as `GET /api/loops/:id?view=summary` returns it.
    pub loops: Vec<LoopSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /api/loops`, by `view`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LoopPageAnswer {
    /// `view=full` (the default).
    Full(LoopPage),
    /// `view=summary`.
    Summary(SummaryPage),
}

/// `GET /api/loops/:id`, by `view`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LoopAnswer {
    /// `view=full` (the default).
    Full(Box<LoopView>),
    /// `view=summary`.
    Summary(Box<LoopSummary>),
    /// `view=detail`: the full view plus the loop's settings.
    Detail(Box<view::LoopDetail>),
}

/// `GET /api/loops/:id/tests`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TestList {
    /// The loop's tests with their attempts, in the tests file's order.
    pub tests: Vec<TestView>,
}

/// `GET /api/loops/:id/health`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// The loop.
    pub name: String,
    /// What it is doing.
    pub status: LoopState,
    /// Why it is paused, stopped or crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The test being attempted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_test: Option<String>,
    /// The number of the attempt running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_attempt: Option<u32>,
    /// When the running attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// When the running agent last printed a line (its transcript last grew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Seconds since `last_heartbeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_seconds: Option<f64>,
    /// No output for more than half of `stall_timeout`: the monitor kills it at the full timeout.
    pub stuck: bool,
    /// Counts of tests by status.
    pub progress: Progress,
    /// How the last finished attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// Attempts among the last ten that ended `api_error`, `stalled` or `timed_out`, or whose
    /// agent the monitor killed whatever their outcome.
    pub recent_trouble: usize,
}

/// One entry of `GET /api/loops/:id/transcripts`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TranscriptEntry {
    /// The attempt's address, `TEST:N`.
    pub attempt: String,
    /// The test.
    pub test: String,
    /// The attempt number.
    pub number: u32,
    /// How it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The monitor ended the agent (`stalled` or `timed_out`), whatever the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed: Option<Killed>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The transcript's size in bytes (0 when there is no file).
    pub bytes: u64,
    /// Where to fetch it.
    pub url: String,
}

/// `GET /api/loops/:id/transcripts`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TranscriptList {
    /// Every attempt of the loop, oldest first.
    pub transcripts: Vec<TranscriptEntry>,
}

pub(super) async fn loop_view(state: &ApiState, name: &str) -> Result<LoopView, ApiError> {
    check_name("loop", name)?;
    let owned = name.to_string();
    let view = state
        .ctx()
        .read(move |s| {
            s.get_loop(&owned)?
                .map(|r| view::loop_view(s, &r))
                .transpose()
        })
        .await?;
    let mut view = view.ok_or_else(|| ApiError::no_loop(name))?;
    if view.current_test.is_some() {
        // Live data only the monitor has: time since the agent's last output, and stuck.
        view.heartbeat = state
            .ctx()
            .monitor()
            .health()
            .await
            .into_iter()
            .find(|h| h.loop_name == view.name);
        view.last_heartbeat = view.heartbeat.as_ref().map(heartbeat_at);
    }
    Ok(view)
}

fn query_flag(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some(other) => Err(ApiError::new(
            Code::BadRequest,
            format!("`{key}` must be true or false, found `{other}`"),
        )),
    }
}

/// The default and largest page of `GET /api/loops/:id/tests/:test/attempts`.
pub const DEFAULT_ATTEMPTS_LIMIT: usize = 50;
const MAX_ATTEMPTS_LIMIT: usize = 1000;

/// A bad query parameter: `bad_request`, with the parameter named in `details`.
pub(super) fn bad_param(name: &str, message: String) -> ApiError {
    ApiError::new(Code::BadRequest, message).with_details(serde_json::json!({ "parameter": name }))
}

/// `?limit=`: absent is `default`, otherwise an integer from 1 to `max`.
pub(super) fn query_limit(
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_param(
                "limit",
                format!("`limit` must be an integer from 1 to {max}, found `{l}`"),
            )),
        },
    }
}

/// `?view=full|summary` (full when absent).
fn query_view(q: &HashMap<String, String>) -> Result<View, ApiError> {
    match q.get("view").map(String::as_str) {
        None | Some("full") => Ok(View::Full),
        Some("summary") => Ok(View::Summary),
        Some(other) => Err(bad_param(
            "view",
            format!("`view` must be `full` or `summary`, found `{other}`"),
        )),
    }
}

/// `GET /api/loops?limit=N&cursor=NAME&view=full|summary`.
///
/// The answer is a [`LoopPage`], written by hand from entries the [`ViewCache`] keeps
/// serialized: a page of idle loops costs a key scan and a copy, not a decode of every record.
///
/// [`ViewCache`]: super::view_cache::ViewCache
pub async fn list(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = query_limit(&q, DEFAULT_LIMIT, MAX_LIMIT)?;
    let shape = query_view(&q)?;
    let cursor = q.get("cursor").cloned().unwrap_or_default();
    // A range scan of names from the cursor (the cost is the page's, not the registry's) and a
    // cache lookup run here: sled keeps the tree in memory. Decoding records goes to a blocking
    // thread, and only for the loops that changed since their entry was cached.
    let (names, more) = state.ctx().store().loop_names_page(&cursor, limit)?;
    let next_cursor = if more { names.last().cloned() } else { None };
    let page = state.views().cached(state.ctx().store(), names, shape);
    let entries = if page.complete() {
        state.views().fill(state.ctx().store(), page)?
    } else {
        let cache = state.clone();
        state
            .ctx()
            .read(move |s| cache.views().fill(s, page))
            .await?
    };
    let live = entries.iter().any(|e| matches!(e, Entry::Live(_)));
    let health = if live {
        state.ctx().monitor().health().await
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(16 * 1024);
    out.extend_from_slice(b"{\"loops\":[");
    for (i, e) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match e {
            Entry::Json(json) => out.extend_from_slice(&json),
            Entry::Live(mut l) => {
                l.heartbeat = health.iter().find(|h| h.loop_name == l.name).cloned();
                l.last_heartbeat = l.heartbeat.as_ref().map(heartbeat_at);
                out.extend_from_slice(&shape.to_json(*l));
            }
        }
    }
    out.push(b']');
    if let Some(c) = next_cursor {
        out.extend_from_slice(b",\"next_cursor\":");
        serde_json::to_writer(&mut out, &c).expect("a string always serializes");
    }
    out.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// `GET /api/loops/:id[?view=full|summary]`.
pub async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if q.get("view").map(String::as_str) == Some("detail") {
        return Ok(Json(super::fleet::loop_detail(&state, &id).await?).into_response());
    }
    let shape = query_view(&q)?;
    let view = loop_view(&state, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        shape.to_json(view),
    )
        .into_response())
}

/// `GET /api/loops/:id/tests/:test/attempts?limit=N&cursor=C`: one page of a test's attempts,
/// by number. The cursor is opaque to clients (it is the last attempt number of the page
/// before); a page costs a range of keys, whatever the length of the history.
pub async fn test_attempts(
    State(state): State<ApiState>,
    Path((id, test)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AttemptPage>, ApiError> {
    check_name("loop", &id)?;
    check_name("test", &test)?;
    let limit = query_limit(&q, DEFAULT_ATTEMPTS_LIMIT, MAX_ATTEMPTS_LIMIT)?;
    let after: u32 = match q.get("cursor") {
        None => 0,
        Some(c) => c.parse().map_err(|_| {
            bad_param(
                "cursor",
                format!("`cursor` must be a `next_cursor` of an earlier page, found `{c}`"),
            )
        })?,
    };
    let (l, t) = (id.clone(), test.clone());
    let (record, known, (attempts, more)) = state
        .ctx()
        .read(move |s| -> Result<_, ApiError> {
            Ok((
                s.get_loop(&l)?,
                s.get_test(&l, &t)?,
                s.attempts_page(&l, &t, after, limit)?,
            ))
        })
        .await?;
    if record.is_none() {
        return Err(ApiError::no_loop(&id));
    }
    if known.is_none() {
        return Err(ApiError::no_test(&id, &test));
    }
    let next_cursor = more
        .then(|| attempts.last().map(|a| a.number.to_string()))
        .flatten();
    Ok(Json(AttemptPage {
        attempts,
        next_cursor,
    }))
}

/// `POST /api/loops[?start=true]`: a loop config, as in the fleet file.
pub async fn create(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let value = body::json(&bytes?)?;
    let start = query_flag(&q, "start")?;
    if value.get("template").is_some() {
        return create_from_template(&state, value, start).await;
    }
    if let Some(name) = value.get("name").and_then(|n| n.as_str()) {
        // Refuse a name that could escape the state directory before anything looks at paths.
        if let Err(why) = loopd_actors::names::check_name(name) {
            return Err(ApiError::invalid(
                "loop",
                &loopd_actors::config::Problem::new(
                    "",
                    "/name",
                    format!("invalid loop name: {why}"),
                )
                .into(),
            ));
        }
    }
    let state_dir = state.ctx().state_dir().to_path_buf();
    let fleet_dir = state.inner.fleet_dir.clone();
    let config =
        tokio::task::spawn_blocking(move || body::loop_config(value, &fleet_dir, &state_dir))
            .await
            .map_err(ApiError::internal)??;
    let name = config.name.clone();
    state
        .control(Control::AddLoop {
            config: Box::new(config),
            start,
        })
        .await?;
    let view = loop_view(&state, &name).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/loops/{name}"))],
        Json(view),
    )
        .into_response())
}

/// `POST /api/loops` with `{"template": NAME, "vars": {...}, "start": bool}`: the loop factory
/// (see `loopd_actors::templates`). `start` in the body or the query starts the loop.
async fn create_from_template(
    state: &ApiState,
    value: serde_json::Value,
    start: bool,
) -> Result<Response, ApiError> {
    use loopd_actors::templates::{self, TemplateError};
    let template = match value.get("template") {
        Some(serde_json::Value::String(t)) => t.clone(),
        _ => {
            return Err(ApiError::new(
                Code::BadRequest,
                "`template` must be the name of a template (a string)",
            ))
        }
    };
    if let Some(key) = value.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["template", "vars", "start"].contains(&k.as_str()))
    }) {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("unknown key `{key}`: a template request has `template`, `vars` and `start`"),
        ));
    }
    let start = match value.get("start") {
        None => start,
        Some(serde_json::Value::Bool(b)) => *b || start,
        Some(_) => {
            return Err(ApiError::new(
                Code::BadRequest,
                "`start` must be true or false",
            ))
        }
    };
    check_name("template", &template)?;
    let vars = templates::vars_from_json(value.get("vars").unwrap_or(&serde_json::Value::Null));
    let dir = state.templates_dir();
    let state_dir = state.ctx().state_dir().to_path_buf();
    let fleet_dir = state.inner.fleet_dir.clone();
    let name = template.clone();
    let made = tokio::task::spawn_blocking(move || {
        templates::loop_from_template(&dir, &name, &vars?, &fleet_dir, &state_dir)
    })
    .await
    .map_err(ApiError::internal)?;
    let template_error = |e: TemplateError| match e {
        TemplateError::InvalidName(why) => ApiError::invalid_name("template", why),
        TemplateError::NotFound { name, .. } => {
            ApiError::new(Code::NotFound, format!("no template named `{name}`"))
                .with_details(serde_json::json!({"template": name}))
        }
        TemplateError::BadVars(bad) => {
            let problems: Vec<_> = bad
                .iter()
                .map(
                    |(k, why)| serde_json::json!({"pointer": format!("/vars/{k}"), "message": why}),
                )
                .collect();
            ApiError::new(Code::ValidationFailed, "invalid template variables")
                .with_details(serde_json::json!({"template": template, "problems": problems}))
        }
        TemplateError::Vars { missing, unused } => {
            let message = TemplateError::Vars {
                missing: missing.clone(),
                unused: unused.clone(),
            }
            .to_string();
            let problems: Vec<_> = missing
                .iter()
                .map(|k| (k, format!("missing: the template uses {{{{{k}}}}}")))
                .chain(
                    unused
                        .iter()
                        .map(|k| (k, "the template does not use it".to_string())),
                )
                .map(
                    |(k, why)| serde_json::json!({"pointer": format!("/vars/{k}"), "message": why}),
                )
                .collect();
            ApiError::new(Code::ValidationFailed, message).with_details(serde_json::json!({
                "template": template, "missing": missing, "unused": unused, "problems": problems,
            }))
        }
        TemplateError::Invalid { report, .. } => {
            let mut e = ApiError::invalid(&format!("loop from template `{template}`"), &report);
            e.details["template"] = serde_json::json!(template);
            e
        }
        TemplateError::Io(why) => ApiError::internal(why),
    };
    let config = made.map_err(template_error)?;
    let name = config.name.clone();
    let owned = name.clone();
    if state
        .ctx()
        .read(move |s| s.get_loop(&owned))
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            Code::Conflict,
            format!("a loop named `{name}` exists already"),
        ));
    }
    templates::create_workdir(&config)
        .await
        .map_err(template_error)?;
    state
        .control(Control::AddLoop {
            config: Box::new(config),
            start,
        })
        .await?;
    let view = loop_view(state, &name).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/loops/{name}"))],
        Json(view),
    )
        .into_response())
}

/// `DELETE /api/loops/:id`.
pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    loop_view(&state, &id).await?;
    state.control(Control::RemoveLoop(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change(state: ApiState, id: String, request: Control) -> Result<Json<LoopView>, ApiError> {
    loop_view(&state, &id).await?;
    state.control(request).await?;
    Ok(Json(loop_view(&state, &id).await?))
}

/// `POST /api/loops/:id/start`.
pub async fn start(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<LoopView>, ApiError> {
    change(state, id.clone(), Control::Start(id)).await
}

/// `POST /api/loops/:id/stop`.
pub async fn stop(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<LoopView>, ApiError> {
    change(state, id.clone(), Control::Stop(id)).await
}

/// `POST /api/loops/:id/pause[?now=true]`.
pub async fn pause(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<LoopView>, ApiError> {
    let now = query_flag(&q, "now")?;
    change(state, id.clone(), Control::Pause { name: id, now }).await
}

/// `POST /api/loops/:id/resume`.
pub async fn resume(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<LoopView>, ApiError> {
    change(state, id.clone(), Control::Resume(id)).await
}

/// `GET /api/loops/:id/tests`.
pub async fn tests(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TestList>, ApiError> {
    Ok(Json(TestList {
        tests: loop_view(&state, &id).await?.tests,
    }))
}

/// `POST /api/loops/:id/tests`: `{"tests": [...]}` or `[...]`, validated, injected live.
pub async fn inject(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("loop", &id)?;
    let value = body::json(&bytes?)?;
    let name = id.clone();
    let (record, existing) = state
        .ctx()
        .read(move |s| -> Result<_, ApiError> {
            let record = s.get_loop(&name)?;
            let tests = s.list_tests(&name)?;
            Ok((record, tests))
        })
        .await?;
    let record = record.ok_or_else(|| ApiError::no_loop(&id))?;
    let lp = record
        .config
        .clone()
        .or_else(|| state.inner.file_loops.get(&id).cloned())
        .map_or_else(|| bare_config(&id), Ok)?;
    let specs: Vec<_> = existing.into_iter().map(|t| t.spec).collect();
    let tests = tokio::task::spawn_blocking(move || body::injected_tests(value, &lp, &specs))
        .await
        .map_err(ApiError::internal)??;
    let ids: Vec<String> = tests.iter().map(|t| t.id.clone()).collect();
    state
        .control(Control::InjectTests {
            loop_name: id.clone(),
            tests,
        })
        .await?;
    let all = loop_view(&state, &id).await?.tests;
    let injected = all.into_iter().filter(|t| ids.contains(&t.id)).collect();
    Ok((StatusCode::CREATED, Json(TestList { tests: injected })).into_response())
}

/// A loop config good enough to check tests against, for a loop whose config is unknown here.
fn bare_config(name: &str) -> Result<LoopConfig, ApiError> {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "tests_file": "tests.json",
        "agent": {"kind": "command", "command": ["true"]},
    }))
    .map_err(ApiError::internal)
}

async fn test_change(
    state: ApiState,
    id: String,
    test: String,
    request: Control,
) -> Result<Json<TestView>, ApiError> {
    check_name("test", &test)?;
    let view = loop_view(&state, &id).await?;
    if !view.tests.iter().any(|t| t.id == test) {
        return Err(ApiError::no_test(&id, &test));
    }
    state.control(request).await?;
    loop_view(&state, &id)
        .await?
        .tests
        .into_iter()
        .find(|t| t.id == test)
        .map(Json)
        .ok_or_else(|| ApiError::no_test(&id, &test))
}

/// `POST /api/loops/:id/tests/:test/reset`.
pub async fn reset(
    State(state): State<ApiState>,
    Path((id, test)): Path<(String, String)>,
) -> Result<Json<TestView>, ApiError> {
    let request = Control::ResetTest {
        loop_name: id.clone(),
        test: test.clone(),
    };
    test_change(state, id, test, request).await
}

/// `POST /api/loops/:id/tests/:test/rollback`.
pub async fn rollback(
    State(state): State<ApiState>,
    Path((id, test)): Path<(String, String)>,
) -> Result<Json<TestView>, ApiError> {
    let request = Control::Rollback {
        loop_name: id.clone(),
        test: test.clone(),
    };
    test_change(state, id, test, request).await
}

/// `POST /api/loops/:id/tests/:test/skip`.
pub async fn skip(
    State(state): State<ApiState>,
    Path((id, test)): Path<(String, String)>,
) -> Result<Json<TestView>, ApiError> {
    let request = Control::SkipTest {
        loop_name: id.clone(),
        test: test.clone(),
    };
    test_change(state, id, test, request).await
}

/// When the monitor last saw output from an attempt.
fn heartbeat_at(h: &loopd_actors::monitor::AttemptHealth) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::milliseconds((h.since_heartbeat_s * 1000.0) as i64)
}

/// The running attempt's last sign of life: when its transcript last grew.
pub fn heartbeat(a: &AttemptRecord) -> DateTime<Utc> {
    std::fs::metadata(&a.transcript)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or(a.started_at)
        .max(a.started_at)
}

/// Seconds from `then` to now (never negative).
pub fn age_seconds(then: DateTime<Utc>) -> f64 {
    let now: DateTime<Utc> = SystemTime::now().into();
    ((now - then).num_milliseconds().max(0) as f64) / 1000.0
}

/// `GET /api/loops/:id/health`.
pub async fn health(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Health>, ApiError> {
    let view = loop_view(&state, &id).await?;
    let mut attempts: Vec<&AttemptRecord> = view.tests.iter().flat_map(|t| &t.attempts).collect();
    attempts.sort_by_key(|a| a.started_at);
    let running = attempts.iter().find(|a| a.outcome.is_none());
    let last_heartbeat = running.map(|a| heartbeat(a));
    let recent_trouble = attempts
        .iter()
        .rev()
        .take(10)
        .filter(|a| {
            // A pass after a kill is still a hang.
            a.killed.is_some()
                || matches!(
                    a.outcome,
                    Some(
                        Outcome::ApiError
                            | Outcome::Stalled
                            | Outcome::TimedOut
                            | Outcome::AgentUnavailable
                    )
                )
        })
        .count();
    Ok(Json(Health {
        name: view.name.clone(),
        status: view.status,
        reason: view.reason.as_ref().map(ToString::to_string),
        current_test: view.current_test.clone(),
        current_attempt: view.current_attempt,
        attempt_started_at: running.map(|a| a.started_at),
        last_heartbeat,
        heartbeat_age_seconds: view
            .heartbeat
            .as_ref()
            .map(|h| h.since_heartbeat_s)
            .or(last_heartbeat.map(age_seconds)),
        stuck: view.heartbeat.as_ref().is_some_and(|h| h.stuck),
        progress: view.progress.clone(),
        last_outcome: attempts.iter().rev().find_map(|a| a.outcome),
        recent_trouble,
    }))
}

/// `GET /api/loops/:id/transcripts`.
pub async fn transcripts(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TranscriptList>, ApiError> {
    let view = loop_view(&state, &id).await?;
    let mut attempts: Vec<&AttemptRecord> = view.tests.iter().flat_map(|t| &t.attempts).collect();
    attempts.sort_by_key(|a| a.started_at);
    let transcripts = attempts
        .into_iter()
        .map(|a| {
            let address = format!("{}:{}", a.test_id, a.number);
            TranscriptEntry {
                url: format!("/api/loops/{id}/transcripts/{address}"),
                attempt: address,
                test: a.test_id.clone(),
                number: a.number,
                outcome: a.outcome,
                killed: a.killed,
                started_at: a.started_at,
                bytes: std::fs::metadata(&a.transcript).map_or(0, |m| m.len()),
            }
        })
        .collect();
    Ok(Json(TranscriptList { transcripts }))
}

/// Splits `TEST:N` (or `TEST/N` once percent-decoded).
pub fn parse_attempt(address: &str) -> Result<(String, u32), ApiError> {
    let bad = || {
        ApiError::new(
            Code::BadRequest,
            format!("an attempt is addressed as TEST:N (e.g. `CALC-2:1`), found `{address}`"),
        )
    };
    let (test, n) = address
        .rsplit_once(':')
        .or_else(|| address.rsplit_once('/'))
        .ok_or_else(bad)?;
    check_name("test", test)?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    Ok((test.to_string(), n))
}

/// `GET /api/loops/:id/transcripts/:attempt[?offset=BYTES]`: the transcript as text.
pub async fn transcript(
    State(state): State<ApiState>,
    Path((id, address)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_name("loop", &id)?;
    let (test, n) = parse_attempt(&address)?;
    let offset: u64 = match q.get("offset") {
        None => 0,
        Some(o) => o.parse().map_err(|_| {
            ApiError::new(
                Code::BadRequest,
                format!("`offset` must be a byte count, found `{o}`"),
            )
        })?,
    };
    let (l, t) = (id.clone(), test.clone());
    let (record, attempt) = state
        .ctx()
        .read(move |s| -> Result<_, ApiError> { Ok((s.get_loop(&l)?, s.get_attempt(&l, &t, n)?)) })
        .await?;
    if record.is_none() {
        return Err(ApiError::no_loop(&id));
    }
    let attempt = attempt.ok_or_else(|| {
        ApiError::new(
            Code::AttemptNotFound,
            format!("loop `{id}` has no attempt {test}:{n}"),
        )
    })?;
    let text = match tokio::fs::read(&attempt.transcript).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let size = text.len() as u64;
    let start = offset.min(size) as usize;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-loopd-size"),
                size.to_string(),
            ),
        ],
        text[start..].to_vec(),
    )
        .into_response())
}
