//! Agent process groups: spawn, record, end, reap.
//!
//! Every agent runs as the leader of its own process group, so that ending an attempt ends
//! everything the agent started (DESIGN.md, "Implementation notes: process groups"). A group is
//! recorded with its leader's pid, start time and the boot id; a group is *ours* only while the
//! boot id matches and no member started before the recorded leader, so a reused pid is never
//! signalled. Zombies (state `Z`) are never counted as alive.

mod env;
mod lines;
mod procfs;
mod tracked;

use std::io;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::model::ProcessRecord;

pub use env::{
    check_pattern, child_path, inherit_only, keep_from_children, matches, resolve_program,
    without_private_env, SESSION_VARS,
};
pub use lines::{LineReader, OnRead, Output, OutputLine, OutputStream, DEFAULT_MAX_LINE};
pub use procfs::{boot_id, pid_mark, proc_start_time, still_running, ticks_at, PidMark};
pub use tracked::{members, Members, Tracked};

/// How often group membership is re-read while waiting for members to go.
const POLL: Duration = Duration::from_millis(20);
/// How long `end_group` waits after SIGKILL before it gives up and reports survivors.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// A freshly spawned agent: the child to wait on and read from, and the record to store.
#[derive(Debug)]
pub struct Spawned {
    /// The group leader; stdout and stderr are piped and are the caller's to read.
    pub child: Child,
    /// What the store keeps so the group can be ended or reaped later, even after a crash.
    pub record: ProcessRecord,
    /// Where pid allocation stood just before the spawn: the attempt's processes are looked
    /// for among those started since (see [`PidMark`]).
    pub mark: Option<PidMark>,
}

/// Spawns `cmd` as the leader of a new process group with no stdin and piped stdout and stderr,
/// without the variables given to [`keep_from_children`].
///
/// `kill_on_drop` is off: dropping the child must never be the way an attempt ends (it would
/// kill the leader only); [`end_group`] ends the whole group.
pub fn spawn_group(mut cmd: Command) -> io::Result<Spawned> {
    without_private_env(&mut cmd);
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mark = pid_mark();
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("spawned child has no pid"))? as i32;
    // The child is not reaped until someone waits on it, so its /proc entry is still there
    // (as a zombie at worst) and the start time can always be read here.
    let start_time = proc_start_time(pid).ok_or_else(|| {
        io::Error::other(format!(
            "cannot read the start time of pid {pid} from /proc"
        ))
    })?;
    Ok(Spawned {
        child,
        record: ProcessRecord {
            pid,
            start_time,
            boot_id: boot_id(),
        },
        mark,
    })
}

/// What [`end_group`] and [`end_attempt`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndReport {
    /// Live processes (group members and escaped ones) when they were asked to end (0: nothing
    /// of ours was running).
    pub members: usize,
    /// Of `members`, those outside the recorded group (they left it, or it was never recorded).
    pub escaped: usize,
    /// SIGTERM was sent.
    pub terminated: bool,
    /// Processes outlived the grace period and SIGKILL was sent.
    pub killed: bool,
    /// Processes still alive when the bounded wait after SIGKILL ran out (0 normally).
    pub survivors: usize,
}

/// Live members of the group `record.pid` that are ours by DESIGN.md's ownership rule.
///
/// Empty when the boot id differs, when any member (zombies included) started before the
/// recorded leader, or when a process with the leader's pid exists with another start time.
/// Zombies are not returned. Reads `/proc`: call it from `spawn_blocking` in async code when the
/// machine runs many processes (the async functions of this module do).
pub fn group_members(record: &ProcessRecord) -> Vec<i32> {
    if group_gone(record) {
        return Vec::new();
    }
    tracked::members(&Tracked::group(record)).group
}

