//! `loopd status LOOP` (one loop in detail, like `pm2 show`) and `loopd status LOOP TEST` (one
//! test with its attempts), in either mode: what they print comes from a [`Source`].

use loopd_actors::hints::Hint;
use loopd_actors::model::AttemptRecord;
use loopd_actors::view::{LoopDetail, TestView};

use loopd_actors::words::count;

use super::client::Failed;
use super::source::Source;
use super::status::{attempts_table, short};
use super::style::Tone;
use super::table::{cell, toned, Table};
use super::{words, Exit};

/// How many of the newest attempts `status LOOP` lists.
const RECENT: usize = 5;

/// `loopd status LOOP [--json]`.
pub fn show_loop(source: &Source, name: &str, json: bool) -> anyhow::Result<Exit> {
    let detail = match source.detail(name) {
        Ok(d) => d,
        Err(Failed(code)) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
    } else {
        print!("{}", render_loop(&detail));
    }
    Ok(Exit::Ok)
}

/// `loopd status LOOP TEST [--json]`.
pub fn show_test(source: &Source, name: &str, test: &str, json: bool) -> anyhow::Result<Exit> {
    let detail = match source.detail(name) {
        Ok(d) => d,
        Err(Failed(code)) => return Ok(code),
    };
    let Some(t) = detail.view.tests.iter().find(|t| t.id == test) else {
        eprintln!("loopd: loop `{name}` has no test `{test}`");
        return Ok(Exit::Invalid);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(t)?);
    } else {
        print!("{}", render_test(name, t));
    }
    Ok(Exit::Ok)
}

/// One `label  value` line.
fn row(out: &mut String, label: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("  {label:<13} {value}\n"));
}

/// The `hint` line: the guidance on one line, who gave it and when.
fn hint_row(out: &mut String, hint: Option<&Hint>) {
    if let Some(h) = hint {
        let text = h.text.lines().collect::<Vec<_>>().join(" ");
        let at = h.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        row(out, "hint", format!("{text} (by {}, {at})", h.author));
    }
}

fn money(usd: f64) -> String {
    format!("${usd:.4}")
}

fn render_loop(d: &LoopDetail) -> String {
    let l = &d.view;
    let mut out = format!("{}\n", l.name);
    let reason = l
        .reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    row(&mut out, "state", format!("{}{reason}", words(&l.status)));
    if let (Some(test), Some(n)) = (&l.current_test, l.current_attempt) {
        let live = match &l.heartbeat {
            Some(h) => format!(
                ", running {:.0}s, last output {:.1}s ago{}",
                h.running_for_s,
                h.since_heartbeat_s,
                if h.stuck { ", STUCK" } else { "" }
            ),
            None => String::new(),
        };
        row(&mut out, "now", format!("{test} attempt {n}{live}"));
    }
    let p = &l.progress;
    row(
        &mut out,
        "progress",
        format!(
            "{}/{} passed, {} failed, {} blocked, {} skipped, {} waiting for a person, {} to do",
            p.passed, p.total, p.failed, p.blocked, p.skipped, p.needs_human, p.pending
        ),
    );
    let budget = d
        .settings
        .as_ref()
        .and_then(|s| s.budget_usd)
        .map(|b| format!(" of {} budget", money(b)))
        .unwrap_or_else(|| " (no budget)".into());
    row(&mut out, "cost", format!("{}{budget}", money(l.cost_usd)));
    let total = d
        .settings
        .as_ref()
        .and_then(|s| s.max_attempts_total)
        .map(|m| format!(" of {m} allowed"))
        .unwrap_or_default();
    row(&mut out, "attempts", format!("{}{total}", l.attempts));
    if let Some(s) = &d.settings {
        if let Some(w) = &s.workdir {
            row(&mut out, "workdir", w.display());
        }
        row(&mut out, "tests file", s.tests_file.display());
        let model = s
            .model
            .as_ref()
            .map(|m| format!(", model {m}"))
            .unwrap_or_default();
        row(
            &mut out,
            "agent",
            format!("{} (provider {}{model})", s.agent, s.provider),
        );
        row(
            &mut out,
            "max attempts",
            format!("{} per test", s.max_attempts),
        );
    }
    if let Some(c) = &l.checkpoint {
        row(&mut out, "checkpoint", short(c));
    }
    if let Some(t) = l.started_at {
        row(&mut out, "started", t.to_rfc3339());
    }
    hint_row(&mut out, l.hint.as_ref());
    let hinted: Vec<&str> = l
        .tests
        .iter()
        .filter(|t| t.hint.is_some())
        .map(|t| t.id.as_str())
        .collect();
    if !hinted.is_empty() {
        // Each is shown in full by `status LOOP TEST`.
        row(&mut out, "test hints", hinted.join(", "));
    }
    let mut recent: Vec<&AttemptRecord> = l.tests.iter().flat_map(|t| &t.attempts).collect();
    recent.sort_by_key(|a| a.started_at);
    if !recent.is_empty() {
        out.push_str("recent attempts:\n");
        let newest: Vec<AttemptRecord> = recent
            .iter()
            .rev()
            .take(RECENT)
            .rev()
            .map(|a| (*a).clone())
            .collect();
        out.push_str(&attempts_table(&newest));
    }
    out.push_str("tests:\n");
    let mut tests = Table::new(&["TEST", "STATUS", "ATTEMPTS"])
        .right(&[2])
        .shrink(&[0])
        .indent(2);
    for t in &l.tests {
        tests.row(vec![
            cell(&t.id),
            toned(words(&t.status), Tone::of_test(t.status)),
            cell(t.attempts.len()),
        ]);
    }
    out.push_str(&tests.render());
    out
}

fn render_test(loop_name: &str, t: &TestView) -> String {
    let mut out = format!("{loop_name}/{}: {}\n", t.id, words(&t.status));
    row(&mut out, "title", &t.title);
    if let Some(r) = &t.reason {
        row(&mut out, "reason", r);
    }
    let deps = if t.depends_on.is_empty() {
        "nothing".to_string()
    } else {
        t.depends_on.join(", ")
    };
    row(&mut out, "depends on", deps);
    if !t.blocked_by.is_empty() {
        row(&mut out, "blocked by", t.blocked_by.join(", "));
    }
    row(
        &mut out,
        "attempts",
        format!(
            "{} ({} counted)",
            count(t.attempts.len(), "attempt", "attempts"),
            t.counted_attempts
        ),
    );
    if let Some(c) = &t.commit {
        row(&mut out, "checkpoint", short(c));
    }
    if let Some(d) = &t.diagnosis {
        row(&mut out, "diagnosis", &d.summary);
    }
    hint_row(&mut out, t.hint.as_ref());
    if !t.attempts.is_empty() {
        out.push_str("attempts:\n");
        out.push_str(&attempts_table(&t.attempts));
    }
    out
}
