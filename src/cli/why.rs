//! Why an attempt failed, in a few lines for a person: the recorded reason ("verify exited
//! non-zero", "cannot start the agent `claude`: No such file or directory") and the first
//! non-empty lines of verify's output, each cut to the terminal's width. Every view that shows
//! a failed attempt (`run`'s display and summary, `attempts`, `status LOOP TEST`) calls
//! [`why`] or [`why_lines`], so they all say the same.

use loopd_actors::model::{AttemptRecord, Outcome, WHY_LINES};

/// What a line is cut to off a terminal, and at most on a wide one.
const MAX_WIDTH: usize = 120;

/// How verify's lines are set off from the reason.
const VERIFY_MARK: &str = "│ ";

/// The lines that say why `attempt` ended as it did (empty for a pass without a remark), each
/// at most `width` characters.
pub fn why(attempt: &AttemptRecord, width: usize) -> Vec<String> {
    why_lines(
        attempt.outcome,
        attempt.reason.as_deref(),
        &attempt.verify_first_lines(WHY_LINES),
        width,
    )
}

/// [`why`] from the parts an `attempt_finished` event carries (`reason`, `verify_lines`).
pub fn why_lines(
    outcome: Option<Outcome>,
    reason: Option<&str>,
    verify: &[&str],
    width: usize,
) -> Vec<String> {
    let mut out: Vec<String> = reason.map(|r| cut(r, width)).into_iter().collect();
    if !outcome.is_some_and(shows_verify) {
        return out;
    }
    if verify.is_empty() {
        out.push(cut("(verify printed nothing)", width));
    }
    let room = width.saturating_sub(VERIFY_MARK.chars().count());
    out.extend(
        verify
            .iter()
            .take(WHY_LINES)
            .map(|l| format!("{VERIFY_MARK}{}", cut(l, room))),
    );
    out
}

/// The width lines may take: the terminal's (stdout's, else stderr's), at most 120; 120 off a
/// terminal.
pub fn width() -> usize {
    [console::Term::stdout(), console::Term::stderr()]
        .iter()
        .find_map(|t| t.size_checked())
        .map_or(MAX_WIDTH, |(_, cols)| usize::from(cols).min(MAX_WIDTH))
}

/// Whether verify's output says something about this outcome: it ran after an agent that did
/// its work (or was killed doing it), and did not pass.
fn shows_verify(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed
            | Outcome::AgentError
            | Outcome::NoChange
            | Outcome::Stalled
            | Outcome::TimedOut
            | Outcome::Regression
            | Outcome::Conflict
    )
}

/// `line` in at most `width` columns, with an ellipsis where it was cut.
fn cut(line: &str, width: usize) -> String {
    super::style::fit(line.trim_end(), width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_its_reason_then_verifys_first_lines_cut_to_width() {
        let mut a = AttemptRecord::started("l", "T", 1, "t".into());
        a.outcome = Some(Outcome::Failed);
        a.reason = Some("verify exited non-zero".into());
        a.verify_tail = format!("\n  FAIL: {}\nsecond\n\nthird\nfourth", "x".repeat(200));
        let lines = why(&a, 40);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "verify exited non-zero");
        assert!(lines[1].starts_with("│   FAIL: xxx") && lines[1].ends_with('…'));
        assert_eq!(lines[1].chars().count(), 40);
        assert_eq!(lines[2..], ["│ second", "│ third"]);
    }

    #[test]
    fn the_head_wins_over_the_tail_and_silence_is_said() {
        let mut a = AttemptRecord::started("l", "T", 1, "t".into());
        a.outcome = Some(Outcome::Failed);
        a.verify_head = "first".into();
        a.verify_tail = "last".into();
        assert_eq!(why(&a, 80), ["│ first"]);
        a.verify_head.clear();
        a.verify_tail.clear();
        assert_eq!(why(&a, 80), ["(verify printed nothing)"]);
    }

    #[test]
    fn an_agent_that_could_not_start_says_the_cause_only() {
        let mut a = AttemptRecord::started("l", "T", 1, "t".into());
        a.outcome = Some(Outcome::AgentUnavailable);
        a.reason = Some("cannot start the agent `claude`: No such file or directory".into());
        assert_eq!(
            why(&a, 120),
            ["cannot start the agent `claude`: No such file or directory"]
        );
    }
}
