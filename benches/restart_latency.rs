//! restart_latency (issue 4): time from one attempt's agent exit to the next attempt's start.
//!
//! Run: `cargo bench --bench restart_latency` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_ATTEMPTS_10` (attempts per loop at 10 loops, default 30),
//! `LOOPD_BENCH_ROUNDS_10` (rounds of the 10-loop case, plain and loopd taking turns, samples
//! pooled; default 3),
//! `LOOPD_BENCH_ATTEMPTS_100` (at 100 loops, default 8), `LOOPD_BENCH_ATTEMPTS_PACED` (the
//! paced run, default 5), `LOOPD_BENCH_CASES` (which cases to run, comma-separated, of `10`,
//! `100` and `paced`; default all three), `LOOPD_BENCH_BIN` (another loopd binary),
//! `LOOPD_BENCH_KEEP=1`.
//!
//! The agent is a bash script that appends `ATTEMPT start $EPOCHREALTIME` as its first command
//! and `ATTEMPT exit $EPOCHREALTIME` as its last (no fork: `$EPOCHREALTIME` is a bash builtin
//! variable) to a file named after `$LOOPD_LOOP`, then exits 0; verify is `false`, so every
//! attempt fails and the loop goes on until `max_attempts`. L loops (L = 10, then 100), one test
//! each, `max_concurrent_agents = L`, run with `loopd run`, with `checkpoints = false` and with
//! `checkpoints = true`.
//!
//! Restart latency = start stamp of attempt k+1 - exit stamp of attempt k of the same loop. It
//! covers: bash's exit, loopd seeing the exit and ending the group, verify (`bash -c false`),
//! git (checkpoints on: save the attempt's ref and reset), the ledger write and flush, scheduling
//! and prompt rendering of the next attempt, spawning it and bash's start-up up to its first
//! command. A breakdown from the ledger splits it into: exit stamp -> the attempt's
//! `finished_at` (group end, verify, git), `finished_at` -> next `started_at` (ledger, scheduler,
//! prompt), next `started_at` -> its start stamp (transcript, spawn, bash start-up).
//!
//! Baseline, in the same run: L threads, each a plain fork/exec loop doing the same work (spawn
//! the same agent script with the same environment in its own process group, stdout/stderr
//! piped and read, wait; spawn `bash -c false`, wait; spawn the next), measured with the same
//! stamps.
//!
//! With agents that exit at once, 100 loops restarting all the time saturate 2 cores: the figure
//! is then a throughput limit, the plain loop's too. A third, *paced* run keeps 100 loops (and
//! agents) alive but has each agent run between 0.5 and 1.5 s (a `sleep` between its two
//! stamps, uniform, drawn by the agent), so restarts are spread out as in a real fleet instead
//! of 100 agents ending in the same millisecond; the plain loop's agents draw the same way.
//! Checkpoints off only.
//! Aims (issue 4): p50 within 2x the plain loop at 10 loops; p50 under 15 ms at 100
//! loops on 2 cores.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const AGENT: &str = r#"printf '%s start %s\n' "$LOOPD_ATTEMPT" "$EPOCHREALTIME" >> "$BENCH_STAMPS/$LOOPD_LOOP"
echo "bench agent: attempt $LOOPD_ATTEMPT of $LOOPD_TEST_ID"
if [ "$BENCH_SLEEP_MS" != 0 ]; then
  # Uniform in [0.5, 1.5] x the mean, so that the loops do not restart in lockstep.
  ms=$(( BENCH_SLEEP_MS / 2 + RANDOM % (BENCH_SLEEP_MS + 1) ))
  printf -v frac '%03d' $(( ms % 1000 ))
  sleep "$(( ms / 1000 )).$frac"
fi
printf '%s exit %s\n' "$LOOPD_ATTEMPT" "$EPOCHREALTIME" >> "$BENCH_STAMPS/$LOOPD_LOOP"
"#;

/// Start and exit stamps by attempt number, per loop.
type Stamps = HashMap<String, HashMap<u32, (f64, f64)>>;

fn read_stamps(dir: &Path) -> Stamps {
    let mut all = Stamps::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        let per = all.entry(name).or_default();
        for line in fs::read_to_string(entry.path()).unwrap().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 {
                continue;
            }
            let (Ok(n), Ok(t)) = (f[0].parse::<u32>(), f[2].parse::<f64>()) else {
                continue;
            };
            let e = per.entry(n).or_insert((f64::NAN, f64::NAN));
            if f[1] == "start" {
                e.0 = t;
            } else {
                e.1 = t;
            }
        }
    }
    all
}

