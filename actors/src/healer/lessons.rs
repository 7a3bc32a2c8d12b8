//! Lessons: when a test passes after failing, what fixed it, offered to any test (of any loop)
//! that fails with the same fingerprint.

use chrono::Utc;

use super::normalised_error;
pub use crate::model::Lesson;
use crate::model::{AttemptRecord, Outcome};
use crate::store::Store;

/// Most lessons offered in one prompt.
const MAX_LESSONS: usize = 3;

/// Longest `what_changed` quoted in a prompt, in characters.
const MAX_CHANGED: usize = 400;

/// The lesson of `passed`, when it is a pass that followed a fingerprinted failure.
///
/// Keyed by the fingerprint of the last failure before the pass: the one it directly overcame.
/// `history` is the test's attempts (the pass itself may be among them); `diff_summary` is what
/// the pass changed (`git diff --stat` against the checkpoint before it), may be empty.
pub fn lesson_from_pass(
    history: &[AttemptRecord],
    passed: &AttemptRecord,
    diff_summary: &str,
) -> Option<Lesson> {
    if passed.outcome != Some(Outcome::Passed) {
        return None;
    }
    let overcome = history
        .iter()
        .filter(|a| a.number < passed.number && a.outcome != Some(Outcome::Passed))
        .rev()
        .find(|a| a.fingerprint.is_some())?;
    let what_changed = match (diff_summary.trim(), &passed.commit) {
        ("", Some(c)) => format!("commit {}", &c[..c.len().min(12)]),
        ("", None) => "(no diff recorded)".into(),
        (d, _) => d.to_string(),
    };
    Some(Lesson {
        fingerprint: overcome.fingerprint.clone()?,
        error_line: normalised_error(overcome).unwrap_or_default(),
        loop_name: passed.loop_name.clone(),
        test_id: passed.test_id.clone(),
        attempt: passed.number,
        what_changed,
        summary: passed
            .summary
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
        learned_at: Utc::now(),
    })
}

/// Most fingerprints looked up for one prompt: each is a store read, and the prompt offers at
/// most three lessons anyway.
const MAX_FINGERPRINTS: usize = 8;

