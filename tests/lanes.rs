//! Lanes end to end: the built `loopd run` with `lanes = N`, scripted bash agents, real git.
//!
//! Each test writes a fleet whose one loop runs several attempts at once, each in its own git
//! worktree under `state/lanes/main/<k>`, and checks what loopd recorded (`status --json`,
//! `attempts --json`), the workdir's history and `git worktree list`.

mod common;

use std::time::{Duration, Instant};

use common::{test_entry, Fleet};
use serde_json::{json, Value};

fn outcome(a: &Value) -> &str {
    a["outcome"].as_str().unwrap_or("<none>")
}

/// A fleet of `tests` with `lanes` lanes and as many agent slots.
fn lanes_fleet(lanes: u32, tests: Value, agent: &str) -> Fleet {
    Fleet::new()
        .fleet_set("max_concurrent_agents", &lanes.max(1).to_string())
        .set("lanes", &lanes.to_string())
        .set("max_attempts", "3")
        .tests(tests)
        .agent(agent)
        .write()
}

/// The worktrees git lists for the workdir, as paths relative to the state dir's lanes folder
/// (`1`, `2`, `merge`); the workdir itself left out.
fn lane_worktrees(fleet: &Fleet) -> Vec<String> {
    let folder = fleet.state_dir().join("lanes").join(common::LOOP);
    let folder = folder.canonicalize().unwrap_or(folder);
    let mut names: Vec<String> = fleet
        .git(&["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .filter_map(|p| {
            std::path::Path::new(p)
                .strip_prefix(&folder)
                .ok()
                .map(|r| r.display().to_string())
        })
        .collect();
    names.sort();
    names
}

/// The `Loopd-Test` trailers of the workdir's history, oldest first.
fn merged_tests(fleet: &Fleet) -> Vec<String> {
    fleet
        .git(&[
            "log",
            "--reverse",
            "--format=%(trailers:key=Loopd-Test,valueonly,separator=%x0a)",
        ])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Each test writes its own file after a pause; verify checks the file.
const OWN_FILE_AGENT: &str = r#"sleep 3
echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.txt"
"#;

fn own_file_tests(ids: &[&str]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| test_entry(id, &format!("grep -qx {id} {id}.txt"), &[]))
            .collect(),
    )
}

#[test]
fn four_independent_tests_in_four_lanes_take_under_half_the_one_lane_time() {
    let ids = ["A", "B", "C", "D"];
    let timed = |lanes: u32| {
        let fleet = lanes_fleet(lanes, own_file_tests(&ids), OWN_FILE_AGENT);
        let started = Instant::now();
        fleet.run().expect_code(0);
        let took = started.elapsed();
        for id in ids {
            assert_eq!(fleet.test_status(id)["status"], "passed", "{id}");
        }
        (fleet, took)
    };
    let (one, one_lane) = timed(1);
    let (four, four_lanes) = timed(4);
    assert!(
        four_lanes < one_lane / 2,
        "4 lanes took {four_lanes:?}, 1 lane {one_lane:?}"
    );
    // Every pass is on the loop's branch once, in both.
    for fleet in [&one, &four] {
        let mut merged = merged_tests(fleet);
        merged.sort();
        assert_eq!(merged, ids, "{:?}", fleet.git(&["log", "--oneline"]));
        for id in ids {
            assert_eq!(
                fleet.git(&["show", &format!("HEAD:{id}.txt")]),
                format!("{id}\n")
            );
        }
        assert_eq!(fleet.git(&["status", "--porcelain"]), "");
    }
    // The 4-lane attempts ran in lanes 1 to 4, from a base, never in the workdir.
    let mut lanes: Vec<u64> = ids
        .iter()
        .map(|id| four.attempts(id)[0]["lane"].as_u64().unwrap())
        .collect();
    lanes.sort();
    assert_eq!(lanes, [1, 2, 3, 4]);
    assert!(ids
        .iter()
        .all(|id| four.attempts(id)[0]["base"].is_string()));
    assert!(ids.iter().all(|id| one.attempts(id)[0]["lane"] == 0));
    assert_eq!(lane_worktrees(&four), ["1", "2", "3", "4", "merge"]);
    assert_eq!(lane_worktrees(&one), Vec::<String>::new());
}

