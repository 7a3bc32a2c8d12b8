//! A loop's tests with their dependencies resolved once, so that the decisions made on every
//! attempt (which test runs next, which tests are blocked) are a walk over positions, not a
//! map of every id built again (and every record cloned) each time.
//!
//! The loop actor keeps one [`TestTable`] as its copy of the stored tests and updates it with
//! each write ([`TestTable::upsert`]): a write of k tests costs k, whatever the loop's size.
//! So does picking the next test: the table keeps the tests that are ready, in the order they
//! are picked in, and updates them with each write.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::Utc;

use super::{dependency_state, DepState};

mod pick;
use crate::model::{TestRecord, TestStatus};
pub use pick::{expected_durations, PickContext};

/// A dependency, resolved against the loop's tests.
#[derive(Debug, Clone, PartialEq)]
enum Dep {
    /// A test of this loop, by position.
    Local(usize),
    /// `other-loop:ID` (its index in `cross`), answered by the caller.
    External(usize),
    /// An id this loop does not have: it will never pass.
    Missing,
}

/// The tests of one loop, in the store's order (by `order`, then id), with lookups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestTable {
    tests: Vec<TestRecord>,
    by_id: HashMap<String, usize>,
    /// Per test, its `depends_on` resolved, in the same order.
    /// (Every test's, one after the other: a walk over the tests reads them in sequence.)
    deps: Vec<Dep>,
    /// Where each test's dependencies start in `deps`; one more entry than there are tests.
    dep_at: Vec<usize>,
    /// Every `other-loop:ID` dependency, once each, sorted.
    cross: Vec<String>,
    /// Each test's status, by position: the walks of every attempt read these bytes, not the
    /// records (at 100,000 tests, 100 KB instead of tens of MB).
    status: Vec<TestStatus>,
    /// Per test, the positions of the tests that depend on it: what an outcome can change.
    dependents: Vec<Vec<usize>>,
    /// The tests with an `other-loop:ID` dependency: looked at on every pick, since other
    /// loops' tests change under the table.
    external: Vec<usize>,
    /// The positions with every test before the tests that depend on it (of this loop; tests
    /// on a cycle, which validation refuses, last): the walk that weighs remaining paths.
    topo: Vec<usize>,
    /// Built on the first pick, then kept up to date by [`TestTable::upsert`].
    ready: Ready,
}

/// The tests whose own dependencies (all of this loop) are done, as `next_runnable` orders them:
/// `(priority, order, position)`. Valid for one loop priority and `run_past_failed`; a pick with
/// others (a reloaded config) builds it again.
#[derive(Debug, Clone, PartialEq)]
struct ReadySet {
    priority: u32,
    run_past_failed: bool,
    set: BTreeSet<(u32, u32, usize)>,
}

/// A cache behind a lock, so that a pick (which reads the table) can build it. Not part of
/// what a table is: two tables with the same tests are equal whatever they cached.
#[derive(Debug, Default)]
struct Ready(Mutex<Option<ReadySet>>);

impl Clone for Ready {
    fn clone(&self) -> Ready {
        Ready(Mutex::new(self.0.lock().map(|r| r.clone()).unwrap_or(None)))
    }
}

impl PartialEq for Ready {
    fn eq(&self, _: &Ready) -> bool {
        true
    }
}

impl TestTable {
    /// The table of `tests` (in any order).
    pub fn new(mut tests: Vec<TestRecord>) -> TestTable {
        tests.sort_by(|a, b| {
            a.order
                .cmp(&b.order)
                .then_with(|| a.spec.id.cmp(&b.spec.id))
        });
        let mut table = TestTable {
            tests,
            ..TestTable::default()
        };
        table.index();
        table
    }

    fn index(&mut self) {
        self.by_id = self
            .tests
            .iter()
            .enumerate()
            .map(|(i, t)| (t.spec.id.clone(), i))
            .collect();
        let mut cross: Vec<String> = self
            .tests
            .iter()
            .flat_map(|t| t.spec.depends_on.iter())
            .filter(|d| d.contains(':'))
            .cloned()
            .collect();
        cross.sort();
        cross.dedup();
        self.cross = cross;
        self.deps = Vec::new();
        self.dep_at = vec![0];
        self.dependents = vec![Vec::new(); self.tests.len()];
        for i in 0..self.tests.len() {
            for d in self.resolve(i) {
                if let Dep::Local(j) = d {
                    self.dependents[j].push(i);
                }
                self.deps.push(d);
            }
            self.dep_at.push(self.deps.len());
        }
        self.status = self.tests.iter().map(|t| t.status).collect();
        self.external = (0..self.tests.len())
            .filter(|&i| {
                self.deps[self.dep_at[i]..self.dep_at[i + 1]]
                    .iter()
                    .any(|d| matches!(d, Dep::External(_)))
            })
            .collect();
        self.topo = self.topological();
        self.ready = Ready::default();
    }

