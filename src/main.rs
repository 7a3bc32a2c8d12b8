//! The `loopd` binary: parse arguments, set up logging, hand over to a command, map its result to
//! an exit code. Everything else lives in the `loopd-actors` library.

mod api;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    match cli::dispatch(args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            eprintln!("loopd: {err:#}");
            ExitCode::from(cli::Exit::of_error(&err) as u8)
        }
    }
}
