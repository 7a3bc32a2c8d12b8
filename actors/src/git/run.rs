//! Running one git command in a workdir, unattended, whatever the workdir's config says.
//!
//! The workdir belongs to an agent that may write anything into `.git`: hooks, and config that
//! makes git run programs. loopd's own git must never run them, never wait on a person, and never
//! outlive its timeout. So every command gets:
//! - hooks off (`core.hooksPath=/dev/null`: `--no-verify` skips two hooks, not `post-commit` or
//!   `reference-transaction`), no fsmonitor, no signing, no automatic gc (a detached `gc --auto`
//!   would keep locks after loopd's command returned), no pager, editor or terminal prompt;
//! - the clean, smudge and process commands of every filter driver the repository's config names
//!   blanked (see [`filter_overrides`]; textconv and external diff are off by flag where loopd
//!   diffs);
//! - `GIT_CEILING_DIRECTORIES` at the workdir's parent: with `.git` deleted, git must fail, not
//!   find an enclosing repository and reset or clean *that*; `GIT_WORK_TREE` at the workdir, so
//!   that a `core.worktree` the agent set cannot send `reset --hard` and `clean` elsewhere;
//! - its own process group, killed whole at the timeout.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::GitError;

/// Longest stderr kept in an error.
const MAX_STDERR: usize = 4000;

/// How long one git command may run before it is killed (with its process group) and reported
/// as timed out. Generous: `git add -A` of a large tree on a slow disk takes minutes, and
/// nothing loopd runs waits on a person or a program of the agent's.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Config every loopd git command runs with (as `GIT_CONFIG_KEY_n`, which outranks every file).
const HARDENED: &[(&str, &str)] = &[
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.editor", "true"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("log.showSignature", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
];

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
    config: Vec<(String, String)>,
    index_file: Option<PathBuf>,
    timeout: Duration,
}

impl<'a> Git<'a> {
    pub(super) fn new(workdir: &'a Path, timeout: Duration) -> Self {
        Git {
            workdir,
            args: Vec::new(),
            config: Vec::new(),
            index_file: None,
            timeout,
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

    /// Extra config for this command (identity, neutralised filter drivers).
    pub(super) fn config(mut self, pairs: &[(String, String)]) -> Self {
        self.config.extend_from_slice(pairs);
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

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("--no-pager")
            .args(&self.args)
            .current_dir(self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a timeout ends whatever git started too; dropping the
            // future (an actor killed mid-command) still kills git itself.
            .process_group(0)
            .kill_on_drop(true)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("GIT_EDITOR", "true")
            .env("GIT_SEQUENCE_EDITOR", "true")
            .env("GIT_PAGER", "cat")
            .env("PAGER", "cat")
            // `status` would otherwise take index.lock to refresh the index on the side.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C");
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_PREFIX",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR",
            "GIT_NAMESPACE",
            "GIT_EXTERNAL_DIFF",
            "GIT_TRACE",
            "GIT_CONFIG",
            "GIT_CONFIG_PARAMETERS",
        ] {
            cmd.env_remove(var);
        }
        let workdir = absolute(self.workdir);
        if let Some(parent) = workdir.parent() {
            cmd.env("GIT_CEILING_DIRECTORIES", parent);
        }
        // Outranks `core.worktree`, which an agent could point at another folder for loopd's
        // `reset --hard` and `clean` to wipe. (`init` refuses it without GIT_DIR, and has no
        // repository config to distrust yet.)
        if self.args.first().is_none_or(|a| a != "init") {
            cmd.env("GIT_WORK_TREE", &workdir);
        }
        let config: Vec<(&str, &str)> = HARDENED
            .iter()
            .copied()
            .chain(self.config.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        crate::process::without_private_env(&mut cmd);
        if let Some(index) = &self.index_file {
            cmd.env("GIT_INDEX_FILE", index);
        }
        cmd
    }

    /// Runs it; a non-zero exit is not an error here, a timeout is.
    pub(super) async fn output(self) -> Result<Output, GitError> {
        let spawn_error = |source| GitError::Spawn {
            workdir: self.workdir.to_path_buf(),
            command: self.describe(),
            source,
        };
        let child = self.command().spawn().map_err(spawn_error)?;
        let pgid = child.id().map(|p| p as i32);
        let finished = child.wait_with_output();
        tokio::pin!(finished);
        let out = tokio::select! {
            out = &mut finished => out.map_err(spawn_error)?,
            _ = tokio::time::sleep(self.timeout) => {
                // The leader is not reaped while `finished` lives, so the group id cannot have
                // been reused: kill the group (a filter, a hook, git itself) before letting go.
                if let Some(pgid) = pgid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(GitError::TimedOut {
                    workdir: self.workdir.to_path_buf(),
                    command: self.describe(),
                    after: self.timeout,
                });
            }
        };
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

/// `-c` pairs that blank every filter driver named in `config_names` (the output of
/// `git config --name-only --list`): an agent's `.gitattributes` plus `filter.x.clean = sleep
/// 100000` would otherwise run inside loopd's `add`, `status` and `reset`. A filter marked
/// `required` would then fail the command, so that is turned off too; the files are stored as
/// they are in the working tree.
pub(super) fn filter_overrides(config_names: &str) -> Vec<(String, String)> {
    let mut drivers: Vec<&str> = Vec::new();
    for name in config_names.lines() {
        let Some(rest) = name.strip_prefix("filter.") else {
            continue;
        };
        if let Some((driver, _key)) = rest.rsplit_once('.') {
            if !drivers.contains(&driver) {
                drivers.push(driver);
            }
        }
    }
    drivers
        .into_iter()
        .flat_map(|d| {
            ["clean", "smudge", "process"]
                .into_iter()
                .map(move |k| (format!("filter.{d}.{k}"), String::new()))
                .chain(std::iter::once((
                    format!("filter.{d}.required"),
                    "false".to_string(),
                )))
        })
        .collect()
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
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
