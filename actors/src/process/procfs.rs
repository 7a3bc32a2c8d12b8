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

pub(crate) fn read_stat(pid: i32) -> Option<Stat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &line)
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
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u128;
    let since_boot = at
        .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(btime))
        .ok()?;
    Some((since_boot.as_millis() * tick / 1000) as u64)
}

/// Every process visible in `/proc` (processes that vanish while being read are skipped).
pub(crate) fn all_processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
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
    fn ticks_at_brackets_own_start_time() {
        let me = proc_start_time(std::process::id() as i32).unwrap();
        let now = ticks_at(std::time::SystemTime::now()).unwrap();
        assert!(now >= me, "now {now} before own start {me}");
        assert_eq!(ticks_at(std::time::UNIX_EPOCH), None);
    }
}
