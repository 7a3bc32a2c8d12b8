//! Git state a hostile agent (or a killed loopd) leaves behind, against the built binary: hooks
//! and config that run programs, lock files, another branch, rewritten history, a deleted
//! `.git`, and checkpoints that fail. Each test shows the loop recovers, or pauses with the
//! right reason, and that nothing passed silently.

mod common;
mod serving;

use std::path::Path;
use std::process::Command;

use common::{all_pids, pid_alive, wait_for_text, wait_until, Fleet, LOOP, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use serving::Daemon;

fn outcome(a: &Value) -> &str {
    a["outcome"].as_str().unwrap_or("<none>")
}

fn reason(a: &Value) -> &str {
    a["reason"].as_str().unwrap_or("")
}

/// A test that passes once the file `<id>.done` exists.
fn done_test(id: &str) -> Value {
    json!({"id": id, "title": id, "spec": format!("create {id}.done"), "verify": format!("test -f {id}.done")})
}

/// The `Loopd-Test` trailers on the loop's branch, oldest first.
fn passes_on_branch(fleet: &Fleet, branch: &str) -> Vec<String> {
    fleet
        .git(&[
            "log",
            "--reverse",
            "--format=%(trailers:key=Loopd-Test,valueonly)",
            branch,
        ])
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn hanging_post_commit_and_reference_transaction_hooks_do_not_hang_loopd() {
    let hang = "#!/bin/sh\\nsleep 100000\\n";
    let fleet = Fleet::new()
        .tests(json!([done_test("t1"), done_test("t2")]))
        .agent(&format!(
            "mkdir -p .git/hooks myhooks\n\
             for h in post-commit reference-transaction pre-commit post-checkout post-index-change; do\n\
               printf '{hang}' > .git/hooks/$h; printf '{hang}' > myhooks/$h\n\
               chmod +x .git/hooks/$h myhooks/$h\n\
             done\n\
             git config core.hooksPath myhooks\n\
             touch \"$LOOPD_TEST_ID.done\""
        ))
        .write();
    let run = fleet.run();
    run.expect_code(0);
    for t in ["t1", "t2"] {
        let a = &fleet.attempts(t)[0];
        assert_eq!(outcome(a), "passed", "{a:#}");
        assert!(a["commit"].is_string(), "{a:#}");
    }
    assert_eq!(passes_on_branch(&fleet, "HEAD"), ["t1", "t2"]);
}

#[test]
fn filters_fsmonitor_and_signing_the_agent_configured_do_not_run() {
    let fleet = Fleet::new().tests(json!([done_test("t1"), done_test("t2")]));
    let marker = fleet.root().join("ran");
    let fleet = fleet
        .agent(&format!(
            "printf '#!/bin/sh\\necho \"$0 $*\" >> {m}\\nsleep 100000\\n' > \"$ROOT/evil.sh\"\n\
             chmod +x \"$ROOT/evil.sh\"\n\
             echo '* filter=evil' > .gitattributes\n\
             git config filter.evil.clean \"$ROOT/evil.sh\"\n\
             git config filter.evil.smudge \"$ROOT/evil.sh\"\n\
             git config filter.evil.required true\n\
             git config core.fsmonitor \"$ROOT/evil.sh\"\n\
             git config commit.gpgsign true\n\
             git config gpg.program \"$ROOT/evil.sh\"\n\
             git config core.pager \"$ROOT/evil.sh\"\n\
             touch \"$LOOPD_TEST_ID.done\"",
            m = marker.display()
        ))
        .write();
    fleet.run().expect_code(0);
    assert!(
        !marker.exists(),
        "loopd's git ran an agent's program: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    assert_eq!(fleet.attempts("t2")[0]["outcome"], "passed");
}

#[test]
fn an_index_lock_the_agent_leaves_or_keeps_open_is_removed_once_its_group_is_gone() {
    let fleet = Fleet::new()
        .tests(json!([done_test("t1"), done_test("t2")]))
        .agent(
            "touch \"$LOOPD_TEST_ID.done\"\n\
             if [ \"$LOOPD_TEST_ID\" = t1 ]; then : > .git/index.lock\n\
             else (exec 9>.git/index.lock; exec sleep 100000) & fi",
        )
        .write();
    fleet.run().expect_code(0);
    for t in ["t1", "t2"] {
        let a = &fleet.attempts(t)[0];
        assert_eq!(outcome(a), "passed", "{a:#}");
        assert!(a["commit"].is_string(), "no checkpoint: {a:#}");
    }
    assert!(!fleet.workdir().join(".git/index.lock").exists());
    assert_eq!(passes_on_branch(&fleet, "HEAD"), ["t1", "t2"]);
}

/// SIGKILLs every process working inside the fleet's folder at once: loopd and whatever it
/// started, its git included, as systemd's `KillMode=control-group` ends a service's cgroup.
fn kill_the_control_group(fleet: &Fleet) {
    let ours: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|c| c.starts_with(fleet.root()))
        })
        .collect();
    for &pid in &ours {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    wait_until("the killed processes to go", WAIT, || {
        ours.iter().all(|&p| !pid_alive(p))
    });
}

/// A `git` first on loopd's PATH that, while `$ROOT/hang-git` exists, does what a real git
/// does mid-commit: holds `.git/index.lock` open, then hangs there (so the test can kill
/// loopd's whole group at that instant, which timing alone cannot hit). Otherwise it is git.
fn wrap_git(fleet: &Fleet) -> String {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = fleet.root().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("git");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\n\
             if [ -e '{root}/hang-git' ] && [[ \" $* \" == *' commit '* ]]; then\n\
               exec 9>'{work}/.git/index.lock'\n\
               echo $$ > '{root}/git.pid'\n\
               exec sleep 100000\n\
             fi\n\
             exec '{real}' \"$@\"\n",
            root = fleet.root().display(),
            work = fleet.workdir().display(),
            real = real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_kill_of_loopds_whole_group_mid_commit_leaves_a_lock_that_the_next_start_clears() {
    let fleet = Fleet::new()
        .tests(json!([done_test("t1")]))
        .agent("echo work > work.txt\ntouch t1.done")
        .write();
    let path = wrap_git(&fleet);
    std::fs::write(fleet.root().join("hang-git"), "").unwrap();
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("PATH", &path);
    let running = common::Running::spawn(cmd);
    wait_for_text(&fleet.root().join("git.pid"), "\n");
    kill_the_control_group(&fleet);
    drop(running);
    assert!(fleet.workdir().join(".git/index.lock").exists());

    std::fs::remove_file(fleet.root().join("hang-git")).unwrap();
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("PATH", &path);
    let rerun = common::Running::spawn(cmd).wait(common::RUN_TIMEOUT);
    rerun.expect_code(0);
    let attempts = fleet.attempts("t1");
    assert_eq!(outcome(&attempts[0]), "interrupted", "{attempts:#?}");
    // The interrupted attempt's files were saved to its ref before the reset.
    let saved = attempts[0]["commit"].as_str().expect("attempt 1 saved");
    assert_eq!(fleet.git(&["show", &format!("{saved}:work.txt")]), "work\n");
    assert_eq!(outcome(&attempts[1]), "passed", "{attempts:#?}");
    assert!(!fleet.workdir().join(".git/index.lock").exists());
    assert_eq!(passes_on_branch(&fleet, "HEAD"), ["t1"]);
}

#[test]
fn an_agent_that_checks_out_another_branch_is_an_agent_error_and_the_branch_comes_back() {
    let fleet = Fleet::new()
        .set("max_attempts", "2")
        .tests(json!([done_test("t1")]))
        .agent(
            "if [ \"$LOOPD_ATTEMPT\" = 1 ]; then\n\
               git checkout -q -b other && touch t1.done && git add -A && git commit -q -m mine\n\
             else touch t1.done; fi",
        )
        .write();
    let branch = fleet.git(&["symbolic-ref", "HEAD"]).trim().to_string();
    fleet.run().expect_code(0);
    let attempts = fleet.attempts("t1");
    assert_eq!(outcome(&attempts[0]), "agent_error", "{attempts:#?}");
    assert!(
        reason(&attempts[0]).contains("on branch `other`"),
        "{attempts:#?}"
    );
    assert_eq!(outcome(&attempts[1]), "passed", "{attempts:#?}");
    assert_eq!(fleet.git(&["symbolic-ref", "HEAD"]).trim(), branch);
    assert_eq!(passes_on_branch(&fleet, &branch), ["t1"]);
}

#[test]
fn an_agent_that_drops_an_earlier_pass_from_history_is_an_agent_error_and_it_comes_back() {
    let fleet = Fleet::new()
        .set("max_attempts", "2")
        .tests(json!([done_test("t1"), done_test("t2")]))
        .agent(
            "if [ \"$LOOPD_TEST_ID\" = t2 ] && [ \"$LOOPD_ATTEMPT\" = 1 ]; then\n\
               git reset -q --hard HEAD~1\n\
             fi\n\
             touch \"$LOOPD_TEST_ID.done\"",
        )
        .write();
    fleet.run().expect_code(0);
    let attempts = fleet.attempts("t2");
    assert_eq!(outcome(&attempts[0]), "agent_error", "{attempts:#?}");
    assert!(
        reason(&attempts[0]).contains("no longer in the history"),
        "{attempts:#?}"
    );
    assert_eq!(outcome(&attempts[1]), "passed", "{attempts:#?}");
    assert_eq!(passes_on_branch(&fleet, "HEAD"), ["t1", "t2"]);
    assert!(fleet.workdir().join("t1.done").exists());
}

#[test]
fn an_agent_that_deletes_dot_git_pauses_the_loop_and_never_reaches_the_enclosing_repository() {
    let fleet = Fleet::new()
        .tests(json!([done_test("t1")]))
        .agent("rm -rf .git\ntouch t1.done")
        .write();
    // The fleet's folder is itself a repository, as a project holding its loop's workdir is.
    let outer = |args: &[&str]| common::git_in(fleet.root(), args);
    outer(&["init", "-q"]);
    outer(&[
        "-c",
        "user.name=o",
        "-c",
        "user.email=o@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "outer",
    ]);
    let outer_head = outer(&["rev-parse", "HEAD"]);
    let run = fleet.run();
    run.expect_code(3);
    assert!(run.stderr.contains("workdir_broken"), "{run}");
    let lp = fleet.loop_status();
    assert_eq!(lp["status"], "paused", "{lp:#}");
    assert_eq!(lp["reason"], "workdir_broken", "{lp:#}");
    let a = &fleet.attempts("t1")[0];
    assert_eq!(outcome(a), "agent_error", "{a:#}");
    assert!(reason(a).contains("no longer a git repository"), "{a:#}");
    assert_ne!(fleet.test_status("t1")["status"], "passed");
    // Nothing was committed, reset or cleaned in the enclosing repository.
    assert_eq!(outer(&["rev-parse", "HEAD"]), outer_head);
    assert!(fleet.config_file().exists() && fleet.workdir().join("t1.done").exists());
}

#[test]
fn a_failed_checkpoint_pauses_the_loop_keeps_the_work_across_a_restart_and_resume_retries_it() {
    let fleet = Fleet::new()
        .tests(json!([done_test("t1"), done_test("t2")]))
        .agent("echo \"work of $LOOPD_TEST_ID\" > \"$LOOPD_TEST_ID.work\"\ntouch \"$LOOPD_TEST_ID.done\"")
        .write();
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("LOOPD_TEST_FAULT", "fail:git_checkpoint:main:1");
    let run = common::Running::spawn(cmd).wait(common::RUN_TIMEOUT);
    run.expect_code(3);
    assert!(run.stderr.contains("checkpoint_failed"), "{run}");
    assert!(run.stderr.contains("injected checkpoint failure"), "{run}");
    let held = |fleet: &Fleet| {
        let lp = fleet.loop_status();
        assert_eq!(lp["status"], "paused", "{lp:#}");
        assert_eq!(lp["reason"], "checkpoint_failed", "{lp:#}");
        assert_eq!(fleet.test_status("t1")["status"], "pending");
        assert_eq!(fleet.test_status("t2")["status"], "pending");
        assert!(
            fleet.workdir().join("t1.work").exists(),
            "the attempt's work is gone"
        );
    };
    held(&fleet);
    let a = &fleet.attempts("t1")[0];
    assert!(reason(a).contains("checkpoint commit failed"), "{a:#}");
    assert!(a["commit"].is_null(), "{a:#}");

    // A restart keeps the loop held and the work in place.
    let again = fleet.run();
    again.expect_code(3);
    assert!(again.stderr.contains("checkpoint_failed"), "{again}");
    held(&fleet);

    let daemon = Daemon::start(&fleet, &[]);
    let resumed = fleet.cmd(&["-c", "loopd.toml", "resume", LOOP]);
    assert_eq!(resumed.code(), 0, "{resumed}");
    wait_until("both tests to pass after the resume", WAIT, || {
        fleet.test_status("t2")["status"] == "passed"
    });
    assert_eq!(daemon.terminate(), 0);
    assert_eq!(
        fleet.attempts("t1").len(),
        1,
        "the pass was redone instead of committed"
    );
    assert_eq!(passes_on_branch(&fleet, "HEAD"), ["t1", "t2"]);
    assert_eq!(fleet.git(&["show", "HEAD~1:t1.work"]), "work of t1\n");
}

#[test]
fn a_lock_a_live_process_holds_is_left_alone_and_the_checkpoint_fails_with_what_git_said() {
    let fleet = Fleet::new()
        .tests(json!([done_test("t1")]))
        .agent(
            "touch t1.done\ntouch \"$ROOT/agent-done\"\n\
             while [ ! -f \"$ROOT/locked\" ]; do sleep 0.05; done",
        )
        .write();
    let running = fleet.spawn_run();
    wait_until("the agent to do its work", WAIT, || {
        fleet.root().join("agent-done").exists()
    });
    // A person's (or any other) git at work: it holds the lock open while loopd checkpoints.
    let lock = fleet.workdir().join(".git/index.lock");
    let held = std::fs::File::create(&lock).unwrap();
    std::fs::write(fleet.root().join("locked"), "").unwrap();
    let run = running.wait(common::RUN_TIMEOUT);
    run.expect_code(3);
    assert!(run.stderr.contains("index.lock': File exists"), "{run}");
    assert_eq!(fleet.loop_status()["reason"], "checkpoint_failed");
    assert!(lock.exists(), "loopd removed a lock a live process holds");
    assert_ne!(fleet.test_status("t1")["status"], "passed");

    // The holder is gone and left its lock: resume clears it and makes the checkpoint.
    drop(held);
    let daemon = Daemon::start(&fleet, &[]);
    assert_eq!(fleet.cmd(&["-c", "loopd.toml", "resume", LOOP]).code(), 0);
    wait_until("t1 to pass after the resume", WAIT, || {
        fleet.test_status("t1")["status"] == "passed"
    });
    assert_eq!(daemon.terminate(), 0);
    assert_eq!(passes_on_branch(&fleet, "HEAD"), ["t1"]);
    assert!(!Path::new(&lock).exists());
}

#[test]
fn a_crash_after_the_agent_deleted_dot_git_holds_the_loop_instead_of_refusing_every_start() {
    let fleet = Fleet::new()
        .tests(json!([done_test("t1")]))
        .agent("rm -rf .git\ntouch t1.done\necho AGENT-READY\nsleep 1000")
        .write();
    let running = fleet.spawn_run();
    wait_for_text(&fleet.transcript("t1", 1), "AGENT-READY");
    running.signal(Signal::SIGKILL);
    drop(running);

    let rerun = fleet.run();
    rerun.expect_code(3);
    assert!(rerun.stderr.contains("workdir_broken"), "{rerun}");
    assert!(rerun.stderr.contains("not a git repository"), "{rerun}");
    let lp = fleet.loop_status();
    assert_eq!(lp["reason"], "workdir_broken", "{lp:#}");
    assert_eq!(outcome(&fleet.attempts("t1")[0]), "interrupted");
    // Nothing was reset or cleaned, and the next start says the same instead of failing.
    assert!(fleet.workdir().join("t1.done").exists());
    let again = fleet.run();
    again.expect_code(3);
    assert!(again.stderr.contains("workdir_broken"), "{again}");
}
