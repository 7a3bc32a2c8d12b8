//! lanes (issue 13): a loop of 200 tests with a dependency graph, run with 8 lanes and with 1,
//! beside the lower bound of any schedule of the same work.
//!
//! Run: `cargo bench --bench lanes` (about 7 minutes: the one-lane run sleeps through every
//! test in a row). Knobs: `LOOPD_BENCH_N` (tests, default 200), `LOOPD_BENCH_LANES` (default
//! 8, also the fleet's `max_concurrent_agents`), `LOOPD_BENCH_SEED` (default 13),
//! `LOOPD_BENCH_ONE_LANE=0` skips the one-lane run, `LOOPD_BENCH_KEEP=1` keeps the directories.
//!
//! What it does, in a fresh temporary directory per run:
//! - a generated graph: test `i` depends on 0 to 3 tests among the 20 before it (uniform), so
//!   the graph is about 10 wide (the widest level is printed); each test has a duration drawn
//!   uniformly from 0.5 to 2.5 s (seeded, the same in both runs);
//! - a scripted agent that sleeps its test's duration, then writes `out/<test id>` (its own
//!   file), and stamps its real start and end (`$EPOCHREALTIME`) into a log outside the workdir;
//!   verify is `test -f out/<test id>`; checkpoints on (a commit per pass, merged through the
//!   merge queue with more than one lane);
//! - `loopd run` on it with `lanes = L` and `max_concurrent_agents = L`, then with `lanes = 1`.
//!
//! Printed: the makespan of each run (first agent start to last agent end, from the stamps, and
//! `loopd run`'s wall time); the lower bound of any schedule on L agents computed from the
//! durations the agents actually slept, `max(critical path, total work / L)`; the ratio of the
//! L-lane makespan to that bound (aim: at most 1.15x); and the checks that matter more than
//! speed: every test passed exactly once, its file added exactly once in the loop's history
//! (nothing lost, nothing merged twice), and `git worktree list` naming only the lanes.
//! Beside them, the cost of one plain `git rebase --onto` + `git update-ref` of a commit one
//! merge behind, on the finished repository, in the same run: the floor under the merge
//! queue's own cost per merge (rebase + re-verify + update-ref, from the attempt records where
//! the loopd build records it).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

/// A tiny deterministic generator (xorshift64*): the graph and durations must be the same for
/// both runs and across machines, and no bench needs more than this.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Graph {
    ids: Vec<String>,
    deps: Vec<Vec<usize>>,
    /// Planned sleep of each test, in seconds.
    secs: Vec<f64>,
}

fn graph(n: usize, seed: u64) -> Graph {
    let mut rng = Rng(seed.max(1));
    let ids: Vec<String> = (0..n).map(|i| format!("T-{i:03}")).collect();
    let mut deps = Vec::with_capacity(n);
    let mut secs = Vec::with_capacity(n);
    for i in 0..n {
        let want = rng.below(4) as usize;
        let lo = i.saturating_sub(20);
        let mut d: Vec<usize> = Vec::new();
        for _ in 0..want.min(i - lo) {
            let j = lo + rng.below((i - lo) as u64) as usize;
            if !d.contains(&j) {
                d.push(j);
            }
        }
        d.sort_unstable();
        deps.push(d);
        secs.push(0.5 + 2.0 * rng.unit());
    }
    Graph { ids, deps, secs }
}

/// The longest chain of durations through the graph (tests come after their dependencies).
fn critical_path(g: &Graph, secs: &[f64]) -> f64 {
    let mut finish = vec![0.0f64; g.ids.len()];
    for i in 0..g.ids.len() {
        let start = g.deps[i].iter().map(|&d| finish[d]).fold(0.0, f64::max);
        finish[i] = start + secs[i];
    }
    finish.into_iter().fold(0.0, f64::max)
}

