//! The notifier: webhooks for what happens in the fleet, signed, retried, never in a loop's way.
//!
//! ```text
//! Ctx::subscribe() ──▶ dispatcher ──▶ queue ──▶ worker "https://a/..." ──▶ POST, retry, backoff
//!   (journal on lag)    (filter,    ├─▶ queue ──▶ worker "https://b/..."
//!                        dedupe)    (bounded, drop oldest)
//! ```
//! The dispatcher only maps, filters and pushes into in-memory queues, so it never waits on a
//! network: a slow or dead endpoint fills its own queue (oldest dropped first, and recorded) while
//! the loops, which only publish to the broadcast, never wait on the notifier at all. When the
//! dispatcher falls behind the broadcast (`Lagged`), it reads what it missed from the journal.
//! Each worker delivers its endpoint's events one at a time, in order, and records every try in
//! the store's delivery log.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{WebhookConfig, WebhookEvent};
pub use crate::model::{DeliveryRecord, DeliveryStatus};
use crate::model::{Event, EventKind};
use crate::runtime::Ctx;
use crate::store::Batch;

/// The signature header: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Loopd-Signature";
/// The event name header (`test_passed`, ...).
pub const EVENT_HEADER: &str = "X-Loopd-Event";
/// The delivery id header: the same on every try of one event to one endpoint.
pub const DELIVERY_HEADER: &str = "X-Loopd-Delivery";

/// Event ids the dispatcher remembers to drop duplicates (journal reads after a lag overlap
/// the broadcast).
const SEEN_WINDOW: usize = 8192;
/// Events read from the journal at once when catching up.
const CATCH_UP_PAGE: usize = 512;

/// The webhook name of a journal event, or `None` for events webhooks do not carry.
///
/// `LoopState` events carry the new state in `data.state` (older ones only in the message).
pub fn webhook_event(e: &Event) -> Option<WebhookEvent> {
    Some(match e.kind {
        EventKind::AttemptFinished => WebhookEvent::AttemptFinished,
        EventKind::TestPassed => WebhookEvent::TestPassed,
        EventKind::TestFailed => WebhookEvent::TestFailed,
        EventKind::TestBlocked => WebhookEvent::TestBlocked,
        EventKind::Alert => WebhookEvent::Alert,
        EventKind::Hint => WebhookEvent::Hint,
        EventKind::Report => WebhookEvent::Report,
        EventKind::LoopState => {
            let state = e.data["state"].as_str().unwrap_or(&e.message);
            match state {
                "paused" => WebhookEvent::LoopPaused,
                "crashed" => WebhookEvent::LoopCrashed,
                "finished" => WebhookEvent::LoopFinished,
                _ => return None,
            }
        }
        EventKind::AttemptStarted | EventKind::TestChanged | EventKind::Merge => return None,
    })
}

/// The JSON body of a delivery.
pub fn payload(e: &Event, name: WebhookEvent) -> Value {
    json!({
        "id": e.id,
        "event": name.as_str(),
        "at": e.at,
        "loop": e.loop_name,
        "test": e.test_id,
        "attempt": e.attempt,
        "message": e.message,
        "data": e.data,
    })
}

/// The `X-Loopd-Signature` value of `body`: `sha256=` and the hex HMAC-SHA256 under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait after `failed` tries (1 for the first): `backoff` doubled per further failure,
/// capped at `max_backoff`.
pub fn backoff_after(hook: &WebhookConfig, failed: u32) -> Duration {
    let doublings = failed.saturating_sub(1).min(30);
    hook.backoff
        .saturating_mul(1u32 << doublings)
        .min(hook.max_backoff)
}

/// The delivery id of event `event_id` to `url`: stable across tries and restarts, so a
/// receiver can drop a duplicate (a 2xx answer lost on the way back is tried again).
pub fn delivery_id(event_id: u64, url: &str) -> String {
    use sha2::Digest;
    let tag = sha2::Sha256::digest(url.as_bytes());
    format!("{event_id}-{}", hex::encode(&tag[..4]))
}

/// One event waiting for one endpoint.
struct Job {
    event: Event,
    name: WebhookEvent,
}

/// An endpoint's bounded queue.
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    wake: Notify,
    cap: usize,
}

/// One endpoint: its settings and queue.
struct Endpoint {
    hook: WebhookConfig,
    queue: Queue,
}

