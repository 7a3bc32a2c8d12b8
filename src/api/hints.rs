//! `POST /api/loops/:id/hints` and `DELETE /api/loops/:id/hints?test=`: a person's guidance
//! for a loop's (or one test's) next prompts. The hint is written through the journal; the loop
//! reads it when it renders its next prompt, so nothing is sent to the loop.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use loopd_actors::hints::{Hint, HintKey};
use loopd_actors::model::{Event, EventKind};
use loopd_actors::store::Batch;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::body;
use super::error::{check_name, ApiError, Code};
use super::loops::loop_view;
use super::ApiState;

/// The longest hint, in bytes: it goes into every prompt of the loop.
pub const MAX_TEXT: usize = 16 * 1024;
/// The longest author, in bytes: it goes into the hint's event, the report and `status`.
pub const MAX_AUTHOR: usize = 128;

/// The body of `POST /api/loops/:id/hints`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HintBody {
    /// The test the hint is for; absent: every test of the loop.
    #[serde(default)]
    pub test: Option<String>,
    /// The guidance; replaces the current hint of the loop (or of the test).
    pub text: String,
    /// Who gives it; `api` when absent.
    #[serde(default)]
    pub author: Option<String>,
}

/// `POST /api/loops/:id/hints`: 201 with the hint as stored.
pub async fn give(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Hint>), ApiError> {
    let body: HintBody = serde_json::from_value(body::json(&bytes)?).map_err(|e| {
        ApiError::new(
            Code::BadRequest,
            format!(
                "expected {{\"text\": \"...\", \"test\"?: \"ID\", \"author\"?: \"NAME\"}}: {e}"
            ),
        )
    })?;
    let text = body.text.trim();
    if text.is_empty() {
        return Err(ApiError::new(
            Code::BadRequest,
            "`text` is empty: say what the agent should know",
        ));
    }
    if text.len() > MAX_TEXT {
        return Err(ApiError::new(
            Code::BadRequest,
            format!(
                "`text` is {} bytes; a hint may have at most {MAX_TEXT}, it goes into every prompt",
                text.len()
            ),
        ));
    }
    let author = body.author.as_deref().map(str::trim).unwrap_or_default();
    if author.len() > MAX_AUTHOR {
        return Err(ApiError::new(
            Code::BadRequest,
            format!(
                "`author` is {} bytes; a name may have at most {MAX_AUTHOR}",
                author.len()
            ),
        ));
    }
    known(&state, &id, body.test.as_deref()).await?;
    let hint = Hint {
        loop_name: id,
        test_id: body.test,
        text: text.to_string(),
        author: body
            .author
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "api".into()),
        at: Utc::now(),
    };
    let batch = Batch {
        hints: vec![hint.clone()],
        events: vec![given(&hint)],
        ..Batch::default()
    };
    state.ctx().record(batch).await?;
    Ok((StatusCode::CREATED, Json(hint)))
}

/// `DELETE /api/loops/:id/hints?test=`: 204, whether or not there was a hint.
pub async fn clear(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let test = q.get("test").cloned().filter(|t| !t.is_empty());
    known(&state, &id, test.as_deref()).await?;
    let mut event = Event::new(
        EventKind::Hint,
        &id,
        format!("hint cleared {}", whose(&test)),
    )
    .with_data(json!({"cleared": true}));
    event.test_id = test.clone();
    let batch = Batch {
        clear_hints: vec![HintKey {
            loop_name: id,
            test_id: test,
        }],
        events: vec![event],
        ..Batch::default()
    };
    state.ctx().record(batch).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The journal's record of `hint` given: SSE and webhooks tell people who guide the loop.
fn given(hint: &Hint) -> Event {
    let mut event = Event::new(
        EventKind::Hint,
        &hint.loop_name,
        format!("hint given by {} {}", hint.author, whose(&hint.test_id)),
    )
    .with_data(json!({ "hint": hint }));
    event.at = hint.at;
    event.test_id = hint.test_id.clone();
    event
}

/// Whose hint, in an event's message: the loop's or one test's.
fn whose(test: &Option<String>) -> String {
    match test {
        Some(t) => format!("for {t}"),
        None => "for every test".into(),
    }
}

/// 404 unless the loop (and the test, when named) exists.
async fn known(state: &ApiState, id: &str, test: Option<&str>) -> Result<(), ApiError> {
    let view = loop_view(state, id).await?;
    if let Some(test) = test {
        check_name("test", test)?;
        if !view.tests.iter().any(|t| t.id == test) {
            return Err(ApiError::no_test(id, test));
        }
    }
    Ok(())
}
