//! What the dashboard keeps from the event journal, so that no page reads the journal or the
//! ledger of every loop: the alert events, every attempt of the last [`KEEP_ATTEMPTS`] as a
//! bar for the timeline and the burn rate, and each test's spend. It is filled once from the
//! journal (in the background, from the first page on), then from the live events; a lagging
//! subscriber catches up from the journal. Only events are read, each once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use loopd_actors::model::{Event, EventKind, Outcome};
use loopd_actors::runtime::Ctx;
use tokio::sync::broadcast;

/// Alerts remembered.
pub const KEEP_ALERTS: usize = 10_000;
/// How far back attempts are kept as bars.
pub const KEEP_ATTEMPTS: Duration = Duration::hours(48);
/// Journal events read per store call while filling.
const READ_PAGE: usize = 1000;

/// One attempt on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Its loop.
    pub loop_name: String,
    /// Its test.
    pub test: String,
    /// Its number.
    pub attempt: u32,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it ended; `None` while it runs.
    pub finished: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// The monitor ended its agent (stalled or over time).
    pub killed: Option<String>,
    /// What it cost.
    pub cost_usd: f64,
}

/// What one test cost, as far as the journal goes back.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TestSpend {
    /// Attempts that finished.
    pub attempts: u32,
    /// Their cost.
    pub cost_usd: f64,
}

