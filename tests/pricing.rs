//! The price table end to end: a text agent whose output names only tokens
//! (`token_patterns`) gets its attempts priced by `[pricing."<model>"]` for the loop's `model`;
//! a loop whose model has no entry gets them recorded as cost unknown, not as free; an agent
//! that names its own cost (`cost_patterns`) is never priced from the table.

mod common;

use common::Fleet;
use serde_json::{json, Value};

fn attempts(fleet: &Fleet, lp: &str) -> Vec<Value> {
    let run = fleet.cmd(&["attempts", lp, "--json"]);
    run.json()["attempts"].as_array().unwrap().clone()
}

#[test]
fn tokens_are_priced_by_the_loops_model_and_unpriced_ones_are_unknown() {
    // The agent prints usage as aider does, over two requests, and does the work.
    let fleet = Fleet::new()
        .agent(
            r#"echo "Tokens: 1.5k sent, 500 cache hit, 100 received."
               echo "Tokens: 500 sent, 0 cache hit, 100 received."
               if [ "$LOOPD_LOOP" = own ]; then echo "Cost: \$0.0300 message"; fi
               touch "$LOOPD_LOOP.done""#,
        )
        .write();
    let tests = |id: &str| json!({"tests": [{"id": "T1", "title": "t", "spec": "x", "verify": format!("test -f {id}.done")}]});
    for lp in ["priced", "unpriced", "own"] {
        std::fs::write(
            fleet.root().join(format!("{lp}.json")),
            tests(lp).to_string(),
        )
        .unwrap();
    }
    let mut toml = String::from(
        "[fleet]\nstate_dir = \"state\"\nmax_concurrent_agents = 3\n\n\
         [pricing.m]\ninput_usd_per_mtok = 2.0\ncached_input_usd_per_mtok = 0.5\n\
         output_usd_per_mtok = 10.0\n\n",
    );
    for (lp, model) in [
        ("priced", "m"),
        ("unpriced", "nobody-priced-me"),
        ("own", "m"),
    ] {
        toml.push_str(&format!(
            "[[loops]]\nname = \"{lp}\"\nworkdir = \"work\"\nallow_dirty = true\n\
             tests_file = \"{lp}.json\"\nmodel = \"{model}\"\ncheckpoints = false\n\
             [loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n\
             cost_patterns = ['Cost: \\$(?P<usd>[0-9.]+) message']\n\
             token_patterns = ['(?P<input>[0-9.,]+k?) sent', '(?P<cached>[0-9.,]+k?) cache hit', \
             '(?P<output>[0-9.,]+k?) received']\n\n"
        ));
    }
    std::fs::write(fleet.config_file(), toml).unwrap();
    fleet.run().expect_code(0);

    let priced = &attempts(&fleet, "priced")[0];
    assert_eq!(priced["outcome"], "passed", "{priced:#}");
    assert_eq!(priced["input_tokens"], 2000, "{priced:#}");
    assert_eq!(priced["cached_input_tokens"], 500, "{priced:#}");
    assert_eq!(priced["output_tokens"], 200, "{priced:#}");
    // (2000 - 500) x $2 + 500 x $0.5 + 200 x $10, per million.
    let usd = priced["cost_usd"].as_f64().unwrap();
    assert!((usd - 0.00525).abs() < 1e-12, "{priced:#}");
    assert!(priced.get("cost_unknown").is_none(), "{priced:#}");

    let unpriced = &attempts(&fleet, "unpriced")[0];
    assert_eq!(unpriced["outcome"], "passed", "{unpriced:#}");
    assert_eq!(unpriced["input_tokens"], 2000, "{unpriced:#}");
    assert_eq!(unpriced["cost_unknown"], true, "{unpriced:#}");
    assert_eq!(unpriced["cost_usd"], 0.0, "{unpriced:#}");

    let own = &attempts(&fleet, "own")[0];
    assert_eq!(own["cost_usd"], 0.03, "{own:#}");
    assert!(own.get("cost_unknown").is_none(), "{own:#}");
}

#[test]
fn validate_names_a_bad_price_and_a_pattern_without_its_group() {
    let fleet = Fleet::new().write();
    let mut toml = std::fs::read_to_string(fleet.config_file()).unwrap();
    toml.push_str("token_patterns = ['(\\d+) tokens']\n\n[pricing.\"gpt-x\"]\ninput_usd_per_mtok = -1\noutput_usd_per_mtok = 1\nper_request = 2\n");
    std::fs::write(fleet.config_file(), &toml).unwrap();
    let run = fleet.cmd(&["validate"]);
    run.expect_code(2);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("/loops/0/agent/token_patterns/0:") && text.contains("(?P<input>...)"),
        "{text}"
    );
    assert!(
        text.contains("/pricing/gpt-x/input_usd_per_mtok: expected a number >= 0, found -1"),
        "{text}"
    );
    assert!(
        text.contains("/pricing/gpt-x/per_request: unknown key `per_request`"),
        "{text}"
    );
}
