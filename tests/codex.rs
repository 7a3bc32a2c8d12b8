//! The real Codex CLI against a mock OpenAI Responses API on 127.0.0.1, alone and through loopd's
//! `codex` preset.
//!
//! The CLI is found through `LOOPD_CODEX_BIN`, else at `.tools/codex/node_modules/.bin/codex`
//! (where `bash .ci/install-agents.sh codex` puts it). The tests that need it are `#[ignore]`d in
//! a plain `cargo test`; `.ci/run` installs the CLI and runs them with `--include-ignored`, where a
//! missing CLI fails them with the command that installs it.
//!
//! `LOOPD_RECORD_FIXTURES=1 cargo test --test codex -- --include-ignored` rewrites the samples in
//! `tests/fixtures/codex/` from what the installed CLI prints (the unit tests of the preset's
//! reader read them).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::mock_openai::{self as mock, MockOpenAi, Scenario};

/// The model the tests ask for: one in the pinned CLI's catalog (an unknown one makes Codex
/// print an error item about its metadata first).
const MODEL: &str = "gpt-5.5";

/// The variable the tests' fleets name in `api_key_env`.
const KEY_ENV: &str = "LOOPD_MOCK_OPENAI_KEY";

// ---------------------------------------------------------------------------------------------
// Finding and running the CLI
// ---------------------------------------------------------------------------------------------

/// The Codex executable. A test that asks for it was run on purpose (`--include-ignored`), so a
/// missing CLI fails it instead of passing in silence.
fn codex_bin() -> PathBuf {
    let candidate = match std::env::var_os("LOOPD_CODEX_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/codex/node_modules/.bin/codex"),
    };
    assert!(
        candidate.is_file(),
        "the codex CLI is not at {}: run `bash .ci/install-agents.sh codex` \
         (or set LOOPD_CODEX_BIN)",
        candidate.display()
    );
    candidate
}

struct Sandbox {
    _root: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

/// A `CODEX_HOME` holding the `config.toml` loopd's preset writes for `mock`, and a git
/// working tree. Not under TMPDIR: Codex's state there is what loopd's state directory holds.
fn sandbox(mock: &MockOpenAi) -> Sandbox {
    let root = tempfile::Builder::new()
        .prefix("loopd-codex")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let home = root.path().join("home");
    let work = root.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let git = Command::new("git")
        .args(["init", "-q"])
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(git.success());
    std::fs::write(
        home.join("config.toml"),
        loopd_actors::agent::codex_config_toml(Some(&mock.base_url()), Some(KEY_ENV)),
    )
    .unwrap();
    Sandbox {
        _root: root,
        home,
        work,
    }
}

/// The arguments of loopd's preset (`--strict-config` too: a key of loopd's `config.toml` that
/// the pinned CLI does not know fails the test), with extra `-c` overrides before the prompt.
fn codex_args(sb: &Sandbox, overrides: &[&str], prompt: &str) -> Vec<String> {
    let mut args: Vec<String> = ["exec", "--json", "--ephemeral", "--strict-config", "-C"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(sb.work.display().to_string());
    args.extend(["--model".to_string(), MODEL.to_string()]);
    for o in overrides {
        args.extend(["-c".to_string(), o.to_string()]);
    }
    args.extend(["--".to_string(), prompt.to_string()]);
    args
}

/// Starts the CLI in its own process group, in `sb.work`, with no stdin and a clean environment.
fn spawn_cli(bin: &Path, sb: &Sandbox, args: &[String]) -> Child {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(&sb.work)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", &sb.home)
        .env("CODEX_HOME", &sb.home)
        .env(KEY_ENV, "sk-mock-not-a-key")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()))
}

/// Lines of stdout as they arrive.
fn line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn stderr_reader(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    })
}

