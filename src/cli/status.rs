//! `loopd status [CONFIG] [LOOP [TEST]] [--json]`, `loopd attempts [CONFIG] LOOP [TEST]
//! [--json]`, `loopd export [CONFIG]`: from the daemon when one holds the state directory, from
//! the store otherwise (the same documents either way, see [`Source`]).

use std::path::PathBuf;

use loopd_actors::model::AttemptRecord;

use super::client::Failed;
use super::source::Source;
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
    for l in &doc.loops {
        let p = &l.progress;
        let killed = l
            .tests
            .iter()
            .flat_map(|t| &t.attempts)
            .filter(|a| a.killed.is_some())
            .count();
        println!(
            "{}  {}{}  {}/{} passed, {} failed, {} blocked, {} skipped  {} attempts{}  ${:.4}",
            l.name,
            words(&l.status),
            l.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            p.passed,
            p.total,
            p.failed,
            p.blocked,
            p.skipped,
            l.attempts,
            if killed > 0 {
                format!(" ({killed} killed by the monitor)")
            } else {
                String::new()
            },
            l.cost_usd
        );
        if let (Some(test), Some(n)) = (&l.current_test, l.current_attempt) {
            match &l.heartbeat {
                Some(h) => println!(
                    "  now: {test} attempt {n}, running {:.0}s, last output {:.1}s ago{}",
                    h.running_for_s,
                    h.since_heartbeat_s,
                    if h.stuck {
                        "  STUCK (no output for over half of stall_timeout)"
                    } else {
                        ""
                    }
                ),
                None => println!("  now: {test} attempt {n}"),
            }
        }
        for t in &l.tests {
            // A pass after a kill is still a pass, and still a hang worth a look.
            let killed = match t.attempts.last().and_then(|a| a.killed) {
                Some(k) => format!("  [last agent killed: {}]", k.word()),
                None => String::new(),
            };
            println!(
                "  {:<24} {:<11} {:>2} attempts  {}{killed}",
                t.id,
                words(&t.status),
                t.attempts.len(),
                t.reason.as_deref().unwrap_or(&t.title)
            );
        }
    }
    Ok(Exit::Ok)
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
    println!(
        "{:<20} {:>3} {:<14} {:>9} {:>5} {:>6} {:>9}  {:<10} TRANSCRIPT",
        "TEST", "#", "OUTCOME", "DURATION", "EXIT", "VERIFY", "COST", "COMMIT"
    );
    for a in &attempts {
        println!(
            "{:<20} {:>3} {:<14} {:>9} {:>5} {:>6} {:>9}  {:<10} {}",
            a.test_id,
            a.number,
            a.outcome
                .map(|o| words(&o))
                .unwrap_or_else(|| "running".into()),
            a.duration_ms
                .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                .unwrap_or_default(),
            exit_words(a),
            a.verify_exit.map(|c| c.to_string()).unwrap_or_default(),
            format!("${:.4}", a.cost_usd),
            a.commit
                .as_deref()
                .map(|c| &c[..c.len().min(10)])
                .unwrap_or(""),
            a.transcript.display()
        );
        for line in super::why::why(a, super::why::width().saturating_sub(25)) {
            println!("{:<20}     {line}", "");
        }
    }
    Ok(Exit::Ok)
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
