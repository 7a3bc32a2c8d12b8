//! What the healer tries after `max_attempts` counted failures, within the heal budget, and
//! when it calls a person instead.

use super::{diagnose, list_numbers, normalised_error, outcome_name, repeated_failure, shorten_to};
use crate::model::{AttemptRecord, HealStrategy, Outcome, TestRecord, TestStatus};

/// The strategy after `heal_attempts_done` failed heal attempts: a fresh start, then an
/// alternative prompt, then `heal_model` if there is one; `None` when all were tried.
/// Each is tried once: repeating one that failed is what the healer is there to avoid.
pub fn next_strategy(heal_attempts_done: u32, heal_model: Option<&str>) -> Option<HealStrategy> {
    match heal_attempts_done {
        0 => Some(HealStrategy::FreshStart),
        1 => Some(HealStrategy::AlternativePrompt),
        2 => heal_model.map(|m| HealStrategy::StrongerModel(m.to_string())),
        _ => None,
    }
}

/// Whether another heal attempt fits the budget: fewer attempts than `budget_attempts` and less
/// spent than `budget_usd`, each only when set (with neither set, [`next_strategy`] alone bounds
/// healing).
pub fn heal_budget_left(
    spent_attempts: u32,
    spent_usd: f64,
    budget_attempts: Option<u32>,
    budget_usd: Option<f64>,
) -> bool {
    budget_attempts.is_none_or(|b| spent_attempts < b) && budget_usd.is_none_or(|b| spent_usd < b)
}

/// A loop's healing settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealPolicy {
    /// The loop's `auto_heal`: try strategies at all.
    pub auto_heal: bool,
    /// The model of [`HealStrategy::StrongerModel`], if any.
    pub heal_model: Option<String>,
    /// Most heal attempts per test.
    pub budget_attempts: Option<u32>,
    /// Most US dollars heal attempts of one test may cost.
    pub budget_usd: Option<f64>,
}

/// What becomes of a test whose counted failures reached `max_attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealDecision {
    /// `failed` (no healing), `pending` (a heal attempt comes next) or `needs_human`.
    pub status: TestStatus,
    /// The strategy of the next attempt, when there is one.
    pub strategy: Option<HealStrategy>,
    /// The test's new `reason`.
    pub reason: String,
    /// Whether a person must be told (an `alert` event, webhooks).
    pub alert: bool,
}

/// Called for every counted failure once `counted_attempts >= max_attempts` (heal attempts
/// included): accounts the heal attempt that just failed, writes the diagnosis onto `test`,
/// sets its `heal_strategy`, and says what the test becomes. `history` is the test's attempts,
/// oldest first, ending with the one that just finished.
pub fn on_exhausted(
    test: &mut TestRecord,
    history: &[AttemptRecord],
    policy: &HealPolicy,
) -> HealDecision {
    if test.heal_strategy.is_some() {
        if let Some(last) = history.last() {
            test.heal_attempts += 1;
            test.heal_cost_usd += last.cost_usd;
        }
    }
    let diagnosis = diagnose(test, history);
    let advice = diagnosis
        .suggestions
        .first()
        .cloned()
        .unwrap_or_else(|| "see the diagnosis".into());
    test.diagnosis = Some(diagnosis);
    let next = if !policy.auto_heal {
        test.heal_strategy = None;
        return HealDecision {
            status: TestStatus::Failed,
            strategy: None,
            reason: format!(
                "{}; {advice}",
                crate::words::count(test.counted_attempts, "counted failure", "counted failures")
            ),
            alert: false,
        };
    } else if !heal_budget_left(
        test.heal_attempts,
        test.heal_cost_usd,
        policy.budget_attempts,
        policy.budget_usd,
    ) {
        Err(format!(
            "the heal budget is spent ({} heal {}, ${:.2})",
            test.heal_attempts,
            if test.heal_attempts == 1 {
                "attempt"
            } else {
                "attempts"
            },
            test.heal_cost_usd
        ))
    } else {
        next_strategy(test.heal_attempts, policy.heal_model.as_deref()).ok_or_else(|| {
            let tried = crate::words::count(test.heal_attempts, "heal strategy", "heal strategies");
            format!("{tried} failed")
        })
    };
    match next {
        Ok(s) => {
            test.heal_strategy = Some(s.clone());
            HealDecision {
                status: TestStatus::Pending,
                reason: format!("healing: trying {s}"),
                strategy: Some(s),
                alert: false,
            }
        }
        Err(why) => {
            test.heal_strategy = None;
            HealDecision {
                status: TestStatus::NeedsHuman,
                strategy: None,
                reason: format!("{why}; {advice}"),
                alert: true,
            }
        }
    }
}

