//! `GET /api/loops` entries of loops with no running attempt, kept serialized and reused while
//! the store says nothing about the loop changed ([`Store::loop_version`]).
//!
//! Decoding a loop's records (its config, tests and attempts) and encoding its view is nearly
//! all the cost of a page; an idle or finished loop's view changes only when one of its records
//! is written, and every such write moves the loop's version. A loop with a running attempt is
//! never cached: its entry carries the monitor's live heartbeat. Each [`View`] of a loop is
//! cached on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use loopd_actors::store::{Store, StoreError};
use loopd_actors::view::{self, LoopView};

/// Loop name and view to its entry's JSON and the store version it was computed at.
type Entries = HashMap<(String, View), (u64, Arc<[u8]>)>;

/// Which shape of a loop a page carries (`?view=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// [`LoopView`]: every attempt of every test.
    Full,
    /// [`view::LoopSummary`]: per test its counts and last attempt.
    Summary,
}

impl View {
    /// `loop` serialized in this view.
    pub fn to_json(self, l: LoopView) -> Vec<u8> {
        match self {
            View::Full => serde_json::to_vec(&l),
            View::Summary => serde_json::to_vec(&view::LoopSummary::from(l)),
        }
        .expect("a loop view always serializes")
    }
}

/// The cache.
#[derive(Debug, Default)]
pub struct ViewCache {
    entries: Mutex<Entries>,
}

/// One loop's entry on a page.
pub enum Entry {
    /// Serialized, from the cache or just computed.
    Json(Arc<[u8]>),
    /// A loop with a running attempt: the caller adds the monitor's figures.
    Live(Box<LoopView>),
}

/// A page being assembled: each loop's entry, where the cache had it.
pub struct Page {
    view: View,
    names: Vec<String>,
    versions: Vec<u64>,
    found: Vec<Option<Entry>>,
}

impl Page {
    /// True when every entry came from the cache.
    pub fn complete(&self) -> bool {
        self.found.iter().all(Option::is_some)
    }
}

impl ViewCache {
    /// The cached entries of the loops `names`: a lookup, no record read. Cheap enough for
    /// the runtime's own threads.
    pub fn cached(&self, store: &Store, names: Vec<String>, view: View) -> Page {
        // Versions are read before any record: a write that lands afterwards moves them on,
        // so what [`ViewCache::fill`] caches can only be older than its label says, never newer.
        let versions = store.loop_versions(&names);
        let entries = self.lock();
        let found = names
            .iter()
            .zip(&versions)
            .map(|(name, version)| match entries.get(&(name.clone(), view)) {
                Some((v, json)) if v == version => Some(Entry::Json(json.clone())),
                _ => None,
            })
            .collect();
        Page {
            view,
            names,
            versions,
            found,
        }
    }

    /// The page's entries in order, computing (and caching) the ones the cache did not have
    /// from the store's records (blocking reads), leaving out loops that are gone (deleted
    /// after the names were read).
    pub fn fill(&self, store: &Store, page: Page) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::with_capacity(page.found.len());
        for ((found, name), version) in page.found.into_iter().zip(&page.names).zip(page.versions) {
            match found {
                Some(e) => entries.push(e),
                None => entries.extend(self.compute(store, name, version, page.view)?),
            }
        }
        Ok(entries)
    }

    fn compute(
        &self,
        store: &Store,
        name: &str,
        version: u64,
        shape: View,
    ) -> Result<Option<Entry>, StoreError> {
        let key = (name.to_string(), shape);
        let Some(record) = store.get_loop(name)? else {
            let mut entries = self.lock();
            for shape in [View::Full, View::Summary] {
                entries.remove(&(name.to_string(), shape));
            }
            return Ok(None);
        };
        let view = view::loop_view(store, &record)?;
        if view.current_test.is_some() {
            self.lock().remove(&key);
            return Ok(Some(Entry::Live(Box::new(view))));
        }
        let json: Arc<[u8]> = shape.to_json(view).into();
        self.lock().insert(key, (version, json.clone()));
        Ok(Some(Entry::Json(json)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
