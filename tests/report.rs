//! `loopd report`: the morning report of a scripted overnight fleet (T1 passes, T2 fails then
//! passes, T3 fails for good and needs a person, T4 waits behind it until it is skipped; each
//! attempt reports a fixed cost, and a person leaves hints), as JSON field by field, as Markdown
//! against the expected text (times, durations and commits, which no test can fix, replaced by
//! placeholders), and as HTML that escapes what the agent and the person wrote; the same with
//! and without a daemon. `--since` bounds the period, and a bad `--since` is refused with what
//! was expected.

mod common;
mod serving;

use common::{test_entry as test, wait_until, Fleet, LOOP, WAIT};
use serde_json::{json, Value};
use serving::{http, token, Daemon};

/// T3's title and failure: what an agent (or a tests file) may write, which HTML must escape.
const HOSTILE_TITLE: &str = "<script>alert('title')</script> users";
const HOSTILE_ERROR: &str = "error: <script>alert(1)</script> no table users";

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
            json!({"id": "T3", "title": HOSTILE_TITLE, "spec": "make T3",
                   "verify": format!("echo '{HOSTILE_ERROR}' >&2; exit 1"), "depends_on": []}),
            test("T4", "true", &["T3"]),
        ]))
        // The marker of a first attempt lives outside the workdir, which a failure resets. Each
        // test's attempts cost a fixed amount; T3's take longest, then T2's, T1's are quick.
        .agent(concat!(
            "case \"$LOOPD_TEST_ID\" in T1) cost=0.10;; T2) cost=0.25; sleep 0.5;; ",
            "T3) cost=0.50; sleep 1.2;; *) cost=0;; esac\n",
            "if [ -f \"$ROOT/$LOOPD_TEST_ID.first\" ]; then touch \"$LOOPD_TEST_ID.second\"; fi\n",
            "touch \"$ROOT/$LOOPD_TEST_ID.first\" \"$LOOPD_TEST_ID.done\"\n",
            "echo \"{\\\"cost_usd\\\": $cost}\" > \"$LOOPD_RESULT_FILE\"\n",
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

/// `text` with what no test can fix replaced: times by `<time>`, durations by `<secs>`, commits
/// by `<commit>`.
fn stable(text: &str) -> String {
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").unwrap();
    let secs = regex::Regex::new(r"\b\d+\.\ds\b").unwrap();
    let commit = regex::Regex::new(r"\b[0-9a-f]{12}\b").unwrap();
    let text = time.replace_all(text, "<time>");
    let text = secs.replace_all(&text, "<secs>");
    commit.replace_all(&text, "<commit>").into_owned()
}

/// Gives a hint through the API, as `author`.
fn hint(daemon: &Daemon, fleet: &Fleet, body: Value) {
    let given = http()
        .post(daemon.url("/api/loops/main/hints"))
        .bearer_auth(token(fleet))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(given.status(), 201);
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
    hint(
        &daemon,
        &fleet,
        json!({"text": "Keep <b>commits</b> small", "author": "ana"}),
    );
    hint(
        &daemon,
        &fleet,
        json!({"text": "The users table is made by\nmigrations/001.sql", "test": "T3",
               "author": "<img src=x onerror=alert(2)>"}),
    );
    let skip = fleet.cmd(&["skip", "loopd.toml", LOOP, "T4"]);
    assert_eq!(skip.code(), 0, "{skip}");
    wait_until("T4 skipped and the loop settled", WAIT, || {
        let l = fleet.loop_status();
        l["status"] == "finished" && l["tests"].as_array().unwrap()[3]["status"] == "skipped"
    });
    let with = report(&fleet, &["--since", &since]);
    let markdown = fleet.cmd(&["report", "loopd.toml", "--since", &since]);
    assert_eq!(markdown.code(), 0, "{markdown}");
    let html = fleet.cmd(&[
        "report",
        "loopd.toml",
        "--since",
        &since,
        "--format",
        "html",
    ]);
    assert_eq!(html.code(), 0, "{html}");
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
    assert_eq!(l["now"]["progress"]["total"], 4, "{l:#}");
    for idle in [
        "current_test",
        "current_attempt",
        "attempt_started_at",
        "reason",
    ] {
        assert!(l["now"].get(idle).is_none(), "{idle}: {l:#}");
    }

    assert_eq!(ids(&l["passed"]), ["T1", "T2"], "{l:#}");
    assert_eq!(l["passed"][0]["attempt"], 1);
    assert_eq!(l["passed"][1]["attempt"], 2, "T2 passed at its second try");
    let t1_commit = fleet.test_status("T1")["commit"].clone();
    assert!(t1_commit.is_string());
    assert_eq!(l["passed"][0]["commit"], t1_commit, "{l:#}");
    assert_eq!(
        l["passed"][1]["commit"],
        fleet.test_status("T2")["commit"],
        "{l:#}"
    );
    assert_eq!(l["passed"][0]["title"], "test T1");

    assert_eq!(l["failed"], json!([]), "{l:#}");
    assert_eq!(ids(&l["needs_human"]), ["T3"], "{l:#}");
    let t3 = &l["needs_human"][0];
    assert_eq!(t3["title"], HOSTILE_TITLE);
    assert!(
        t3["reason"]
            .as_str()
            .unwrap()
            .contains("heal budget is spent"),
        "{t3:#}"
    );
    assert!(
        t3["diagnosis"].as_str().unwrap().contains(HOSTILE_ERROR),
        "{t3:#}"
    );
    assert_eq!(ids(&l["skipped"]), ["T4"], "{l:#}");
    assert!(l["skipped"][0].get("diagnosis").is_none(), "{l:#}");

    assert_eq!(l["attempts"], 5, "T1 once, T2 twice, T3 twice: {l:#}");
    assert_eq!(l["total_attempts"], 5, "{l:#}");
    assert_eq!(
        l["outcomes"],
        json!([{"outcome": "failed", "count": 3}, {"outcome": "passed", "count": 2}])
    );
    // 0.10 + 2 × 0.25 + 2 × 0.50, as each attempt's agent reported.
    let cost = l["cost_usd"].as_f64().unwrap();
    assert!((cost - 1.60).abs() < 1e-9, "{l:#}");
    assert_eq!(l["total_cost_usd"], l["cost_usd"], "{l:#}");
    assert_eq!(ids(&l["slowest"]), ["T3", "T2", "T1"], "{l:#}");
    let attempts: Vec<u64> = l["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [2, 2, 1], "{l:#}");
    let spent: u64 = l["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .sum();
    assert_eq!(l["duration_ms"].as_u64().unwrap(), spent, "{l:#}");
    assert!(
        l["slowest"][0]["duration_ms"].as_u64().unwrap() >= 2400,
        "T3's two agents slept 1.2 s each: {l:#}"
    );

    assert_eq!(l["patterns"][0]["count"], 2, "{l:#}");
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

    let hints = l["hints"].as_array().unwrap();
    assert_eq!(hints.len(), 2, "{l:#}");
    assert_eq!(hints[0]["text"], "Keep <b>commits</b> small");
    assert_eq!(hints[0]["author"], "ana");
    assert!(hints[0].get("test_id").is_none(), "the loop's comes first");
    assert_eq!(hints[1]["test_id"], "T3");
    assert!(hints[1]["at"].is_string());

    let totals = &doc["totals"];
    assert_eq!(totals["attempts"], 5, "{totals:#}");
    assert_eq!(totals["passed"], 2, "{totals:#}");
    assert_eq!(totals["failed"], 0, "{totals:#}");
    assert_eq!(totals["needs_human"], 1, "{totals:#}");
    assert_eq!(totals["skipped"], 1, "{totals:#}");
    assert_eq!(totals["cost_usd"], l["cost_usd"], "{totals:#}");
    assert_eq!(totals["duration_ms"], l["duration_ms"], "{totals:#}");
    assert_eq!(totals["alerts"], alerts.len(), "{totals:#}");

    let page = &html.stdout;
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for escaped in [
        "&lt;script&gt;alert('title')&lt;/script&gt; users",
        "error: &lt;script&gt;alert(1)&lt;/script&gt; no table users",
        "Keep &lt;b&gt;commits&lt;/b&gt; small",
        "by &lt;img src=x onerror=alert(2)&gt;",
    ] {
        assert!(page.contains(escaped), "`{escaped}` in:\n{page}");
    }
    let lower = page.to_lowercase();
    assert!(!lower.contains("<script"), "{page}");
    assert!(!lower.contains("<img"), "{page}");
    assert!(!lower.contains("<b>"), "{page}");
    // Self-contained: nothing to fetch, and a policy that forbids it and any script.
    for outside in ["src=\"", "href=", "url(", "@import", "<link"] {
        assert!(!lower.contains(outside), "`{outside}` in:\n{page}");
    }
    assert!(page.contains("default-src 'none'"), "{page}");

    let md = stable(&markdown.stdout);
    assert_eq!(md, EXPECTED_MD, "the Markdown report, as printed:\n{md}");
}

/// The Markdown report of [`settled_fleet`], through [`stable`]. The agent's words are printed
/// as written: Markdown is text, and HTML is where they are escaped.
const EXPECTED_MD: &str = "\
# loopd report

Period: <time> to <time>

Fleet: 5 attempts, $1.60, <secs>; 2 passed, 0 failed, 1 waiting for a person, 1 skipped; 1 alert

## main

Now: finished, 2/4 passed, 1 waiting for a person, 1 skipped

Attempts: 5 (3 failed, 2 passed), $1.60, <secs>; in all 5 attempts, $1.60

### Passed

- T1 test T1 (attempt 1, commit <commit>)
- T2 test T2 (attempt 2, commit <commit>)

### Needs a person

- T3 <script>alert('title')</script> users: the heal budget is spent (0 heal attempts, $0.00); \
the same failure repeats (2 times, attempts 1 and 2): `error: <path> no table users`; retrying \
the same way will not help: give the spec a hint about this error, split the test, or fix the \
cause by hand
  - diagnosis: T3 (loop main) ended 2 attempts: 2 failed. The same failure came back 2 times \
(attempts 1 and 2): `error: <path> no table users`. Last error (attempt 2): `error: \
<script>alert(1)</script> no table users`. Suggested: the same failure repeats (2 times, \
attempts 1 and 2): `error: <path> no table users`; retrying the same way will not help: give \
the spec a hint about this error, split the test, or fix the cause by hand.

### Skipped

- T4 test T4: skipped by a person

### Slowest tests

| Test | Time | Attempts |
|---|---:|---:|
| T3 | <secs> | 2 |
| T2 | <secs> | 2 |
| T1 | <secs> | 1 |

### Most frequent failures

| Count | Failure | Tests |
|---:|---|---|
| 2 | `error: <path> no table users` | main:T3 |
| 1 | `error: T# not yet` | main:T2 |

### Alerts

- <time> T3: T3 needs a person: the heal budget is spent (0 heal attempts, $0.00); the same \
failure repeats (2 times, attempts 1 and 2): `error: <path> no table users`; retrying the same \
way will not help: give the spec a hint about this error, split the test, or fix the cause by hand

### Hints

- every test (by ana, <time>): Keep <b>commits</b> small
- T3 (by <img src=x onerror=alert(2)>, <time>): The users table is made by
  migrations/001.sql
";

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
    let format = fleet.cmd(&["report", "loopd.toml", "--format", "pdf"]);
    assert_eq!(format.code(), 2, "{format}");
    assert!(format.stderr.contains("--format"), "{format}");
}
