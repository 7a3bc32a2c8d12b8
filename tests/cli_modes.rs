//! One client, two modes: every read command says the same through a daemon as from the store,
//! the client finds the daemon (by the fleet file, from another folder by the default address),
//! the fleet file goes first or after `-c`, a missing fleet file is named as missing, write
//! commands without a daemon say what to run, `--all` and `all` reach every loop, and
//! `loopd shutdown` stops a daemon as SIGTERM does.

mod common;
mod serving;

use std::path::Path;
use std::sync::Mutex;

use common::{
    pid_alive, test_entry as test, wait_for_text, wait_until, Fleet, Run, Running, LOOP,
    RUN_TIMEOUT, WAIT,
};
use serde_json::{json, Value};
use serving::{token, Daemon};

/// The default address, where only one test at a time may listen or expect silence.
const DEFAULT_ADDR: &str = "127.0.0.1:7433";
static DEFAULT_PORT: Mutex<()> = Mutex::new(());

/// T1 passes, T2 fails for good with an error on stderr, T3 waits behind T2.
fn settled_fleet() -> Fleet {
    let fleet = Fleet::new()
        .tests(json!([
            test("T1", "test -f T1.done", &[]),
            test("T2", "echo 'error: no table users' >&2; exit 1", &[]),
            test("T3", "true", &["T2"]),
        ]))
        .agent("touch \"$LOOPD_TEST_ID.done\"\necho \"worked on $LOOPD_TEST_ID\"")
        .write();
    fleet.run().expect_code(1);
    fleet
}

/// `loopd ARGS` run in `dir` instead of the fleet's folder.
fn cmd_in(fleet: &Fleet, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = fleet.loopd(args);
    cmd.current_dir(dir).envs(env.iter().copied());
    Running::spawn(cmd).wait(RUN_TIMEOUT)
}

/// Read commands, each in a form a person types; their stdout must not depend on the mode.
const READS: &[&[&str]] = &[
    &["status", "--json"],
    &["status", "loopd.toml"],
    &["status", "main", "--json"],
    &["status", "main"],
    &["status", "loopd.toml", "main", "T2", "--json"],
    &["status", "main", "T2"],
    &["status", "main", "T3"],
    &["attempts", "main", "--json"],
    &["attempts", "main", "T2"],
    &["insights", "--json"],
    &["insights"],
    &["insights", "main", "--json"],
    &["export"],
    &["ls", "--json"],
    &["ls"],
];

fn read_all(fleet: &Fleet) -> Vec<Run> {
    READS
        .iter()
        .map(|args| {
            let run = fleet.cmd(args);
            assert_eq!(run.code(), 0, "loopd {args:?}\n{run}");
            run
        })
        .collect()
}

#[test]
fn every_read_command_says_the_same_with_and_without_a_daemon() {
    let fleet = settled_fleet();
    let run_started = fleet.loop_status()["started_at"].clone();
    let daemon = Daemon::start(&fleet, &[]);
    // The daemon restarts the loop, which settles again at once: read once it has.
    wait_until("the daemon's loop to settle", WAIT, || {
        let l = fleet.loop_status();
        l["started_at"] != run_started && l["status"] == "finished"
    });
    let with = read_all(&fleet);
    assert!(
        with[1].stderr.is_empty(),
        "a named fleet file needs no word on how the daemon was found: {}",
        with[1]
    );
    assert!(
        with[3].stderr.contains("using the daemon at 127.0.0.1:")
            && with[3].stderr.contains("./loopd.toml's daemon.json"),
        "{}",
        with[3]
    );
    assert!(with[0].stderr.is_empty(), "--json is quiet: {}", with[0]);
    // From another folder, LOOPD_ADDR names the daemon.
    let elsewhere = tempfile::tempdir().unwrap();
    let by_env = [("LOOPD_ADDR", daemon.addr.as_str())];
    let ls = cmd_in(&fleet, elsewhere.path(), &["ls"], &by_env);
    assert_eq!(ls.stdout, with[14].stdout, "{ls}");
    assert!(
        ls.stderr
            .contains(&format!("using the daemon at {} (LOOPD_ADDR)", daemon.addr)),
        "{ls}"
    );

    let stop = fleet.cmd(&["shutdown"]);
    assert_eq!(stop.code(), 0, "{stop}");
    assert!(stop.stdout.contains("has stopped"), "{stop}");
    assert_eq!(daemon.exit_code(), 0);

    let without = read_all(&fleet);
    assert!(
        without[3]
            .stderr
            .contains("no daemon is running for ./loopd.toml; reading its store"),
        "{}",
        without[3]
    );
    for ((args, a), b) in READS.iter().zip(&with).zip(&without) {
        assert_eq!(
            a.stdout,
            b.stdout,
            "`loopd {}` printed something else through the daemon than from the store",
            args.join(" ")
        );
    }

    // What the detail views say.
    let t2 = &without[5].stdout;
    assert!(t2.starts_with("main/T2: failed"), "{t2}");
    assert!(
        t2.lines()
            .any(|l| l.starts_with("T2 ") && l.contains("failed")),
        "{t2}"
    );
    assert!(t2.contains("error: no table users"), "the why-line: {t2}");
    let t3 = &without[6].stdout;
    assert!(t3.contains("depends on    T2"), "{t3}");
    assert!(t3.contains("blocked by"), "{t3}");
    let lp = &without[3].stdout;
    for want in [
        "state",
        "progress      1/3 passed",
        "workdir",
        "agent",
        "recent attempts:",
        "T2",
    ] {
        assert!(lp.contains(want), "`{want}` in:\n{lp}");
    }
    let detail: Value = serde_json::from_str(&without[2].stdout).unwrap();
    assert_eq!(detail["settings"]["max_attempts"], 1, "{detail:#}");
    let insights: Value = serde_json::from_str(&without[9].stdout).unwrap();
    assert_eq!(insights["patterns"][0]["count"], 1, "{insights:#}");
}

