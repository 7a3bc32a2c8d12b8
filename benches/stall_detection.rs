//! stall_detection (issue 4): from "silent for stall_timeout" to the agent's process group gone.
//!
//! Run: `cargo bench --bench stall_detection` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_STALL_LOOPS` (default 5), `LOOPD_BENCH_STALL_ATTEMPTS` (per loop,
//! default 4; samples = loops x attempts), `LOOPD_BENCH_KEEP=1`.
//!
//! The agent (bash) starts `sleep 600` in the background (a second member of its process group),
//! writes `$$ $! $EPOCHREALTIME` to a file named `$LOOPD_LOOP-$LOOPD_ATTEMPT`, prints one line
//! and then waits in silence. `stall_timeout = "1s"`, `kill_grace = "5s"`, verify `false`,
//! `max_attempts` = attempts per loop, `max_concurrent_agents` = loops, checkpoints off.
//!
//! While `loopd run` runs, the bench polls every millisecond: for each stamp file, whether the
//! agent's two processes (bash, the group leader, and its `sleep`) are gone (no `/proc/<pid>`, or
//! state Z: a zombie is dead, only not yet reaped). Detection latency = the instant both are gone
//! minus (the stamp + stall_timeout). The stamp is taken just before the one line is printed, so it
//! is the agent's last output to within microseconds. The figure covers the monitor noticing the
//! silence (it reads heartbeats on a 50 ms tick), the cancel reaching the attempt, and
//! `end_group` (SIGTERM to the group, members gone).
//!
//! Baseline, in the same run: the same agent started by the bench itself, which sleeps exactly
//! stall_timeout after the stamp, then SIGTERMs the group and polls it gone the same way: what a
//! perfect timer would get (signal delivery, exit, polling granularity).
//! Aim (issue 4): detection within 250 ms of the timeout.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const STALL_S: f64 = 1.0;

const AGENT: &str = r#"sleep 600 &
printf '%s %s %s\n' "$$" "$!" "$EPOCHREALTIME" > "$BENCH_STAMPS/$LOOPD_LOOP-$LOOPD_ATTEMPT"
echo "bench agent: working on $LOOPD_TEST_ID, then silence"
wait
"#;

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Polls `dir` for stamp files until `done`; returns, per file, (stamp, gone instant).
fn watch(dir: PathBuf, done: Arc<AtomicBool>) -> HashMap<String, (f64, f64)> {
    let mut pending: HashMap<String, (i32, i32, f64)> = HashMap::new();
    let mut finished: HashMap<String, (f64, f64)> = HashMap::new();
    loop {
        let stop = done.load(Ordering::SeqCst);
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if pending.contains_key(&name) || finished.contains_key(&name) {
                continue;
            }
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let f: Vec<&str> = text.split_whitespace().collect();
            if f.len() == 3 {
                if let (Ok(a), Ok(b), Ok(t)) = (f[0].parse(), f[1].parse(), f[2].parse()) {
                    pending.insert(name, (a, b, t));
                }
            }
        }
        let now = now_epoch();
        pending.retain(|name, (leader, child, stamp)| {
            if alive(*leader) || alive(*child) {
                return true;
            }
            finished.insert(name.clone(), (*stamp, now));
            false
        });
        if stop && pending.is_empty() {
            return finished;
        }
        if stop {
            // loopd is gone: whatever is still listed will not be stamped as gone by it.
            for (name, (_, _, stamp)) in pending.drain() {
                finished.insert(name, (stamp, f64::NAN));
            }
            return finished;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn run_loopd(dir: &Path, loops: usize, attempts: usize) -> Vec<f64> {
    let stamps = dir.join("stamps");
    fs::create_dir_all(&stamps).unwrap();
    write_script(&dir.join("agent.sh"), AGENT);
    write_tests(
        &dir.join("s.tests.json"),
        &[("S-1".to_string(), "false".to_string())],
    );
    let mut toml = format!("[fleet]\nstate_dir = \".loopd\"\nmax_concurrent_agents = {loops}\n");
    for i in 0..loops {
        fs::create_dir_all(dir.join(format!("wd/s{i:02}"))).unwrap();
        toml.push_str(&format!(
            r#"
[[loops]]
name = "s{i:02}"
workdir = "wd/s{i:02}"
init_workdir = true
tests_file = "s.tests.json"
checkpoints = false
max_attempts = {attempts}
stall_timeout = "{STALL_S}s"
iteration_timeout = "60s"
kill_grace = "5s"
[loops.env]
BENCH_STAMPS = "{stamps}"
LC_ALL = "C"
[loops.agent]
kind = "command"
command = ["./agent.sh"]
"#,
            stamps = stamps.display()
        ));
    }
    fs::write(dir.join("loopd.toml"), toml).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stamps, done) = (stamps.clone(), done.clone());
        std::thread::spawn(move || watch(stamps, done))
    };
    let (_wall, status) = loopd_run(dir, "loopd.toml");
    done.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert_eq!(status.code(), Some(1), "loopd run ends with 1");
    for i in 0..loops {
        let recs = common::attempts(dir, "loopd.toml", &format!("s{i:02}"));
        assert!(
            recs.iter().all(|a| a.outcome == "stalled"),
            "every attempt is recorded stalled: {:?}",
            recs.iter().map(|a| &a.outcome).collect::<Vec<_>>()
        );
    }
    assert_eq!(seen.len(), loops * attempts, "every attempt left a stamp");
    seen.values()
        .map(|(stamp, gone)| (gone - (stamp + STALL_S)) * 1e3)
        .collect()
}

