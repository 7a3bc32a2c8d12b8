//! Ownership of a state directory: one `run` or `serve` at a time holds an exclusive lock on
//! `<state_dir>/lock` and describes itself in `<state_dir>/daemon.json` (pid, process start time,
//! API address) so that client commands can find it or say who holds it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

/// What `daemon.json` says about the process that holds the state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonInfo {
    /// Its pid.
    pub pid: i32,
    /// Its start time (field 22 of /proc/<pid>/stat), so a reused pid is not mistaken for it.
    pub start_time: u64,
    /// `run` or `serve`.
    pub command: String,
    /// Where its API listens, once it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

impl DaemonInfo {
    /// True when the process described is still the one running under that pid.
    pub fn is_alive(&self) -> bool {
        crate::process::proc_start_time(self.pid) == Some(self.start_time)
    }
}

/// Why the state directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another loopd holds it.
    #[error("the state directory {dir} is in use by `loopd {}` (pid {})", .info.as_ref().map(|i| i.command.as_str()).unwrap_or("?"), .info.as_ref().map(|i| i.pid.to_string()).unwrap_or_else(|| "unknown".into()))]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// What its daemon.json says, if readable.
        info: Option<DaemonInfo>,
    },
    /// The folder or lock file could not be created.
    #[error("cannot use the state directory {dir}: {source}")]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Holds the state directory until dropped (then removes `daemon.json`).
#[derive(Debug)]
pub struct StateDirLock {
    dir: PathBuf,
    _file: File,
}

impl StateDirLock {
    /// Takes the state directory for `command` (`run` or `serve`), creating it if needed.
    pub fn acquire(dir: &Path, command: &str) -> Result<StateDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        if file.try_lock_exclusive().is_err() {
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                info: read_info(dir),
            });
        }
        let pid = std::process::id() as i32;
        let info = DaemonInfo {
            pid,
            start_time: crate::process::proc_start_time(pid).unwrap_or(0),
            command: command.to_string(),
            addr: None,
        };
        let lock = StateDirLock {
            dir: dir.to_path_buf(),
            _file: file,
        };
        lock.write_info(&info).map_err(io)?;
        Ok(lock)
    }

    /// Rewrites `daemon.json` (atomically: write then rename).
    pub fn write_info(&self, info: &DaemonInfo) -> std::io::Result<()> {
        let tmp = self.dir.join("daemon.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
        std::fs::rename(tmp, self.dir.join("daemon.json"))
    }
}

impl Drop for StateDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("daemon.json"));
    }
}

/// What `daemon.json` in `dir` says, when a live process holds the directory.
pub fn live_daemon(dir: &Path) -> Option<DaemonInfo> {
    read_info(dir).filter(DaemonInfo::is_alive)
}

fn read_info(dir: &Path) -> Option<DaemonInfo> {
    let raw = std::fs::read(dir.join("daemon.json")).ok()?;
    serde_json::from_slice(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDirLock::acquire(dir.path(), "run").unwrap();
        let live = live_daemon(dir.path()).unwrap();
        assert_eq!(live.pid, std::process::id() as i32);
        // flock is per open file description, so a second open in this process conflicts too.
        let err = StateDirLock::acquire(dir.path(), "serve").unwrap_err();
        assert!(err.to_string().contains("in use by `loopd run`"), "{err}");
        drop(first);
        assert!(live_daemon(dir.path()).is_none());
        StateDirLock::acquire(dir.path(), "serve").unwrap();
    }
}