#[test]
fn the_fleet_file_goes_first_or_after_c_for_every_command() {
    let fleet = settled_fleet();
    let config = fleet.config_file();
    let abs = config.to_str().unwrap();
    let want = fleet
        .cmd(&["attempts", "loopd.toml", LOOP, "--json"])
        .json();
    assert_eq!(want["attempts"].as_array().unwrap().len(), 2, "{want:#}");
    let elsewhere = tempfile::tempdir().unwrap();
    for args in [
        &["attempts", LOOP, "-c", "loopd.toml", "--json"][..],
        &["-c", "loopd.toml", "attempts", LOOP, "--json"],
        &["attempts", LOOP, "--json"],
    ] {
        assert_eq!(fleet.cmd(args).json(), want, "loopd {args:?}");
    }
    for args in [
        &["attempts", abs, LOOP, "--json"][..],
        &["attempts", LOOP, "-c", abs, "--json"],
    ] {
        let run = cmd_in(&fleet, elsewhere.path(), args, &[]);
        assert_eq!(run.json(), want, "loopd {args:?} from another folder");
    }
    // A fleet file without `.toml` is known by the count: one word more than LOOP [TEST].
    std::fs::copy(&config, fleet.root().join("fleet")).unwrap();
    assert_eq!(
        fleet
            .cmd(&["attempts", "fleet", LOOP, "T1", "--json"])
            .json(),
        fleet.cmd(&["attempts", LOOP, "T1", "--json"]).json()
    );
    assert_eq!(
        fleet.cmd(&["status", "./fleet", LOOP, "--json"]).json(),
        fleet
            .cmd(&["status", LOOP, "-c", "loopd.toml", "--json"])
            .json()
    );
    let none = fleet.cmd(&["attempts", "loopd.toml"]);
    assert_eq!(none.code(), 2, "{none}");
    assert!(
        none.stderr
            .contains("expected [CONFIG] LOOP [TEST], got `loopd.toml`"),
        "{none}"
    );
    let unknown = fleet.cmd(&["status", "nosuch"]);
    assert_eq!(unknown.code(), 2, "{unknown}");
    assert!(
        unknown.stderr.contains("no loop named `nosuch`"),
        "{unknown}"
    );
}

#[test]
fn a_missing_fleet_file_is_reported_as_missing() {
    let fleet = Fleet::new().write();
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["validate", "nope.toml"][..],
        &["run", "nope.toml"],
        &["serve", "nope.toml"],
        &["recover", "nope.toml"],
        &["status", "nope.toml"],
        &["export", "nope.toml"],
        &["attempts", "nope.toml", LOOP],
        &["insights", "nope.toml"],
        &["top", "nope.toml"],
        &["-c", "nope.toml", "start", LOOP],
        &["shutdown", "nope.toml"],
    ] {
        let run = cmd_in(&fleet, empty.path(), args, &[]);
        assert_eq!(run.code(), 2, "loopd {args:?}\n{run}");
        assert!(
            run.stderr.contains("no fleet file found (tried nope.toml)"),
            "loopd {args:?}\n{run}"
        );
        assert!(!run.stderr.contains("problem"), "loopd {args:?}\n{run}");
    }
    let run = cmd_in(&fleet, empty.path(), &["validate"], &[]);
    assert_eq!(run.code(), 2, "{run}");
    assert!(
        run.stderr
            .contains("no fleet file found (tried ./loopd.toml (the default"),
        "{run}"
    );
    // Without a fleet file a client asks the default address; nothing answers there.
    let _port = DEFAULT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    if std::net::TcpStream::connect(DEFAULT_ADDR).is_ok() {
        eprintln!("skipping the default-address half: something else listens on {DEFAULT_ADDR}");
        return;
    }
    let run = cmd_in(&fleet, empty.path(), &["status"], &[]);
    assert_eq!(run.code(), 2, "{run}");
    assert!(
        run.stderr.contains(
            "no fleet file found (tried ./loopd.toml) and no daemon answers at 127.0.0.1:7433"
        ),
        "{run}"
    );
}