/// The same agent, killed by a perfect timer: SIGTERM to its group exactly at stamp + timeout.
fn run_plain(dir: &Path, samples: usize) -> Vec<f64> {
    let stamps = dir.join("plain-stamps");
    fs::create_dir_all(&stamps).unwrap();
    write_script(&dir.join("agent.sh"), AGENT);
    let threads: Vec<_> = (0..samples)
        .map(|i| {
            let (dir, stamps) = (dir.to_path_buf(), stamps.clone());
            std::thread::spawn(move || {
                let mut child = Command::new(dir.join("agent.sh"))
                    .process_group(0)
                    .current_dir(&dir)
                    .env("BENCH_STAMPS", &stamps)
                    .env("LC_ALL", "C")
                    .env("LOOPD_LOOP", format!("p{i:02}"))
                    .env("LOOPD_ATTEMPT", "1")
                    .env("LOOPD_TEST_ID", "S-1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let file = stamps.join(format!("p{i:02}-1"));
                let (leader, sleeper, stamp) = loop {
                    let text = fs::read_to_string(&file).unwrap_or_default();
                    let f: Vec<&str> = text.split_whitespace().collect();
                    if f.len() == 3 {
                        if let (Ok(a), Ok(b), Ok(t)) = (
                            f[0].parse::<i32>(),
                            f[1].parse::<i32>(),
                            f[2].parse::<f64>(),
                        ) {
                            break (a, b, t);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let wait = stamp + STALL_S - now_epoch();
                if wait > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(leader),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = child.wait();
                while alive(leader) || alive(sleeper) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                (now_epoch() - (stamp + STALL_S)) * 1e3
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn main() {
    let loops = env_usize("LOOPD_BENCH_STALL_LOOPS", 5).max(1);
    let attempts = env_usize("LOOPD_BENCH_STALL_ATTEMPTS", 4).max(1);
    let _cleanup = header(
        "stall_detection",
        &format!("agents print once then go silent; stall_timeout = {STALL_S}s; {loops} loops x {attempts} attempts"),
    );
    let scratch = Scratch::new("stall");
    let loopd = run_loopd(scratch.path(), loops, attempts);
    let plain = run_plain(scratch.path(), loops * attempts);
    let missed = loopd.iter().filter(|v| v.is_nan()).count();
    let loopd: Vec<f64> = loopd.into_iter().filter(|v| !v.is_nan()).collect();
    println!();
    println!("| detection latency after the timeout | samples | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| loopd (monitor, SIGTERM to the group, gone) | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        loopd.len(),
        percentile(&loopd, 50.0),
        percentile(&loopd, 99.0),
        percentile(&loopd, 100.0)
    );
    println!(
        "| perfect timer (SIGTERM at the timeout, gone) | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        plain.len(),
        percentile(&plain, 50.0),
        percentile(&plain, 99.0),
        percentile(&plain, 100.0)
    );
    if missed > 0 {
        println!("{missed} agent group(s) outlived loopd run: a leak");
    }
    println!();
    let p99 = percentile(&loopd, 99.0);
    println!(
        "aim: group gone within 250 ms of the timeout (p99): {p99:.1} ms, {}",
        verdict(p99 <= 250.0 && missed == 0)
    );
}