#[test]
fn a_chain_never_runs_a_dependent_before_its_dependency_is_merged() {
    // Each test needs the files of those before it; the agent notes what its lane held.
    let tests = json!([
        test_entry("A", "grep -qx A A.txt", &[]),
        test_entry("B", "grep -qx A A.txt && grep -qx B B.txt", &["A"]),
        test_entry("C", "grep -qx B B.txt && grep -qx C C.txt", &["B"]),
    ]);
    let fleet = lanes_fleet(
        3,
        tests,
        r#"ls > "$ROOT/seen-$LOOPD_TEST_ID-$LOOPD_ATTEMPT"
sleep 0.5
echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.txt"
"#,
    );
    fleet.run().expect_code(0);
    for id in ["A", "B", "C"] {
        assert_eq!(fleet.test_status(id)["status"], "passed", "{id}");
        assert_eq!(fleet.attempts(id).len(), 1, "{id}");
    }
    // B started from a checkpoint that held A's merged work, C from one that held B's.
    let seen =
        |id: &str| std::fs::read_to_string(fleet.root().join(format!("seen-{id}-1"))).unwrap();
    assert!(seen("B").lines().any(|l| l == "A.txt"), "{}", seen("B"));
    assert!(seen("C").lines().any(|l| l == "B.txt"), "{}", seen("C"));
    for (dep, id) in [("A", "B"), ("B", "C")] {
        let merged = fleet.test_status(dep)["commit"]
            .as_str()
            .unwrap()
            .to_string();
        let base = fleet.attempts(id)[0]["base"].as_str().unwrap().to_string();
        assert!(
            fleet.git_ok(&["merge-base", "--is-ancestor", &merged, &base]),
            "{id} started at {base}, before {dep}'s merge {merged}"
        );
    }
    assert_eq!(merged_tests(&fleet), ["A", "B", "C"]);
}

