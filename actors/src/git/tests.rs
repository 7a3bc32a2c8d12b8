use std::path::Path;

use super::*;

async fn sh(dir: &Path, script: &str) -> String {
    let out = tokio::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.com")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.com")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh repository with one file committed as its checkpoint.
async fn repo() -> (tempfile::TempDir, Workdir, String) {
    let dir = tempfile::tempdir().unwrap();
    let wd = Workdir::new(dir.path().join("w"));
    wd.prepare(true, None).await.unwrap();
    std::fs::write(wd.path().join("a.txt"), "one\n").unwrap();
    std::fs::write(wd.path().join(".gitignore"), "*.log\n").unwrap();
    let checkpoint = wd.ensure_checkpoint().await.unwrap();
    (dir, wd, checkpoint)
}

#[tokio::test]
async fn prepare_creates_inits_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Workdir::new(dir.path().join("missing"));
    let err = missing.prepare(false, None).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let err = Workdir::new(&plain).prepare(false, None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("not the top level of a git repository"),
        "{err}"
    );

    let template = dir.path().join("template");
    std::fs::create_dir_all(template.join("src")).unwrap();
    std::fs::write(template.join("src/lib.rs"), "// hi\n").unwrap();
    std::fs::create_dir_all(template.join(".git")).unwrap();
    let made = Workdir::new(dir.path().join("made"));
    made.prepare(true, Some(&template)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(made.path().join("src/lib.rs")).unwrap(),
        "// hi\n"
    );
    assert_eq!(made.head().await.unwrap(), None);
    assert!(made.is_dirty().await.unwrap());
    // Preparing again is a no-op.
    made.prepare(false, None).await.unwrap();

    // A folder inside another repository is not a workdir of its own.
    let inner = made.path().join("src");
    let err = Workdir::new(&inner).prepare(false, None).await.unwrap_err();
    assert!(matches!(err, GitError::Workdir { .. }), "{err}");
}

#[tokio::test]
async fn checkpoint_of_an_empty_repo_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let wd = Workdir::new(dir.path());
    wd.prepare(true, None).await.unwrap();
    assert_eq!(wd.head().await.unwrap(), None);
    let first = wd.ensure_checkpoint().await.unwrap();
    assert_eq!(first.len(), 40);
    assert_eq!(wd.head().await.unwrap().as_deref(), Some(first.as_str()));
    assert_eq!(wd.ensure_checkpoint().await.unwrap(), first);
    assert!(!wd.is_dirty().await.unwrap());
}

#[tokio::test]
async fn dirty_counts_untracked_but_not_ignored() {
    let (_dir, wd, _) = repo().await;
    assert!(!wd.is_dirty().await.unwrap());
    std::fs::write(wd.path().join("debug.log"), "x").unwrap();
    assert!(!wd.is_dirty().await.unwrap());
    std::fs::write(wd.path().join("new.txt"), "x").unwrap();
    assert!(wd.is_dirty().await.unwrap());
}

#[tokio::test]
async fn exclude_is_idempotent() {
    let (_dir, wd, _) = repo().await;
    wd.exclude(&[".loopd/", "LOOPD_*"]).await.unwrap();
    wd.exclude(&[".loopd/", "LOOPD_*", "more"]).await.unwrap();
    let text = std::fs::read_to_string(wd.path().join(".git/info/exclude")).unwrap();
    assert_eq!(text.matches(".loopd/").count(), 1);
    assert_eq!(text.matches("LOOPD_*").count(), 1);
    assert!(text.contains("more"));
    std::fs::create_dir(wd.path().join(".loopd")).unwrap();
    std::fs::write(wd.path().join(".loopd/transcript"), "x").unwrap();
    assert!(!wd.is_dirty().await.unwrap());
}

