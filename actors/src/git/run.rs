//! Running one git command in a workdir, unattended.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::GitError;

/// Longest stderr kept in an error.
const MAX_STDERR: usize = 4000;

/// What a git command printed, and whether it succeeded.
pub(super) struct Output {
    /// Exit status 0.
    pub success: bool,
    /// Stdout, lossily decoded.
    pub stdout: String,
    /// Stderr, lossily decoded and trimmed.
    pub stderr: String,
}

/// One git command being put together.
pub(super) struct Git<'a> {
    workdir: &'a Path,
    args: Vec<OsString>,
    index_file: Option<PathBuf>,
}

impl<'a> Git<'a> {
    pub(super) fn new(workdir: &'a Path) -> Self {
        Git {
            workdir,
            args: Vec::new(),
            index_file: None,
        }
    }

    pub(super) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub(super) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Use this index instead of the repository's (`GIT_INDEX_FILE`).
    pub(super) fn index_file(mut self, path: &Path) -> Self {
        self.index_file = Some(path.to_path_buf());
        self
    }

    fn describe(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .map(|a| {
                if a.len() > 80 {
                    format!("{}…", &a[..a.floor_char_boundary_compat(80)])
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs it; a non-zero exit is not an error here.
    pub(super) async fn output(self) -> Result<Output, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(&self.args)
            .current_dir(self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_EDITOR", "true")
            .env("GIT_PAGER", "cat")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "commit.gpgsign")
            .env("GIT_CONFIG_VALUE_0", "false");
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_PREFIX",
            "GIT_OBJECT_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        crate::process::without_private_env(&mut cmd);
        if let Some(index) = &self.index_file {
            cmd.env("GIT_INDEX_FILE", index);
        }
        let out = cmd.output().await.map_err(|source| GitError::Spawn {
            workdir: self.workdir.to_path_buf(),
            command: self.describe(),
            source,
        })?;
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.len() > MAX_STDERR {
            let end = stderr.floor_char_boundary_compat(MAX_STDERR);
            stderr.truncate(end);
            stderr.push('…');
        }
        Ok(Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }

    /// Runs it and returns stdout; a non-zero exit is a [`GitError::Command`].
    pub(super) async fn run(self) -> Result<String, GitError> {
        let workdir = self.workdir.to_path_buf();
        let command = self.describe();
        let out = self.output().await?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(GitError::Command {
                workdir,
                command,
                stderr: out.stderr,
            })
        }
    }
}

/// `str::floor_char_boundary` is not stable on our minimum Rust version.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        let mut i = index.min(self.len());
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}
