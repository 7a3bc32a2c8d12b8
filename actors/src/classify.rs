//! Outcome classification: what the facts of one attempt (how its agent ended, its exit, what
//! it said about the provider, verify, the tree) make of it, by DESIGN.md's outcome table. Pure:
//! no process, no git, no clock, so the whole table is unit-tested below.

use std::time::Duration;

use crate::agent::ProviderFailure;
use crate::model::Outcome;

/// How the agent's run ended, before verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEnd {
    /// It exited by itself.
    Exited,
    /// The monitor ended it: no output for `stall_timeout`.
    Stalled,
    /// The monitor ended it: it overran its time limit.
    TimedOut,
    /// It was interrupted (stop, shutdown, reload): the attempt is `interrupted`, verify not run.
    Cancelled,
    /// It could not be started: the attempt is `agent_unavailable`, verify not run.
    SpawnFailed,
}

/// What is known of an attempt once verify has run (an agent that was cancelled or could not
/// start is not classified: nothing ran that verify could judge).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// How the agent ended.
    pub end: AgentEnd,
    /// Its exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub exit_signal: Option<i32>,
    /// What its output said about the provider (API failure, empty balance).
    pub provider: Option<&'a ProviderFailure>,
    /// Whether verify exited 0.
    pub verify_passed: bool,
    /// Whether verify overran `verify_timeout` (and was counted as failed).
    pub verify_timed_out: bool,
    /// Whether the tree equals the last checkpoint.
    pub unchanged: bool,
    /// The loop's `stall_timeout`, for the reason.
    pub stall_timeout: Duration,
    /// The loop's `verify_timeout`, for the reason.
    pub verify_timeout: Duration,
}