#[tokio::test]
async fn unchanged_since_sees_every_kind_of_change() {
    let (_dir, wd, cp) = repo().await;
    assert!(wd.unchanged_since(&cp).await.unwrap());

    std::fs::write(wd.path().join("ignored.log"), "x").unwrap();
    assert!(
        wd.unchanged_since(&cp).await.unwrap(),
        "ignored files are not changes"
    );

    std::fs::write(wd.path().join("new.txt"), "x").unwrap();
    assert!(!wd.unchanged_since(&cp).await.unwrap(), "untracked file");
    std::fs::remove_file(wd.path().join("new.txt")).unwrap();

    std::fs::write(wd.path().join("a.txt"), "two\n").unwrap();
    assert!(!wd.unchanged_since(&cp).await.unwrap(), "modified file");

    sh(wd.path(), "git commit -qam 'agent commit'").await;
    assert!(!wd.is_dirty().await.unwrap());
    assert!(!wd.unchanged_since(&cp).await.unwrap(), "committed change");

    sh(wd.path(), "git revert --no-edit HEAD >/dev/null").await;
    assert!(
        wd.unchanged_since(&cp).await.unwrap(),
        "commits that cancel out change nothing"
    );
    // The user's index was not disturbed by the snapshots.
    assert_eq!(sh(wd.path(), "git status --porcelain").await, "");
}

#[tokio::test]
async fn diff_summary_includes_untracked_and_is_bounded() {
    let (_dir, wd, cp) = repo().await;
    std::fs::write(wd.path().join("a.txt"), "one\ntwo\n").unwrap();
    std::fs::write(wd.path().join("brand-new.rs"), "fn main() {}\n").unwrap();
    let summary = wd.diff_summary(&cp).await.unwrap();
    assert!(summary.contains("a.txt"), "{summary}");
    assert!(summary.contains("brand-new.rs"), "{summary}");
    assert!(summary.contains("2 files changed"), "{summary}");
    // Untracked files stay untracked.
    assert!(sh(wd.path(), "git status --porcelain")
        .await
        .contains("?? brand-new.rs"));

    for i in 0..400 {
        std::fs::write(
            wd.path().join(format!("file-with-a-long-name-{i:04}.txt")),
            "x\n",
        )
        .unwrap();
    }
    let summary = wd.diff_summary(&cp).await.unwrap();
    assert!(summary.len() <= MAX_DIFF_SUMMARY + 100, "{}", summary.len());
    assert!(summary.contains("more bytes"));

    assert!(matches!(
        wd.diff_summary("0000000").await,
        Err(GitError::Command { .. })
    ));
}

#[tokio::test]
async fn commit_pass_adds_everything_with_trailers() {
    let (_dir, wd, cp) = repo().await;
    std::fs::write(wd.path().join("a.txt"), "two\n").unwrap();
    std::fs::write(wd.path().join("new.txt"), "new\n").unwrap();
    let commit = wd
        .commit_pass("login", 2, 0.123456, "# Users can log in")
        .await
        .unwrap();
    assert_ne!(commit, cp);
    assert!(!wd.is_dirty().await.unwrap());
    let message = sh(wd.path(), "git log -1 --format=%B").await;
    assert_eq!(
        message.trim_end(),
        "# Users can log in\n\nLoopd-Test: login\nLoopd-Attempt: 2\nLoopd-Cost: 0.1235"
    );
    let trailers = sh(
        wd.path(),
        "git log -1 --format='%(trailers:key=Loopd-Test,valueonly)'",
    )
    .await;
    assert_eq!(trailers.trim(), "login");
    // loopd's identity only when git has none (this machine may have a global one).
    let configured = sh(wd.path(), "git config user.name || true").await;
    let expected = if configured.trim().is_empty() {
        "loopd"
    } else {
        configured.trim()
    };
    assert_eq!(
        sh(wd.path(), "git log -1 --format=%an").await.trim(),
        expected
    );
    assert_eq!(
        sh(wd.path(), &format!("git rev-parse {commit}^"))
            .await
            .trim(),
        cp
    );
}

