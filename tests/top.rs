//! `loopd top` against the built binary and a real `loopd serve`: the full-screen view in a
//! real terminal (tmux, 80x24, its own server socket), driven by keys and read off the pane
//! (live changes, pause, hint, reset after a yes, a wrong token, quitting and SIGTERM with the
//! terminal restored, a daemon restarted under it); and the line-per-event mode with stdout
//! piped, into a file and into a pipe that closes.
//!
//! Each test starts its own tmux server, on a socket in its fleet's temporary folder
//! (`tmux -S`: no other tmux is ever addressed, and nothing is left in /tmp), and kills only
//! that server.

mod common;
mod serving;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{wait_until, Fleet, LOOP, WAIT};
use serde_json::{json, Value};
use serving::{http, token, Daemon};

/// A tmux server of this test's own, with one 80x24 session running a shell command.
struct Tmux {
    socket: std::path::PathBuf,
    root: std::path::PathBuf,
}

impl Tmux {
    /// `command` in a detached 80x24 session, in the fleet's folder.
    fn start(fleet: &Fleet, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: fleet.root().join("tmux.sock"),
            root: fleet.root().to_path_buf(),
        };
        let root = fleet.root().display().to_string();
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-c",
            &root,
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .current_dir(&self.root)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs (installed by .ci/run)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// Keys by tmux's names (`Enter`, `Tab`, `q`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Text typed as it is.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-l", text]);
    }

    /// Waits until the pane shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let mut last = String::new();
        let mut found = false;
        for _ in 0..(WAIT.as_millis() / 50) {
            last = self.screen();
            if last.contains(needle) {
                found = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(found, "the pane never showed `{needle}`; it shows\n{last}");
        last
    }

    /// tmux's format `what` of the pane (`#{alternate_on}`).
    fn pane(&self, what: &str) -> String {
        self.run(&["display-message", "-p", what])
            .trim()
            .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `loopd top` in the pane, then how it ended: its exit code, and whether the terminal is
/// back in canonical mode with echo. The pane stays open to be read.
fn top_command() -> String {
    top_command_with("")
}

/// [`top_command`] with `env` (`NAME=VALUE `...) set for loopd.
fn top_command_with(env: &str) -> String {
    let mut unset = String::new();
    for var in [
        "LOOPD_CONFIG",
        "LOOPD_ADDR",
        "LOOPD_TOKEN",
        "LOOPD_STATE_DIR",
        "NO_COLOR",
    ] {
        unset.push_str(&format!("-u {var} "));
    }
    format!(
        "env {unset}{env}{} top loopd.toml; echo \"TOP-EXITED $?\"; \
         echo \"TTY $(stty -a | grep -ow -- '-\\?icanon') $(stty -a | grep -ow -- '-\\?echo')\"; \
         sleep 600",
        common::loopd_bin()
    )
}

/// T1 passes once `go-T1` exists, T2 once `go-T2` does; the agent says what it waits for.
fn waiting_fleet() -> Fleet {
    Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "first", "spec": "s", "verify": "test -f T1.done"},
            {"id": "T2", "title": "second", "spec": "s", "verify": "test -f T2.done"}
        ]))
        .agent(
            "echo \"agent waits for go-$LOOPD_TEST_ID\"\n\
             while [ ! -f \"$ROOT/go-$LOOPD_TEST_ID\" ]; do sleep 0.05; done\n\
             echo \"agent got go-$LOOPD_TEST_ID\"\n\
             touch \"$LOOPD_TEST_ID.done\"",
        )
        .write()
}

fn loop_json(daemon: &Daemon) -> Value {
    http()
        .get(daemon.url(&format!("/api/loops/{LOOP}")))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
#[ignore = "needs tmux (.ci/run installs it)"]
fn top_shows_the_fleet_live_and_acts_by_key_in_80_by_24() {
    let fleet = waiting_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    let tmux = Tmux::start(&fleet, &top_command());

    // The loop, its running attempt and the agent's words, with no key pressed.
    let screen = tmux.wait_for("agent waits for go-T1");
    assert!(screen.contains(LOOP), "{screen}");
    assert!(screen.contains("T1#1"), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "a full-screen view");

    // A state change shows without a key press: T1 passes, T2 runs.
    std::fs::write(fleet.root().join("go-T1"), "").unwrap();
    tmux.wait_for("agent waits for go-T2");
    tmux.wait_for("T2#1");
    let screen = tmux.wait_for("1/2");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("passed") && l.contains("T1")),
        "{screen}"
    );

    // `p` pauses the selected loop (the only one), as the API says.
    tmux.keys(&["p"]);
    wait_until("the loop to be paused", WAIT, || {
        loop_json(&daemon)["status"] == "paused"
    });
    tmux.wait_for("paused");

    // `h`, text, Enter: the loop's hint.
    tmux.keys(&["h"]);
    tmux.type_text("try the cache");
    tmux.wait_for("hint main> try the cache");
    tmux.keys(&["Enter"]);
    wait_until("the hint to be stored", WAIT, || {
        loop_json(&daemon)["hint"]["text"] == "try the cache"
    });
    tmux.wait_for("hint main: done");

    // `q` quits, and the terminal is as it was: the normal screen, the cursor, a cooked tty.
    tmux.keys(&["q"]);
    tmux.wait_for("TOP-EXITED 0");
    let screen = tmux.wait_for("TTY ");
    assert!(screen.contains("TTY icanon echo"), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on} #{cursor_flag}"), "0 1");
    assert!(!screen.contains("LOOP"), "the view is gone\n{screen}");
    drop(tmux);
    assert_eq!(daemon.terminate(), 0);
}

