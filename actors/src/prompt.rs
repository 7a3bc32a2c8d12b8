//! Rendering the prompt of one attempt from the loop's template.
//!
//! Placeholders: `{{loop}}`, `{{test.id}}`, `{{test.title}}`, `{{test.spec}}`, `{{test.verify}}`,
//! `{{attempt}}`, `{{max_attempts}}`, `{{history}}` (earlier attempts: outcome, reason, verify's
//! output tail, diff summary; when the latest failure repeats an earlier one, which attempts
//! failed that way and a request for another approach) and `{{lessons}}`. Unknown placeholders are left as they are, so a
//! template can talk about `{{...}}` syntax of its own.

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

/// How many earlier attempts are described in full (older ones get one line).
const FULL_HISTORY: usize = 3;

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
    let full_from = finished.len().saturating_sub(FULL_HISTORY);
    for (i, a) in finished.iter().enumerate() {
        let outcome = a.outcome.map(outcome_words).unwrap_or("unknown");
        out.push_str(&format!("\n## Attempt {}: {outcome}\n", a.number));
        if let Some(reason) = &a.reason {
            out.push_str(&format!("{reason}\n"));
        }
        if i < full_from {
            continue;
        }
        if a.outcome == Some(Outcome::NoChange) {
            out.push_str(
                "You changed nothing in the repository. Make the changes the task needs.\n",
            );
        }
        if !a.verify_tail.trim().is_empty() {
            out.push_str("The verify command printed (last lines):\n```\n");
            out.push_str(a.verify_tail.trim_end());
            out.push_str("\n```\n");
        }
        if let Some(diff) = a.summary.as_deref().filter(|s| !s.trim().is_empty()) {
            out.push_str(&format!("The agent said: {}\n", diff.trim()));
        }
    }
    out.push_str("\nThe repository was reset to the last good state after each failed attempt.\n");
    if let Some(r) = healer::repeated_failure(attempts) {
        out.push_str(&repeated_note(&r));
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
        for (n, s) in &r.summaries {
            out.push_str(&format!("- attempt {n}: {s}\n"));
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

    #[test]
    fn values_are_not_substituted_twice_and_unknown_placeholders_stay() {
        let p = render(
            "{{test.spec}} {{other}}",
            &input(&[], "literally {{attempt}}"),
        );
        assert_eq!(p, "literally {{attempt}} {{other}}");
    }
}
