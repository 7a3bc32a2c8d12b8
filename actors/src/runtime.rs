//! What every actor of one fleet shares: the store, the agent slots, the event bus and the
//! folders of the state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::fleet::Intensity;
use crate::model::Event;
use crate::monitor::{Monitor, MonitorConfig};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::{Batch, Store, StoreError};
use crate::tree::{ServicesSupervisor, TreeArgs, TreeHealth, TreeMsg};

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
    /// The agent slots and the providers' health (set once, right after creation).
    scheduler: std::sync::OnceLock<Scheduler>,
    /// Heartbeats, stall and time limits, loop liveness (set once, right after creation).
    monitor: std::sync::OnceLock<Monitor>,
    /// The services supervisor over the scheduler and the monitor, and their health.
    tree: std::sync::OnceLock<(ractor::ActorRef<TreeMsg>, TreeHealth)>,
    /// Every recorded event, for the progress display, SSE and webhooks.
    events: broadcast::Sender<Event>,
    /// The fleet file's `[pricing]`, replaced when the fleet file is reloaded.
    pricing: std::sync::RwLock<Arc<crate::pricing::Pricing>>,
    /// The one writer of [`Ctx::record`]'s batches (group commit).
    journal: Journal,
    /// The first failure to make the store durable: nothing recorded since can be trusted to
    /// survive, so `run` and `serve` stop on it (exit code 70).
    store_failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

/// A batch on its way through the journal ([`Ctx::enqueue`]).
#[derive(Debug)]
pub struct Recording(tokio::sync::oneshot::Receiver<Result<Vec<Event>, StoreError>>);

impl Recording {
    /// Waits until the batch is durable; its events, with their ids.
    pub async fn durable(self) -> Result<Vec<Event>, StoreError> {
        self.0.await.expect("the journal thread panicked")
    }
}

/// A batch to record and where to answer.
struct Job {
    batch: Batch,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Event>, StoreError>>,
}

/// Group commit: one thread writes every recorded batch. It takes all the batches waiting,
/// writes each in its own transaction, makes them durable with one flush, then publishes their
/// events and answers. With many loops finishing and starting attempts at once, their records
/// share a flush instead of queueing for one each; alone, a batch costs what it did before.
/// One writer also keeps events in journal order for subscribers (SSE resumes by id and must
/// neither skip nor repeat).
#[derive(Debug)]
struct Journal {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Journal {
    fn start(
        store: Store,
        bus: broadcast::Sender<Event>,
        failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
    ) -> Journal {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("loopd-journal".into())
            .spawn(move || {
                // Ends when the context is dropped (every sender gone).
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    group.extend(queue.try_iter());
                    let written: Vec<_> = group
                        .into_iter()
                        .map(|job| (store.write(job.batch), job.reply))
                        .collect();
                    let flushed = if written.iter().any(|(w, _)| w.is_ok()) {
                        flush(&store)
                    } else {
                        Ok(())
                    };
                    if let Err(e) = &flushed {
                        tracing::error!(error = %e, "the store cannot be made durable");
                        failure.send_if_modified(|f| {
                            let first = f.is_none();
                            if first {
                                *f = Some(e.clone());
                            }
                            first
                        });
                    }
                    for (result, reply) in written {
                        let result = match (result, &flushed) {
                            (Ok(events), Ok(())) => {
                                for e in &events {
                                    // Nobody listening is fine.
                                    let _ = bus.send(e.clone());
                                }
                                Ok(events)
                            }
                            (Ok(_), Err(e)) => Err(StoreError::Flush(e.clone())),
                            (Err(e), _) => Err(e),
                        };
                        let _ = reply.send(result);
                    }
                }
            })
            .expect("starting the journal thread");
        Journal {
            jobs: Some(jobs),
            writer: Some(writer),
        }
    }
}