#[test]
#[ignore = "needs tmux (.ci/run installs it)"]
fn top_resets_a_test_after_a_yes_and_restores_the_terminal_on_sigterm() {
    let fleet = waiting_fleet();
    std::fs::write(fleet.root().join("go-T1"), "").unwrap();
    let daemon = Daemon::start(&fleet, &[]);
    let tmux = Tmux::start(&fleet, &top_command());
    tmux.wait_for("agent waits for go-T2");

    // In the tests pane, the passed T1: `R` asks, `n` leaves it, `R` `y` resets it.
    tmux.keys(&["Tab", "Up"]);
    tmux.keys(&["R"]);
    tmux.wait_for("reset main/T1? y/n");
    tmux.keys(&["n"]);
    tmux.wait_for("reset main/T1: not done");
    let passed = |daemon: &Daemon| {
        loop_json(daemon)["tests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "T1" && t["status"] == "passed")
    };
    assert!(passed(&daemon));
    tmux.keys(&["R"]);
    tmux.wait_for("reset main/T1? y/n");
    tmux.keys(&["y"]);
    tmux.wait_for("reset main/T1: done");
    wait_until("T1 to be reset", WAIT, || !passed(&daemon));

    // SIGTERM to loopd top: it ends with 130 and the terminal is restored.
    let shell: i32 = tmux.pane("#{pane_pid}").parse().unwrap();
    let top = child_of(shell).expect("loopd top runs under the pane's shell");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(top),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tmux.wait_for("TOP-EXITED 130");
    let screen = tmux.wait_for("TTY ");
    assert!(screen.contains("TTY icanon echo"), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on} #{cursor_flag}"), "0 1");
    drop(tmux);
    assert_eq!(daemon.terminate(), 0);
}

/// The first child of `pid` (`env` execs loopd, so the shell's child is loopd itself).
fn child_of(pid: i32) -> Option<i32> {
    let mut found = None;
    wait_until("the pane's shell to have a child", WAIT, || {
        found = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok());
        found.is_some()
    });
    found
}

/// Pauses and resumes the loop until `out` has a line; the stream carries only what happens
/// after the follower connected, and nothing else tells when that was.
fn until_a_line(daemon: &Daemon, fleet: &Fleet, out: &std::path::Path) {
    let token = token(fleet);
    let mut pause = true;
    wait_until("a first line of loopd top", WAIT, || {
        let action = if pause { "pause" } else { "resume" };
        pause = !pause;
        let _ = http()
            .post(daemon.url(&format!("/api/loops/{LOOP}/{action}")))
            .bearer_auth(&token)
            .send();
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::read_to_string(out).is_ok_and(|t| !t.is_empty())
    });
    let _ = http()
        .post(daemon.url(&format!("/api/loops/{LOOP}/resume")))
        .bearer_auth(&token)
        .send();
}

/// `HH:MM:SS LOOP TEST EVENT MESSAGE`.
fn plain_line(line: &str) -> bool {
    let parts: Vec<&str> = line.splitn(5, ' ').collect();
    let b = line.as_bytes();
    parts.len() == 5
        && b.len() > 8
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
        && parts[1] == LOOP
        && !parts[3].is_empty()
}