/// exit(k) -> start(k+1) in milliseconds, over every loop.
fn intervals(stamps: &Stamps) -> Vec<f64> {
    let mut out = Vec::new();
    for per in stamps.values() {
        for (n, (_, exit)) in per {
            if let Some((start, _)) = per.get(&(n + 1)) {
                out.push((start - exit) * 1e3);
            }
        }
    }
    out
}

struct Figures {
    all: Vec<f64>,
    /// exit stamp -> finished_at; finished_at -> next started_at; started_at -> start stamp.
    parts: Option<[Vec<f64>; 3]>,
}

fn run_loopd(loops: usize, attempts: usize, checkpoints: bool, sleep_ms: u32) -> Figures {
    let scratch = Scratch::new("restart");
    let dir = scratch.path();
    let stamps = dir.join("stamps");
    fs::create_dir_all(&stamps).unwrap();
    write_script(&dir.join("agent.sh"), AGENT);
    write_tests(
        &dir.join("r.tests.json"),
        &[("R-1".to_string(), "false".to_string())],
    );
    let mut toml = format!("[fleet]\nstate_dir = \".loopd\"\nmax_concurrent_agents = {loops}\n",);
    for i in 0..loops {
        fs::create_dir_all(dir.join(format!("wd/l{i:03}"))).unwrap();
        toml.push_str(&format!(
            r#"
[[loops]]
name = "l{i:03}"
workdir = "wd/l{i:03}"
init_workdir = true
tests_file = "r.tests.json"
checkpoints = {checkpoints}
max_attempts = {attempts}
[loops.env]
BENCH_STAMPS = "{stamps}"
BENCH_SLEEP_MS = "{sleep_ms}"
LC_ALL = "C"
[loops.agent]
kind = "command"
command = ["./agent.sh"]
"#,
            stamps = stamps.display()
        ));
    }
    fs::write(dir.join("loopd.toml"), toml).unwrap();
    let (_wall, status) = loopd_run(dir, "loopd.toml");
    assert_eq!(
        status.code(),
        Some(1),
        "loopd run ends with 1 (tests not passed)"
    );
    let s = read_stamps(&stamps);
    let all = intervals(&s);
    assert_eq!(
        all.len(),
        loops * (attempts - 1),
        "every attempt left its stamps"
    );
    let mut parts = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..loops {
        let name = format!("l{i:03}");
        let per = &s[&name];
        let recs = common::attempts(dir, "loopd.toml", &name);
        let by_n: HashMap<u32, &Attempt> = recs.iter().map(|a| (a.number, a)).collect();
        for (n, (_, exit)) in per {
            let (Some(a), Some(b), Some((start_next, _))) =
                (by_n.get(n), by_n.get(&(n + 1)), per.get(&(n + 1)))
            else {
                continue;
            };
            parts[0].push((a.finished_at - exit) * 1e3);
            parts[1].push((b.started_at - a.finished_at) * 1e3);
            parts[2].push((start_next - b.started_at) * 1e3);
        }
    }
    Figures {
        all,
        parts: Some(parts),
    }
}

impl Figures {
    /// Pools the samples of another round of the same measurement.
    fn add(&mut self, other: Figures) {
        self.all.extend(other.all);
        if let (Some(mine), Some(theirs)) = (self.parts.as_mut(), other.parts) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.extend(t);
            }
        }
    }
}

/// How long a paced agent runs: uniform around its mean.
fn runs(mean_ms: u32) -> String {
    format!(
        "{:.1} to {:.1} s",
        mean_ms as f64 / 2000.0,
        mean_ms as f64 * 1.5 / 1000.0
    )
}