    /// Kahn's order over the local dependencies.
    fn topological(&self) -> Vec<usize> {
        let n = self.tests.len();
        let mut waiting: Vec<usize> = (0..n)
            .map(|i| {
                self.deps[self.dep_at[i]..self.dep_at[i + 1]]
                    .iter()
                    .filter(|d| matches!(d, Dep::Local(_)))
                    .count()
            })
            .collect();
        let mut order: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut at = 0;
        while at < order.len() {
            for &j in &self.dependents[order[at]] {
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    order.push(j);
                }
            }
            at += 1;
        }
        if order.len() < n {
            let mut placed = vec![false; n];
            for &i in &order {
                placed[i] = true;
            }
            order.extend((0..n).filter(|&i| !placed[i]));
        }
        order
    }

    fn resolve(&self, i: usize) -> Vec<Dep> {
        self.tests[i]
            .spec
            .depends_on
            .iter()
            .map(|d| match self.by_id.get(d.as_str()) {
                _ if d.contains(':') => self
                    .cross
                    .binary_search(d)
                    .map_or(Dep::Missing, Dep::External),
                Some(&j) => Dep::Local(j),
                None => Dep::Missing,
            })
            .collect()
    }

    /// The tests, in order.
    pub fn tests(&self) -> &[TestRecord] {
        &self.tests
    }

    /// The test with `id`.
    pub fn get(&self, id: &str) -> Option<&TestRecord> {
        self.by_id.get(id).map(|&i| &self.tests[i])
    }

    /// Every `other-loop:ID` dependency of the loop's tests.
    pub fn cross_deps(&self) -> &[String] {
        &self.cross
    }

    /// Puts records just written into the table: in place when the test is known and keeps
    /// its place and dependencies (every attempt's case, a cost of one), otherwise by
    /// indexing again.
    pub fn upsert(&mut self, written: Vec<TestRecord>) {
        let mut ready = self
            .ready
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut again = false;
        let mut touched = Vec::new();
        for t in written {
            match self.by_id.get(&t.spec.id) {
                Some(&i) if self.tests[i].order == t.order => {
                    let same_deps = self.tests[i].spec.depends_on == t.spec.depends_on;
                    // Its place in the ready set goes with the record it was computed from.
                    if let Some(r) = &mut ready {
                        r.set.remove(&self.ready_key(i, r.priority));
                    }
                    self.status[i] = t.status;
                    self.tests[i] = t;
                    again |= !same_deps;
                    touched.push(i);
                }
                Some(&i) => {
                    self.tests[i] = t;
                    again = true;
                }
                None => {
                    self.tests.push(t);
                    again = true;
                }
            }
        }
        if again {
            let tests = std::mem::take(&mut self.tests);
            *self = TestTable::new(tests);
            return;
        }
        // A status changes the readiness of its test and of the tests that depend on it.
        if let Some(r) = &mut ready {
            for &i in &touched {
                for k in std::iter::once(i).chain(self.dependents[i].iter().copied()) {
                    let key = self.ready_key(k, r.priority);
                    if self.locally_ready(k, r.run_past_failed) {
                        r.set.insert(key);
                    } else {
                        r.set.remove(&key);
                    }
                }
            }
        }
        *self.ready.0.get_mut().unwrap_or_else(|e| e.into_inner()) = ready;
    }

    /// Where test `i` sorts among the ready tests.
    fn ready_key(&self, i: usize, loop_priority: u32) -> (u32, u32, usize) {
        let t = &self.tests[i];
        (t.spec.priority.unwrap_or(loop_priority), t.order, i)
    }

    /// Pending, no dependency on another loop, and every dependency done.
    fn locally_ready(&self, i: usize, run_past_failed: bool) -> bool {
        self.status[i] == TestStatus::Pending
            && self.external.binary_search(&i).is_err()
            && self
                .dep_states(i, &self.status, &|_| None, run_past_failed)
                .all(|(_, s)| s == DepState::Done)
    }

    /// See [`super::next_runnable`]: [`TestTable::pick`] of one, with one lane and nothing
    /// busy. The first pick builds the ready set (a walk over the tests); later picks read its
    /// first entry and the tests that wait on other loops.
    pub fn next_runnable(
        &self,
        loop_priority: u32,
        run_past_failed: bool,
        external: &dyn Fn(&str) -> Option<TestStatus>,
    ) -> Option<&TestRecord> {
        let ctx = PickContext::one_lane(loop_priority, run_past_failed, external);
        self.pick(1, &ctx).into_iter().next()
    }

    /// See [`super::is_finished`].
    pub fn is_finished(&self) -> bool {
        !self
            .status
            .iter()
            .any(|s| matches!(s, TestStatus::Pending | TestStatus::Running))
    }

    /// See [`super::refresh_blocked`]; `changed` is a record not in the table yet that stands
    /// in for the table's test of its id (the outcome of an attempt, before it is written).
    ///
    /// With `changed`, only that test and, transitively, the tests that depend on it are looked
    /// at: the rest of the table is as the last refresh left it (every write of the loop's tests
    /// is refreshed), so nothing else can change. Without it, every test is (for other loops'
    /// tests, which change under the table).
    pub fn refresh_blocked(
        &self,
        changed: Option<&TestRecord>,
        run_past_failed: bool,
        external: &dyn Fn(&str) -> Option<TestStatus>,
    ) -> Vec<TestRecord> {
        let over = changed.and_then(|c| Some((*self.by_id.get(&c.spec.id)?, c)));
        let record = |i: usize| match over {
            Some((j, c)) if j == i => c,
            _ => &self.tests[i],
        };
        let mut status = self.status.clone();
        if let Some((j, c)) = over {
            status[j] = c.status;
        }
        // Only the tests whose blocking changes get an entry: the common case allocates nothing.
        let mut blocked_by: HashMap<usize, Vec<String>> = HashMap::new();
        let mut look = |i: usize, status: &mut Vec<TestStatus>| -> bool {
            if !matches!(status[i], TestStatus::Pending | TestStatus::Blocked) {
                return false;
            }
            let stuck: Vec<String> = self
                .dep_states(i, status, external, run_past_failed)
                .filter(|(_, s)| *s == DepState::Stuck)
                .map(|(k, _)| self.tests[i].spec.depends_on[k].clone())
                .collect();
            let new = if stuck.is_empty() {
                TestStatus::Pending
            } else {
                TestStatus::Blocked
            };
            let now_by = blocked_by.get(&i).unwrap_or(&record(i).blocked_by);
            if status[i] == new && *now_by == stuck {
                return false;
            }
            status[i] = new;
            blocked_by.insert(i, stuck);
            true
        };
        match over {
            Some((j, _)) => {
                let mut queue: std::collections::VecDeque<usize> =
                    self.dependents[j].iter().copied().collect();
                look(j, &mut status);
                while let Some(i) = queue.pop_front() {
                    if look(i, &mut status) {
                        queue.extend(self.dependents[i].iter().copied());
                    }
                }
            }
            None => {
                // To a fixed point: blocking is transitive.
                let mut changed_any = true;
                while changed_any {
                    changed_any = false;
                    for i in 0..self.tests.len() {
                        changed_any |= look(i, &mut status);
                    }
                }
            }
        }
        let mut out: Vec<(usize, TestRecord)> = blocked_by
            .into_iter()
            .filter(|(i, by)| status[*i] != record(*i).status || *by != record(*i).blocked_by)
            .map(|(i, by)| {
                let mut t = record(i).clone();
                t.status = status[i];
                t.reason = (!by.is_empty())
                    .then(|| format!("waiting on {} that cannot pass on its own", by.join(", ")));
                t.blocked_by = by;
                t.updated_at = Utc::now();
                (i, t)
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, t)| t).collect()
    }

    /// Each dependency of test `i` (its index in `depends_on`) with what it means for the test,
    /// by the statuses in `status`. Reads no record, only for `other-loop:ID`.
    fn dep_states<'a>(
        &'a self,
        i: usize,
        status: &'a [TestStatus],
        external: &'a dyn Fn(&str) -> Option<TestStatus>,
        run_past_failed: bool,
    ) -> impl Iterator<Item = (usize, DepState)> + 'a {
        self.deps[self.dep_at[i]..self.dep_at[i + 1]]
            .iter()
            .enumerate()
            .map(move |(k, dep)| {
                let s = match dep {
                    Dep::Local(j) => Some(status[*j]),
                    Dep::External(x) => external(&self.cross[*x]),
                    Dep::Missing => None,
                };
                (k, dependency_state(s, run_past_failed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    /// A test of loop `l` in `status`, at `order`.
    pub(super) fn rec(id: &str, deps: &[&str], status: TestStatus, order: u32) -> TestRecord {
        let spec = serde_json::from_value(serde_json::json!({
            "id": id, "title": id, "spec": "x", "verify": "true", "depends_on": deps
        }))
        .unwrap();
        let mut t = TestRecord::new("l", spec, Origin::File);
        t.status = status;
        t.order = order;
        t
    }

    fn none(_: &str) -> Option<TestStatus> {
        None
    }

    /// Statuses of a few shapes of graphs, each test in each status.
    fn cases() -> Vec<Vec<TestRecord>> {
        use TestStatus::*;
        let statuses = [Pending, Passed, Failed, Blocked, Skipped, Running];
        let mut out = Vec::new();
        for (k, s) in statuses.iter().enumerate() {
            let next = statuses[(k + 1) % statuses.len()];
            out.push(vec![
                rec("a", &[], *s, 0),
                rec("b", &["a"], next, 1),
                rec("c", &["b", "nope"], Pending, 2),
                rec("d", &["a", "other:X"], Pending, 3),
                rec("e", &["d"], Blocked, 4),
            ]);
        }
        out
    }

    #[test]
    fn the_table_decides_as_the_plain_functions_do() {
        let other = |_: &str| Some(TestStatus::Passed);
        for tests in cases() {
            let table = TestTable::new(tests.clone());
            for run_past in [false, true] {
                assert_eq!(
                    table.next_runnable(5, run_past, &other).map(|t| &t.spec.id),
                    super::super::next_runnable(&tests, 5, run_past, &other).map(|t| &t.spec.id)
                );
                let by_table = table.refresh_blocked(None, run_past, &none);
                let by_fn = super::super::refresh_blocked(&tests, run_past, &none);
                let key = |v: &[TestRecord]| -> Vec<(String, TestStatus, Vec<String>)> {
                    v.iter()
                        .map(|t| (t.spec.id.clone(), t.status, t.blocked_by.clone()))
                        .collect()
                };
                assert_eq!(key(&by_table), key(&by_fn));
            }
        }
    }

    /// The blocking refresh as it was before the table: every record cloned, an id map per
    /// pass; what the table must agree with.
    fn reference(tests: &[TestRecord], run_past: bool) -> Vec<(String, TestStatus, Vec<String>)> {
        let mut current = tests.to_vec();
        loop {
            let status: HashMap<String, TestStatus> = current
                .iter()
                .map(|t| (t.spec.id.clone(), t.status))
                .collect();
            let mut changed_any = false;
            for t in current.iter_mut() {
                if !matches!(t.status, TestStatus::Pending | TestStatus::Blocked) {
                    continue;
                }
                let stuck: Vec<String> = t
                    .spec
                    .depends_on
                    .iter()
                    .filter(|d| {
                        let s = if d.contains(':') {
                            None
                        } else {
                            status.get(*d).copied()
                        };
                        dependency_state(s, run_past) == DepState::Stuck
                    })
                    .cloned()
                    .collect();
                let new = if stuck.is_empty() {
                    TestStatus::Pending
                } else {
                    TestStatus::Blocked
                };
                if t.status != new || t.blocked_by != stuck {
                    t.status = new;
                    t.blocked_by = stuck;
                    changed_any = true;
                }
            }
            if !changed_any {
                break;
            }
        }
        current
            .into_iter()
            .zip(tests)
            .filter(|(new, old)| new.status != old.status || new.blocked_by != old.blocked_by)
            .map(|(t, _)| (t.spec.id, t.status, t.blocked_by))
            .collect()
    }

    fn key(v: &[TestRecord]) -> Vec<(String, TestStatus, Vec<String>)> {
        v.iter()
            .map(|t| (t.spec.id.clone(), t.status, t.blocked_by.clone()))
            .collect()
    }

    #[test]
    fn picks_from_the_kept_ready_set_agree_with_the_plain_function_after_every_change() {
        use TestStatus::*;
        let answers = [Some(Passed), Some(Pending), None];
        for tests in cases() {
            for run_past in [false, true] {
                for other in answers {
                    let external = move |_: &str| other;
                    // The ready set is built by the first pick, then kept by each upsert.
                    let mut table = TestTable::new(tests.clone());
                    let mut plain = tests.clone();
                    let pick = |table: &TestTable, plain: &[TestRecord], at: u32| {
                        assert_eq!(
                            table
                                .next_runnable(at, run_past, &external)
                                .map(|t| &t.spec.id),
                            super::super::next_runnable(plain, at, run_past, &external)
                                .map(|t| &t.spec.id),
                            "priority {at}, run_past {run_past}, other {other:?}"
                        );
                    };
                    pick(&table, &plain, 5);
                    for i in 0..plain.len() {
                        for s in [Pending, Passed, Failed, Skipped, Running, Blocked] {
                            let mut c = plain[i].clone();
                            c.status = s;
                            // A priority of its own moves it in the order, too.
                            c.spec.priority = (s == Passed).then_some(1);
                            plain[i] = c.clone();
                            table.upsert(vec![c]);
                            pick(&table, &plain, 5);
                        }
                    }
                    // Another loop priority (a reload) builds the set again.
                    pick(&table, &plain, 0);
                    pick(&table, &plain, 9);
                }
            }
        }
    }

    #[test]
    fn the_table_agrees_with_the_reference_and_with_itself_after_a_change() {
        use TestStatus::*;
        for tests in cases() {
            for run_past in [false, true] {
                let table = TestTable::new(tests.clone());
                assert_eq!(
                    key(&table.refresh_blocked(None, run_past, &none)),
                    reference(&tests, run_past)
                );
                // A consistent table, then each test changes to each status: looking only at
                // its dependents finds what a full refresh finds.
                let mut settled = table.clone();
                settled.upsert(table.refresh_blocked(None, run_past, &none));
                assert!(settled.refresh_blocked(None, run_past, &none).is_empty());
                for t in settled.tests() {
                    for s in [Pending, Passed, Failed, Skipped, Running] {
                        let mut c = t.clone();
                        c.status = s;
                        let incremental = settled.refresh_blocked(Some(&c), run_past, &none);
                        let mut full = settled.clone();
                        full.upsert(vec![c.clone()]);
                        let want: Vec<_> = key(&full.refresh_blocked(None, run_past, &none));
                        assert_eq!(key(&incremental), want, "{} to {s:?}", c.spec.id);
                    }
                }
            }
        }
    }

    #[test]
    fn a_changed_record_stands_in_for_its_test() {
        let tests = vec![
            rec("a", &[], TestStatus::Running, 0),
            rec("b", &["a"], TestStatus::Pending, 1),
        ];
        let table = TestTable::new(tests);
        let mut failed = table.get("a").unwrap().clone();
        failed.status = TestStatus::Failed;
        let changed = table.refresh_blocked(Some(&failed), false, &none);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].spec.id, "b");
        assert_eq!(changed[0].status, TestStatus::Blocked);
        assert_eq!(changed[0].blocked_by, ["a"]);
    }

    #[test]
    fn upserts_keep_the_lookups_right() {
        let mut table = TestTable::new(vec![
            rec("b", &["a"], TestStatus::Pending, 1),
            rec("a", &[], TestStatus::Pending, 0),
        ]);
        assert_eq!(table.tests()[0].spec.id, "a");
        assert_eq!(table.next_runnable(5, false, &none).unwrap().spec.id, "a");
        table.upsert(vec![rec("a", &[], TestStatus::Passed, 0)]);
        assert_eq!(table.next_runnable(5, false, &none).unwrap().spec.id, "b");
        // A new test with a dependency on another loop, and one between the others.
        table.upsert(vec![
            rec("c", &["other:X"], TestStatus::Pending, 2),
            rec("a2", &["b"], TestStatus::Pending, 1),
        ]);
        let ids: Vec<&str> = table.tests().iter().map(|t| t.spec.id.as_str()).collect();
        assert_eq!(ids, ["a", "a2", "b", "c"]);
        assert_eq!(table.cross_deps(), ["other:X"]);
        assert_eq!(table, TestTable::new(table.tests().to_vec()));
    }
}
