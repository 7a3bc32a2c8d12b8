//! `GET /cost`: spend per loop, per test and per model, the burn rate over the last hour, the
//! projected spend to the end of each tests file at the current rate, and the budgets left.
//! Per loop from the fleet's cached rows (the store's running totals), per test and the last
//! hour from the journal index: no ledger is read.
//!
//! The projection: a loop's tests not yet passed or skipped, times what a passed test cost
//! lately (in the last hour when tests passed in it, else since the start), plus what it spent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use chrono::{Duration, Utc};
use loopd_actors::model::Outcome;
use maud::{html, Markup};

use super::journal::Bar;
use super::layout::{self, Nav, Page};
use super::rows::Row;
use crate::api::auth::Access;
use crate::api::{ApiError, ApiState};

/// Loops a page of the per-loop table shows.
pub const PER_PAGE: usize = 100;
/// Tests in the per-test table.
const TOP_TESTS: usize = 20;

/// One loop's money.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopCost {
    /// The loop.
    pub name: String,
    /// Its model, when configured.
    pub model: Option<String>,
    /// Spent so far.
    pub spent: f64,
    /// What it may spend.
    pub budget: Option<f64>,
    /// Spent in the last hour.
    pub last_hour: f64,
    /// Tests not passed or skipped yet.
    pub remaining: usize,
    /// What a passed test costs at the current rate, when any passed.
    pub per_test: Option<f64>,
}

impl LoopCost {
    /// From the loop's row and its attempts of the last hour.
    pub fn of(row: &Row, hour: &[&Bar]) -> LoopCost {
        let last_hour: f64 = hour.iter().map(|b| b.cost_usd).sum();
        let passed_lately = hour
            .iter()
            .filter(|b| b.outcome == Some(Outcome::Passed))
            .count();
        let p = &row.progress;
        let per_test = if passed_lately > 0 {
            Some(last_hour / passed_lately as f64)
        } else if p.passed > 0 {
            Some(row.cost_usd / p.passed as f64)
        } else {
            None
        };
        LoopCost {
            name: row.name.clone(),
            model: row.model.clone(),
            spent: row.cost_usd,
            budget: row.budget_usd,
            last_hour,
            remaining: p.total.saturating_sub(p.passed + p.skipped),
            per_test,
        }
    }

    /// What it will have spent when its tests file is done, at the current rate.
    pub fn projected(&self) -> Option<f64> {
        if self.remaining == 0 {
            return Some(self.spent);
        }
        self.per_test
            .map(|rate| self.spent + rate * self.remaining as f64)
    }

    /// Budget left (never below zero).
    pub fn left(&self) -> Option<f64> {
        self.budget.map(|b| (b - self.spent).max(0.0))
    }
}

/// `GET /cost[?page=N]`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let names = state.ctx().store().loop_names_page("", usize::MAX)?.0;
    let s = state.clone();
    let rows: Vec<Arc<Row>> = state
        .ctx()
        .read(move |store| s.dashboard().rows.rows(store, &names, &|r| s.budget_of(r)))
        .await?;
    let index = state.dashboard().settled_journal(state.ctx()).await;
    let hour_ago = Utc::now() - Duration::hours(1);
    let recent = index.bars_since(hour_ago);
    let mut hour: HashMap<&str, Vec<&Bar>> = HashMap::new();
    for b in recent
        .iter()
        .filter(|b| b.finished.is_some_and(|f| f >= hour_ago))
    {
        hour.entry(b.loop_name.as_str()).or_default().push(b);
    }
    let mut costs: Vec<LoopCost> = rows
        .iter()
        .map(|r| LoopCost::of(r, hour.get(r.name.as_str()).map_or(&[][..], Vec::as_slice)))
        .collect();
    costs.sort_by(|a, b| {
        b.spent
            .total_cmp(&a.spent)
            .then_with(|| a.name.cmp(&b.name))
    });
    let spend = index.spend();
    let region = layout::region_every(
        "cost",
        "attempt_finished",
        Some(3000),
        body(&costs, &spend, layout::page_number(&q), index.ready()),
    );
    if layout::fragment(&q).is_some() {
        return Ok(layout::respond(region));
    }
    let page = Page {
        title: "Cost".into(),
        nav: Nav::Cost,
        access,
        alerts: index.recent_alerts(),
        live: state.dashboard().live(state.ctx()).await,
        body: region,
    };
    Ok(layout::respond(page.render()))
}

