//! `loopd status [CONFIG] [--json]`, `loopd attempts LOOP [TEST] [--json]`, `loopd export`:
//! read the store directly (while no daemon holds it).

use std::path::{Path, PathBuf};

use loopd_actors::config;
use loopd_actors::model::AttemptRecord;
use loopd_actors::statedir;
use loopd_actors::store::Store;
use loopd_actors::view;

use super::{words, Exit};

/// Arguments of `loopd status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
    /// Print `{"loops": [LOOP]}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `loopd attempts`.
#[derive(Debug, clap::Args)]
pub struct AttemptsArgs {
    /// The loop.
    pub loop_name: String,
    /// Only this test's attempts.
    pub test: Option<String>,
    /// Print `{"attempts": [...]}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Opens the store of the fleet at `file`, unless a live `run`/`serve` holds it.
pub(super) fn open_store(file: &Path) -> Result<Store, Exit> {
    let fleet = config::load_fleet(file).map_err(|report| {
        eprintln!("{report}");
        Exit::Invalid
    })?;
    let dir = &fleet.settings.state_dir;
    if let Some(d) = statedir::live_daemon(dir) {
        eprintln!(
            "loopd: `loopd {}` (pid {}) holds the state directory {}; ask it, or wait until it ends",
            d.command,
            d.pid,
            dir.display()
        );
        return Err(Exit::NotAllPassed);
    }
    let never_written = loopd_actors::generation::read(dir).is_ok_and(|r| r.is_none());
    if !dir.join("store").exists() && never_written {
        // No store and no record of one: the fleet never ran, or its ledger was lost with the
        // record; the workdirs' history tells which.
        super::fleet_start::refuse_forgotten("loopd", &fleet, None)?;
        eprintln!(
            "loopd: no store at {} yet (the fleet has never run)",
            dir.join("store").display()
        );
        return Err(Exit::NotAllPassed);
    }
    let store = Store::open(dir).map_err(|e| {
        eprintln!("loopd: {e}");
        Exit::Invalid
    })?;
    super::fleet_start::refuse_forgotten("loopd", &fleet, Some(&store))?;
    Ok(store)
}

/// `loopd status`.
pub fn status(file: &Path, args: &StatusArgs) -> anyhow::Result<Exit> {
    let doc = match super::client::Client::for_fleet(file) {
        // A daemon holds the store: ask it (same JSON shape).
        Some(client) => match client.status() {
            Ok(doc) => doc,
            Err(super::client::Failed(code)) => return Ok(code),
        },
        None => match open_store(file) {
            Ok(store) => view::status(&store)?,
            Err(code) => return Ok(code),
        },
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
pub fn attempts(file: &Path, args: &AttemptsArgs) -> anyhow::Result<Exit> {
    let attempts = if let Some(client) = super::client::Client::for_fleet(file) {
        // A daemon holds the store: ask it (same JSON shape).
        match client.attempts(&args.loop_name, args.test.as_deref()) {
            Ok(doc) => doc.attempts,
            Err(super::client::Failed(code)) => return Ok(code),
        }
    } else {
        let store = match open_store(file) {
            Ok(s) => s,
            Err(code) => return Ok(code),
        };
        if store.get_loop(&args.loop_name)?.is_none() {
            eprintln!("loopd: no loop named `{}` in the store", args.loop_name);
            return Ok(Exit::Invalid);
        }
        store.list_attempts(&args.loop_name, args.test.as_deref())?
    };
    if args.json {
        let doc = view::AttemptsDoc { attempts };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
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

fn exit_words(a: &AttemptRecord) -> String {
    match (a.exit_code, a.exit_signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("sig{s}"),
        _ => String::new(),
    }
}

/// `loopd export`: the whole state as JSON on stdout (never rewrites the tests file).
pub fn export(file: &Path) -> anyhow::Result<Exit> {
    let store = match open_store(file) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    println!("{}", serde_json::to_string_pretty(&view::export(&store)?)?);
    Ok(Exit::Ok)
}
