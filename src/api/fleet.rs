//! Routes for what the CLI reads besides loops and tests, so that every read command answers
//! the same through the daemon as from the store: `GET /api/insights` (and per loop),
//! `GET /api/export`, `GET /api/report`, `GET /api/loops/:id?view=detail`; and
//! `POST /api/shutdown`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use loopd_actors::view::{self, ExportDoc, InsightsDoc, LoopDetail, ReportDoc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{check_name, ApiError};
use super::loops::{bad_param, loop_view, query_limit};
use super::ApiState;

/// The default number of failure patterns of `GET /api/insights`.
pub const DEFAULT_PATTERNS: usize = 10;
const MAX_PATTERNS: usize = 1000;

/// `GET /api/insights?limit=N`: the fleet's most frequent failure patterns and its lessons.
pub async fn insights(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<InsightsDoc>, ApiError> {
    let limit = query_limit(&q, DEFAULT_PATTERNS, MAX_PATTERNS)?;
    let doc = state
        .ctx()
        .read(move |s| view::insights(s, None, limit))
        .await?;
    Ok(Json(doc))
}

/// `GET /api/loops/:id/insights?limit=N`: one loop's failure patterns, and the lessons of the
/// loop or of its failures (learned in any loop).
pub async fn loop_insights(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<InsightsDoc>, ApiError> {
    check_name("loop", &id)?;
    let limit = query_limit(&q, DEFAULT_PATTERNS, MAX_PATTERNS)?;
    let name = id.clone();
    let doc = state
        .ctx()
        .read(move |s| -> Result<_, ApiError> {
            match s.get_loop(&name)? {
                Some(_) => Ok(Some(view::insights(s, Some(&name), limit)?)),
                None => Ok(None),
            }
        })
        .await?;
    doc.map(Json).ok_or_else(|| ApiError::no_loop(&id))
}

/// The period of `GET /api/report` when no `since` is given.
pub const DEFAULT_SINCE: &str = "24h";

/// `GET /api/report?since=`: the morning report of the period since `since` (a duration back
/// from now, or an RFC 3339 time; the last 24 hours by default).
pub async fn report(
    State(state): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ReportDoc>, ApiError> {
    let text = q.get("since").map_or(DEFAULT_SINCE, String::as_str);
    let now = chrono::Utc::now();
    let since = view::parse_since(text, now)
        .map_err(|why| bad_param("since", format!("`since`: {why}")))?;
    Ok(Json(
        state
            .ctx()
            .read(move |s| view::report(s, since, now))
            .await?,
    ))
}

/// `GET /api/export`: what `loopd export` prints.
pub async fn export(State(state): State<ApiState>) -> Result<Json<ExportDoc>, ApiError> {
    Ok(Json(state.ctx().read(view::export).await?))
}

/// `GET /api/loops/:id?view=detail`: the full view plus the loop's settings.
pub async fn loop_detail(state: &ApiState, name: &str) -> Result<LoopDetail, ApiError> {
    let view = loop_view(state, name).await?;
    let owned = name.to_string();
    let record = state.ctx().read(move |s| s.get_loop(&owned)).await?;
    let config = record
        .and_then(|r| r.config)
        .or_else(|| state.inner.file_loops.get(name).cloned());
    Ok(LoopDetail {
        view,
        settings: config.as_ref().map(Into::into),
    })
}

/// The answer of `POST /api/shutdown`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShutdownAnswer {
    /// `shutting_down`: the daemon stops as on SIGTERM (the running attempts are interrupted,
    /// not counted, the store is flushed) and then exits.
    pub status: String,
}

/// `POST /api/shutdown`: the graceful stop of SIGTERM, asked over the API (token-guarded like
/// every change). 202: the daemon is stopping when the answer leaves.
pub async fn shutdown(State(state): State<ApiState>) -> (StatusCode, Json<ShutdownAnswer>) {
    tracing::info!("shutdown asked through the API");
    state.request_shutdown();
    (
        StatusCode::ACCEPTED,
        Json(ShutdownAnswer {
            status: "shutting_down".into(),
        }),
    )
}