/// Ends the whole process group (SIGTERM, grace, SIGKILL), reaps the leader and waits until no
/// process of the group is left. Returns whether the group is gone.
fn end_group(child: &mut Child, grace: Duration) -> bool {
    let pgid = Pid::from_raw(child.id() as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if killpg(pgid, None) == Err(Errno::ESRCH) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Run {
    raw: Vec<String>,
    lines: Vec<Value>,
    status: ExitStatus,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.lines.iter().filter(move |l| l["type"] == ty)
    }

    fn items<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.of_type("item.completed")
            .map(|l| &l["item"])
            .filter(move |i| i["type"] == ty)
    }

    fn dump(&self) -> String {
        format!(
            "status {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.elapsed,
            self.raw.join("\n"),
            self.stderr
        )
    }
}

/// Runs the CLI to its end (at most `limit`, then its group is killed and the test fails).
fn run_cli(bin: &Path, sb: &Sandbox, args: &[String], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = spawn_cli(bin, sb, args);
    let rx = line_reader(&mut child);
    let err = stderr_reader(&mut child);
    let mut raw = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            raw.push(line);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            end_group(&mut child, Duration::from_secs(2));
            panic!(
                "codex did not finish within {limit:?}; output so far:\n{}",
                raw.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        raw.push(line);
    }
    // The node wrapper has exited; its native child must not outlive it.
    assert!(
        end_group(&mut child, Duration::from_millis(100)),
        "processes of codex's group survived its exit"
    );
    let stderr = err.join().unwrap_or_default();
    let lines = raw
        .iter()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nstderr:\n{stderr}"))
        })
        .collect();
    Run {
        raw,
        lines,
        status,
        stderr,
        elapsed: start.elapsed(),
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codex")
}

