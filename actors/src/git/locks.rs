//! Lock files a killed git left behind.
//!
//! git writes `<file>.lock` next to what it changes and renames it into place. A git killed
//! mid-way (an agent's own git ended with the agent's group, or loopd's git when a service
//! manager kills loopd's whole control group) leaves the lock, and every later git refuses that
//! file ("Unable to create '…/index.lock': File exists"): the loop would be wedged for good. A
//! lock is stale, and removed, when no live process has it open and no git process works in
//! the workdir (`/proc/<pid>/fd`, `/proc/<pid>/comm`, `/proc/<pid>/cwd`).

use std::path::{Path, PathBuf};

use super::{GitError, Workdir};

/// How deep under `.git/refs` lock files are looked for.
const MAX_REF_DEPTH: usize = 8;
/// How long a lock held by a live git is waited for before it is left to fail the next git.
/// A git of loopd's own can still be running when its loop actor is restarted (a supervisor
/// replaced an actor that stopped answering mid-checkpoint); it ends within moments.
const WAIT_FOR_HOLDER: std::time::Duration = std::time::Duration::from_secs(5);

impl Workdir {
    /// Removes the repository's stale lock files and returns them. Call it only when loopd's
    /// own processes in this workdir (the agent's group, verify's) have ended.
    pub async fn clear_stale_locks(&self) -> Result<Vec<PathBuf>, GitError> {
        let dot_git = self.path.join(".git");
        let git_dir = if dot_git.is_dir() {
            // The usual case, without a git run (this runs after every attempt).
            dot_git
        } else {
            // A `.git` file (a linked worktree) or none at all.
            let out = self
                .bare_git()
                .args(["rev-parse", "--absolute-git-dir"])
                .output()
                .await?;
            if !out.success {
                // No repository: nothing to unlock (the caller's next git says what is wrong).
                return Ok(Vec::new());
            }
            PathBuf::from(out.stdout.trim())
        };
        let deadline = tokio::time::Instant::now() + WAIT_FOR_HOLDER;
        let removed = loop {
            let (git_dir, workdir) = (git_dir.clone(), self.path.clone());
            let wait = tokio::time::Instant::now() < deadline;
            let cleared = tokio::task::spawn_blocking(move || clear(&git_dir, &workdir, wait))
                .await
                .map_err(|e| self.workdir_error(format!("cannot look for stale git locks: {e}")))?;
            match cleared {
                Cleared::Removed(removed) => break removed,
                Cleared::Held => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        for lock in &removed {
            tracing::warn!(lock = %lock.display(), "removed a stale git lock file");
        }
        Ok(removed)
    }
}

/// What one look at the repository's locks did.
enum Cleared {
    /// These stale locks were removed (none, often).
    Removed(Vec<PathBuf>),
    /// A lock is there and a live process may hold it: nothing was removed (with `wait`).
    Held,
}

/// Removes the stale locks; with `wait`, nothing while a lock may be held (the caller looks
/// again in a moment), else those that no live process holds.
fn clear(git_dir: &Path, workdir: &Path, wait: bool) -> Cleared {
    let git_dir = git_dir
        .canonicalize()
        .unwrap_or_else(|_| git_dir.to_path_buf());
    let mut locks = Vec::new();
    collect_locks(&git_dir, 0, 0, &mut locks);
    collect_locks(&git_dir.join("refs"), 0, MAX_REF_DEPTH, &mut locks);
    if locks.is_empty() {
        return Cleared::Removed(locks);
    }
    let users = Users::scan(workdir);
    if wait && (users.git_in_workdir || locks.iter().any(|l| users.open.contains(l))) {
        return Cleared::Held;
    }
    if users.git_in_workdir {
        // A git (a person's, or one loopd does not know) is at work: its locks are not stale.
        tracing::warn!(workdir = %workdir.display(), "a git still works in the workdir; its locks are left");
        return Cleared::Removed(Vec::new());
    }
    Cleared::Removed(
        locks
            .into_iter()
            .filter(|l| !users.open.contains(l))
            .filter(|l| std::fs::remove_file(l).is_ok())
            .collect(),
    )
}

/// Files named `*.lock` in `dir`, and in its folders down to `depth` levels.
fn collect_locks(dir: &Path, level: usize, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let path = e.path();
        if kind.is_dir() && level < depth {
            collect_locks(&path, level + 1, depth, out);
        } else if kind.is_file() && path.extension().is_some_and(|x| x == "lock") {
            out.push(path);
        }
    }
}

/// What live processes have to do with the repository.
struct Users {
    /// Files some process has open.
    open: Vec<PathBuf>,
    /// A process named `git` has its current directory in the workdir.
    git_in_workdir: bool,
}

impl Users {
    fn scan(workdir: &Path) -> Users {
        let workdir = workdir
            .canonicalize()
            .unwrap_or_else(|_| workdir.to_path_buf());
        let mut users = Users {
            open: Vec::new(),
            git_in_workdir: false,
        };
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return users;
        };
        for p in procs.flatten() {
            let name = p.file_name();
            if !name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                continue;
            }
            let dir = p.path();
            let is_git = std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "git");
            if is_git
                && std::fs::read_link(dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(&workdir))
            {
                users.git_in_workdir = true;
            }
            let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    if target.extension().is_some_and(|x| x == "lock") {
                        users.open.push(target);
                    }
                }
            }
        }
        users
    }
}
