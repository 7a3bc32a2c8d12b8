//! The processes of one attempt, found in one pass over `/proc`: its recorded process group,
//! and what left the group (`setsid`, a double fork whose middle process exited).
//!
//! A process that left the group is reparented to init and has a new group or session, so
//! neither `killpg` nor the parent chain leads to it. What it still has is the environment it
//! inherited: every agent and verify carries the attempt's unique `LOOPD_ATTEMPT_KEY`. A process
//! is the attempt's when
//! - it is a live member of the recorded group, by the group ownership rule ([`super`]), or
//! - its environment holds the key, or its parent, its group leader or its session leader is
//!   one of the attempt's processes (this catches a child that cleared its environment, as
//!   long as it stays in the session or under the process that escaped),
//!
//! and, for the last two, it started in this boot no earlier than the attempt's process (so a
//! process that happens to carry a copy of the key but predates the attempt is never touched).
//! A process that both clears its environment and leaves every group and session of the
//! attempt, after its parent exited, cannot be told apart from any other process of the user:
//! only a pid namespace or a cgroup (the sandbox) catches that.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::model::ProcessRecord;

use super::procfs::{self, PidMark, Stat};
use super::Spawned;

/// What identifies the processes of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The agent's (or verify's) recorded process group, when there is one.
    pub group: Option<ProcessRecord>,
    /// `LOOPD_ATTEMPT_KEY=<value>` as it appears in `/proc/<pid>/environ`; `None` tracks the
    /// group only.
    key: Option<Vec<u8>>,
    /// The boot in which `since` counts.
    boot_id: String,
    /// Start time (clock ticks after boot) before which no process is the attempt's.
    since: u64,
    /// Taken before the leader was spawned: only processes started since are read.
    mark: Option<PidMark>,
}

impl Tracked {
    /// The group `record` only (no key: what left the group is not looked for).
    pub fn group(record: &ProcessRecord) -> Tracked {
        Tracked {
            group: Some(record.clone()),
            key: None,
            boot_id: record.boot_id.clone(),
            since: record.start_time,
            mark: None,
        }
    }

    /// What [`Tracked::attempt`] tracks, for a group this loopd spawned (and marked).
    pub fn spawned(spawned: &Spawned, key: &str) -> Tracked {
        Tracked {
            mark: spawned.mark,
            ..Tracked::attempt(&spawned.record, key)
        }
    }

    /// The group `record` and every process that carries `key` (the attempt's
    /// `LOOPD_ATTEMPT_KEY`) and started no earlier than the group's leader.
    pub fn attempt(record: &ProcessRecord, key: &str) -> Tracked {
        Tracked {
            key: Some(key_entry(key)),
            ..Tracked::group(record)
        }
    }

    /// After a crash: the attempt that started at `started_at` (its record's time) with `key`,
    /// and its group when it was recorded. `None` when the attempt started before this boot
    /// (nothing of it can be alive).
    pub fn after_crash(
        record: Option<&ProcessRecord>,
        key: &str,
        started_at: SystemTime,
    ) -> Option<Tracked> {
        if let Some(r) = record {
            return Some(Tracked::attempt(r, key));
        }
        // The record's clock and the kernel's boot time agree to within the second that btime
        // rounds off; a second of slack keeps the agent itself, spawned just after, inside.
        let since = procfs::ticks_at(started_at)?.saturating_sub(procfs::ticks_per_second());
        Some(Tracked {
            group: None,
            key: Some(key_entry(key)),
            boot_id: procfs::boot_id(),
            since,
            mark: None,
        })
    }

    /// Whether only the recorded group is tracked.
    pub(crate) fn group_only(&self) -> bool {
        self.key.is_none()
    }
}

fn key_entry(key: &str) -> Vec<u8> {
    format!("LOOPD_ATTEMPT_KEY={key}").into_bytes()
}

/// The live processes of an attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Live members of the recorded group (empty when the group is not ours).
    pub group: Vec<i32>,
    /// Processes outside the group that are the attempt's, with their start times (to check,
    /// right before a signal, that the pid still names the same process).
    pub escaped: Vec<(i32, u64)>,
}

impl Members {
    /// How many processes in all.
    pub fn len(&self) -> usize {
        self.group.len() + self.escaped.len()
    }

    /// No process of the attempt is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The live processes of `tracked`, from one read of `/proc` (of the processes started since
/// its mark when it has one). Blocking: call it from
/// `spawn_blocking` in async code.
pub fn members(tracked: &Tracked) -> Members {
    if tracked.boot_id != procfs::boot_id() {
        return Members::default();
    }
    let all = tracked
        .mark
        .as_ref()
        .and_then(procfs::processes_since)
        .unwrap_or_else(procfs::all_processes);
    let group = tracked
        .group
        .as_ref()
        .map(|r| group_of(r, &all))
        .unwrap_or_default();
    let Some(key) = &tracked.key else {
        return Members {
            group,
            escaped: Vec::new(),
        };
    };
    let me = std::process::id() as i32;
    let in_group: HashSet<i32> = group.iter().copied().collect();
    let candidates: Vec<&Stat> = all
        .iter()
        .filter(|p| {
            !p.is_zombie()
                && p.start_time >= tracked.since
                && p.pid != me
                && !in_group.contains(&p.pid)
        })
        .collect();
    let mut ours: HashSet<i32> = in_group.clone();
    let mut escaped: HashMap<i32, u64> = candidates
        .iter()
        .filter(|p| procfs::environ_has(p.pid, key))
        .map(|p| (p.pid, p.start_time))
        .collect();
    ours.extend(escaped.keys());
    // Descendants, and members of groups and sessions that one of ours leads, until nothing
    // more joins (a chain is short: a few rounds).
    loop {
        let before = escaped.len();
        for p in &candidates {
            if !escaped.contains_key(&p.pid)
                && (ours.contains(&p.ppid) || ours.contains(&p.pgrp) || ours.contains(&p.session))
            {
                escaped.insert(p.pid, p.start_time);
                ours.insert(p.pid);
            }
        }
        if escaped.len() == before {
            break;
        }
    }
    let mut escaped: Vec<(i32, u64)> = escaped.into_iter().collect();
    escaped.sort_unstable();
    Members { group, escaped }
}

/// Live members of `record`'s group by the ownership rule: empty when any member (zombies
/// included) started before the recorded leader, or the leader's pid names another process.
fn group_of(record: &ProcessRecord, all: &[Stat]) -> Vec<i32> {
    if record.pid <= 1 {
        return Vec::new();
    }
    let mut alive = Vec::new();
    for p in all.iter().filter(|p| p.pgrp == record.pid) {
        if p.start_time < record.start_time
            || (p.pid == record.pid && p.start_time != record.start_time)
        {
            return Vec::new();
        }
        if !p.is_zombie() {
            alive.push(p.pid);
        }
    }
    alive.sort_unstable();
    alive
}

/// Sends `signal` to `pid` only while it is the process that started at `start_time`.
pub(crate) fn signal_same(pid: i32, start_time: u64, signal: nix::sys::signal::Signal) -> bool {
    // The pid was read a moment ago; re-reading its start time right before the signal keeps a
    // pid reused in between from being signalled.
    procfs::read_stat(pid).is_some_and(|s| s.start_time == start_time && !s.is_zombie())
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok()
}