/// Fast path: signal 0 to the group says whether any process (zombies included) is in it,
/// without reading every /proc entry. Most groups are gone by the time they are asked about.
fn group_gone(record: &ProcessRecord) -> bool {
    record.pid <= 1
        || matches!(
            killpg(Pid::from_raw(record.pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

async fn members_async(tracked: &Tracked) -> Members {
    // Without a key only the group counts, and the probe is one syscall: answer "gone" here,
    // and leave only the /proc scan to a blocking thread.
    if tracked.group_only() && tracked.group.as_ref().is_none_or(group_gone) {
        return Members::default();
    }
    let tracked = tracked.clone();
    tokio::task::spawn_blocking(move || tracked::members(&tracked))
        .await
        .unwrap_or_default()
}

/// Signals what of `tracked` is still alive and ours; returns what was alive (empty when
/// nothing was signalled).
async fn signal_if_ours(tracked: &Tracked, signal: Signal) -> Members {
    let members = members_async(tracked).await;
    if let (false, Some(g)) = (members.group.is_empty(), &tracked.group) {
        // A process group id cannot be reused while any member (zombies included) exists, so
        // the check above still holds when the signal is delivered.
        let _ = killpg(Pid::from_raw(g.pid), signal);
    }
    for &(pid, start_time) in &members.escaped {
        tracked::signal_same(pid, start_time, signal);
    }
    members
}

/// Waits until nothing of `tracked` is alive or `limit` has passed; returns the live count.
/// With `resignal`, what is still alive is signalled again on every look (a process that
/// forks while it is being killed leaves a child that the first signal missed).
async fn wait_gone(tracked: &Tracked, limit: Duration, resignal: Option<Signal>) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = match resignal {
            Some(s) => signal_if_ours(tracked, s).await.len(),
            None => members_async(tracked).await.len(),
        };
        if left == 0 || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends a process group we started: SIGTERM to the group, up to `grace` for every member to go,
/// then SIGKILL to the group (grandchildren included, even when the leader already exited).
///
/// Returns once no member is left, or after a bounded wait past SIGKILL (then `survivors` says
/// how many remain). Signals nothing when the group is not ours any more. The leader, if it is
/// the caller's `Child`, stays a zombie until the caller waits on it.
pub async fn end_group(record: &ProcessRecord, grace: Duration) -> EndReport {
    end_tracked(&Tracked::group(record), grace).await
}

/// Ends every process of an attempt: the group of `spawned` and whatever left it but carries
/// the attempt's `key` (see [`Tracked`]), as [`end_group`] does for the group alone.
pub async fn end_attempt(spawned: &Spawned, key: &str, grace: Duration) -> EndReport {
    end_tracked(&Tracked::spawned(spawned, key), grace).await
}

/// Ends the processes of `tracked`: SIGTERM, up to `grace`, then SIGKILL (repeated while any
/// is left, for a bounded time).
pub async fn end_tracked(tracked: &Tracked, grace: Duration) -> EndReport {
    let found = members_async(tracked).await;
    let mut report = EndReport {
        members: found.len(),
        escaped: found.escaped.len(),
        ..EndReport::default()
    };
    if report.members == 0 {
        return report;
    }
    report.terminated = !signal_if_ours(tracked, Signal::SIGTERM).await.is_empty();
    // A process found by its link to another (an `env -i` child of an escaped session leader)
    // is no longer found once that one is gone: what was found first is followed by pid and
    // start time to the end.
    let found_left = || {
        found
            .escaped
            .iter()
            .filter(|(pid, start)| {
                procfs::read_stat(*pid).is_some_and(|s| s.start_time == *start && !s.is_zombie())
            })
            .count()
    };
    if wait_gone(tracked, grace, None).await == 0 && found_left() == 0 {
        return report;
    }
    let mut killed = !signal_if_ours(tracked, Signal::SIGKILL).await.is_empty();
    for &(pid, start) in &found.escaped {
        killed |= tracked::signal_same(pid, start, Signal::SIGKILL);
    }
    report.killed = killed;
    report.survivors = wait_gone(tracked, AFTER_KILL, Some(Signal::SIGKILL)).await;
    let deadline = tokio::time::Instant::now() + AFTER_KILL;
    while found_left() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    report.survivors += found_left();
    report
}

/// After a crash: ends the survivors of a recorded group (same ownership rule) and returns how
/// many live members there were.
pub async fn reap_orphans(record: &ProcessRecord, grace: Duration) -> usize {
    end_group(record, grace).await.members
}

#[cfg(test)]
mod tests;
