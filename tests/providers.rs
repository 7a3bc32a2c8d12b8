//! The agent's provider failing, with scripted command agents: API errors back off every loop
//! of that provider together while another provider's loop keeps going; an empty credit
//! balance pauses every loop of the provider, counts nothing, and `run` exits 3.

mod common;

use chrono::{DateTime, Utc};
use common::{Fleet, Running, RUN_TIMEOUT};
use serde_json::{json, Value};

fn write_tests(fleet: &Fleet, file: &str, ids: &[&str]) {
    let tests: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "title": id, "spec": "x", "verify": format!("test -f {id}.done")}))
        .collect();
    std::fs::write(fleet.root().join(file), json!({"tests": tests}).to_string()).unwrap();
}

/// `[fleet]` plus one loop per `(name, provider, tests file, priority)`; the agent is agent.sh.
fn write_fleet(fleet: &Fleet, fleet_keys: &str, loops: &[(&str, &str, &str, u32)]) {
    let mut toml = format!("[fleet]\nstate_dir = \"state\"\n{fleet_keys}\n");
    for (name, provider, tests, priority) in loops {
        toml.push_str(&format!(
            "[[loops]]\nname = \"{name}\"\ninit_workdir = true\ntests_file = \"{tests}\"\n\
             priority = {priority}\nmax_attempts = 1\nkill_grace = \"1s\"\n\
             [loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\nprovider = \"{provider}\"\n\
             api_error_exit_codes = [75]\nbilling_patterns = [\"credit balance is too low\"]\n\n"
        ));
    }
    std::fs::write(fleet.config_file(), toml).unwrap();
}

fn attempts(fleet: &Fleet, lp: &str) -> Vec<Value> {
    let run = fleet.cmd(&["attempts", lp, "--json"]);
    run.json()["attempts"].as_array().unwrap().clone()
}

fn time(v: &Value, key: &str) -> DateTime<Utc> {
    v[key].as_str().unwrap().parse().unwrap()
}

#[test]
fn api_errors_back_off_the_whole_provider_while_another_provider_keeps_going() {
    // Loops a and b share provider `shared`; their first attempt hits an API error (exit 75).
    let fleet = Fleet::new()
        .agent(
            r#"if [ "$LOOPD_LOOP" != c ] && [ "$LOOPD_ATTEMPT" = 1 ]; then
                 echo "HTTP 529 overloaded"; exit 75
               fi
               sleep 0.1; touch "$LOOPD_TEST_ID.done""#,
        )
        .write();
    write_tests(&fleet, "ab.json", &["T1"]);
    write_tests(&fleet, "c.json", &["C1", "C2", "C3", "C4"]);
    write_fleet(
        &fleet,
        "max_concurrent_agents = 3\napi_backoff_max = \"2s\"",
        &[
            ("a", "shared", "ab.json", 5),
            ("b", "shared", "ab.json", 5),
            ("c", "other", "c.json", 5),
        ],
    );
    fleet.run().expect_code(0);

    let (a, b, c) = (
        attempts(&fleet, "a"),
        attempts(&fleet, "b"),
        attempts(&fleet, "c"),
    );
    for first in [&a[0], &b[0]] {
        assert_eq!(first["outcome"], "api_error", "{first}");
        assert_eq!(first["counted"], false);
    }
    assert_eq!(a[1]["outcome"], "passed");
    assert_eq!(b[1]["outcome"], "passed");
    // The provider-wide backoff (1 s at least after the first error) holds both loops back...
    let first_error = time(&a[0], "finished_at").min(time(&b[0], "finished_at"));
    for retry in [&a[1], &b[1]] {
        let waited = time(retry, "started_at") - first_error;
        assert!(
            waited.num_milliseconds() >= 900,
            "retried after {waited}: {retry}"
        );
    }
    // ... while the other provider's loop ran its tests in the meantime.
    let retries_start = time(&a[1], "started_at").min(time(&b[1], "started_at"));
    let during = c
        .iter()
        .filter(|x| time(x, "started_at") < retries_start)
        .count();
    assert!(
        during >= 2,
        "c ran {during} attempts during the backoff: {c:?}"
    );
}

#[test]
fn an_empty_credit_balance_pauses_every_loop_of_the_provider_and_counts_nothing() {
    let fleet = Fleet::new()
        .agent(r#"echo "Credit balance is too low"; exit 1"#)
        .write();
    write_tests(&fleet, "x.json", &["T1"]);
    write_fleet(
        &fleet,
        "max_concurrent_agents = 1",
        &[
            ("x", "anthropic-test", "x.json", 5),
            ("y", "anthropic-test", "x.json", 5),
        ],
    );
    let run = Running::spawn(fleet.loopd(&["run", "loopd.toml", "--plain"])).wait(RUN_TIMEOUT);
    run.expect_code(3);
    let status = fleet.status();
    for lp in status["loops"].as_array().unwrap() {
        assert_eq!(lp["status"], "paused", "{lp:#}");
        assert_eq!(lp["reason"], "out_of_credits", "{lp:#}");
    }
    // With one slot, whichever loop got it first met the empty balance; the other never spent
    // an attempt on a provider known to be out of credits.
    let mut all = attempts(&fleet, "x");
    all.extend(attempts(&fleet, "y"));
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["outcome"], "out_of_credits");
    assert_eq!(all[0]["counted"], false);
    assert!(run.stderr.contains("out of credits"), "{run}");
}
