//! The loop's own records: writes that keep the cached tests and history in step with the store.

use std::collections::HashMap;
use std::sync::Arc;

use super::LoopActorState;
use crate::model::{AttemptRecord, Event, TestRecord};
use crate::plan;
use crate::store::Batch;

/// Writes `batch` (one flushed transaction, after every batch handed over before it) and brings
/// the cached tests up to date with it.
pub(super) async fn record_own(
    state: &mut LoopActorState,
    batch: Batch,
) -> Result<Vec<Event>, crate::store::StoreError> {
    let changes = OwnChanges::of(state, &batch);
    let recording = state.ctx.enqueue(batch);
    // The journal writes in order: batches handed over earlier are durable no later than this
    // one, and a failure of theirs is this actor's to learn.
    settle(state).await?;
    let result = recording.durable().await;
    match &result {
        Ok(_) => changes.apply(state),
        // What reached the store is unknown: read it again next time.
        Err(_) => forget_cached(state),
    }
    result
}

/// Hands `batch` to the journal and brings the cached copies up to date at once, without
/// waiting for the flush: for an attempt's outcome, whose flush then runs while the next
/// attempt is scheduled and its prompt rendered. Nothing that depends on the write may happen
/// before [`settle`] (or a [`record_own`], which settles): the next attempt's start record is
/// written after it, and its agent starts only once that is durable. Its events are published
/// when it is durable, as always.
pub(super) fn record_own_later(state: &mut LoopActorState, batch: Batch) {
    let changes = OwnChanges::of(state, &batch);
    let recording = state.ctx.enqueue(batch);
    state.unsettled.push(recording);
    changes.apply(state);
}

/// Waits until every batch of [`record_own_later`] is durable; on a failure, drops the cached
/// copies (they were brought up to date before the write) and returns the first error.
pub(super) async fn settle(state: &mut LoopActorState) -> Result<(), crate::store::StoreError> {
    let mut first = Ok(());
    for recording in std::mem::take(&mut state.unsettled) {
        if let Err(e) = recording.durable().await {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    if first.is_err() {
        forget_cached(state);
    }
    first
}

/// What a batch changes in the actor's cached copies: its tests, and its finished attempts.
pub(super) struct OwnChanges {
    tests: Vec<TestRecord>,
    finished: Vec<AttemptRecord>,
}

impl OwnChanges {
    fn of(state: &LoopActorState, batch: &Batch) -> OwnChanges {
        let name = &state.config.name;
        OwnChanges {
            tests: batch
                .tests
                .iter()
                .filter(|t| t.loop_name == *name)
                .cloned()
                .collect(),
            finished: batch
                .attempts
                .iter()
                .filter(|a| a.loop_name == *name && a.outcome.is_some())
                .cloned()
                .collect(),
        }
    }

    fn apply(self, state: &mut LoopActorState) {
        cache_written(state, self.tests);
        if let Some((id, history)) = state.history.as_mut() {
            let mut finished = self
                .finished
                .into_iter()
                .filter(|a| a.test_id == *id)
                .peekable();
            if finished.peek().is_none() {
                return;
            }
            let history = Arc::make_mut(history);
            for a in finished {
                // The common case, an attempt newer than every other: appended, not searched.
                if history
                    .last()
                    .is_none_or(|h| h.started_at <= a.started_at && h.number < a.number)
                {
                    history.push(a);
                    continue;
                }
                match history.iter_mut().find(|h| h.number == a.number) {
                    Some(h) => *h = a,
                    None => history.push(a),
                }
                history.sort_by_key(|a| a.started_at);
            }
        }
    }
}

/// Drops the cached tests and history (after something else wrote them).
pub(super) fn forget_cached(state: &mut LoopActorState) {
    state.tests = None;
    state.history = None;
}

/// The finished attempts of test `id`, by start: the cached copy, or read from the store.
pub(super) async fn own_history(
    state: &mut LoopActorState,
    id: &str,
) -> Result<Arc<Vec<AttemptRecord>>, crate::store::StoreError> {
    let (name, owned) = (state.config.name.clone(), id.to_string());
    let read =
        move |s: &crate::store::Store| -> Result<Vec<AttemptRecord>, crate::store::StoreError> {
            let mut h = s.list_attempts(&name, Some(&owned))?;
            h.retain(|a| a.outcome.is_some());
            Ok(h)
        };
    // A read of the store must see this actor's own writes.
    let cached = matches!(&state.history, Some((cached_id, _)) if cached_id == id);
    if cfg!(debug_assertions) || !cached {
        settle(state).await?;
    }
    match &state.history {
        Some((cached_id, cached)) if cached_id == id => {
            #[cfg(debug_assertions)]
            {
                let stored = state.ctx.read(read).await?;
                assert_eq!(
                    &stored,
                    cached.as_ref(),
                    "loop `{}`: the cached history of {id} differs from the store",
                    state.config.name
                );
            }
            Ok(cached.clone())
        }
        _ => {
            let stored = Arc::new(state.ctx.read(read).await?);
            state.history = Some((id.to_string(), stored.clone()));
            Ok(stored)
        }
    }
}

/// Puts tests just written into the cached copy (kept in the store's order: by `order`, ties by
/// id, its key order). In place: callers drop their handles on the table before they write.
pub(super) fn cache_written(state: &mut LoopActorState, written: Vec<TestRecord>) {
    if let Some(cached) = state.tests.as_mut() {
        Arc::make_mut(cached).upsert(written);
    }
}

/// The loop's tests, in order: the cached copy, or read from the store.
pub(super) async fn own_tests(
    state: &mut LoopActorState,
) -> Result<Arc<plan::TestTable>, crate::store::StoreError> {
    let name = state.config.name.clone();
    // A read of the store must see this actor's own writes.
    if cfg!(debug_assertions) || state.tests.is_none() {
        settle(state).await?;
    }
    match &state.tests {
        Some(cached) => {
            #[cfg(debug_assertions)]
            {
                let stored = state.ctx.read(move |s| s.list_tests(&name)).await?;
                assert_eq!(
                    stored.as_slice(),
                    cached.tests(),
                    "loop `{}`: the cached tests differ from the store",
                    state.config.name
                );
            }
            Ok(cached.clone())
        }
        None => {
            let stored = state.ctx.read(move |s| s.list_tests(&name)).await?;
            let table = Arc::new(plan::TestTable::new(stored));
            state.tests = Some(table.clone());
            Ok(table)
        }
    }
}

/// `stored` with the records of `changed` in place of theirs (by id, through a map: the first
/// boot of a 100,000-test loop changes every test).
pub(super) fn merge(stored: &[TestRecord], changed: &[TestRecord]) -> Vec<TestRecord> {
    let mut out: Vec<TestRecord> = stored.to_vec();
    let mut at: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, t)| (t.spec.id.clone(), i))
        .collect();
    for c in changed {
        match at.get(&c.spec.id) {
            Some(&i) => out[i] = c.clone(),
            None => {
                at.insert(c.spec.id.clone(), out.len());
                out.push(c.clone());
            }
        }
    }
    out
}

/// Keeps the last record per test id (later changes win), in first-seen order.
pub(super) fn dedup_last(records: Vec<TestRecord>) -> Vec<TestRecord> {
    let mut out: Vec<TestRecord> = Vec::with_capacity(records.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(records.len());
    for r in records {
        match at.get(&r.spec.id) {
            Some(&i) => out[i] = r,
            None => {
                at.insert(r.spec.id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}
