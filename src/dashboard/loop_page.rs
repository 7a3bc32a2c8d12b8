//! `GET /loops/{loop}`: one loop. Its tests as a dependency graph and as a table (both change
//! with the events about the loop), the healer's diagnoses of the tests that failed, the
//! lessons on offer for its failures, the hints a person gave, the hint form and its config.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use loopd_actors::model::TestStatus;
use loopd_actors::view::{self, InsightsDoc, LoopDetail, TestView};
use maud::{html, Markup};

use super::graph;
use super::layout::{self, Live, Nav, Page};
use crate::api::auth::Access;
use crate::api::error::check_name;
use crate::api::{ApiError, ApiState};

/// The events that change the tests region.
const TEST_EVENTS: &str =
    "loop_state,attempt_started,attempt_finished,test_passed,test_failed,test_blocked,test_changed,hint";

/// `GET /loops/{loop}[?fragment=REGION]`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_name("loop", &name)?;
    let detail = state.loop_detail(&name).await?;
    let owned = name.clone();
    let insights: InsightsDoc = state
        .ctx()
        .read(move |s| view::insights(s, Some(&owned), 10))
        .await?;
    let regions = [
        ("loop-head", head(&detail, access)),
        ("loop-tests", tests_region(&detail, access)),
        ("loop-hints", hints_region(&detail)),
        ("loop-lessons", lessons_region(&insights)),
    ];
    if let Some(wanted) = layout::fragment(&q) {
        return match regions.into_iter().find(|(id, _)| *id == wanted) {
            Some((_, m)) => Ok(layout::respond(m)),
            None => Err(crate::api::ApiError::new(
                crate::api::Code::NotFound,
                format!("no region `{wanted}`: there are loop-head, loop-tests, loop-hints and loop-lessons"),
            )),
        };
    }
    let [head, tests, hints, lessons] = regions.map(|(_, m)| m);
    let body = html! {
        (head)
        (tests)
        h2 { "Hints" }
        (hints)
        (hint_form(&detail, access))
        h2 { "Failure patterns and lessons" }
        (lessons)
        h2 { "Config" }
        (config(&detail))
    };
    let page = Page {
        title: format!("Loop {name}"),
        nav: Nav::Fleet,
        access,
        alerts: state.dashboard().recent_alerts(state.ctx()),
        live: Live {
            loop_name: Some(name),
            ..state.dashboard().live(state.ctx()).await
        },
        body,
    };
    Ok(layout::respond(page.render()))
}

fn head(d: &LoopDetail, access: Access) -> Markup {
    let v = &d.view;
    let state = layout::word(v.status);
    let p = &v.progress;
    let budget = d.settings.as_ref().and_then(|s| s.budget_usd);
    layout::region(
        "loop-head",
        "loop_state,attempt_started,attempt_finished,test_passed",
        html! {
            div.cards {
                div.card {
                    div { "State" }
                    div.big { span class=(format!("badge state-{state}")) data-field="state" { (state) } }
                    @if let Some(r) = &v.reason { div.reason { (r) } }
                }
                div.card {
                    div { "Progress" }
                    div.big { (p.passed) " / " (p.total) " passed" }
                    progress value=(p.passed) max=(p.total.max(1)) {}
                    div.muted {
                        (p.failed) " failed, " (p.needs_human) " need a person, " (p.blocked) " blocked, "
                        (p.skipped) " skipped, " (p.pending) " to do"
                    }
                }
                div.card {
                    div { "Now" }
                    @if let (Some(t), Some(n)) = (&v.current_test, v.current_attempt) {
                        div.big { a href=(format!("/loops/{}/tests/{t}/attempts/{n}", v.name)) { (t) " #" (n) } }
                    } @else {
                        div.big.muted { "no attempt running" }
                    }
                }
                div.card {
                    div { "Cost" }
                    div.big { (layout::usd(v.cost_usd)) @if let Some(b) = budget { " / " (layout::usd(b)) } }
                    div.muted { (v.attempts) " attempts" }
                }
            }
            div.actions {
                @for action in ["pause", "resume", "stop", "start"] {
                    button type="button" data-action=(action) data-loop=(v.name) disabled[!access.signed_in] { (action) }
                }
            }
        },
    )
}

