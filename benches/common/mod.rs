//! Helpers shared by the loopd benchmarks (each bench includes this file with `mod common;`).
//!
//! Every bench drives the release `loopd` binary that cargo built for it
//! (`env!("CARGO_BIN_EXE_loopd")`), in a fresh temporary directory, and prints its figures
//! beside a baseline measured in the same run.
#![allow(dead_code)]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The loopd binary built by cargo for this bench (release with `cargo bench`), or the one
/// named by `LOOPD_BENCH_BIN` (to compare two builds on the same machine, one run each).
pub fn loopd() -> PathBuf {
    match std::env::var_os("LOOPD_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_loopd")),
    }
}

/// Scratch directories done with, removed when the bench ends ([`Cleanup`]).
static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the bench's scratch directories when dropped: at the end of `main`, not as each run
/// ends. On ext4 without a journal (the VM the README figures come from), every inode freed in
/// the last minute or more is skipped, one by one, by the next file creations in its block
/// group: deleting a run's thousands of files right before the next run made creating a file
/// cost 800 µs instead of 90 to 160 µs, a cost of the harness charged to whichever loopd run
/// came next (the plain-loop baselines create no files).
#[must_use = "the scratch directories are removed when this is dropped"]
pub struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for dir in DONE.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A fresh temporary directory, kept if `LOOPD_BENCH_KEEP` is set, otherwise removed when the
/// bench ends (see [`Cleanup`]).
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    /// Creates it under `$TMPDIR`.
    pub fn new(label: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("loopd-bench-{label}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let path = dir.path().to_path_buf();
        if let Some(keep) = std::env::var_os("LOOPD_BENCH_KEEP") {
            // `quiet`: run-all.sh keeps every bench's files until all of them are done.
            if keep != "quiet" {
                eprintln!("keeping {}", path.display());
            }
            let _ = dir.keep();
            Scratch { dir: None, path }
        } else {
            Scratch {
                dir: Some(dir),
                path,
            }
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            DONE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir.keep());
        }
    }
}

/// A number from the environment (`LOOPD_BENCH_*`), else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes a tests file with one test per `(id, verify)`.
pub fn write_tests(path: &Path, tests: &[(String, String)]) {
    let tests: Vec<serde_json::Value> = tests
        .iter()
        .map(|(id, verify)| {
            serde_json::json!({
                "id": id,
                "title": format!("bench test {id}"),
                "spec": "Benchmark: nothing to build.",
                "verify": verify,
            })
        })
        .collect();
    fs::write(
        path,
        serde_json::to_string_pretty(&serde_json::json!({ "tests": tests })).unwrap(),
    )
    .expect("writing the tests file");
}

/// Writes an executable bash script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, format!("#!/usr/bin/env bash\n{body}")).expect("writing a script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `loopd run FLEET --plain` in `dir` (its output discarded) and returns its wall time.
pub fn loopd_run(dir: &Path, fleet: &str) -> (Duration, ExitStatus) {
    let t = Instant::now();
    let status = Command::new(loopd())
        .args(["run", fleet, "--plain"])
        .current_dir(dir)
        .env_remove("LOOPD_CONFIG")
        .env_remove("LOOPD_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running loopd");
    (t.elapsed(), status)
}

/// One attempt as `loopd attempts LOOP --json` prints it (the fields the benches use).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub test_id: String,
    pub number: u32,
    pub outcome: String,
    /// Seconds since the epoch.
    pub started_at: f64,
    /// Seconds since the epoch.
    pub finished_at: f64,
    pub duration_ms: f64,
}

fn epoch_secs(v: &serde_json::Value) -> f64 {
    let s = v.as_str().unwrap_or_default();
    let t = chrono::DateTime::parse_from_rfc3339(s).expect("an RFC 3339 time");
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) * 1e-9
}