fn body(
    costs: &[LoopCost],
    spend: &HashMap<(String, String), super::journal::TestSpend>,
    page: usize,
    ready: bool,
) -> Markup {
    let spent: f64 = costs.iter().map(|c| c.spent).sum();
    let burn: f64 = costs.iter().map(|c| c.last_hour).sum();
    let projected: f64 = costs.iter().filter_map(LoopCost::projected).sum();
    let unknown = costs.iter().filter(|c| c.projected().is_none()).count();
    let budgets: Vec<&LoopCost> = costs.iter().filter(|c| c.budget.is_some()).collect();
    let left: f64 = budgets.iter().filter_map(|c| c.left()).sum();
    let mut models: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for c in costs {
        let m = models
            .entry(c.model.clone().unwrap_or_else(|| "(not set)".into()))
            .or_default();
        m.0 += 1;
        m.1 += c.spent;
        m.2 += c.last_hour;
    }
    let mut tests: Vec<(&(String, String), &super::journal::TestSpend)> = spend.iter().collect();
    tests.sort_by(|a, b| {
        b.1.cost_usd
            .total_cmp(&a.1.cost_usd)
            .then_with(|| a.0.cmp(b.0))
    });
    tests.truncate(TOP_TESTS);
    let pages = costs.len().div_ceil(PER_PAGE).max(1);
    let page = page.min(pages);
    html! {
        @if !ready { p.muted { "Reading the journal: the last hour and the per-test figures are still filling." } }
        div.cards {
            div.card #spent { div { "Spent" } div.big { (layout::usd(spent)) } div.muted { (costs.len()) " loops" } }
            div.card #burn { div { "Burn rate" } div.big { (layout::usd(burn)) " / h" } div.muted { "over the last hour" } }
            div.card #projected {
                div { "Projected" }
                div.big { (layout::usd(projected)) }
                div.muted {
                    "when every tests file is done, at the current rate"
                    @if unknown > 0 { "; leaves out " (unknown) " loops with no passed test to go by" }
                }
            }
            div.card #budgets-left {
                div { "Budgets left" }
                div.big { @if budgets.is_empty() { "no budgets" } @else { (layout::usd(left)) } }
                div.muted { (budgets.len()) " loops with a budget" }
            }
        }
        h2 { "Per loop" }
        table #cost-loops {
            thead { tr {
                th { "Loop" } th { "Model" } th { "Spent" } th { "Last hour" } th { "Budget" } th { "Left" }
                th { "Tests to go" } th { "Per passed test" } th { "Projected" }
            } }
            tbody {
                @for c in costs.iter().skip((page - 1) * PER_PAGE).take(PER_PAGE) {
                    @let over = matches!((c.projected(), c.budget), (Some(p), Some(b)) if p > b);
                    tr data-loop=(c.name) {
                        td { a href=(format!("/loops/{}", c.name)) { (c.name) } }
                        td { (c.model.as_deref().unwrap_or("")) }
                        td { (layout::usd(c.spent)) }
                        td { (layout::usd(c.last_hour)) }
                        td { @if let Some(b) = c.budget { (layout::usd(b)) } }
                        td { @if let Some(l) = c.left() { (layout::usd(l)) } }
                        td { (c.remaining) }
                        td { @if let Some(r) = c.per_test { (layout::usd(r)) } }
                        td.bad[over] {
                            @match c.projected() { Some(p) => (layout::usd(p)), None => "—" }
                            @if over { " over budget" }
                        }
                    }
                }
            }
        }
        (layout::pager("/cost", &[], page, pages))
        h2 { "Per model" }
        table #cost-models {
            thead { tr { th { "Model" } th { "Loops" } th { "Spent" } th { "Last hour" } } }
            tbody {
                @for (m, (loops, spent, hour)) in &models {
                    tr { td { (m) } td { (loops) } td { (layout::usd(*spent)) } td { (layout::usd(*hour)) } }
                }
            }
        }
        h2 { "Per test" " " span.muted { "(the most expensive, as far as the journal goes back)" } }
        table #cost-tests {
            thead { tr { th { "Test" } th { "Attempts" } th { "Spent" } } }
            tbody {
                @for ((l, t), s) in &tests {
                    tr { td { a href=(format!("/loops/{l}#test-{t}")) { (l) ":" (t) } } td { (s.attempts) } td { (layout::usd(s.cost_usd)) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopd_actors::model::LoopState;
    use loopd_actors::view::Progress;

    fn bar(cost: f64, outcome: Outcome) -> Bar {
        Bar {
            loop_name: "l".into(),
            test: "T".into(),
            attempt: 1,
            started: Utc::now(),
            finished: Some(Utc::now()),
            outcome: Some(outcome),
            killed: None,
            cost_usd: cost,
        }
    }

    #[test]
    fn projects_the_tests_left_at_the_last_hours_rate() {
        let row = Row {
            name: "l".into(),
            state: LoopState::Running,
            reason: None,
            current_test: None,
            current_attempt: None,
            attempt_started: None,
            progress: Progress {
                passed: 2,
                total: 6,
                skipped: 1,
                ..Progress::default()
            },
            cost_usd: 10.0,
            budget_usd: Some(12.0),
            model: None,
            last_outcome: None,
        };
        let (pass, fail) = (bar(1.0, Outcome::Passed), bar(0.5, Outcome::Failed));
        let c = LoopCost::of(&row, &[&pass, &fail]);
        // 3 tests to go at $1.50 a passed test (the last hour's), on top of $10.
        assert_eq!(c.remaining, 3);
        assert_eq!(c.per_test, Some(1.5));
        assert_eq!(c.projected(), Some(14.5));
        assert_eq!(c.left(), Some(2.0));
        // Nothing passed lately: the average since the start ($5 a test).
        let c = LoopCost::of(&row, &[]);
        assert_eq!(c.projected(), Some(25.0));
    }
}
