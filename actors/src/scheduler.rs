//! The scheduler: the fleet's agent slots, granted by priority with aging, and what each
//! provider's health allows.
//!
//! - `max_concurrent_agents` slots are shared by every loop. Waiting requests are ordered by
//!   their loop's priority (1 first) minus one level per `aging` waited, so a low-priority loop is
//!   delayed, never starved; ties go first come, first served.
//! - An API error of a provider starts a provider-wide exponential backoff with jitter and a cap:
//!   no loop of that provider gets a slot until it has passed. After `alert_after` errors in a
//!   row an alert event is raised.
//! - Out of credits pauses the provider: its loops are told so instead of getting a slot, until
//!   a person resumes it or `credit_probe_interval` has passed, when one probe attempt is let
//!   through.
//! - The scheduler is a child of the supervision tree. A restarted one takes over the book of
//!   grants (kept beside it, in the handle), so a loop holding a slot keeps it; loops whose
//!   request died with the old one ask the new one again, with the age they had; each
//!   provider's backoff and credit pause are rebuilt from the ledger.

mod rebuild;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::model::{Event, EventKind};
use crate::runtime::Ctx;

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Agent slots shared by all loops.
    pub slots: usize,
    /// How long a request waits to climb one priority level.
    pub aging: Duration,
    /// First backoff after an API error.
    pub backoff_min: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// API errors in a row before an alert.
    pub alert_after: u32,
    /// How long a provider stays paused for lack of credits before a probe.
    pub credit_probe_interval: Duration,
}

impl SchedulerConfig {
    /// The scheduler a fleet file asks for.
    pub fn from_settings(s: &crate::config::FleetSettings) -> Self {
        SchedulerConfig {
            slots: s.max_concurrent_agents,
            aging: s.aging,
            backoff_min: Duration::from_secs(1).min(s.api_backoff_max),
            backoff_max: s.api_backoff_max,
            alert_after: s.api_alert_after,
            credit_probe_interval: s.credit_probe_interval,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            slots: 1,
            aging: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            alert_after: 3,
            credit_probe_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// The answer to a slot request.
#[derive(Debug)]
pub enum Grant {
    /// A slot: held until dropped.
    Slot(Slot),
    /// The provider is out of credits; the loop should pause.
    ProviderPaused {
        /// Why, for the loop's record.
        message: String,
    },
}

/// An agent slot; dropping it gives it back, to whichever incarnation of the scheduler runs.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    shared: Arc<Shared>,
    /// Given back with a report ([`Slot::give_back`]): the scheduler frees it.
    given_back: bool,
}

impl Slot {
    /// Gives the slot back together with what the attempt said about its provider. The slot
    /// stays held until the scheduler has taken the report in: a grant made between the two
    /// (another loop's request, a tick) would otherwise hand the slot to a provider that has
    /// just run out of credits. Kept in the book, so a report outlives a scheduler restart.
    pub fn give_back(mut self, provider: &str, report: ProviderReport) {
        self.given_back = true;
        self.shared.queue_report(provider, report, Some(self.id));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        self.shared.book().held.remove(&self.id);
        self.shared.send(SchedulerMsg::Release);
    }
}

/// What an attempt's end says about its provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderReport {
    /// The provider answered (whatever the agent made of it).
    Healthy,
    /// An API error (429, 5xx, 529, network).
    ApiError,
    /// The credit balance is empty.
    OutOfCredits(String),
}

/// Messages of the scheduler.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Ask for a slot; the answer comes on `reply` when granted.
    Acquire {
        /// The asking loop (for withdrawals and the queue's view).
        loop_name: String,
        /// Its priority (1 is highest).
        priority: u32,
        /// Its agent's provider.
        provider: String,
        /// When the loop first asked: a request made again to a restarted scheduler keeps the
        /// age it had.
        since: Instant,
        /// Where the grant goes.
        reply: oneshot::Sender<Grant>,
    },
    /// A slot was given back.
    Release,
    /// A person resumed a provider's loops: lift its credit pause and backoff.
    ResumeProvider(String),
    /// Re-examine the queue (a backoff ended).
    Wake,
}

