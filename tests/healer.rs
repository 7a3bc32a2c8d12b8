//! The healer end to end: scripted agents that read their prompt and change course only when
//! the prompt tells them what failed before.

mod common;

use common::{git_in, Fleet, LOOP};
use serde_json::json;

/// Verify fails with the same words (so the same fingerprint) for every wrong answer.
const VERIFY: &str =
    "grep -qx 42 answer.txt || { echo \"error: answer.txt holds $(cat answer.txt) not 42\"; exit 1; }";

#[test]
fn a_repeated_failure_is_named_in_the_next_prompt_and_insights_counts_it() {
    let fleet = Fleet::new()
        .set("max_attempts", "3")
        .tests(json!([{
            "id": "T1",
            "title": "answer.txt holds 42",
            "spec": "Write the answer into answer.txt.",
            "verify": VERIFY,
        }]))
        .agent(
            r#"# Keeps its approach until the prompt says it failed the same way twice.
if grep -q "failed the same way" "$LOOPD_PROMPT_FILE"; then
  echo 42 > answer.txt
  printf '{"summary": "took another approach: wrote 42"}' > "$LOOPD_RESULT_FILE"
else
  echo 41 > answer.txt
  printf '{"summary": "wrote 41, the answer I believe in"}' > "$LOOPD_RESULT_FILE"
fi
"#,
        )
        .write();
    fleet.run().expect_code(0);

    let attempts = fleet.attempts("T1");
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or("<none>"))
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "passed"], "{attempts:#?}");
    assert_eq!(attempts[0]["fingerprint"], attempts[1]["fingerprint"]);

    let second = std::fs::read_to_string(fleet.prompt("T1", 2)).unwrap();
    assert!(
        !second.contains("same way"),
        "one failure is no repeat:\n{second}"
    );
    let third = std::fs::read_to_string(fleet.prompt("T1", 3)).unwrap();
    for want in [
        "Attempts 1 and 2 failed the same way:",
        "error: answer.txt holds # not #",
        "- attempt 1: wrote 41, the answer I believe in",
        "Take a different approach",
    ] {
        assert!(
            third.contains(want),
            "the third prompt lacks {want:?}:\n{third}"
        );
    }

    let insights = fleet.cmd(&["insights", "--json"]).json();
    let patterns = insights["patterns"].as_array().unwrap();
    assert_eq!(patterns.len(), 1, "{insights:#}");
    assert_eq!(patterns[0]["count"], 2);
    assert_eq!(patterns[0]["fingerprint"], attempts[0]["fingerprint"]);
    assert_eq!(patterns[0]["example"], "error: answer.txt holds # not #");
    assert_eq!(patterns[0]["tests"], json!([format!("{LOOP}:T1")]));
    let text = fleet.cmd(&["insights", LOOP]);
    text.expect_code(0);
    assert!(text.stdout.contains("  2x  "), "{text}");
}

#[test]
fn a_lesson_from_one_loop_reaches_a_test_of_another_that_fails_the_same_way() {
    let fleet = Fleet::new()
        .set("max_attempts", "3")
        .tests(json!([{
            "id": "A1", "title": "answer", "spec": "Write the answer.", "verify": VERIFY,
        }]))
        .agent(
            r#"if [ "$LOOPD_LOOP" = main ]; then
  # Loop A: wrong once, then right.
  if [ "$LOOPD_ATTEMPT" = 1 ]; then echo 41 > answer.txt; else
    echo 42 > answer.txt
    printf '{"summary": "the answer is 42, not 41"}' > "$LOOPD_RESULT_FILE"
  fi
else
  # Loop B: right only once a lesson tells it how.
  if grep -q "was fixed by" "$LOOPD_PROMPT_FILE"; then echo 42 > answer.txt; else echo 40 > answer.txt; fi
fi
"#,
        )
        .write();
    // Loop A learns its lesson in a first run; a second run brings in loop B (its own workdir),
    // so B certainly starts after A's pass, and the lesson has to come back from the store.
    fleet.run().expect_code(0);
    let work2 = fleet.root().join("work2");
    std::fs::create_dir_all(&work2).unwrap();
    git_in(&work2, &["init", "-q"]);
    git_in(&work2, &["config", "user.name", "loopd e2e"]);
    git_in(&work2, &["config", "user.email", "e2e@localhost"]);
    git_in(&work2, &["config", "commit.gpgsign", "false"]);
    git_in(&work2, &["commit", "-q", "--allow-empty", "-m", "initial"]);
    std::fs::write(
        fleet.root().join("tests2.json"),
        json!({"tests": [{
            "id": "B1", "title": "answer", "spec": "Write the answer.", "verify": VERIFY,
        }]})
        .to_string(),
    )
    .unwrap();
    let mut toml = std::fs::read_to_string(fleet.config_file()).unwrap();
    toml.push_str(
        "\n[[loops]]\nname = \"other\"\nworkdir = \"work2\"\ntests_file = \"tests2.json\"\n\
         max_attempts = 3\nkill_grace = \"1s\"\n[loops.agent]\nkind = \"command\"\n\
         command = [\"./agent.sh\"]\n",
    );
    std::fs::write(fleet.config_file(), toml).unwrap();
    fleet.run().expect_code(0);

    let prompt = |test: &str, n: u32| {
        let p = fleet
            .state_dir()
            .join("transcripts")
            .join("other")
            .join(test)
            .join(format!("{n}.prompt.md"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    assert!(!prompt("B1", 1).contains("was fixed by"));
    let second = prompt("B1", 2);
    assert!(
        second.contains(
            "A similar failure (`error: answer.txt holds # not #`) in loop main, test A1 was \
             fixed by: the answer is 42, not 41"
        ),
        "B's second prompt lacks A's lesson:\n{second}"
    );
    // B learned the same lesson in turn: both are listed, newest first.
    let insights = fleet.cmd(&["insights", "--json"]).json();
    let learned: Vec<&str> = insights["lessons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["test_id"].as_str().unwrap())
        .collect();
    assert_eq!(learned, ["B1", "A1"], "{insights:#}");
}
