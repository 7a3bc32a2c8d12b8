//! `loopd init [DIR]` (being written).

use std::path::PathBuf;

use super::Exit;

/// Arguments of `loopd init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to scaffold the fleet (default: the current folder).
    pub dir: Option<PathBuf>,
}

/// Scaffolds a fleet.
pub fn run(_args: &InitArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("init is not written yet")
}
