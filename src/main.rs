//! The `loopd` binary: parse arguments, set up logging, hand over to a command, map its result to
//! an exit code. Everything else lives in the `loopd-actors` library.

mod api;
mod cli;
mod dashboard;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // loopd's environment holds its secrets (LOOPD_TOKEN, webhook secrets) and its memory the
    // API token: a process of the same user (an agent) must not read /proc/<loopd>/environ or
    // /proc/<loopd>/mem. Not dumpable makes those root's, and also turns off core dumps. Set
    // before anything else runs, and inherited by every thread; agents are exec'd, which makes
    // them dumpable again (so loopd can still find them by their environment).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("loopd: cannot turn off PR_SET_DUMPABLE: {e}");
    }
    let args = cli::Cli::parse();
    if !args.command.supervises() {
        // Rust ignores SIGPIPE, so `loopd status | head -1` would panic in `println!` once head
        // has gone. A command that only prints gets the default back, as every C tool has: the
        // kernel ends it quietly when the reader goes. Not `run` and `serve`: they write to
        // agents' pipes and clients' sockets, where a reader that goes is an error to handle,
        // never the death of the supervisor (`run` writes its summary through `cli::out`).
        // SAFETY: restoring a default disposition, before any other thread exists.
        if let Err(e) = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        } {
            eprintln!("loopd: cannot restore the default SIGPIPE: {e}");
        }
    }
    cli::style::init(args.color);
    cli::init_logging(&args);
    match cli::dispatch(args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            eprintln!("loopd: {err:#}");
            ExitCode::from(cli::Exit::of_error(&err) as u8)
        }
    }
}
