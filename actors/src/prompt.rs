//! Rendering the prompt of one attempt from the loop's template.
//!
//! Placeholders: `{{loop}}`, `{{test.id}}`, `{{test.title}}`, `{{test.spec}}`, `{{test.verify}}`,
//! `{{attempt}}`, `{{max_attempts}}`, `{{history}}` (the last three attempts in full: outcome,
//! reason, verify's output tail, the agent's summary; older ones folded into one line per way
//! they failed, "Attempts 1-296 failed the same way: ..."; when the latest failure repeats an
//! earlier one, which attempts failed that way and a request for another approach) and
//! `{{lessons}}`. The history section has a size bound that does not grow with the number of
//! attempts. Unknown placeholders are left as they are, so a template can talk about `{{...}}`
//! syntax of its own.

use crate::healer;
use crate::model::{AttemptRecord, Outcome};

/// The template used when a loop names none.
pub const DEFAULT_TEMPLATE: &str = "\
You are working in a git repository, on one task of the loop `{{loop}}`.

# Task {{test.id}}: {{test.title}}

{{test.spec}}

# How your work is checked
When you stop, loopd runs this command in the repository; exit status 0 means the task is done:

    {{test.verify}}

Your own claim of success counts for nothing: make that command pass. Do not weaken it.
This is attempt {{attempt}} of {{max_attempts}}.
{{history}}{{lessons}}";

/// What a prompt is rendered from.
#[derive(Debug)]
pub struct PromptInput<'a> {
    /// The loop's name.
    pub loop_name: &'a str,
    /// The test's id.
    pub test_id: &'a str,
    /// The test's title.
    pub title: &'a str,
    /// The spec text (inline or read from `spec_file`).
    pub spec: &'a str,
    /// The verify command.
    pub verify: &'a str,
    /// This attempt's number.
    pub attempt: u32,
    /// The loop's `max_attempts`.
    pub max_attempts: u32,
    /// Earlier attempts of this test, oldest first.
    pub history: &'a [AttemptRecord],
    /// Lessons to offer, already phrased.
    pub lessons: &'a [String],
}

/// How many earlier attempts are described in full; older ones are folded by how they failed.
const FULL_HISTORY: usize = 3;

/// How many kinds of failure the folded part names (the most recent ones), and how many of
/// the agent's summaries a repeated failure quotes: the prompt stays bounded at attempt 3,000.
const MAX_FOLDS: usize = 5;
const MAX_SUMMARIES: usize = 3;

/// Longest agent summary quoted, in characters.
const MAX_SUMMARY: usize = 300;