fn run_plain(loops: usize, attempts: usize, sleep_ms: u32) -> Figures {
    let scratch = Scratch::new("restart-plain");
    let dir = scratch.path().to_path_buf();
    let stamps = dir.join("stamps");
    fs::create_dir_all(&stamps).unwrap();
    write_script(&dir.join("agent.sh"), AGENT);
    let threads: Vec<_> = (0..loops)
        .map(|i| {
            let dir = dir.clone();
            let stamps = stamps.clone();
            std::thread::spawn(move || {
                let name = format!("l{i:03}");
                let wd = dir.join("wd").join(&name);
                fs::create_dir_all(&wd).unwrap();
                let agent = dir.join("agent.sh");
                for n in 1..=attempts {
                    spawn_wait(
                        Command::new(&agent)
                            .current_dir(&wd)
                            .env("BENCH_STAMPS", &stamps)
                            .env("BENCH_SLEEP_MS", sleep_ms.to_string())
                            .env("LC_ALL", "C")
                            .env("LOOPD_LOOP", &name)
                            .env("LOOPD_TEST_ID", "R-1")
                            .env("LOOPD_ATTEMPT", n.to_string()),
                    );
                    spawn_wait(
                        Command::new("bash")
                            .args(["-c", "false"])
                            .current_dir(&wd)
                            .env("BENCH_STAMPS", &stamps)
                            .env("LC_ALL", "C"),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = intervals(&read_stamps(&stamps));
    assert_eq!(all.len(), loops * (attempts - 1));
    Figures { all, parts: None }
}

fn main() {
    let _cleanup = header(
        "restart_latency",
        "agent exits at once, verify `false`; agent exit -> next attempt's first command",
    );
    // Rounds of the 10-loop case: plain and loopd take turns, and the samples of all rounds are
    // pooled, so that the machine drifting during the run (it does, on a shared VM) weighs on
    // both sides of the ratio alike.
    let rounds = env_usize("LOOPD_BENCH_ROUNDS_10", 3).max(1);
    // (case, loops, attempts per loop, agent run time in ms, modes, rounds)
    let cases = std::env::var("LOOPD_BENCH_CASES").unwrap_or_else(|_| "10,100,paced".into());
    let wanted = |case: &str| cases.split(',').any(|c| c.trim() == case);
    let plan = [
        (
            "10",
            10,
            env_usize("LOOPD_BENCH_ATTEMPTS_10", 30).max(2),
            0,
            &[false, true][..],
            rounds,
        ),
        (
            "100",
            100,
            env_usize("LOOPD_BENCH_ATTEMPTS_100", 8).max(2),
            0,
            &[false, true][..],
            1,
        ),
        (
            "paced",
            100,
            env_usize("LOOPD_BENCH_ATTEMPTS_PACED", 5).max(2),
            1000,
            &[false][..],
            1,
        ),
    ];
    println!();
    println!("| loops | agent runs | checkpoints | samples | loopd p50 | loopd p99 | plain p50 | plain p99 | p50 ratio | exit→finished p50 | finished→next started p50 | started→agent running p50 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for (case, loops, attempts, sleep_ms, modes, rounds) in plan {
        if !wanted(case) {
            continue;
        }
        let mut plain = Figures {
            all: Vec::new(),
            parts: None,
        };
        let mut loopd: Vec<Option<Figures>> = modes.iter().map(|_| None).collect();
        for _ in 0..rounds {
            plain.add(run_plain(loops, attempts, sleep_ms));
            for (slot, &checkpoints) in loopd.iter_mut().zip(modes) {
                let f = run_loopd(loops, attempts, checkpoints, sleep_ms);
                match slot {
                    Some(pooled) => pooled.add(f),
                    None => *slot = Some(f),
                }
            }
        }
        let (pp50, pp99) = (percentile(&plain.all, 50.0), percentile(&plain.all, 99.0));
        for (f, &checkpoints) in loopd.into_iter().flatten().zip(modes) {
            let (p50, p99) = (percentile(&f.all, 50.0), percentile(&f.all, 99.0));
            let parts = f.parts.as_ref().unwrap();
            println!(
                "| {loops} | {} | {} | {} | {p50:.2} ms | {p99:.2} ms | {pp50:.2} ms | {pp99:.2} ms | {:.1}x | {:.2} ms | {:.2} ms | {:.2} ms |",
                if sleep_ms > 0 { runs(sleep_ms) } else { "exits at once".into() },
                if checkpoints { "on" } else { "off" },
                f.all.len(),
                p50 / pp50,
                percentile(&parts[0], 50.0),
                percentile(&parts[1], 50.0),
                percentile(&parts[2], 50.0),
            );
            if !checkpoints {
                let how = if sleep_ms > 0 {
                    format!("agents running {}", runs(sleep_ms))
                } else {
                    "agents exiting at once".to_string()
                };
                if loops == 10 {
                    verdicts.push(format!(
                        "aim: p50 within 2x the plain loop at 10 loops ({how}, checkpoints off): {:.1}x, {}",
                        p50 / pp50,
                        verdict(p50 <= 2.0 * pp50)
                    ));
                } else {
                    verdicts.push(format!(
                        "aim: p50 under 15 ms at {loops} loops ({how}, checkpoints off): {p50:.2} ms (plain loop {pp50:.2} ms), {}",
                        verdict(p50 < 15.0)
                    ));
                }
            }
        }
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
}