#[test]
fn write_commands_without_a_daemon_say_what_to_run() {
    let fleet = settled_fleet();
    for args in [
        &["start", LOOP][..],
        &["stop", "--all"],
        &["pause", "all"],
        &["resume", LOOP],
        &["reset", LOOP, "T2"],
        &["skip", "loopd.toml", LOOP, "T2"],
        &[
            "add-test",
            LOOP,
            r#"{"id": "T9", "title": "t", "spec": "s", "verify": "true"}"#,
        ],
        &["new", "other", "--template", "t"],
        &["shutdown"],
    ] {
        let run = fleet.cmd(args);
        assert_eq!(run.code(), 1, "loopd {args:?}\n{run}");
        assert!(
            run.stderr.contains("no daemon is running for")
                && run.stderr.contains("no live daemon.json in")
                && run
                    .stderr
                    .contains("start one with `loopd serve loopd.toml`"),
            "loopd {args:?}\n{run}"
        );
    }
}

/// The pid the agent wrote to `agent.pid`, once it has.
fn agent_pid(fleet: &Fleet) -> i32 {
    let file = fleet.root().join("agent.pid");
    wait_for_text(&file, "\n");
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Two loops whose agents wait for `go` in the fleet's folder, served.
fn two_waiting_loops() -> (Fleet, Daemon) {
    let fleet = Fleet::new()
        .tests(json!([test("T1", "test -f T1.done", &[])]))
        .agent(
            "echo $$ >> \"$ROOT/agents.pid\"\n\
             while [ ! -f \"$ROOT/go\" ]; do sleep 0.05; done\n\
             touch \"$LOOPD_TEST_ID.done\"",
        )
        .write();
    let mut toml = std::fs::read_to_string(fleet.config_file())
        .unwrap()
        .replace("[fleet]\n", "[fleet]\nmax_concurrent_agents = 2\n");
    toml.push_str(
        "\n[[loops]]\nname = \"second\"\nworkdir = \"work2\"\ninit_workdir = true\n\
         tests_file = \"tests.json\"\nmax_attempts = 1\n\
         [loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n",
    );
    std::fs::write(fleet.config_file(), toml).unwrap();
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("both loops to run an attempt", WAIT, || {
        let status = fleet.status();
        status["loops"]
            .as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().all(|l| l["current_test"] == "T1"))
    });
    (fleet, daemon)
}

