//! What an attempt's outcome does to its test: the status it takes next, before the healer and
//! the dependents are looked at. A pure function of the outcome and the test's counts, with a
//! table test; the dependents follow from the new status through [`super::refresh_blocked`]
//! (only a `passed` test releases them).
//!
//! With lanes, a lane's pass is not `passed` until the merge queue has put it onto the
//! checkpoint: the test stays busy (`running`) while its pass waits in the queue, and the
//! queue's answer (merged, or the outcome `conflict`) is a second step of this same function.

use crate::model::Outcome;

/// What the test does after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterOutcome {
    /// `passed`: its checkpoint is made, dependents may run.
    Passed,
    /// Still busy (`running`): a lane's pass waits in the merge queue.
    Queued,
    /// `pending` with the reason of a hold: a pass whose checkpoint commit is left undone.
    Held,
    /// `pending`: tried again.
    Retry,
    /// The counted attempts reached `max_attempts`: the healer decides (another strategy,
    /// `failed` or `needs_human`).
    Exhausted,
}

/// The facts [`after_outcome`] decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeFacts {
    /// How the attempt (or its merge) ended.
    pub outcome: Outcome,
    /// Whether it counted toward `max_attempts`.
    pub counted: bool,
    /// The test's counted attempts, this one included.
    pub counted_attempts: u32,
    /// The loop's `max_attempts`.
    pub max_attempts: u32,
    /// The attempt ran in a lane (a loop with `lanes` above 1) and its pass is not merged yet.
    pub unmerged_lane_pass: bool,
    /// Git work of the attempt's end is left undone (a hold).
    pub held: bool,
}

/// The status a test takes after an attempt's outcome.
pub fn after_outcome(f: OutcomeFacts) -> AfterOutcome {
    match f.outcome {
        Outcome::Passed if f.held => AfterOutcome::Held,
        Outcome::Passed if f.unmerged_lane_pass => AfterOutcome::Queued,
        Outcome::Passed => AfterOutcome::Passed,
        _ if f.counted && f.counted_attempts >= f.max_attempts => AfterOutcome::Exhausted,
        _ => AfterOutcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AfterOutcome as A;
    use Outcome::*;

    fn facts(outcome: Outcome, counted: bool, n: u32, lane: bool, held: bool) -> OutcomeFacts {
        OutcomeFacts {
            outcome,
            counted,
            counted_attempts: n,
            max_attempts: 3,
            unmerged_lane_pass: lane,
            held,
        }
    }

    #[test]
    fn every_outcome_leads_to_its_status() {
        // (outcome, counted, counted attempts so far, lane pass unmerged, held) -> next
        let table = [
            (Passed, false, 0, false, false, A::Passed),
            (Passed, false, 2, false, false, A::Passed),
            (Passed, false, 0, true, false, A::Queued),
            (Passed, false, 0, false, true, A::Held),
            (Passed, false, 0, true, true, A::Held),
            (Failed, true, 1, false, false, A::Retry),
            (Failed, true, 3, false, false, A::Exhausted),
            (Failed, true, 4, false, false, A::Exhausted),
            (AgentError, true, 3, false, false, A::Exhausted),
            (NoChange, true, 2, false, false, A::Retry),
            (Regression, true, 3, false, false, A::Exhausted),
            (Stalled, false, 3, false, false, A::Retry),
            (Stalled, true, 3, false, false, A::Exhausted),
            (TimedOut, true, 1, false, false, A::Retry),
            (ApiError, false, 3, false, false, A::Retry),
            (OutOfCredits, false, 3, false, false, A::Retry),
            (Interrupted, false, 3, false, false, A::Retry),
            (AgentUnavailable, false, 3, false, false, A::Retry),
            // A first conflict is free; a second in a row counts like a failure.
            (Conflict, false, 3, true, false, A::Retry),
            (Conflict, true, 2, true, false, A::Retry),
            (Conflict, true, 3, true, false, A::Exhausted),
        ];
        for (outcome, counted, n, lane, held, want) in table {
            assert_eq!(
                after_outcome(facts(outcome, counted, n, lane, held)),
                want,
                "{outcome:?} counted {counted} at {n}, lane {lane}, held {held}"
            );
        }
    }
}
