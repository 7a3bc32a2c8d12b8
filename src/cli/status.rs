//! `loopd status [CONFIG] [LOOP [TEST]] [--json]`, `loopd attempts [CONFIG] LOOP [TEST]
//! [--json]`, `loopd export [CONFIG]`: from the daemon when one holds the state directory, from
//! the store otherwise (the same documents either way, see [`Source`]).

use std::path::{Path, PathBuf};

use loopd_actors::git;
use loopd_actors::model::{AttemptRecord, Outcome};
use loopd_actors::view::LoopView;
use loopd_actors::words::count;

use super::client::Failed;
use super::source::Source;
use super::style::{self, Tone};
use super::table::{cell, toned, Table};
use super::target::{self, FleetRef, Shape};
use super::{words, Exit};

/// Arguments of `loopd status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// `[CONFIG] [LOOP [TEST]]`: the fleet file, then one loop in detail, then one of its tests.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Print `{"loops": [LOOP]}` as JSON (LOOP as `GET /api/loops/:id`); with LOOP, what
    /// `GET /api/loops/:id?view=detail` returns; with TEST, that test.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `loopd attempts`.
#[derive(Debug, clap::Args)]
pub struct AttemptsArgs {
    /// `[CONFIG] LOOP [TEST]`: the loop, then only this test's attempts.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Print `{"attempts": [...]}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The source of `fleet`'s state, or the exit code when there is none to read.
fn open(fleet: &FleetRef, json: bool) -> Result<Source, Failed> {
    Source::open(fleet, json).map_err(Failed)
}

/// `loopd status`.
pub fn status(flag: Option<&PathBuf>, args: &StatusArgs) -> anyhow::Result<Exit> {
    let shape = Shape::new("status", "[CONFIG] [LOOP [TEST]]", 0, 2);
    let (fleet, names) = match target::resolve(&args.args, shape, flag) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let source = match open(&fleet, args.json) {
        Ok(s) => s,
        Err(Failed(code)) => return Ok(code),
    };
    match names.as_slice() {
        [lp] => return super::detail::show_loop(&source, lp, args.json),
        [lp, test] => return super::detail::show_test(&source, lp, test, args.json),
        _ => {}
    }
    let doc = match source.status() {
        Ok(doc) => doc,
        Err(Failed(code)) => return Ok(code),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
    let mut text = String::new();
    for l in &doc.loops {
        text.push_str(&loop_text(l));
    }
    super::out(&text)?;
    Ok(Exit::Ok)
}

/// One loop of `status`: a heading line, what runs now, and the table of its tests.
fn loop_text(l: &LoopView) -> String {
    let p = &l.progress;
    let killed = l
        .tests
        .iter()
        .flat_map(|t| &t.attempts)
        .filter(|a| a.killed.is_some())
        .count();
    let state = format!(
        "{}{}",
        words(&l.status),
        l.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let rest = format!(
        "  {}/{} passed, {} failed, {} blocked, {} skipped  {}{}  ${:.4}",
        p.passed,
        p.total,
        p.failed,
        p.blocked,
        p.skipped,
        count(l.attempts, "attempt", "attempts"),
        if killed > 0 {
            format!(" ({killed} killed by the monitor)")
        } else {
            String::new()
        },
        l.cost_usd
    );
    let mut out = style::heading(&l.name, &state, Tone::of_state(l.status), &rest);
    if let (Some(test), Some(n)) = (&l.current_test, l.current_attempt) {
        let now = match &l.heartbeat {
            Some(h) => format!(
                "  now: {test} attempt {n}, running {:.0}s, last output {:.1}s ago{}",
                h.running_for_s,
                h.since_heartbeat_s,
                if h.stuck {
                    "  STUCK (no output for over half of stall_timeout)"
                } else {
                    ""
                }
            ),
            None => format!("  now: {test} attempt {n}"),
        };
        out.push_str(&style::fit(&now, style::width()));
        out.push('\n');
    }
    // A loop with lanes: every lane at work, and the merge queue.
    if l.running.iter().any(|r| r.lane > 0) {
        let lanes: Vec<String> = l
            .running
            .iter()
            .map(|r| format!("lane {}: {} attempt {}", r.lane, r.test_id, r.attempt))
            .collect();
        out.push_str(&style::fit(
            &format!("  lanes: {}", lanes.join(", ")),
            style::width(),
        ));
        out.push('\n');
    }
    if !l.merge_queue.is_empty() {
        let entries: Vec<String> = l
            .merge_queue
            .iter()
            .map(|e| {
                let state = serde_json::to_value(e.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("{} ({state})", e.test_id)
            })
            .collect();
        out.push_str(&style::fit(
            &format!("  merge queue: {}", entries.join(", ")),
            style::width(),
        ));
        out.push('\n');
    }
    let mut t = Table::new(&["TEST", "STATUS", "ATTEMPTS", "WHY"])
        .right(&[2])
        .shrink(&[0, 3])
        .indent(2);
    for test in &l.tests {
        // A pass after a kill is still a pass, and still a hang worth a look.
        let killed = match test.attempts.last().and_then(|a| a.killed) {
            Some(k) => format!("  [last agent killed: {}]", k.word()),
            None => String::new(),
        };
        t.row(vec![
            cell(&test.id),
            toned(words(&test.status), Tone::of_test(test.status)),
            cell(test.attempts.len()),
            cell(format!(
                "{}{killed}",
                test.reason.as_deref().unwrap_or(&test.title)
            )),
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render());
    }
    out
}

/// `loopd attempts`.
pub fn attempts(flag: Option<&PathBuf>, args: &AttemptsArgs) -> anyhow::Result<Exit> {
    let shape = Shape::new("attempts", "[CONFIG] LOOP [TEST]", 1, 2);
    let (fleet, names) = match target::resolve(&args.args, shape, flag) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let doc = match open(&fleet, args.json)
        .and_then(|s| s.attempts(&names[0], names.get(1).map(String::as_str)))
    {
        Ok(doc) => doc,
        Err(Failed(code)) => return Ok(code),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
    let attempts = doc.attempts;
    super::out(&attempts_table(&attempts))?;
    Ok(Exit::Ok)
}

/// The table of `attempts`: one attempt a row, why it ended and where a failure's diff is
/// saved under it (a failure's commit is no checkpoint: it only keeps the diff for a look).
pub(super) fn attempts_table(attempts: &[AttemptRecord]) -> String {
    let mut t = Table::new(&[
        "TEST",
        "#",
        "OUTCOME",
        "DURATION",
        "EXIT",
        "VERIFY",
        "COST",
        "CHECKPOINT",
        "TRANSCRIPT",
    ])
    .right(&[1, 3, 4, 5, 6])
    .shrink(&[0, 8]);
    for a in attempts {
        let passed = a.outcome == Some(Outcome::Passed);
        t.row(vec![
            cell(&a.test_id),
            cell(a.number),
            toned(
                a.outcome
                    .map(|o| words(&o))
                    .unwrap_or_else(|| "running".into()),
                Tone::of_outcome(a.outcome),
            ),
            cell(
                a.duration_ms
                    .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                    .unwrap_or_default(),
            ),
            cell(exit_words(a)),
            cell(a.verify_exit.map(|c| c.to_string()).unwrap_or_default()),
            cell(format!("${:.4}", a.cost_usd)),
            cell(match &a.commit {
                Some(c) if passed => short(c),
                _ => "",
            }),
            cell(shown_path(&a.transcript).display()),
        ]);
        // The detail lines are cut to the table's width: `why` needs not cut them earlier.
        for line in super::why::why(a, usize::MAX) {
            t.detail(line);
        }
        if let (Some(c), false) = (&a.commit, passed) {
            t.detail(format!(
                "diff saved at {} ({})",
                git::attempt_ref(&a.test_id, a.number),
                short(c)
            ));
        }
    }
    t.render()
}

/// `path` relative to the current folder when it lies inside it: the transcript's own name
/// and its test, not the state directory's long prefix, survive a narrow table.
fn shown_path(path: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok())
        .unwrap_or(path)
}

/// The first ten characters of a commit id, as `git log --oneline` shows about.
pub(super) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

pub(super) fn exit_words(a: &AttemptRecord) -> String {
    match (a.exit_code, a.exit_signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("sig{s}"),
        _ => String::new(),
    }
}

/// `loopd export`: the whole state as JSON on stdout (never rewrites the tests file).
pub fn export(fleet: &FleetRef) -> anyhow::Result<Exit> {
    let doc = match open(fleet, true).and_then(|s| s.export()) {
        Ok(d) => d,
        Err(Failed(code)) => return Ok(code),
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(Exit::Ok)
}