/// The outcome of an attempt and the reason shown beside it. verify always runs and a pass
/// always wins (a kill is kept in the reason); then the provider's failure (not the agent's
/// fault), the monitor's kill, the agent's own failure, an unchanged tree, verify's overrun,
/// and last a plain failed verify.
pub fn classify(f: &Facts) -> (Outcome, Option<String>) {
    if f.verify_passed {
        let reason = match f.end {
            AgentEnd::Stalled => Some(format!(
                "verify passed, though the agent was killed after no output for {}",
                humantime::format_duration(f.stall_timeout)
            )),
            AgentEnd::TimedOut => Some(
                "verify passed, though the agent was killed for overrunning its time limit".into(),
            ),
            _ => None,
        };
        return (Outcome::Passed, reason);
    }
    if let Some(p) = f.provider {
        return match p {
            ProviderFailure::OutOfCredits { message } => (
                Outcome::OutOfCredits,
                Some(format!("out of credits: {message}")),
            ),
            ProviderFailure::ApiError { status, message } => (
                Outcome::ApiError,
                Some(match status {
                    Some(s) => format!("the provider's API failed (HTTP {s}): {message}"),
                    None => format!("the provider's API failed: {message}"),
                }),
            ),
        };
    }
    match f.end {
        AgentEnd::Stalled => {
            return (
                Outcome::Stalled,
                Some(format!(
                    "no output for {}, the agent's process group was ended",
                    humantime::format_duration(f.stall_timeout)
                )),
            )
        }
        AgentEnd::TimedOut => {
            return (
                Outcome::TimedOut,
                Some("the agent overran its time limit; its process group was ended".into()),
            )
        }
        AgentEnd::Exited | AgentEnd::Cancelled | AgentEnd::SpawnFailed => {}
    }
    if f.exit_code != Some(0) {
        let how = match (f.exit_code, f.exit_signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "an unknown status".into(),
        };
        return (
            Outcome::AgentError,
            Some(format!("the agent ended with {how}")),
        );
    }
    if f.unchanged {
        return (
            Outcome::NoChange,
            Some("verify failed and the agent changed nothing".into()),
        );
    }
    if f.verify_timed_out {
        return (
            Outcome::Failed,
            Some(format!(
                "verify overran verify_timeout ({})",
                humantime::format_duration(f.verify_timeout)
            )),
        );
    }
    (Outcome::Failed, Some("verify exited non-zero".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDS: [AgentEnd; 3] = [AgentEnd::Exited, AgentEnd::Stalled, AgentEnd::TimedOut];

    fn api() -> ProviderFailure {
        ProviderFailure::ApiError {
            status: Some(529),
            message: "overloaded".into(),
        }
    }

    fn credits() -> ProviderFailure {
        ProviderFailure::OutOfCredits {
            message: "balance too low".into(),
        }
    }

    fn facts(end: AgentEnd) -> Facts<'static> {
        Facts {
            end,
            exit_code: Some(0),
            exit_signal: None,
            provider: None,
            verify_passed: false,
            verify_timed_out: false,
            unchanged: false,
            stall_timeout: Duration::from_secs(300),
            verify_timeout: Duration::from_secs(60),
        }
    }

    /// One row a rule: the facts, the outcome, a word its reason must hold (`""`: no reason).
    #[test]
    fn each_rule_of_the_outcome_table() {
        let (api, credits) = (api(), credits());
        let rows: Vec<(&str, Facts, Outcome, &str)> = vec![
            (
                "a pass",
                Facts {
                    verify_passed: true,
                    ..facts(AgentEnd::Exited)
                },
                Outcome::Passed,
                "",
            ),
            (
                "a pass after a stall kill",
                Facts {
                    verify_passed: true,
                    ..facts(AgentEnd::Stalled)
                },
                Outcome::Passed,
                "no output for 5m",
            ),
            (
                "a pass after a time-limit kill",
                Facts {
                    verify_passed: true,
                    ..facts(AgentEnd::TimedOut)
                },
                Outcome::Passed,
                "overrunning its time limit",
            ),
            (
                "a pass beside a provider failure and a crash",
                Facts {
                    verify_passed: true,
                    provider: Some(&api),
                    exit_code: Some(1),
                    ..facts(AgentEnd::Exited)
                },
                Outcome::Passed,
                "",
            ),
            (
                "out of credits",
                Facts {
                    provider: Some(&credits),
                    exit_code: Some(1),
                    ..facts(AgentEnd::Exited)
                },
                Outcome::OutOfCredits,
                "balance too low",
            ),
            (
                "an API error, even when stalled",
                Facts {
                    provider: Some(&api),
                    ..facts(AgentEnd::Stalled)
                },
                Outcome::ApiError,
                "HTTP 529",
            ),
            (
                "a stall",
                Facts {
                    exit_code: None,
                    exit_signal: Some(9),
                    ..facts(AgentEnd::Stalled)
                },
                Outcome::Stalled,
                "no output for 5m",
            ),
            (
                "a time-limit kill",
                Facts {
                    exit_code: None,
                    ..facts(AgentEnd::TimedOut)
                },
                Outcome::TimedOut,
                "time limit",
            ),
            (
                "an agent that exited non-zero",
                Facts {
                    exit_code: Some(3),
                    unchanged: true,
                    ..facts(AgentEnd::Exited)
                },
                Outcome::AgentError,
                "exit status 3",
            ),
            (
                "an agent ended by a signal",
                Facts {
                    exit_code: None,
                    exit_signal: Some(15),
                    ..facts(AgentEnd::Exited)
                },
                Outcome::AgentError,
                "signal 15",
            ),
            (
                "an agent that changed nothing",
                Facts {
                    unchanged: true,
                    verify_timed_out: true,
                    ..facts(AgentEnd::Exited)
                },
                Outcome::NoChange,
                "changed nothing",
            ),
            (
                "a verify that overran",
                Facts {
                    verify_timed_out: true,
                    ..facts(AgentEnd::Exited)
                },
                Outcome::Failed,
                "verify_timeout (1m)",
            ),
            (
                "a failed verify",
                facts(AgentEnd::Exited),
                Outcome::Failed,
                "non-zero",
            ),
        ];
        for (what, f, outcome, word) in rows {
            let (got, reason) = classify(&f);
            assert_eq!(got, outcome, "{what}");
            match word {
                "" => assert_eq!(reason, None, "{what}"),
                w => assert!(
                    reason.as_deref().is_some_and(|r| r.contains(w)),
                    "{what}: {reason:?} does not say {w:?}"
                ),
            }
        }
    }

    /// Every combination of the facts, against the table's order of precedence.
    #[test]
    fn every_combination_follows_the_order_of_precedence() {
        let (api, credits) = (api(), credits());
        let providers = [None, Some(&api), Some(&credits)];
        let exits = [
            (Some(0), None),
            (Some(2), None),
            (None, Some(9)),
            (None, None),
        ];
        let mut seen = std::collections::HashSet::new();
        for end in ENDS {
            for provider in providers {
                for (exit_code, exit_signal) in exits {
                    for bits in 0..8u8 {
                        let f = Facts {
                            exit_code,
                            exit_signal,
                            provider,
                            verify_passed: bits & 1 != 0,
                            unchanged: bits & 2 != 0,
                            verify_timed_out: bits & 4 != 0,
                            ..facts(end)
                        };
                        let expected = if f.verify_passed {
                            Outcome::Passed
                        } else if let Some(p) = provider {
                            match p {
                                ProviderFailure::OutOfCredits { .. } => Outcome::OutOfCredits,
                                ProviderFailure::ApiError { .. } => Outcome::ApiError,
                            }
                        } else if end == AgentEnd::Stalled {
                            Outcome::Stalled
                        } else if end == AgentEnd::TimedOut {
                            Outcome::TimedOut
                        } else if exit_code != Some(0) {
                            Outcome::AgentError
                        } else if f.unchanged {
                            Outcome::NoChange
                        } else {
                            Outcome::Failed
                        };
                        let (got, reason) = classify(&f);
                        assert_eq!(got, expected, "{f:?}");
                        // Only a clean pass goes without a word.
                        assert_eq!(
                            reason.is_none(),
                            got == Outcome::Passed && end == AgentEnd::Exited,
                            "{f:?}: {reason:?}"
                        );
                        seen.insert(got);
                    }
                }
            }
        }
        assert_eq!(seen.len(), 8, "some outcome was never reached: {seen:?}");
    }
}