/// The index.
#[derive(Debug)]
pub struct JournalIndex {
    inner: Mutex<Inner>,
    /// Set once the journal was read to its end.
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for JournalIndex {
    fn default() -> Self {
        JournalIndex {
            inner: Mutex::default(),
            ready: tokio::sync::watch::Sender::new(false),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    started: bool,
    /// Newest last.
    alerts: VecDeque<Event>,
    /// By start, oldest first.
    bars: VecDeque<Bar>,
    /// Loop and test to spend.
    spend: HashMap<(String, String), TestSpend>,
    /// The highest event id looked at.
    seen: u64,
}

impl JournalIndex {
    /// Starts filling the index, once.
    pub fn start(self: &Arc<Self>, ctx: &Ctx) {
        {
            let mut inner = self.lock();
            if inner.started {
                return;
            }
            inner.started = true;
        }
        // Subscribed before the journal is read: nothing falls between the two.
        let live = ctx.subscribe();
        tokio::spawn(fill(self.clone(), ctx.clone(), live));
    }

    /// Whether the journal was read to its end (before, figures are partial).
    pub fn ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits (at most `limit`) for the journal to be read to its end: a page rendered right
    /// after the daemon started shows the whole picture when it can.
    pub async fn settle(&self, limit: std::time::Duration) {
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(limit, ready.wait_for(|r| *r)).await;
    }

    /// The alerts of the last day (`#alerts-count`).
    pub fn recent_alerts(&self) -> usize {
        let since = Utc::now() - Duration::hours(24);
        self.lock()
            .alerts
            .iter()
            .rev()
            .take_while(|e| e.at >= since)
            .count()
    }

    /// One page of `per_page` alerts, newest first, and the number of pages.
    pub fn alerts(&self, page: usize, per_page: usize) -> (Vec<Event>, usize) {
        let inner = self.lock();
        let pages = inner.alerts.len().div_ceil(per_page).max(1);
        let out = inner
            .alerts
            .iter()
            .rev()
            .skip((page - 1) * per_page)
            .take(per_page)
            .cloned()
            .collect();
        (out, pages)
    }

    /// The attempts that started since `since` or still run, oldest first.
    pub fn bars_since(&self, since: DateTime<Utc>) -> Vec<Bar> {
        self.lock()
            .bars
            .iter()
            .filter(|b| b.started >= since || b.finished.is_none_or(|f| f >= since))
            .cloned()
            .collect()
    }

    /// Each test's spend, as far as the journal goes back.
    pub fn spend(&self) -> HashMap<(String, String), TestSpend> {
        self.lock().spend.clone()
    }

    fn add(&self, events: &[Event]) {
        let mut inner = self.lock();
        for e in events {
            if e.id <= inner.seen {
                continue;
            }
            inner.seen = e.id;
            inner.take(e);
        }
        let horizon = Utc::now() - KEEP_ATTEMPTS;
        while inner
            .bars
            .front()
            .is_some_and(|b| b.started < horizon && b.finished.is_some())
        {
            inner.bars.pop_front();
        }
    }

    fn seen(&self) -> u64 {
        self.lock().seen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn take(&mut self, e: &Event) {
        match e.kind {
            EventKind::Alert => {
                self.alerts.push_back(e.clone());
                if self.alerts.len() > KEEP_ALERTS {
                    self.alerts.pop_front();
                }
            }
            EventKind::AttemptStarted => {
                let (Some(test), Some(n)) = (&e.test_id, e.attempt) else {
                    return;
                };
                self.bars.push_back(Bar {
                    loop_name: e.loop_name.clone(),
                    test: test.clone(),
                    attempt: n,
                    started: e.at,
                    finished: None,
                    outcome: None,
                    killed: None,
                    cost_usd: 0.0,
                });
            }
            EventKind::AttemptFinished => {
                let (Some(test), Some(n)) = (&e.test_id, e.attempt) else {
                    return;
                };
                let outcome: Option<Outcome> =
                    serde_json::from_value(e.data["outcome"].clone()).ok();
                let cost = e.data["cost_usd"].as_f64().unwrap_or(0.0);
                let killed = e.data["killed"].as_str().map(String::from);
                let duration = e.data["duration_ms"]
                    .as_u64()
                    .map(|ms| Duration::milliseconds(ms as i64));
                let spend = self
                    .spend
                    .entry((e.loop_name.clone(), test.clone()))
                    .or_default();
                spend.attempts += 1;
                spend.cost_usd += cost;
                // The newest bar of that attempt (searched from the end: it is recent).
                let bar = self
                    .bars
                    .iter_mut()
                    .rev()
                    .find(|b| b.attempt == n && b.test == *test && b.loop_name == e.loop_name);
                match bar {
                    Some(b) => {
                        b.finished = Some(e.at);
                        b.outcome = outcome;
                        b.killed = killed;
                        b.cost_usd = cost;
                    }
                    // Its start is older than the journal (or was never journaled).
                    None => self.bars.push_back(Bar {
                        loop_name: e.loop_name.clone(),
                        test: test.clone(),
                        attempt: n,
                        started: duration.map_or(e.at, |d| e.at - d),
                        finished: Some(e.at),
                        outcome,
                        killed,
                        cost_usd: cost,
                    }),
                }
            }
            _ => {}
        }
    }
}

/// Reads the journal after what the index has seen; false when the store fails.
async fn catch_up(index: &JournalIndex, ctx: &Ctx) -> bool {
    loop {
        let after = index.seen();
        match ctx.read(move |s| s.events_after(after, READ_PAGE)).await {
            Ok(page) => {
                index.add(&page);
                if page.len() < READ_PAGE {
                    return true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: reading the event journal");
                return false;
            }
        }
    }
}

async fn fill(index: Arc<JournalIndex>, ctx: Ctx, mut live: broadcast::Receiver<Event>) {
    let ok = catch_up(&index, &ctx).await;
    index.ready.send_replace(true);
    if !ok {
        return;
    }
    loop {
        match live.recv().await {
            Ok(e) => index.add(std::slice::from_ref(&e)),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(&index, &ctx).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: u64, kind: EventKind, test: &str, n: u32, data: serde_json::Value) -> Event {
        let mut e = Event::new(kind, "l", "m")
            .about(test, Some(n))
            .with_data(data);
        e.id = id;
        e
    }

    #[test]
    fn attempts_become_bars_and_spend_and_alerts_are_kept_once() {
        let index = JournalIndex::default();
        let started = event(1, EventKind::AttemptStarted, "T", 1, json!({}));
        let finished = event(
            2,
            EventKind::AttemptFinished,
            "T",
            1,
            json!({"outcome": "stalled", "killed": "stalled", "cost_usd": 0.5}),
        );
        let alert = event(3, EventKind::Alert, "T", 1, json!({}));
        index.add(&[started.clone(), finished.clone(), alert.clone()]);
        // The same events again (from the journal and the live stream) count once.
        index.add(&[finished, alert]);
        let bars = index.bars_since(Utc::now() - Duration::hours(1));
        assert_eq!(bars.len(), 1);
        assert_eq!(bars[0].outcome, Some(Outcome::Stalled));
        assert_eq!(bars[0].killed.as_deref(), Some("stalled"));
        assert_eq!(
            index.spend()[&("l".to_string(), "T".to_string())],
            TestSpend {
                attempts: 1,
                cost_usd: 0.5
            }
        );
        assert_eq!(index.recent_alerts(), 1);
    }
}
