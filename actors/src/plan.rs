//! Pure decisions about a loop's tests: what the tests file changed, which tests are blocked,
//! which test runs next, and whether the loop is finished. No I/O, so every rule is unit-tested.

use std::collections::HashMap;

use chrono::Utc;

use crate::model::{Origin, TestRecord, TestStatus};
use crate::tests_file::TestSpec;

mod outcome;
mod table;
pub use outcome::{after_outcome, AfterOutcome, OutcomeFacts};
pub use table::{expected_durations, PickContext, TestTable};

/// Reconciles the stored tests of a loop with its tests file (DESIGN.md, "Tests file edits"):
/// new ids become `pending`, ids that disappeared become `removed` (history stays), a changed
/// verify command resets a `passed` test to `pending`. Returns only the records that changed.
pub fn sync_tests(loop_name: &str, stored: &[TestRecord], specs: &[TestSpec]) -> Vec<TestRecord> {
    let by_id: HashMap<&str, &TestRecord> =
        stored.iter().map(|t| (t.spec.id.as_str(), t)).collect();
    let mut changed = Vec::new();
    for (order, spec) in specs.iter().enumerate() {
        let order = order as u32;
        match by_id.get(spec.id.as_str()) {
            None => {
                let mut t = TestRecord::new(loop_name, spec.clone(), Origin::File);
                t.order = order;
                changed.push(t);
            }
            Some(old) => {
                let mut t = (*old).clone();
                if t.status == TestStatus::Removed {
                    t.status = TestStatus::Pending;
                    t.reason = Some("back in the tests file".into());
                }
                if t.spec.verify != spec.verify && t.status == TestStatus::Passed {
                    t.status = TestStatus::Pending;
                    t.reason = Some("its verify command changed".into());
                    t.commit = None;
                }
                t.spec = spec.clone();
                t.order = order;
                t.origin = Origin::File;
                if t != **old {
                    t.updated_at = Utc::now();
                    changed.push(t);
                }
            }
        }
    }
    let listed: std::collections::HashSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    for old in stored {
        if old.origin == Origin::File
            && old.status != TestStatus::Removed
            && !listed.contains(old.spec.id.as_str())
        {
            let mut t = old.clone();
            t.status = TestStatus::Removed;
            t.reason = Some("no longer in the tests file".into());
            t.updated_at = Utc::now();
            changed.push(t);
        }
    }
    changed
}

/// What a dependency's status means for a test that waits on it. With `run_past_failed` (the
/// loop's `on_blocked = "skip"`), a dependency that failed for good no longer holds it back.
fn dependency_state(status: Option<TestStatus>, run_past_failed: bool) -> DepState {
    match status {
        Some(s) if s.releases_dependents() => DepState::Done,
        Some(TestStatus::Failed | TestStatus::NeedsHuman) if run_past_failed => DepState::Done,
        Some(TestStatus::Pending | TestStatus::Running) => DepState::Waiting,
        // failed, needs_human, blocked, removed, or an unknown id: it will not pass on its own.
        _ => DepState::Stuck,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DepState {
    Done,
    Waiting,
    Stuck,
}

/// Recomputes `blocked` for every test of a loop: a pending test behind a stuck dependency
/// becomes `blocked` (with `blocked_by`), a blocked test whose dependencies are no longer stuck
/// becomes `pending` again. `external` answers for `other-loop:ID` dependencies. Returns the
/// records that changed. Iterates to a fixed point, so blocking is transitive.
/// ([`TestTable::refresh_blocked`] without building the table each time.)
pub fn refresh_blocked(
    tests: &[TestRecord],
    run_past_failed: bool,
    external: &dyn Fn(&str) -> Option<TestStatus>,
) -> Vec<TestRecord> {
    TestTable::new(tests.to_vec()).refresh_blocked(None, run_past_failed, external)
}

/// The test to attempt next: pending, every dependency passed or skipped, lowest priority number
/// first (the test's own, else the loop's), then the tests file's order.
pub fn next_runnable<'a>(
    tests: &'a [TestRecord],
    loop_priority: u32,
    run_past_failed: bool,
    external: &dyn Fn(&str) -> Option<TestStatus>,
) -> Option<&'a TestRecord> {
    let status: HashMap<&str, TestStatus> = tests
        .iter()
        .map(|t| (t.spec.id.as_str(), t.status))
        .collect();
    tests
        .iter()
        .filter(|t| t.status == TestStatus::Pending)
        .filter(|t| {
            t.spec.depends_on.iter().all(|d| {
                let s = if d.contains(':') {
                    external(d)
                } else {
                    status.get(d.as_str()).copied()
                };
                dependency_state(s, run_past_failed) == DepState::Done
            })
        })
        .min_by_key(|t| (t.spec.priority.unwrap_or(loop_priority), t.order))
}

