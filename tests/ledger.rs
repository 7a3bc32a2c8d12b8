//! The ledger is never lost silently: an agent that deletes, truncates or damages loopd's store
//! (or the whole state directory) gets every later `run`, `serve` and `status` refused with what
//! happened and how to recover; `loopd recover` rebuilds the passed tests from the workdir's
//! git history, and the next run goes on without redoing them. Workdirs stay out of the state
//! directory.

mod common;

use std::path::Path;

use common::{git_in, Fleet};
use serde_json::{json, Value};

/// Tests T-1..T-3; each passes once `<id>.txt` exists.
fn three_tests() -> Value {
    json!((1..=3)
        .map(|i| json!({
            "id": format!("T-{i}"),
            "title": format!("test {i}"),
            "spec": "Write the file.",
            "verify": format!("test -f T-{i}.txt"),
        }))
        .collect::<Vec<_>>())
}

/// An agent that counts its runs in `$ROOT/runs` and writes its test's file; at T-3 it runs
/// `damage` instead (and fails the test).
fn agent(damage: &str) -> String {
    format!(
        r#"echo "$LOOPD_TEST_ID" >> "$ROOT/runs"
if [ "$LOOPD_TEST_ID" = T-3 ]; then
{damage}
  exit 1
fi
echo ok > "$LOOPD_TEST_ID.txt""#
    )
}

/// The good agent: counts its runs, writes its test's file.
const HONEST: &str = r#"echo "$LOOPD_TEST_ID" >> "$ROOT/runs"
echo ok > "$LOOPD_TEST_ID.txt""#;

fn runs(fleet: &Fleet) -> Vec<String> {
    std::fs::read_to_string(fleet.root().join("runs"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs the fleet once with an agent that passes T-1 and T-2, then does `damage` at T-3.
fn damaged_fleet(damage: &str) -> Fleet {
    let fleet = Fleet::new()
        .tests(three_tests())
        .agent(&agent(damage))
        .write();
    fleet.run();
    assert_eq!(runs(&fleet), ["T-1", "T-2", "T-3"]);
    fleet
}

/// Asserts that `run`, `serve` and `status` all refuse with a message holding one of `what`,
/// that says how to recover, and that no agent ran.
fn assert_refused(fleet: &Fleet, what: &[&str]) {
    let before = runs(fleet);
    for args in [
        &["run", "loopd.toml", "--plain"][..],
        &["serve", "loopd.toml", "--bind", "127.0.0.1:0"],
        &["status", "loopd.toml", "--json"],
    ] {
        let out = fleet.cmd(args);
        assert_eq!(out.code(), 2, "`loopd {}` must refuse\n{out}", args[0]);
        assert!(
            what.iter().any(|w| out.stderr.contains(w)) && out.stderr.contains("loopd recover"),
            "`loopd {}` must say what happened and how to recover\n{out}",
            args[0]
        );
        assert!(!out.stderr.contains("another loopd"), "{out}");
    }
    assert_eq!(runs(fleet), before, "no agent may run on a lost ledger");
}

/// `loopd recover` rebuilds T-1 and T-2 as passed with their commits and T-3 as pending, and
/// the next run attempts only T-3.
fn assert_recovers(fleet: &Fleet) {
    let commits: Vec<String> = fleet
        .git(&["log", "--format=%H %s", "-E", "--grep=^Loopd-Test: "])
        .lines()
        .map(String::from)
        .collect();
    let out = fleet.cmd(&["recover", "loopd.toml"]);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("2 passed, 1 pending"), "{out}");
    assert!(out.stdout.contains("not recoverable"), "{out}");
    for (id, subject) in [("T-1", "T-1 passed"), ("T-2", "T-2 passed")] {
        let t = fleet.test_status(id);
        assert_eq!(t["status"], "passed", "{t:#}");
        let commit = commits
            .iter()
            .find(|c| c.contains(subject))
            .and_then(|c| c.split(' ').next())
            .unwrap();
        assert_eq!(fleet.attempts(id)[0]["commit"], commit, "{id}");
    }
    assert_eq!(fleet.test_status("T-3")["status"], "pending");

    fleet.write_agent(HONEST);
    let before = runs(fleet).len();
    fleet.run().expect_code(0);
    assert_eq!(
        runs(fleet)[before..],
        ["T-3"],
        "passed tests are not redone"
    );
    for id in ["T-1", "T-2", "T-3"] {
        assert_eq!(fleet.test_status(id)["status"], "passed", "{id}");
    }
}

#[test]
fn an_agent_that_deletes_the_store_is_caught_and_recover_rebuilds_the_passes() {
    // It leaves a half-done file too, kept under T-3's attempt ref when the attempt fails.
    let fleet = damaged_fleet(
        r#"  echo half > half.txt
  rm -rf "$ROOT/state/store""#,
    );
    assert!(!fleet.state_dir().join("store").exists());
    assert_refused(&fleet, &["is missing, but its generation record"]);
    assert!(
        !fleet.state_dir().join("store").exists(),
        "a refused start makes no empty store"
    );
    let kept = fleet.git(&["rev-parse", "refs/loopd/attempts/T-3/1"]);
    assert_recovers(&fleet);
    // The rebuilt ledger numbers T-3's attempts after the kept one, which stays as it was.
    let numbers: Vec<u64> = fleet
        .attempts("T-3")
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2]);
    assert_eq!(fleet.git(&["rev-parse", "refs/loopd/attempts/T-3/1"]), kept);
}