/// The distinct failure fingerprints of a test's attempts, newest first, at most
/// [`MAX_FINGERPRINTS`]: what to look lessons up by. Walks back only as far as it needs.
pub fn history_fingerprints(history: &[AttemptRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in history.iter().rev().filter_map(|a| a.fingerprint.as_ref()) {
        if out.len() == MAX_FINGERPRINTS {
            break;
        }
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}

/// Lessons for `fingerprints` (any loop), newest first, at most three, phrased for the prompt's
/// `{{lessons}}`. A store that cannot be read gives none: lessons are advice, never a reason to
/// hold an attempt back.
pub fn lessons_for_prompt(store: &Store, fingerprints: &[String]) -> Vec<String> {
    let mut found: Vec<Lesson> = Vec::new();
    for f in fingerprints {
        match store.lessons_for(f) {
            Ok(ls) => found.extend(ls),
            Err(e) => tracing::warn!(error = %e, "cannot read lessons"),
        }
    }
    found.sort_by_key(|l| std::cmp::Reverse(l.learned_at));
    found.dedup_by(|a, b| a.loop_name == b.loop_name && a.test_id == b.test_id);
    found.iter().take(MAX_LESSONS).map(phrase).collect()
}

fn phrase(l: &Lesson) -> String {
    let changed: Vec<&str> = l
        .what_changed
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let changed = super::shorten_to(&changed.join("; "), MAX_CHANGED);
    let failure = if l.error_line.is_empty() {
        String::new()
    } else {
        format!(" (`{}`)", l.error_line)
    };
    let how = l
        .summary
        .as_deref()
        .unwrap_or("(the agent left no summary)");
    format!(
        "A similar failure{failure} in loop {}, test {} was fixed by: {how}; it changed: {changed}",
        l.loop_name, l.test_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healer::testing::attempt;

    const F: &str = "error[E0425]: cannot find value `token` in this scope at src/auth.rs:12";

    fn passed(n: u32) -> AttemptRecord {
        let mut a = attempt(n, Outcome::Passed, "ok");
        a.summary = Some("Declared `token` before use".into());
        a.commit = Some("0123456789abcdef".into());
        a
    }

    #[test]
    fn a_pass_after_failures_teaches_what_fixed_the_last_one() {
        let h = [
            attempt(1, Outcome::Failed, "error: other"),
            attempt(2, Outcome::Failed, F),
            attempt(3, Outcome::TimedOut, ""),
        ];
        let l = lesson_from_pass(&h, &passed(4), " src/auth.rs | 2 +-\n 1 file changed").unwrap();
        assert_eq!(Some(&l.fingerprint), h[1].fingerprint.as_ref());
        assert_eq!(
            l.error_line,
            "error[E#]: cannot find value `token` in this scope at <path>"
        );
        assert_eq!(
            (l.loop_name.as_str(), l.test_id.as_str(), l.attempt),
            ("auth", "T-1", 4)
        );
        assert_eq!(l.summary.as_deref(), Some("Declared `token` before use"));
        assert_eq!(l.what_changed, "src/auth.rs | 2 +-\n 1 file changed");
        let l = lesson_from_pass(&h, &passed(4), "").unwrap();
        assert_eq!(l.what_changed, "commit 0123456789ab");
    }

    #[test]
    fn no_lesson_without_a_fingerprinted_failure_before_a_pass() {
        assert_eq!(lesson_from_pass(&[], &passed(1), "x"), None);
        let timeouts = [attempt(1, Outcome::TimedOut, "")];
        assert_eq!(lesson_from_pass(&timeouts, &passed(2), "x"), None);
        let failed = [attempt(1, Outcome::Failed, F)];
        assert_eq!(
            lesson_from_pass(&failed, &attempt(2, Outcome::Failed, F), "x"),
            None
        );
    }

    #[test]
    fn fingerprints_are_distinct_and_newest_first() {
        let h = [
            attempt(1, Outcome::Failed, "error: a"),
            attempt(2, Outcome::Failed, "error: b"),
            attempt(3, Outcome::Failed, "error: a"),
        ];
        let fa = h[0].fingerprint.clone().unwrap();
        let fb = h[1].fingerprint.clone().unwrap();
        assert_eq!(history_fingerprints(&h), vec![fa, fb]);
    }

    #[test]
    fn lessons_are_stored_found_by_fingerprint_in_any_loop_and_phrased() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let h = [attempt(1, Outcome::Failed, F)];
        let lesson =
            lesson_from_pass(&h, &passed(2), " src/auth.rs | 2 +-\n 1 file changed").unwrap();
        store.put_lesson(&lesson).unwrap();
        let mut other = lesson.clone();
        other.fingerprint = "ffff".into();
        other.loop_name = "billing".into();
        store.put_lesson(&other).unwrap();

        // loop B fails the same way (different line numbers and paths, same fingerprint)
        let mut b = attempt(
            1,
            Outcome::Failed,
            &F.replace("src/auth.rs:12", "lib/pay.rs:99"),
        );
        b.loop_name = "billing".into();
        assert_eq!(b.fingerprint, lesson.fingerprint.clone().into());
        let offered = lessons_for_prompt(&store, &history_fingerprints(&[b]));
        assert_eq!(
            offered,
            vec![
                "A similar failure (`error[E#]: cannot find value `token` in this scope at \
                 <path>`) in loop auth, test T-1 was fixed by: Declared `token` before use; it \
                 changed: src/auth.rs | 2 +-; 1 file changed"
                    .to_string()
            ]
        );
        assert_eq!(store.all_lessons().unwrap().len(), 2);
        assert!(lessons_for_prompt(&store, &["0000".into()]).is_empty());
    }
}
