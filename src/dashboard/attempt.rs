//! `GET /loops/{loop}/tests/{test}/attempts/{n}`: one attempt. The transcript rendered for
//! people by the renderer `loopd logs` uses (on the server: the page's lines, then the lines
//! the event stream sends while it runs, `?render=true`); verify's output; the diff against
//! the checkpoint it started from (its pass commit, or the ref that keeps a failure); the
//! fingerprint; the outcome and why.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path as FsPath;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use loopd_actors::model::AttemptRecord;
use maud::{html, Markup};

use super::layout::{self, Live, Nav, Page};
use super::loop_page::short_fp;
use crate::api::auth::Access;
use crate::api::error::check_name;
use crate::api::{ApiError, ApiState, Code};

/// The end of a transcript the page shows (the rest is in `loopd logs`).
const MAX_TRANSCRIPT: u64 = 4 * 1024 * 1024;
/// The largest diff shown.
const MAX_DIFF: usize = 256 * 1024;

/// `GET /loops/{loop}/tests/{test}/attempts/{n}[?fragment=attempt-outcome|attempt-result]`.
pub async fn page(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path((loop_name, test, n)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_name("loop", &loop_name)?;
    check_name("test", &test)?;
    let n: u32 = n.parse().map_err(|_| {
        ApiError::new(
            Code::BadRequest,
            format!("an attempt is a number from 1, found `{n}`"),
        )
    })?;
    let (l, t) = (loop_name.clone(), test.clone());
    let (record, attempt) = state
        .ctx()
        .read(move |s| -> Result<_, ApiError> { Ok((s.get_loop(&l)?, s.get_attempt(&l, &t, n)?)) })
        .await?;
    let record = record.ok_or_else(|| ApiError::no_loop(&loop_name))?;
    let attempt = attempt.ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            format!("loop `{loop_name}` has no attempt {n} of test `{test}`"),
        )
    })?;
    let workdir = state.config_of(&record).and_then(|c| c.workdir);
    let diff = diff(workdir.as_deref(), &attempt).await;
    let outcome = outcome_region(&attempt);
    let result = result_region(&attempt, &diff);
    match layout::fragment(&q) {
        Some("attempt-outcome") => return Ok(layout::respond(outcome)),
        Some("attempt-result") => return Ok(layout::respond(result)),
        _ => {}
    }
    let path = attempt.transcript.clone();
    let lines = tokio::task::spawn_blocking(move || transcript(&path))
        .await
        .map_err(ApiError::internal)?;
    let running = attempt.outcome.is_none();
    let body = html! {
        p {
            a href=(format!("/loops/{loop_name}")) { (loop_name) } " › "
            a href=(format!("/loops/{loop_name}#test-{test}")) { (test) } " › attempt " (n)
        }
        (outcome)
        div.actions {
            @for action in ["pause", "resume"] {
                button type="button" data-action=(action) data-loop=(loop_name) disabled[!access.signed_in] { (action) " " (loop_name) }
            }
            @for action in ["reset", "skip", "rollback"] {
                button type="button" data-action=(action) data-loop=(loop_name) data-test=(test) disabled[!access.signed_in] { (action) " " (test) }
            }
        }
        h2 { "Transcript" @if running { " " span.muted { "(live)" } } }
        div #transcript role="log" aria-live="polite" {
            @if lines.skipped > 0 {
                div.muted { "… " (lines.skipped) " earlier lines: loopd logs " (loop_name) " " (test) ":" (n) }
            }
            @if lines.lines.is_empty() { div.empty { "Nothing printed yet." } }
            @for (n, text) in &lines.lines {
                div.line data-n=(n) { (text) }
            }
        }
        (result)
        h2 { "Hint for " (test) "'s next prompts" }
        form #hint {
            textarea #hint-text name="text" required disabled[!access.signed_in]
                placeholder="What the agent should know or try next time" {}
            input type="hidden" name="test" value=(test);
            button type="submit" disabled[!access.signed_in] { "Give hint" }
        }
    };
    let page = Page {
        title: format!("{test} attempt {n}"),
        nav: Nav::Fleet,
        access,
        alerts: state.dashboard().recent_alerts(state.ctx()),
        live: Live {
            loop_name: Some(loop_name.clone()),
            test: Some(test.clone()),
            attempt: Some(n),
            transcripts: running,
            ..state.dashboard().live(state.ctx()).await
        },
        body,
    };
    Ok(layout::respond(page.render()))
}

/// A transcript's rendered lines, each with the number of the raw line it came from.
struct Lines {
    /// Raw lines left out at the start (the file was longer than the page shows).
    skipped: u64,
    lines: Vec<(u64, String)>,
}

