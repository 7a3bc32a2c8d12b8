//! The few facts loopd reads from `/proc`: boot id, start times, process groups, states.

use std::sync::OnceLock;

/// `/proc/sys/kernel/random/boot_id`, read once: it changes only with a reboot.
pub fn boot_id() -> String {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// Field 22 of `/proc/<pid>/stat` (clock ticks after boot when the process started), or `None`
/// when there is no such process.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// True while the process `pid` that started at `start_time` runs: not gone, not a zombie
/// waiting for its parent, not a newer process under a reused pid.
pub fn still_running(pid: i32, start_time: u64) -> bool {
    read_stat(pid).is_some_and(|s| s.start_time == start_time && !s.is_zombie())
}

/// The parts of `/proc/<pid>/stat` loopd needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The process id.
    pub pid: i32,
    /// Field 3: R, S, D, Z, T, X, ...
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: i32,
    /// Field 5: the process group id.
    pub pgrp: i32,
    /// Field 6: the session id.
    pub session: i32,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

impl Stat {
    /// Zombies (and dead tasks) are not alive: they only wait to be reaped.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one stat line. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from after the *last* `)`.
pub(crate) fn parse_stat(pid: i32, line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3, so field N is at index N - 3.
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// One open and one read: a stat line is a few hundred bytes. Not UTF-8 checked as a whole:
/// a process can give itself a name that is not UTF-8 (`/proc/self/comm`), and must not become
/// invisible by it.
pub(crate) fn read_stat(pid: i32) -> Option<Stat> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]).ok()? {
            0 => break,
            n => len += n,
        }
    }
    parse_stat(pid, &String::from_utf8_lossy(&buf[..len]))
}

/// Whether `/proc/<pid>/environ` holds `entry` (`NAME=value`) exactly. False when it cannot be
/// read: a process of another user, one that made itself non-dumpable, or one that is gone.
pub(crate) fn environ_has(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == entry))
}

/// The start time (in the clock ticks of `/proc/<pid>/stat` field 22) of a process that started
/// at `at` in this boot, or `None` when `at` lies before this boot. Seconds of the boot time
/// (`btime` in `/proc/stat`) are whole, so the answer may be up to a second early.
pub fn ticks_at(at: std::time::SystemTime) -> Option<u64> {
    let btime = stat_field("btime")?;
    let tick = u128::from(ticks_per_second());
    let since_boot = at
        .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(btime))
        .ok()?;
    Some((since_boot.as_millis() * tick / 1000) as u64)
}

/// Every process visible in `/proc` (processes that vanish while being read are skipped).
pub(crate) fn all_processes() -> Vec<Stat> {
    pids().into_iter().filter_map(read_stat).collect()
}

fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Where the kernel's pid allocation stood at one moment (taken just before a spawn), so that
/// a later look for the processes started since reads only those ([`processes_since`]) and not
/// every process of the machine: two looks an attempt, each a read of every `/proc/<pid>/stat`,
/// were most of what an attempt cost loopd on a machine with a few hundred processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidMark {
    /// The last pid handed out in loopd's pid namespace (`/proc/loadavg`, field 5).
    last_pid: i32,
    /// Threads of the whole machine (`/proc/loadavg`, field 4, after the `/`).
    threads: u64,
    /// Forks (processes and threads) since boot, in every namespace (`processes` of
    /// `/proc/stat`).
    forks: u64,
}

/// Pids below this are never handed out again after the first lap (the kernel's
/// `RESERVED_PIDS`).
const RESERVED_PIDS: u64 = 300;

/// The mark now; `None` when `/proc` does not say (then every look reads all of `/proc`).
pub fn pid_mark() -> Option<PidMark> {
    // Forks first: counted no later than the cursor is read, the count since is never short.
    let forks = forks()?;
    let (threads, last_pid) = loadavg()?;
    Some(PidMark {
        last_pid,
        threads,
        forks,
    })
}

/// The processes whose pids were handed out after `mark`, or `None` when that cannot be told
/// for certain (the caller then reads every process).
///
/// The kernel hands out pids cyclically: each new pid is the first free one after the last,
/// wrapping to [`RESERVED_PIDS`] at `pid_max`. So until the cursor has gone once round, every
/// pid handed out since the mark lies in (mark, now], cyclically. The cursor moves one step per
/// pid handed out plus one per pid in use that it skips; a pid is in use because it was alive
/// at the mark (at most `threads` of them) or was handed out since (at most `forks`), so it has
/// moved at most `2 * forks + threads` steps, which must stay short of a lap.
///
/// A process that may write `/proc/sys/kernel/ns_last_pid` (CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE) can move the cursor and have a child outside the range; such a
/// process can as well trace loopd itself, and only a sandbox holds it.
pub(crate) fn processes_since(mark: &PidMark) -> Option<Vec<Stat>> {
    let listed = pids();
    // Read after the listing: a pid in it handed out after the mark is at most `last_pid`.
    let (_, last_pid) = loadavg()?;
    let forks = forks()?.checked_sub(mark.forks)?;
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if 2 * forks + mark.threads + RESERVED_PIDS >= pid_max {
        return None;
    }
    Some(
        listed
            .into_iter()
            .filter(|&p| in_cyclic_range(mark.last_pid, last_pid, p))
            .filter_map(read_stat)
            .collect(),
    )
}

