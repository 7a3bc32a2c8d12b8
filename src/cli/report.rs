//! `loopd report [CONFIG] [--since DURATION|TIME] [--format md|html|json]`: the morning report,
//! from the daemon or the store (see [`Source`]), as Markdown for people, as one self-contained
//! HTML page ([`html`]), or as the JSON of `GET /api/report`.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use loopd_actors::hints::Hint;
use loopd_actors::view::{self, LoopReport, ReportDoc};

use super::client::Failed;
use super::source::Source;
use super::target::FleetRef;
use super::{words, Exit};

/// Arguments of `loopd report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
    /// The period's start: a duration back from now (`8h`, `2d`) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME", default_value = "24h", value_parser = since)]
    pub since: DateTime<Utc>,
    /// `md` (Markdown, for people), `html` (one page, no script, nothing to fetch) or `json`
    /// (the document of `GET /api/report`).
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
}

/// How `report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown.
    Md,
    /// One self-contained HTML document.
    Html,
    /// JSON.
    Json,
}

/// `--since`, read once and to the second, so that the daemon (asked with [`stamp`]) and the
/// store report the same period.
fn since(text: &str) -> Result<DateTime<Utc>, String> {
    let t = view::parse_since(text, Utc::now())?;
    Ok(t.with_nanosecond(0).unwrap_or(t))
}

/// `loopd report`.
pub fn report(fleet: &FleetRef, args: &ReportArgs) -> anyhow::Result<Exit> {
    let json = args.format == Format::Json;
    let doc = match Source::open(fleet, json)
        .map_err(Failed)
        .and_then(|s| s.report(args.since))
    {
        Ok(d) => d,
        Err(Failed(code)) => return Ok(code),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Format::Md => super::out(&render(&doc))?,
        Format::Html => super::out(&super::report_html::render(&doc))?,
    }
    Ok(Exit::Ok)
}

/// The time as the query parameter and the report print it, to the second.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whose hint: every test's (the loop's own) or one test's.
pub fn hint_target(h: &Hint) -> &str {
    h.test_id.as_deref().unwrap_or("every test")
}

/// The report as Markdown.
pub fn render(doc: &ReportDoc) -> String {
    let t = &doc.totals;
    let mut out = format!(
        "# loopd report\n\nPeriod: {} to {}\n\nFleet: {} attempts, ${:.2}, {}; {} passed, {} failed, \
         {} waiting for a person, {} skipped; {}\n",
        stamp(doc.since),
        stamp(doc.generated_at),
        t.attempts,
        t.cost_usd,
        seconds(t.duration_ms),
        t.passed,
        t.failed,
        t.needs_human,
        t.skipped,
        plural(t.alerts, "alert"),
    );
    for l in &doc.loops {
        out.push_str(&render_loop(l));
    }
    if !doc.fleet_alerts.is_empty() {
        out.push_str("\n## Fleet alerts\n\n");
        for a in &doc.fleet_alerts {
            let lp = if a.loop_name.is_empty() {
                String::new()
            } else {
                format!("{}: ", a.loop_name)
            };
            out.push_str(&format!("- {} {lp}{}\n", stamp(a.at), a.message));
        }
    }
    out
}