/// What outlives an incarnation of the scheduler: which incarnation runs, and the book of
/// grants. A restarted scheduler counts the slots still held from the book, so no slot is
/// granted twice and none is lost; waiting loops learn of the restart here and ask again.
#[derive(Debug)]
struct Shared {
    /// The running incarnation; `None` before the first and once stopped for good.
    current: watch::Sender<Option<ActorRef<SchedulerMsg>>>,
    /// Set by [`Scheduler::stop`] and when the tree gives the scheduler up: no request waits
    /// for another incarnation any more.
    closed: std::sync::atomic::AtomicBool,
    book: Mutex<Book>,
    next_slot: AtomicU64,
}

/// Kept beside the scheduler rather than in it: a slot is granted before its attempt is
/// recorded, so the store alone cannot say who holds one at the instant of a restart.
#[derive(Debug, Default)]
struct Book {
    /// Slots granted and not given back: slot id, holding loop.
    held: HashMap<u64, String>,
    /// The provider of every loop that asked for a slot, to rebuild providers' health from
    /// the ledger.
    providers: HashMap<String, String>,
    /// Provider reports not taken in yet, with the slot each frees once it is.
    reports: Vec<(String, ProviderReport, Option<u64>)>,
}

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic elsewhere while holding the lock leaves the book consistent: every change
        // to it is one insert or remove.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a report in the book, for the scheduler to take in before its next dispatch, with
    /// the slot it frees then.
    fn queue_report(&self, provider: &str, report: ProviderReport, slot: Option<u64>) {
        self.book()
            .reports
            .push((provider.to_string(), report, slot));
        self.send(SchedulerMsg::Wake);
    }

    /// Sends to the running incarnation; lost when none runs (a restart counts from the book).
    fn send(&self, msg: SchedulerMsg) {
        if let Some(actor) = self.current.borrow().as_ref() {
            let _ = actor.send_message(msg);
        }
    }
}

/// Handle to the scheduler, for loops: stays valid across restarts of the actor.
#[derive(Debug, Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new()
    }
}

impl Scheduler {
    /// A handle without a running scheduler yet: [`Scheduler::spawn`] starts one.
    pub fn new() -> Scheduler {
        Scheduler {
            shared: Arc::new(Shared {
                current: watch::channel(None).0,
                closed: Default::default(),
                book: Mutex::default(),
                next_slot: AtomicU64::new(1),
            }),
        }
    }

    /// Starts a scheduler on its own, unsupervised (for tests of the scheduler alone).
    pub async fn start(ctx: Ctx, config: SchedulerConfig) -> Result<Scheduler, ractor::SpawnErr> {
        let s = Scheduler::new();
        s.spawn(ctx, config, None).await?;
        Ok(s)
    }

    /// Starts an incarnation of the scheduler, linked to `supervisor`; it takes over the
    /// book of grants and rebuilds the providers' health from the store.
    pub async fn spawn(
        &self,
        ctx: Ctx,
        config: SchedulerConfig,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<ActorRef<SchedulerMsg>, ractor::SpawnErr> {
        let args = (ctx, config, self.shared.clone());
        let (actor, _) = match supervisor {
            Some(s) => Actor::spawn_linked(None, SchedulerActor, args, s).await?,
            None => Actor::spawn(None, SchedulerActor, args).await?,
        };
        Ok(actor)
    }

    /// Waits for a slot (or learns that the provider is paused). When the scheduler restarts
    /// meanwhile, the request is made again to the new one. `None` once the scheduler is
    /// stopped for good.
    pub async fn acquire(&self, loop_name: &str, priority: u32, provider: &str) -> Option<Grant> {
        self.shared
            .book()
            .providers
            .insert(loop_name.to_string(), provider.to_string());
        let since = Instant::now();
        let mut current = self.shared.current.subscribe();
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return None;
            }
            let actor = current.borrow_and_update().clone();
            if let Some(actor) = actor {
                let (reply, rx) = oneshot::channel();
                let sent = actor.send_message(SchedulerMsg::Acquire {
                    loop_name: loop_name.to_string(),
                    priority,
                    provider: provider.to_string(),
                    since,
                    reply,
                });
                if sent.is_ok() {
                    if let Ok(grant) = rx.await {
                        return Some(grant);
                    }
                }
            }
            // That incarnation died with the request (or none runs yet): wait for the next.
            current.changed().await.ok()?;
        }
    }

    /// Tells the scheduler how a provider fared.
    pub fn report(&self, provider: &str, report: ProviderReport) {
        self.shared.queue_report(provider, report, None);
    }

    /// Lifts a provider's credit pause and backoff.
    pub fn resume_provider(&self, provider: &str) {
        self.shared
            .send(SchedulerMsg::ResumeProvider(provider.to_string()));
    }

    /// Slots granted and not given back.
    pub fn held(&self) -> usize {
        self.shared.book().held.len()
    }

    /// Stops the scheduler for good: waiting requests end with `None`.
    pub fn stop(&self) {
        self.close();
        if let Some(actor) = self.shared.current.send_replace(None) {
            actor.stop(None);
        }
    }

    /// No request waits for another incarnation any more (the tree gave the scheduler up).
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // Wakes the requests that wait for a new incarnation.
        self.shared.current.send_modify(|_| {});
    }
}

