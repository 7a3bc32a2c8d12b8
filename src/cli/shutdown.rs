//! `loopd shutdown [CONFIG] [--timeout SECS]`: asks the daemon to stop (`POST /api/shutdown`,
//! the graceful path of SIGTERM) and waits until it is gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Failed;
use super::source::{self, Daemon};
use super::target::FleetRef;
use super::Exit;

/// Arguments of `loopd shutdown`.
#[derive(Debug, clap::Args)]
pub struct ShutdownArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`, else the daemon at
    /// `LOOPD_ADDR` or the default address).
    pub file: Option<PathBuf>,
    /// How long to wait for the daemon to end, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `loopd shutdown`: 0 once the daemon is gone, 1 when it is still there after the timeout.
pub fn run(fleet: &FleetRef, args: &ShutdownArgs) -> anyhow::Result<Exit> {
    let daemon = match source::daemon(fleet, false) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let base = daemon.client.base.clone();
    if let Err(Failed(code)) = daemon.client.post::<Value>("/api/shutdown", None) {
        return Ok(code);
    }
    eprintln!("loopd: the daemon at {base} is shutting down (running attempts are interrupted, not counted) ...");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while !gone(&daemon) {
        if Instant::now() > deadline {
            eprintln!(
                "loopd: the daemon at {base} is still running after {}s",
                args.timeout
            );
            return Ok(Exit::NotAllPassed);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("loopd: the daemon at {base} has stopped");
    Ok(Exit::Ok)
}

/// Gone: the process that held the state directory has exited (so its store is closed); for a
/// daemon known by its address alone, nothing listens there any more.
fn gone(daemon: &Daemon) -> bool {
    match &daemon.holder {
        Some(info) => !loopd_actors::process::still_running(info.pid, info.start_time),
        None => !source::answers(
            daemon
                .client
                .base
                .trim_start_matches("http://")
                .trim_start_matches("https://"),
        ),
    }
}
