//! How the CLI's output reads, end to end against the built binary: tables that fit the width
//! without shifting columns, colour only where asked, singular and plural, the run summary of a
//! fleet with history, completions, the man page, and a reader that goes away early.

mod common;

use std::process::Stdio;

use common::{Fleet, Run, RUN_TIMEOUT};
use serde_json::json;

/// A loop name longer than any column of an 80-column table can hold.
const LONG: &str = "a-loop-whose-name-is-far-too-long-for-any-column-of-eighty-wide";

/// Every agent run changes the tree, so a failure has a diff to save.
const AGENT: &str = "echo \"$RANDOM\" >> notes.txt";

/// A fleet of one loop named `name`: T1 passes, T2 fails (its diff saved).
fn fleet_named(name: &str) -> Fleet {
    let fleet = Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "passes", "spec": "s", "verify": "true"},
            {"id": "T2", "title": "fails", "spec": "s", "verify": "echo nope; false"},
        ]))
        .agent(AGENT)
        .write();
    let toml = std::fs::read_to_string(fleet.config_file()).unwrap();
    let toml = toml.replace("name = \"main\"", &format!("name = \"{name}\""));
    std::fs::write(fleet.config_file(), toml).unwrap();
    fleet
}

/// `loopd ARGS` with extra environment variables.
fn cmd_env(fleet: &Fleet, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = fleet.loopd(args);
    cmd.env_remove("NO_COLOR").env_remove("COLUMNS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::Running::spawn(cmd).wait(RUN_TIMEOUT)
}

/// The column (in characters) where `word` starts in `line`.
fn column_of(line: &str, word: &str) -> usize {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in {line:?}"));
    line[..at].chars().count()
}

fn assert_fits(text: &str, width: usize) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= width,
            "a line is wider than {width} columns: {line:?}\n{text}"
        );
    }
}

/// The first line of `run`'s stdout that starts with `start`.
fn line_starting(run: &Run, start: &str) -> String {
    run.stdout
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?}\n{run}"))
        .to_string()
}

#[test]
fn a_long_loop_name_is_cut_in_an_80_column_table_and_no_column_shifts() {
    let fleet = fleet_named(LONG);
    fleet.run().expect_code(1);
    let at80 = [("COLUMNS", "80")];

    let ls = cmd_env(&fleet, &["ls"], &at80);
    ls.expect_code(0);
    assert_fits(&ls.stdout, 80);
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert!(lines[1].contains('…'), "the long name is not cut\n{ls}");
    assert_eq!(
        column_of(lines[0], "STATE"),
        column_of(lines[1], "finished"),
        "{ls}"
    );

    let status = cmd_env(&fleet, &["status"], &at80);
    status.expect_code(0);
    assert_fits(&status.stdout, 80);
    let lines: Vec<&str> = status.stdout.lines().collect();
    let header = lines.iter().find(|l| l.contains("STATUS")).unwrap();
    let t1 = lines
        .iter()
        .find(|l| l.trim_start().starts_with("T1"))
        .unwrap();
    let t2 = lines
        .iter()
        .find(|l| l.trim_start().starts_with("T2"))
        .unwrap();
    assert_eq!(
        column_of(header, "STATUS"),
        column_of(t1, "passed"),
        "{status}"
    );
    assert_eq!(column_of(t1, "passed"), column_of(t2, "failed"), "{status}");

    let attempts = cmd_env(&fleet, &["attempts", LONG], &at80);
    attempts.expect_code(0);
    assert_fits(&attempts.stdout, 80);
    let lines: Vec<&str> = attempts.stdout.lines().collect();
    let t1 = lines.iter().find(|l| l.starts_with("T1 ")).unwrap();
    let t2 = lines.iter().find(|l| l.starts_with("T2 ")).unwrap();
    assert_eq!(column_of(lines[0], "OUTCOME"), column_of(t1, "passed"));
    assert_eq!(
        column_of(t1, "passed"),
        column_of(t2, "failed"),
        "{attempts}"
    );
    assert_eq!(column_of(t1, "$0"), column_of(t2, "$0"), "{attempts}");
}

#[test]
fn a_failed_attempts_saved_diff_is_labelled_and_never_shown_as_a_checkpoint() {
    let fleet = fleet_named("main");
    fleet.run().expect_code(1);
    let failed = &fleet.attempts("T2")[0];
    let saved = failed["commit"]
        .as_str()
        .expect("the failure's diff is saved");
    let passed = fleet.attempts("T1")[0]["commit"]
        .as_str()
        .unwrap()
        .to_string();

    let out = cmd_env(&fleet, &["attempts", "main"], &[]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].contains("CHECKPOINT"), "{out}");
    assert!(!lines[0].contains("COMMIT"), "{out}");
    let t1 = lines.iter().position(|l| l.starts_with("T1 ")).unwrap();
    let t2 = lines.iter().position(|l| l.starts_with("T2 ")).unwrap();
    assert!(lines[t1].contains(&passed[..10]), "the checkpoint\n{out}");
    assert!(!lines[t2].contains(&saved[..10]), "in the row\n{out}");
    assert!(
        lines[t2 + 1..]
            .iter()
            .any(|l| l.trim_start().starts_with(&format!(
                "diff saved at refs/loopd/attempts/T2/1 ({})",
                &saved[..10]
            ))),
        "{out}"
    );
}

