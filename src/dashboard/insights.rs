//! `GET /insights`: the fleet's most frequent failure fingerprints with the tests they hit,
//! and the lessons learned (what `loopd insights` and `GET /api/insights` report).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use loopd_actors::view::{self, InsightsDoc};
use maud::html;

use super::layout::{self, Nav, Page};
use super::loop_page::short_fp;
use crate::api::auth::Access;
use crate::api::{ApiError, ApiState};

/// Fingerprints shown.
const PATTERNS: usize = 20;

/// `GET /insights`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let doc: InsightsDoc = state
        .ctx()
        .read(|s| view::insights(s, None, PATTERNS))
        .await?;
    let region = layout::region_every(
        "insights",
        "attempt_finished",
        Some(10000),
        html! {
            h2 { "Most frequent failures" }
            @if doc.patterns.is_empty() {
                p.empty { "No failure yet." }
            } @else {
                table #patterns {
                    thead { tr { th { "Fingerprint" } th { "Failures" } th { "Error line" } th { "Tests it hit" } th { "Last seen" } } }
                    tbody {
                        @for p in &doc.patterns {
                            tr data-fingerprint=(p.fingerprint) {
                                td { code title=(p.fingerprint) { (short_fp(&p.fingerprint)) } }
                                td { (p.count) }
                                td { code { (p.example) } }
                                td {
                                    @for (i, t) in p.tests.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        @match t.split_once(':') {
                                            Some((l, id)) => a href=(format!("/loops/{l}#test-{id}")) { (t) },
                                            None => (t),
                                        }
                                    }
                                }
                                td { (layout::time(p.last_seen)) }
                            }
                        }
                    }
                }
            }
            h2 { "Lessons" }
            @if doc.lessons.is_empty() {
                p.empty { "No lesson learned yet: a lesson is what a pass changed after a failure." }
            } @else {
                table #lessons {
                    thead { tr { th { "Learned" } th { "Failure" } th { "Passed by" } th { "What changed" } th { "Agent's summary" } } }
                    tbody {
                        @for l in &doc.lessons {
                            tr data-fingerprint=(l.fingerprint) {
                                td { (layout::time(l.learned_at)) }
                                td { code title=(l.fingerprint) { (short_fp(&l.fingerprint)) } @if !l.error_line.is_empty() { " " code { (l.error_line) } } }
                                td { a href=(format!("/loops/{}/tests/{}/attempts/{}", l.loop_name, l.test_id, l.attempt)) { (l.loop_name) ":" (l.test_id) " #" (l.attempt) } }
                                td { pre.small { (l.what_changed) } }
                                td { (l.summary.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    );
    if layout::fragment(&q).is_some() {
        return Ok(layout::respond(region));
    }
    let page = Page {
        title: "Insights".into(),
        nav: Nav::Insights,
        access,
        alerts: state.dashboard().recent_alerts(state.ctx()),
        live: state.dashboard().live(state.ctx()).await,
        body: region,
    };
    Ok(layout::respond(page.render()))
}