#[test]
fn top_off_a_terminal_prints_a_line_per_event_until_the_daemon_shuts_down() {
    let fleet = waiting_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    let out = fleet.root().join("top.out");
    let err = fleet.root().join("top.err");
    let mut top = fleet
        .loopd(&["top", "loopd.toml"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    until_a_line(&daemon, &fleet, &out);
    std::fs::write(fleet.root().join("go-T1"), "").unwrap();
    common::wait_for_text(&out, "main T1 test_passed T1 passed");
    common::wait_for_text(&out, "main T2 attempt_started");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(" main - loop_state "), "{text}");
    assert!(
        text.contains(" main T1 attempt_finished attempt 1 of T1: passed"),
        "{text}"
    );
    assert!(text.lines().all(plain_line), "one event a line\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes into a file\n{text}"
    );

    // The daemon stops: so does top, with 0, saying why.
    assert_eq!(daemon.terminate(), 0);
    let mut status = None;
    wait_until("loopd top to end", WAIT, || {
        status = top.try_wait().unwrap();
        status.is_some()
    });
    let said = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{said}");
    assert!(said.contains("loopd top: the daemon shut down"), "{said}");
}

#[test]
fn top_into_a_pipe_that_closes_ends_quietly() {
    let fleet = waiting_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    let err = fleet.root().join("top.err");
    let mut top = fleet
        .loopd(&["top", "loopd.toml", "--plain"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(top.stdout.take().unwrap());
    let token = token(&fleet);
    let mut first = String::new();
    // The first line, as `head -1` would read it; then the reader goes.
    let reading = std::thread::spawn(move || {
        reader.read_line(&mut first).unwrap();
        first
    });
    let mut pause = true;
    wait_until("a first line", WAIT, || {
        let action = if pause { "pause" } else { "resume" };
        pause = !pause;
        let _ = http()
            .post(daemon.url(&format!("/api/loops/{LOOP}/{action}")))
            .bearer_auth(&token)
            .send();
        std::thread::sleep(std::time::Duration::from_millis(100));
        reading.is_finished()
    });
    let first = reading.join().unwrap();
    assert!(plain_line(first.trim_end()), "{first}");
    // More events (the test passes, and the loop is paused and resumed until top is gone):
    // the next write finds the pipe closed, and top ends as `head` expects.
    std::fs::write(fleet.root().join("go-T1"), "").unwrap();
    let mut status = None;
    wait_until("loopd top to end", WAIT, || {
        let action = if pause { "pause" } else { "resume" };
        pause = !pause;
        let _ = http()
            .post(daemon.url(&format!("/api/loops/{LOOP}/{action}")))
            .bearer_auth(&token)
            .send();
        status = top.try_wait().unwrap();
        status.is_some()
    });
    use std::os::unix::process::ExitStatusExt;
    let status = status.unwrap();
    let said = std::fs::read_to_string(&err).unwrap();
    assert!(
        status.signal() == Some(nix::libc::SIGPIPE) || status.code() == Some(0),
        "{status:?}\n{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(daemon.terminate(), 0);
}

#[test]
#[ignore = "needs tmux (.ci/run installs it)"]
fn top_follows_a_daemon_restarted_on_its_address_from_where_it_left() {
    let fleet = waiting_fleet();
    // A port probed free, so that the second daemon listens where the first did.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_on(&fleet, &bind, &[]);
    let tmux = Tmux::start(&fleet, &top_command());
    tmux.wait_for("agent waits for go-T1");

    assert_eq!(daemon.terminate(), 0);
    tmux.wait_for("the daemon shut down");
    // While no daemon runs, T1 gets what it waits for; the next daemon retries it and it
    // passes, before or after top is back: the journal from its last event fills the gap.
    std::fs::write(fleet.root().join("go-T1"), "").unwrap();
    let daemon = Daemon::start_on(&fleet, &bind, &[]);
    tmux.wait_for("agent waits for go-T2");
    tmux.wait_for("T2#1");
    let screen = tmux.wait_for("1/2");
    assert!(screen.contains("· live"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("passed") && l.contains("T1")),
        "{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("TOP-EXITED 0");
    drop(tmux);
    assert_eq!(daemon.terminate(), 0);
}

#[test]
#[ignore = "needs tmux (.ci/run installs it)"]
fn top_with_a_wrong_token_changes_nothing_and_says_why() {
    let fleet = waiting_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    let tmux = Tmux::start(&fleet, &top_command_with("LOOPD_TOKEN=not-the-token "));
    tmux.wait_for("agent waits for go-T1");
    tmux.keys(&["p"]);
    let screen = tmux.wait_for("pause main: ");
    let said = screen.lines().last().unwrap_or_default().to_string();
    assert!(!said.contains("done"), "{screen}");
    assert!(said.contains("token"), "the refusal says why\n{screen}");
    tmux.keys(&["h"]);
    tmux.type_text("ignore the tests");
    tmux.keys(&["Enter"]);
    tmux.wait_for("hint main: ");
    let view = loop_json(&daemon);
    assert_eq!(view["status"], "running", "{view}");
    assert!(view["hint"].is_null(), "{view}");
    tmux.keys(&["q"]);
    tmux.wait_for("TOP-EXITED 0");
    drop(tmux);
    assert_eq!(daemon.terminate(), 0);
}

#[test]
#[ignore = "needs tmux (.ci/run installs it)"]
fn top_without_a_daemon_says_what_to_run_on_a_terminal_and_off_one() {
    let fleet = waiting_fleet();
    let plain = fleet.cmd(&["top", "loopd.toml"]);
    plain.expect_code(1);
    assert!(
        plain.stderr.contains("start one with `loopd serve"),
        "{plain}"
    );
    let tmux = Tmux::start(&fleet, &top_command());
    let screen = tmux.wait_for("TOP-EXITED 1");
    assert!(screen.contains("start one with `loopd serve"), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0");
}
