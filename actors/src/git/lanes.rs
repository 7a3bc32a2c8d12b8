//! Lanes as git sees them: one worktree per lane of a loop (`git worktree add`, detached), a
//! scratch worktree where the merge queue rebases and re-verifies a pass, and the one
//! `update-ref` that moves the checkpoint.
//!
//! A lane's inputs are a base commit, and its output a commit: nothing here reads a lane's
//! working tree except to reset it, so a lane could live on another host later. The worktrees
//! of a loop all sit in one folder (`<state_dir>/lanes/<loop>/`): lane `k` in `<k>`, the merge
//! queue's scratch tree in `merge`. Whatever else is found there, or registered with git under
//! it, is removed: after any sync, `git worktree list` names exactly the lanes.

use std::path::{Path, PathBuf};

use super::{GitError, Workdir};

/// The name of the merge queue's scratch worktree in a loop's lanes folder.
pub const SCRATCH: &str = "merge";

/// What came of putting a lane's commit onto the current checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// The combined commit, checked out (detached) in the scratch worktree.
    Ready {
        /// The commit the checkpoint would move to.
        commit: String,
        /// How it was made: `fast-forward`, `rebase` or `merge`.
        how: &'static str,
    },
    /// Neither a rebase nor a merge applies cleanly.
    Conflict {
        /// The files both sides changed, sorted.
        files: Vec<String>,
    },
}

