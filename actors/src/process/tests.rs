use std::time::{Duration, Instant};

use super::*;

fn sh(script: &str) -> Spawned {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    spawn_group(cmd).expect("spawn sh")
}

/// Kills the group with SIGKILL when a test fails half-way, so no sleeper outlives the tests.
struct Cleanup(i32);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

async fn wait_for_members(record: &ProcessRecord, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = group_members(record);
        if members.len() >= n || Instant::now() > deadline {
            return members;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Alive means: a /proc entry that is not a zombie.
fn alive(pid: i32) -> bool {
    procfs::read_stat(pid).is_some_and(|s| !s.is_zombie())
}

#[tokio::test]
async fn records_the_leader() {
    let mut spawned = sh("exit 0");
    let record = spawned.record.clone();
    assert_eq!(record.pid, spawned.child.id().unwrap() as i32);
    assert_eq!(record.boot_id, boot_id());
    assert!(record.start_time > 0);
    assert!(spawned.child.stdout.is_some() && spawned.child.stderr.is_some());
    spawned.child.wait().await.unwrap();
}

#[tokio::test]
async fn end_group_ends_every_member() {
    let mut spawned = sh("sleep 100 & sleep 100 & wait");
    let record = spawned.record.clone();
    let _cleanup = Cleanup(record.pid);
    let members = wait_for_members(&record, 3).await;
    assert_eq!(members.len(), 3, "sh and two sleeps: {members:?}");

    let report = end_group(&record, Duration::from_secs(5)).await;
    assert_eq!(report.members, 3);
    assert!(report.terminated);
    assert!(!report.killed, "sleep and sh die of SIGTERM");
    assert_eq!(report.survivors, 0);
    assert!(group_members(&record).is_empty());
    for pid in members {
        assert!(!alive(pid), "{pid} survived");
    }
    let status = spawned.child.wait().await.unwrap();
    assert!(!status.success());
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_grace() {
    let mut spawned = sh("trap '' TERM; sleep 100 & sleep 100; wait");
    let record = spawned.record.clone();
    let _cleanup = Cleanup(record.pid);
    let members = wait_for_members(&record, 3).await;
    assert_eq!(members.len(), 3);

    let started = Instant::now();
    let grace = Duration::from_millis(300);
    let report = end_group(&record, grace).await;
    assert!(started.elapsed() >= grace);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(report.terminated && report.killed);
    assert_eq!(report.survivors, 0);
    for pid in members {
        assert!(!alive(pid), "{pid} survived SIGKILL");
    }
    spawned.child.wait().await.unwrap();
}

#[tokio::test]
async fn grandchildren_of_a_dead_leader_are_ended() {
    let mut spawned = sh("sleep 100 & sleep 100 & exit 0");
    let record = spawned.record.clone();
    let _cleanup = Cleanup(record.pid);
    assert!(spawned.child.wait().await.unwrap().success());
    let orphans = wait_for_members(&record, 2).await;
    assert_eq!(orphans.len(), 2, "two sleeps outlive their leader");
    assert!(!orphans.contains(&record.pid));

    let report = end_group(&record, Duration::from_secs(5)).await;
    assert_eq!(report.members, 2);
    assert_eq!(report.survivors, 0);
    for pid in orphans {
        assert!(!alive(pid));
    }
}

#[tokio::test]
async fn reap_orphans_counts_and_ends_survivors() {
    let mut spawned = sh("sleep 100 & exit 0");
    let record = spawned.record.clone();
    let _cleanup = Cleanup(record.pid);
    spawned.child.wait().await.unwrap();
    let orphans = wait_for_members(&record, 1).await;
    assert_eq!(orphans.len(), 1);

    assert_eq!(reap_orphans(&record, Duration::from_secs(5)).await, 1);
    assert!(!alive(orphans[0]));
    assert_eq!(reap_orphans(&record, Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn a_group_that_is_not_ours_is_never_signalled() {
    let mut spawned = sh("sleep 100 & wait");
    let record = spawned.record.clone();
    let _cleanup = Cleanup(record.pid);
    let members = wait_for_members(&record, 2).await;
    assert_eq!(members.len(), 2);

    // The recorded leader started later than the processes now in the group: a reused pid.
    let later = ProcessRecord {
        start_time: record.start_time + 1_000,
        ..record.clone()
    };
    // Same start time on another boot.
    let other_boot = ProcessRecord {
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        ..record.clone()
    };
    // The leader pid exists, but with an earlier start time than the one recorded for it.
    let earlier = ProcessRecord {
        start_time: record.start_time.saturating_sub(1),
        ..record.clone()
    };
    for wrong in [later, other_boot, earlier] {
        assert!(group_members(&wrong).is_empty(), "{wrong:?}");
        let report = end_group(&wrong, Duration::from_millis(50)).await;
        assert_eq!(report, EndReport::default());
        assert_eq!(reap_orphans(&wrong, Duration::from_millis(50)).await, 0);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for pid in &members {
        assert!(alive(*pid), "{pid} was signalled");
    }

    let report = end_group(&record, Duration::from_secs(5)).await;
    assert_eq!(report.members, 2);
    assert_eq!(report.survivors, 0);
    spawned.child.wait().await.unwrap();
}

#[tokio::test]
async fn spawn_failure_is_an_error() {
    let cmd = Command::new("/nonexistent/loopd-agent");
    assert!(spawn_group(cmd).is_err());
}

/// A key no other test uses (tests of this binary run at once).
fn unique_key(name: &str) -> String {
    format!("unit-{}-{name}", std::process::id())
}

/// Waits until `file` holds `n` pids, one a line.
async fn wait_for_pids(file: &std::path::Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.len() >= n || Instant::now() > deadline {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn end_attempt_ends_what_left_the_group_and_nothing_older() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let key = unique_key("escape");
    // Carries the attempt's key but started before the attempt: never ours.
    let mut decoy = Command::new("sleep");
    decoy.arg("100").env("LOOPD_ATTEMPT_KEY", &key);
    let decoy = spawn_group(decoy).unwrap();
    let _decoy_cleanup = Cleanup(decoy.record.pid);
    tokio::time::sleep(Duration::from_millis(20)).await;

    // A new session that keeps the key; a child of a new session that clears its environment;
    // a new group under a parent that then exits (a double fork).
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "setsid sleep 100 & echo $! >> {p}
             setsid sh -c 'env -i sleep 100 & echo $! >> {p}; wait' &
             sh -c 'setsid sleep 100 & echo $! >> {p}' &
             wait $!",
            p = pids.display()
        ))
        .env("LOOPD_ATTEMPT_KEY", &key);
    let mut spawned = spawn_group(cmd).unwrap();
    let record = spawned.record.clone();
    let escaped = wait_for_pids(&pids, 3).await;
    assert_eq!(escaped.len(), 3, "{escaped:?}");
    spawned.child.wait().await.unwrap();
    for &pid in &escaped {
        assert!(alive(pid), "{pid} died on its own");
        assert!(group_members(&record).iter().all(|m| *m != pid));
    }
    // The group alone misses them.
    assert_eq!(end_group(&record, Duration::from_secs(5)).await.members, 0);
    assert!(escaped.iter().all(|&p| alive(p)));

    let report = end_attempt(&spawned, &key, Duration::from_secs(5)).await;
    // The three sleeps and the session leader `sh` that waits on one of them.
    assert_eq!(report.members, 4, "{report:?}");
    assert_eq!(report.escaped, 4, "{report:?}");
    assert_eq!(report.survivors, 0);
    for pid in escaped {
        assert!(!alive(pid), "{pid} survived");
    }
    assert!(
        alive(decoy.record.pid),
        "a process older than the attempt was ended"
    );
}

#[tokio::test]
async fn after_a_crash_the_key_finds_an_unrecorded_agent() {
    let key = unique_key("crash");
    let started_at = std::time::SystemTime::now();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "setsid sleep 100 & wait"])
        .env("LOOPD_ATTEMPT_KEY", &key);
    let spawned = spawn_group(cmd).unwrap();
    let _cleanup = Cleanup(spawned.record.pid);
    let tracked = Tracked::after_crash(None, &key, started_at).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while members(&tracked).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(members(&tracked).len(), 2, "sh and its setsid sleep");
    assert_eq!(
        end_tracked(&tracked, Duration::from_secs(5)).await.members,
        2
    );
    assert!(members(&tracked).is_empty());
    // An attempt from before this boot has nothing alive.
    assert_eq!(
        Tracked::after_crash(None, &key, std::time::UNIX_EPOCH),
        None
    );
}
