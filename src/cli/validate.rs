//! `loopd validate [CONFIG]`: every problem of the fleet, its loops and their tests files.

use std::path::Path;

use loopd_actors::config::{load_fleet, load_tests, validate_fleet};
use loopd_actors::words::count;

use super::Exit;

/// Validates the fleet at `file` and prints the report; [`Exit::Invalid`] when there is a problem.
pub fn run(file: &Path) -> anyhow::Result<Exit> {
    let report = validate_fleet(file);
    if !report.is_empty() {
        println!("{report}");
        return Ok(Exit::Invalid);
    }
    // Valid, so both loads succeed; counting is only for the summary line.
    let fleet = load_fleet(file).map_err(|r| anyhow::anyhow!("{r}"))?;
    let tests: usize = fleet
        .loops
        .iter()
        .map(|lp| load_tests(lp).map_or(0, |t| t.len()))
        .sum();
    let loops = fleet.loops.len();
    println!(
        "fleet `{}` is valid: {}, {}",
        file.display(),
        count(loops, "loop", "loops"),
        count(tests, "test", "tests")
    );
    Ok(Exit::Ok)
}