/// The transcript's last [`MAX_TRANSCRIPT`] bytes, rendered; lines are numbered as the event
/// stream numbers them, so the live lines continue where the page ends.
fn transcript(path: &FsPath) -> Lines {
    let mut out = Lines {
        skipped: 0,
        lines: Vec::new(),
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        return out;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    let mut number = 0u64;
    if len > MAX_TRANSCRIPT {
        // Count the lines left out, so the numbers stay those of the whole file.
        let mut head = Vec::new();
        if (&mut file)
            .take(len - MAX_TRANSCRIPT)
            .read_to_end(&mut head)
            .is_err()
        {
            return out;
        }
        number = head.iter().filter(|&&b| b == b'\n').count() as u64;
        out.skipped = number;
        if file.seek(SeekFrom::Start(len - MAX_TRANSCRIPT)).is_err() {
            return out;
        }
    }
    if file.read_to_end(&mut bytes).is_err() {
        return out;
    }
    // Only whole lines: the one being written comes with the live stream.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for raw in bytes[..whole].split_inclusive(|&b| b == b'\n') {
        number += 1;
        let text = String::from_utf8_lossy(raw);
        for line in crate::render::render(text.trim_end_matches(['\n', '\r'])) {
            out.lines.push((number, line));
        }
    }
    out
}

/// The attempt's diff, or why there is none.
async fn diff(workdir: Option<&FsPath>, a: &AttemptRecord) -> Result<String, String> {
    if a.outcome.is_none() {
        return Err("the attempt is running: its diff is kept when it ends".into());
    }
    let Some(commit) = &a.commit else {
        return Err("the attempt changed nothing (no commit, no saved ref)".into());
    };
    if !commit.chars().all(|c| c.is_ascii_hexdigit()) || commit.is_empty() {
        return Err(format!("`{commit}` is not a commit id"));
    }
    let Some(workdir) = workdir else {
        return Err("this daemon does not know the loop's workdir".into());
    };
    loopd_actors::git::Workdir::new(workdir)
        .show_patch(commit, MAX_DIFF)
        .await
        .map_err(|e| format!("git could not show {commit}: {e}"))
}

fn outcome_region(a: &AttemptRecord) -> Markup {
    let outcome = a
        .outcome
        .map(layout::word)
        .unwrap_or_else(|| "running".into());
    layout::region(
        "attempt-outcome",
        "attempt_finished",
        html! {
            dl.facts {
                dt { "Outcome" }
                dd #outcome data-outcome=(outcome) {
                    span class=(format!("status status-{}", outcome_class(&outcome))) { (outcome) }
                    @if let Some(k) = a.killed { " " span.bad { "killed: " (layout::word(k)) } }
                    @if let Some(r) = &a.reason { " — " (r) }
                }
                dt { "Started" } dd { (layout::time(a.started_at)) }
                @if let Some(ms) = a.duration_ms { dt { "Took" } dd { (layout::duration(ms as f64 / 1000.0)) } }
                dt { "Cost" } dd { (layout::usd(a.cost_usd)) ", " (a.input_tokens) " in / " (a.output_tokens) " out tokens" }
                @if let Some(c) = a.exit_code { dt { "Agent exit" } dd { (c) } }
                @if let Some(s) = a.exit_signal { dt { "Agent signal" } dd { (s) } }
                dt { "Fingerprint" }
                dd #fingerprint {
                    @if let Some(fp) = &a.fingerprint { code title=(fp) { (short_fp(fp)) } } @else { span.muted { "none" } }
                }
                @if let Some(s) = &a.summary { dt { "Agent's summary" } dd { (s) } }
                @if let Some(c) = &a.commit { dt { "Commit" } dd { code { (c) } } }
            }
        },
    )
}

fn result_region(a: &AttemptRecord, diff: &Result<String, String>) -> Markup {
    let verify = match (a.verify_head.is_empty(), a.verify_tail.is_empty()) {
        (true, true) => String::new(),
        (true, false) => a.verify_tail.clone(),
        (false, true) => a.verify_head.clone(),
        (false, false) => format!("{}\n…\n{}", a.verify_head, a.verify_tail),
    };
    layout::region(
        "attempt-result",
        "attempt_finished",
        html! {
            h2 { "Verify" @if let Some(code) = a.verify_exit { " " span.muted { "(exit " (code) ")" } } }
            pre #verify {
                @if verify.is_empty() {
                    @if a.outcome.is_none() { "verify runs when the agent ends" } @else { "verify printed nothing" }
                } @else { (verify) }
            }
            h2 { "Diff against the checkpoint" }
            pre #diff {
                @match diff { Ok(d) => (d), Err(why) => span.muted { (why) } }
            }
        },
    )
}

/// The colour class of an outcome: passed green, the failures red, the rest grey.
fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "passed" => "passed",
        "running" => "running",
        "failed" | "agent_error" | "no_change" | "regression" => "failed",
        "stalled" | "timed_out" => "blocked",
        _ => "pending",
    }
}