/// With `LOOPD_RECORD_FIXTURES` set, saves what the CLI printed as a fixture, with the sandbox's
/// temporary path and the thread id replaced by stable ones.
fn maybe_record(name: &str, sb: &Sandbox, raw: &[String]) {
    if std::env::var_os("LOOPD_RECORD_FIXTURES").is_none() {
        return;
    }
    let root = sb.work.parent().unwrap().to_str().unwrap().to_string();
    let thread = regex::Regex::new(r#""thread_id":"[0-9a-f-]+""#).unwrap();
    let mut text = String::new();
    for line in raw {
        let line = line.replace(&root, "/tmp/loopd-codex");
        text.push_str(&thread.replace_all(
            &line,
            r#""thread_id":"00000000-0000-0000-0000-000000000000""#,
        ));
        text.push('\n');
    }
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    std::fs::write(fixtures_dir().join(format!("{name}.jsonl")), text).unwrap();
    eprintln!("recorded tests/fixtures/codex/{name}.jsonl");
}

fn turn_failed(run: &Run) -> String {
    run.of_type("turn.failed")
        .last()
        .and_then(|l| l["error"]["message"].as_str())
        .unwrap_or_else(|| panic!("no turn.failed in:\n{}", run.dump()))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The CLI alone, against the mock
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn cli_writes_files_through_real_exec_command_and_apply_patch_calls() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::Tools);
    let sb = sandbox(&mock);
    let args = codex_args(&sb, &[], "Create hello.txt and notes.txt.");
    let run = run_cli(&bin, &sb, &args, Duration::from_secs(120));
    maybe_record("tools", &sb, &run.raw);

    assert!(run.status.success(), "{}", run.dump());
    let written = std::fs::read_to_string(sb.work.join(mock::TOOLS_FILE)).unwrap_or_default();
    assert_eq!(written, mock::TOOLS_CONTENT, "{}", run.dump());
    let patched = std::fs::read_to_string(sb.work.join(mock::PATCH_FILE)).unwrap_or_default();
    assert_eq!(patched, mock::PATCH_CONTENT, "{}", run.dump());

    assert_eq!(run.lines[0]["type"], "thread.started", "{}", run.dump());
    let commands: Vec<&Value> = run.items("command_execution").collect();
    assert_eq!(commands.len(), 1, "{}", run.dump());
    assert_eq!(commands[0]["exit_code"], 0);
    assert_eq!(commands[0]["aggregated_output"], mock::TOOLS_CONTENT);
    let changes: Vec<&Value> = run.items("file_change").collect();
    assert_eq!(changes.len(), 1, "{}", run.dump());
    assert_eq!(changes[0]["changes"][0]["kind"], "add");
    let messages: Vec<&Value> = run.items("agent_message").collect();
    assert_eq!(messages.last().unwrap()["text"], mock::TOOLS_FINAL_TEXT);
    // One turn of three requests, its tokens summed; no cost.
    let done = run
        .of_type("turn.completed")
        .last()
        .expect("turn.completed");
    assert_eq!(done["usage"]["input_tokens"], 3 * mock::USAGE_INPUT);
    assert_eq!(done["usage"]["cached_input_tokens"], 3 * mock::USAGE_CACHED);
    assert_eq!(done["usage"]["output_tokens"], 3 * mock::USAGE_OUTPUT);
    assert!(
        run.raw.iter().all(|l| !l.contains("cost")),
        "{}",
        run.dump()
    );

    let reqs = mock.response_requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    assert!(reqs
        .iter()
        .all(|r| r.stream && r.model.as_deref() == Some(MODEL)));
    assert_eq!(
        reqs.iter().map(|r| r.tool_outputs).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(
        reqs[0].tools.iter().any(|t| t == "exec_command"),
        "{reqs:#?}"
    );
    assert!(
        reqs[0].tools.iter().any(|t| t == "apply_patch"),
        "{reqs:#?}"
    );
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some("Bearer sk-mock-not-a-key")
    );
    // Nothing but the Responses API was asked for.
    assert_eq!(mock.requests().len(), 3, "{:#?}", mock.requests());
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn cli_retries_a_429_and_goes_on_when_it_clears() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::RateLimitedOnce);
    let sb = sandbox(&mock);
    let run = run_cli(
        &bin,
        &sb,
        &codex_args(&sb, &[], "Go."),
        Duration::from_secs(120),
    );
    maybe_record("rate_limited_once", &sb, &run.raw);

    assert!(run.status.success(), "{}", run.dump());
    let errors: Vec<&str> = run
        .of_type("error")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.dump());
    assert!(
        errors[0].starts_with("Reconnecting... 1/"),
        "{}",
        run.dump()
    );
    assert!(errors[0].contains("429"), "{}", run.dump());
    assert_eq!(run.of_type("turn.completed").count(), 1, "{}", run.dump());
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn cli_gives_up_on_a_429_that_never_clears() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::RateLimited);
    let sb = sandbox(&mock);
    let run = run_cli(
        &bin,
        &sb,
        &codex_args(&sb, &[], "Go."),
        Duration::from_secs(180),
    );
    maybe_record("rate_limited", &sb, &run.raw);

    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    let retries = run
        .of_type("error")
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Reconnecting..."))
        })
        .count();
    assert_eq!(retries, 5, "{}", run.dump());
    let failed = turn_failed(&run);
    assert!(failed.contains("exceeded retry limit"), "{failed}");
    assert!(failed.contains("429"), "{failed}");
    assert_eq!(mock.response_requests().len(), 6);
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn cli_gives_up_on_server_errors() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::ServerError);
    let sb = sandbox(&mock);
    // Its defaults retry a 500 thirty times over about half a minute; one retry each way says
    // the same.
    let overrides = [
        "model_providers.loopd.request_max_retries=1",
        "model_providers.loopd.stream_max_retries=1",
    ];
    let run = run_cli(
        &bin,
        &sb,
        &codex_args(&sb, &overrides, "Go."),
        Duration::from_secs(120),
    );
    maybe_record("server_error", &sb, &run.raw);

    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    let failed = turn_failed(&run);
    assert!(failed.contains("high demand"), "{failed}");
    assert!(mock.response_requests().iter().all(|r| r.status == 500));
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn cli_stops_at_once_on_an_exhausted_quota() {
    let bin = codex_bin();
    for (scenario, words) in [
        (Scenario::Quota, "Quota exceeded"),
        (Scenario::UsageLimit, "usage limit"),
    ] {
        let mock = MockOpenAi::with(scenario);
        let sb = sandbox(&mock);
        let run = run_cli(
            &bin,
            &sb,
            &codex_args(&sb, &[], "Go."),
            Duration::from_secs(60),
        );
        maybe_record(scenario.name(), &sb, &run.raw);

        assert_eq!(run.status.code(), Some(1), "{}", run.dump());
        let failed = turn_failed(&run);
        assert!(failed.contains(words), "{failed}");
        // No retry.
        assert_eq!(mock.response_requests().len(), 1, "{:#?}", mock.requests());
    }
}