/// Whether `pid` lies in (`from`, `to`], going round at `pid_max`.
fn in_cyclic_range(from: i32, to: i32, pid: i32) -> bool {
    if from <= to {
        pid > from && pid <= to
    } else {
        pid > from || pid <= to
    }
}

/// `processes` of `/proc/stat`.
fn forks() -> Option<u64> {
    stat_field("processes")
}

/// The number on the line `name` of `/proc/stat` (`btime`, `processes`).
fn stat_field(name: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s start time.
pub(crate) fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64
}

/// The threads of the machine and the last pid of loopd's namespace, from `/proc/loadavg`
/// (`0.50 0.40 0.30 2/139 2999`).
fn loadavg() -> Option<(u64, i32)> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().skip(3);
    let threads = fields.next()?.split_once('/')?.1.parse().ok()?;
    let last_pid = fields.next()?.parse().ok()?;
    Some((threads, last_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(4242, line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.session, 4242);
        assert_eq!(stat.start_time, 987654);
        assert!(!stat.is_zombie());
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse_stat(1, "no parenthesis here"), None);
        assert_eq!(parse_stat(1, "1 (x) S 1"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let stat = read_stat(me).unwrap();
        assert_eq!(stat.pid, me);
        assert_eq!(stat.start_time, proc_start_time(me).unwrap());
        assert!(all_processes().iter().any(|p| p.pid == me));
        assert_eq!(boot_id().len(), 36);
    }

    #[test]
    fn a_name_that_is_not_utf8_does_not_hide_a_process() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .args([
                "-c",
                "printf '\\377\\376x' > /proc/$$/comm && echo ready && read x",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = child.id() as i32;
        let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap();
        let stat = read_stat(pid);
        drop(child.stdin.take());
        let _ = child.wait();
        assert!(std::str::from_utf8(&comm).is_err(), "{comm:?}");
        assert_eq!(stat.map(|s| s.pid), Some(pid));
    }

    #[test]
    fn processes_since_a_mark_are_the_ones_spawned_after_it() {
        use std::process::Command;
        let mut before = Command::new("sleep").arg("30").spawn().unwrap();
        let mark = pid_mark().expect("/proc/stat and /proc/loadavg are readable here");
        let mut after = Command::new("sleep").arg("30").spawn().unwrap();
        let since = processes_since(&mark).expect("no lap of the pid space in a moment");
        let pids: Vec<i32> = since.iter().map(|s| s.pid).collect();
        let (b, a) = (before.id() as i32, after.id() as i32);
        for c in [&mut before, &mut after] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(pids.contains(&a), "{a} not in {pids:?}");
        assert!(!pids.contains(&b), "{b} in {pids:?}");
    }

    #[test]
    fn the_range_since_a_mark_wraps_at_pid_max() {
        // No wrap: (100, 200].
        assert!(in_cyclic_range(100, 200, 150));
        assert!(in_cyclic_range(100, 200, 200));
        assert!(!in_cyclic_range(100, 200, 100));
        assert!(!in_cyclic_range(100, 200, 201));
        assert!(!in_cyclic_range(100, 200, 50));
        // Wrapped past pid_max: (32000, max] and [low, 400].
        assert!(in_cyclic_range(32000, 400, 32500));
        assert!(in_cyclic_range(32000, 400, 301));
        assert!(!in_cyclic_range(32000, 400, 401));
        assert!(!in_cyclic_range(32000, 400, 31999));
        // Nothing handed out since.
        assert!(!in_cyclic_range(100, 100, 100));
        assert!(!in_cyclic_range(100, 100, 101));
    }

    #[test]
    fn ticks_at_brackets_own_start_time() {
        let me = proc_start_time(std::process::id() as i32).unwrap();
        let now = ticks_at(std::time::SystemTime::now()).unwrap();
        assert!(now >= me, "now {now} before own start {me}");
        assert_eq!(ticks_at(std::time::UNIX_EPOCH), None);
    }
}
