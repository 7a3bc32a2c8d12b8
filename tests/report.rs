//! `loopd report`: the morning report of a scripted fleet (T1 passes, T2 fails then passes, T3
//! fails for good and needs a person, T4 waits behind it until it is skipped), as JSON field by
//! field and as Markdown, the same with and without a daemon; `--since` bounds the period, and a
//! bad `--since` is refused with what was expected.

mod common;
mod serving;

use common::{test_entry as test, wait_until, Fleet, LOOP, WAIT};
use serde_json::{json, Value};
use serving::Daemon;

/// The fleet, run until it settles: T3 needs a person (the healer has no attempts to spend), T4
/// is blocked behind it.
fn settled_fleet() -> Fleet {
    let fleet = Fleet::new()
        .tests(json!([
            test("T1", "test -f T1.done", &[]),
            test(
                "T2",
                "test -f T2.second || { echo 'error: T2 not yet' >&2; exit 1; }",
                &[]
            ),
            test("T3", "echo 'error: no table users' >&2; exit 1", &[]),
            test("T4", "true", &["T3"]),
        ]))
        // The marker of a first attempt lives outside the workdir, which a failure resets.
        .agent(concat!(
            "if [ -f \"$ROOT/$LOOPD_TEST_ID.first\" ]; then touch \"$LOOPD_TEST_ID.second\"; fi\n",
            "touch \"$ROOT/$LOOPD_TEST_ID.first\" \"$LOOPD_TEST_ID.done\"\n",
            "echo \"worked on $LOOPD_TEST_ID\""
        ))
        .set("max_attempts", "2")
        .set("auto_heal", "true")
        .set("heal_attempts", "0")
        .write();
    fleet.run();
    fleet
}

fn report(fleet: &Fleet, args: &[&str]) -> Value {
    let mut all = vec!["report", "loopd.toml", "--format", "json"];
    all.extend_from_slice(args);
    fleet.cmd(&all).expect_code(0).json()
}

/// The report without the moment it was made, which is all that differs between two reads.
fn timeless(mut doc: Value) -> Value {
    doc.as_object_mut().unwrap().remove("generated_at");
    doc
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect()
}

