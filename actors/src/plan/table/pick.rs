//! Which tests a loop starts next, when it may run several at once (issue 13, "Lanes"): up to
//! `n` runnable tests, never one that is busy (running in a lane or waiting in the merge queue),
//! never two of one `serial_group`, the one with the longest remaining path first.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};

use super::{ReadySet, TestTable};
use crate::model::{AttemptRecord, TestRecord, TestStatus};

/// What a pick depends on besides the table.
pub struct PickContext<'a> {
    /// The loop's priority: a test without its own has this one.
    pub loop_priority: u32,
    /// The loop's `on_blocked = "skip"`: a dependency that failed for good no longer holds its
    /// dependents back.
    pub run_past_failed: bool,
    /// The status of an `other-loop:ID` dependency.
    pub external: &'a dyn Fn(&str) -> Option<TestStatus>,
    /// Tests running in a lane or waiting in the merge queue: never picked, and their
    /// `serial_group`s are taken.
    pub busy: &'a HashSet<String>,
    /// Expected duration of a test, in seconds ([`expected_durations`]); a test not in it
    /// weighs 1.
    pub expected: &'a HashMap<String, f64>,
    /// The loop's `lanes`. With more than one, the longest remaining path comes first; with
    /// one, priority then file order, as before lanes (the order cannot change a one-lane
    /// makespan, and it is the order the user wrote).
    pub lanes: usize,
}

impl<'a> PickContext<'a> {
    /// One lane, nothing busy, no history: the order of [`TestTable::next_runnable`].
    pub fn one_lane(
        loop_priority: u32,
        run_past_failed: bool,
        external: &'a dyn Fn(&str) -> Option<TestStatus>,
    ) -> PickContext<'a> {
        PickContext {
            loop_priority,
            run_past_failed,
            external,
            busy: empty_set(),
            expected: empty_map(),
            lanes: 1,
        }
    }
}

fn empty_set() -> &'static HashSet<String> {
    static EMPTY: std::sync::OnceLock<HashSet<String>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(HashSet::new)
}

fn empty_map() -> &'static HashMap<String, f64> {
    static EMPTY: std::sync::OnceLock<HashMap<String, f64>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(HashMap::new)
}

/// Per test, the median wall time (agent and verify, `duration_ms`) of its recorded attempts, in
/// seconds. Tests with no measured attempt are absent: a pick weighs them 1.
pub fn expected_durations<'r>(
    attempts: impl IntoIterator<Item = &'r AttemptRecord>,
) -> HashMap<String, f64> {
    let mut by_test: HashMap<&str, Vec<u64>> = HashMap::new();
    for a in attempts {
        if let Some(ms) = a.duration_ms {
            by_test.entry(a.test_id.as_str()).or_default().push(ms);
        }
    }
    by_test
        .into_iter()
        .map(|(id, mut ms)| {
            ms.sort_unstable();
            let mid = ms.len() / 2;
            let median = if ms.len() % 2 == 1 {
                ms[mid] as f64
            } else {
                (ms[mid - 1] as f64 + ms[mid] as f64) / 2.0
            };
            (id.to_string(), median / 1000.0)
        })
        .collect()
}