/// How long the hang test watches a silent CLI (`LOOPD_CODEX_HANG_SECS`, default 8).
fn hang_watch() -> Duration {
    let secs = std::env::var("LOOPD_CODEX_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn cli_goes_silent_on_a_stream_that_stops_midway() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::Hang);
    let sb = sandbox(&mock);
    let mut child = spawn_cli(&bin, &sb, &codex_args(&sb, &[], "Go."));
    let rx = line_reader(&mut child);
    let err = stderr_reader(&mut child);
    let mut raw = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) && mock.response_requests().is_empty() {
        while let Ok(line) = rx.try_recv() {
            raw.push(line);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "codex exited ({status:?}) before the hung request:\n{}",
                raw.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mock.response_requests().is_empty(), "{}", raw.join("\n"));
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
        raw.push(line);
    }
    match rx.recv_timeout(hang_watch()) {
        Ok(line) => panic!("expected silence, got: {line}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("stdout closed: codex exited instead of hanging")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {}
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "codex exited instead of hanging"
    );
    assert_eq!(
        raw.last()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].clone()),
        Some(Value::from("turn.started")),
        "{}",
        raw.join("\n")
    );
    maybe_record("hang", &sb, &raw);
    assert!(
        end_group(&mut child, Duration::from_secs(3)),
        "processes of the group survived"
    );
    let _ = err.join();
}

// ---------------------------------------------------------------------------------------------
// Through loopd: a fleet whose agent is the real CLI (the `codex` preset)
// ---------------------------------------------------------------------------------------------

/// The verify command of the fleet's one test: the files the mock's exec_command and apply_patch
/// calls make.
const VERIFY: &str =
    "grep -qx 'hello from the mock model' hello.txt && grep -qx 'written by apply_patch' notes.txt";

struct Fleet {
    _root: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    /// The key the loops' agents get: unique to this fleet, so that its processes can be found.
    key: String,
}

