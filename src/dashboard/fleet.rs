//! `GET /`: every loop, what needs a person first, 100 a page, with a state filter and a
//! search box. `GET /?rows=a,b` answers the rows of those loops alone (a `<tbody>`): what the
//! script swaps in when events name them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

use super::layout::{self, Nav, Page};
use super::rows::{self, Need, Row};
use crate::api::auth::Access;
use crate::api::error::check_name;
use crate::api::{ApiError, ApiState};

/// Rows a page shows.
pub const PER_PAGE: usize = 100;

/// The rows of `names` (all loops when `None`), read through the cache on a blocking thread
/// when some changed.
async fn read_rows(
    state: &ApiState,
    names: Option<Vec<String>>,
) -> Result<Vec<Arc<Row>>, ApiError> {
    let names = match names {
        Some(n) => n,
        None => state.ctx().store().loop_names_page("", usize::MAX)?.0,
    };
    let s = state.clone();
    let rows = state
        .ctx()
        .read(move |store| s.dashboard().rows.rows(store, &names, &|r| s.budget_of(r)))
        .await?;
    Ok(rows)
}

/// When each running attempt last printed, by loop (the monitor's clock).
async fn heartbeats(state: &ApiState, rows: &[Arc<Row>]) -> HashMap<String, DateTime<Utc>> {
    if !rows.iter().any(|r| r.current_test.is_some()) {
        return HashMap::new();
    }
    let now = Utc::now();
    state
        .ctx()
        .monitor()
        .health()
        .await
        .into_iter()
        .map(|h| {
            let at = now - chrono::Duration::milliseconds((h.since_heartbeat_s * 1000.0) as i64);
            (h.loop_name, at)
        })
        .collect()
}

/// `GET /?state=NEED&q=TEXT&page=N`, or `GET /?rows=a,b`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(names) = q.get("rows") {
        let names: Vec<String> = names
            .split(',')
            .filter(|n| !n.is_empty())
            .take(PER_PAGE)
            .map(String::from)
            .collect();
        for n in &names {
            check_name("loop", n)?;
        }
        let rows = read_rows(&state, Some(names)).await?;
        let beats = heartbeats(&state, &rows).await;
        return Ok(layout::respond(html! {
            tbody { @for r in &rows { (row(r, beats.get(&r.name), access)) } }
        }));
    }
    let filter = q.get("state").map(String::as_str).unwrap_or("");
    if !filter.is_empty()
        && filter != "attention"
        && !Need::ALL.iter().any(|(_, w, _)| *w == filter)
    {
        return Err(crate::api::ApiError::new(
            crate::api::Code::BadRequest,
            format!(
                "`state` must be `attention` or one of {}, found `{filter}`",
                Need::ALL.map(|(_, w, _)| w).join(", ")
            ),
        ));
    }
    let search = q
        .get("q")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default();
    let mut all = read_rows(&state, None).await?;
    rows::sort(&mut all);
    let total = all.len();
    let mut counts: HashMap<Need, usize> = HashMap::new();
    for r in &all {
        *counts.entry(r.need()).or_default() += 1;
    }
    let shown: Vec<Arc<Row>> = all
        .into_iter()
        .filter(|r| match filter {
            "" => true,
            "attention" => r.need().wants_a_person(),
            w => r.need().word() == w,
        })
        .filter(|r| {
            search.is_empty()
                || r.name.to_lowercase().contains(&search)
                || r.current_test
                    .as_deref()
                    .is_some_and(|t| t.to_lowercase().contains(&search))
        })
        .collect();
    let pages = shown.len().div_ceil(PER_PAGE).max(1);
    let n = layout::page_number(&q).min(pages);
    let on_page: Vec<Arc<Row>> = shown
        .iter()
        .skip((n - 1) * PER_PAGE)
        .take(PER_PAGE)
        .cloned()
        .collect();
    let beats = heartbeats(&state, &on_page).await;
    let attention: usize = counts
        .iter()
        .filter(|(k, _)| k.wants_a_person())
        .map(|(_, v)| v)
        .sum();
    let body = html! {
        p.summary {
            (total) " loops"
            @if attention > 0 { ", " strong.attention { (attention) " need a person" } }
            @for (need, _, label) in Need::ALL {
                @if let Some(c) = counts.get(&need) { span.chip data-need=(need.word()) { (label) ": " (c) } }
            }
        }
        form #filters method="get" action="/" {
            label for="filter-state" { "Show" }
            select #filter-state name="state" {
                option value="" selected[filter.is_empty()] { "all loops" }
                option value="attention" selected[filter == "attention"] { "what needs a person" }
                @for (_, w, label) in Need::ALL {
                    option value=(w) selected[filter == w] { (label) }
                }
            }
            label for="search" { "Search" }
            input #search type="search" name="q" value=(q.get("q").map(String::as_str).unwrap_or("")) placeholder="loop or test";
            button type="submit" { "Filter" }
        }
        p #resort.notice hidden { span.why {} " " a href="" { "Sort again" } }
        table #fleet {
            thead { tr {
                th { "Loop" } th { "State" } th { "Test" } th { "Attempt" } th { "Heartbeat" }
                th { "Progress" } th { "Cost" } th { "Actions" }
            } }
            tbody {
                @for r in &on_page { (row(r, beats.get(&r.name), access)) }
            }
        }
        @if on_page.is_empty() { p.empty { "No loop matches." } }
        (layout::pager("/", &[("state", filter), ("q", q.get("q").map(String::as_str).unwrap_or(""))], n, pages))
    };
    let page = Page {
        title: "Fleet".into(),
        nav: Nav::Fleet,
        access,
        alerts: state.dashboard().recent_alerts(state.ctx()),
        live: state.dashboard().live(state.ctx()).await,
        body,
    };
    Ok(layout::respond(page.render()))
}