fn tests_region(d: &LoopDetail, access: Access) -> Markup {
    let v = &d.view;
    let diagnosed: Vec<&TestView> = v.tests.iter().filter(|t| t.diagnosis.is_some()).collect();
    layout::region(
        "loop-tests",
        TEST_EVENTS,
        html! {
            h2 { "Tests" }
            (graph::svg(&v.name, &v.tests))
            table #tests {
                thead { tr {
                    th { "Test" } th { "Title" } th { "Status" } th { "Attempts" } th { "Last attempt" }
                    th { "Why" } th { "Actions" }
                } }
                tbody {
                    @for t in &v.tests {
                        (test_row(&v.name, t, access))
                    }
                }
            }
            @if !diagnosed.is_empty() {
                h2 { "Diagnoses" }
                @for t in diagnosed { (diagnosis(t)) }
            }
        },
    )
}

fn test_row(loop_name: &str, t: &TestView, access: Access) -> Markup {
    let status = layout::word(t.status);
    let last = t.attempts.last();
    html! {
        tr #(format!("test-{}", t.id)) data-test=(t.id) data-status=(status) {
            td { code { (t.id) } }
            td { (t.title) }
            td { span class=(format!("status status-{status}")) { (status) } }
            td { (t.counted_attempts) " counted / " (t.attempts.len()) }
            td {
                @if let Some(a) = last {
                    a href=(format!("/loops/{loop_name}/tests/{}/attempts/{}", t.id, a.number)) {
                        "#" (a.number) " "
                        (a.outcome.map(layout::word).unwrap_or_else(|| "running".into()))
                    }
                    @if t.attempts.len() > 1 {
                        " " span.muted { "(" @for (i, a) in t.attempts.iter().rev().skip(1).take(5).enumerate() {
                            @if i > 0 { " " }
                            a href=(format!("/loops/{loop_name}/tests/{}/attempts/{}", t.id, a.number)) { "#" (a.number) }
                        } ")" }
                    }
                }
            }
            td {
                @if let Some(r) = &t.reason { (r) }
                @if !t.blocked_by.is_empty() { " " span.warn { "blocked by " (t.blocked_by.join(", ")) } }
                @if let Some(h) = &t.hint { div.muted { "hint: " (h.text) } }
            }
            td.actions {
                @for action in ["reset", "skip", "rollback"] {
                    @let pointless = (action == "skip" && t.status == TestStatus::Skipped)
                        || (action == "rollback" && t.status != TestStatus::Passed);
                    button type="button" data-action=(action) data-loop=(loop_name) data-test=(t.id)
                        disabled[!access.signed_in || pointless] { (action) }
                }
            }
        }
    }
}

fn diagnosis(t: &TestView) -> Markup {
    let Some(d) = &t.diagnosis else {
        return html! {};
    };
    html! {
        div.card.diagnosis data-test=(t.id) {
            strong { (t.id) } " " span.muted { "diagnosed " (layout::time(d.diagnosed_at)) }
            p { (d.summary) }
            @if !d.classes.is_empty() {
                p.muted {
                    @for (i, c) in d.classes.iter().enumerate() {
                        @if i > 0 { ", " }
                        (c.count) " " (layout::word(c.outcome))
                    }
                }
            }
            @if !d.last_errors.is_empty() {
                ul { @for e in &d.last_errors { li { "#" (e.attempt) " " (layout::word(e.outcome)) ": " code { (e.line) } } } }
            }
            @if !d.suggestions.is_empty() {
                p { "Suggestions:" }
                ul { @for s in &d.suggestions { li { (s) } } }
            }
        }
    }
}