/// A fleet with the loops `names` (codex preset, the given CLI pointed at `mock`), each with one
/// test `hello`, and `extra` appended to the fleet file.
fn fleet(bin: &Path, mock: &MockOpenAi, names: &[&str], loop_keys: &str, extra: &str) -> Fleet {
    let root = tempfile::Builder::new()
        .prefix("loopd-codex-fleet")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = root.path().to_path_buf();
    let tests = serde_json::json!({"tests": [{
        "id": "hello",
        "title": "Write hello.txt and notes.txt",
        "spec": "Create hello.txt with the line 'hello from the mock model' and notes.txt with \
                 the line 'written by apply_patch'.",
        "verify": VERIFY,
    }]});
    std::fs::write(
        dir.join("tests.json"),
        serde_json::to_string_pretty(&tests).unwrap(),
    )
    .unwrap();
    let key = format!(
        "sk-mock-{}",
        mock.base_url()
            .rsplit(':')
            .next()
            .unwrap()
            .replace("/v1", "")
    );
    let mut text = String::from("[fleet]\nstate_dir = \"state\"\n");
    for name in names {
        text.push_str(&format!(
            r#"
[[loops]]
name = "{name}"
init_workdir = true
tests_file = "tests.json"
model = "{MODEL}"
iteration_timeout = "3m"
verify_timeout = "30s"
kill_grace = "1s"
{loop_keys}

[loops.env]
{KEY_ENV} = "{key}"

[loops.agent]
kind = "codex"
binary = {binary}
base_url = "{base_url}"
api_key_env = "{KEY_ENV}"
"#,
            binary = toml_str(bin.to_str().unwrap()),
            base_url = mock.base_url(),
        ));
    }
    text.push_str(extra);
    let config = dir.join("loopd.toml");
    std::fs::write(&config, text).unwrap();
    Fleet {
        _root: root,
        dir,
        config,
        key,
    }
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn loopd(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loopd"))
        .args(args)
        .current_dir(&fleet.dir)
        .env("LOOPD_CONFIG", &fleet.config)
        .env_remove("LOOPD_STATE_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run loopd")
}

/// `loopd run` with a time limit; returns its exit code and output.
fn loopd_run(fleet: &Fleet, limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopd"))
        .args(["run", fleet.config.to_str().unwrap()])
        .current_dir(&fleet.dir)
        .env_remove("LOOPD_STATE_DIR")
        .env_remove("LOOPD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn loopd run");
    let err = stderr_reader(&mut child);
    let out = {
        let mut so = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut so, &mut s);
            s
        })
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            end_group(&mut child, Duration::from_secs(2));
            panic!(
                "loopd run did not finish within {limit:?}:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        status.code(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    (status.code(), text)
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The loop `name` of `loopd status --json`.
fn status_loop(fleet: &Fleet, name: &str) -> Value {
    let out = loopd(fleet, &["status", fleet.config.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let doc = json_of(&out);
    doc["loops"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no loop `{name}` in {doc:#}"))
}

fn attempts(fleet: &Fleet, name: &str) -> Vec<Value> {
    let out = loopd(fleet, &["attempts", name, "--json"]);
    assert!(out.status.success(), "{out:?}");
    json_of(&out)["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Pids of live processes (not zombies) whose environment carries this fleet's key: the agents
/// and anything they started.
fn agent_processes(fleet: &Fleet) -> Vec<i32> {
    let needle = format!("{KEY_ENV}={}", fleet.key);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
        {
            continue;
        }
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Files and folders left in the state directory's transcripts folder of `name`'s test `hello`.
fn attempt_files(fleet: &Fleet, name: &str) -> Vec<String> {
    let dir = fleet.dir.join("state/transcripts").join(name).join("hello");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn loopd_passes_a_test_through_real_tool_calls_and_prices_its_tokens() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::Tools);
    // EXAMPLE prices of the test's own, not OpenAI's.
    let pricing = format!(
        "\n[pricing.\"{MODEL}\"]\ninput_usd_per_mtok = 1.25\ncached_input_usd_per_mtok = 0.125\n\
         output_usd_per_mtok = 10.0\n"
    );
    let fleet = fleet(
        &bin,
        &mock,
        &["real"],
        "max_attempts = 2\nstall_timeout = \"1m\"",
        &pricing,
    );
    let (code, out) = loopd_run(&fleet, Duration::from_secs(180));
    assert_eq!(code, Some(0), "{out}");

    let lp = status_loop(&fleet, "real");
    assert_eq!(lp["tests"][0]["status"], "passed", "{lp:#}");
    let attempts = attempts(&fleet, "real");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let a = &attempts[0];
    assert_eq!(a["outcome"], "passed", "{a:#}");
    assert_eq!(a["exit_code"], 0, "{a:#}");
    // Three requests' tokens, priced by the table: (3600 - 3000) x 1.25 + 3000 x 0.125 +
    // 126 x 10 dollars per million.
    assert_eq!(a["input_tokens"], 3 * mock::USAGE_INPUT, "{a:#}");
    assert_eq!(a["cached_input_tokens"], 3 * mock::USAGE_CACHED, "{a:#}");
    assert_eq!(a["output_tokens"], 3 * mock::USAGE_OUTPUT, "{a:#}");
    let cost = a["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.002385).abs() < 1e-9, "{a:#}");
    assert_ne!(a["cost_unknown"], true, "{a:#}");
    assert_eq!(a["summary"], mock::TOOLS_FINAL_TEXT, "{a:#}");

    // The transcript is the CLI's JSON lines; `logs` renders them for people.
    let transcript = std::fs::read_to_string(
        fleet
            .dir
            .join(a["transcript"].as_str().expect("transcript path")),
    )
    .unwrap();
    assert!(
        transcript.contains(r#""type":"command_execution""#),
        "{transcript}"
    );
    assert!(
        transcript.contains(r#""type":"file_change""#),
        "{transcript}"
    );
    let logs = loopd(&fleet, &["logs", "real"]);
    let logs_text = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "{logs:?}");
    assert!(logs_text.contains("→ $ "), "{logs_text}");
    assert!(logs_text.contains("→ add "), "{logs_text}");
    assert!(logs_text.contains(mock::TOOLS_FINAL_TEXT), "{logs_text}");
    assert!(
        !logs_text.lines().any(|l| l.starts_with("{\"type\"")),
        "{logs_text}"
    );

    // The model and key went where the fleet said; the agent's CODEX_HOME is gone with it.
    let reqs = mock.response_requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    assert!(reqs.iter().all(|r| r.model.as_deref() == Some(MODEL)));
    let bearer = format!("Bearer {}", fleet.key);
    assert!(reqs
        .iter()
        .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));
    let left = attempt_files(&fleet, "real");
    assert!(left.iter().all(|f| !f.ends_with(".home")), "{left:?}");
    assert!(agent_processes(&fleet).is_empty());
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn loopd_records_a_429_that_never_clears_as_an_uncounted_api_error() {
    let bin = codex_bin();
    // The first conversation gets only 429s (Codex gives up after five retries); the next works.
    let mock = MockOpenAi::start(&[Scenario::RateLimited, Scenario::Tools]);
    let fleet = fleet(
        &bin,
        &mock,
        &["real"],
        "max_attempts = 1\nstall_timeout = \"1m\"",
        "",
    );
    let (code, out) = loopd_run(&fleet, Duration::from_secs(300));
    assert_eq!(code, Some(0), "{out}");

    let attempts = attempts(&fleet, "real");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0]["outcome"], "api_error", "{attempts:#?}");
    assert_eq!(attempts[0]["counted"], false, "{attempts:#?}");
    let reason = attempts[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("HTTP 429"), "{reason}");
    // With max_attempts = 1 the pass proves the api_error was not counted.
    assert_eq!(attempts[1]["outcome"], "passed", "{attempts:#?}");
    // Unpriced tokens (no [pricing] entry) are a cost nobody knows, not a free attempt.
    assert_eq!(attempts[1]["cost_unknown"], true, "{attempts:#?}");
    assert_eq!(status_loop(&fleet, "real")["tests"][0]["status"], "passed");
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn loopd_pauses_every_openai_loop_on_an_exhausted_quota() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::Quota);
    let fleet = fleet(
        &bin,
        &mock,
        &["real", "other"],
        "max_attempts = 1\nstall_timeout = \"1m\"",
        "",
    );
    let (code, out) = loopd_run(&fleet, Duration::from_secs(120));
    // 3: stopped waiting on a condition that needs a person.
    assert_eq!(code, Some(3), "{out}");

    let all: Vec<Value> = ["real", "other"]
        .iter()
        .flat_map(|n| attempts(&fleet, n))
        .collect();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["outcome"], "out_of_credits", "{all:#?}");
    assert_eq!(all[0]["counted"], false, "{all:#?}");
    for name in ["real", "other"] {
        let lp = status_loop(&fleet, name);
        assert_eq!(lp["status"], "paused", "{lp:#}");
        assert_eq!(lp["reason"], "out_of_credits", "{lp:#}");
        assert_ne!(lp["tests"][0]["status"], "failed", "{lp:#}");
    }
    // Paused means no more calls: the one refused request is all the mock saw.
    assert_eq!(mock.response_requests().len(), 1, "{:#?}", mock.requests());
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn loopd_ends_a_silent_codex_as_stalled_with_its_native_process() {
    let bin = codex_bin();
    let mock = MockOpenAi::with(Scenario::Hang);
    let fleet = fleet(
        &bin,
        &mock,
        &["real"],
        "max_attempts = 1\nstall_timeout = \"4s\"",
        "",
    );
    let (code, out) = loopd_run(&fleet, Duration::from_secs(120));
    assert_eq!(code, Some(1), "{out}");

    let attempts = attempts(&fleet, "real");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["outcome"], "stalled", "{attempts:#?}");
    assert_eq!(attempts[0]["killed"], "stalled", "{attempts:#?}");
    assert_eq!(status_loop(&fleet, "real")["tests"][0]["status"], "failed");
    assert_eq!(mock.response_requests().len(), 1, "{:#?}", mock.requests());
    // Neither the node wrapper nor the native codex it started is left.
    let left = agent_processes(&fleet);
    assert!(left.is_empty(), "left alive: {left:?}");
}

#[test]
#[ignore = "needs the codex CLI: bash .ci/install-agents.sh codex (.ci/run runs it)"]
fn a_codex_home_left_by_a_killed_loopd_is_removed_at_the_next_start() {
    let bin = codex_bin();
    // The first conversation hangs (loopd is killed during it), the next one works.
    let mock = MockOpenAi::start(&[Scenario::Hang, Scenario::Tools]);
    let fleet = fleet(
        &bin,
        &mock,
        &["real"],
        "max_attempts = 2\nstall_timeout = \"1m\"",
        "",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopd"))
        .args(["run", fleet.config.to_str().unwrap()])
        .current_dir(&fleet.dir)
        .env_remove("LOOPD_STATE_DIR")
        .env_remove("LOOPD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn loopd run");
    let start = Instant::now();
    while mock.response_requests().is_empty() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !mock.response_requests().is_empty(),
        "codex never called the mock"
    );
    assert!(
        attempt_files(&fleet, "real").iter().any(|f| f == "1.home"),
        "{:?}",
        attempt_files(&fleet, "real")
    );
    // loopd dies at once; its agent lives on, in its own process group.
    let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();

    let (code, out) = loopd_run(&fleet, Duration::from_secs(180));
    assert_eq!(code, Some(0), "{out}");
    let attempts = attempts(&fleet, "real");
    assert_eq!(attempts[0]["outcome"], "interrupted", "{attempts:#?}");
    assert_eq!(
        attempts.last().unwrap()["outcome"],
        "passed",
        "{attempts:#?}"
    );
    let left = attempt_files(&fleet, "real");
    assert!(left.iter().all(|f| !f.ends_with(".home")), "{left:?}");
    // The hung codex of the killed run was ended by the next start.
    let alive = agent_processes(&fleet);
    assert!(alive.is_empty(), "left alive: {alive:?}");
}

// ---------------------------------------------------------------------------------------------
// The recorded samples (these run without the CLI)
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<Value> {
    let path = fixtures_dir().join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
        .collect()
}

#[test]
fn fixtures_hold_what_the_reader_relies_on() {
    for name in [
        "tools",
        "rate_limited_once",
        "rate_limited",
        "server_error",
        "quota",
        "usage_limit",
        "hang",
    ] {
        let lines = fixture(name);
        assert_eq!(lines[0]["type"], "thread.started", "{name}");
        assert_eq!(lines[1]["type"], "turn.started", "{name}");
        let last = lines.last().unwrap()["type"].as_str().unwrap().to_string();
        let expected = match name {
            "tools" | "rate_limited_once" => "turn.completed",
            "hang" => "turn.started",
            _ => "turn.failed",
        };
        assert_eq!(last, expected, "{name}");
    }
    let tools = fixture("tools");
    assert!(tools
        .iter()
        .any(|l| l["item"]["type"] == "command_execution" && l["item"]["exit_code"] == 0));
    assert!(tools.iter().any(|l| l["item"]["type"] == "file_change"));
}