/// The size of the widest level (tests at the same depth), a measure of the parallelism there is.
fn widest_level(g: &Graph) -> usize {
    let mut depth = vec![0usize; g.ids.len()];
    for i in 0..g.ids.len() {
        depth[i] = g.deps[i].iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
    }
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for d in depth {
        *count.entry(d).or_default() += 1;
    }
    count.into_values().max().unwrap_or(0)
}

fn write_fleet(dir: &Path, g: &Graph, lanes: usize) {
    let tests: Vec<serde_json::Value> = g
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "id": id,
                "title": format!("bench test {id}"),
                "spec": "Benchmark: write your file.",
                "verify": format!("test -f out/{id}"),
                "depends_on": g.deps[i].iter().map(|&d| g.ids[d].clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    fs::write(
        dir.join("bench.tests.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "tests": tests })).unwrap(),
    )
    .unwrap();
    let table: String = g
        .ids
        .iter()
        .zip(&g.secs)
        .map(|(id, s)| format!("{id} {s:.3}\n"))
        .collect();
    fs::write(dir.join("durations"), table).unwrap();
    let stamps = dir.join("stamps");
    write_script(
        &dir.join("agent.sh"),
        &format!(
            r#"set -eu
secs="$(awk -v id="$LOOPD_TEST_ID" '$1 == id {{ print $2 }}' {durations})"
start="$EPOCHREALTIME"
sleep "$secs"
mkdir -p out
echo "$LOOPD_TEST_ID" > "out/$LOOPD_TEST_ID"
echo "$LOOPD_TEST_ID $start $EPOCHREALTIME" >> {stamps}
"#,
            durations = dir.join("durations").display(),
            stamps = stamps.display(),
        ),
    );
    fs::write(
        dir.join("loopd.toml"),
        format!(
            r#"[fleet]
state_dir = ".loopd"
max_concurrent_agents = {lanes}

[[loops]]
name = "bench"
workdir = "wd"
init_workdir = true
tests_file = "bench.tests.json"
lanes = {lanes}
max_attempts = 3
[loops.agent]
kind = "command"
command = ["{agent}"]
"#,
            agent = dir.join("agent.sh").display(),
        ),
    )
    .unwrap();
}

/// One agent run as it stamped itself: test, start, end (seconds since the epoch).
struct Stamp {
    test: String,
    start: f64,
    end: f64,
}

fn stamps(dir: &Path) -> Vec<Stamp> {
    fs::read_to_string(dir.join("stamps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Stamp {
                test: f.next()?.to_string(),
                start: f.next()?.parse().ok()?,
                end: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct RunResult {
    wall: f64,
    makespan: f64,
    /// Seconds each test's agent slept, the last run of each test.
    slept: BTreeMap<String, f64>,
    agent_runs: usize,
    problems: Vec<String>,
    /// Merge costs in ms the loopd build recorded, if it records any.
    merges_ms: Vec<f64>,
}

fn run(g: &Graph, lanes: usize) -> (RunResult, Scratch) {
    let scratch = Scratch::new(&format!("lanes{lanes}"));
    let dir = scratch.path();
    write_fleet(dir, g, lanes);
    let t = Instant::now();
    let (_, status) = loopd_run(dir, "loopd.toml");
    let wall = t.elapsed().as_secs_f64();
    let mut problems = Vec::new();
    if !status.success() {
        problems.push(format!("loopd run ended with {status}"));
    }
    let st = stamps(dir);
    let first = st.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    let last = st.iter().map(|s| s.end).fold(0.0, f64::max);
    let mut slept = BTreeMap::new();
    for s in &st {
        slept.insert(s.test.clone(), s.end - s.start);
    }

    // Every test passed exactly once.
    let attempts = attempts(dir, "loopd.toml", "bench");
    let mut passes: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &attempts {
        if a.outcome == "passed" {
            *passes.entry(a.test_id.as_str()).or_default() += 1;
        }
    }
    for id in &g.ids {
        match passes.get(id.as_str()) {
            Some(1) => {}
            Some(k) => problems.push(format!("{id} passed {k} times")),
            None => problems.push(format!("{id} never passed")),
        }
    }
    // Its file added exactly once on the loop's branch (nothing lost, nothing merged twice).
    let wd = dir.join("wd");
    let added = git(
        &wd,
        &[
            "log",
            "--format=",
            "--name-only",
            "--diff-filter=A",
            "--",
            "out",
        ],
    );
    let mut adds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in added.lines().filter(|l| !l.is_empty()) {
        *adds.entry(f.trim_start_matches("out/")).or_default() += 1;
    }
    for id in &g.ids {
        match adds.get(id.as_str()) {
            Some(1) => {}
            Some(k) => problems.push(format!("out/{id} added {k} times in the history")),
            None => problems.push(format!("out/{id} is not in the history")),
        }
    }
    // The worktrees git knows are the workdir and the lanes (and the merge queue's scratch tree).
    let worktrees = git(&wd, &["worktree", "list", "--porcelain"]);
    let lane_dir = dir.join(".loopd/lanes/bench");
    for path in worktrees
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(Path::new)
    {
        let ok = path == wd
            || path.canonicalize().ok() == wd.canonicalize().ok()
            || path.starts_with(&lane_dir)
            || lane_dir.canonicalize().is_ok_and(|l| path.starts_with(l));
        if !ok {
            problems.push(format!("a worktree that is not a lane: {}", path.display()));
        }
    }
    let merges_ms = merge_costs(dir);
    (
        RunResult {
            wall,
            makespan: last - first,
            slept,
            agent_runs: st.len(),
            problems,
            merges_ms,
        },
        scratch,
    )
}

/// The merge queue's cost per merge as the loopd build records it: the `merge_ms` of every
/// attempt that has one (`loopd attempts --json`). Empty when the build records none.
fn merge_costs(dir: &Path) -> Vec<f64> {
    let out = Command::new(loopd())
        .args(["attempts", "bench", "--json", "-c", "loopd.toml"])
        .current_dir(dir)
        .env_remove("LOOPD_ADDR")
        .output()
        .expect("running loopd attempts");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["merge_ms"].as_f64())
        .collect()
}

/// A plain `git rebase --onto` + `git update-ref` of a commit one merge behind, on a clone of
/// the finished workdir, for `k` of the tests: per test, its file committed on the grandparent
/// of its merged commit (a lane that started before the last merge), then that commit rebased
/// onto the merged commit's parent and a ref moved to the result. Milliseconds each.
fn plain_rebase(wd: &Path, scratch: &Path, k: usize) -> Vec<f64> {
    let clone = scratch.join("plain-clone");
    let _ = fs::remove_dir_all(&clone);
    git(
        scratch,
        &["clone", "-q", &wd.display().to_string(), "plain-clone"],
    );
    for (key, value) in [("user.name", "bench"), ("user.email", "bench@localhost")] {
        git(&clone, &["config", key, value]);
    }
    let commits: Vec<String> = git(&clone, &["rev-list", "--first-parent", "HEAD"])
        .lines()
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    for (i, c) in commits.iter().enumerate().take(k) {
        let (Some(parent), Some(grand)) = (commits.get(i + 1), commits.get(i + 2)) else {
            break;
        };
        git(&clone, &["checkout", "-q", "--detach", grand]);
        fs::create_dir_all(clone.join("plain")).unwrap();
        fs::write(clone.join(format!("plain/{i}")), format!("{c}\n")).unwrap();
        git(&clone, &["add", "-A"]);
        git(&clone, &["commit", "-q", "-m", "lane commit"]);
        let lane = git(&clone, &["rev-parse", "HEAD"]).trim().to_string();
        let t = Instant::now();
        git(&clone, &["rebase", "-q", "--onto", parent, grand, &lane]);
        let new = git(&clone, &["rev-parse", "HEAD"]).trim().to_string();
        git(&clone, &["update-ref", "refs/heads/plain-target", &new]);
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out
}

fn main() {
    let n = env_usize("LOOPD_BENCH_N", 200).max(2);
    let lanes = env_usize("LOOPD_BENCH_LANES", 8).max(1);
    let seed = env_usize("LOOPD_BENCH_SEED", 13) as u64;
    let one_lane = std::env::var("LOOPD_BENCH_ONE_LANE").map_or(true, |v| v != "0");
    let _cleanup = header(
        "lanes",
        &format!(
            "{n} tests, each depending on 0-3 of the 20 before it, agents sleeping 0.5-2.5 s, {lanes} lanes and {lanes} slots"
        ),
    );
    let g = graph(n, seed);
    let planned_work: f64 = g.secs.iter().sum();
    println!(
        "graph: {n} tests, {} edges, widest level {}, planned work {planned_work:.1} s, planned critical path {:.1} s",
        g.deps.iter().map(Vec::len).sum::<usize>(),
        widest_level(&g),
        critical_path(&g, &g.secs),
    );

    let (many, many_dir) = run(&g, lanes);
    let secs: Vec<f64> = g
        .ids
        .iter()
        .zip(&g.secs)
        .map(|(id, planned)| many.slept.get(id).copied().unwrap_or(*planned))
        .collect();
    let work: f64 = secs.iter().sum();
    let cp = critical_path(&g, &secs);
    let bound = cp.max(work / lanes as f64);
    let single = one_lane.then(|| run(&g, 1));
    let plain = plain_rebase(&many_dir.path().join("wd"), many_dir.path(), 20);
    println!();
    println!("| run | makespan (first agent start → last agent end) | `loopd run` wall | agent runs | lower bound | makespan / bound |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {lanes} lanes | {:.1} s | {:.1} s | {} | {bound:.1} s (critical path {cp:.1} s, work / {lanes} {:.1} s) | {:.2}x |",
        many.makespan,
        many.wall,
        many.agent_runs,
        work / lanes as f64,
        many.makespan / bound
    );
    if let Some((one, _)) = &single {
        println!(
            "| 1 lane | {:.1} s | {:.1} s | {} | {work:.1} s (total work) | {:.2}x |",
            one.makespan,
            one.wall,
            one.agent_runs,
            one.makespan / work
        );
    }
    println!();
    if many.merges_ms.is_empty() {
        println!("merge queue cost per merge: not recorded by this loopd build (no `merge_ms` in its attempt records)");
    } else {
        println!(
            "merge queue cost per merge (rebase + re-verify + update-ref, {} merges): p50 {:.1} ms, p99 {:.1} ms, mean {:.1} ms",
            many.merges_ms.len(),
            percentile(&many.merges_ms, 50.0),
            percentile(&many.merges_ms, 99.0),
            mean(&many.merges_ms)
        );
    }
    println!(
        "plain git rebase --onto + update-ref of a commit one merge behind ({} samples, same run): p50 {:.1} ms, p99 {:.1} ms",
        plain.len(),
        percentile(&plain, 50.0),
        percentile(&plain, 99.0)
    );
    let mut problems = many.problems.clone();
    if let Some((one, _)) = &single {
        problems.extend(one.problems.iter().map(|p| format!("1 lane: {p}")));
    }
    if problems.is_empty() {
        println!("checks: every test passed once, every file added once, no stray worktree: ok");
    } else {
        println!("checks FAILED:");
        for p in &problems {
            println!("  - {p}");
        }
    }
    let ratio = many.makespan / bound;
    println!(
        "aim: {lanes}-lane makespan <= 1.15x the lower bound: {ratio:.2}x, {}",
        verdict(ratio <= 1.15 && problems.is_empty())
    );
    println!("load after: {}", load_average());
}