#[test]
fn an_agent_that_truncates_the_store_is_caught() {
    let fleet = damaged_fleet(r#"  truncate -s 4096 "$ROOT/state/store/db""#);
    assert_refused(&fleet, &["but its generation record"]);
    assert_recovers(&fleet);
    let aside: Vec<_> = std::fs::read_dir(fleet.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("store.lost-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the damaged store is set aside, not deleted"
    );
}

#[test]
fn a_flipped_byte_that_sled_reads_past_is_caught() {
    // A byte flipped in the middle of the log, no snapshot: sled opens the store and recovers
    // it only up to the damage, so it is shorter than it was.
    let fleet = damaged_fleet(
        r#"  python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[len(b)//3]^=0xff; open(p,"wb").write(b)' "$ROOT/state/store/db""#,
    );
    assert_refused(&fleet, &["but its generation record"]);
    assert_recovers(&fleet);
}

#[test]
fn an_agent_that_deletes_the_state_directory_is_caught() {
    // loopd, still running, writes its record again into a state directory it makes anew (and
    // the store it wrote to is gone with the old one), or finds none: either way it is caught.
    let fleet = damaged_fleet(r#"  rm -rf "$ROOT/state""#);
    assert_refused(
        &fleet,
        &["but its generation record", "has no record of loop `main`"],
    );
    assert_recovers(&fleet);
}

#[test]
fn a_store_lost_with_its_record_is_caught_by_the_history() {
    // Store and generation record both gone (deleted after loopd last wrote them): the
    // workdir's pass commits are the witness.
    let fleet = damaged_fleet(r#"  rm -rf "$ROOT/state/store""#);
    std::fs::remove_dir_all(fleet.state_dir()).unwrap();
    assert_refused(&fleet, &["has no record of loop `main`"]);
    assert_recovers(&fleet);
}

#[test]
fn recover_refuses_while_a_daemon_holds_the_state_directory() {
    let fleet = Fleet::new()
        .tests(three_tests())
        .agent("echo AGENT-READY; sleep 300")
        .write();
    let running = fleet.spawn_run();
    common::wait_for_text(&fleet.transcript("T-1", 1), "AGENT-READY");
    let out = fleet.cmd(&["recover", "loopd.toml"]);
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("in use by `loopd run`"), "{out}");
    drop(running);
}

#[test]
fn recover_on_an_intact_store_changes_nothing() {
    let fleet = Fleet::new().tests(three_tests()).agent(HONEST).write();
    fleet.run().expect_code(0);
    let before = fleet.status();
    let out = fleet.cmd(&["recover", "loopd.toml"]);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("nothing to recover"), "{out}");
    assert_eq!(
        fleet.status()["loops"][0]["tests"],
        before["loops"][0]["tests"]
    );
}

#[test]
fn a_store_that_cannot_be_opened_names_the_cause_and_no_other_loopd() {
    let fleet = Fleet::new().tests(three_tests()).agent(HONEST).write();
    fleet.run().expect_code(0);
    let db = fleet.state_dir().join("store/db");
    std::fs::remove_file(&db).unwrap();
    std::fs::create_dir(&db).unwrap();
    for args in [
        &["status", "loopd.toml"][..],
        &["run", "loopd.toml", "--plain"],
    ] {
        let out = fleet.cmd(args);
        assert_eq!(out.code(), 2, "{out}");
        assert!(
            out.stderr.contains("cannot open the store") && out.stderr.contains("directory"),
            "{out}"
        );
        assert!(!out.stderr.contains("another loopd"), "{out}");
    }
}

#[test]
fn a_workdir_inside_the_state_directory_is_refused() {
    let fleet = Fleet::new()
        .tests(three_tests())
        .agent(HONEST)
        .set("workdir", "\"state/workdirs/main\"")
        .set("init_workdir", "true")
        .write();
    // The helper writes `workdir = "work"` itself, and TOML refuses a key twice.
    let text = std::fs::read_to_string(fleet.config_file())
        .unwrap()
        .replace("workdir = \"work\"\n", "");
    std::fs::write(fleet.config_file(), text).unwrap();
    for args in [
        &["validate", "loopd.toml"][..],
        &["run", "loopd.toml", "--plain"],
    ] {
        let out = fleet.cmd(args);
        assert_eq!(out.code(), 2, "{out}");
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(
            said.contains("/loops/0/workdir") && said.contains("is inside the state directory"),
            "{out}"
        );
    }
    assert!(runs(&fleet).is_empty());
}

#[test]
fn the_demo_and_a_new_fleet_keep_their_workdirs_next_to_the_fleet_file() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
    let cp = std::process::Command::new("cp")
        .args(["-a"])
        .arg(&src)
        .arg(&demo)
        .status()
        .unwrap();
    assert!(cp.success());
    let out = loopd_in(&demo, &["run", "loopd.toml", "--plain"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for lp in ["calc", "greeter"] {
        let log = git_in(&demo.join("workdirs").join(lp), &["log", "--format=%s"]);
        assert!(log.contains("passed"), "{lp}: {log}");
    }
    assert!(!demo.join(".loopd/workdirs").exists());
    let ignored = std::fs::read_to_string(demo.join(".gitignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l.trim() == "/workdirs/"),
        "{ignored}"
    );

    let out = loopd_in(tmp.path(), &["init", "fleet"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = loopd_in(&tmp.path().join("fleet"), &["run", "loopd.toml", "--plain"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(tmp.path().join("fleet/workdirs/example/.git").is_dir());
}

fn loopd_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::loopd_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("LOOPD_CONFIG")
        .env_remove("LOOPD_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