/// Events queued or being delivered, across endpoints (for [`Notifier::drain`]).
#[derive(Default)]
struct Pending(AtomicUsize);

/// The running notifier; dropping it stops its tasks.
pub struct Notifier {
    tasks: Vec<JoinHandle<()>>,
    pending: Arc<Pending>,
    /// The id of the newest event the dispatcher has looked at.
    dispatched: Arc<AtomicU64>,
    ctx: Ctx,
}

impl Notifier {
    /// Subscribes to `ctx`'s events and delivers them to `hooks` from now on; `None` when there
    /// is no webhook. Call it before the loops start so that no event is missed.
    pub async fn start(ctx: &Ctx, hooks: Vec<WebhookConfig>) -> Option<Notifier> {
        if hooks.is_empty() {
            return None;
        }
        // Subscribe before reading the journal's end: an event in between is seen twice at
        // worst, and duplicates are dropped by id.
        let rx = ctx.subscribe();
        let floor = ctx.read(|s| s.last_event_id()).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "notifier: cannot read the journal");
            0
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with default TLS settings builds");
        let pending = Arc::new(Pending::default());
        let endpoints: Vec<Arc<Endpoint>> = hooks
            .into_iter()
            .map(|hook| {
                Arc::new(Endpoint {
                    queue: Queue {
                        jobs: Mutex::new(VecDeque::new()),
                        wake: Notify::new(),
                        cap: hook.queue.max(1),
                    },
                    hook,
                })
            })
            .collect();
        // Deliveries a previous loopd queued or started and did not finish: first in line.
        let unfinished = ctx
            .read(
                |s| -> Result<Vec<(Event, DeliveryRecord)>, crate::store::StoreError> {
                    let mut found = Vec::new();
                    for d in s.deliveries_after(0, usize::MAX)? {
                        if d.status != DeliveryStatus::Pending {
                            continue;
                        }
                        if let Some(e) = s.events_after(d.event_id.saturating_sub(1), 1)?.pop() {
                            if e.id == d.event_id {
                                found.push((e, d));
                            }
                        }
                    }
                    Ok(found)
                },
            )
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "notifier: cannot read the delivery log");
                Vec::new()
            });
        for (event, d) in unfinished {
            if let Some(ep) = endpoints.iter().find(|ep| ep.hook.url == d.url) {
                pending.0.fetch_add(1, Ordering::SeqCst);
                ep.queue.jobs.lock().expect("queue lock").push_back(Job {
                    event,
                    name: d.event,
                });
            }
        }
        let mut tasks = Vec::new();
        for ep in &endpoints {
            tasks.push(tokio::spawn(worker(
                ctx.clone(),
                http.clone(),
                ep.clone(),
                pending.clone(),
            )));
        }
        let dispatched = Arc::new(AtomicU64::new(floor));
        let dispatcher = Dispatcher {
            ctx: ctx.clone(),
            endpoints,
            pending: pending.clone(),
            dispatched: dispatched.clone(),
            seen: BTreeSet::new(),
            floor,
        };
        tasks.push(tokio::spawn(dispatcher.run(rx)));
        Some(Notifier {
            tasks,
            pending,
            dispatched,
            ctx: ctx.clone(),
        })
    }

    /// Waits until every event recorded so far has been looked at and every queued one is
    /// delivered or given up, at most `within`; true when nothing is left.
    pub async fn drain(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let newest = self.ctx.read(|s| s.last_event_id()).await.unwrap_or(0);
        loop {
            if self.dispatched.load(Ordering::SeqCst) >= newest
                && self.pending.0.load(Ordering::SeqCst) == 0
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops delivering (what is queued stays `pending` in the log, for the next start).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the broadcast, maps and filters, pushes into the endpoints' queues.
struct Dispatcher {
    ctx: Ctx,
    endpoints: Vec<Arc<Endpoint>>,
    pending: Arc<Pending>,
    /// The id of the newest event looked at (for [`Notifier::drain`]).
    dispatched: Arc<AtomicU64>,
    /// Recent event ids, to drop duplicates.
    seen: BTreeSet<u64>,
    /// Every id at or below this counts as seen (the journal before the start, and ids that
    /// left the window).
    floor: u64,
}

impl Dispatcher {
    async fn run(mut self, mut rx: tokio::sync::broadcast::Receiver<Event>) {
        loop {
            match rx.recv().await {
                Ok(e) => self.offer(e),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "notifier fell behind the events; reading the journal"
                    );
                    self.catch_up().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Reads every event after the window's start from the journal; the seen ones are skipped.
    async fn catch_up(&mut self) {
        let mut after = self.floor;
        loop {
            let page = match self
                .ctx
                .read(move |s| s.events_after(after, CATCH_UP_PAGE))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "notifier: cannot read the journal");
                    return;
                }
            };
            let full = page.len() == CATCH_UP_PAGE;
            for e in page {
                after = e.id;
                self.offer(e);
            }
            if !full {
                return;
            }
        }
    }

    fn offer(&mut self, e: Event) {
        // Counted as looked at once it is queued (below), dropped or not wanted.
        let id = e.id;
        self.queue(e);
        self.dispatched.fetch_max(id, Ordering::SeqCst);
    }

    fn queue(&mut self, e: Event) {
        if e.id <= self.floor || !self.seen.insert(e.id) {
            return;
        }
        while self.seen.len() > SEEN_WINDOW {
            if let Some(oldest) = self.seen.pop_first() {
                self.floor = self.floor.max(oldest);
            }
        }
        let Some(name) = webhook_event(&e) else {
            return;
        };
        for ep in self.endpoints.iter().filter(|ep| ep.hook.wants(name)) {
            let dropped = {
                let mut jobs = ep.queue.jobs.lock().expect("queue lock");
                let dropped = if jobs.len() >= ep.queue.cap {
                    jobs.pop_front()
                } else {
                    self.pending.0.fetch_add(1, Ordering::SeqCst);
                    None
                };
                let job = Job {
                    event: e.clone(),
                    name,
                };
                // In the log from the moment it is queued, so that a loopd stopped before
                // delivering it delivers it on its next start. Handed to the journal without
                // waiting: the dispatcher does not wait on a flush, and the journal writes it
                // before the worker's later record of the same delivery.
                let queued = record_of(&job, &ep.hook.url, DeliveryStatus::Pending, 0);
                drop(self.ctx.enqueue(Batch {
                    deliveries: vec![queued],
                    ..Batch::default()
                }));
                jobs.push_back(job);
                dropped
            };
            ep.queue.wake.notify_one();
            if let Some(old) = dropped {
                tracing::warn!(url = %ep.hook.url, event_id = old.event.id,
                    "webhook queue full: dropped the oldest event");
                let record = record_of(&old, &ep.hook.url, DeliveryStatus::Dropped, 0);
                let ctx = self.ctx.clone();
                // Fire and forget: the dispatcher never waits on the store either.
                tokio::spawn(async move { log_delivery(&ctx, record).await });
            }
        }
    }
}

fn record_of(job: &Job, url: &str, status: DeliveryStatus, attempts: u32) -> DeliveryRecord {
    DeliveryRecord {
        event_id: job.event.id,
        event: job.name,
        loop_name: job.event.loop_name.clone(),
        url: url.to_string(),
        delivery_id: delivery_id(job.event.id, url),
        status,
        attempts,
        last_status: None,
        last_error: None,
        delivered_at: None,
        updated_at: Utc::now(),
    }
}

async fn log_delivery(ctx: &Ctx, record: DeliveryRecord) {
    let batch = Batch {
        deliveries: vec![record],
        ..Batch::default()
    };
    if let Err(e) = ctx.record(batch).await {
        tracing::error!(error = %e, "cannot record a webhook delivery");
    }
}

/// Delivers one endpoint's events, one at a time, in order.
async fn worker(ctx: Ctx, http: reqwest::Client, ep: Arc<Endpoint>, pending: Arc<Pending>) {
    loop {
        let job = loop {
            let next = ep.queue.jobs.lock().expect("queue lock").pop_front();
            match next {
                Some(job) => break job,
                None => ep.queue.wake.notified().await,
            }
        };
        deliver(&ctx, &http, &ep.hook, &job).await;
        pending.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tries one event until the endpoint takes it or the tries run out; logs every try.
async fn deliver(ctx: &Ctx, http: &reqwest::Client, hook: &WebhookConfig, job: &Job) {
    let body = serde_json::to_vec(&payload(&job.event, job.name)).expect("a Value serializes");
    let secret = hook.secret.as_ref().map(|s| s.expose()).unwrap_or_default();
    let signature = sign(secret.as_bytes(), &body);
    let mut record = record_of(job, &hook.url, DeliveryStatus::Pending, 0);
    let max_tries = hook.max_tries.max(1);
    for n in 1..=max_tries {
        let answer = http
            .post(&hook.url)
            .timeout(hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_HEADER, job.name.as_str())
            .header(DELIVERY_HEADER, &record.delivery_id)
            .body(body.clone())
            .send()
            .await;
        record.attempts = n;
        record.updated_at = Utc::now();
        match answer {
            Ok(resp) if resp.status().is_success() => {
                record.status = DeliveryStatus::Delivered;
                record.last_status = Some(resp.status().as_u16());
                record.last_error = None;
                record.delivered_at = Some(record.updated_at);
                log_delivery(ctx, record).await;
                return;
            }
            Ok(resp) => {
                record.last_status = Some(resp.status().as_u16());
                record.last_error = Some(format!("HTTP {}", resp.status()));
            }
            Err(e) => {
                record.last_status = None;
                // Without the URL: it may carry credentials in its query.
                record.last_error = Some(e.without_url().to_string());
            }
        }
        if n == max_tries {
            record.status = DeliveryStatus::Failed;
            tracing::warn!(url = %hook.url, event_id = job.event.id, tries = n,
                error = record.last_error.as_deref().unwrap_or(""),
                "webhook delivery given up");
            log_delivery(ctx, record).await;
            return;
        }
        log_delivery(ctx, record.clone()).await;
        tokio::time::sleep(backoff_after(hook, n)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn maps_event_kinds_and_loop_states_to_webhook_names() {
        let e = |kind, msg: &str, data: Value| Event::new(kind, "l", msg).with_data(data);
        let cases = [
            (
                e(EventKind::AttemptFinished, "x", Value::Null),
                Some(WebhookEvent::AttemptFinished),
            ),
            (
                e(EventKind::TestPassed, "x", Value::Null),
                Some(WebhookEvent::TestPassed),
            ),
            (
                e(EventKind::TestFailed, "x", Value::Null),
                Some(WebhookEvent::TestFailed),
            ),
            (
                e(EventKind::TestBlocked, "x", Value::Null),
                Some(WebhookEvent::TestBlocked),
            ),
            (
                e(EventKind::Alert, "x", Value::Null),
                Some(WebhookEvent::Alert),
            ),
            (
                e(EventKind::LoopState, "paused", json!({"state": "paused"})),
                Some(WebhookEvent::LoopPaused),
            ),
            (
                e(EventKind::LoopState, "crashed", Value::Null),
                Some(WebhookEvent::LoopCrashed),
            ),
            (
                e(EventKind::LoopState, "x", json!({"state": "finished"})),
                Some(WebhookEvent::LoopFinished),
            ),
            (
                e(EventKind::Hint, "x", Value::Null),
                Some(WebhookEvent::Hint),
            ),
            (
                e(EventKind::Report, "x", Value::Null),
                Some(WebhookEvent::Report),
            ),
            (e(EventKind::LoopState, "running", Value::Null), None),
            (e(EventKind::AttemptStarted, "x", Value::Null), None),
            (e(EventKind::TestChanged, "x", Value::Null), None),
        ];
        for (event, want) in cases {
            assert_eq!(webhook_event(&event), want, "{event:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut hook = WebhookConfig::new("http://x", "k");
        hook.backoff = Duration::from_millis(100);
        hook.max_backoff = Duration::from_millis(500);
        let waits: Vec<u128> = (1..=6)
            .map(|n| backoff_after(&hook, n).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
        assert_eq!(backoff_after(&hook, u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn the_payload_has_every_field() {
        let mut e = Event::new(EventKind::TestPassed, "auth", "T-1 passed")
            .about("T-1", Some(2))
            .with_data(json!({"cost_usd": 0.1}));
        e.id = 42;
        let p = payload(&e, WebhookEvent::TestPassed);
        assert_eq!(p["id"], 42);
        assert_eq!(p["event"], "test_passed");
        assert_eq!(p["loop"], "auth");
        assert_eq!(p["test"], "T-1");
        assert_eq!(p["attempt"], 2);
        assert_eq!(p["message"], "T-1 passed");
        assert_eq!(p["data"]["cost_usd"], 0.1);
        assert!(p["at"].is_string());
        assert_eq!(delivery_id(42, "http://a"), delivery_id(42, "http://a"));
        assert_ne!(delivery_id(42, "http://a"), delivery_id(42, "http://b"));
    }
}
