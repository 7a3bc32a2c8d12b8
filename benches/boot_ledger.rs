//! boot_ledger (issue 10): how long `loopd serve` takes to be ready, and how much memory it
//! holds, with a long attempt ledger.
//!
//! Run: `cargo bench --bench boot_ledger` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_ATTEMPTS` (default 1,000,000), `LOOPD_BENCH_TESTS` (default 1,000; the
//! attempts are spread evenly over them), `LOOPD_BENCH_KEEP=1`.
//!
//! What it does, in a fresh temporary directory:
//! - writes a store directly through loopd's own store module (batches of 10,000 attempts, one
//!   flush at the end), as a fleet that ran for a long time would have left it: one loop, every
//!   test failed for good after its share of attempts, each attempt a realistic small record
//!   (verify's output tail, a fingerprint, a summary); nothing is left to run;
//! - starts `loopd serve` on it and times spawn → `GET /readyz` answering 200, then reads the
//!   daemon's VmRSS and VmHWM from `/proc` at that moment and again 2 s later (the loops have
//!   booted and settled by then);
//! - the baseline, in the same run: the same fleet with one attempt per test.
//!
//! Aims (issue 10): ready in under 1 s and under 150 MB resident with 1,000,000 attempts.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use loopd_actors::model::TestStatus;
use loopd_actors::model::{AttemptRecord, LoopRecord, LoopState, Origin, Outcome, TestRecord};
use loopd_actors::store::{Batch, Store};
use loopd_actors::tests_file::TestSpec;

const BATCH: usize = 10_000;

fn spec(i: usize) -> TestSpec {
    serde_json::from_value(serde_json::json!({
        "id": format!("T-{i}"), "title": format!("bench test {i}"),
        "spec": "Benchmark: nothing to build.", "verify": "false",
    }))
    .unwrap()
}

/// The fleet file and tests file, plus a store with `attempts` attempts over `tests` tests.
fn build(dir: &Path, tests: usize, attempts: usize) -> Duration {
    let per_test = attempts.div_ceil(tests).max(1);
    let specs: Vec<TestSpec> = (0..tests).map(spec).collect();
    fs::write(
        dir.join("bench.tests.json"),
        serde_json::to_string(&serde_json::json!({ "tests": specs })).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("loopd.toml"),
        format!(
            r#"[fleet]
state_dir = ".loopd"

[[loops]]
name = "bench"
workdir = "wd"
init_workdir = true
tests_file = "bench.tests.json"
checkpoints = false
max_attempts = {per_test}
[loops.agent]
kind = "command"
command = ["true"]
"#
        ),
    )
    .unwrap();

    let t = Instant::now();
    let store = Store::open(&dir.join(".loopd")).expect("a new store");
    let mut record = LoopRecord::new("bench");
    record.state = LoopState::Finished;
    let now = Utc::now();
    let test_records: Vec<TestRecord> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut r = TestRecord::new("bench", s.clone(), Origin::File);
            r.order = i as u32;
            r.status = TestStatus::Failed;
            r.attempts = per_test as u32;
            r.counted_attempts = per_test as u32;
            r.last_outcome = Some(Outcome::Failed);
            r.reason = Some("failed every attempt".into());
            r
        })
        .collect();
    store
        .write(Batch {
            loops: vec![record],
            tests: test_records,
            ..Batch::default()
        })
        .unwrap();
    let mut batch = Vec::with_capacity(BATCH);
    let mut written = 0;
    'tests: for i in 0..tests {
        for n in 1..=per_test as u32 {
            if written == attempts {
                break 'tests;
            }
            let transcript = dir.join(format!(".loopd/transcripts/bench/T-{i}/{n}.log"));
            let mut a = AttemptRecord::started("bench", &format!("T-{i}"), n, transcript);
            a.outcome = Some(Outcome::Failed);
            a.counted = true;
            a.finished_at = Some(now);
            a.duration_ms = Some(1200);
            a.exit_code = Some(0);
            a.verify_exit = Some(1);
            a.verify_tail =
                "running 1 test\nerror: expected 200, got 500 at src/api.rs:41\n".into();
            a.reason = Some("verify exited with 1".into());
            a.summary = Some("Changed the handler's status code".into());
            a.fingerprint = Some("3f1c9a7be0d24c55".into());
            a.cost_usd = 0.012;
            a.input_tokens = 1500;
            a.output_tokens = 300;
            batch.push(a);
            written += 1;
            if batch.len() == BATCH {
                store
                    .write(Batch {
                        attempts: std::mem::take(&mut batch),
                        ..Batch::default()
                    })
                    .unwrap();
            }
        }
    }
    store
        .apply(Batch {
            attempts: batch,
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    t.elapsed()
}

/// `(VmRSS, VmHWM)` of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Whether `GET /readyz` at `addr` answers 200.
fn ready(addr: &str) -> bool {
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if tcp.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    matches!(tcp.read(&mut head), Ok(n) if head[..n].starts_with(b"HTTP/1.1 200"))
}

struct Boot {
    ready: Duration,
    at_ready: (f64, f64),
    settled: (f64, f64),
    store_mib: f64,
}

fn du_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => fs::read_dir(p)
                .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    walk(dir) as f64 / 1024.0 / 1024.0
}

fn boot(dir: &Path) -> Boot {
    let info = dir.join(".loopd/daemon.json");
    let t = Instant::now();
    let mut child = Command::new(loopd())
        .args(["serve", "loopd.toml", "--bind", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("LOOPD_CONFIG")
        .env_remove("LOOPD_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning loopd serve");
    let pid = child.id();
    let mut addr: Option<String> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("loopd serve exited early ({status})");
        }
        assert!(t.elapsed() < Duration::from_secs(300), "not ready in 300 s");
        if addr.is_none() {
            let v: serde_json::Value = fs::read_to_string(&info)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            if v["pid"] == pid {
                addr = v["addr"].as_str().map(String::from);
            }
        }
        if addr.as_deref().is_some_and(ready) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_after = t.elapsed();
    let at_ready = memory(pid);
    std::thread::sleep(Duration::from_secs(2));
    let settled = memory(pid);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    Boot {
        ready: ready_after,
        at_ready,
        settled,
        store_mib: du_mib(&dir.join(".loopd/store")),
    }
}

fn main() {
    let _cleanup = header(
        "boot_ledger",
        "time to /readyz and resident memory of `loopd serve` with a long ledger",
    );
    let attempts = env_usize("LOOPD_BENCH_ATTEMPTS", 1_000_000);
    let tests = env_usize("LOOPD_BENCH_TESTS", 1_000).max(1);
    println!();
    println!("| ledger | store on disk | build | ready after | VmRSS at ready | VmRSS 2 s later | VmHWM |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut last = None;
    for n in [tests, attempts] {
        let scratch = Scratch::new("boot");
        let built = build(scratch.path(), tests, n);
        let b = boot(scratch.path());
        println!(
            "| {n} attempts | {:.0} MiB | {:.1} s | {:.3} s | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            b.store_mib,
            built.as_secs_f64(),
            b.ready.as_secs_f64(),
            b.at_ready.0,
            b.settled.0,
            b.settled.1
        );
        last = Some(b);
    }
    if let Some(b) = last {
        let rss = b.settled.1;
        println!(
            "\naim: ready < 1 s ({}), VmHWM < 150 MB ({})",
            verdict(b.ready < Duration::from_secs(1)),
            verdict(rss * 1.048_576 < 150.0)
        );
    }
}