fn states(fleet: &Fleet) -> Vec<String> {
    fleet.status()["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn all_and_dash_dash_all_reach_every_loop() {
    let (fleet, daemon) = two_waiting_loops();
    let paused = fleet.cmd(&["pause", "--all", "--json"]).json();
    let names: Vec<&str> = paused["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "second"], "{paused:#}");
    assert_eq!(states(&fleet), ["paused", "paused"]);
    let resumed = fleet.cmd(&["resume", "all"]);
    assert_eq!(resumed.code(), 0, "{resumed}");
    // One table: its header, then a row per loop.
    assert_eq!(
        resumed.stdout.lines().skip(1).count(),
        2,
        "a row per loop: {resumed}"
    );
    assert!(states(&fleet).iter().all(|s| s != "paused"));
    let stopped = fleet.cmd(&["stop", "loopd.toml", "all"]);
    assert_eq!(stopped.code(), 0, "{stopped}");
    assert_eq!(states(&fleet), ["stopped", "stopped"]);
    let started = fleet.cmd(&["start", "--all", "--json"]).json();
    assert_eq!(started["loops"].as_array().unwrap().len(), 2);
    assert!(states(&fleet).iter().all(|s| s != "stopped"));
    let both = fleet.cmd(&["pause", "--all", LOOP]);
    assert_eq!(both.code(), 2, "{both}");
    assert!(both.stderr.contains("--all and the loop `main`"), "{both}");
    let neither = fleet.cmd(&["stop"]);
    assert_eq!(neither.code(), 2, "{neither}");
    assert!(
        neither.stderr.contains("or `--all` for every loop"),
        "{neither}"
    );
    assert_eq!(fleet.cmd(&["shutdown"]).code(), 0);
    assert_eq!(daemon.exit_code(), 0);
}

#[test]
fn shutdown_ends_the_daemon_like_sigterm_and_leaves_the_store_readable() {
    let fleet = Fleet::new()
        .tests(json!([
            test("T1", "test -f T1.done", &[]),
            test("T2", "test -f T2.done", &["T1"]),
        ]))
        .agent(
            "if [ \"$LOOPD_TEST_ID\" = T2 ]; then echo $$ > \"$ROOT/agent.pid\"; sleep 600; fi\n\
             touch \"$LOOPD_TEST_ID.done\"",
        )
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("T2 to run", WAIT, || {
        fleet.loop_status()["current_test"] == "T2"
    });
    let agent = agent_pid(&fleet);
    let t1 = fleet.cmd(&["status", LOOP, "T1", "--json"]).json();
    // Only the daemon knows how long ago the running agent last printed.
    let live = fleet.cmd(&["status", "loopd.toml", LOOP]);
    assert!(
        live.stdout.contains("now           T2 attempt 1, running")
            && live.stdout.contains("last output"),
        "{live}"
    );

    let stop = fleet.cmd(&["shutdown", "loopd.toml"]);
    assert_eq!(stop.code(), 0, "{stop}");
    assert!(stop.stderr.contains("is shutting down"), "{stop}");
    assert!(stop.stdout.contains("has stopped"), "{stop}");
    assert_eq!(daemon.exit_code(), 0);
    assert!(!pid_alive(agent), "the agent {agent} outlived the daemon");
    assert!(!fleet.state_dir().join("daemon.json").exists());

    // The store was flushed: read without a daemon, it says what the daemon said.
    assert_eq!(fleet.cmd(&["status", LOOP, "T1", "--json"]).json(), t1);
    let t2 = fleet.cmd(&["status", LOOP, "T2", "--json"]).json();
    assert_eq!(t2["attempts"][0]["outcome"], "interrupted", "{t2:#}");
    assert_eq!(t2["status"], "pending", "{t2:#}");
}

#[test]
fn shutdown_ends_a_run_as_sigterm_does() {
    let fleet = Fleet::new()
        .tests(json!([test("T1", "test -f T1.done", &[])]))
        .agent("echo $$ > \"$ROOT/agent.pid\"; sleep 600")
        .write();
    let run = fleet.spawn_run();
    wait_for_text(&fleet.state_dir().join("daemon.json"), "\"addr\"");
    let agent = agent_pid(&fleet);
    let stop = fleet.cmd(&["shutdown"]);
    assert_eq!(stop.code(), 0, "{stop}");
    let run = run.wait(RUN_TIMEOUT);
    assert_eq!(run.code(), 130, "interrupted, as by SIGTERM: {run}");
    assert!(
        run.stderr.contains("shutdown asked through the API"),
        "{run}"
    );
    assert!(!pid_alive(agent), "the agent {agent} outlived the run");
    assert_eq!(fleet.attempts("T1")[0]["outcome"], "interrupted");
}

#[test]
fn a_daemon_on_the_default_address_is_found_from_another_folder() {
    let _port = DEFAULT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    if std::net::TcpListener::bind(DEFAULT_ADDR).is_err() {
        eprintln!("skipping: {DEFAULT_ADDR} (loopd's default address) is taken by another process");
        return;
    }
    let fleet = settled_fleet();
    let run_started = fleet.loop_status()["started_at"].clone();
    let daemon = Daemon::start_on(&fleet, DEFAULT_ADDR, &[]);
    wait_until("the daemon's loop to settle", WAIT, || {
        let l = fleet.loop_status();
        l["started_at"] != run_started && l["status"] == "finished"
    });
    let elsewhere = tempfile::tempdir().unwrap();
    let here = fleet.cmd(&["status", "loopd.toml", "--json"]).json();
    let there = cmd_in(&fleet, elsewhere.path(), &["status", "--json"], &[]);
    assert!(there.stderr.is_empty(), "--json is quiet: {there}");
    assert_eq!(there.json(), here);
    let ls = cmd_in(&fleet, elsewhere.path(), &["ls"], &[]);
    assert_eq!(ls.code(), 0, "{ls}");
    assert!(
        ls.stderr
            .contains("loopd: using the daemon at 127.0.0.1:7433 (default address)"),
        "{ls}"
    );
    // A daemon known by its address alone gets no token from a file: LOOPD_TOKEN it is.
    let refused = cmd_in(&fleet, elsewhere.path(), &["shutdown"], &[]);
    assert_eq!(refused.code(), 2, "{refused}");
    assert!(refused.stderr.contains("unauthorized"), "{refused}");
    let token = token(&fleet);
    let stop = cmd_in(
        &fleet,
        elsewhere.path(),
        &["shutdown"],
        &[("LOOPD_TOKEN", token.trim())],
    );
    assert_eq!(stop.code(), 0, "{stop}");
    assert!(
        stop.stdout
            .contains("the daemon at http://127.0.0.1:7433 has stopped"),
        "{stop}"
    );
    assert_eq!(daemon.exit_code(), 0);
}