#[test]
fn two_tests_editing_one_line_one_merges_the_other_conflicts_and_passes_on_the_new_base() {
    let tests = json!([
        test_entry("X", "grep -qx X X.txt && grep -qx X shared.txt", &[]),
        test_entry("Y", "grep -qx Y Y.txt && grep -qx Y shared.txt", &[]),
    ]);
    // X is quicker, so it merges first; Y's first pass then meets X's line. Told so in its
    // prompt, the agent keeps the other line.
    let fleet = lanes_fleet(
        2,
        tests,
        r#"case "$LOOPD_TEST_ID" in X) sleep 0.3 ;; Y) sleep 2 ;; esac
if grep -q "could not be merged" "$LOOPD_PROMPT_FILE"; then
  echo "$LOOPD_TEST_ID" >> shared.txt
else
  echo "$LOOPD_TEST_ID" > shared.txt
fi
echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.txt"
"#,
    );
    fleet.run().expect_code(0);
    assert_eq!(fleet.test_status("X")["status"], "passed");
    assert_eq!(fleet.attempts("X").len(), 1);
    let y = fleet.test_status("Y");
    assert_eq!(y["status"], "passed", "{y:#}");
    let attempts = fleet.attempts("Y");
    assert_eq!(
        attempts.iter().map(outcome).collect::<Vec<_>>(),
        ["conflict", "passed"],
        "{attempts:#?}"
    );
    let first = &attempts[0];
    assert_eq!(first["counted"], false, "a first conflict is free");
    assert_eq!(
        first["conflict"]["files"],
        json!(["shared.txt"]),
        "{first:#}"
    );
    assert_eq!(first["conflict"]["with_tests"], json!(["X"]), "{first:#}");
    // The work of the conflicting pass is kept under its ref.
    let kept = first["commit"].as_str().unwrap();
    assert_eq!(
        fleet.git(&["rev-parse", "refs/loopd/attempts/Y/1"]).trim(),
        kept
    );
    assert_eq!(fleet.git(&["show", &format!("{kept}:shared.txt")]), "Y\n");
    // The retry started from X's merge, with the conflict in its prompt.
    let x_commit = fleet.test_status("X")["commit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(attempts[1]["base"].as_str(), Some(x_commit.as_str()));
    let prompt = std::fs::read_to_string(fleet.prompt("Y", 2)).unwrap();
    assert!(prompt.contains("could not be merged"), "{prompt}");
    assert!(
        prompt.contains("`X`") && prompt.contains("`shared.txt`"),
        "{prompt}"
    );
    assert_eq!(fleet.git(&["show", "HEAD:shared.txt"]), "X\nY\n");
    assert_eq!(merged_tests(&fleet), ["X", "Y"]);
}

#[test]
fn a_pass_whose_verify_fails_on_the_merged_tree_is_not_merged() {
    // Q passes in its lane, where P's file is not; on the merged tree (P merged first) its
    // verify fails.
    let tests = json!([
        test_entry("P", "grep -qx P P.txt", &[]),
        test_entry("Q", "grep -qx Q Q.txt && ! test -e P.txt", &[]),
    ]);
    let fleet = Fleet::new()
        .fleet_set("max_concurrent_agents", "2")
        .set("lanes", "2")
        .set("max_attempts", "1")
        .tests(tests)
        .agent(
            r#"case "$LOOPD_TEST_ID" in P) sleep 0.3 ;; Q) sleep 2 ;; esac
echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.txt"
"#,
        )
        .write();
    fleet.run();
    assert_eq!(fleet.test_status("P")["status"], "passed");
    let q = fleet.attempts("Q");
    assert_eq!(outcome(&q[0]), "conflict", "{q:#?}");
    assert_eq!(q[0]["conflict"]["failed_verify_of"], "Q", "{:#}", q[0]);
    assert_eq!(q[0]["conflict"]["with_tests"], json!(["P"]), "{:#}", q[0]);
    // Never on the loop's branch, whatever came after.
    assert!(!merged_tests(&fleet).contains(&"Q".to_string()));
    assert!(!fleet.git_ok(&["cat-file", "-e", "HEAD:Q.txt"]));
    assert_ne!(fleet.test_status("Q")["status"], "passed");
}

#[test]
fn a_serial_group_keeps_two_tests_apart() {
    let mut tests = own_file_tests(&["S1", "S2", "F"]);
    tests[0]["serial_group"] = json!("db");
    tests[1]["serial_group"] = json!("db");
    let fleet = lanes_fleet(
        3,
        tests,
        r#"echo "start $LOOPD_TEST_ID $(date +%s.%N)" >> "$ROOT/times"
sleep 1
echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.txt"
echo "end $LOOPD_TEST_ID $(date +%s.%N)" >> "$ROOT/times"
"#,
    );
    fleet.run().expect_code(0);
    let times = std::fs::read_to_string(fleet.root().join("times")).unwrap();
    let at = |what: &str, id: &str| -> f64 {
        times
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what} {id} ")))
            .unwrap_or_else(|| panic!("no {what} of {id} in {times}"))
            .parse()
            .unwrap()
    };
    let (first, second) = if at("start", "S1") < at("start", "S2") {
        ("S1", "S2")
    } else {
        ("S2", "S1")
    };
    assert!(at("end", first) <= at("start", second), "{times}");
    // The test outside the group ran beside the first.
    assert!(at("start", "F") < at("end", first), "{times}");
    for id in ["S1", "S2", "F"] {
        assert_eq!(fleet.test_status(id)["status"], "passed", "{id}");
    }
}

#[test]
fn kill_9_after_a_merge_moved_the_checkpoint_then_a_rerun_merges_nothing_twice() {
    let ids = ["A", "B", "C"];
    let fleet = lanes_fleet(
        3,
        own_file_tests(&ids),
        "sleep 0.3\necho \"$LOOPD_TEST_ID\" > \"$LOOPD_TEST_ID.txt\"\n",
    );
    let before = fleet.git(&["rev-parse", "HEAD"]);
    // The first merge hangs once its checkpoint moved, before loopd records it.
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("LOOPD_TEST_FAULT", "hang:merge_moved:main:1");
    let running = common::Running::spawn(cmd);
    common::wait_until("the first merge moves the branch", common::WAIT, || {
        fleet.git(&["rev-parse", "HEAD"]) != before
    });
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = running.wait(Duration::from_secs(10));
    // The rerun reaps whatever the killed run left (other lanes' agents) and resumes the queue.
    fleet.run().expect_code(0);
    for id in ids {
        assert_eq!(fleet.test_status(id)["status"], "passed", "{id}");
    }
    let mut merged = merged_tests(&fleet);
    merged.sort();
    assert_eq!(
        merged,
        ids,
        "each merged once: {}",
        fleet.git(&["log", "--oneline"])
    );
    let head = fleet.git(&["rev-parse", "HEAD"]);
    assert_eq!(
        fleet.loop_status()["checkpoint"].as_str(),
        Some(head.trim())
    );
    assert_eq!(lane_worktrees(&fleet), ["1", "2", "3", "merge"]);
    assert_no_index_locks(&fleet);
    assert_eq!(fleet.git(&["status", "--porcelain"]), "");
}