/// `n` and `what`, with an `s` unless `n` is 1.
fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Milliseconds as seconds, to a tenth.
pub fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn render_loop(l: &LoopReport) -> String {
    let p = &l.now.progress;
    let mut out = format!(
        "\n## {}\n\nNow: {}{}, {}/{} passed",
        l.name,
        words(&l.now.status),
        l.now
            .reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        p.passed,
        p.total
    );
    for (n, what) in not_passed(p) {
        out.push_str(&format!(", {n} {what}"));
    }
    if let Some(t) = &l.now.current_test {
        out.push_str(&format!(", attempting {t}"));
        if let (Some(n), Some(at)) = (l.now.current_attempt, l.now.attempt_started_at) {
            out.push_str(&format!(" (attempt {n} since {})", stamp(at)));
        }
    }
    out.push('\n');
    if quiet(l) {
        out.push_str("\nNothing happened in the period.\n");
        out.push_str(&render_hints(&l.hints));
        return out;
    }
    out.push_str(&format!("\n{}\n", attempts_line(l)));
    if !l.passed.is_empty() {
        out.push_str("\n### Passed\n\n");
        for t in &l.passed {
            let commit = t.commit.as_deref().map(|c| &c[..c.len().min(12)]);
            out.push_str(&format!(
                "- {} {} (attempt {}{})\n",
                t.id,
                t.title,
                t.attempt,
                commit.map(|c| format!(", commit {c}")).unwrap_or_default()
            ));
        }
    }
    for (title, list) in [
        ("Failed", &l.failed),
        ("Needs a person", &l.needs_human),
        ("Skipped", &l.skipped),
    ] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {title}\n\n"));
        for t in list {
            out.push_str(&format!("- {} {}", t.id, t.title));
            if let Some(r) = &t.reason {
                out.push_str(&format!(": {r}"));
            }
            out.push('\n');
            if let Some(d) = &t.diagnosis {
                out.push_str(&format!("  - diagnosis: {d}\n"));
            }
        }
    }
    if !l.slowest.is_empty() {
        out.push_str("\n### Slowest tests\n\n| Test | Time | Attempts |\n|---|---:|---:|\n");
        for s in &l.slowest {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                s.id,
                seconds(s.duration_ms),
                s.attempts
            ));
        }
    }
    if !l.patterns.is_empty() {
        out.push_str(
            "\n### Most frequent failures\n\n| Count | Failure | Tests |\n|---:|---|---|\n",
        );
        for f in &l.patterns {
            out.push_str(&format!(
                "| {} | `{}` | {} |\n",
                f.count,
                f.example.replace('|', "\\|").replace('`', "'"),
                f.tests.join(", ")
            ));
        }
    }
    if !l.alerts.is_empty() {
        out.push_str("\n### Alerts\n\n");
        for a in &l.alerts {
            let test = a
                .test_id
                .as_deref()
                .map(|t| format!("{t}: "))
                .unwrap_or_default();
            out.push_str(&format!("- {} {test}{}\n", stamp(a.at), a.message));
        }
    }
    out.push_str(&render_hints(&l.hints));
    out
}

/// True when nothing of the loop's is in the period.
pub fn quiet(l: &LoopReport) -> bool {
    l.attempts == 0
        && l.failed.is_empty()
        && l.needs_human.is_empty()
        && l.skipped.is_empty()
        && l.alerts.is_empty()
}

/// "Attempts: N (by outcome), $cost, time; in all N attempts, $cost", as the Markdown and the
/// HTML both say a loop's attempts in the period beside its totals.
pub fn attempts_line(l: &LoopReport) -> String {
    let by: Vec<String> = l
        .outcomes
        .iter()
        .map(|o| format!("{} {}", o.count, words(&o.outcome)))
        .collect();
    format!(
        "Attempts: {}{}, ${:.2}, {}; in all {} attempts, ${:.2}",
        l.attempts,
        if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        },
        l.cost_usd,
        seconds(l.duration_ms),
        l.total_attempts,
        l.total_cost_usd,
    )
}

/// A loop's tests that did not pass, by how they stand (only those there are), as the Markdown
/// and the HTML both say them after "N/M passed".
pub fn not_passed(p: &view::Progress) -> impl Iterator<Item = (usize, &'static str)> {
    [
        (p.failed, "failed"),
        (p.needs_human, "waiting for a person"),
        (p.skipped, "skipped"),
        (p.blocked, "blocked"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
}

/// The current hints, each under its target, later lines of a hint indented beneath it.
fn render_hints(hints: &[Hint]) -> String {
    if hints.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n### Hints\n\n");
    for h in hints {
        let mut lines = h.text.lines();
        out.push_str(&format!(
            "- {} (by {}, {}): {}\n",
            hint_target(h),
            h.author,
            stamp(h.at),
            lines.next().unwrap_or_default()
        ));
        for more in lines {
            out.push_str(&format!("  {more}\n"));
        }
    }
    out
}
