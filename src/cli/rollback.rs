//! `loopd rollback LOOP TEST`: through the daemon when one holds the state directory,
//! otherwise directly on the store and the workdir.

use std::path::Path;

use loopd_actors::config;
use loopd_actors::runtime::Ctx;

use super::client::{self, TestArgs};
use super::Exit;

/// Rolls LOOP's workdir back to TEST's checkpoint.
pub fn run(file: &Path, args: &TestArgs) -> anyhow::Result<Exit> {
    if client::Client::for_fleet(file).is_some() {
        return client::test_action(file, "rollback", args);
    }
    let fleet = match config::load_fleet(file) {
        Ok(f) => f,
        Err(report) => {
            eprintln!("{report}");
            return Ok(Exit::Invalid);
        }
    };
    let Some(lp) = fleet.loops.iter().find(|l| l.name == args.loop_name) else {
        eprintln!(
            "loopd: no loop named `{}` in {}",
            args.loop_name,
            file.display()
        );
        return Ok(Exit::Invalid);
    };
    let store = match super::status::open_store(file) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let ctx = Ctx::new(store, &fleet.settings.state_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(loopd_actors::rollback::rollback(&ctx, lp, &args.test)) {
        Ok(reopened) => {
            println!(
                "{}: back at {}'s checkpoint{}",
                args.loop_name,
                args.test,
                if reopened.is_empty() {
                    String::new()
                } else {
                    format!("; pending again: {}", reopened.join(", "))
                }
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("loopd rollback: {e}");
            Ok(Exit::Invalid)
        }
    }
}
