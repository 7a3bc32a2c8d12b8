//! Shared helpers for the end-to-end tests of the built `loopd` binary.
//!
//! A [`Fleet`] is a temporary folder holding `loopd.toml`, `tests.json`, a scripted bash agent
//! (`agent.sh`), a git workdir (`work/`) with one commit, and the state directory (`state/`).
//! Tests write the agent's script themselves, run the real binary with a timeout, and read what
//! loopd recorded through `status --json` and `attempts --json`.
//!
//! Every process whose current directory lies inside a fleet's folder is one the test started
//! (loopd itself, its agents, their children, verify): dropping the fleet SIGKILLs those still
//! alive, so a failing test leaves nothing behind, and never touches anything else.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long one `loopd run` may take before the test calls it hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test waits for something a running loopd or agent is expected to do soon.
pub const WAIT: Duration = Duration::from_secs(30);
/// The name of the one loop of a [`Fleet`].
pub const LOOP: &str = "main";

/// Environment variables of the test process that would change what loopd reads.
const LOOPD_ENV: &[&str] = &[
    "LOOPD_CONFIG",
    "LOOPD_STATE_DIR",
    "LOOPD_BIND",
    "LOOPD_ADDR",
    "LOOPD_TOKEN",
    "LOOPD_LOG",
];

/// The path of the binary under test.
pub fn loopd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_loopd")
}

/// A tests-file entry `id` titled `test ID` that `verify` checks, behind `deps`.
pub fn test_entry(id: &str, verify: &str, deps: &[&str]) -> Value {
    serde_json::json!({"id": id, "title": format!("test {id}"), "spec": format!("make {id}"), "verify": verify, "depends_on": deps})
}

/// A fleet of one loop (`main`) in a temporary folder.
pub struct Fleet {
    dir: tempfile::TempDir,
    root: PathBuf,
    tests: Value,
    agent: String,
    keys: Vec<(String, String)>,
    fleet_keys: Vec<(String, String)>,
}

