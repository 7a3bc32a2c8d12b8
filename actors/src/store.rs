//! The store: sled trees that hold the truth about progress.
//!
//! Trees: `loops` (name), `tests` (loop NUL id), `attempts` (loop NUL test NUL number),
//! `events` (monotonic id), `lessons`, `deliveries` (event id, webhook URL: the webhook delivery
//! log), `hints` (loop NUL test, the test empty for the loop's own hint), `running` (the keys of attempts without an outcome, so that a restart does not read the
//! whole ledger to find them) and `meta` (schema version). Every write, of any tree, is a
//! [`Batch`]; records are JSON values,
//! so a newer field can be added with a serde default. Everything that belongs together is written
//! by [`Store::apply`] in one transaction and flushed before it returns, so an effect that depends
//! on a write (spawning an agent, answering a client) never runs ahead of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

mod totals;

pub use totals::Spent;

use crate::model::{AttemptRecord, Event, LoopRecord, TestRecord};
use crate::model::{DeliveryRecord, Hint, HintKey, Lesson};

/// The layout version this build writes. A store with a higher one is refused, never overwritten.
///
/// 2: the `running` index. A loopd that knows only version 1 would write attempts without
/// keeping the index, and this one would then trust an index that misses them; the version
/// makes the older loopd refuse the store instead.
pub const SCHEMA_VERSION: u32 = 2;

const VERSION_KEY: &[u8] = b"schema_version";

/// The generation of the last flush (see [`crate::generation`]), in `meta`.
const GENERATION_KEY: &[u8] = b"generation";
/// Set in `meta` once the `running` tree indexes every attempt without an outcome; a store
/// written before the index existed is indexed once, by one scan, when it is opened.
const RUNNING_INDEX_KEY: &[u8] = b"running_index";
/// Where the scheduled report stands, in `meta`: the end of the period the last report covered
/// (or the start of the first period), RFC 3339. See [`crate::reporter`].
const REPORT_MARK_KEY: &[u8] = b"report_mark";

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database; `cause` says why (another process holding its lock
    /// only when the lock says so).
    #[error("cannot open the store at {path}: {cause}")]
    Open {
        /// The database folder.
        path: PathBuf,
        /// Why, in words for the user.
        cause: String,
        /// Another process holds sled's lock on it: the store may be fine.
        locked: bool,
    },
    /// The store lost durable writes: it is behind (or missing beside) its generation record.
    #[error("the store at {path} {found}, but its generation record {record} says it reached generation {recorded} (last flushed {written_at}): the store was deleted, truncated or damaged after loopd made it durable (an agent can reach the state directory). Nothing was changed. To rebuild the passed tests and their commits from the workdirs' git history, run `loopd recover CONFIG` (it sets the store aside and says what it could not recover)")]
    Behind {
        /// The database folder.
        path: PathBuf,
        /// What the store holds: "is missing", "is at generation 3".
        found: String,
        /// The record file.
        record: PathBuf,
        /// The generation the record says.
        recorded: u64,
        /// When the record was written.
        written_at: String,
    },
    /// The generation record could not be read or written.
    #[error("the store's generation record: {0}")]
    Record(#[from] crate::generation::RecordError),
    /// The store was written by a newer loopd.
    #[error("the store at {path} has schema version {found}, newer than the {supported} this loopd understands; upgrade loopd (the store was not changed)")]
    NewerVersion {
        /// The database folder.
        path: PathBuf,
        /// The version found in `meta`.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// A record could not be decoded.
    #[error("corrupt record in tree `{tree}` at key `{key}`: {reason}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The key, printable.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A flush failed after the write (I/O); the write may not survive a crash.
    #[error("cannot make the store durable: {0}")]
    Flush(String),
    /// Any other sled failure (I/O).
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Records that change together: written in one transaction by [`Store::apply`].
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Loop records to write.
    pub loops: Vec<LoopRecord>,
    /// Test records to write.
    pub tests: Vec<TestRecord>,
    /// Attempt records to write.
    pub attempts: Vec<AttemptRecord>,
    /// Events to append (ids are assigned by the store).
    pub events: Vec<Event>,
    /// Lessons to write (keyed by fingerprint, loop and test: a later pass of the same test
    /// replaces its lesson).
    pub lessons: Vec<Lesson>,
    /// Entries of the webhook delivery log to write (or update).
    pub deliveries: Vec<DeliveryRecord>,
    /// Hints to write; each replaces the current hint of its loop (or test).
    pub hints: Vec<Hint>,
    /// Hints to remove.
    pub clear_hints: Vec<HintKey>,
    /// Loops to forget with their tests, attempts and hints (their events and lessons stay),
    /// before the rest of the batch is written, in the same transaction.
    pub forget_loops: Vec<String>,
    /// The new end of the period the scheduled reports have covered: written in the same
    /// transaction as the report's event, so a restart neither skips nor repeats a report.
    pub report_mark: Option<DateTime<Utc>>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
            && self.tests.is_empty()
            && self.attempts.is_empty()
            && self.events.is_empty()
            && self.lessons.is_empty()
            && self.deliveries.is_empty()
            && self.hints.is_empty()
            && self.clear_hints.is_empty()
            && self.forget_loops.is_empty()
            && self.report_mark.is_none()
    }
}

/// The sled database of one state directory.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    /// Schema version and generation.
    meta: sled::Tree,
    /// The generation of the last flush; held while a flush runs, so that generations are
    /// made durable in order.
    generation: Arc<Mutex<u64>>,
    /// Writes the generation record beside the store after every flush, off its path.
    record: Arc<crate::generation::Writer>,
    loops: sled::Tree,
    tests: sled::Tree,
    attempts: sled::Tree,
    events: sled::Tree,
    lessons: sled::Tree,
    /// The webhook delivery log, keyed by event id then endpoint URL.
    deliveries: sled::Tree,
    /// The current hint of each loop and test.
    hints: sled::Tree,
    /// Keys (as in `attempts`) of the attempts without an outcome; values are empty.
    running: sled::Tree,
    /// Which write last touched each loop, for caches of views derived from the store.
    versions: Arc<Versions>,
    /// Attempt counts and costs per loop, for the budget checks.
    totals: Arc<totals::Totals>,
}