impl TestTable {
    /// Up to `n` runnable tests, in the order they should start: pending, every dependency done
    /// (as [`TestTable::next_runnable`]), not busy, at most one per `serial_group` among the busy
    /// and the picked. With several lanes, ordered by the longest remaining path to the end of
    /// the dependency graph ([`TestTable::remaining_paths`]), then priority, then file order;
    /// with one, by priority then file order.
    ///
    /// Cost: one lane reads the kept ready set from its start until `n` are found; several
    /// lanes add one walk over the graph (tests and dependencies) and a sort of the ready tests.
    pub fn pick(&self, n: usize, ctx: &PickContext) -> Vec<&TestRecord> {
        if n == 0 {
            return Vec::new();
        }
        let busy: HashSet<usize> = ctx
            .busy
            .iter()
            .filter_map(|id| self.by_id.get(id.as_str()).copied())
            .collect();
        let mut groups: HashSet<&str> = busy
            .iter()
            .filter_map(|&i| self.tests[i].spec.serial_group.as_deref())
            .collect();
        let mut picked: Vec<usize> = Vec::new();
        let mut offer = |i: usize| -> bool {
            if busy.contains(&i) {
                return false;
            }
            if let Some(g) = self.tests[i].spec.serial_group.as_deref() {
                if !groups.insert(g) {
                    return false;
                }
            }
            picked.push(i);
            picked.len() == n
        };
        // Tests waiting on other loops: not in the kept set (other loops change under it).
        let mut across: Vec<(u32, u32, usize)> = self
            .external
            .iter()
            .copied()
            .filter(|&i| self.status[i] == TestStatus::Pending)
            .filter(|&i| {
                self.dep_states(i, &self.status, ctx.external, ctx.run_past_failed)
                    .all(|(_, s)| s == super::DepState::Done)
            })
            .map(|i| self.ready_key(i, ctx.loop_priority))
            .collect();
        across.sort_unstable();
        if ctx.lanes <= 1 {
            self.with_ready(ctx.loop_priority, ctx.run_past_failed, |set| {
                for (_, _, i) in merged(set.iter().copied(), across.iter().copied()) {
                    if offer(i) {
                        break;
                    }
                }
            });
        } else {
            let path = self.remaining_paths(ctx.expected);
            let mut ready = self.with_ready(ctx.loop_priority, ctx.run_past_failed, |set| {
                set.iter().copied().collect::<Vec<_>>()
            });
            ready.extend(across);
            ready.sort_unstable_by(|a, b| path[b.2].total_cmp(&path[a.2]).then(a.cmp(b)));
            for (_, _, i) in ready {
                if offer(i) {
                    break;
                }
            }
        }
        picked.into_iter().map(|i| &self.tests[i]).collect()
    }

    /// Per position, the heaviest path from the test to the end of the dependency graph: the
    /// sum of the expected durations of the tests on it, counting only those still to pass (a
    /// passed, skipped or removed test weighs 0). Dependencies on other loops are not followed.
    pub(crate) fn remaining_paths(&self, expected: &HashMap<String, f64>) -> Vec<f64> {
        let mut path = vec![0.0f64; self.tests.len()];
        for &i in self.topo.iter().rev() {
            let weight = match self.status[i] {
                TestStatus::Passed | TestStatus::Skipped | TestStatus::Removed => 0.0,
                _ => expected
                    .get(&self.tests[i].spec.id)
                    .copied()
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .unwrap_or(1.0),
            };
            let longest = self.dependents[i]
                .iter()
                .map(|&j| path[j])
                .fold(0.0, f64::max);
            path[i] = weight + longest;
        }
        path
    }

    /// Runs `f` on the kept ready set for `loop_priority` and `run_past_failed`, built first if
    /// it was kept for others (or not yet).
    fn with_ready<R>(
        &self,
        loop_priority: u32,
        run_past_failed: bool,
        f: impl FnOnce(&BTreeSet<(u32, u32, usize)>) -> R,
    ) -> R {
        let mut cached = self.ready.0.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached
            .as_ref()
            .is_some_and(|r| r.priority == loop_priority && r.run_past_failed == run_past_failed);
        if !fresh {
            *cached = None;
        }
        let kept = cached.get_or_insert_with(|| ReadySet {
            priority: loop_priority,
            run_past_failed,
            set: (0..self.tests.len())
                .filter(|&i| self.locally_ready(i, run_past_failed))
                .map(|i| self.ready_key(i, loop_priority))
                .collect(),
        });
        f(&kept.set)
    }
}