/// The recorded attempts of one loop (the daemon must be gone: this reads the store).
pub fn attempts(dir: &Path, fleet: &str, loop_name: &str) -> Vec<Attempt> {
    let out = Command::new(loopd())
        .args(["attempts", loop_name, "--json", "-c", fleet])
        .current_dir(dir)
        .env_remove("LOOPD_ADDR")
        .output()
        .expect("running loopd attempts");
    assert!(
        out.status.success(),
        "loopd attempts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("attempts JSON");
    v["attempts"]
        .as_array()
        .expect("an attempts array")
        .iter()
        .map(|a| Attempt {
            test_id: a["test_id"].as_str().unwrap_or_default().to_string(),
            number: a["number"].as_u64().unwrap_or(0) as u32,
            outcome: a["outcome"].as_str().unwrap_or_default().to_string(),
            started_at: epoch_secs(&a["started_at"]),
            finished_at: epoch_secs(&a["finished_at"]),
            duration_ms: a["duration_ms"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// Now, in seconds since the epoch (the clock bash's `$EPOCHREALTIME` and loopd's records use).
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// utime + stime of process `pid` (all its threads, not its children), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based), i.e. 11 and 12 here.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Clock ticks a second (`getconf CLK_TCK`, 100 when that fails), the unit of [`cpu_ticks`].
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0)
}

/// Nearest-rank percentile of `values` (sorted here); NaN when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((q / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Arithmetic mean; NaN when empty.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// One line describing the machine: cores, CPU model, memory.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores, {model}, {:.1} GiB RAM",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews every figure).
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the bench's header.
/// Prints the bench's title, the machine and its load; the returned guard removes the bench's
/// scratch directories when `main` ends.
pub fn header(name: &str, what: &str) -> Cleanup {
    println!("== {name}: {what}");
    println!("   machine: {}", machine());
    println!("   loopd:   {}", loopd().display());
    println!("   load:    {}", load_average());
    Cleanup
}

/// Marks a figure against its aim.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "meets the aim"
    } else {
        "MISSES the aim"
    }
}

/// What the plain-loop baselines do per process, like loopd does for an agent: spawn in its own
/// process group with no stdin and piped output, read the output to the end, wait.
pub fn spawn_wait(cmd: &mut Command) -> ExitStatus {
    use std::io::Read;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let mut sink = Vec::new();
    let _ = child.stdout.take().unwrap().read_to_end(&mut sink);
    let _ = child.stderr.take().unwrap().read_to_end(&mut sink);
    child.wait().expect("waiting")
}

/// A `loopd serve` started by [`serve`]: its address and token; SIGTERM when dropped (SIGKILL
/// after 20 s).
pub struct Served {
    pub child: std::process::Child,
    pub addr: String,
    pub token: String,
}

impl Served {
    /// The daemon's pid, for its CPU and memory in /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `loopd serve loopd.toml --bind 127.0.0.1:0` in `dir` (whose `loopd.toml` says
/// `state_dir = ".loopd"`) and returns once this daemon's `daemon.json` names an address that
/// answers, with the token it generated.
pub fn serve(dir: &Path) -> Served {
    let child = Command::new(loopd())
        .args(["serve", "loopd.toml", "--bind", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("LOOPD_CONFIG")
        .env_remove("LOOPD_STATE_DIR")
        .env_remove("LOOPD_TOKEN")
        .env("LOOPD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting loopd serve");
    let mut served = Served {
        child,
        addr: String::new(),
        token: String::new(),
    };
    let state = dir.join(".loopd");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "loopd serve did not come up");
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("loopd serve ended with {status}");
        }
        let addr = fs::read_to_string(state.join("daemon.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v["pid"] == served.child.id())
            .and_then(|v| v["addr"].as_str().map(String::from));
        let token = fs::read_to_string(state.join("token")).ok();
        if let (Some(addr), Some(token)) = (addr, token) {
            if std::net::TcpStream::connect(&addr).is_ok() {
                served.addr = addr;
                served.token = token.trim().to_string();
                return served;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