/// True when no test can run any more: nothing pending or running.
pub fn is_finished(tests: &[TestRecord]) -> bool {
    !tests
        .iter()
        .any(|t| matches!(t.status, TestStatus::Pending | TestStatus::Running))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, deps: &[&str]) -> TestSpec {
        TestSpec {
            id: id.into(),
            title: id.into(),
            spec: Some("x".into()),
            spec_file: None,
            verify: "true".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            priority: None,
            timeout: None,
            tags: vec![],
            serial_group: None,
        }
    }

    fn rec(id: &str, deps: &[&str], status: TestStatus) -> TestRecord {
        let mut t = TestRecord::new("l", spec(id, deps), Origin::File);
        t.status = status;
        t
    }

    fn none(_: &str) -> Option<TestStatus> {
        None
    }

    #[test]
    fn sync_adds_removes_and_resets_on_changed_verify() {
        let mut passed = rec("a", &[], TestStatus::Passed);
        passed.commit = Some("abc".into());
        let stored = vec![passed, rec("gone", &[], TestStatus::Pending)];
        let mut a = spec("a", &[]);
        a.verify = "make test".into();
        let changed = sync_tests("l", &stored, &[a, spec("new", &[])]);
        let by: HashMap<_, _> = changed.iter().map(|t| (t.spec.id.as_str(), t)).collect();
        assert_eq!(by["a"].status, TestStatus::Pending);
        assert_eq!(by["a"].commit, None);
        assert_eq!(by["new"].status, TestStatus::Pending);
        assert_eq!(by["new"].order, 1);
        assert_eq!(by["gone"].status, TestStatus::Removed);
        assert_eq!(changed.len(), 3);
    }

    #[test]
    fn sync_of_an_unchanged_file_changes_nothing() {
        let stored = sync_tests("l", &[], &[spec("a", &[]), spec("b", &["a"])]);
        assert!(sync_tests("l", &stored, &[spec("a", &[]), spec("b", &["a"])]).is_empty());
    }

    #[test]
    fn blocking_is_transitive_and_undone_when_the_root_is_skipped() {
        let tests = vec![
            rec("a", &[], TestStatus::Failed),
            rec("b", &["a"], TestStatus::Pending),
            rec("c", &["b"], TestStatus::Pending),
            rec("d", &[], TestStatus::Pending),
        ];
        let changed = refresh_blocked(&tests, false, &none);
        let ids: Vec<_> = changed
            .iter()
            .map(|t| (t.spec.id.as_str(), t.status))
            .collect();
        assert_eq!(
            ids,
            [("b", TestStatus::Blocked), ("c", TestStatus::Blocked)]
        );
        assert_eq!(changed[1].blocked_by, ["b"]);

        let mut after: Vec<TestRecord> = tests.clone();
        after[0].status = TestStatus::Skipped;
        after[1] = changed[0].clone();
        after[2] = changed[1].clone();
        let changed = refresh_blocked(&after, false, &none);
        assert!(changed.iter().all(|t| t.status == TestStatus::Pending));
        assert_eq!(changed.len(), 2);
    }

    #[test]
    fn next_runnable_respects_dependencies_then_priority_then_order() {
        let mut tests = vec![
            rec("a", &[], TestStatus::Pending),
            rec("b", &["a"], TestStatus::Pending),
            rec("c", &[], TestStatus::Pending),
        ];
        for (i, t) in tests.iter_mut().enumerate() {
            t.order = i as u32;
        }
        assert_eq!(next_runnable(&tests, 5, false, &none).unwrap().spec.id, "a");
        tests[2].spec.priority = Some(1);
        assert_eq!(next_runnable(&tests, 5, false, &none).unwrap().spec.id, "c");
        tests[2].status = TestStatus::Passed;
        tests[0].status = TestStatus::Passed;
        assert_eq!(next_runnable(&tests, 5, false, &none).unwrap().spec.id, "b");
        tests[1].status = TestStatus::Passed;
        assert!(next_runnable(&tests, 5, false, &none).is_none());
        assert!(is_finished(&tests));
    }

    #[test]
    fn on_blocked_skip_runs_dependents_past_a_failed_test() {
        let tests = vec![
            rec("a", &[], TestStatus::Failed),
            rec("b", &["a"], TestStatus::Pending),
        ];
        assert!(next_runnable(&tests, 5, false, &none).is_none());
        assert_eq!(next_runnable(&tests, 5, true, &none).unwrap().spec.id, "b");
        assert!(refresh_blocked(&tests, true, &none).is_empty());
    }

    #[test]
    fn cross_loop_dependencies_ask_the_other_loop() {
        let tests = vec![rec("a", &["other:X"], TestStatus::Pending)];
        assert!(next_runnable(&tests, 5, false, &|_| Some(TestStatus::Running)).is_none());
        assert!(next_runnable(&tests, 5, false, &|_| Some(TestStatus::Passed)).is_some());
        let blocked = refresh_blocked(&tests, false, &|_| Some(TestStatus::Failed));
        assert_eq!(blocked[0].status, TestStatus::Blocked);
    }
}
