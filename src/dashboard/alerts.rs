//! The alert events, newest first: an index the dashboard keeps in memory, filled once from
//! the journal (in the background, at the first page) and then from the live events, so that
//! no page reads the journal. It keeps the newest [`KEPT`] alerts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use loopd_actors::model::{Event, EventKind};
use loopd_actors::runtime::Ctx;
use maud::{html, Markup};
use tokio::sync::broadcast;

use super::layout::{self, Nav, Page};
use crate::api::auth::Access;
use crate::api::{ApiError, ApiState};

/// Alerts remembered.
pub const KEPT: usize = 10_000;
/// Alerts a page shows.
pub const PER_PAGE: usize = 100;
/// Journal events read per store call while filling.
const READ_PAGE: usize = 1000;

/// The index.
#[derive(Debug, Default)]
pub struct AlertIndex {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    started: bool,
    /// Newest last.
    alerts: VecDeque<Event>,
    /// The highest event id looked at.
    seen: u64,
}

impl AlertIndex {
    /// Starts filling the index, once.
    pub fn start(self: &Arc<Self>, ctx: &Ctx) {
        {
            let mut inner = self.lock();
            if inner.started {
                return;
            }
            inner.started = true;
        }
        // Subscribed before the journal is read: nothing falls between the two.
        let live = ctx.subscribe();
        tokio::spawn(fill(self.clone(), ctx.clone(), live));
    }

    /// Alerts since `since`.
    pub fn count_since(&self, since: chrono::DateTime<chrono::Utc>) -> usize {
        self.lock()
            .alerts
            .iter()
            .rev()
            .take_while(|e| e.at >= since)
            .count()
    }

    /// The alerts of the last day (`#alerts-count`).
    pub fn recent(&self) -> usize {
        self.count_since(chrono::Utc::now() - chrono::Duration::hours(24))
    }

    /// One page of alerts, newest first, and the number of pages.
    pub fn page(&self, page: usize) -> (Vec<Event>, usize) {
        let inner = self.lock();
        let pages = inner.alerts.len().div_ceil(PER_PAGE).max(1);
        let out = inner
            .alerts
            .iter()
            .rev()
            .skip((page - 1) * PER_PAGE)
            .take(PER_PAGE)
            .cloned()
            .collect();
        (out, pages)
    }

    fn add(&self, events: &[Event]) {
        let mut inner = self.lock();
        for e in events {
            if e.id <= inner.seen {
                continue;
            }
            inner.seen = e.id;
            if e.kind == EventKind::Alert {
                inner.alerts.push_back(e.clone());
                if inner.alerts.len() > KEPT {
                    inner.alerts.pop_front();
                }
            }
        }
    }

    fn seen(&self) -> u64 {
        self.lock().seen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the journal after what the index has seen; false when the store fails.
async fn catch_up(index: &AlertIndex, ctx: &Ctx) -> bool {
    loop {
        let after = index.seen();
        match ctx.read(move |s| s.events_after(after, READ_PAGE)).await {
            Ok(page) => {
                index.add(&page);
                if page.len() < READ_PAGE {
                    return true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: reading the journal for alerts");
                return false;
            }
        }
    }
}

async fn fill(index: Arc<AlertIndex>, ctx: Ctx, mut live: broadcast::Receiver<Event>) {
    if !catch_up(&index, &ctx).await {
        return;
    }
    loop {
        match live.recv().await {
            Ok(e) => index.add(std::slice::from_ref(&e)),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(&index, &ctx).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `GET /alerts[?page=N]`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let n = layout::page_number(&q);
    let index = state.dashboard().alerts(state.ctx());
    let (alerts, pages) = index.page(n);
    let body = layout::region("alerts", "alert", list(&alerts, n, pages));
    if layout::fragment(&q).is_some() {
        return Ok(layout::respond(body));
    }
    let page = Page {
        title: "Alerts".into(),
        nav: Nav::Alerts,
        access,
        alerts: index.recent(),
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