impl Fleet {
    /// A new folder with an initialised workdir (one commit holding `README`), no files written
    /// yet. The defaults keep failing tests short: `max_attempts = 1`, `kill_grace = "1s"`.
    pub fn new() -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("loopd-e2e-")
            .tempdir()
            .expect("create a temporary folder");
        // Canonical, so that paths loopd prints and records compare equal to ours.
        let root = dir
            .path()
            .canonicalize()
            .expect("canonicalize the temp dir");
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git_in(&work, &["init", "-q"]);
        git_in(&work, &["config", "user.name", "loopd e2e"]);
        git_in(&work, &["config", "user.email", "e2e@localhost"]);
        git_in(&work, &["config", "commit.gpgsign", "false"]);
        std::fs::write(
            work.join("README"),
            "a workdir for loopd's end-to-end tests\n",
        )
        .unwrap();
        git_in(&work, &["add", "README"]);
        git_in(&work, &["commit", "-q", "-m", "initial"]);
        let mut fleet = Fleet {
            dir,
            root,
            tests: serde_json::json!({ "tests": [] }),
            agent: "exit 0".into(),
            keys: Vec::new(),
            fleet_keys: Vec::new(),
        };
        fleet = fleet.set("max_attempts", "1").set("kill_grace", "\"1s\"");
        fleet
    }

    /// Sets the tests file's `tests` array.
    pub fn tests(mut self, tests: Value) -> Fleet {
        self.tests = serde_json::json!({ "tests": tests });
        self
    }

    /// Sets the body of the agent's bash script. `$ROOT` is the fleet's folder, `$WORK` the
    /// workdir; the script runs with the workdir as its current directory.
    pub fn agent(mut self, body: &str) -> Fleet {
        self.agent = body.to_string();
        self
    }

    /// Sets a key of the loop's `[[loops]]` table (`value` is TOML: `"\"2s\""`, `"3"`, `"true"`).
    pub fn set(mut self, key: &str, value: &str) -> Fleet {
        self.keys.retain(|(k, _)| k != key);
        self.keys.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets a key of the `[fleet]` table (`value` is TOML), such as `max_concurrent_agents`.
    pub fn fleet_set(mut self, key: &str, value: &str) -> Fleet {
        self.fleet_keys.retain(|(k, _)| k != key);
        self.fleet_keys.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes `loopd.toml`, `tests.json` and `agent.sh`.
    pub fn write(self) -> Fleet {
        self.write_config();
        self.write_tests();
        self.write_agent(&self.agent);
        self
    }

    /// Writes `loopd.toml`.
    pub fn write_config(&self) {
        let mut toml = String::from("[fleet]\nstate_dir = \"state\"\n");
        for (k, v) in &self.fleet_keys {
            toml.push_str(&format!("{k} = {v}\n"));
        }
        toml.push_str("\n[[loops]]\n");
        toml.push_str(&format!(
            "name = \"{LOOP}\"\nworkdir = \"work\"\ntests_file = \"tests.json\"\n"
        ));
        for (k, v) in &self.keys {
            toml.push_str(&format!("{k} = {v}\n"));
        }
        toml.push_str("[loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n");
        std::fs::write(self.config_file(), toml).unwrap();
    }

    /// Rewrites `loopd.toml` so that `agent.sh` runs as the claude-code preset's `binary`
    /// instead of as a command agent.
    pub fn use_claude_code_preset(&self) {
        let toml = std::fs::read_to_string(self.config_file())
            .unwrap()
            .replace(
                "kind = \"command\"\ncommand = [\"./agent.sh\"]",
                "kind = \"claude-code\"\nbinary = \"./agent.sh\"",
            );
        std::fs::write(self.config_file(), toml).unwrap();
    }

    /// Writes `tests.json` from [`Fleet::tests`].
    pub fn write_tests(&self) {
        let text = serde_json::to_string_pretty(&self.tests).unwrap();
        std::fs::write(self.tests_file(), text).unwrap();
    }

    /// (Re)writes the agent's script with `body`.
    pub fn write_agent(&self, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let script = format!(
            "#!/usr/bin/env bash\nROOT='{}'\nWORK='{}'\n{body}\n",
            self.root.display(),
            self.workdir().display()
        );
        let path = self.root.join("agent.sh");
        // Write then rename: never leave a half-written script where a running loopd may exec it.
        let tmp = self.root.join("agent.sh.tmp");
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// The fleet's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `loopd.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("loopd.toml")
    }

    /// `tests.json`.
    pub fn tests_file(&self) -> PathBuf {
        self.root.join("tests.json")
    }

    /// The loop's git workdir.
    pub fn workdir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The transcript of attempt `n` of `test`.
    pub fn transcript(&self, test: &str, n: u32) -> PathBuf {
        self.state_dir()
            .join("transcripts")
            .join(LOOP)
            .join(test)
            .join(format!("{n}.log"))
    }

    /// The prompt file of attempt `n` of `test`.
    pub fn prompt(&self, test: &str, n: u32) -> PathBuf {
        self.state_dir()
            .join("transcripts")
            .join(LOOP)
            .join(test)
            .join(format!("{n}.prompt.md"))
    }

    /// A `loopd` command in the fleet's folder with a clean loopd environment.
    pub fn loopd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(loopd_bin());
        cmd.args(args).current_dir(&self.root).stdin(Stdio::null());
        for var in LOOPD_ENV {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs `loopd ARGS` to completion (at most [`RUN_TIMEOUT`]).
    pub fn cmd(&self, args: &[&str]) -> Run {
        Running::spawn(self.loopd(args)).wait(RUN_TIMEOUT)
    }

    /// `loopd run loopd.toml --plain` to completion.
    pub fn run(&self) -> Run {
        self.cmd(&["run", "loopd.toml", "--plain"])
    }

    /// `loopd run loopd.toml --plain`, left running.
    pub fn spawn_run(&self) -> Running {
        Running::spawn(self.loopd(&["run", "loopd.toml", "--plain"]))
    }

    /// `loopd status --json`, parsed (panics when it fails).
    pub fn status(&self) -> Value {
        self.cmd(&["status", "loopd.toml", "--json"]).json()
    }

    /// The loop's entry of `status --json`.
    pub fn loop_status(&self) -> Value {
        let status = self.status();
        status["loops"]
            .as_array()
            .and_then(|loops| loops.iter().find(|l| l["name"] == LOOP))
            .cloned()
            .unwrap_or_else(|| panic!("no loop `{LOOP}` in status --json: {status:#}"))
    }

    /// One test's entry of `status --json`.
    pub fn test_status(&self, id: &str) -> Value {
        let lp = self.loop_status();
        lp["tests"]
            .as_array()
            .and_then(|tests| tests.iter().find(|t| t["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no test `{id}` in status --json: {lp:#}"))
    }

    /// `loopd attempts main TEST --json`'s attempts.
    pub fn attempts(&self, test: &str) -> Vec<Value> {
        let doc = self
            .cmd(&["-c", "loopd.toml", "attempts", LOOP, test, "--json"])
            .json();
        doc["attempts"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no `attempts` array: {doc:#}"))
    }

    /// Runs git in the workdir and returns its stdout (panics when git fails).
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.workdir(), args)
    }

    /// Runs git in the workdir and says whether it succeeded.
    pub fn git_ok(&self, args: &[&str]) -> bool {
        Command::new("git")
            .args(args)
            .current_dir(self.workdir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Only processes running inside this fleet's (uniquely named) folder: ours.
        for pid in all_pids() {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
            if cwd.is_ok_and(|c| c.starts_with(&self.root)) && pid_alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = &self.dir;
    }
}

/// Runs git in `dir`, returning stdout; panics with git's stderr when it fails.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished loopd command.
#[derive(Debug)]
pub struct Run {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// The highest resident set size seen (VmHWM of /proc/<pid>/status), in KiB.
    pub peak_rss_kib: u64,
}

impl Run {
    /// The exit code (panics when a signal ended it).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("loopd ended by a signal: {self}"))
    }

    /// Panics unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit status\n{self}"
        );
        self
    }

    /// stdout parsed as JSON (panics unless the command succeeded).
    pub fn json(&self) -> Value {
        self.expect_code(0);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A loopd process the test started and has not waited for yet. Dropping it kills it.
pub struct Running {
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    peak_rss_kib: u64,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn loopd");
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Running {
            child: Some(child),
            stdout,
            stderr,
            peak_rss_kib: 0,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("not waited for").id() as i32
    }

    /// Sends `signal` to it (only to it: agents run in their own process groups).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal loopd");
    }

    /// True while it has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for it to exit (killing it and panicking after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("not waited for");
        let status = loop {
            if let Some(kib) = vm_hwm_kib(child.id() as i32) {
                self.peak_rss_kib = self.peak_rss_kib.max(kib);
            }
            match child.try_wait().expect("wait for loopd") {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let run = self.collect(None);
                    panic!("loopd did not finish within {timeout:?}\n{run}");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.collect(Some(status))
    }

    fn collect(&mut self, status: Option<ExitStatus>) -> Run {
        let join = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap()).unwrap_or_default();
        Run {
            status: status.unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::from_raw(9)
            }),
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            peak_rss_kib: self.peak_rss_kib,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `file` exists and contains `needle`.
pub fn wait_for_text(file: &Path, needle: &str) {
    wait_until(&format!("`{needle}` in {}", file.display()), WAIT, || {
        std::fs::read_to_string(file).is_ok_and(|t| t.contains(needle))
    });
}

/// The pids listed one a line in `file` (which must exist).
pub fn read_pids(file: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.split_whitespace()
        .map(|p| p.parse().unwrap_or_else(|_| panic!("not a pid: {p:?}")))
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (state is the first).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    // Read as bytes: a process may name itself with bytes that are not UTF-8.
    let raw = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let stat = String::from_utf8_lossy(&raw);
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// True when `pid` names a process that is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| !matches!(f.first().map(String::as_str), Some("Z" | "X")))
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| {
                !matches!(f[0].as_str(), "Z" | "X")
                    && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .collect()
}

/// The live pids among `pids`.
pub fn alive(pids: &[i32]) -> Vec<i32> {
    pids.iter().copied().filter(|&p| pid_alive(p)).collect()
}

/// VmHWM (peak resident set size) of `pid`, in KiB.
fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every file under `dir` with its bytes, sorted by path (to show a folder did not change).
pub fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}
