//! What every actor of one fleet shares: the store, the agent slots, the event bus and the
//! folders of the state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{broadcast, Semaphore};

use crate::model::Event;
use crate::store::{Batch, Store, StoreError};

/// Shared by the fleet's actors; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The truth about progress.
    store: Store,
    /// Where transcripts, prompts and generated workdirs live.
    state_dir: PathBuf,
    /// One permit per agent that may run at once, across all loops.
    slots: Arc<Semaphore>,
    /// Every recorded event, for the progress display, SSE and webhooks.
    events: broadcast::Sender<Event>,
}

impl Ctx {
    /// A context over an open store.
    pub fn new(store: Store, state_dir: &Path, max_concurrent_agents: usize) -> Ctx {
        let (events, _) = broadcast::channel(4096);
        Ctx {
            inner: Arc::new(Inner {
                store,
                state_dir: state_dir.to_path_buf(),
                slots: Arc::new(Semaphore::new(max_concurrent_agents.max(1))),
                events,
            }),
        }
    }

    /// The store (its calls block: use [`Ctx::read`] or [`Ctx::record`] from async code).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The agent slots.
    pub fn slots(&self) -> Arc<Semaphore> {
        self.inner.slots.clone()
    }

    /// Subscribes to recorded events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Writes `batch` in one flushed transaction off the runtime's threads, then publishes its
    /// events.
    pub async fn record(&self, batch: Batch) -> Result<Vec<Event>, StoreError> {
        let store = self.inner.store.clone();
        let events = tokio::task::spawn_blocking(move || store.apply(batch))
            .await
            .expect("store task panicked")?;
        for e in &events {
            // Nobody listening is fine.
            let _ = self.inner.events.send(e.clone());
        }
        Ok(events)
    }

    /// Runs a read against the store off the runtime's threads.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> T {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .expect("store task panicked")
    }

    /// Where the files of one attempt go.
    pub fn attempt_paths(&self, loop_name: &str, test_id: &str, n: u32) -> AttemptPaths {
        let dir = self
            .inner
            .state_dir
            .join("transcripts")
            .join(loop_name)
            .join(test_id);
        AttemptPaths {
            transcript: dir.join(format!("{n}.log")),
            prompt: dir.join(format!("{n}.prompt.md")),
            result: dir.join(format!("{n}.result.json")),
            dir,
        }
    }
}

/// The files of one attempt, under `<state_dir>/transcripts/<loop>/<test>/`.
#[derive(Debug, Clone)]
pub struct AttemptPaths {
    /// The folder.
    pub dir: PathBuf,
    /// Everything the agent printed.
    pub transcript: PathBuf,
    /// The rendered prompt (`LOOPD_PROMPT_FILE`).
    pub prompt: PathBuf,
    /// Where a command agent may report cost and summary (`LOOPD_RESULT_FILE`).
    pub result: PathBuf,
}