/// One flush of the journal (a test can make it fail as a full disk would).
fn flush(store: &Store) -> Result<(), String> {
    if crate::fault::fails("store_flush", "*") {
        return Err(format!(
            "{}: injected failure (No space left on device)",
            crate::fault::ENV
        ));
    }
    store.flush().map_err(|e| e.to_string())
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Close the queue, then let the writer finish what it took: the store is closed only
        // after the last batch is flushed.
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Ctx {
    /// A context over an open store, without a scheduler (enough for reads and records).
    pub fn new(store: Store, state_dir: &Path) -> Ctx {
        let (events, _) = broadcast::channel(4096);
        let store_failure = Arc::new(tokio::sync::watch::channel(None).0);
        Ctx {
            inner: Arc::new(Inner {
                journal: Journal::start(store.clone(), events.clone(), store_failure.clone()),
                store_failure,
                store,
                state_dir: state_dir.to_path_buf(),
                scheduler: std::sync::OnceLock::new(),
                monitor: std::sync::OnceLock::new(),
                tree: std::sync::OnceLock::new(),
                events,
                pricing: Default::default(),
            }),
        }
    }

    /// A context with its scheduler and monitor running, supervised.
    pub async fn start(
        store: Store,
        state_dir: &Path,
        scheduler: SchedulerConfig,
    ) -> Result<Ctx, ractor::SpawnErr> {
        let ctx = Ctx::new(store, state_dir);
        Self::start_with(
            ctx,
            scheduler,
            MonitorConfig::default(),
            Intensity::default(),
        )
        .await
    }

    /// [`Ctx::start`] with the monitor's settings and the restart intensity of the services
    /// supervisor, which starts the scheduler and the monitor as its children.
    pub async fn start_with(
        ctx: Ctx,
        scheduler: SchedulerConfig,
        monitor: MonitorConfig,
        intensity: Intensity,
    ) -> Result<Ctx, ractor::SpawnErr> {
        let s = ctx.inner.scheduler.get_or_init(Scheduler::new).clone();
        let m = ctx.inner.monitor.get_or_init(Monitor::new).clone();
        let health = TreeHealth::default();
        let (tree, _) = ractor::Actor::spawn(
            None,
            ServicesSupervisor,
            TreeArgs {
                ctx: ctx.clone(),
                scheduler: (s, scheduler),
                monitor: (m, monitor),
                intensity,
                health: health.clone(),
            },
        )
        .await?;
        let _ = ctx.inner.tree.set((tree, health));
        Ok(ctx)
    }

    /// The price table attempts are priced by (the fleet file's `[pricing]`).
    pub fn pricing(&self) -> Arc<crate::pricing::Pricing> {
        self.inner
            .pricing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the price table (at start and when the fleet file is reloaded); attempts that
    /// end from now on are priced by it.
    pub fn set_pricing(&self, pricing: crate::pricing::Pricing) {
        *self
            .inner
            .pricing
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(pricing);
    }

    /// The monitor.
    ///
    /// # Panics
    /// When the context was made with [`Ctx::new`] rather than [`Ctx::start`].
    pub fn monitor(&self) -> &Monitor {
        self.inner
            .monitor
            .get()
            .expect("a context that runs loops is made by Ctx::start")
    }

    /// The health of the scheduler and the monitor (empty before [`Ctx::start`]).
    pub fn tree_health(&self) -> TreeHealth {
        self.inner
            .tree
            .get()
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    }

    /// Stops the services supervisor, then the scheduler and the monitor (never restarted).
    pub fn stop_services(&self) {
        if let Some((tree, _)) = self.inner.tree.get() {
            tree.stop(None);
        }
        if let Some(s) = self.inner.scheduler.get() {
            s.stop();
        }
        if let Some(m) = self.inner.monitor.get() {
            m.stop();
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

    /// The scheduler (agent slots, provider backoff and pauses).
    ///
    /// # Panics
    /// When the context was made with [`Ctx::new`] rather than [`Ctx::start`].
    pub fn scheduler(&self) -> &Scheduler {
        self.inner
            .scheduler
            .get()
            .expect("a context that runs loops is made by Ctx::start")
    }

    /// The store's first failure to flush, if one happened.
    pub fn store_failure(&self) -> Option<StoreError> {
        self.inner
            .store_failure
            .borrow()
            .clone()
            .map(StoreError::Flush)
    }

    /// Resolves when the store fails to flush (at once if it already did).
    pub async fn store_failed(&self) -> StoreError {
        let mut rx = self.inner.store_failure.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return StoreError::Flush(e);
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Subscribes to recorded events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Writes `batch` in one transaction and makes it durable (off the runtime's threads, in a
    /// flush it may share with batches recorded at the same moment), then publishes its events.
    pub async fn record(&self, batch: Batch) -> Result<Vec<Event>, StoreError> {
        self.enqueue(batch).durable().await
    }

    /// Hands `batch` to the journal without waiting: it is written after every batch handed
    /// over before it (by any task), and its events are published once it is durable. The
    /// caller awaits [`Recording::durable`] before anything that depends on the write.
    pub fn enqueue(&self, batch: Batch) -> Recording {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .journal
            .jobs
            .as_ref()
            .expect("the journal is open while the context lives")
            .send(Job { batch, reply })
            .expect("the journal thread outlives the context");
        Recording(answer)
    }

    /// Records one event on its own (an alert, mostly). A failure to record it is logged: the
    /// actors that raise alerts have nothing better to do with it.
    pub async fn record_event(&self, event: Event) {
        let what = event.message.clone();
        let batch = Batch {
            events: vec![event],
            ..Batch::default()
        };
        if let Err(e) = self.record(batch).await {
            tracing::error!(error = %e, event = %what, "could not record an event");
        }
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
        AttemptPaths::under(&self.inner.state_dir, loop_name, test_id, n)
    }
}

/// The folder of loop `loop_name`'s lane worktrees (`<state_dir>/lanes/<loop>`): lane `k` in
/// `<k>`, the merge queue's scratch tree in `merge`.
pub fn lanes_dir(state_dir: &Path, loop_name: &str) -> PathBuf {
    state_dir.join("lanes").join(loop_name)
}

/// The value of `LOOPD_ATTEMPT_KEY` for an attempt: unique to the state directory and the
/// attempt, so that its processes can be found after a crash.
pub fn attempt_key(state_dir: &Path, loop_name: &str, test_id: &str, n: u32) -> String {
    use sha2::Digest;
    let dir = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    format!("{}/{loop_name}/{test_id}/{n}", hex::encode(&dir[..6]))
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
    /// The agent's own home for the attempt, for a preset that needs one (codex: `CODEX_HOME`):
    /// made fresh before the agent starts, removed when the attempt ends.
    pub home: PathBuf,
}

impl AttemptPaths {
    /// The files of attempt `n` of `test_id` in the state directory `state_dir`.
    pub fn under(state_dir: &Path, loop_name: &str, test_id: &str, n: u32) -> AttemptPaths {
        let dir = state_dir.join("transcripts").join(loop_name).join(test_id);
        AttemptPaths {
            transcript: dir.join(format!("{n}.log")),
            prompt: dir.join(format!("{n}.prompt.md")),
            result: dir.join(format!("{n}.result.json")),
            home: dir.join(format!("{n}.home")),
            dir,
        }
    }
}