/// No `index.lock` in the workdir's git folder or any worktree's.
fn assert_no_index_locks(fleet: &Fleet) {
    let git_dir = fleet.workdir().join(".git");
    let mut locks = Vec::new();
    let mut dirs = vec![git_dir];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n == "index.lock") {
                locks.push(p);
            }
        }
    }
    assert!(locks.is_empty(), "{locks:?}");
}

/// Rewrites the fleet file's `lanes` of the loop.
fn set_lanes(fleet: &Fleet, lanes: u32) {
    let text = std::fs::read_to_string(fleet.config_file()).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.starts_with("lanes = ") {
            true => format!("lanes = {lanes}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(fleet.config_file(), text).unwrap();
}

#[test]
fn lowering_lanes_on_reload_removes_the_spare_worktrees() {
    let fleet = lanes_fleet(3, own_file_tests(&["A"]), "echo A > A.txt\n");
    fleet.run().expect_code(0);
    assert_eq!(lane_worktrees(&fleet), ["1", "2", "3", "merge"]);
    set_lanes(&fleet, 2);
    fleet.run().expect_code(0);
    assert_eq!(lane_worktrees(&fleet), ["1", "2", "merge"]);
    assert!(!fleet.state_dir().join("lanes/main/3").exists());
    set_lanes(&fleet, 1);
    fleet.run().expect_code(0);
    assert_eq!(lane_worktrees(&fleet), Vec::<String>::new());
    assert!(!fleet.state_dir().join("lanes/main").exists());
    assert_eq!(fleet.test_status("A")["status"], "passed");
}

#[test]
fn an_agent_that_deletes_its_lane_moves_the_branch_and_writes_a_hook_breaks_nothing() {
    let tests = own_file_tests(&["EVIL", "GOOD"]);
    let fleet = lanes_fleet(
        2,
        tests,
        r#"if [ "$LOOPD_TEST_ID" = EVIL ]; then
  if [ "$LOOPD_ATTEMPT" = 1 ]; then
    rm -rf "$PWD"
    exit 0
  fi
  # The loop's branch moved to a commit of nothing.
  evil=$(git commit-tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904 -m evil)
  git update-ref "$(git -C "$WORK" symbolic-ref HEAD)" "$evil"
  # Then hooks for loopd's own git, in the folder every worktree shares.
  hooks="$(git rev-parse --git-common-dir)/hooks"
  mkdir -p "$hooks"
  for h in post-commit post-rewrite post-checkout post-merge reference-transaction; do
    printf '#!/bin/sh\ntouch "%s/hook-ran"\n' "$ROOT" > "$hooks/$h"
    chmod +x "$hooks/$h"
  done
fi
sleep 0.5
echo "$LOOPD_TEST_ID" > "$LOOPD_TEST_ID.txt"
"#,
    );
    fleet.run().expect_code(0);
    let evil = fleet.attempts("EVIL");
    assert_eq!(outcome(&evil[0]), "agent_error", "{evil:#?}");
    assert!(
        evil[0]["reason"].as_str().unwrap_or("").contains("lane"),
        "{:#}",
        evil[0]
    );
    for id in ["EVIL", "GOOD"] {
        assert_eq!(fleet.test_status(id)["status"], "passed", "{id}");
        assert_eq!(
            fleet.git(&["show", &format!("HEAD:{id}.txt")]),
            format!("{id}\n")
        );
    }
    // The branch holds the first commit and both passes, not the agent's commit of nothing.
    let first = fleet.git(&["rev-list", "--max-parents=0", "HEAD"]);
    assert_eq!(first.lines().count(), 1);
    assert_eq!(
        fleet
            .git(&["show", "-s", "--format=%s", first.trim()])
            .trim(),
        "initial"
    );
    let mut merged = merged_tests(&fleet);
    merged.sort();
    assert_eq!(merged, ["EVIL", "GOOD"]);
    assert!(
        !fleet.root().join("hook-ran").exists(),
        "loopd's git ran the agent's hook"
    );
    assert_eq!(lane_worktrees(&fleet), ["1", "2", "merge"]);
}
