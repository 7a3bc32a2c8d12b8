//! End-to-end tests of hints: `loopd hint` and `POST/DELETE /api/loops/:id/hints` against a
//! real `loopd serve`, with a scripted agent that keeps every prompt it is given.

mod common;
mod serving;

use std::path::PathBuf;

use common::{wait_until, Fleet, WAIT};
use serde_json::{json, Value};
use serving::{http, token, Daemon};

const HEADING: &str = "# Guidance from a person";

/// T2 depends on T1. Every attempt copies its prompt to `prompts/TEST-N.md` and waits for
/// `go-TEST-N`: it passes when that file says `pass`, else it changes a file and fails verify.
fn gated_fleet() -> Fleet {
    let spec = |id: &str, deps: &[&str]| {
        json!({"id": id, "title": id, "spec": format!("make {id}"),
               "verify": format!("test -f {id}.done"), "depends_on": deps})
    };
    Fleet::new()
        .tests(json!([spec("T1", &[]), spec("T2", &["T1"])]))
        .set("max_attempts", "5")
        .agent(
            "mkdir -p \"$ROOT/prompts\"\n\
             kept=\"$ROOT/prompts/$LOOPD_TEST_ID-$LOOPD_ATTEMPT.md\"\n\
             cp \"$LOOPD_PROMPT_FILE\" \"$kept.part\" && mv \"$kept.part\" \"$kept\"\n\
             gate=\"$ROOT/go-$LOOPD_TEST_ID-$LOOPD_ATTEMPT\"\n\
             while [ ! -f \"$gate\" ]; do sleep 0.05; done\n\
             if grep -q pass \"$gate\"; then touch \"$LOOPD_TEST_ID.done\"; \
             else echo \"$LOOPD_ATTEMPT\" >> notes; fi",
        )
        .write()
}

/// The prompt attempt `n` of `test` was given, once its agent has kept it.
fn prompt(fleet: &Fleet, test: &str, n: u32) -> String {
    let file: PathBuf = fleet.root().join(format!("prompts/{test}-{n}.md"));
    wait_until(&format!("the prompt of {test} attempt {n}"), WAIT, || {
        file.exists()
    });
    // Whole: the agent renames its copy into place.
    std::fs::read_to_string(&file).unwrap()
}

/// Lets attempt `n` of `test` end with `verdict`; renamed into place, so that the agent never
/// reads a gate that exists but is still empty.
fn release(fleet: &Fleet, test: &str, n: u32, verdict: &str) {
    let gate = fleet.root().join(format!("go-{test}-{n}"));
    let part = gate.with_extension("part");
    std::fs::write(&part, verdict).unwrap();
    std::fs::rename(&part, &gate).unwrap();
}

/// The first `n` `hint` events of the journal, read from its start through `/api/events`.
fn hint_events(daemon: &Daemon, n: usize) -> Vec<Value> {
    use std::io::BufRead;
    let resp = http()
        .get(daemon.url("/api/events?loop=main&after=0"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut found = Vec::new();
    let mut kind = String::new();
    for line in std::io::BufReader::new(resp).lines() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if kind == "hint" {
                found.push(serde_json::from_str(data).unwrap());
                if found.len() == n {
                    break;
                }
            }
        }
    }
    found
}

fn ok(fleet: &Fleet, args: &[&str]) -> String {
    let run = fleet.cmd(args);
    assert_eq!(run.code(), 0, "loopd {args:?}: {run}");
    run.stdout.clone()
}

#[test]
fn a_hint_reaches_the_next_prompts_it_is_meant_for_until_cleared() {
    let fleet = gated_fleet();
    let daemon = Daemon::start(&fleet, &[]);

    let first = prompt(&fleet, "T1", 1);
    assert!(!first.contains(HEADING), "{first}");
    ok(
        &fleet,
        &["hint", "main", "LOOP-HINT: use the helpers in src/"],
    );
    ok(
        &fleet,
        &["hint", "main", "T1", "T1-HINT: the form is in web/"],
    );
    ok(&fleet, &["hint", "main", "T2", "T2-HINT old"]);
    // A new hint replaces the old one.
    ok(&fleet, &["hint", "main", "T2", "T2-HINT: mind the locale"]);

    // Shown by `status LOOP` and `status LOOP TEST`, with who gave it.
    let status = ok(&fleet, &["status", "main"]);
    assert!(
        status.contains("LOOP-HINT: use the helpers in src/ (by "),
        "{status}"
    );
    assert!(
        status.contains("test hints") && status.contains("T1, T2"),
        "{status}"
    );
    let t2 = ok(&fleet, &["status", "main", "T2"]);
    assert!(t2.contains("T2-HINT: mind the locale"), "{t2}");
    assert!(!t2.contains("T2-HINT old"), "{t2}");
    let json: Value = serde_json::from_str(&ok(&fleet, &["status", "main", "--json"])).unwrap();
    assert_eq!(json["hint"]["text"], "LOOP-HINT: use the helpers in src/");
    assert!(json["hint"]["author"]
        .as_str()
        .is_some_and(|a| !a.is_empty()));

    // The attempt that ran while the hints were given keeps its prompt; the next one has the
    // loop's hint and its own test's, not the other test's.
    release(&fleet, "T1", 1, "fail");
    let second = prompt(&fleet, "T1", 2);
    assert!(second.contains(HEADING), "{second}");
    assert!(
        second.contains("LOOP-HINT: use the helpers in src/"),
        "{second}"
    );
    assert!(second.contains("T1-HINT: the form is in web/"), "{second}");
    assert!(!second.contains("T2-HINT"), "{second}");

    // Cleared: the test's hint goes from the later prompts, the loop's stays.
    ok(&fleet, &["hint", "main", "T1", "--clear"]);
    release(&fleet, "T1", 2, "fail");
    let third = prompt(&fleet, "T1", 3);
    assert!(third.contains("LOOP-HINT"), "{third}");
    assert!(!third.contains("T1-HINT"), "{third}");

    ok(&fleet, &["hint", "main", "--clear"]);
    release(&fleet, "T1", 3, "pass");
    let other = prompt(&fleet, "T2", 1);
    assert!(other.contains("T2-HINT: mind the locale"), "{other}");
    assert!(
        !other.contains("LOOP-HINT") && !other.contains("T1-HINT"),
        "{other}"
    );
    release(&fleet, "T2", 1, "pass");
    drop(daemon);
}

