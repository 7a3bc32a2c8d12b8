//! `GET /timeline[?hours=N&page=P]`: the attempts of the last N hours (24 by default, at most
//! 48) as bars over time, one row per loop, coloured by outcome; attempts whose agent the
//! monitor killed carry a mark, stalls are their own colour. From the journal index: no
//! ledger is read.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup, PreEscaped};

use super::journal::{Bar, KEEP_ATTEMPTS};
use super::layout::{self, Nav, Page};
use crate::api::auth::Access;
use crate::api::{ApiError, ApiState, Code};

/// Loops (rows) a page shows.
pub const PER_PAGE: usize = 100;
const LABEL_W: f64 = 170.0;
const CHART_W: f64 = 1000.0;
const ROW_H: f64 = 22.0;
const AXIS_H: f64 = 24.0;

/// `GET /timeline`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let hours: i64 = match q.get("hours") {
        None => 24,
        Some(h) => h
            .parse()
            .ok()
            .filter(|h| (1..=KEEP_ATTEMPTS.num_hours()).contains(h))
            .ok_or_else(|| {
                ApiError::new(
                    Code::BadRequest,
                    format!(
                        "`hours` must be a whole number from 1 to {}, found `{h}`",
                        KEEP_ATTEMPTS.num_hours()
                    ),
                )
            })?,
    };
    let now = Utc::now();
    let since = now - Duration::hours(hours);
    let index = state.dashboard().settled_journal(state.ctx()).await;
    let mut by_loop: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    for b in index.bars_since(since) {
        by_loop.entry(b.loop_name.clone()).or_default().push(b);
    }
    let pages = by_loop.len().div_ceil(PER_PAGE).max(1);
    let n = layout::page_number(&q).min(pages);
    let rows: Vec<(&String, &Vec<Bar>)> = by_loop
        .iter()
        .skip((n - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    // The chart starts at the first attempt shown (within the period), so a quiet fleet's
    // hour is not a sliver at the right edge.
    let from = rows
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|b| b.started))
        .min()
        .map_or(now - Duration::hours(1), |t| t.max(since));
    let hours_text = hours.to_string();
    let region = layout::region_every(
        "timeline",
        "attempt_started,attempt_finished",
        Some(2000),
        html! {
            @if !index.ready() { p.muted { "Reading the journal: the picture is still filling." } }
            @if rows.is_empty() {
                p.empty { "No attempt in the last " (hours) " hours." }
            } @else {
                (chart(&rows, from, now))
                (layout::pager("/timeline", &[("hours", &hours_text)], n, pages))
            }
        },
    );
    if layout::fragment(&q).is_some() {
        return Ok(layout::respond(region));
    }
    let body = html! {
        form #period method="get" action="/timeline" {
            label for="hours" { "Last " }
            select #hours name="hours" {
                @for h in [1, 6, 12, 24, 48] {
                    option value=(h) selected[h == hours] { (h) " h" }
                }
            }
            " " button type="submit" { "Show" }
        }
        p.legend {
            @for (class, label) in [("o-passed", "passed"), ("o-failed", "failed"), ("o-no_change", "no change"),
                ("o-stalled", "stalled / timed out"), ("o-api_error", "API error / credits"),
                ("o-interrupted", "interrupted"), ("o-running", "running")] {
                span { i class=(class) {} (label) }
            }
            span { "✕ the monitor killed the agent" }
        }
        (region)
    };
    let page = Page {
        title: "Timeline".into(),
        nav: Nav::Timeline,
        access,
        alerts: index.recent_alerts(),
        live: state.dashboard().live(state.ctx()).await,
        body,
    };
    Ok(layout::respond(page.render()))
}

fn chart(rows: &[(&String, &Vec<Bar>)], from: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let span = (now - from).num_milliseconds().max(1000) as f64;
    let x = |t: DateTime<Utc>| {
        LABEL_W + ((t - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * CHART_W
    };
    let width = LABEL_W + CHART_W + 10.0;
    let height = AXIS_H + rows.len() as f64 * ROW_H + 6.0;
    let mut ticks = String::new();
    // Seconds on the axis when the chart spans less than ten minutes.
    let format = if span < 600_000.0 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    for i in 0..=5 {
        let t = from + Duration::milliseconds((span * i as f64 / 5.0) as i64);
        let tx = x(t);
        let anchor = if i == 5 { "end" } else { "middle" };
        ticks.push_str(
            &html! {
                line.grid x1=(tx) y1=(AXIS_H - 4.0) x2=(tx) y2=(height) {}
                text.axis x=(tx) y="14" text-anchor=(anchor) { (t.format(format)) }
            }
            .into_string(),
        );
    }
    html! {
        svg #timeline-chart xmlns="http://www.w3.org/2000/svg" role="img" aria-label="attempts over time"
            width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) {
            (PreEscaped(ticks))
            @for (i, (name, bars)) in rows.iter().enumerate() {
                @let y = AXIS_H + i as f64 * ROW_H;
                g.lane data-loop=(name) {
                    a href=(format!("/loops/{name}")) {
                        text.lane-label x="6" y=(y + 15.0) { (name) }
                    }
                    @for b in bars.iter() {
                        @let x1 = x(b.started);
                        @let x2 = x(b.finished.unwrap_or(now)).max(x1 + 2.0);
                        @let outcome = b.outcome.map(layout::word).unwrap_or_else(|| "running".into());
                        a href=(format!("/loops/{}/tests/{}/attempts/{}", b.loop_name, b.test, b.attempt)) {
                            rect class=(format!("bar o-{outcome}")) x=(x1) y=(y + 3.0) width=(x2 - x1) height=(ROW_H - 6.0)
                                data-test=(b.test) data-attempt=(b.attempt) data-outcome=(outcome)
                                data-killed=[b.killed.as_deref()] {
                                title {
                                    (b.test) " #" (b.attempt) ": " (outcome)
                                    @if let Some(k) = &b.killed { " (killed: " (k) ")" }
                                    ", " (layout::duration((b.finished.unwrap_or(now) - b.started).num_milliseconds() as f64 / 1000.0))
                                    ", " (layout::usd(b.cost_usd))
                                }
                            }
                            @if b.killed.is_some() {
                                path.kill d=(format!("M{a},{t} l6,6 m0,-6 l-6,6", a = x2 - 3.0, t = y + 8.0)) {}
                            }
                        }
                    }
                }
            }
        }
    }
}
