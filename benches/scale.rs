//! scale (issue 10): what a loop's size costs: `loopd validate` on a long dependency chain, and
//! loopd's cost per attempt, at 100, 1,000, 10,000 and 100,000 tests.
//!
//! Run: `cargo bench --bench scale` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_SIZES` (comma-separated test counts, default `100,1000,10000,100000`),
//! `LOOPD_BENCH_ATTEMPTS` (attempts run per size, default 100, at most one fewer than the
//! tests), `LOOPD_BENCH_KEEP=1`.
//!
//! What it does, per size N, in a fresh temporary directory:
//! - a fleet of one loop whose N tests form a chain (each depends on the one before), agent
//!   `true`, verify `true`, checkpoints off, `max_attempts_total` = the attempts to measure;
//! - `loopd validate` on it: wall time (the issue's figure: 0.7 s at 20,000, over a minute
//!   at 100,000 before);
//! - `loopd run --plain` until `max_attempts_total` pauses the loop: per attempt, the time from
//!   one attempt's start to the next one's (from the ledger), which leaves out boot (reading and
//!   storing the N tests, linear by nature) and holds everything loopd does per attempt: the
//!   ledger, picking the next runnable test, the prompt, spawning `true` and `bash -c true`.
//!
//! The per-attempt figures come in two halves: the first half of the attempts, which run while
//! the store still does the background work of having just stored N tests (sled writes them
//! out and frees the superseded copies of its nodes as later operations pass: about half a
//! second at 100,000), and the second half, when that has settled. The ratio is taken on the
//! second half, and both are printed.
//!
//! The figures at 100 tests are the baseline: the aim (issue 10) is validate time near linear
//! in N, and a per-attempt cost near constant (it was 4.7 ms at 250 tests, 12.3 ms at 3,000).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

fn fleet(dir: &Path, n: usize, attempts: usize) {
    let tests: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = (i > 0)
                .then(|| format!("T-{}", i - 1))
                .into_iter()
                .collect();
            serde_json::json!({"id": format!("T-{i}"), "title": format!("bench test {i}"),
                               "spec": "Benchmark: nothing to build.", "verify": "true",
                               "depends_on": deps})
        })
        .collect();
    fs::write(
        dir.join("bench.tests.json"),
        serde_json::json!({ "tests": tests }).to_string(),
    )
    .unwrap();
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
checkpoints = false
max_attempts = 1
max_attempts_total = {attempts}
[loops.agent]
kind = "command"
command = ["true"]
"#
        ),
    )
    .unwrap();
}

struct Figures {
    validate_s: f64,
    boot_s: f64,
    /// Start to next start, in order.
    per_attempt_ms: Vec<f64>,
}

impl Figures {
    /// The intervals of the first and of the second half of the attempts.
    fn halves(&self) -> (&[f64], &[f64]) {
        self.per_attempt_ms.split_at(self.per_attempt_ms.len() / 2)
    }
}

fn measure(n: usize, attempts: usize) -> Figures {
    let scratch = Scratch::new("scale");
    let dir = scratch.path();
    fleet(dir, n, attempts);

    let t = Instant::now();
    let out = Command::new(loopd())
        .args(["validate", "loopd.toml"])
        .current_dir(dir)
        .env_remove("LOOPD_CONFIG")
        .stderr(Stdio::inherit())
        .output()
        .expect("running loopd validate");
    let validate_s = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "validate: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let started = now_epoch();
    let (_, status) = loopd_run(dir, "loopd.toml");
    // Paused by max_attempts_total: "stopped waiting on a condition that needs a person".
    assert_eq!(status.code(), Some(3), "loopd run ended with {status}");
    let recorded = common::attempts(dir, "loopd.toml", "bench");
    assert_eq!(recorded.len(), attempts, "max_attempts_total attempts");
    assert!(recorded.iter().all(|a| a.outcome == "passed"));
    let mut starts: Vec<f64> = recorded.iter().map(|a| a.started_at).collect();
    starts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let per_attempt_ms = starts.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect();
    Figures {
        validate_s,
        boot_s: starts[0] - started,
        per_attempt_ms,
    }
}

fn main() {
    let _cleanup = header(
        "scale",
        "validate time and per-attempt cost by the number of tests in a loop (a chain)",
    );
    let sizes: Vec<usize> = std::env::var("LOOPD_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let attempts = env_usize("LOOPD_BENCH_ATTEMPTS", 100).max(4);
    println!("   up to {attempts} attempts per size; agent `true`, verify `true`\n");
    println!(
        "| tests | validate | validate / 1k tests | start to first attempt | per attempt p50, first half | per attempt p50, second half | second half mean | p50 (second half) vs {} tests |",
        sizes[0]
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut base: Option<f64> = None;
    for &n in &sizes {
        let f = measure(n, attempts.min(n - 1));
        let (first, settled) = f.halves();
        let p50 = percentile(settled, 50.0);
        let base_p50 = *base.get_or_insert(p50);
        println!(
            "| {n} | {:.3} s | {:.2} ms | {:.2} s | {:.2} ms | {p50:.2} ms | {:.2} ms | {:.2}x |",
            f.validate_s,
            f.validate_s * 1e3 / (n as f64 / 1000.0),
            f.boot_s,
            percentile(first, 50.0),
            mean(settled),
            p50 / base_p50
        );
    }
}