struct SchedulerActor;

struct Waiting {
    loop_name: String,
    priority: u32,
    provider: String,
    since: Instant,
    seq: u64,
    reply: oneshot::Sender<Grant>,
}

/// What the scheduler knows of one provider.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProviderHealth {
    /// API errors since the last healthy answer.
    pub errors_in_a_row: u32,
    /// No slot for the provider's loops before this.
    pub backoff_until: Option<Instant>,
    /// Out of credits since, with the provider's message.
    pub paused: Option<(Instant, String)>,
}

struct SchedulerState {
    ctx: Ctx,
    config: SchedulerConfig,
    shared: Arc<Shared>,
    queue: Vec<Waiting>,
    seq: u64,
    providers: HashMap<String, ProviderHealth>,
}

impl SchedulerState {
    fn free(&self) -> usize {
        self.config
            .slots
            .max(1)
            .saturating_sub(self.shared.book().held.len())
    }
}

impl Actor for SchedulerActor {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = (Ctx, SchedulerConfig, Arc<Shared>);

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        (ctx, config, shared): (Ctx, SchedulerConfig, Arc<Shared>),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        crate::fault::panic_point("scheduler_start", "*");
        // A restart: what the ledger says about the providers of the loops that asked before.
        let loops = shared.book().providers.clone();
        let providers = if loops.is_empty() {
            HashMap::new()
        } else {
            ctx.read(move |s| rebuild::provider_health(s, &loops, &config))
                .await?
        };
        let now = Instant::now();
        for health in providers.values() {
            if let Some(until) = health.backoff_until.filter(|u| *u > now) {
                myself.send_after(until - now, || SchedulerMsg::Wake);
            }
            if let Some((since, _)) = &health.paused {
                let probe = (*since + config.credit_probe_interval).saturating_duration_since(now);
                myself.send_after(probe, || SchedulerMsg::Wake);
            }
        }
        // From now on requests, releases and reports come here; those that went to the dead
        // incarnation are made again (requests) or counted from the book (releases).
        shared.current.send_replace(Some(myself));
        Ok(SchedulerState {
            ctx,
            config,
            shared,
            queue: Vec::new(),
            seq: 0,
            providers,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        // Reports first, whatever the message: no grant is made before the reports of the
        // slots given back are in.
        let reports = std::mem::take(&mut state.shared.book().reports);
        for (provider, report, slot) in reports {
            report_provider(&myself, state, &provider, report).await;
            if let Some(id) = slot {
                state.shared.book().held.remove(&id);
            }
        }
        match msg {
            SchedulerMsg::Acquire {
                loop_name,
                priority,
                provider,
                since,
                reply,
            } => {
                state.seq += 1;
                state.queue.push(Waiting {
                    loop_name,
                    priority,
                    provider,
                    since,
                    seq: state.seq,
                    reply,
                });
            }
            SchedulerMsg::Release | SchedulerMsg::Wake => {}
            SchedulerMsg::ResumeProvider(provider) => {
                state.providers.remove(&provider);
            }
        }
        dispatch(state);
        Ok(())
    }
}

async fn report_provider(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    provider: &str,
    report: ProviderReport,
) {
    let config = state.config;
    let health = state.providers.entry(provider.to_string()).or_default();
    let mut alert = None;
    match report {
        ProviderReport::Healthy => {
            health.errors_in_a_row = 0;
            health.backoff_until = None;
            health.paused = None;
        }
        ProviderReport::ApiError => {
            health.errors_in_a_row += 1;
            let wait = backoff(
                health.errors_in_a_row,
                config.backoff_min,
                config.backoff_max,
            );
            health.backoff_until = Some(Instant::now() + wait);
            myself.send_after(wait, || SchedulerMsg::Wake);
            if health.errors_in_a_row == config.alert_after {
                alert = Some(format!(
                    "provider `{provider}`: {} API errors in a row; backing off {}",
                    health.errors_in_a_row,
                    humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                ));
            }
        }
        ProviderReport::OutOfCredits(message) => {
            if health.paused.is_none() {
                alert = Some(format!(
                    "provider `{provider}` is out of credits; its loops are paused: {message}"
                ));
            }
            health.paused = Some((Instant::now(), message));
            myself.send_after(config.credit_probe_interval, || SchedulerMsg::Wake);
        }
    }
    if let Some(message) = alert {
        let event = Event::new(EventKind::Alert, "", message)
            .with_data(serde_json::json!({"provider": provider}));
        state.ctx.record_event(event).await;
    }
}

/// Exponential backoff with jitter, capped.
pub fn backoff(errors_in_a_row: u32, min: Duration, max: Duration) -> Duration {
    let exp = errors_in_a_row.saturating_sub(1).min(20);
    let base = min.saturating_mul(1u32 << exp).min(max);
    // Up to a quarter of the base, so loops of one provider do not come back in lockstep.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    base + jitter
}

/// Grants what can be granted: free slots to the best waiting request whose provider allows it;
/// tells the waiters of a paused provider so.
fn dispatch(state: &mut SchedulerState) {
    let now = Instant::now();
    let probe = state.config.credit_probe_interval;
    // A paused provider past its probe interval lets one attempt through as a probe.
    for health in state.providers.values_mut() {
        if let Some((since, _)) = &health.paused {
            if now.duration_since(*since) >= probe {
                health.paused = None;
            }
        }
    }
    let mut i = 0;
    while i < state.queue.len() {
        let paused = state
            .providers
            .get(&state.queue[i].provider)
            .and_then(|h| h.paused.as_ref().map(|(_, m)| m.clone()));
        if let Some(message) = paused {
            let w = state.queue.remove(i);
            let _ = w.reply.send(Grant::ProviderPaused { message });
            continue;
        }
        if state.queue[i].reply.is_closed() {
            state.queue.remove(i);
            continue;
        }
        i += 1;
    }
    while state.free() > 0 {
        let aging = state.config.aging.as_secs_f64().max(0.001);
        let best = state
            .queue
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                state
                    .providers
                    .get(&w.provider)
                    .and_then(|h| h.backoff_until)
                    .is_none_or(|until| until <= now)
            })
            .min_by(|(_, a), (_, b)| {
                let ea = f64::from(a.priority) - now.duration_since(a.since).as_secs_f64() / aging;
                let eb = f64::from(b.priority) - now.duration_since(b.since).as_secs_f64() / aging;
                ea.total_cmp(&eb).then(a.seq.cmp(&b.seq))
            })
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        crate::fault::panic_point("scheduler_grant", &state.queue[i].loop_name);
        let w = state.queue.remove(i);
        let id = state.shared.next_slot.fetch_add(1, Ordering::SeqCst);
        state.shared.book().held.insert(id, w.loop_name.clone());
        let slot = Slot {
            id,
            shared: state.shared.clone(),
            given_back: false,
        };
        if let Err(Grant::Slot(slot)) = w.reply.send(Grant::Slot(slot)) {
            // The loop gave up waiting: the slot goes straight back to the book.
            drop(slot);
        }
        tracing::debug!(loop_name = %w.loop_name, "slot granted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (tempfile::TempDir, Ctx) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let ctx = Ctx::new(store, dir.path());
        (dir, ctx)
    }