#[test]
fn a_hint_without_a_daemon_says_what_to_run() {
    let fleet = gated_fleet();
    let run = fleet.cmd(&["hint", "main", "use sqlx"]);
    assert_ne!(run.code(), 0, "{run}");
    assert!(run.stderr.contains("no daemon is running"), "{run}");
    assert!(run.stderr.contains("loopd serve"), "{run}");
}

#[test]
fn the_api_takes_a_hint_with_the_token_only_and_checks_it() {
    let fleet = gated_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    // The loop and its tests are in the store once its first attempt runs.
    prompt(&fleet, "T1", 1);
    let client = http();
    let url = daemon.url("/api/loops/main/hints");
    let body = json!({"text": "use sqlx"});
    let refused = client.post(&url).json(&body).send().unwrap();
    assert_eq!(refused.status(), 401);
    let refused = client.delete(&url).send().unwrap();
    assert_eq!(refused.status(), 401);
    let status = ok(&fleet, &["status", "main"]);
    assert!(!status.contains("use sqlx"), "{status}");

    let t = token(&fleet);
    let send = |body: Value| {
        client
            .post(&url)
            .bearer_auth(&t)
            .json(&body)
            .send()
            .unwrap()
    };
    let given = send(json!({"text": "use sqlx", "test": "T2", "author": "ana"}));
    assert_eq!(given.status(), 201);
    let hint: Value = given.json().unwrap();
    assert_eq!(hint["author"], "ana");
    assert_eq!(hint["test_id"], "T2");
    let t2 = ok(&fleet, &["status", "main", "T2"]);
    assert!(t2.contains("use sqlx (by ana, "), "{t2}");

    // Without an author the API is the author; bad bodies and unknown tests are refused.
    let plain: Value = send(json!({"text": "loop-wide"})).json().unwrap();
    assert_eq!(plain["author"], "api");
    assert_eq!(send(json!({"text": "  "})).status(), 400);
    assert_eq!(send(json!({"txt": "typo"})).status(), 400);
    let long = send(json!({"text": "x", "author": "a".repeat(129)}));
    assert_eq!(long.status(), 400);
    assert!(long.text().unwrap().contains("`author` is 129 bytes"));
    assert_eq!(send(json!({"text": "x", "test": "T9"})).status(), 404);

    let cleared = client
        .delete(daemon.url("/api/loops/main/hints?test=T2"))
        .bearer_auth(&t)
        .send()
        .unwrap();
    assert_eq!(cleared.status(), 204);
    let t2 = ok(&fleet, &["status", "main", "T2"]);
    assert!(!t2.contains("use sqlx"), "{t2}");

    // Each hint given and cleared is journaled: in `/api/events` as `event: hint`, in order.
    let hints = hint_events(&daemon, 3);
    assert_eq!(hints[0]["test_id"], "T2", "{hints:#?}");
    assert_eq!(hints[0]["data"]["hint"]["text"], "use sqlx");
    assert_eq!(hints[0]["data"]["hint"]["author"], "ana");
    assert_eq!(hints[0]["message"], "hint given by ana for T2");
    assert!(hints[1].get("test_id").is_none(), "{hints:#?}");
    assert_eq!(hints[1]["data"]["hint"]["text"], "loop-wide");
    assert_eq!(hints[2]["test_id"], "T2", "{hints:#?}");
    assert_eq!(hints[2]["data"]["cleared"], true);
    assert_eq!(hints[2]["message"], "hint cleared for T2");
    release(&fleet, "T1", 1, "pass");
    release(&fleet, "T2", 1, "pass");
    drop(daemon);
}
