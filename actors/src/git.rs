//! The loop's workdir as git sees it: checkpoints, pass commits with trailers, attempt refs,
//! resets.
//!
//! Every call runs `git` through one hardened runner ([`run`]): no hooks, no program the
//! agent's config names, no pager or prompt, a timeout that kills git's process group, and no
//! `GIT_DIR`/`GIT_INDEX_FILE` loopd itself may have inherited. Commits get the identity
//! `loopd <loopd@localhost>` only when the repository has none configured.
//! Stale lock files an attempt left are removed ([`locks`]) and the loop's branch and checkpoint
//! are kept in loopd's own refs, checked after every attempt and restored from them ([`branch`]).
//! Snapshots of the working tree (untracked files included, ignored ones not) are written
//! through a temporary index, so neither HEAD nor the index the user sees is touched.

mod branch;
mod history;
mod lanes;
mod locks;
mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::OnceCell;

pub use history::PassCommit;
pub use lanes::{Merge, SCRATCH};
use run::Git;

pub use branch::{BRANCH_REF, CHECKPOINT_REF};
pub use run::DEFAULT_TIMEOUT;

/// Longest `diff_summary`, in bytes.
pub const MAX_DIFF_SUMMARY: usize = 8 * 1024;

/// A git command that failed, or a workdir that is not what loopd needs.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git ran and exited non-zero.
    #[error("{workdir}: `git {command}` failed: {stderr}")]
    Command {
        /// The workdir.
        workdir: PathBuf,
        /// The git command line, without `git`.
        command: String,
        /// What git said on stderr (trimmed, bounded).
        stderr: String,
    },
    /// git could not be started (not installed?) or its output could not be read.
    #[error("{workdir}: cannot run `git {command}`: {source}")]
    Spawn {
        /// The workdir.
        workdir: PathBuf,
        /// The git command line, without `git`.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// git ran longer than its timeout and was killed with its process group.
    #[error("{workdir}: `git {command}` did not finish within {} and was killed", humantime::format_duration(*after))]
    TimedOut {
        /// The workdir.
        workdir: PathBuf,
        /// The git command line, without `git`.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// The workdir is missing, not a repository of its own, or could not be prepared.
    #[error("{workdir}: {message}")]
    Workdir {
        /// The workdir.
        workdir: PathBuf,
        /// What is wrong, in a sentence.
        message: String,
    },
}

/// A loop's git working tree.
#[derive(Debug, Clone)]
pub struct Workdir {
    /// The top level of the working tree.
    path: PathBuf,
    /// How long one git command may run.
    timeout: Duration,
    /// Config every command of this workdir gets on top of the hardened set: the identity when
    /// the repository has none, and blanked filter drivers (read once, after the agent ended:
    /// a `Workdir` lives for one piece of loopd's own work).
    overrides: OnceCell<Vec<(String, String)>>,
}

impl Workdir {
    /// The workdir at `path` (nothing is checked until [`Workdir::prepare`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Workdir {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
            overrides: OnceCell::new(),
        }
    }

    /// The same workdir with another timeout per git command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A git command with the hardened config and this repository's overrides.
    async fn git(&self) -> Result<Git<'_>, GitError> {
        let overrides = self
            .overrides
            .get_or_try_init(|| async {
                let names = self
                    .bare_git()
                    .args(["config", "--name-only", "--list"])
                    .output()
                    .await?;
                let names = if names.success {
                    names.stdout
                } else {
                    String::new()
                };
                let has = |key: &str| names.lines().any(|n| n == key);
                let mut pairs = run::filter_overrides(&names);
                if !(has("user.name") && has("user.email")) {
                    pairs.push(("user.name".into(), "loopd".into()));
                    pairs.push(("user.email".into(), "loopd@localhost".into()));
                }
                Ok::<_, GitError>(pairs)
            })
            .await?;
        Ok(self.bare_git().config(overrides))
    }

    /// A git command with the hardened config only.
    fn bare_git(&self) -> Git<'_> {
        Git::new(&self.path, self.timeout)
    }

    fn workdir_error(&self, message: impl Into<String>) -> GitError {
        GitError::Workdir {
            workdir: self.path.clone(),
            message: message.into(),
        }
    }

    /// Creates the folder when absent and `init` is true (copying `template`'s contents in when
    /// given), and runs `git init` when it is not a repository of its own. Errors when the folder
    /// is absent, or not the top level of a repository, and `init` is false: a folder inside
    /// another repository is refused, since resets would reach the enclosing checkout.
    pub async fn prepare(&self, init: bool, template: Option<&Path>) -> Result<(), GitError> {
        let exists = tokio::fs::metadata(&self.path)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !exists {
            if !init {
                return Err(self.workdir_error(
                    "the workdir does not exist (set init_workdir = true to create it)",
                ));
            }
            tokio::fs::create_dir_all(&self.path)
                .await
                .map_err(|e| self.workdir_error(format!("cannot create the workdir: {e}")))?;
        }
        if self.is_own_repo().await? {
            return Ok(());
        }
        if !init {
            return Err(self.workdir_error(
                "the workdir is not the top level of a git repository (run `git init` in it, or set init_workdir = true)",
            ));
        }
        if let Some(template) = template {
            if self.is_empty_dir().await? {
                copy_template(template, &self.path).await.map_err(|e| {
                    self.workdir_error(format!(
                        "cannot copy the template {}: {e}",
                        template.display()
                    ))
                })?;
            }
        }
        self.git().await?.args(["init", "-q"]).run().await?;
        Ok(())
    }

    async fn is_empty_dir(&self) -> Result<bool, GitError> {
        let mut dir = tokio::fs::read_dir(&self.path)
            .await
            .map_err(|e| self.workdir_error(format!("cannot read the workdir: {e}")))?;
        Ok(dir.next_entry().await.ok().flatten().is_none())
    }

    /// True when the folder is the top level of a work tree (not a folder inside another one).
    async fn is_own_repo(&self) -> Result<bool, GitError> {
        let out = self
            .git()
            .await?
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .await?;
        if !out.success {
            return Ok(false);
        }
        let top = PathBuf::from(out.stdout.trim());
        let (Ok(top), Ok(here)) = (
            std::fs::canonicalize(top),
            std::fs::canonicalize(&self.path),
        ) else {
            return Ok(false);
        };
        Ok(top == here)
    }

    /// The commit HEAD points at, or `None` in a repository without commits.
    pub async fn head(&self) -> Result<Option<String>, GitError> {
        let out = self
            .git()
            .await?
            .args(["rev-parse", "-q", "--verify", "HEAD^{commit}"])
            .output()
            .await?;
        Ok(out.success.then(|| out.stdout.trim().to_string()))
    }

    /// HEAD, after creating an initial commit (of whatever is there, or empty) when the
    /// repository has none.
    pub async fn ensure_checkpoint(&self) -> Result<String, GitError> {
        if let Some(head) = self.head().await? {
            return Ok(head);
        }
        self.git().await?.args(["add", "-A"]).run().await?;
        self.commit("loopd: initial checkpoint").await?;
        self.head()
            .await?
            .ok_or_else(|| self.workdir_error("no HEAD after the initial commit"))
    }

    /// `git status --porcelain` is not empty (untracked files count, ignored ones do not).
    pub async fn is_dirty(&self) -> Result<bool, GitError> {
        let out = self
            .git()
            .await?
            .args(["status", "--porcelain"])
            .run()
            .await?;
        Ok(!out.trim().is_empty())
    }

    /// Adds `patterns` to `.git/info/exclude`, each once.
    pub async fn exclude(&self, patterns: &[&str]) -> Result<(), GitError> {
        let file = self.git_path("info/exclude").await?;
        let current = tokio::fs::read_to_string(&file).await.unwrap_or_default();
        let present: Vec<&str> = current.lines().map(str::trim).collect();
        let mut missing: Vec<&str> = Vec::new();
        for p in patterns {
            if !present.contains(p) && !missing.contains(p) {
                missing.push(p);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut text = current.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for p in missing {
            text.push_str(p);
            text.push('\n');
        }
        if let Some(dir) = file.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        tokio::fs::write(&file, text)
            .await
            .map_err(|e| self.workdir_error(format!("cannot write {}: {e}", file.display())))
    }

    /// True when nothing changed since `checkpoint`, committed or not: the working tree
    /// (untracked files included, ignored ones not) has the checkpoint's content.
    pub async fn unchanged_since(&self, checkpoint: &str) -> Result<bool, GitError> {
        if self.head().await?.as_deref() == Some(checkpoint) && !self.is_dirty().await? {
            return Ok(true);
        }
        let tree = self.snapshot_tree().await?;
        Ok(tree == self.tree_of(checkpoint).await?)
    }

    /// `git diff --stat` of the working tree (untracked files included) against `checkpoint`,
    /// at most [`MAX_DIFF_SUMMARY`] bytes.
    pub async fn diff_summary(&self, checkpoint: &str) -> Result<String, GitError> {
        let tree = self.snapshot_tree().await?;
        let stat = self
            .git()
            .await?
            .args([
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--stat=120",
            ])
            .arg(checkpoint)
            .arg(&tree)
            .run()
            .await?;
        Ok(bound(stat, MAX_DIFF_SUMMARY))
    }

    /// What `commit` changed against its first parent (`git show --stat --patch`), at most
    /// `max` bytes: an attempt's diff against the checkpoint it started from, for people.
    pub async fn show_patch(&self, commit: &str, max: usize) -> Result<String, GitError> {
        let out = self
            .git()
            .await?
            .args([
                "show",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--first-parent",
                "--stat=120",
                "--patch",
                "--format=commit %H%nparent %P%n%n%B",
            ])
            .arg(commit)
            .arg("--")
            .run()
            .await?;
        Ok(bound(out, max))
    }

    /// Commits everything (`git add -A`) with the title and the `Loopd-Test`, `Loopd-Attempt`
    /// and `Loopd-Cost` trailers, and returns the new HEAD. Always makes a commit (it may be
    /// empty when the agent committed its work itself), so the pass is always marked.
    pub async fn commit_pass(
        &self,
        test_id: &str,
        attempt: u32,
        cost_usd: f64,
        title: &str,
    ) -> Result<String, GitError> {
        self.git().await?.args(["add", "-A"]).run().await?;
        self.commit(&format!(
            "{}\n\n{}Loopd-Cost: {cost_usd:.4}",
            title.trim(),
            trailers(test_id, attempt)
        ))
        .await?;
        let head = self
            .head()
            .await?
            .ok_or_else(|| self.workdir_error("no HEAD after the pass commit"))?;
        self.keep_checkpoint(&head).await?;
        Ok(head)
    }

    /// Saves the attempt's state (working tree with untracked files, and any commits the agent
    /// made) as a commit under `refs/loopd/attempts/<test>/<n>`, without touching HEAD or the
    /// index. Returns the commit, or `None` when nothing changed since `checkpoint`.
    pub async fn save_attempt(
        &self,
        test_id: &str,
        attempt: u32,
        checkpoint: &str,
    ) -> Result<Option<String>, GitError> {
        let head = self.head().await?;
        let tree = self.snapshot_tree().await?;
        if head.as_deref() == Some(checkpoint) && tree == self.tree_of(checkpoint).await? {
            return Ok(None);
        }
        let parent = head.unwrap_or_else(|| checkpoint.to_string());
        let message = format!(
            "loopd: attempt {attempt} of {test_id}\n\n{}",
            trailers(test_id, attempt)
        );
        let commit = self
            .commit_to_attempt_ref(
                &tree,
                &parent,
                &message,
                test_id,
                attempt,
                "loopd: save attempt",
            )
            .await?;
        Ok(Some(commit))
    }

    /// Commits `tree` on `parent` with `message` and points the attempt's ref at it (`reflog`
    /// names why), touching neither HEAD, the index nor any branch. Returns the commit.
    pub(crate) async fn commit_to_attempt_ref(
        &self,
        tree: &str,
        parent: &str,
        message: &str,
        test_id: &str,
        attempt: u32,
        reflog: &str,
    ) -> Result<String, GitError> {
        let commit = self
            .git()
            .await?
            .args(["commit-tree", tree, "-p", parent, "-m", message])
            .run()
            .await?
            .trim()
            .to_string();
        self.git()
            .await?
            .args(["update-ref", "--no-deref", "-m", reflog])
            .arg(attempt_ref(test_id, attempt))
            .arg(&commit)
            .run()
            .await?;
        Ok(commit)
    }

    /// Points `reference` at HEAD, so that what HEAD holds now stays reachable.
    pub async fn keep_head_as(&self, reference: &str) -> Result<(), GitError> {
        self.git()
            .await?
            .args(["update-ref", "--no-deref", reference, "HEAD"])
            .run()
            .await?;
        Ok(())
    }

    /// `commit` is `of` or one of its ancestors (false when git cannot tell).
    pub async fn is_ancestor(&self, commit: &str, of: &str) -> bool {
        let Ok(git) = self.git().await else {
            return false;
        };
        git.args(["merge-base", "--is-ancestor", commit, of])
            .output()
            .await
            .is_ok_and(|out| out.success)
    }

    /// Puts HEAD back on the loop's branch (when one is recorded), resets it, the index and the
    /// working tree to `checkpoint`, removes untracked files (ignored ones stay: loopd's own
    /// files are ignored through `.git/info/exclude`) and records `checkpoint` as the loop's.
    pub async fn reset_to(&self, checkpoint: &str) -> Result<(), GitError> {
        self.restore(checkpoint).await
    }

    async fn commit(&self, message: &str) -> Result<(), GitError> {
        self.git()
            .await?
            .args([
                "commit",
                "-q",
                "--allow-empty",
                "--no-verify",
                "--cleanup=whitespace",
                "-m",
                message,
            ])
            .run()
            .await?;
        Ok(())
    }

    /// An absolute path inside the git directory (`git rev-parse --git-path`).
    async fn git_path(&self, name: &str) -> Result<PathBuf, GitError> {
        let out = self
            .git()
            .await?
            .args(["rev-parse", "--git-path", name])
            .run()
            .await?;
        let path = PathBuf::from(out.trim_end_matches(['\n', '\r']));
        Ok(if path.is_absolute() {
            path
        } else {
            self.path.join(path)
        })
    }

    async fn tree_of(&self, commit: &str) -> Result<String, GitError> {
        Ok(self
            .git()
            .await?
            .args(["rev-parse", "--verify"])
            .arg(format!("{commit}^{{tree}}"))
            .run()
            .await?
            .trim()
            .to_string())
    }

    /// The tree of the working tree as `git add -A` would stage it, written through a temporary
    /// index (a copy of the real one, so unchanged files need not be hashed again).
    async fn snapshot_tree(&self) -> Result<String, GitError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let index = self
            .git_path(&format!("loopd-snapshot-{}-{n}.index", std::process::id()))
            .await?;
        let real = self.git_path("index").await?;
        let result = async {
            match tokio::fs::copy(&real, &index).await {
                Ok(_) => {}
                Err(_) if self.head().await?.is_some() => {
                    self.git()
                        .await?
                        .index_file(&index)
                        .args(["read-tree", "HEAD"])
                        .run()
                        .await?;
                }
                Err(_) => {}
            }
            self.git()
                .await?
                .index_file(&index)
                .args(["add", "-A"])
                .run()
                .await?;
            Ok(self
                .git()
                .await?
                .index_file(&index)
                .args(["write-tree"])
                .run()
                .await?
                .trim()
                .to_string())
        }
        .await;
        let _ = tokio::fs::remove_file(&index).await;
        result
    }
}

/// The ref that keeps attempt `attempt` of `test_id`.
pub fn attempt_ref(test_id: &str, attempt: u32) -> String {
    format!("refs/loopd/attempts/{test_id}/{attempt}")
}

fn trailers(test_id: &str, attempt: u32) -> String {
    format!("Loopd-Test: {test_id}\nLoopd-Attempt: {attempt}\n")
}

/// `text` cut to at most `max` bytes on a line boundary, with a note when cut.
fn bound(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind('\n').map_or(end, |i| i + 1);
    format!("{}… ({} more bytes)\n", &text[..cut], text.len() - cut)
}

/// Copies the contents of `from` into `to` (recursively; symlinks are copied as links).
async fn copy_template(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || copy_dir(&from, &to))
        .await
        .map_err(std::io::Error::other)?
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if entry.file_name() == ".git" {
            continue;
        }
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