    #[tokio::test]
    async fn higher_priority_goes_first_and_aging_prevents_starvation() {
        let (_d, ctx) = ctx();
        let s = Scheduler::start(
            ctx,
            SchedulerConfig {
                slots: 1,
                aging: Duration::from_millis(200),
                ..SchedulerConfig::default()
            },
        )
        .await
        .unwrap();
        let first = s.acquire("a", 5, "p").await.unwrap();
        // Queue: low (priority 9) then high (priority 1); high wins.
        let s2 = s.clone();
        let low = tokio::spawn(async move { s2.acquire("low", 9, "p").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s3 = s.clone();
        let high = tokio::spawn(async move { s3.acquire("high", 1, "p").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let granted = high.await.unwrap().unwrap();
        assert!(!low.is_finished());
        // The low one has waited; after 8 aging periods it outranks a fresh priority-1 request.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let s4 = s.clone();
        let fresh = tokio::spawn(async move { s4.acquire("fresh", 1, "p").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(granted);
        assert!(matches!(low.await.unwrap(), Some(Grant::Slot(_))));
        assert!(!fresh.is_finished());
    }

    #[tokio::test]
    async fn an_api_error_backs_off_its_provider_only() {
        let (_d, ctx) = ctx();
        let s = Scheduler::start(
            ctx,
            SchedulerConfig {
                slots: 4,
                backoff_min: Duration::from_millis(400),
                ..SchedulerConfig::default()
            },
        )
        .await
        .unwrap();
        s.report("anthropic", ProviderReport::ApiError);
        let start = Instant::now();
        let other = s.acquire("b", 5, "command").await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(300));
        let backed_off = s.acquire("a", 5, "anthropic").await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(400));
        drop((other, backed_off));
    }

    #[tokio::test]
    async fn a_restarted_scheduler_keeps_held_slots_and_serves_the_waiters_again() {
        let (_d, ctx) = ctx();
        let config = SchedulerConfig {
            slots: 1,
            ..SchedulerConfig::default()
        };
        let s = Scheduler::new();
        let first = s.spawn(ctx.clone(), config, None).await.unwrap();
        let held = s.acquire("a", 5, "p").await.unwrap();
        let s2 = s.clone();
        let waiting = tokio::spawn(async move { s2.acquire("b", 5, "p").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The incarnation dies with b's request in its queue.
        first.kill();
        while first.get_status() != ractor::ActorStatus::Stopped {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.spawn(ctx.clone(), config, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // a still holds the only slot: b waits, asked again of the new incarnation.
        assert!(!waiting.is_finished());
        assert_eq!(s.held(), 1);
        drop(held);
        assert!(matches!(waiting.await.unwrap(), Some(Grant::Slot(_))));
        // Stopped for good: a request ends instead of waiting for an incarnation.
        s.stop();
        assert!(s.acquire("c", 5, "p").await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slot_given_back_out_of_credits_is_never_granted_to_the_same_provider() {
        let (_d, ctx) = ctx();
        let s = Scheduler::start(ctx, SchedulerConfig::default())
            .await
            .unwrap();
        for round in 0..50 {
            let Some(Grant::Slot(held)) = s.acquire("a", 5, "p").await else {
                panic!("round {round}: no slot for a");
            };
            let s2 = s.clone();
            let waiting = tokio::spawn(async move { s2.acquire("b", 5, "p").await });
            // Other traffic for the scheduler while the slot goes back: each message ends in a
            // dispatch that must not see the slot free before the report is in.
            let s3 = s.clone();
            let noise = tokio::spawn(async move {
                for _ in 0..20 {
                    s3.resume_provider("unrelated");
                    tokio::task::yield_now().await;
                }
            });
            tokio::task::yield_now().await;
            held.give_back("p", ProviderReport::OutOfCredits("balance too low".into()));
            let granted = waiting.await.unwrap();
            noise.await.unwrap();
            assert!(
                matches!(granted, Some(Grant::ProviderPaused { .. })),
                "round {round}: {granted:?}"
            );
            s.resume_provider("p");
        }
    }

    #[tokio::test]
    async fn out_of_credits_tells_the_providers_loops_until_resumed() {
        let (_d, ctx) = ctx();
        let s = Scheduler::start(ctx, SchedulerConfig::default())
            .await
            .unwrap();
        s.report(
            "anthropic",
            ProviderReport::OutOfCredits("balance too low".into()),
        );
        assert!(matches!(
            s.acquire("a", 5, "anthropic").await,
            Some(Grant::ProviderPaused { .. })
        ));
        assert!(matches!(
            s.acquire("b", 5, "command").await,
            Some(Grant::Slot(_))
        ));
        s.resume_provider("anthropic");
        assert!(matches!(
            s.acquire("a", 5, "anthropic").await,
            Some(Grant::Slot(_))
        ));
    }
}