/// Write counters: every write that touches a loop's records (its loop record, tests or
/// attempts) takes the next number and files it under the loop, after the write is visible.
/// A view computed after reading `loop_version(name) == v` is current as long as the version
/// is still `v`: a write that raced the computation moves the version on, so the view is
/// recomputed, never served stale.
#[derive(Debug, Default)]
struct Versions {
    next: AtomicU64,
    by_loop: Mutex<HashMap<String, u64>>,
}

impl Versions {
    fn bump<'a>(&self, loops: impl IntoIterator<Item = &'a str>) {
        let mut by_loop = self.by_loop.lock().unwrap_or_else(|e| e.into_inner());
        for name in loops {
            let v = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            by_loop.insert(name.to_string(), v);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store under `state_dir/store`, refusing a newer schema version
    /// and a store behind its generation record (it lost writes: see [`crate::generation`]).
    pub fn open(state_dir: &Path) -> Result<Store> {
        let path = state_dir.join("store");
        let record = crate::generation::read(state_dir)?;
        let behind = |found: String, r: &crate::generation::Record| StoreError::Behind {
            path: path.clone(),
            found,
            record: crate::generation::path(state_dir),
            recorded: r.generation,
            written_at: r
                .written_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        if let Some(r) = record.as_ref().filter(|r| r.generation > 0) {
            if !path.exists() {
                // Refused before sled creates an empty store in its place.
                return Err(behind("is missing".into(), r));
            }
        }
        let db = sled::Config::new().path(&path).open().map_err(|source| {
            let locked = lock_held(&path);
            StoreError::Open {
                cause: open_failure(state_dir, locked, &source),
                path: path.clone(),
                locked,
            }
        })?;
        let meta = db.open_tree("meta")?;
        let generation = match meta.get(GENERATION_KEY)? {
            Some(raw) => decode_u64(&raw).ok_or_else(|| StoreError::Corrupt {
                tree: "meta",
                key: "generation".into(),
                reason: format!("expected 8 bytes, found {}", raw.len()),
            })?,
            None => 0,
        };
        // Checked before anything is written, so a refused store is left as it was found.
        if let Some(r) = record.as_ref().filter(|r| generation < r.generation) {
            return Err(behind(format!("is at generation {generation}"), r));
        }
        match meta.get(VERSION_KEY)? {
            Some(raw) => {
                let found = decode_u32(&raw).ok_or_else(|| StoreError::Corrupt {
                    tree: "meta",
                    key: "schema_version".into(),
                    reason: format!("expected 4 bytes, found {}", raw.len()),
                })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerVersion {
                        path,
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    // An older layout: whatever index marker it has, it is indexed again below.
                    meta.remove(RUNNING_INDEX_KEY)?;
                    meta.insert(VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                }
            }
            None => {
                meta.insert(VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                // A new store has no attempt to index.
                meta.insert(RUNNING_INDEX_KEY, &1u32.to_be_bytes())?;
                db.flush()?;
            }
        }
        if record.as_ref().map(|r| r.generation) != Some(generation) {
            // A first run, a store from before the record, or a crash between a flush and its
            // record: the store is the truth, the record catches up.
            crate::generation::write(state_dir, generation)?;
        }
        let store = Store {
            loops: db.open_tree("loops")?,
            tests: db.open_tree("tests")?,
            attempts: db.open_tree("attempts")?,
            events: db.open_tree("events")?,
            lessons: db.open_tree("lessons")?,
            deliveries: db.open_tree("deliveries")?,
            hints: db.open_tree("hints")?,
            running: db.open_tree("running")?,
            versions: Arc::default(),
            totals: Arc::default(),
            generation: Arc::new(Mutex::new(generation)),
            record: Arc::new(crate::generation::Writer::start(state_dir, generation)),
            meta,
            path,
            db,
        };
        if store.meta.get(RUNNING_INDEX_KEY)?.is_none() {
            store.index_running()?;
            store.meta.insert(RUNNING_INDEX_KEY, &1u32.to_be_bytes())?;
            store.flush()?;
        }
        Ok(store)
    }

    /// Builds the `running` index from the ledger (a store from before the index).
    fn index_running(&self) -> Result<()> {
        self.running.clear()?;
        for kv in self.attempts.iter() {
            let (k, v) = kv?;
            let a: AttemptRecord = decode("attempts", &k, &v)?;
            if a.outcome.is_none() {
                self.running.insert(k, &[])?;
            }
        }
        Ok(())
    }

    /// The generation of the last flush.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write so far durable, under the next generation, and then has that
    /// generation recorded beside the store (the record never runs ahead of what sled made
    /// durable). An `Err` after a durable flush is an earlier record write that failed.
    pub fn flush(&self) -> Result<()> {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let next = *generation + 1;
        self.meta.insert(GENERATION_KEY, &next.to_be_bytes())?;
        self.db.flush()?;
        *generation = next;
        self.record.publish(next).map_err(|e| {
            StoreError::Flush(format!(
                "the store is flushed but its generation record could not be written: {e}"
            ))
        })
    }

    /// Writes `batch` in one transaction, flushes, and returns its events with their ids.
    pub fn apply(&self, batch: Batch) -> Result<Vec<Event>> {
        let events = self.write(batch)?;
        self.flush()?;
        Ok(events)
    }

    /// Writes `batch` in one transaction, visible to readers at once but durable only after
    /// the next [`Store::flush`], and returns its events with their ids. Group commit: several
    /// writes, then one flush.
    pub fn write(&self, mut batch: Batch) -> Result<Vec<Event>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for event in &mut batch.events {
            // generate_id is monotonic across restarts, which is all the journal needs.
            event.id = self.db.generate_id()? + 1;
        }
        let encoded = Encoded::of(&batch)?;
        // Transactions cannot scan: the keys of a forgotten loop's records are read first. Its
        // actor has stopped, so nothing adds to them meanwhile.
        let mut forgotten: [Vec<sled::IVec>; 3] = Default::default();
        for name in &batch.forget_loops {
            let prefix = key(&[name, ""]);
            let trees = [&self.tests, &self.attempts, &self.hints];
            for (keys, tree) in forgotten.iter_mut().zip(trees) {
                for k in tree.scan_prefix(&prefix).keys() {
                    keys.push(k?);
                }
            }
        }
        let finished: Vec<bool> = batch.attempts.iter().map(|a| a.outcome.is_some()).collect();
        let mut known = self.totals.lock();
        let spent = totals::changes(&known, &batch.attempts, &batch.forget_loops, |a| {
            let k = attempt_key(&a.loop_name, &a.test_id, a.number);
            self.attempts
                .get(&k)?
                .map(|v| decode::<totals::Cost>("attempts", &k, &v).map(|old| old.cost_usd))
                .transpose()
        })?;
        let trees = (
            &self.loops,
            &self.tests,
            &self.attempts,
            &self.events,
            &self.lessons,
            &self.deliveries,
            &self.running,
            &self.hints,
            &self.meta,
        );
        let mark = batch.report_mark.map(|t| t.to_rfc3339());
        trees
            .transaction(
                |(loops, tests, attempts, events, lessons, deliveries, running, hints, meta)| {
                    if let Some(mark) = &mark {
                        meta.insert(REPORT_MARK_KEY, mark.as_bytes())?;
                    }
                    for name in &batch.forget_loops {
                        loops.remove(name.as_bytes())?;
                    }
                    for k in &forgotten[0] {
                        tests.remove(k)?;
                    }
                    for k in &forgotten[1] {
                        attempts.remove(k)?;
                        running.remove(k)?;
                    }
                    for k in forgotten[2].iter().chain(&encoded.cleared_hints) {
                        hints.remove(k.as_ref())?;
                    }
                    for (k, v) in &encoded.hints {
                        hints.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (k, v) in &encoded.lessons {
                        lessons.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (k, v) in &encoded.deliveries {
                        deliveries.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (k, v) in &encoded.loops {
                        loops.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (k, v) in &encoded.tests {
                        tests.insert(k.as_slice(), v.as_slice())?;
                    }
                    for ((k, v), done) in encoded.attempts.iter().zip(&finished) {
                        attempts.insert(k.as_slice(), v.as_slice())?;
                        if *done {
                            running.remove(k.as_slice())?;
                        } else {
                            running.insert(k.as_slice(), &[])?;
                        }
                    }
                    for (k, v) in &encoded.events {
                        events.insert(k.as_slice(), v.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            )
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })?;
        totals::apply(&mut known, spent, &batch.forget_loops);
        drop(known);
        self.versions.bump(
            batch.loops.iter().map(|l| l.name.as_str()).chain(
                batch
                    .tests
                    .iter()
                    .map(|t| t.loop_name.as_str())
                    .chain(batch.attempts.iter().map(|a| a.loop_name.as_str()))
                    .chain(batch.hints.iter().map(|h| h.loop_name.as_str()))
                    .chain(batch.clear_hints.iter().map(|h| h.loop_name.as_str()))
                    .chain(batch.forget_loops.iter().map(String::as_str)),
            ),
        );
        Ok(batch.events)
    }

    /// The number of the last write (since this store was opened) that touched the loop's
    /// records: its loop record, a test or an attempt; 0 when none did. Views derived from
    /// those records can be cached against it (see [`Versions`]).
    pub fn loop_version(&self, name: &str) -> u64 {
        self.loop_versions(&[name])[0]
    }

    /// [`Store::loop_version`] of each of `names`, in one look.
    pub fn loop_versions<S: AsRef<str>>(&self, names: &[S]) -> Vec<u64> {
        let by_loop = self
            .versions
            .by_loop
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .map(|n| by_loop.get(n.as_ref()).copied().unwrap_or(0))
            .collect()
    }

    /// At most `limit` loop names that sort after `after`, and whether more follow; reads no
    /// record.
    pub fn loop_names_page(&self, after: &str, limit: usize) -> Result<(Vec<String>, bool)> {
        use std::ops::Bound;
        let range = (Bound::Excluded(after.as_bytes().to_vec()), Bound::Unbounded);
        let mut page = Vec::with_capacity(limit.min(1024));
        for k in self.loops.range::<Vec<u8>, _>(range).keys() {
            let k = k?;
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok((page, false))
    }

    /// One loop's record.
    pub fn get_loop(&self, name: &str) -> Result<Option<LoopRecord>> {
        get(&self.loops, "loops", name.as_bytes())
    }

    /// Every loop, by name.
    pub fn list_loops(&self) -> Result<Vec<LoopRecord>> {
        scan(&self.loops, "loops", b"")
    }

    /// Removes a loop and everything recorded about it (tests, attempts) in one flushed
    /// transaction; events and lessons stay. In the daemon this goes through the journal
    /// ([`Batch::forget_loops`]).
    pub fn delete_loop(&self, name: &str) -> Result<()> {
        self.apply(Batch {
            forget_loops: vec![name.to_string()],
            ..Batch::default()
        })
        .map(drop)
    }

    /// One test's record.
    pub fn get_test(&self, loop_name: &str, id: &str) -> Result<Option<TestRecord>> {
        get(&self.tests, "tests", &key(&[loop_name, id]))
    }

    /// Every test of a loop, in the tests file's order.
    pub fn list_tests(&self, loop_name: &str) -> Result<Vec<TestRecord>> {
        let mut tests: Vec<TestRecord> = scan(&self.tests, "tests", &key(&[loop_name, ""]))?;
        tests.sort_by_key(|t| t.order);
        Ok(tests)
    }

    /// One attempt.
    pub fn get_attempt(
        &self,
        loop_name: &str,
        test: &str,
        n: u32,
    ) -> Result<Option<AttemptRecord>> {
        get(&self.attempts, "attempts", &attempt_key(loop_name, test, n))
    }

    /// How many attempts `loop_name` made and what they cost: read from its attempts once,
    /// then kept by every write.
    pub fn spent(&self, loop_name: &str) -> Result<Spent> {
        let mut known = self.totals.lock();
        if let Some(s) = known.get(loop_name) {
            return Ok(*s);
        }
        let prefix = key(&[loop_name, ""]);
        let attempts: Vec<AttemptRecord> = scan(&self.attempts, "attempts", &prefix)?;
        let s = totals::sum(&attempts);
        known.insert(loop_name.to_string(), s);
        Ok(s)
    }

    /// Attempts of a loop (or of one of its tests), oldest first per test.
    pub fn list_attempts(&self, loop_name: &str, test: Option<&str>) -> Result<Vec<AttemptRecord>> {
        let prefix = match test {
            Some(t) => key(&[loop_name, t, ""]),
            None => key(&[loop_name, ""]),
        };
        let mut attempts: Vec<AttemptRecord> = scan(&self.attempts, "attempts", &prefix)?;
        attempts.sort_by_key(|a| a.started_at);
        Ok(attempts)
    }

    /// At most `limit` attempts of one test with a number above `after`, by number, and
    /// whether more follow: a range of keys, whatever the length of the history.
    pub fn attempts_page(
        &self,
        loop_name: &str,
        test: &str,
        after: u32,
        limit: usize,
    ) -> Result<(Vec<AttemptRecord>, bool)> {
        let Some(start) = after.checked_add(1) else {
            return Ok((Vec::new(), false));
        };
        let from = attempt_key(loop_name, test, start);
        let to = attempt_key(loop_name, test, u32::MAX);
        let mut page = Vec::with_capacity(limit.min(1024));
        for kv in self.attempts.range(from..=to) {
            let (k, v) = kv?;
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push(decode("attempts", &k, &v)?);
        }
        Ok((page, false))
    }

    /// Attempts without an outcome: running now, or left behind by a loopd that died. Read
    /// through the `running` index: the cost is theirs, not the ledger's.
    pub fn unfinished_attempts(&self) -> Result<Vec<AttemptRecord>> {
        let mut out = Vec::new();
        for k in self.running.iter().keys() {
            let k = k?;
            if let Some(a) = get::<AttemptRecord>(&self.attempts, "attempts", &k)? {
                if a.outcome.is_none() {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// Events with an id greater than `after`, oldest first, at most `limit`.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let start = (after + 1).to_be_bytes();
        self.events
            .range(start..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode("events", &k, &v)
            })
            .collect()
    }

    /// The end of the period the scheduled reports have covered, or the start of the first one;
    /// `None` before the first report was scheduled.
    pub fn report_mark(&self) -> Result<Option<DateTime<Utc>>> {
        let Some(v) = self.meta.get(REPORT_MARK_KEY)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&v);
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| StoreError::Corrupt {
                tree: "meta",
                key: String::from_utf8_lossy(REPORT_MARK_KEY).into_owned(),
                reason: format!("expected an RFC 3339 time, found `{text}`: {e}"),
            })
    }

    /// The id of the newest event in the journal (0 when it is empty).
    pub fn last_event_id(&self) -> Result<u64> {
        Ok(match self.events.last()? {
            Some((k, _)) => decode_u64(&k).unwrap_or(0),
            None => 0,
        })
    }

    /// The lessons tree, for the healer.
    pub fn lessons(&self) -> &sled::Tree {
        &self.lessons
    }

    /// Records a lesson and flushes (in the daemon lessons go through the journal, in the
    /// batch of the pass they come from: [`Batch::lessons`]).
    pub fn put_lesson(&self, lesson: &Lesson) -> Result<()> {
        self.apply(Batch {
            lessons: vec![lesson.clone()],
            ..Batch::default()
        })
        .map(drop)
    }

    /// Lessons learned from failures with `fingerprint`, in any loop.
    pub fn lessons_for(&self, fingerprint: &str) -> Result<Vec<Lesson>> {
        scan(&self.lessons, "lessons", &key(&[fingerprint, ""]))
    }

    /// The current hint of a loop (`test` `None`) or of one of its tests.
    pub fn hint(&self, loop_name: &str, test: Option<&str>) -> Result<Option<Hint>> {
        get(&self.hints, "hints", &hint_key(loop_name, test))
    }

    /// A loop's hints: its own first, then its tests' by id.
    pub fn hints_of(&self, loop_name: &str) -> Result<Vec<Hint>> {
        scan(&self.hints, "hints", &key(&[loop_name, ""]))
    }

    /// Every lesson, by fingerprint.
    pub fn all_lessons(&self) -> Result<Vec<Lesson>> {
        scan(&self.lessons, "lessons", b"")
    }
}

impl Store {
    /// The delivery of event `event_id` to `url`.
    pub fn get_delivery(&self, event_id: u64, url: &str) -> Result<Option<DeliveryRecord>> {
        get(&self.deliveries, "deliveries", &delivery_key(event_id, url))
    }

    /// Deliveries of events with an id greater than `after`, oldest event first, at most `limit`.
    pub fn deliveries_after(&self, after: u64, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let start = (after + 1).to_be_bytes();
        self.deliveries
            .range(start..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode("deliveries", &k, &v)
            })
            .collect()
    }
}

/// Whether another process holds sled's lock on the store at `path` (an exclusive `flock` on
/// its `db` file, taken by whoever has it open).
fn lock_held(path: &Path) -> bool {
    use fs2::FileExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.join("db"))
        .is_ok_and(|f| f.try_lock_exclusive().is_err())
}

/// Why sled could not open the store, in words: another process holding its lock only when
/// the lock says so.
fn open_failure(state_dir: &Path, locked: bool, source: &sled::Error) -> String {
    if locked {
        let who = crate::statedir::live_daemon(state_dir)
            .map(|d| {
                format!(
                    ": `loopd {}` (pid {}) holds the state directory",
                    d.command, d.pid
                )
            })
            .unwrap_or_default();
        return format!(
            "another process holds its lock (is another loopd using this state directory?{who})"
        );
    }
    match source {
        sled::Error::Corruption { .. } => format!(
            "{source}: the store's files are damaged; `loopd recover CONFIG` sets them aside and rebuilds the passed tests and their commits from the workdirs' git history"
        ),
        sled::Error::Io(e) => format!("{e}"),
        other => other.to_string(),
    }
}

fn delivery_key(event_id: u64, url: &str) -> Vec<u8> {
    let mut k = event_id.to_be_bytes().to_vec();
    k.extend_from_slice(url.as_bytes());
    k
}

/// The batch, serialized before the transaction so that its closure (which sled may run more
/// than once) does nothing but insert.
struct Encoded {
    loops: Vec<(Vec<u8>, Vec<u8>)>,
    tests: Vec<(Vec<u8>, Vec<u8>)>,
    attempts: Vec<(Vec<u8>, Vec<u8>)>,
    events: Vec<(Vec<u8>, Vec<u8>)>,
    lessons: Vec<(Vec<u8>, Vec<u8>)>,
    deliveries: Vec<(Vec<u8>, Vec<u8>)>,
    hints: Vec<(Vec<u8>, Vec<u8>)>,
    cleared_hints: Vec<sled::IVec>,
}

impl Encoded {
    fn of(batch: &Batch) -> Result<Encoded> {
        Ok(Encoded {
            loops: encode_all(&batch.loops, |l| l.name.as_bytes().to_vec())?,
            tests: encode_all(&batch.tests, |t| key(&[&t.loop_name, &t.spec.id]))?,
            attempts: encode_all(&batch.attempts, |a| {
                attempt_key(&a.loop_name, &a.test_id, a.number)
            })?,
            events: encode_all(&batch.events, |e| e.id.to_be_bytes().to_vec())?,
            lessons: encode_all(&batch.lessons, |l| {
                key(&[&l.fingerprint, &l.loop_name, &l.test_id])
            })?,
            deliveries: encode_all(&batch.deliveries, |d| delivery_key(d.event_id, &d.url))?,
            hints: encode_all(&batch.hints, |h| {
                hint_key(&h.loop_name, h.test_id.as_deref())
            })?,
            cleared_hints: batch
                .clear_hints
                .iter()
                .map(|h| hint_key(&h.loop_name, h.test_id.as_deref()).into())
                .collect(),
        })
    }
}

fn encode_all<T: Serialize>(
    items: &[T],
    key_of: impl Fn(&T) -> Vec<u8>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    items
        .iter()
        .map(|item| {
            let value = serde_json::to_vec(item).map_err(|e| StoreError::Corrupt {
                tree: "(encode)",
                key: String::from_utf8_lossy(&key_of(item)).into_owned(),
                reason: e.to_string(),
            })?;
            Ok((key_of(item), value))
        })
        .collect()
}

fn hint_key(loop_name: &str, test: Option<&str>) -> Vec<u8> {
    key(&[loop_name, test.unwrap_or("")])
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn attempt_key(loop_name: &str, test: &str, n: u32) -> Vec<u8> {
    let mut k = key(&[loop_name, test, ""]);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn decode_u64(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

fn decode_u32(raw: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

fn decode<T: DeserializeOwned>(tree: &'static str, k: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(k).replace('\0', "/"),
        reason: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, name: &'static str, k: &[u8]) -> Result<Option<T>> {
    tree.get(k)?.map(|v| decode(name, k, &v)).transpose()
}

fn scan<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    prefix: &[u8],
) -> Result<Vec<T>> {
    tree.scan_prefix(prefix)
        .map(|kv| {
            let (k, v) = kv?;
            decode(name, &k, &v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Origin};
    use crate::tests_file::TestSpec;

    fn spec(id: &str) -> TestSpec {
        TestSpec {
            id: id.into(),
            title: id.into(),
            spec: Some("build it".into()),
            spec_file: None,
            verify: "true".into(),
            depends_on: vec![],
            priority: None,
            timeout: None,
            tags: vec![],
            serial_group: None,
        }
    }

    #[test]
    fn a_batch_is_written_together_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut t = TestRecord::new("auth", spec("T-1"), Origin::File);
            t.order = 0;
            let events = store
                .apply(Batch {
                    loops: vec![LoopRecord::new("auth")],
                    tests: vec![t, TestRecord::new("auth-x", spec("T-2"), Origin::Api)],
                    events: vec![
                        Event::new(EventKind::LoopState, "auth", "a"),
                        Event::new(EventKind::LoopState, "auth", "b"),
                    ],
                    ..Batch::default()
                })
                .unwrap();
            assert!(events[0].id > 0 && events[1].id > events[0].id);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list_loops().unwrap().len(), 1);
        // "auth" must not see the tests of "auth-x": keys are separated by NUL.
        assert_eq!(store.list_tests("auth").unwrap().len(), 1);
        assert_eq!(store.events_after(0, 10).unwrap().len(), 2);
        let first = store.events_after(0, 1).unwrap()[0].id;
        assert_eq!(store.events_after(first, 10).unwrap().len(), 1);
    }

    #[test]
    fn loops_come_in_pages_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let loops = ["a", "b", "c", "d", "e"].map(LoopRecord::new).to_vec();
        store
            .apply(Batch {
                loops,
                ..Batch::default()
            })
            .unwrap();
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let page = store.loop_names_page("", 2).unwrap();
        assert_eq!(page, (strs(&["a", "b"]), true));
        let page = store.loop_names_page("b", 2).unwrap();
        assert_eq!(page, (strs(&["c", "d"]), true));
        let page = store.loop_names_page("d", 2).unwrap();
        assert_eq!(page, (strs(&["e"]), false));
    }

    #[test]
    fn every_write_to_a_loops_records_moves_its_version_and_only_its() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.loop_version("a"), 0);
        store
            .apply(Batch {
                loops: ["a", "b"].map(LoopRecord::new).to_vec(),
                ..Batch::default()
            })
            .unwrap();
        let (a, b) = (store.loop_version("a"), store.loop_version("b"));
        assert!(a > 0 && b > 0 && a != b);

        let spec: crate::tests_file::TestSpec = serde_json::from_value(
            serde_json::json!({"id": "T-1", "title": "t", "verify": "true"}),
        )
        .unwrap();
        let test = TestRecord::new("a", spec, crate::model::Origin::File);
        store
            .apply(Batch {
                tests: vec![test],
                ..Batch::default()
            })
            .unwrap();
        let a2 = store.loop_version("a");
        assert!(a2 > a, "a test write moves its loop's version");
        assert_eq!(store.loop_version("b"), b, "and no other loop's");

        let attempt = AttemptRecord::started("a", "T-1", 1, "t.jsonl".into());
        store
            .apply(Batch {
                attempts: vec![attempt],
                ..Batch::default()
            })
            .unwrap();
        let a3 = store.loop_version("a");
        assert!(a3 > a2, "an attempt write moves its loop's version");

        store.delete_loop("a").unwrap();
        assert!(store.loop_version("a") > a3, "so does deleting the loop");
        assert_eq!(store.loop_version("b"), b);
    }

    #[test]
    fn forgetting_a_loop_is_one_transaction_with_the_rest_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let test = |l: &str| TestRecord::new(l, spec("T-1"), Origin::File);
        let attempt = |l: &str| AttemptRecord::started(l, "T-1", 1, "t.log".into());
        store
            .apply(Batch {
                loops: ["a", "a-x"].map(LoopRecord::new).to_vec(),
                tests: vec![test("a"), test("a-x")],
                attempts: vec![attempt("a"), attempt("a-x")],
                events: vec![Event::new(EventKind::LoopState, "a", "running")],
                ..Batch::default()
            })
            .unwrap();
        let lesson = Lesson {
            fingerprint: "f00d".into(),
            error_line: "assertion failed".into(),
            loop_name: "a".into(),
            test_id: "T-1".into(),
            attempt: 1,
            what_changed: "src/a.rs".into(),
            summary: None,
            learned_at: chrono::Utc::now(),
        };
        let delivery = DeliveryRecord {
            event_id: 1,
            event: crate::config::WebhookEvent::TestPassed,
            loop_name: "a".into(),
            url: "http://127.0.0.1:9/hook".into(),
            delivery_id: "d".into(),
            status: crate::model::DeliveryStatus::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered_at: None,
            updated_at: chrono::Utc::now(),
        };
        // One batch: forget `a`, start `b`, keep a lesson and a delivery of `a`.
        store
            .apply(Batch {
                forget_loops: vec!["a".into()],
                loops: vec![LoopRecord::new("b")],
                lessons: vec![lesson.clone()],
                deliveries: vec![delivery.clone()],
                ..Batch::default()
            })
            .unwrap();
        assert!(store.get_loop("a").unwrap().is_none());
        assert!(store.list_tests("a").unwrap().is_empty());
        assert!(store.list_attempts("a", None).unwrap().is_empty());
        // A loop whose name starts with the forgotten one's keeps everything.
        assert_eq!(store.list_tests("a-x").unwrap().len(), 1);
        assert_eq!(store.list_attempts("a-x", None).unwrap().len(), 1);
        assert!(store.get_loop("b").unwrap().is_some());
        // Events and lessons outlive the loop; the delivery went in with the rest.
        assert_eq!(store.events_after(0, 10).unwrap().len(), 1);
        assert_eq!(store.lessons_for("f00d").unwrap(), vec![lesson]);
        assert_eq!(
            store.get_delivery(1, &delivery.url).unwrap(),
            Some(delivery)
        );
    }

    #[test]
    fn kept_totals_agree_with_a_read_of_every_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let attempt = |l: &str, t: &str, n: u32, usd: f64| {
            let mut a = AttemptRecord::started(l, t, n, "t.log".into());
            a.cost_usd = usd;
            a
        };
        let write = |attempts: Vec<AttemptRecord>, forget: &[&str]| {
            store
                .apply(Batch {
                    attempts,
                    forget_loops: forget.iter().map(|s| s.to_string()).collect(),
                    ..Batch::default()
                })
                .unwrap();
        };
        let read = |l: &str| {
            let all = store.list_attempts(l, None).unwrap();
            (
                all.len() as u32,
                all.iter().map(|a| a.cost_usd).sum::<f64>(),
            )
        };
        let kept = |l: &str| {
            let s = store.spent(l).unwrap();
            (s.attempts, s.cost_usd)
        };
        write(vec![attempt("a", "T-1", 1, 0.0)], &[]);
        // Read once (the first ask scans), then kept by each write.
        assert_eq!(kept("a"), read("a"));
        assert_eq!(kept("b"), (0, 0.0));
        let steps: Vec<(Vec<AttemptRecord>, Vec<&str>)> = vec![
            // The attempt that started finishes with a cost; a new one starts.
            (
                vec![attempt("a", "T-1", 1, 0.25), attempt("a", "T-2", 1, 0.0)],
                vec![],
            ),
            // One attempt twice in one write: the second replaces the first.
            (
                vec![attempt("a", "T-2", 1, 0.5), attempt("a", "T-2", 1, 0.75)],
                vec![],
            ),
            // Another loop's attempts leave `a` alone.
            (vec![attempt("b", "T-1", 1, 1.0)], vec![]),
            // Forgotten, and written again in the same batch.
            (vec![attempt("b", "T-9", 1, 2.0)], vec!["b"]),
        ];
        for (attempts, forget) in steps {
            write(attempts, &forget);
            for l in ["a", "b"] {
                let (n, usd) = kept(l);
                let (want_n, want_usd) = read(l);
                assert_eq!(n, want_n, "{l}");
                assert!(
                    (usd - want_usd).abs() < 1e-9,
                    "{l}: {usd} against {want_usd}"
                );
            }
        }
        assert_eq!(kept("a").0, 2);
        assert_eq!(kept("b"), (1, 2.0));
    }

    #[test]
    fn unfinished_attempts_are_indexed_and_an_older_layout_is_indexed_again() {
        let dir = tempfile::tempdir().unwrap();
        let started = |n| AttemptRecord::started("a", "T-1", n, "t".into());
        let mut done = started(1);
        done.outcome = Some(crate::model::Outcome::Passed);
        {
            let store = Store::open(dir.path()).unwrap();
            let batch = |attempts| Batch {
                attempts,
                ..Batch::default()
            };
            store.apply(batch(vec![started(1), started(2)])).unwrap();
            let numbers = |s: &Store| -> Vec<u32> {
                s.unfinished_attempts()
                    .unwrap()
                    .iter()
                    .map(|a| a.number)
                    .collect()
            };
            assert_eq!(numbers(&store), vec![1, 2]);
            store.apply(batch(vec![done.clone()])).unwrap();
            assert_eq!(numbers(&store), vec![2]);
            assert_eq!(store.running.len(), 1);
            // As a store a version-1 loopd wrote to after this one: the index misses its
            // attempts while the flag still says indexed.
            store.running.clear().unwrap();
            store.meta.insert(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let left: Vec<u32> = store
            .unfinished_attempts()
            .unwrap()
            .iter()
            .map(|a| a.number)
            .collect();
        assert_eq!(left, vec![2]);
        let version = store.meta.get(VERSION_KEY).unwrap().unwrap();
        assert_eq!(decode_u32(&version), Some(SCHEMA_VERSION));
        store.delete_loop("a").unwrap();
        assert!(store.running.is_empty());
    }

    #[test]
    fn a_tests_attempts_come_in_pages_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let attempts = (1..=5)
            .map(|n| AttemptRecord::started("a", "T-1", n, "t".into()))
            .chain([AttemptRecord::started("a", "T-10", 1, "t".into())])
            .collect();
        store
            .apply(Batch {
                attempts,
                ..Batch::default()
            })
            .unwrap();
        let numbers = |(page, more): (Vec<AttemptRecord>, bool)| {
            (page.iter().map(|a| a.number).collect::<Vec<_>>(), more)
        };
        let page = store.attempts_page("a", "T-1", 0, 2).unwrap();
        assert_eq!(numbers(page), (vec![1, 2], true));
        let page = store.attempts_page("a", "T-1", 2, 2).unwrap();
        assert_eq!(numbers(page), (vec![3, 4], true));
        // "T-10" shares the prefix "T-1" but is another test.
        let page = store.attempts_page("a", "T-1", 4, 2).unwrap();
        assert_eq!(numbers(page), (vec![5], false));
        let page = store.attempts_page("a", "T-1", u32::MAX, 2).unwrap();
        assert_eq!(numbers(page), (vec![], false));
    }

    #[test]
    fn a_newer_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join("store")).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(VERSION_KEY, &99u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerVersion { found: 99, .. }),
            "{err}"
        );
        let db = sled::open(dir.path().join("store")).unwrap();
        let v = db
            .open_tree("meta")
            .unwrap()
            .get(VERSION_KEY)
            .unwrap()
            .unwrap();
        assert_eq!(decode_u32(&v), Some(99));
    }

    #[test]
    fn every_flush_moves_the_generation_and_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at_open = store.generation();
        store
            .apply(Batch {
                loops: vec![LoopRecord::new("a")],
                ..Batch::default()
            })
            .unwrap();
        store.flush().unwrap();
        assert_eq!(store.generation(), at_open + 2);
        drop(store);
        // The last clone of the store waits for its record.
        let record = crate::generation::read(dir.path()).unwrap().unwrap();
        assert_eq!(record.generation, at_open + 2);
        assert_eq!(Store::open(dir.path()).unwrap().generation(), at_open + 2);
    }

    #[test]
    fn a_store_behind_its_record_or_missing_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.flush().unwrap();
        }
        // The record of a later flush that the store no longer holds.
        crate::generation::write(dir.path(), 9).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Behind { recorded: 9, .. })
                && err.to_string().contains("is at generation 1")
                && err.to_string().contains("loopd recover"),
            "{err}"
        );
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is missing"), "{err}");
        assert!(
            !dir.path().join("store").exists(),
            "no empty store was made"
        );
        assert_eq!(
            crate::generation::read(dir.path())
                .unwrap()
                .unwrap()
                .generation,
            9,
            "the record is kept as the witness"
        );
    }

    #[test]
    fn a_store_without_a_record_is_taken_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .apply(Batch {
                    loops: vec![LoopRecord::new("a")],
                    ..Batch::default()
                })
                .unwrap();
        }
        // A store written before the record existed, or whose record alone was deleted.
        crate::generation::remove(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list_loops().unwrap().len(), 1);
        let record = crate::generation::read(dir.path()).unwrap().unwrap();
        assert_eq!(record.generation, store.generation());
    }

    #[test]
    fn another_loopd_is_named_only_when_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Open { locked: true, .. })
                && err.to_string().contains("is another loopd using"),
            "{err}"
        );
        drop(first);
        // A store sled cannot read, with nobody holding it: the cause, and no word of a lock.
        let db = dir.path().join("store/db");
        std::fs::remove_file(&db).unwrap();
        std::fs::create_dir(&db).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Open { locked: false, .. })
                && err.to_string().contains("directory")
                && !err.to_string().contains("another loopd"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.loops.insert("auth", b"{not json".as_slice()).unwrap();
        let err = store.list_loops().unwrap_err().to_string();
        assert!(
            err.contains("tree `loops`") && err.contains("auth"),
            "{err}"
        );
    }
}
