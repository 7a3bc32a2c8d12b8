//! `loopd rollback LOOP TEST`: through the daemon when one holds the state directory,
//! otherwise directly on the store and the workdir.

use std::path::PathBuf;

use loopd_actors::runtime::Ctx;

use super::control::{self, TestArgs};
use super::source::{self, Found};
use super::Exit;

/// Rolls LOOP's workdir back to TEST's checkpoint.
pub fn run(flag: Option<&PathBuf>, args: &TestArgs) -> anyhow::Result<Exit> {
    let (fleet_ref, loop_name, test) = match args.target("rollback", flag) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let fleet = match source::discover(&fleet_ref, args.json) {
        Ok(Found::Daemon(d)) => {
            return control::test_action(&d.client, "rollback", (&loop_name, &test), args.json)
        }
        Ok(Found::NoDaemon { fleet, .. }) => fleet,
        Err(code) => return Ok(code),
    };
    let Some(lp) = fleet.loops.iter().find(|l| l.name == loop_name) else {
        eprintln!(
            "loopd: no loop named `{loop_name}` in {}",
            fleet_ref.path.display()
        );
        return Ok(Exit::Invalid);
    };
    let store = match source::open_store(&fleet) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let ctx = Ctx::new(store, &fleet.settings.state_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(loopd_actors::rollback::rollback(&ctx, lp, &test)) {
        Ok(reopened) => {
            println!(
                "{}: back at {}'s checkpoint{}",
                loop_name,
                test,
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