/// Renders `template` for `input`.
pub fn render(template: &str, input: &PromptInput<'_>) -> String {
    let values = [
        ("{{loop}}", input.loop_name.to_string()),
        ("{{test.id}}", input.test_id.to_string()),
        ("{{test.title}}", input.title.to_string()),
        ("{{test.spec}}", input.spec.to_string()),
        ("{{test.verify}}", input.verify.to_string()),
        ("{{attempt}}", input.attempt.to_string()),
        ("{{max_attempts}}", input.max_attempts.to_string()),
        ("{{history}}", history(input.history)),
        ("{{lessons}}", lessons(input.lessons)),
    ];
    // One pass over the template, so text inside a value (a spec mentioning `{{attempt}}`, say)
    // is never substituted again.
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match values.iter().find(|(k, _)| tail.starts_with(k)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &tail[k.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn history(attempts: &[AttemptRecord]) -> String {
    let finished: Vec<&AttemptRecord> = attempts
        .iter()
        .filter(|a| a.outcome.is_some_and(|o| o != Outcome::Interrupted))
        .collect();
    if finished.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Earlier attempts at this task\n");
    let (older, recent) = finished.split_at(finished.len().saturating_sub(FULL_HISTORY));
    if !older.is_empty() {
        out.push('\n');
        out.push_str(&folded(older));
    }
    for a in recent {
        let outcome = a.outcome.map(outcome_words).unwrap_or("unknown");
        out.push_str(&format!("\n## Attempt {}: {outcome}\n", a.number));
        if let Some(reason) = &a.reason {
            out.push_str(&format!("{reason}\n"));
        }
        if a.outcome == Some(Outcome::NoChange) {
            out.push_str(
                "You changed nothing in the repository. Make the changes the task needs.\n",
            );
        }
        if let Some(c) = &a.conflict {
            out.push_str(&conflict_note(c));
        }
        if !a.verify_tail.trim().is_empty() {
            out.push_str("The verify command printed (last lines):\n```\n");
            out.push_str(a.verify_tail.trim_end());
            out.push_str("\n```\n");
        }
        if let Some(diff) = a.summary.as_deref().filter(|s| !s.trim().is_empty()) {
            out.push_str(&format!(
                "The agent said: {}\n",
                healer::shorten_to(diff.trim(), MAX_SUMMARY)
            ));
        }
    }
    out.push_str("\nThe repository was reset to the last good state after each failed attempt.\n");
    if let Some(r) = healer::repeated_failure(attempts) {
        out.push_str(&repeated_note(&r));
    }
    out
}

/// The attempts before the last few, one line per way they failed (same fingerprint, else same
/// outcome), oldest first: "Attempts 1-296 failed the same way: ...". At most [`MAX_FOLDS`]
/// ways, the most recent; the others are counted in one line.
fn folded(older: &[&AttemptRecord]) -> String {
    // Groups in order of first appearance; each keeps its numbers and its latest attempt.
    let mut groups: Vec<(String, Vec<u32>, &AttemptRecord)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for a in older {
        let key = match &a.fingerprint {
            Some(f) => format!("f:{f}"),
            None => format!("o:{}", a.outcome.map(outcome_words).unwrap_or("unknown")),
        };
        match index.get(&key) {
            Some(&i) => {
                groups[i].1.push(a.number);
                groups[i].2 = a;
            }
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![a.number], a));
            }
        }
    }
    let mut out = String::new();
    if groups.len() > MAX_FOLDS {
        // Keep the ways that failed most recently.
        groups.sort_by_key(|(_, numbers, _)| std::cmp::Reverse(numbers.last().copied()));
        let dropped = groups.split_off(MAX_FOLDS);
        let mut numbers: Vec<u32> = dropped.iter().flat_map(|(_, n, _)| n.clone()).collect();
        numbers.sort_unstable();
        out.push_str(&format!(
            "Attempts {} failed in {}, not repeated here.\n",
            healer::list_numbers(&numbers),
            crate::words::count(dropped.len(), "other way", "other ways")
        ));
        groups.sort_by_key(|(_, numbers, _)| numbers.first().copied());
    }
    for (_, numbers, last) in &groups {
        let outcome = last.outcome.map(outcome_words).unwrap_or("unknown");
        let which = healer::list_numbers(numbers);
        let head = match (numbers.len(), last.fingerprint.is_some()) {
            (1, _) => format!("Attempt {which}: {outcome}"),
            (_, true) => format!("Attempts {which} failed the same way ({outcome})"),
            (_, false) => format!("Attempts {which}: {outcome}"),
        };
        match healer::normalised_error(last) {
            Some(line) => out.push_str(&format!("{head}:\n    {line}\n")),
            None => out.push_str(&format!("{head}.\n")),
        }
    }
    out
}

/// The note that an approach failed the same way more than once, and must not be tried again.
fn repeated_note(r: &healer::RepeatedFailure) -> String {
    let mut out = format!(
        "\n# The same failure again\nAttempts {} failed the same way:\n\n    {}\n",
        healer::list_numbers(&r.attempts),
        r.error_line
    );
    if !r.summaries.is_empty() {
        out.push_str("\nWhat those attempts did, in the agent's words:\n");
        let skipped = r.summaries.len().saturating_sub(MAX_SUMMARIES);
        if skipped > 0 {
            out.push_str(&format!(
                "- ({}, not repeated here)\n",
                crate::words::count(skipped, "earlier attempt", "earlier attempts")
            ));
        }
        for (n, s) in &r.summaries[skipped..] {
            out.push_str(&format!(
                "- attempt {n}: {}\n",
                healer::shorten_to(s, MAX_SUMMARY)
            ));
        }
    }
    out.push_str(
        "\nThat approach does not work, and trying it again will fail again. Take a different \
         approach: find the cause of this error first, then change something else than before.\n",
    );
    out
}

fn lessons(lessons: &[String]) -> String {
    if lessons.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Lessons from earlier work\n");
    for l in lessons {
        out.push_str(&format!("- {l}\n"));
    }
    out
}

