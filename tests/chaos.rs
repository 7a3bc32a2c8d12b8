//! Crash safety: `kill -9` of `loopd run` at 20 random moments of a scripted fleet, restarting it
//! each time. At the end every test has passed, every attempt is recorded exactly once, no agent
//! process is left, and the store opens cleanly. The seed is printed; set `LOOPD_CHAOS_SEED` to
//! replay a run, `LOOPD_CHAOS_KILLS` to change the number of kills.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{pid_alive, Fleet, RUN_TIMEOUT};
use nix::sys::signal::Signal;
use serde_json::json;

/// A small deterministic generator (xorshift), so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every test's agent logs "<test> <attempt> <pid>", works a little, and fails the first
/// attempt of every third test (so resets and retries happen between kills too).
const AGENT: &str = r#"
echo "$LOOPD_TEST_ID $LOOPD_ATTEMPT $$" >> "$ROOT/agent.log"
sleep "0.$(( RANDOM % 3 + 1 ))"
n=${LOOPD_TEST_ID#T}
if [ $(( n % 3 )) = 0 ] && [ "$LOOPD_ATTEMPT" = 1 ]; then
  echo wrong > "$LOOPD_TEST_ID.out"
else
  echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.out"
fi
echo "done $LOOPD_TEST_ID"
"#;

#[test]
fn kill_dash_nine_at_random_moments_loses_nothing() {
    chaos(1);
}

/// The same with 4 lanes: attempts in worktrees, passes through the merge queue, kills in the
/// middle of either. Also: each test is merged onto the branch exactly once, and the worktrees
/// are the lanes, with no `index.lock` left.
#[test]
fn kill_dash_nine_at_random_moments_of_a_loop_with_four_lanes_loses_nothing() {
    chaos(4);
}

fn chaos(lanes: u32) {
    let seed: u64 = std::env::var("LOOPD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let kills: usize = std::env::var("LOOPD_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("chaos seed {seed} ({kills} kills); replay with LOOPD_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);

    let tests: Vec<_> = (1..=9)
        .map(|i| {
            let deps = if i > 1 && i % 2 == 1 {
                vec![format!("T{}", i - 1)]
            } else {
                vec![]
            };
            json!({"id": format!("T{i}"), "title": format!("test {i}"), "spec": "write the file",
                   "verify": format!("grep -qx T{i} T{i}.out"), "depends_on": deps})
        })
        .collect();
    let fleet = Fleet::new()
        .tests(json!(tests))
        .agent(AGENT)
        .set("max_attempts", "3")
        .set("lanes", &lanes.to_string())
        .fleet_set("max_concurrent_agents", &lanes.to_string())
        .write();

    for round in 0..kills {
        let running = fleet.spawn_run();
        let wait = Duration::from_millis(50 + rng.below(900));
        std::thread::sleep(wait);
        let mut running = running;
        if running.is_running() {
            running.signal(Signal::SIGKILL);
        }
        let run = running.wait(RUN_TIMEOUT);
        eprintln!("round {round}: killed after {wait:?} ({})", run.status);
    }

    let started = Instant::now();
    let run = fleet.run();
    run.expect_code(0);
    eprintln!("final run took {:?}", started.elapsed());

    // The store opens cleanly and every test passed.
    let status = fleet.loop_status();
    for t in status["tests"].as_array().unwrap() {
        assert_eq!(t["status"], "passed", "{t}");
    }

    // Every attempt is recorded once: numbers 1..=n per test, each finished with an outcome.
    let mut recorded: HashMap<(String, u64), String> = HashMap::new();
    for t in status["tests"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap().to_string();
        let attempts = fleet.attempts(&id);
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(
                a["number"].as_u64(),
                Some(i as u64 + 1),
                "{id}: {attempts:?}"
            );
            let outcome = a["outcome"]
                .as_str()
                .unwrap_or_else(|| panic!("unfinished: {a}"));
            recorded.insert((id.clone(), i as u64 + 1), outcome.to_string());
        }
        let counted = attempts.iter().filter(|a| a["counted"] == true).count();
        assert!(counted < 3, "{id} counted {counted} failures: {attempts:?}");
    }

    // Every agent run the agents logged belongs to exactly one recorded attempt, and none of
    // those processes is alive.
    let log = std::fs::read_to_string(fleet.root().join("agent.log")).unwrap();
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    for line in log.lines() {
        let mut parts = line.split_whitespace();
        let (id, n, pid) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap().parse::<i32>().unwrap(),
        );
        assert!(
            recorded.contains_key(&(id.clone(), n)),
            "agent ran {id} attempt {n} but it is not recorded"
        );
        *seen.entry((id, n)).or_default() += 1;
        assert!(!pid_alive(pid), "agent {pid} ({line}) survived");
    }
    for (key, count) in seen {
        assert_eq!(count, 1, "attempt {key:?} ran {count} times");
    }

    // Each test's pass is on the loop's branch once; git's worktrees are the lanes.
    let log = fleet.git(&[
        "log",
        "--format=%(trailers:key=Loopd-Test,valueonly,separator=%x0a)",
    ]);
    let mut merged: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    merged.sort();
    let mut want: Vec<String> = (1..=9).map(|i| format!("T{i}")).collect();
    want.sort();
    assert_eq!(merged, want, "seed {seed}");
    let worktrees = fleet.git(&["worktree", "list", "--porcelain"]);
    let count = worktrees
        .lines()
        .filter(|l| l.starts_with("worktree "))
        .count();
    let want = if lanes > 1 { lanes as usize + 2 } else { 1 };
    assert_eq!(count, want, "seed {seed}: {worktrees}");
    let locks = std::process::Command::new("find")
        .arg(fleet.workdir().join(".git"))
        .args(["-name", "index.lock"])
        .output()
        .unwrap();
    assert!(
        locks.stdout.is_empty(),
        "seed {seed}: {}",
        String::from_utf8_lossy(&locks.stdout)
    );
}