/// Two ascending sequences as one.
fn merged<T: Ord + Copy>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
) -> impl Iterator<Item = T> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.cmp(y) {
            Ordering::Greater => b.next(),
            _ => a.next(),
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::rec;
    use super::super::{dependency_state, DepState};
    use super::*;
    use TestStatus::*;

    fn in_group(mut t: TestRecord, group: &str) -> TestRecord {
        t.spec.serial_group = Some(group.into());
        t
    }

    /// The ids `pick(n)` gives with `lanes`, `busy` and `expected`; other loops' tests passed.
    fn pick(
        table: &TestTable,
        n: usize,
        lanes: usize,
        busy: &[&str],
        expected: &[(&str, f64)],
    ) -> Vec<String> {
        let busy: HashSet<String> = busy.iter().map(|s| s.to_string()).collect();
        let expected: HashMap<String, f64> =
            expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let ctx = PickContext {
            loop_priority: 5,
            run_past_failed: false,
            external: &|_| Some(Passed),
            busy: &busy,
            expected: &expected,
            lanes,
        };
        table
            .pick(n, &ctx)
            .into_iter()
            .map(|t| t.spec.id.clone())
            .collect()
    }

    /// x alone, then the chain a -> b -> c.
    fn chain_and_one() -> TestTable {
        TestTable::new(vec![
            rec("x", &[], Pending, 0),
            rec("a", &[], Pending, 1),
            rec("b", &["a"], Pending, 2),
            rec("c", &["b"], Pending, 3),
        ])
    }

    #[test]
    fn with_several_lanes_the_longest_remaining_path_goes_first() {
        let table = chain_and_one();
        assert_eq!(pick(&table, 1, 2, &[], &[]), ["a"]);
        assert_eq!(pick(&table, 2, 2, &[], &[]), ["a", "x"]);
        // b and c wait on a: never picked, however many lanes are free.
        assert_eq!(pick(&table, 8, 8, &[], &[]), ["a", "x"]);
    }

    #[test]
    fn with_one_lane_priority_and_file_order_decide_as_before_lanes() {
        let table = chain_and_one();
        assert_eq!(pick(&table, 1, 1, &[], &[]), ["x"]);
        assert_eq!(pick(&table, 2, 1, &[], &[]), ["x", "a"]);
        let none = |_: &str| None;
        assert_eq!(
            table
                .next_runnable(5, false, &none)
                .map(|t| t.spec.id.as_str()),
            Some("x")
        );
    }

    #[test]
    fn expected_durations_weigh_the_path() {
        let table = chain_and_one();
        // 5 s alone against three tests of 1 s (the default weight).
        assert_eq!(pick(&table, 2, 2, &[], &[("x", 5.0)]), ["x", "a"]);
        // 3 s is a tie with the chain's 3 x 1 s: file order, x first.
        assert_eq!(pick(&table, 1, 2, &[], &[("x", 3.0)]), ["x"]);
        // The chain's tail counts: c's 2.5 s makes the path from a 4.5 s.
        assert_eq!(pick(&table, 1, 2, &[], &[("x", 4.0), ("c", 2.5)]), ["a"]);
        // Not a number or negative: the default weight.
        assert_eq!(
            pick(&table, 1, 2, &[], &[("x", f64::NAN), ("a", -7.0)]),
            ["a"]
        );
    }

    #[test]
    fn tests_already_passed_weigh_nothing_on_the_path() {
        // b passed (a test file edit made a pending again, b's verify unchanged): a's path
        // is a alone.
        let mut table = TestTable::new(vec![
            rec("x", &[], Pending, 0),
            rec("a", &[], Pending, 1),
            rec("b", &["a"], Passed, 2),
        ]);
        assert_eq!(pick(&table, 1, 2, &[], &[("x", 1.5)]), ["x"]);
        table.upsert(vec![rec("b", &["a"], Skipped, 2)]);
        assert_eq!(pick(&table, 1, 2, &[], &[("x", 1.5)]), ["x"]);
        // b to do again: a's path is 2 s.
        table.upsert(vec![rec("b", &["a"], Pending, 2)]);
        assert_eq!(pick(&table, 1, 2, &[], &[("x", 1.5)]), ["a"]);
    }

    #[test]
    fn equal_paths_go_by_priority_then_file_order() {
        let mut z = rec("z", &[], Pending, 1);
        z.spec.priority = Some(1);
        let table = TestTable::new(vec![
            rec("y", &[], Pending, 0),
            z,
            rec("w", &[], Pending, 2),
        ]);
        for lanes in [1, 3] {
            assert_eq!(pick(&table, 3, lanes, &[], &[]), ["z", "y", "w"]);
        }
    }

    #[test]
    fn busy_tests_are_never_picked_and_hold_their_serial_group() {
        let table = TestTable::new(vec![
            in_group(rec("a", &[], Pending, 0), "db"),
            in_group(rec("b", &[], Pending, 1), "db"),
            rec("c", &[], Pending, 2),
            in_group(rec("d", &[], Pending, 3), "ui"),
        ]);
        for lanes in [1, 4] {
            // One of each group at most among the picked.
            assert_eq!(pick(&table, 4, lanes, &[], &[]), ["a", "c", "d"]);
            // a waits in the merge queue (still pending): neither it nor b (its group) runs.
            assert_eq!(pick(&table, 4, lanes, &["a"], &[]), ["c", "d"]);
            // A busy test without a group holds no other test back.
            assert_eq!(pick(&table, 4, lanes, &["c"], &[]), ["a", "d"]);
            // A busy id the loop does not have (a test just removed) changes nothing.
            assert_eq!(pick(&table, 4, lanes, &["gone"], &[]), ["a", "c", "d"]);
        }
        // The group goes to the longer path: b unblocks e.
        let mut grown = table.clone();
        grown.upsert(vec![rec("e", &["b"], Pending, 4)]);
        assert_eq!(pick(&grown, 4, 4, &[], &[]), ["b", "c", "d"]);
    }

    #[test]
    fn only_runnable_tests_and_at_most_n() {
        let table = TestTable::new(vec![
            rec("run", &[], Running, 0),
            rec("fail", &[], Failed, 1),
            rec("blk", &["fail"], Blocked, 2),
            rec("pass", &[], Passed, 3),
            rec("p1", &["pass"], Pending, 4),
            rec("p2", &["run"], Pending, 5),
            rec("p3", &["other:X"], Pending, 6),
            rec("p4", &[], Pending, 7),
        ]);
        for lanes in [1, 3] {
            assert!(pick(&table, 0, lanes, &[], &[]).is_empty());
            assert_eq!(pick(&table, 2, lanes, &[], &[]), ["p1", "p3"]);
            assert_eq!(pick(&table, 10, lanes, &[], &[]), ["p1", "p3", "p4"]);
        }
        let busy = HashSet::new();
        let expected = HashMap::new();
        let ctx = PickContext {
            loop_priority: 5,
            run_past_failed: false,
            external: &|_| Some(Running),
            busy: &busy,
            expected: &expected,
            lanes: 3,
        };
        let ids: Vec<&str> = table
            .pick(10, &ctx)
            .iter()
            .map(|t| t.spec.id.as_str())
            .collect();
        assert_eq!(ids, ["p1", "p4"], "p3 waits on the other loop");
    }

    #[test]
    fn expected_durations_are_medians_of_measured_attempts() {
        let attempt = |test: &str, ms: Option<u64>| {
            let mut a = AttemptRecord::started("l", test, 1, "t".into());
            a.duration_ms = ms;
            a
        };
        let attempts = [
            attempt("a", Some(1000)),
            attempt("a", Some(3000)),
            attempt("a", Some(2000)),
            attempt("b", Some(2000)),
            attempt("b", None),
            attempt("b", Some(1000)),
            attempt("c", None),
        ];
        let got = expected_durations(&attempts);
        assert_eq!(got.get("a"), Some(&2.0));
        assert_eq!(got.get("b"), Some(&1.5));
        assert_eq!(got.get("c"), None, "nothing measured: weighs the default");
        assert_eq!(got.len(), 2);
    }

    /// The pick as the rules say it, by brute force: what the table must agree with.
    fn reference(
        tests: &[TestRecord],
        n: usize,
        lanes: usize,
        busy: &HashSet<String>,
        expected: &HashMap<String, f64>,
        external: &dyn Fn(&str) -> Option<TestStatus>,
    ) -> Vec<String> {
        let by: HashMap<&str, &TestRecord> =
            tests.iter().map(|t| (t.spec.id.as_str(), t)).collect();
        fn path(
            id: &str,
            tests: &[TestRecord],
            expected: &HashMap<String, f64>,
            by: &HashMap<&str, &TestRecord>,
        ) -> f64 {
            let t = by[id];
            let weight = if matches!(t.status, Passed | Skipped | Removed) {
                0.0
            } else {
                expected.get(id).copied().unwrap_or(1.0)
            };
            let longest = tests
                .iter()
                .filter(|o| o.spec.depends_on.iter().any(|d| d == id))
                .map(|o| path(&o.spec.id, tests, expected, by))
                .fold(0.0, f64::max);
            weight + longest
        }
        let mut ready: Vec<&TestRecord> = tests
            .iter()
            .filter(|t| t.status == Pending && !busy.contains(&t.spec.id))
            .filter(|t| {
                t.spec.depends_on.iter().all(|d| {
                    let s = if d.contains(':') {
                        external(d)
                    } else {
                        by.get(d.as_str()).map(|o| o.status)
                    };
                    dependency_state(s, false) == DepState::Done
                })
            })
            .collect();
        let key = |t: &TestRecord| (t.spec.priority.unwrap_or(5), t.order, t.spec.id.clone());
        ready.sort_by(|a, b| {
            let by_path = if lanes > 1 {
                path(&b.spec.id, tests, expected, &by)
                    .total_cmp(&path(&a.spec.id, tests, expected, &by))
            } else {
                Ordering::Equal
            };
            by_path.then_with(|| key(a).cmp(&key(b)))
        });
        let mut groups: HashSet<String> = tests
            .iter()
            .filter(|t| busy.contains(&t.spec.id))
            .filter_map(|t| t.spec.serial_group.clone())
            .collect();
        let mut out = Vec::new();
        for t in ready {
            if out.len() == n {
                break;
            }
            if let Some(g) = &t.spec.serial_group {
                if !groups.insert(g.clone()) {
                    continue;
                }
            }
            out.push(t.spec.id.clone());
        }
        out
    }

    #[test]
    fn picks_agree_with_the_rules_by_brute_force_as_tests_change() {
        // A seeded graph: 40 tests, each on up to 3 earlier ones, a few on another loop, a few
        // groups, priorities and weights; then statuses change one by one.
        let mut seed: u64 = 0x5eed;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut tests = Vec::new();
        let mut expected = HashMap::new();
        for i in 0..40u32 {
            let mut deps: Vec<String> = (0..next(4))
                .filter(|_| i > 0)
                .map(|_| format!("t{}", next(u64::from(i))))
                .collect();
            if next(10) == 0 {
                deps.push(format!("other:X{}", next(2)));
            }
            deps.sort();
            deps.dedup();
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            let mut t = rec(&format!("t{i}"), &deps, Pending, i);
            if next(3) == 0 {
                t.spec.serial_group = Some(format!("g{}", next(3)));
            }
            if next(4) == 0 {
                t.spec.priority = Some(next(8) as u32);
            }
            if next(2) == 0 {
                expected.insert(t.spec.id.clone(), next(50) as f64 / 10.0);
            }
            tests.push(t);
        }
        let external = |d: &str| Some(if d.ends_with('0') { Passed } else { Pending });
        let mut table = TestTable::new(tests.clone());
        let statuses = [Running, Passed, Failed, Pending, Skipped, Blocked, Passed];
        for step in 0..200 {
            let i = next(tests.len() as u64) as usize;
            tests[i].status = statuses[next(statuses.len() as u64) as usize];
            table.upsert(vec![tests[i].clone()]);
            let busy: HashSet<String> = (0..next(4))
                .map(|_| format!("t{}", next(tests.len() as u64)))
                .collect();
            for lanes in [1, 4] {
                for n in [1, 3, 8] {
                    let ctx = PickContext {
                        loop_priority: 5,
                        run_past_failed: false,
                        external: &external,
                        busy: &busy,
                        expected: &expected,
                        lanes,
                    };
                    let got: Vec<String> = table
                        .pick(n, &ctx)
                        .iter()
                        .map(|t| t.spec.id.clone())
                        .collect();
                    let want = reference(&tests, n, lanes, &busy, &expected, &external);
                    assert_eq!(
                        got, want,
                        "step {step}, lanes {lanes}, n {n}, busy {busy:?}"
                    );
                }
            }
        }
    }
}
