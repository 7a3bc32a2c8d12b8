//! The loop's place in its workdir: the branch HEAD was on when the loop booted, and its last
//! checkpoint, kept in loopd's own refs.
//!
//! The store knows the checkpoint's id, but not the branch; and after an agent rewrote history
//! (`git reset --hard HEAD~1`, a checkout of another branch) a ref still keeps the checkpoint
//! from being pruned. An agent can delete these refs too; then the checkpoint id from the store
//! is all loopd has, and a branch is no longer enforced.

use super::{GitError, Workdir};

/// A symbolic ref to the loop's branch (absent when the loop works on a detached HEAD).
pub const BRANCH_REF: &str = "refs/loopd/branch";
/// The loop's last checkpoint.
pub const CHECKPOINT_REF: &str = "refs/loopd/checkpoint";

impl Workdir {
    /// Records the branch HEAD is on now (none when detached) and `checkpoint`, as the loop's.
    pub async fn record_position(&self, checkpoint: &str) -> Result<(), GitError> {
        match self.head_branch().await? {
            Some(branch) => {
                self.git()
                    .await?
                    .args(["symbolic-ref", "-m", "loopd: the loop's branch", BRANCH_REF])
                    .arg(&branch)
                    .run()
                    .await?;
            }
            None => {
                // Never `update-ref -d` here: on a symbolic ref that deletes the branch itself.
                self.git()
                    .await?
                    .args(["symbolic-ref", "--delete", BRANCH_REF])
                    .output()
                    .await?;
            }
        }
        self.keep_checkpoint(checkpoint).await
    }

    /// What is wrong with the workdir's git state after an attempt, in a sentence, or `None`
    /// when HEAD is on the loop's branch and `checkpoint` is in its history.
    pub async fn check_position(&self, checkpoint: &str) -> Result<Option<String>, GitError> {
        // A file system look, not a git run: this runs after every attempt. (Without `.git`,
        // the ceiling keeps git from finding an enclosing repository, so the git runs below
        // would fail too, with a worse message.)
        if !self.path.join(".git").exists() {
            return Ok(Some(
                "the workdir is no longer a git repository (was .git deleted?)".into(),
            ));
        }
        if let Some(branch) = self.loop_branch().await? {
            let head = self.head_branch().await?;
            if head.as_deref() != Some(branch.as_str()) {
                let on = match &head {
                    Some(h) => format!("on branch `{}`", short_ref(h)),
                    None => "detached".into(),
                };
                return Ok(Some(format!(
                    "HEAD is {on}, not on the loop's branch `{}`",
                    short_ref(&branch)
                )));
            }
        }
        if !self.is_ancestor(checkpoint, "HEAD").await {
            return Ok(Some(format!(
                "the last checkpoint {} is no longer in the history of HEAD (history was rewritten, e.g. by `git reset --hard HEAD~1`)",
                short_id(checkpoint)
            )));
        }
        Ok(None)
    }

    /// Puts HEAD back on the loop's branch, resets branch, index and working tree to
    /// `checkpoint`, removes untracked files and records `checkpoint` as the loop's. Errors, with
    /// what is missing, when the repository or the checkpoint commit is gone.
    pub(super) async fn restore(&self, checkpoint: &str) -> Result<(), GitError> {
        // As in `check_position`: a look, not a git run; the ceiling covers the rest.
        if !self.path.join(".git").exists() {
            return Err(self.workdir_error(
                "the workdir is no longer a git repository (was .git deleted?); loopd cannot restore its checkpoint",
            ));
        }
        let exists = self
            .git()
            .await?
            .args(["rev-parse", "-q", "--verify"])
            .arg(format!("{checkpoint}^{{commit}}"))
            .output()
            .await?;
        if !exists.success {
            return Err(self.workdir_error(format!(
                "the checkpoint {checkpoint} is not in the repository any more; loopd cannot restore it"
            )));
        }
        if let Some(branch) = self.loop_branch().await? {
            if self.head_branch().await?.as_deref() != Some(branch.as_str()) {
                // Only HEAD moves here; the reset below brings the branch, index and tree to
                // the checkpoint (and creates the branch if the agent deleted it).
                self.git()
                    .await?
                    .args([
                        "symbolic-ref",
                        "-m",
                        "loopd: back on the loop's branch",
                        "HEAD",
                    ])
                    .arg(&branch)
                    .run()
                    .await?;
            }
        }
        self.git()
            .await?
            .args(["reset", "-q", "--hard", checkpoint])
            .run()
            .await?;
        self.git()
            .await?
            .args(["clean", "-q", "-f", "-d"])
            .run()
            .await?;
        self.keep_checkpoint(checkpoint).await
    }

    /// Points [`CHECKPOINT_REF`] at `checkpoint` (itself, never what it may point to).
    pub(super) async fn keep_checkpoint(&self, checkpoint: &str) -> Result<(), GitError> {
        self.git()
            .await?
            .args([
                "update-ref",
                "--no-deref",
                "-m",
                "loopd: checkpoint",
                CHECKPOINT_REF,
            ])
            .arg(checkpoint)
            .run()
            .await?;
        Ok(())
    }

    /// The branch HEAD is on (`refs/heads/…`), or `None` when detached.
    async fn head_branch(&self) -> Result<Option<String>, GitError> {
        let out = self
            .git()
            .await?
            .args(["symbolic-ref", "-q", "HEAD"])
            .output()
            .await?;
        Ok(out.success.then(|| out.stdout.trim().to_string()))
    }

    /// The loop's recorded branch, if any.
    pub(super) async fn loop_branch(&self) -> Result<Option<String>, GitError> {
        let out = self
            .git()
            .await?
            .args(["symbolic-ref", "-q", BRANCH_REF])
            .output()
            .await?;
        Ok(out
            .success
            .then(|| out.stdout.trim().to_string())
            .filter(|b| b.starts_with("refs/heads/")))
    }
}

fn short_ref(name: &str) -> &str {
    name.strip_prefix("refs/heads/").unwrap_or(name)
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(10)]
}