#[test]
fn the_report_of_a_fleet_says_what_happened_the_same_with_and_without_a_daemon() {
    let fleet = settled_fleet();
    let before = chrono::Utc::now() - chrono::Duration::hours(1);
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let daemon = Daemon::start(&fleet, &[]);
    let skip = fleet.cmd(&["skip", "loopd.toml", LOOP, "T4"]);
    assert_eq!(skip.code(), 0, "{skip}");
    wait_until("T4 skipped and the loop settled", WAIT, || {
        let l = fleet.loop_status();
        l["status"] == "finished" && l["tests"].as_array().unwrap()[3]["status"] == "skipped"
    });
    let with = report(&fleet, &["--since", &since]);
    let markdown = fleet.cmd(&["report", "loopd.toml", "--since", &since]);
    assert_eq!(markdown.code(), 0, "{markdown}");
    assert_eq!(fleet.cmd(&["shutdown"]).code(), 0);
    assert_eq!(daemon.exit_code(), 0);
    let without = report(&fleet, &["--since", &since]);
    assert_eq!(timeless(with.clone()), timeless(without), "daemon vs store");

    let doc = with;
    assert_eq!(doc["since"], since.as_str(), "{doc:#}");
    assert_eq!(doc["fleet_alerts"], json!([]), "{doc:#}");
    let l = &doc["loops"][0];
    assert_eq!(l["name"], LOOP);
    assert_eq!(l["now"]["status"], "finished", "{l:#}");
    assert_eq!(l["now"]["progress"]["passed"], 2, "{l:#}");
    assert_eq!(l["now"]["progress"]["needs_human"], 1, "{l:#}");
    assert_eq!(l["now"]["progress"]["skipped"], 1, "{l:#}");
    assert!(l["now"].get("current_test").is_none(), "{l:#}");

    assert_eq!(ids(&l["passed"]), ["T1", "T2"], "{l:#}");
    assert_eq!(l["passed"][0]["attempt"], 1);
    assert_eq!(l["passed"][1]["attempt"], 2, "T2 passed at its second try");
    let t1_commit = fleet.test_status("T1")["commit"].clone();
    assert!(t1_commit.is_string());
    assert_eq!(l["passed"][0]["commit"], t1_commit, "{l:#}");
    assert_eq!(l["passed"][0]["title"], "test T1");

    assert_eq!(l["failed"], json!([]), "{l:#}");
    assert_eq!(ids(&l["needs_human"]), ["T3"], "{l:#}");
    let t3 = &l["needs_human"][0];
    assert!(
        t3["reason"]
            .as_str()
            .unwrap()
            .contains("heal budget is spent"),
        "{t3:#}"
    );
    assert!(
        t3["diagnosis"]
            .as_str()
            .unwrap()
            .contains("error: no table users"),
        "{t3:#}"
    );
    assert_eq!(ids(&l["skipped"]), ["T4"], "{l:#}");

    assert_eq!(l["attempts"], 5, "T1 once, T2 twice, T3 twice: {l:#}");
    assert_eq!(
        l["outcomes"],
        json!([{"outcome": "failed", "count": 3}, {"outcome": "passed", "count": 2}])
    );
    assert_eq!(l["cost_usd"], 0.0);
    let mut slow: Vec<&str> = ids(&l["slowest"]);
    slow.sort();
    assert_eq!(slow, ["T1", "T2", "T3"], "{l:#}");
    let spent: u64 = l["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .sum();
    assert_eq!(l["duration_ms"].as_u64().unwrap(), spent, "{l:#}");

    assert_eq!(l["patterns"][0]["count"], 2, "{l:#}");
    assert_eq!(l["patterns"][0]["example"], "error: no table users");
    assert_eq!(l["patterns"][0]["tests"], json!(["main:T3"]));
    assert_eq!(l["patterns"][1]["count"], 1);
    assert_eq!(l["patterns"][1]["tests"], json!(["main:T2"]));

    let alerts = l["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["test_id"] == "T3"
                && a["message"].as_str().unwrap().contains("needs a person")),
        "{l:#}"
    );

    let md = &markdown.stdout;
    for line in [
        "# loopd report",
        &format!("Period: {since} to "),
        "## main",
        "Now: finished, 2/4 passed, 1 waiting for a person, 1 skipped",
        "Attempts: 5 (3 failed, 2 passed), $0.00, ",
        "### Passed",
        &format!(
            "- T1 test T1 (attempt 1, commit {})",
            &t1_commit.as_str().unwrap()[..12]
        ),
        "- T2 test T2 (attempt 2, commit ",
        "### Needs a person",
        "- T3 test T3: the heal budget is spent",
        "  - diagnosis: T3 (loop main) ended 2 attempts: 2 failed.",
        "### Skipped",
        "- T4 test T4",
        "### Slowest tests",
        "| Test | Time | Attempts |",
        "### Most frequent failures",
        "| 2 | `error: no table users` | main:T3 |",
        "| 1 | `error: T# not yet` | main:T2 |",
        "### Alerts",
    ] {
        assert!(
            md.lines().any(|l| l.starts_with(line)),
            "a line starting `{line}` in:\n{md}"
        );
    }
    assert!(!md.contains("### Failed"), "no test failed for good:\n{md}");
}

#[test]
fn since_bounds_the_period_and_a_bad_since_is_refused() {
    let fleet = settled_fleet();
    let after = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let empty = report(&fleet, &["--since", &after]);
    let l = &empty["loops"][0];
    assert_eq!(l["attempts"], 0, "{l:#}");
    for key in [
        "passed",
        "failed",
        "needs_human",
        "skipped",
        "outcomes",
        "slowest",
        "patterns",
        "alerts",
    ] {
        assert_eq!(l[key], json!([]), "{key}: {l:#}");
    }
    assert_eq!(l["now"]["progress"]["passed"], 2, "now is still now: {l:#}");
    let md = fleet.cmd(&["report", "loopd.toml", "--since", &after]);
    assert!(
        md.stdout.contains("Nothing happened in the period."),
        "{md}"
    );

    // A duration reaches back over the run.
    let day = report(&fleet, &["--since", "1d"]);
    assert_eq!(day["loops"][0]["attempts"], 5, "{day:#}");
    assert_eq!(
        report(&fleet, &[])["loops"][0]["attempts"],
        5,
        "the default 24 h"
    );

    for bad in ["yesterday", "8 parsecs", "2026-13-01T00:00:00Z"] {
        let run = fleet.cmd(&["report", "loopd.toml", "--since", bad]);
        assert_eq!(run.code(), 2, "{run}");
        for want in [
            "--since",
            "expected a duration such as `8h`",
            "an RFC 3339 time",
            &format!("found `{bad}`"),
        ] {
            assert!(run.stderr.contains(want), "`{want}` in: {run}");
        }
    }
    let format = fleet.cmd(&["report", "loopd.toml", "--format", "html"]);
    assert_eq!(format.code(), 2, "{format}");
    assert!(format.stderr.contains("--format"), "{format}");
}