#[tokio::test]
async fn commit_pass_after_the_agent_committed() {
    let (_dir, wd, cp) = repo().await;
    std::fs::write(wd.path().join("a.txt"), "agent\n").unwrap();
    sh(wd.path(), "git commit -qam 'agent did it'").await;
    let agent_commit = wd.head().await.unwrap().unwrap();

    // Nothing left: still a (empty) commit that carries the trailers.
    let pass = wd.commit_pass("t1", 1, 0.0, "t1 passes").await.unwrap();
    assert_ne!(pass, agent_commit);
    assert_eq!(
        sh(wd.path(), "git rev-parse HEAD^").await.trim(),
        agent_commit
    );
    assert!(sh(wd.path(), "git log -1 --format=%B")
        .await
        .contains("Loopd-Cost: 0.0000"));
    assert_eq!(sh(wd.path(), "git diff --stat HEAD^ HEAD").await, "");

    // Something left after the agent's commit: only that goes in.
    std::fs::write(wd.path().join("b.txt"), "b\n").unwrap();
    sh(wd.path(), "git add b.txt && git commit -qm 'agent b'").await;
    std::fs::write(wd.path().join("c.txt"), "c\n").unwrap();
    wd.commit_pass("t2", 3, 1.5, "t2 passes").await.unwrap();
    assert_eq!(
        sh(wd.path(), "git show --format= --name-only HEAD")
            .await
            .trim(),
        "c.txt"
    );
    assert_eq!(
        sh(wd.path(), &format!("git rev-list --count {cp}..HEAD"))
            .await
            .trim(),
        "4"
    );
}

#[tokio::test]
async fn save_attempt_keeps_everything_without_touching_head_or_index() {
    let (_dir, wd, cp) = repo().await;
    assert_eq!(
        wd.save_attempt("t", 1, &cp).await.unwrap(),
        None,
        "nothing changed"
    );

    std::fs::write(wd.path().join("a.txt"), "agent commit\n").unwrap();
    sh(wd.path(), "git commit -qam 'agent commit'").await;
    let agent_head = wd.head().await.unwrap().unwrap();
    std::fs::write(wd.path().join("staged.txt"), "staged\n").unwrap();
    sh(wd.path(), "git add staged.txt").await;
    std::fs::write(wd.path().join("untracked.txt"), "untracked\n").unwrap();
    std::fs::write(wd.path().join("skip.log"), "ignored\n").unwrap();
    let status_before = sh(wd.path(), "git status --porcelain").await;

    let saved = wd.save_attempt("t", 1, &cp).await.unwrap().unwrap();
    assert_eq!(
        wd.head().await.unwrap().as_deref(),
        Some(agent_head.as_str())
    );
    assert_eq!(sh(wd.path(), "git status --porcelain").await, status_before);

    let r = attempt_ref("t", 1);
    assert_eq!(r, "refs/loopd/attempts/t/1");
    assert_eq!(
        sh(wd.path(), &format!("git rev-parse {r}")).await.trim(),
        saved
    );
    assert_eq!(
        sh(wd.path(), &format!("git rev-parse {r}^")).await.trim(),
        agent_head
    );
    let files = sh(wd.path(), &format!("git ls-tree -r --name-only {r}")).await;
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(
        files,
        [".gitignore", "a.txt", "staged.txt", "untracked.txt"]
    );
    assert_eq!(
        sh(wd.path(), &format!("git show {r}:untracked.txt")).await,
        "untracked\n"
    );
    assert!(sh(wd.path(), &format!("git log -1 --format=%B {r}"))
        .await
        .contains("Loopd-Attempt: 1"));

    // Then the reset: back to the checkpoint, untracked gone, ignored kept, ref still there.
    wd.reset_to(&cp).await.unwrap();
    assert_eq!(wd.head().await.unwrap().as_deref(), Some(cp.as_str()));
    assert!(!wd.is_dirty().await.unwrap());
    assert!(wd.unchanged_since(&cp).await.unwrap());
    assert_eq!(
        std::fs::read_to_string(wd.path().join("a.txt")).unwrap(),
        "one\n"
    );
    assert!(!wd.path().join("untracked.txt").exists());
    assert!(!wd.path().join("staged.txt").exists());
    assert!(wd.path().join("skip.log").exists());
    assert_eq!(
        sh(wd.path(), &format!("git rev-parse {r}")).await.trim(),
        saved
    );
}

