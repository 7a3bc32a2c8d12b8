//! `loopd recover [CONFIG]`: rebuild a lost ledger from the workdirs' git history.
//!
//! A store that cannot be used (behind its generation record, damaged, unreadable) is set
//! aside under `store.lost-<time>` and every loop of the fleet file is rebuilt into a new one;
//! an intact store keeps its records and only the loops it forgot (no record, while their
//! history holds pass commits) are rebuilt into it. Refused while a daemon holds the state
//! directory, which the command holds itself until it is done.

use std::path::Path;

use loopd_actors::config::{self, LoopConfig};
use loopd_actors::generation;
use loopd_actors::ledger::{self, Recovered, NOT_RECOVERABLE};
use loopd_actors::statedir::StateDirLock;
use loopd_actors::store::{Store, StoreError};

use super::style::Tone;
use super::table::{cell, toned, Table};
use super::Exit;

/// Rebuilds what the fleet at `file` lost; prints what was recovered and what could not be.
pub fn run(file: &Path) -> anyhow::Result<Exit> {
    let fleet = match config::load_fleet(file) {
        Ok(f) => f,
        Err(report) => {
            eprintln!("{report}");
            return Ok(Exit::Invalid);
        }
    };
    let dir = &fleet.settings.state_dir;
    let _lock = match StateDirLock::acquire(dir, "recover") {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("loopd recover: {e}; stop it before recovering");
            return Ok(Exit::Invalid);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rebuilt = false;
    let (store, loops): (Store, Vec<&LoopConfig>) = match Store::open(dir) {
        Ok(store) => {
            let forgotten =
                runtime.block_on(ledger::forgotten_loops(Some(&store), &fleet.loops))?;
            if forgotten.is_empty() {
                println!(
                    "loopd recover: nothing to recover: the store at {} is intact (generation {}) and knows every loop whose workdir holds passes",
                    store.path().display(),
                    store.generation()
                );
                return Ok(Exit::Ok);
            }
            let loops = fleet
                .loops
                .iter()
                .filter(|l| forgotten.contains(&l.name))
                .collect();
            (store, loops)
        }
        Err(e @ (StoreError::NewerVersion { .. } | StoreError::Open { locked: true, .. })) => {
            eprintln!("loopd recover: {e}");
            return Ok(Exit::Invalid);
        }
        Err(e) => {
            println!("loopd recover: the store cannot be used: {e}");
            let Some(aside) = set_aside(dir)? else {
                return Ok(Exit::Invalid);
            };
            println!("loopd recover: set it aside as {}", aside.display());
            rebuilt = true;
            (Store::open(dir)?, fleet.loops.iter().collect())
        }
    };
    let mut failed = false;
    for lp in loops {
        match runtime.block_on(ledger::recover_loop(&store, dir, lp)) {
            Ok(r) => print_loop(&lp.name, &r),
            Err(e) => {
                failed = true;
                eprintln!("loopd recover: loop `{}` not recovered: {e}", lp.name);
            }
        }
    }
    println!("not recoverable from git history, and not recovered:");
    for what in NOT_RECOVERABLE {
        println!("  - {what}");
    }
    println!(
        "the generation record {} at {} ({})",
        if rebuilt { "starts again" } else { "is" },
        store.generation(),
        generation::path(dir).display()
    );
    Ok(if failed { Exit::Invalid } else { Exit::Ok })
}

/// Moves the store folder and its generation record out of the way (nothing is deleted: the
/// files may still be read by hand); `None` when it could not be moved (said on stderr).
fn set_aside(dir: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    let aside = dir.join(ledger::set_aside_name(chrono::Utc::now()));
    let store = dir.join("store");
    if store.exists() {
        if let Err(e) = std::fs::rename(&store, &aside) {
            eprintln!(
                "loopd recover: cannot move {} to {}: {e}",
                store.display(),
                aside.display()
            );
            return Ok(None);
        }
    } else {
        std::fs::create_dir_all(&aside)?;
    }
    let record = generation::path(dir);
    if record.exists() {
        std::fs::rename(&record, aside.join(generation::RECORD_FILE))?;
    }
    generation::remove(dir)?;
    Ok(Some(aside))
}

fn print_loop(name: &str, r: &Recovered) {
    println!(
        "loop `{name}`: {} passed, {} pending",
        r.passed.len(),
        r.pending.len()
    );
    if let Some(why) = &r.unreadable {
        println!("  its workdir's history could not be read, so every test is pending: {why}");
    }
    let mut t = Table::new(&["TEST", "STATUS", "CHECKPOINT"])
        .shrink(&[0])
        .indent(2);
    for (test, commit) in &r.passed {
        t.row(vec![cell(test), toned("passed", Tone::Good), cell(commit)]);
    }
    if !t.is_empty() {
        print!("{}", t.render());
    }
    if !r.pending.is_empty() {
        println!("  pending {}", r.pending.join(", "));
    }
    for (test, commit) in &r.unknown {
        println!(
            "  not recovered: `{test}` passed in {commit}, but the tests file does not name it (removed, or injected through the API)"
        );
    }
}