/// Forgets the healer's work on `test` (for `reset`: the test starts over).
pub fn reset_healing(test: &mut TestRecord) {
    test.diagnosis = None;
    test.heal_strategy = None;
    test.heal_attempts = 0;
    test.heal_cost_usd = 0.0;
}

/// The prompt section of [`HealStrategy::AlternativePrompt`] (appended to the rendered prompt):
/// what failed, what was tried, and a request for a different approach.
pub fn alternative_prompt(history: &[AttemptRecord]) -> String {
    let failed: Vec<&AttemptRecord> = history
        .iter()
        .filter(|a| a.outcome.is_some_and(|o| o.counts(true)))
        .collect();
    let mut out = String::from("\n# Try a different approach\n");
    if failed.is_empty() {
        out.push_str("Earlier work on this task did not succeed. ");
    } else {
        let numbers: Vec<u32> = failed.iter().map(|a| a.number).collect();
        // How many ended each way, not one word per attempt: bounded at any history length.
        let mut outcomes: Vec<(String, u32)> = Vec::new();
        for a in &failed {
            let name = outcome_name(a.outcome.unwrap_or(Outcome::Failed));
            match outcomes.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => outcomes.push((name, 1)),
            }
        }
        let outcomes: Vec<String> = outcomes
            .iter()
            .map(|(name, count)| match count {
                1 => name.clone(),
                _ => format!("{count} {name}"),
            })
            .collect();
        out.push_str(&format!(
            "Attempts {} did not pass ({}).\n",
            list_numbers(&numbers),
            outcomes.join(", ")
        ));
    }
    if let Some(r) = repeated_failure(history) {
        out.push_str(&format!(
            "Attempts {} failed the same way: `{}`\n",
            list_numbers(&r.attempts),
            r.error_line
        ));
    } else if let Some((n, line)) = failed
        .iter()
        .rev()
        .find_map(|a| normalised_error(a).map(|l| (a.number, l)))
    {
        out.push_str(&format!("Attempt {n} ended with: `{line}`\n"));
    }
    // The last few only, each cut short: the prompt stays bounded whatever the history.
    let mut tried: Vec<String> = failed
        .iter()
        .rev()
        .filter_map(|a| {
            let s = a.summary.as_deref()?.trim();
            (!s.is_empty()).then(|| format!("- attempt {}: {}\n", a.number, shorten_to(s, 300)))
        })
        .take(3)
        .collect();
    tried.reverse();
    if !tried.is_empty() {
        out.push_str("What was tried:\n");
        out.extend(tried);
    }
    out.push_str(
        "That approach does not work: do not repeat it or build on it. Start again from the task \
         and the verify command, find out why verify fails, and take a different approach (another \
         design, another place in the code, or a smaller first step).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healer::testing::attempt;
    use crate::model::Origin;

    fn test_record() -> TestRecord {
        let spec = serde_json::from_value(serde_json::json!({
            "id": "T-1", "title": "Login", "spec": "build it", "verify": "make test"
        }))
        .unwrap();
        let mut t = TestRecord::new("auth", spec, Origin::File);
        t.counted_attempts = 3;
        t
    }

    #[test]
    fn strategies_come_cheapest_first_and_each_once() {
        assert_eq!(next_strategy(0, None), Some(HealStrategy::FreshStart));
        assert_eq!(
            next_strategy(1, None),
            Some(HealStrategy::AlternativePrompt)
        );
        assert_eq!(next_strategy(2, None), None);
        assert_eq!(
            next_strategy(2, Some("opus")),
            Some(HealStrategy::StrongerModel("opus".into()))
        );
        assert_eq!(next_strategy(3, Some("opus")), None);
    }

    #[test]
    fn the_budget_limits_attempts_and_dollars_only_when_set() {
        assert!(heal_budget_left(5, 100.0, None, None));
        assert!(heal_budget_left(1, 0.0, Some(2), None));
        assert!(!heal_budget_left(2, 0.0, Some(2), None));
        assert!(heal_budget_left(0, 0.99, None, Some(1.0)));
        assert!(!heal_budget_left(0, 1.0, Some(5), Some(1.0)));
    }

    #[test]
    fn without_auto_heal_the_test_fails_with_a_diagnosis() {
        let mut t = test_record();
        let h = [
            attempt(1, Outcome::NoChange, "x"),
            attempt(2, Outcome::NoChange, "x"),
        ];
        let d = on_exhausted(&mut t, &h, &HealPolicy::default());
        assert_eq!(d.status, TestStatus::Failed);
        assert!(!d.alert);
        assert!(
            d.reason.contains("the agent changes nothing"),
            "{}",
            d.reason
        );
        assert_eq!(t.diagnosis.as_ref().unwrap().attempts, 2);
        assert_eq!(t.heal_strategy, None);
    }

    #[test]
    fn healing_walks_the_strategies_then_escalates() {
        let mut t = test_record();
        let policy = HealPolicy {
            auto_heal: true,
            heal_model: Some("opus".into()),
            budget_attempts: None,
            budget_usd: None,
        };
        let mut h = vec![attempt(1, Outcome::Failed, "error: x")];
        let mut seen = Vec::new();
        loop {
            let d = on_exhausted(&mut t, &h, &policy);
            seen.push((d.status, d.strategy.clone()));
            if d.status != TestStatus::Pending {
                assert!(d.alert);
                assert!(
                    d.reason.starts_with("3 heal strategies failed"),
                    "{}",
                    d.reason
                );
                break;
            }
            h.push(attempt(h.len() as u32 + 1, Outcome::Failed, "error: x"));
        }
        assert_eq!(
            seen,
            vec![
                (TestStatus::Pending, Some(HealStrategy::FreshStart)),
                (TestStatus::Pending, Some(HealStrategy::AlternativePrompt)),
                (
                    TestStatus::Pending,
                    Some(HealStrategy::StrongerModel("opus".into()))
                ),
                (TestStatus::NeedsHuman, None),
            ]
        );
        assert_eq!(t.heal_attempts, 3);
        assert!(
            (t.heal_cost_usd - 1.5).abs() < 1e-9,
            "three heal attempts at $0.50"
        );
        reset_healing(&mut t);
        assert_eq!((t.heal_attempts, t.heal_strategy.clone()), (0, None));
    }

    #[test]
    fn a_spent_dollar_budget_escalates_before_the_next_strategy() {
        let mut t = test_record();
        t.heal_strategy = Some(HealStrategy::FreshStart);
        let policy = HealPolicy {
            auto_heal: true,
            budget_usd: Some(0.4),
            ..HealPolicy::default()
        };
        let d = on_exhausted(&mut t, &[attempt(4, Outcome::Failed, "error: x")], &policy);
        assert_eq!(d.status, TestStatus::NeedsHuman);
        assert!(
            d.reason
                .starts_with("the heal budget is spent (1 heal attempt, $0.50)"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn the_alternative_prompt_names_what_failed_and_what_was_tried() {
        let mut a1 = attempt(1, Outcome::Failed, "error: expected 200, got 500");
        a1.summary = Some("Rewrote the session store".into());
        let a2 = attempt(2, Outcome::ApiError, "");
        let a3 = attempt(3, Outcome::Failed, "error: expected 200, got 503");
        let p = alternative_prompt(&[a1, a2, a3]);
        assert!(
            p.contains("Attempts 1 and 3 did not pass (2 failed)."),
            "{p}"
        );
        assert!(
            p.contains("Attempts 1 and 3 failed the same way: `error: expected #, got #`"),
            "{p}"
        );
        assert!(p.contains("- attempt 1: Rewrote the session store"), "{p}");
        assert!(p.contains("take a different approach"), "{p}");
    }
}