#[tokio::test]
async fn save_attempt_with_only_untracked_files() {
    let (_dir, wd, cp) = repo().await;
    std::fs::create_dir_all(wd.path().join("new/dir")).unwrap();
    std::fs::write(wd.path().join("new/dir/x.txt"), "x\n").unwrap();
    let saved = wd.save_attempt("t", 7, &cp).await.unwrap().unwrap();
    assert_eq!(
        sh(wd.path(), &format!("git rev-parse {saved}^"))
            .await
            .trim(),
        cp
    );
    assert_eq!(
        sh(wd.path(), "git show refs/loopd/attempts/t/7:new/dir/x.txt").await,
        "x\n"
    );
    wd.reset_to(&cp).await.unwrap();
    assert!(!wd.path().join("new").exists());
}

#[tokio::test]
async fn errors_name_the_workdir_the_command_and_stderr() {
    let (_dir, wd, _) = repo().await;
    let err = wd.diff_summary("no-such-commit").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&wd.path().display().to_string()), "{text}");
    assert!(text.contains("git diff --no-color"), "{text}");
    assert!(text.contains("no-such-commit"), "{text}");
    match err {
        GitError::Command { stderr, .. } => assert!(!stderr.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn uses_the_repository_identity_when_there_is_one() {
    let (_dir, wd, _) = repo().await;
    sh(
        wd.path(),
        "git config user.name 'Ada' && git config user.email ada@example.com",
    )
    .await;
    let fresh = Workdir::new(wd.path());
    fresh.commit_pass("t", 1, 0.0, "t").await.unwrap();
    assert_eq!(sh(wd.path(), "git log -1 --format=%an").await.trim(), "Ada");
}

#[test]
fn bound_cuts_on_lines() {
    assert_eq!(bound("short".into(), 10), "short");
    let cut = bound("aaaa\nbbbb\ncccc\n".into(), 12);
    assert_eq!(cut, "aaaa\nbbbb\n… (5 more bytes)\n");
}

#[tokio::test]
async fn a_hanging_git_is_killed_with_its_group_at_the_timeout() {
    let (_dir, wd, _) = repo().await;
    let pid_file = wd.path().join("../alias.pid");
    let alias = format!(
        "alias.hang=!echo $$ > {}; exec sleep 1000",
        pid_file.display()
    );
    let err = run::Git::new(wd.path(), std::time::Duration::from_millis(500))
        .args(["-c", &alias, "hang"])
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::TimedOut { .. }), "{err:?}");
    assert!(
        err.to_string().contains("did not finish within 500ms"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while crate::process::proc_start_time(pid).is_some()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the alias's sleep outlived the timeout"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hooks_filters_and_fsmonitor_the_agent_configured_never_run() {
    let (dir, wd, checkpoint) = repo().await;
    let marker = dir.path().join("ran");
    let program = dir.path().join("evil.sh");
    std::fs::write(
        &program,
        format!("#!/bin/sh\necho \"$0 $*\" >> {}\ncat\n", marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = program.display();
    sh(
        wd.path(),
        &format!(
            "mkdir -p .git/hooks myhooks && for h in pre-commit post-commit reference-transaction post-checkout; do \
               cp {p} .git/hooks/$h; cp {p} myhooks/$h; done && \
             git config core.hooksPath myhooks && git config core.fsmonitor {p} && \
             git config filter.evil.clean {p} && git config filter.evil.smudge {p} && \
             git config filter.evil.process {p} && git config filter.evil.required true && \
             git config commit.gpgsign true && git config gpg.program {p} && \
             echo '* filter=evil' > .gitattributes && echo two > a.txt"
        ),
    )
    .await;
    let wd = Workdir::new(wd.path());
    assert!(wd.is_dirty().await.unwrap());
    let pass = wd.commit_pass("t", 1, 0.0, "t").await.unwrap();
    sh(wd.path(), "echo three > a.txt").await;
    wd.save_attempt("t", 2, &pass).await.unwrap();
    wd.reset_to(&checkpoint).await.unwrap();
    assert!(
        !marker.exists(),
        "ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}

#[tokio::test]
async fn stale_locks_go_and_a_held_lock_stays() {
    let (_dir, wd, _) = repo().await;
    let lock = wd.path().join(".git/index.lock");
    let ref_lock = wd.path().join(".git/refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    std::fs::write(&ref_lock, "").unwrap();
    let removed = wd.clear_stale_locks().await.unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!lock.exists() && !ref_lock.exists());
    // Open in this process: a live holder.
    let _held = std::fs::File::create(&lock).unwrap();
    assert!(wd.clear_stale_locks().await.unwrap().is_empty());
    assert!(lock.exists());
    let err = wd.commit_pass("t", 1, 0.0, "t").await.unwrap_err();
    assert!(err.to_string().contains("index.lock"), "{err}");
}

#[tokio::test]
async fn a_lock_of_a_git_still_at_work_is_waited_for_then_cleared() {
    let (dir, wd, _) = repo().await;
    let lock = wd.path().join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    // A process named git working in the workdir (loopd's own, left by a loop actor that was
    // replaced mid-checkpoint), which ends a moment later without removing its lock.
    let fake = dir.path().join("bin/git");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::copy("/bin/sleep", &fake).unwrap();
    let mut git = std::process::Command::new(&fake)
        .arg("0.5")
        .current_dir(wd.path())
        .spawn()
        .unwrap();
    let reaper = std::thread::spawn(move || git.wait());
    let removed = wd.clear_stale_locks().await.unwrap();
    reaper.join().unwrap().unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(!lock.exists());
    wd.commit_pass("t", 1, 0.0, "t").await.unwrap();
}

#[tokio::test]
async fn another_branch_and_rewritten_history_are_found_and_restored() {
    let (_dir, wd, first) = repo().await;
    wd.record_position(&first).await.unwrap();
    let branch = sh(wd.path(), "git symbolic-ref HEAD").await;
    sh(wd.path(), "echo b > b.txt").await;
    let pass = wd.commit_pass("t1", 1, 0.0, "t1").await.unwrap();
    assert_eq!(wd.check_position(&pass).await.unwrap(), None);

    sh(
        wd.path(),
        "git checkout -q -b other && echo c > c.txt && git add . && git commit -q -m c",
    )
    .await;
    let problem = wd.check_position(&pass).await.unwrap().unwrap();
    assert!(problem.contains("on branch `other`"), "{problem}");
    wd.reset_to(&pass).await.unwrap();
    assert_eq!(sh(wd.path(), "git symbolic-ref HEAD").await, branch);
    assert_eq!(wd.head().await.unwrap().as_deref(), Some(pass.as_str()));

    sh(wd.path(), "git reset -q --hard HEAD~1 && git reflog expire --expire=now --all && git gc -q --prune=now").await;
    let problem = wd.check_position(&pass).await.unwrap().unwrap();
    assert!(problem.contains("no longer in the history"), "{problem}");
    // refs/loopd/checkpoint kept the commit through the gc.
    wd.reset_to(&pass).await.unwrap();
    assert_eq!(wd.head().await.unwrap().as_deref(), Some(pass.as_str()));
    assert!(wd.path().join("b.txt").exists());
}

#[tokio::test]
async fn a_deleted_git_dir_never_sends_loopd_to_an_enclosing_repository() {
    let dir = tempfile::tempdir().unwrap();
    sh(dir.path(), "git init -q && echo keep > outer.txt && git add outer.txt && git commit -q -m outer && echo untracked > loose.txt").await;
    let wd = Workdir::new(dir.path().join("w"));
    wd.prepare(true, None).await.unwrap();
    std::fs::write(wd.path().join("a.txt"), "one\n").unwrap();
    let checkpoint = wd.ensure_checkpoint().await.unwrap();
    wd.record_position(&checkpoint).await.unwrap();
    let outer_head = sh(dir.path(), "git rev-parse HEAD").await;

    std::fs::remove_dir_all(wd.path().join(".git")).unwrap();
    let wd = Workdir::new(wd.path());
    let problem = wd.check_position(&checkpoint).await.unwrap().unwrap();
    assert!(problem.contains("no longer a git repository"), "{problem}");
    assert!(wd.commit_pass("t", 1, 0.0, "t").await.is_err());
    assert!(wd.save_attempt("t", 1, &checkpoint).await.is_err());
    let err = wd.reset_to(&checkpoint).await.unwrap_err();
    assert!(err.to_string().contains("was .git deleted?"), "{err}");
    assert!(dir.path().join("loose.txt").exists() && wd.path().join("a.txt").exists());
    assert_eq!(sh(dir.path(), "git rev-parse HEAD").await, outer_head);
    assert_eq!(
        sh(dir.path(), "git status --porcelain").await,
        "?? loose.txt\n?? w/\n"
    );
}

#[test]
fn filter_overrides_blank_every_driver_once() {
    let o = run::filter_overrides(
        "core.bare\nfilter.lfs.clean\nfilter.lfs.smudge\nfilter.a.b.process\n",
    );
    let keys: Vec<&str> = o.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
    assert!(keys.contains(&"filter.a.b.process") && keys.contains(&"filter.lfs.required"));
}

#[tokio::test]
async fn a_core_worktree_the_agent_set_does_not_send_resets_elsewhere() {
    let (dir, wd, checkpoint) = repo().await;
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("precious.txt"), "keep\n").unwrap();
    sh(
        wd.path(),
        &format!(
            "git config core.worktree {} && echo x > new.txt",
            elsewhere.display()
        ),
    )
    .await;
    let wd = Workdir::new(wd.path());
    wd.reset_to(&checkpoint).await.unwrap();
    assert!(
        elsewhere.join("precious.txt").exists(),
        "loopd cleaned core.worktree"
    );
    assert!(!wd.path().join("new.txt").exists());
}

/// The worktrees `git worktree list` names, besides the main one.
async fn listed_worktrees(wd: &Workdir) -> Vec<String> {
    let out = sh(wd.path(), "git worktree list --porcelain").await;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .skip(1)
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A commit made in lane `lane` from its base: `file` gets `text`.
async fn lane_commit(lane: &Path, file: &str, text: &str) -> String {
    std::fs::write(lane.join(file), text).unwrap();
    sh(
        lane,
        &format!("git add -A && git commit -qm 'lane: {file}' && git rev-parse HEAD"),
    )
    .await
    .trim()
    .to_string()
}

#[tokio::test]
async fn lanes_are_worktrees_that_match_the_lane_count_and_are_remade_when_damaged() {
    let (dir, wd, checkpoint) = repo().await;
    let folder = dir.path().join("state/lanes/l");
    let lanes = wd.sync_lanes(&folder, 3, &checkpoint).await.unwrap();
    assert_eq!(lanes.len(), 3);
    assert_eq!(listed_worktrees(&wd).await, ["1", "2", "3", "merge"]);
    for lane in &lanes {
        assert_eq!(
            Workdir::new(lane).head().await.unwrap(),
            Some(checkpoint.clone())
        );
    }
    // An agent in lane 1 deletes lane 2, breaks lane 3's `.git` file, prunes, leaves a stray.
    std::fs::remove_dir_all(&lanes[1]).unwrap();
    std::fs::remove_file(lanes[2].join(".git")).unwrap();
    sh(&lanes[0], "git worktree prune").await;
    std::fs::write(folder.join("stray"), "x").unwrap();
    wd.sync_lanes(&folder, 3, &checkpoint).await.unwrap();
    assert_eq!(listed_worktrees(&wd).await, ["1", "2", "3", "merge"]);
    assert!(!folder.join("stray").exists());
    for lane in &lanes {
        assert_eq!(
            Workdir::new(lane).head().await.unwrap(),
            Some(checkpoint.clone())
        );
    }
    // Fewer lanes: the spare worktrees go, from git's list and from the disk.
    wd.sync_lanes(&folder, 1, &checkpoint).await.unwrap();
    assert_eq!(listed_worktrees(&wd).await, ["1", "merge"]);
    assert!(!lanes[1].exists() && !lanes[2].exists());
    // The loop deleted: nothing is left.
    wd.remove_lanes(&folder).await.unwrap();
    assert!(listed_worktrees(&wd).await.is_empty());
    assert!(!folder.exists());
}

#[tokio::test]
async fn a_lane_is_reset_to_its_base_whatever_its_agent_left() {
    let (dir, wd, checkpoint) = repo().await;
    let folder = dir.path().join("lanes");
    let lane = wd
        .sync_lanes(&folder, 1, &checkpoint)
        .await
        .unwrap()
        .remove(0);
    lane_commit(&lane, "a.txt", "agent\n").await;
    std::fs::write(lane.join("new.txt"), "untracked").unwrap();
    sh(&lane, "git checkout -q -b agent-branch").await;
    // A lock a killed git left in the lane's own git directory.
    let lock = sh(&lane, "git rev-parse --git-path index.lock").await;
    std::fs::write(lane.join(lock.trim()), "").unwrap();
    let lw = Workdir::new(&lane);
    lw.reset_lane(&checkpoint).await.unwrap();
    assert_eq!(lw.head().await.unwrap(), Some(checkpoint.clone()));
    assert_eq!(
        std::fs::read_to_string(lane.join("a.txt")).unwrap(),
        "one\n"
    );
    assert!(!lane.join("new.txt").exists());
    assert!(!lane.join(lock.trim()).exists());
    // Detached: the lane never moves a branch by committing.
    assert!(sh(&lane, "git symbolic-ref -q HEAD || echo detached")
        .await
        .contains("detached"));
    // The main workdir is untouched.
    assert_eq!(wd.head().await.unwrap(), Some(checkpoint));
}

#[tokio::test]
async fn the_merge_queue_fast_forwards_rebases_or_merges_and_reports_conflicts() {
    let (dir, wd, base) = repo().await;
    wd.record_position(&base).await.unwrap();
    let folder = dir.path().join("lanes");
    let lanes = wd.sync_lanes(&folder, 3, &base).await.unwrap();
    let scratch = Workdir::new(folder.join(SCRATCH));
    let one = lane_commit(&lanes[0], "one.txt", "1\n").await;
    let two = lane_commit(&lanes[1], "two.txt", "2\n").await;
    let clash = lane_commit(&lanes[2], "one.txt", "3\n").await;

    let Merge::Ready { commit, how } = scratch.combine(&one, &base, &base).await.unwrap() else {
        panic!("a lane on the checkpoint fast-forwards");
    };
    assert_eq!((commit.as_str(), how), (one.as_str(), "fast-forward"));
    assert!(wd.move_checkpoint(&one, &base).await.unwrap());
    // The workdir's files follow the checkpoint.
    assert_eq!(
        std::fs::read_to_string(wd.path().join("one.txt")).unwrap(),
        "1\n"
    );

    let Merge::Ready { commit, how } = scratch.combine(&two, &base, &one).await.unwrap() else {
        panic!("independent work rebases");
    };
    assert_eq!(how, "rebase");
    assert!(
        Workdir::new(scratch.path())
            .is_ancestor(&one, &commit)
            .await
    );
    // A stale old value is refused and changes nothing.
    assert!(!wd.move_checkpoint(&commit, &base).await.unwrap());
    assert_eq!(wd.head().await.unwrap(), Some(one.clone()));
    assert!(wd.move_checkpoint(&commit, &one).await.unwrap());
    let merged = commit;
    assert_eq!(
        std::fs::read_to_string(wd.path().join("two.txt")).unwrap(),
        "2\n"
    );

    let conflict = scratch.combine(&clash, &base, &merged).await.unwrap();
    assert_eq!(
        conflict,
        Merge::Conflict {
            files: vec!["one.txt".into()]
        }
    );
    // Nothing half-done is left in the scratch tree, and no lock.
    assert_eq!(scratch.head().await.unwrap(), Some(merged.clone()));
    assert!(sh(scratch.path(), "git status --porcelain")
        .await
        .is_empty());
    let lock = sh(scratch.path(), "git rev-parse --git-path index.lock").await;
    assert!(!scratch.path().join(lock.trim()).exists());
    assert_eq!(wd.head().await.unwrap(), Some(merged));
}

#[tokio::test]
async fn a_rebase_that_conflicts_commit_by_commit_falls_back_to_a_merge() {
    let (dir, wd, base) = repo().await;
    let folder = dir.path().join("lanes");
    let lanes = wd.sync_lanes(&folder, 2, &base).await.unwrap();
    let scratch = Workdir::new(folder.join(SCRATCH));
    let first = lane_commit(&lanes[0], "a.txt", "first lane\n").await;
    assert!(wd.move_checkpoint(&first, &base).await.unwrap());
    // Lane 2 changes a.txt and then changes it back: commit by commit it conflicts with
    // lane 1's change, but its net change (b.txt) does not.
    lane_commit(&lanes[1], "a.txt", "second lane\n").await;
    lane_commit(&lanes[1], "a.txt", "one\n").await;
    let second = lane_commit(&lanes[1], "b.txt", "b\n").await;
    let Merge::Ready { commit, how } = scratch.combine(&second, &base, &first).await.unwrap()
    else {
        panic!("the merge applies");
    };
    assert_eq!(how, "merge");
    assert!(wd.move_checkpoint(&commit, &first).await.unwrap());
    assert_eq!(
        std::fs::read_to_string(wd.path().join("a.txt")).unwrap(),
        "first lane\n"
    );
    assert_eq!(
        std::fs::read_to_string(wd.path().join("b.txt")).unwrap(),
        "b\n"
    );
}

#[tokio::test]
async fn an_agent_that_moves_the_checkpoint_itself_makes_the_queue_refuse_to_move_it() {
    let (dir, wd, base) = repo().await;
    wd.record_position(&base).await.unwrap();
    let folder = dir.path().join("lanes");
    let lanes = wd.sync_lanes(&folder, 1, &base).await.unwrap();
    let scratch = Workdir::new(folder.join(SCRATCH));
    let work = lane_commit(&lanes[0], "x.txt", "x\n").await;
    // The agent points the loop's branch at its own unverified commit.
    let branch = sh(wd.path(), "git symbolic-ref HEAD").await;
    sh(
        &lanes[0],
        &format!("git update-ref {} {work}", branch.trim()),
    )
    .await;
    let Merge::Ready { commit, .. } = scratch.combine(&work, &base, &base).await.unwrap() else {
        panic!("fast-forward");
    };
    // The queue believes the checkpoint is `base`: the branch is not, so nothing moves.
    assert!(!wd.move_checkpoint(&commit, &base).await.unwrap());
}
