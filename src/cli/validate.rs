//! `loopd validate [CONFIG]` (being written).

use std::path::Path;

use super::Exit;

/// Validates the fleet at `file` and prints the report.
pub fn run(_file: &Path) -> anyhow::Result<Exit> {
    anyhow::bail!("validate is not written yet")
}