/// What a `conflict` attempt tells the next one: which work it met, where, and that the
/// repository now holds that work.
fn conflict_note(c: &crate::model::MergeConflict) -> String {
    let mut out = String::from("Your work passed, but it could not be merged: ");
    if !c.with_tests.is_empty() {
        out.push_str(&format!(
            "work on {} was merged first",
            quoted(&c.with_tests)
        ));
    } else {
        out.push_str("other work was merged first");
    }
    if !c.files.is_empty() {
        out.push_str(&format!(", and both changed {}", quoted(&c.files)));
    }
    if let Some(t) = &c.failed_verify_of {
        out.push_str(&format!("; on the merged tree the verify of `{t}` failed"));
    }
    out.push_str(
        ".\nThis attempt starts from the new checkpoint, which holds that work: make your change \
         on top of it, keeping both.\n",
    );
    out
}

/// "`a`, `b`".
fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Words for an outcome in a prompt.
pub fn outcome_words(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed: the verify command did not pass",
        Outcome::AgentError => "the agent exited with an error",
        Outcome::NoChange => "no change",
        Outcome::Stalled => "stalled: no output for too long, stopped",
        Outcome::TimedOut => "timed out, stopped",
        Outcome::ApiError => "the model's API failed",
        Outcome::OutOfCredits => "out of credits",
        Outcome::Interrupted => "interrupted",
        Outcome::Regression => "broke a test that passed before; rolled back",
        Outcome::AgentUnavailable => "the agent could not be started",
        Outcome::Conflict => "passed, but could not be merged with work merged meanwhile",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32, outcome: Outcome, tail: &str) -> AttemptRecord {
        let mut a = AttemptRecord::started("l", "T", n, "t".into());
        a.outcome = Some(outcome);
        a.counted = true;
        a.exit_code = Some(0);
        a.verify_exit = Some(1);
        a.verify_tail = tail.into();
        a
    }

    #[test]
    fn a_conflict_names_the_other_test_and_the_files_in_the_next_prompt() {
        let mut a = attempt(1, Outcome::Conflict, "");
        a.conflict = Some(crate::model::MergeConflict {
            files: vec!["src/lib.rs".into(), "README.md".into()],
            with_tests: vec!["B".into()],
            failed_verify_of: None,
        });
        let history = [a];
        let p = render(DEFAULT_TEMPLATE, &input(&history, "spec"));
        assert!(
            p.contains("work on `B` was merged first, and both changed `src/lib.rs`, `README.md`."),
            "{p}"
        );
        assert!(
            p.contains("could not be merged with work merged meanwhile"),
            "{p}"
        );
        let mut a = attempt(1, Outcome::Conflict, "");
        a.conflict = Some(crate::model::MergeConflict {
            files: vec![],
            with_tests: vec!["C".into()],
            failed_verify_of: Some("A".into()),
        });
        let history = [a];
        let p = render(DEFAULT_TEMPLATE, &input(&history, "spec"));
        assert!(
            p.contains(
                "work on `C` was merged first; on the merged tree the verify of `A` failed."
            ),
            "{p}"
        );
    }

    fn input<'a>(history: &'a [AttemptRecord], spec: &'a str) -> PromptInput<'a> {
        PromptInput {
            loop_name: "auth",
            test_id: "T-1",
            title: "Login",
            spec,
            verify: "cargo test login",
            attempt: history.len() as u32 + 1,
            max_attempts: 3,
            history,
            lessons: &[],
        }
    }

    #[test]
    fn first_prompt_has_spec_and_verify_and_no_history() {
        let p = render(DEFAULT_TEMPLATE, &input(&[], "Build a login form"));
        assert!(p.contains("Task T-1: Login"));
        assert!(p.contains("Build a login form"));
        assert!(p.contains("    cargo test login"));
        assert!(p.contains("attempt 1 of 3"));
        assert!(!p.contains("Earlier attempts"));
    }

    #[test]
    fn a_retry_carries_the_earlier_verify_output() {
        let h = [attempt(
            1,
            Outcome::Failed,
            "assertion failed: left == right",
        )];
        let p = render(DEFAULT_TEMPLATE, &input(&h, "x"));
        assert!(p.contains("Attempt 1: failed"));
        assert!(p.contains("assertion failed: left == right"));
        assert!(p.contains("attempt 2 of 3"));
    }

    #[test]
    fn a_repeated_failure_is_named_and_another_approach_asked_for() {
        let mut a1 = crate::healer::testing::attempt(
            1,
            Outcome::Failed,
            "test login ... FAILED\nassertion failed: status == 200 (got 500) at src/login.rs:41",
        );
        a1.summary = Some("Added a /login route returning the session".into());
        let a2 = crate::healer::testing::attempt(
            2,
            Outcome::Failed,
            "test login ... FAILED\nassertion failed: status == 200 (got 503) at src/login.rs:44",
        );
        assert_eq!(a1.fingerprint, a2.fingerprint);
        let p = render(DEFAULT_TEMPLATE, &input(&[a1.clone(), a2], "x"));
        assert!(
            p.contains("# The same failure again\nAttempts 1 and 2 failed the same way:"),
            "{p}"
        );
        assert!(
            p.contains("    assertion failed: status == # (got #) at <path>\n"),
            "{p}"
        );
        assert!(
            p.contains("- attempt 1: Added a /login route returning the session"),
            "{p}"
        );
        assert!(p.contains("Take a different approach"), "{p}");

        // A different failure second: nothing repeated, no note.
        let other =
            crate::healer::testing::attempt(2, Outcome::Failed, "error: no such table `users`");
        let p = render(DEFAULT_TEMPLATE, &input(&[a1, other], "x"));
        assert!(!p.contains("same failure"), "{p}");
        assert!(!p.contains("different approach"), "{p}");
    }

    /// `n` failed attempts, each with a summary; `kinds` different failures taking turns.
    fn long_history(n: u32, kinds: u32) -> Vec<AttemptRecord> {
        const WORDS: [&str; 8] = [
            "table", "column", "index", "view", "row", "key", "field", "type",
        ];
        (1..=n)
            .map(|i| {
                let word = WORDS[((i - 1) % kinds) as usize];
                let tail = format!("test login ... FAILED\nerror: no such {word} at src/db.rs:{i}");
                let mut a = crate::healer::testing::attempt(i, Outcome::Failed, &tail);
                a.summary = Some(format!("Attempt {i}: changed the schema once more"));
                a.reason = Some("verify exited with 1".into());
                a
            })
            .collect()
    }

    #[test]
    fn a_long_history_is_folded_by_fingerprint() {
        let h = long_history(300, 1);
        let p = render(DEFAULT_TEMPLATE, &input(&h, "x"));
        assert!(
            p.contains(
                "Attempts 1-297 failed the same way (failed: the verify command did not pass):\n    \
                 error: no such table at <path>\n"
            ),
            "{p}"
        );
        // The last three in full, no older one on its own.
        assert!(p.contains("## Attempt 298: failed") && p.contains("## Attempt 300: failed"));
        assert!(!p.contains("## Attempt 297"), "{p}");
        assert!(p.contains("Attempts 1-300 failed the same way:\n"), "{p}");
        assert!(
            p.contains("- (297 earlier attempts, not repeated here)\n"),
            "{p}"
        );
        assert!(p.contains("- attempt 298: ") && !p.contains("- attempt 297: "));
    }

    #[test]
    fn the_prompt_is_bounded_whatever_the_history() {
        // One failure over and over, and eight failures taking turns (ranges cannot merge).
        for kinds in [1, 8] {
            let sizes: Vec<usize> = [10, 300, 3000]
                .iter()
                .map(|&n| render(DEFAULT_TEMPLATE, &input(&long_history(n, kinds), "x")).len())
                .collect();
            // The bound does not depend on N: 3,000 attempts take the room of 300, give or
            // take the digits of the attempt numbers.
            assert!(sizes.iter().all(|s| *s < 4096), "{kinds} kinds: {sizes:?}");
            assert!(sizes[2] <= sizes[1] + 64, "{kinds} kinds: {sizes:?}");
        }
        let p = render(DEFAULT_TEMPLATE, &input(&long_history(300, 8), "x"));
        assert!(
            p.contains("failed in 3 other ways, not repeated here."),
            "{p}"
        );
    }

    #[test]
    fn values_are_not_substituted_twice_and_unknown_placeholders_stay() {
        let p = render(
            "{{test.spec}} {{other}}",
            &input(&[], "literally {{attempt}}"),
        );
        assert_eq!(p, "literally {{attempt}} {{other}}");
    }
}