/// One loop's `<tr>`.
fn row(r: &Row, heartbeat: Option<&DateTime<Utc>>, access: Access) -> Markup {
    let state = layout::word(r.state);
    let need = r.need();
    let heartbeat = heartbeat.copied().or(r.attempt_started);
    let p = &r.progress;
    html! {
        tr data-loop=(r.name) data-state=(state) data-need=(need.word()) {
            td.name { a href=(format!("/loops/{}", r.name)) { (r.name) } }
            td data-field="state" {
                span class=(format!("badge state-{state}")) { (state) }
                @if let Some(reason) = &r.reason { " " span.reason { (reason) } }
                @if need.wants_a_person() && need != Need::Paused { " " span.need { (need_label(need)) } }
            }
            td data-field="test" {
                @if let (Some(t), Some(n)) = (&r.current_test, r.current_attempt) {
                    a href=(format!("/loops/{}/tests/{}/attempts/{}", r.name, t, n)) { (t) }
                }
            }
            td data-field="attempt" { @if let Some(n) = r.current_attempt { (n) } }
            td data-field="heartbeat" {
                @if let Some(at) = heartbeat {
                    time.age datetime=(at.to_rfc3339()) { (layout::duration((Utc::now() - at).num_milliseconds() as f64 / 1000.0)) " ago" }
                }
            }
            td data-field="progress" {
                progress value=(p.passed) max=(p.total.max(1)) {}
                " " span.tally { (p.passed) "/" (p.total) }
                @if p.failed > 0 { " " span.bad { (p.failed) " failed" } }
                @if p.needs_human > 0 { " " span.bad { (p.needs_human) " need a person" } }
                @if p.blocked > 0 { " " span.warn { (p.blocked) " blocked" } }
            }
            td data-field="cost" {
                (layout::usd(r.cost_usd))
                @if let Some(b) = r.budget_usd {
                    " / " (layout::usd(b))
                    " " meter min="0" max=(b) high=(b * 0.8) value=(r.cost_usd.min(b)) {}
                }
            }
            td.actions {
                @for action in ["pause", "resume", "stop", "start"] {
                    button type="button" data-action=(action) data-loop=(r.name) disabled[!access.signed_in] { (action) }
                }
            }
        }
    }
}

fn need_label(need: Need) -> &'static str {
    Need::ALL
        .iter()
        .find(|(n, _, _)| *n == need)
        .map(|(_, _, l)| *l)
        .unwrap_or("")
}