#[test]
fn colour_only_on_a_terminal_or_when_asked_and_never_with_no_color() {
    let fleet = fleet_named("main");
    fleet.run().expect_code(1);
    const ESC: &str = "\x1b[";
    for (args, env) in [
        (&["ls"][..], &[][..]),
        (&["ls"][..], &[("NO_COLOR", "1")][..]),
        (&["ls", "--color", "never"][..], &[][..]),
        (&["--color", "auto", "attempts", "main"][..], &[][..]),
        (&["status", "--color", "never"][..], &[][..]),
    ] {
        let out = cmd_env(&fleet, args, env);
        out.expect_code(0);
        assert!(!out.stdout.contains(ESC), "{args:?} {env:?}: {out}");
    }
    for (args, env) in [
        (&["ls", "--color", "always"][..], &[][..]),
        (&["--color", "always", "attempts", "main"][..], &[][..]),
        // The flag is the nearer wish: it wins over NO_COLOR (as no-color.org asks).
        (
            &["status", "--color", "always"][..],
            &[("NO_COLOR", "1")][..],
        ),
    ] {
        let out = cmd_env(&fleet, args, env);
        out.expect_code(0);
        assert!(out.stdout.contains(ESC), "{args:?} {env:?}: {out}");
    }
    let bad = cmd_env(&fleet, &["ls", "--color", "sometimes"], &[]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("--color"), "{bad}");
}

#[test]
fn one_attempt_is_singular_and_a_second_run_tells_this_run_from_the_totals() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "t", "spec": "s", "verify": "true"}]))
        .agent(AGENT)
        .write();
    let first = fleet.run();
    first.expect_code(0);
    assert!(
        line_starting(&first, "This run (").ends_with("1 attempt: 1 pass, 0 failures, $0.0000"),
        "{first}"
    );
    let status = cmd_env(&fleet, &["status"], &[]);
    assert!(status.stdout.contains(" 1 attempt "), "{status}");
    assert!(!status.stdout.contains("1 attempts"), "{status}");

    // A second run on the same fleet: one more test, one more attempt.
    let fleet = fleet.tests(json!([
        {"id": "T1", "title": "t", "spec": "s", "verify": "true"},
        {"id": "T2", "title": "u", "spec": "s", "verify": "echo nope; false"},
    ]));
    fleet.write_tests();
    let second = fleet.run();
    second.expect_code(1);
    assert!(
        line_starting(&second, "This run (").ends_with("1 attempt: 0 passes, 1 failure, $0.0000"),
        "{second}"
    );
    assert_eq!(
        line_starting(&second, "Totals so far: "),
        "Totals so far: 2 attempts, $0.0000"
    );
    // Per loop: this run's one attempt, and the two so far.
    let lines: Vec<&str> = second.stdout.lines().collect();
    let this = lines
        .iter()
        .position(|l| l.starts_with("This run"))
        .unwrap();
    let so_far = lines.iter().position(|l| l.starts_with("Totals")).unwrap();
    // The cells of these rows hold no spaces: a column is a word.
    let row = |title: usize, column: &str| {
        let header: Vec<&str> = lines[title + 1].split_whitespace().collect();
        let at = header.iter().position(|h| *h == column).unwrap();
        lines[title + 2]
            .split_whitespace()
            .nth(at)
            .unwrap()
            .to_string()
    };
    assert_eq!(row(this, "ATTEMPTS"), "1", "{second}");
    assert_eq!(row(so_far, "ATTEMPTS"), "2", "{second}");
    assert_eq!(row(so_far, "PASSED"), "1/2", "{second}");
}

#[test]
fn completions_for_each_shell_and_a_man_page() {
    let fleet = Fleet::new();
    let bash = fleet.cmd(&["completions", "bash"]);
    bash.expect_code(0);
    for sub in ["attempts", "insights", "status", "completions", "man"] {
        assert!(bash.stdout.contains(sub), "bash misses {sub}: {bash}");
    }
    assert!(bash.stdout.contains("complete -F"), "{bash}");
    for shell in ["zsh", "fish"] {
        let out = fleet.cmd(&["completions", shell]);
        out.expect_code(0);
        assert!(out.stdout.contains("attempts"), "{out}");
    }
    let bad = fleet.cmd(&["completions", "cmd.exe"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("bash"), "the shells it knows: {bad}");

    let man = fleet.cmd(&["man"]);
    man.expect_code(0);
    assert!(man.stdout.contains(".TH loopd 1"), "{man}");
    assert!(man.stdout.contains(".SH SUBCOMMANDS"), "{man}");
    assert!(man.stdout.contains("attempts"), "{man}");
}

/// Runs `loopd ARGS` with a stdout whose reader has already gone, as in `loopd ARGS | head -0`
/// (closed before loopd writes, so the test does not depend on who is first).
fn with_closed_stdout(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    fleet
        .loopd(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_reader_that_goes_early_ends_every_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let fleet = fleet_named("main");
    for args in [
        &["validate"][..],
        &["completions", "bash"][..],
        &["man"][..],
    ] {
        let out = with_closed_stdout(&fleet, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        // Ended by SIGPIPE, as `head` expects of any command.
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {:?}", out.status);
    }
    // `run` keeps SIGPIPE ignored (it writes to agents' pipes): its summary is simply lost.
    let run = with_closed_stdout(&fleet, &["run", "--plain"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    // And a read command after it, on the store `run` left.
    let out = with_closed_stdout(&fleet, &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "{stderr}");
}

#[test]
fn a_run_whose_stderr_reader_goes_early_still_runs_to_its_end() {
    // `loopd run --plain 2>&1 | head -1`: both streams closed before the first event line.
    let fleet = fleet_named("main");
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let status = fleet
        .loopd(&["run", "--plain"])
        .stdout(Stdio::from(write.try_clone().unwrap()))
        .stderr(Stdio::from(write))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}: no panic, T2 failed");
    let lp = fleet.loop_status();
    assert_eq!(lp["status"], "finished", "{lp:#}");
    assert_eq!(lp["progress"]["passed"], 1, "{lp:#}");
}
