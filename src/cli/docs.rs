//! `loopd completions SHELL` and `loopd man`: generated from the same clap definition as the
//! parser, so they cannot drift from the commands.

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, Exit};

/// Arguments of `loopd completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `loopd completions SHELL`: the script on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "loopd", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(Exit::Ok)
}

/// `loopd man`: the man page (roff) on stdout: the global options and every command with its
/// summary (`loopd COMMAND --help` has each command's own options).
pub fn man() -> anyhow::Result<Exit> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(Exit::Ok)
}
