//! attempt_overhead (issue 3): what loopd costs per attempt, beside spawning the same processes.
//!
//! Run: `cargo bench --bench attempt_overhead` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_N` (tests per fleet, default 200), `LOOPD_BENCH_KEEP=1` keeps the
//! temporary directories.
//!
//! What it does, in a fresh temporary directory:
//! - a fleet of one loop with N tests whose agent is `true` and whose verify is `true`
//!   (`max_concurrent_agents = 1`), run with `loopd run --plain` (output discarded), once with
//!   `checkpoints = false` and once with `checkpoints = true` (a git commit per pass);
//! - the same fleet with a single test, to tell loopd's start-up and shutdown from the per-attempt
//!   cost;
//! - the baseline: a plain Rust loop that, N times, spawns `true` then `bash -c true` (what loopd
//!   spawns: verify runs under `bash -c`), each in its own process group in the workdir, with
//!   stdin null and stdout/stderr piped and read to the end, and waits for each.
//!
//! Printed per mode: wall time of `loopd run` / N (start-up included, the issue's figure), the
//! marginal cost per attempt ((wall(N) - wall(1)) / (N - 1)), the plain loop's cost per attempt,
//! and both ratios. A breakdown from the attempt ledger says where loopd's time goes: the
//! attempt itself (`duration_ms`: agent, verify, git) and the gap between one attempt's end and
//! the next one's start (ledger write + flush, scheduling, prompt rendering).
//! Aim (issue 3): with checkpoints off, no more than 2x the plain loop per attempt.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn fleet(dir: &Path, n: usize, checkpoints: bool) {
    let tests: Vec<(String, String)> = (0..n)
        .map(|i| (format!("T-{i:04}"), "true".to_string()))
        .collect();
    write_tests(&dir.join("bench.tests.json"), &tests);
    // With checkpoints off loopd does not create the workdir itself.
    fs::create_dir_all(dir.join("wd")).unwrap();
    fs::write(
        dir.join("loopd.toml"),
        format!(
            r#"[fleet]
state_dir = ".loopd"
max_concurrent_agents = 1

[[loops]]
name = "bench"
workdir = "wd"
init_workdir = true
tests_file = "bench.tests.json"
checkpoints = {checkpoints}
max_attempts = 1
[loops.agent]
kind = "command"
command = ["true"]
"#
        ),
    )
    .unwrap();
}

struct LoopdRun {
    wall: Duration,
    attempts: Vec<Attempt>,
}

fn run_loopd(n: usize, checkpoints: bool) -> LoopdRun {
    let scratch = Scratch::new("overhead");
    fleet(scratch.path(), n, checkpoints);
    let (wall, status) = loopd_run(scratch.path(), "loopd.toml");
    assert!(status.success(), "loopd run ended with {status}");
    let attempts = attempts(scratch.path(), "loopd.toml", "bench");
    assert_eq!(attempts.len(), n, "one attempt per test");
    assert!(
        attempts.iter().all(|a| a.outcome == "passed"),
        "every attempt passes"
    );
    LoopdRun { wall, attempts }
}

/// The plain loop: N times `true`, then `bash -c true`. Returns the time per iteration.
fn plain_loop(n: usize) -> Duration {
    let scratch = Scratch::new("plain");
    let wd = scratch.path();
    let t = Instant::now();
    for _ in 0..n {
        assert!(spawn_wait(Command::new("true").current_dir(wd)).success());
        assert!(spawn_wait(Command::new("bash").args(["-c", "true"]).current_dir(wd)).success());
    }
    t.elapsed() / n as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let n = env_usize("LOOPD_BENCH_N", 200).max(2);
    let _cleanup = header(
        "attempt_overhead",
        &format!("{n} tests, agent `true`, verify `true`, one agent at a time"),
    );
    // Warm the page cache and the dynamic loader for both sides.
    let _ = plain_loop(20);
    let plain = [plain_loop(n), plain_loop(n), plain_loop(n)];
    let mut plain_ms: Vec<f64> = plain.iter().map(|d| ms(*d)).collect();
    plain_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let plain_ms = plain_ms[1];
    println!(
        "plain loop (spawn `true`, wait, spawn `bash -c true`, wait): {plain_ms:.2} ms per iteration (median of 3 runs of {n})"
    );
    println!();
    println!(
        "| checkpoints | loopd wall / N | marginal / attempt | plain loop | ratio (wall/N) | ratio (marginal) | in attempt (agent+verify+git) | between attempts |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratio_off = f64::NAN;
    let mut notes = Vec::new();
    for checkpoints in [false, true] {
        let one = run_loopd(1, checkpoints);
        let full = run_loopd(n, checkpoints);
        let per = ms(full.wall) / n as f64;
        let marginal = (ms(full.wall) - ms(one.wall)) / (n - 1) as f64;
        let mut a = full.attempts.clone();
        a.sort_by(|x, y| x.started_at.partial_cmp(&y.started_at).unwrap());
        let inside: Vec<f64> = a
            .iter()
            .map(|x| (x.finished_at - x.started_at) * 1e3)
            .collect();
        let gaps: Vec<f64> = a
            .windows(2)
            .map(|w| (w[1].started_at - w[0].finished_at) * 1e3)
            .collect();
        if !checkpoints {
            ratio_off = per / plain_ms;
        }
        println!(
            "| {} | {per:.2} ms | {marginal:.2} ms | {plain_ms:.2} ms | {:.1}x | {:.1}x | {:.2} ms (p50 {:.2}) | {:.2} ms (p50 {:.2}) |",
            if checkpoints { "on" } else { "off" },
            per / plain_ms,
            marginal / plain_ms,
            mean(&inside),
            percentile(&inside, 50.0),
            mean(&gaps),
            percentile(&gaps, 50.0),
        );
        notes.push(format!(
            "checkpoints {}: loopd run took {:.2} s for {n} tests, {:.0} ms for 1 test",
            if checkpoints { "on" } else { "off" },
            full.wall.as_secs_f64(),
            ms(one.wall)
        ));
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    println!(
        "aim: checkpoints off <= 2x the plain loop: {:.1}x, {}",
        ratio_off,
        verdict(ratio_off <= 2.0)
    );
}
