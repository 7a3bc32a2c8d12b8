//! `GET /alerts`: the alert events, newest first, a page of [`PER_PAGE`] at a time, from the
//! journal index (no journal read per page).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use loopd_actors::model::Event;
use maud::{html, Markup};

use super::layout::{self, Nav, Page};
use crate::api::auth::Access;
use crate::api::{ApiError, ApiState};

/// Alerts a page shows.
pub const PER_PAGE: usize = 100;

/// `GET /alerts[?page=N]`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let n = layout::page_number(&q);
    let index = state.dashboard().journal(state.ctx());
    let (alerts, pages) = index.alerts(n, PER_PAGE);
    let body = layout::region("alerts", "alert", list(&alerts, n, pages));
    if layout::fragment(&q).is_some() {
        return Ok(layout::respond(body));
    }
    let page = Page {
        title: "Alerts".into(),
        nav: Nav::Alerts,
        access,
        alerts: index.recent_alerts(),
        live: state.dashboard().live(state.ctx()).await,
        body,
    };
    Ok(layout::respond(page.render()))
}

fn list(alerts: &[Event], page: usize, pages: usize) -> Markup {
    html! {
        @if alerts.is_empty() {
            p.empty { "No alerts." }
        } @else {
            table #alerts {
                thead { tr { th { "When" } th { "Loop" } th { "Test" } th { "Alert" } } }
                tbody {
                    @for e in alerts {
                        tr data-event=(e.id) {
                            td { (layout::time(e.at)) }
                            td { @if !e.loop_name.is_empty() { a href=(format!("/loops/{}", e.loop_name)) { (e.loop_name) } } }
                            td { @if let Some(t) = &e.test_id { (t) } }
                            td.message { (e.message) }
                        }
                    }
                }
            }
            (layout::pager("/alerts", &[], page, pages))
        }
    }
}