fn hints_region(d: &LoopDetail) -> Markup {
    let v = &d.view;
    let test_hints: Vec<&TestView> = v.tests.iter().filter(|t| t.hint.is_some()).collect();
    layout::region(
        "loop-hints",
        "hint",
        html! {
            @if v.hint.is_none() && test_hints.is_empty() {
                p.empty { "No hints: the next prompts carry none." }
            } @else {
                ul #hints-list {
                    @if let Some(h) = &v.hint {
                        li { strong { "every test" } ": " (h.text) " " span.muted { "by " (h.author) ", " (layout::time(h.at)) } }
                    }
                    @for t in test_hints {
                        @if let Some(h) = &t.hint {
                            li { strong { (t.id) } ": " (h.text) " " span.muted { "by " (h.author) ", " (layout::time(h.at)) } }
                        }
                    }
                }
            }
        },
    )
}

fn hint_form(d: &LoopDetail, access: Access) -> Markup {
    html! {
        form #hint {
            label for="hint-text" { "Guidance for the next prompts" }
            textarea #hint-text name="text" required disabled[!access.signed_in]
                placeholder="What the agent should know or try" {}
            label for="hint-test" { "For" }
            select #hint-test name="test" disabled[!access.signed_in] {
                option value="" { "every test of the loop" }
                @for t in &d.view.tests {
                    @if t.status != TestStatus::Removed { option value=(t.id) { (t.id) } }
                }
            }
            button type="submit" disabled[!access.signed_in] { "Give hint" }
        }
    }
}

fn lessons_region(doc: &InsightsDoc) -> Markup {
    layout::region_every(
        "loop-lessons",
        "attempt_finished",
        Some(5000),
        html! {
            @if doc.patterns.is_empty() && doc.lessons.is_empty() {
                p.empty { "No failure repeated, no lesson learned yet." }
            }
            @if !doc.patterns.is_empty() {
                table.patterns {
                    thead { tr { th { "Fingerprint" } th { "Failures" } th { "Error" } th { "Tests" } th { "Last seen" } } }
                    tbody {
                        @for p in &doc.patterns {
                            tr { td { code { (short_fp(&p.fingerprint)) } } td { (p.count) } td { code { (p.example) } } td { (p.tests.join(", ")) } td { (layout::time(p.last_seen)) } }
                        }
                    }
                }
            }
            @if !doc.lessons.is_empty() {
                h2 { "Lessons offered to its prompts" }
                ul.lessons {
                    @for l in &doc.lessons {
                        li {
                            code { (short_fp(&l.fingerprint)) } " "
                            @if !l.error_line.is_empty() { "after " code { (l.error_line) } ": " }
                            strong { (l.loop_name) ":" (l.test_id) " #" (l.attempt) } " passed, changing " (l.what_changed)
                            @if let Some(s) = &l.summary { " — " (s) }
                        }
                    }
                }
            }
        },
    )
}

/// The first 12 characters of a fingerprint.
pub fn short_fp(fp: &str) -> &str {
    fp.get(..12).unwrap_or(fp)
}

fn config(d: &LoopDetail) -> Markup {
    let Some(s) = &d.settings else {
        return html! { p.empty { "This daemon does not know the loop's configuration." } };
    };
    html! {
        dl.facts #config {
            @if let Some(w) = &s.workdir { dt { "workdir" } dd { code { (w.display()) } } }
            dt { "tests file" } dd { code { (s.tests_file.display()) } }
            dt { "agent" } dd { (s.agent) }
            dt { "provider" } dd { (s.provider) }
            @if let Some(m) = &s.model { dt { "model" } dd { (m) } }
            dt { "max attempts" } dd { (s.max_attempts) }
            @if let Some(b) = s.budget_usd { dt { "budget" } dd { (layout::usd(b)) } }
            @if let Some(n) = s.max_attempts_total { dt { "attempts in all" } dd { (n) } }
            @if let Some(p) = d.view.priority { dt { "priority" } dd { (p) } }
            @if let Some(c) = &d.view.checkpoint { dt { "checkpoint" } dd { code { (c) } } }
        }
    }
}