impl Workdir {
    /// The worktrees git has registered under `folder` (canonical paths), after pruning those
    /// whose folder is gone.
    pub async fn worktrees_under(&self, folder: &Path) -> Result<Vec<PathBuf>, GitError> {
        self.git().await?.args(["worktree", "prune"]).run().await?;
        let listed = self
            .git()
            .await?
            .args(["worktree", "list", "--porcelain"])
            .run()
            .await?;
        let folder = canonical(folder);
        Ok(listed
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&folder) && p != &folder)
            .collect())
    }

    /// Makes `folder` hold exactly the worktrees of lanes `1..=lanes` plus the merge queue's
    /// scratch tree (none when `lanes` is 0): a missing or broken one is (re)made, detached at
    /// `checkpoint`; any other worktree or file there is removed. Existing lanes are kept as
    /// they are (the caller resets a lane before each attempt). Returns the lanes' paths.
    pub async fn sync_lanes(
        &self,
        folder: &Path,
        lanes: u32,
        checkpoint: &str,
    ) -> Result<Vec<PathBuf>, GitError> {
        let mut wanted: Vec<String> = (1..=lanes).map(|k| k.to_string()).collect();
        if lanes > 0 {
            wanted.push(SCRATCH.to_string());
        }
        let registered = self.worktrees_under(folder).await?;
        let canonical_folder = canonical(folder);
        for path in &registered {
            let name = path
                .strip_prefix(&canonical_folder)
                .ok()
                .and_then(|rest| rest.to_str())
                .unwrap_or_default()
                .to_string();
            let healthy =
                wanted.contains(&name) && matches!(Workdir::new(path).head().await, Ok(Some(_)));
            if !healthy {
                self.remove_worktree(path).await?;
            }
        }
        // Folders that are no (longer a) registered worktree: another lane's agent may have
        // deleted a lane, or its `.git` file.
        let registered = self.worktrees_under(folder).await?;
        if let Ok(mut entries) = tokio::fs::read_dir(folder).await {
            while let Some(entry) = entries.next_entry().await.map_err(io(folder))? {
                let path = canonical(&entry.path());
                if !registered.contains(&path) {
                    remove_any(&entry.path()).await.map_err(io(&entry.path()))?;
                }
            }
        }
        tokio::fs::create_dir_all(folder)
            .await
            .map_err(io(folder))?;
        let registered = self.worktrees_under(folder).await?;
        for name in &wanted {
            let path = canonical(folder).join(name);
            if !registered.contains(&path) {
                self.git()
                    .await?
                    .args(["worktree", "add", "-q", "--detach", "-f"])
                    .arg(&path)
                    .arg(checkpoint)
                    .run()
                    .await?;
            }
        }
        Ok((1..=lanes)
            .map(|k| canonical(folder).join(k.to_string()))
            .collect())
    }

    /// Removes every worktree under `folder`, and the folder itself.
    pub async fn remove_lanes(&self, folder: &Path) -> Result<(), GitError> {
        for path in self.worktrees_under(folder).await? {
            self.remove_worktree(&path).await?;
        }
        remove_any(folder).await.map_err(io(folder))?;
        self.git().await?.args(["worktree", "prune"]).run().await?;
        Ok(())
    }

    /// Resets this lane's worktree to `base`, detached: HEAD, index and files (untracked files
    /// removed, ignored ones kept), after removing lock files a killed git left.
    pub async fn reset_lane(&self, base: &str) -> Result<(), GitError> {
        self.clear_stale_locks().await?;
        // Abandons a rebase or merge the queue was killed in.
        for op in [["rebase", "--abort"], ["merge", "--abort"]] {
            self.git().await?.args(op).output().await?;
        }
        self.git()
            .await?
            .args(["checkout", "-q", "-f", "--detach", base])
            .run()
            .await?;
        self.git()
            .await?
            .args(["reset", "-q", "--hard", base])
            .run()
            .await?;
        self.git()
            .await?
            .args(["clean", "-q", "-f", "-d"])
            .run()
            .await?;
        Ok(())
    }

    /// In this (scratch) worktree: puts `commit`, made by a lane from `base`, onto
    /// `checkpoint`. A fast-forward when `checkpoint` is in its history; else a rebase of the
    /// lane's commits, and when that conflicts a merge (which sees only the lane's net change).
    /// A conflict leaves the worktree reset to `checkpoint`.
    pub async fn combine(
        &self,
        commit: &str,
        base: &str,
        checkpoint: &str,
    ) -> Result<Merge, GitError> {
        self.reset_lane(checkpoint).await?;
        if self.is_ancestor(checkpoint, commit).await {
            self.reset_lane(commit).await?;
            return Ok(Merge::Ready {
                commit: commit.to_string(),
                how: "fast-forward",
            });
        }
        let rebased = self
            .git()
            .await?
            .args(["rebase", "-q", "--onto", checkpoint, base, commit])
            .output()
            .await?;
        if rebased.success {
            return self.ready("rebase").await;
        }
        self.reset_lane(checkpoint).await?;
        let merged = self
            .git()
            .await?
            .args(["merge", "-q", "--no-ff", "--no-edit", "-m"])
            .arg(format!("loopd: merge {}", short(commit)))
            .arg(commit)
            .output()
            .await?;
        if merged.success {
            return self.ready("merge").await;
        }
        let unmerged = self
            .git()
            .await?
            .args(["diff", "--name-only", "--diff-filter=U"])
            .output()
            .await?;
        let mut files: Vec<String> = unmerged.stdout.lines().map(str::to_string).collect();
        files.sort();
        files.dedup();
        self.reset_lane(checkpoint).await?;
        Ok(Merge::Conflict { files })
    }

    async fn ready(&self, how: &'static str) -> Result<Merge, GitError> {
        let commit = self
            .head()
            .await?
            .ok_or_else(|| self.workdir_error("no HEAD after combining a lane's commit"))?;
        Ok(Merge::Ready { commit, how })
    }

    /// Moves the checkpoint from `old` to `new` with one `git update-ref <ref> <new> <old>`
    /// (the loop's branch, or HEAD when the loop works detached), so that a checkpoint someone
    /// else moved meanwhile is never overwritten. Returns false, changing nothing, when the
    /// checkpoint is not `old`. Then loopd's own checkpoint ref and the workdir's files follow.
    pub async fn move_checkpoint(&self, new: &str, old: &str) -> Result<bool, GitError> {
        let target = self
            .loop_branch()
            .await?
            .unwrap_or_else(|| "HEAD".to_string());
        let moved = self
            .git()
            .await?
            .args(["update-ref", "-m", "loopd: merge queue"])
            .arg(&target)
            .arg(new)
            .arg(old)
            .output()
            .await?;
        if !moved.success {
            return Ok(false);
        }
        self.keep_checkpoint(new).await?;
        // The branch is checked out here: index and files follow it (untracked files stay).
        self.git()
            .await?
            .args(["reset", "-q", "--hard", new])
            .run()
            .await?;
        Ok(true)
    }

    /// In a lane: commits what the lane holds (its working tree with untracked files, on top of
    /// any commits the agent made from `base`) as a pass of `test_id`'s attempt `attempt`, with
    /// the pass's title and trailers, under the attempt's ref. Touches neither HEAD, the index,
    /// nor any branch or checkpoint ref: the lane's output is this commit and nothing else.
    /// Always makes a commit (an empty one when nothing changed), so the pass is marked.
    pub async fn commit_lane_pass(
        &self,
        test_id: &str,
        attempt: u32,
        cost_usd: f64,
        title: &str,
        base: &str,
    ) -> Result<String, GitError> {
        let tree = self.snapshot_tree().await?;
        let parent = self.head().await?.unwrap_or_else(|| base.to_string());
        let message = format!(
            "{}\n\n{}Loopd-Cost: {cost_usd:.4}",
            title.trim(),
            super::trailers(test_id, attempt)
        );
        self.commit_to_attempt_ref(
            &tree,
            &parent,
            &message,
            test_id,
            attempt,
            "loopd: lane pass",
        )
        .await
    }

    /// What is wrong with a lane after an attempt, in a sentence, or `None` when it is still a
    /// worktree whose HEAD has `base` in its history.
    pub async fn check_lane(&self, base: &str) -> Result<Option<String>, GitError> {
        if !self.path.join(".git").exists() {
            return Ok(Some(
                "the lane is no longer a git worktree (was it or its .git deleted?)".into(),
            ));
        }
        if !self.is_ancestor(base, "HEAD").await {
            return Ok(Some(format!(
                "the attempt's base {} is no longer in the history of the lane's HEAD (history was rewritten)",
                short(base)
            )));
        }
        Ok(None)
    }

    /// The commit the loop's checkpoint ref (its branch, or HEAD when detached) points at.
    pub async fn checkpoint_tip(&self) -> Result<Option<String>, GitError> {
        let target = self
            .loop_branch()
            .await?
            .unwrap_or_else(|| "HEAD".to_string());
        let out = self
            .git()
            .await?
            .args(["rev-parse", "-q", "--verify"])
            .arg(format!("{target}^{{commit}}"))
            .output()
            .await?;
        Ok(out.success.then(|| out.stdout.trim().to_string()))
    }

    /// The tests (`Loopd-Test` trailers) of the commits in `tip`'s history that are not in
    /// `base`'s, oldest first, once each: the work merged since a lane started.
    pub async fn tests_merged_between(
        &self,
        base: &str,
        tip: &str,
    ) -> Result<Vec<String>, GitError> {
        let out = self
            .git()
            .await?
            .args([
                "log",
                "--reverse",
                "--format=%(trailers:key=Loopd-Test,valueonly,separator=%x0a)",
            ])
            .arg(format!("{base}..{tip}"))
            .arg("--")
            .run()
            .await?;
        let mut tests: Vec<String> = Vec::new();
        for t in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !tests.iter().any(|x| x == t) {
                tests.push(t.to_string());
            }
        }
        Ok(tests)
    }

    async fn remove_worktree(&self, path: &Path) -> Result<(), GitError> {
        let removed = self
            .git()
            .await?
            .args(["worktree", "remove", "--force", "--force"])
            .arg(path)
            .output()
            .await?;
        if !removed.success {
            // A worktree whose `.git` file is gone: git no longer calls it one.
            remove_any(path).await.map_err(io(path))?;
        }
        self.git().await?.args(["worktree", "prune"]).run().await?;
        Ok(())
    }
}

/// The path with symbolic links resolved (git lists worktrees so), or as given when absent.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

async fn remove_any(path: &Path) -> std::io::Result<()> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GitError + '_ {
    move |e| GitError::Workdir {
        workdir: path.to_path_buf(),
        message: format!("loopd could not tidy the lanes folder: {e}"),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}
