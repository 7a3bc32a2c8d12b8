//! Webhooks: signed deliveries that survive an endpoint that is down for a while, never hold a
//! loop back, and miss nothing when the notifier falls behind the event broadcast.

mod common;
mod serving;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{wait_until, Fleet, WAIT};
use hmac::{Hmac, Mac};
use loopd_actors::config::{WebhookConfig, WebhookEvent};
use loopd_actors::model::{Event, EventKind};
use loopd_actors::notifier::{webhook_event, DeliveryStatus, Notifier};
use loopd_actors::runtime::Ctx;
use loopd_actors::store::{Batch, Store};
use serde_json::{json, Value};
use serving::Daemon;

const SECRET: &str = "correct horse battery staple";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Accepted deliveries (2xx answered), in order: (event id, X-Loopd-Event, body).
    accepted: Vec<(u64, String, Value)>,
    /// Requests with a missing or wrong signature, or headers that disagree with the body.
    bad: Vec<String>,
}

/// A webhook receiver on 127.0.0.1:0 that answers 500 while `up` is false and checks every
/// signature.
#[derive(Clone)]
struct Receiver {
    up: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    fn new(up: bool) -> Receiver {
        Receiver {
            up: Arc::new(AtomicBool::new(up)),
            refused: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Seen::default())),
        }
    }

    /// Serves on the current tokio runtime; returns the URL.
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hook")
    }

    fn accepted_ids(&self) -> Vec<u64> {
        let seen = self.seen.lock().unwrap();
        seen.accepted.iter().map(|(id, _, _)| *id).collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let got = header("x-loopd-signature");
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = r.seen.lock().unwrap();
    if got != want {
        seen.bad.push(format!("bad signature {got:?} for {v}"));
        return StatusCode::UNAUTHORIZED;
    }
    if v["event"] != header("x-loopd-event")
        || !header("x-loopd-delivery").starts_with(&format!("{}-", v["id"]))
    {
        seen.bad
            .push(format!("headers disagree with {v}: {headers:?}"));
        return StatusCode::BAD_REQUEST;
    }
    if !r.up.load(Ordering::SeqCst) {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = v["id"].as_u64().unwrap();
    seen.accepted.push((id, header("x-loopd-event"), v));
    StatusCode::NO_CONTENT
}

/// A runtime on its own thread for the receiver of a blocking test.
fn receiver_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// T1 and T2 pass, T3 fails for good, T4 waits behind T3: every kind of test event and a loop
/// that finishes.
fn fleet_with_webhooks(url: &str, dead_url: &str) -> Fleet {
    let spec = |id: &str, verify: &str, deps: &[&str]| {
        json!({"id": id, "title": id, "spec": format!("make {id}"), "verify": verify,
               "depends_on": deps})
    };
    let fleet = Fleet::new()
        .tests(json!([
            spec("T1", "test -f T1.done", &[]),
            spec("T2", "test -f T2.done", &["T1"]),
            spec("T3", "false", &[]),
            spec("T4", "test -f T4.done", &["T3"]),
        ]))
        .agent(
            "echo \"working on $LOOPD_TEST_ID\"\nenv > \"$LOOPD_TEST_ID.env\"\n\
             touch \"$LOOPD_TEST_ID.done\"",
        )
        .write();
    let mut toml = std::fs::read_to_string(fleet.config_file()).unwrap();
    toml.push_str(&format!(
        "\n[[webhooks]]\nurl = \"{url}\"\nsecret_env = \"TEST_HOOK_SECRET\"\n\
         max_tries = 10000\nbackoff = \"20ms\"\nmax_backoff = \"100ms\"\ntimeout = \"2s\"\n\
         \n[[webhooks]]\nurl = \"{dead_url}\"\nsecret = \"other\"\nevents = [\"test_passed\"]\n\
         max_tries = 3\nbackoff = \"10ms\"\ntimeout = \"1s\"\n"
    ));
    std::fs::write(fleet.config_file(), toml).unwrap();
    fleet
}

/// A local URL where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/gone", l.local_addr().unwrap())
}

#[test]
fn deliveries_wait_out_a_down_endpoint_and_never_hold_a_loop_back() {
    let rt = receiver_runtime();
    let receiver = Receiver::new(false);
    let url = rt.block_on(receiver.serve());
    let dead = dead_url();
    let fleet = fleet_with_webhooks(&url, &dead);

    // The secret comes from the environment, so it is not in the file: the daemon refuses to
    // start without it (client commands, which send nothing, do not need it).
    let refused = fleet.cmd(&["serve", "loopd.toml", "--bind", "127.0.0.1:0"]);
    assert_eq!(refused.code(), 2, "{refused}");
    assert!(refused.stderr.contains("TEST_HOOK_SECRET"), "{refused}");

    let daemon = Daemon::start(
        &fleet,
        &[
            ("TEST_HOOK_SECRET", SECRET),
            ("LOOPD_TOKEN", "token-from-env"),
        ],
    );
    // The loop runs to its end while the endpoint refuses everything: nothing waits on it.
    let lp = {
        let mut last = Value::Null;
        wait_until(
            "the loop to finish while the endpoint is down",
            WAIT,
            || {
                last = fleet.loop_status();
                last["status"] == "finished"
            },
        );
        last
    };
    assert!(!receiver.up.load(Ordering::SeqCst));
    assert_eq!(lp["progress"]["passed"], 2, "{lp:#}");
    wait_until("the endpoint to be tried", WAIT, || {
        receiver.refused.load(Ordering::SeqCst) >= 3
    });
    assert!(receiver.accepted_ids().is_empty());

    // Up again: every event arrives, once.
    receiver.up.store(true, Ordering::SeqCst);
    wait_until("loop_finished to be delivered", WAIT, || {
        let seen = receiver.seen.lock().unwrap();
        seen.accepted.iter().any(|(_, e, _)| e == "loop_finished")
    });
    // Anything still queued behind it would have arrived by now (backoff is 100 ms at most).
    std::thread::sleep(Duration::from_millis(500));
    let log = daemon.log();
    assert_eq!(daemon.terminate(), 0, "{log}");
    assert!(!log.contains(SECRET), "the secret was logged");
    // Nor did an agent see loopd's secrets in its environment.
    let env = std::fs::read_to_string(fleet.workdir().join("T1.env")).unwrap();
    assert!(env.contains("LOOPD_TEST_ID=T1"), "{env}");
    assert!(!env.contains("TEST_HOOK_SECRET"), "{env}");
    assert!(!env.contains("LOOPD_TOKEN"), "{env}");

    // What the journal says should have been sent, against what arrived.
    let store = Store::open(&fleet.state_dir()).unwrap();
    let journal = store.events_after(0, 100_000).unwrap();
    let expected: BTreeMap<u64, WebhookEvent> = journal
        .iter()
        .filter_map(|e| webhook_event(e).map(|w| (e.id, w)))
        .collect();
    let seen = receiver.seen.lock().unwrap();
    assert!(seen.bad.is_empty(), "{:#?}", seen.bad);
    let got: Vec<u64> = seen.accepted.iter().map(|(id, _, _)| *id).collect();
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "a delivery arrived twice: {got:?}");
    assert_eq!(
        unique,
        expected.keys().copied().collect::<BTreeSet<_>>(),
        "accepted vs journal"
    );
    // In journal order (one endpoint is served in order) and with the right names and fields.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    for (id, name, body) in &seen.accepted {
        assert_eq!(name, expected[id].as_str());
        assert_eq!(body["loop"], "main");
        for key in ["at", "message", "data", "test", "attempt"] {
            assert!(body.get(key).is_some(), "{key} missing in {body}");
        }
    }
    let names: BTreeSet<&str> = seen.accepted.iter().map(|(_, n, _)| n.as_str()).collect();
    for want in [
        "attempt_finished",
        "test_passed",
        "test_failed",
        "test_blocked",
        "loop_finished",
    ] {
        assert!(names.contains(want), "no {want} in {names:?}");
    }

    // The delivery log: delivered after retries; the dead endpoint gave up after its 3 tries,
    // and only got the events it asked for.
    let log = store.deliveries_after(0, 100_000).unwrap();
    let first = expected.keys().next().unwrap();
    let d = store.get_delivery(*first, &url).unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert!(d.attempts >= 2, "{d:?}");
    assert!(d.delivered_at.is_some());
    for (id, name) in &expected {
        let d = store.get_delivery(*id, &url).unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered, "{d:?}");
        let to_dead = store.get_delivery(*id, &dead).unwrap();
        if *name == WebhookEvent::TestPassed {
            let to_dead = to_dead.expect("the dead endpoint's delivery is logged");
            assert_eq!(to_dead.status, DeliveryStatus::Failed, "{to_dead:?}");
            assert_eq!(to_dead.attempts, 3);
            assert!(to_dead.last_error.is_some());
        } else {
            assert!(to_dead.is_none(), "filtered out, yet {to_dead:?}");
        }
    }
    assert!(log.len() > expected.len());
}

#[test]
fn deliveries_left_at_a_stop_are_made_after_the_next_start() {
    let rt = receiver_runtime();
    let receiver = Receiver::new(false);
    let url = rt.block_on(receiver.serve());
    let fleet = fleet_with_webhooks(&url, &dead_url());
    let env = [("TEST_HOOK_SECRET", SECRET)];

    // The endpoint is down for the whole life of the first daemon.
    let daemon = Daemon::start(&fleet, &env);
    wait_until("the loop to finish", WAIT, || {
        fleet.loop_status()["status"] == "finished"
    });
    wait_until("the endpoint to be tried", WAIT, || {
        receiver.refused.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(daemon.terminate(), 0);
    assert!(receiver.accepted_ids().is_empty());

    // Up, and a new daemon: what the first one queued or was trying arrives, once, in order,
    // before what the new one adds.
    receiver.up.store(true, Ordering::SeqCst);
    let first_life = {
        let store = Store::open(&fleet.state_dir()).unwrap();
        store.last_event_id().unwrap()
    };
    let daemon = Daemon::start(&fleet, &env);
    wait_until("the first daemon's events to arrive", WAIT, || {
        receiver.accepted_ids().iter().any(|id| *id >= first_life)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.terminate(), 0);

    let store = Store::open(&fleet.state_dir()).unwrap();
    let expected: BTreeSet<u64> = store
        .events_after(0, 100_000)
        .unwrap()
        .iter()
        .filter(|e| webhook_event(e).is_some())
        .map(|e| e.id)
        .collect();
    let got = receiver.accepted_ids();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order or twice: {got:?}"
    );
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    for id in &expected {
        let d = store.get_delivery(*id, &url).unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered, "{d:?}");
    }
}

/// The reports the receiver accepted, in order.
fn reports(receiver: &Receiver) -> Vec<Value> {
    let seen = receiver.seen.lock().unwrap();
    seen.accepted
        .iter()
        .filter(|(_, e, _)| e == "report")
        .map(|(_, _, body)| body.clone())
        .collect()
}

#[test]
fn report_every_sends_the_report_signed_and_a_restart_neither_repeats_nor_skips_one() {
    let rt = receiver_runtime();
    let receiver = Receiver::new(true);
    let url = rt.block_on(receiver.serve());
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "T1", "spec": "make T1",
                       "verify": "test -f T1.done", "depends_on": []}]))
        .agent("touch \"$LOOPD_TEST_ID.done\"")
        .write();
    let toml = std::fs::read_to_string(fleet.config_file())
        .unwrap()
        .replacen("[fleet]\n", "[fleet]\nreport_every = \"2s\"\n", 1);
    std::fs::write(
        fleet.config_file(),
        format!(
            "{toml}\n[[webhooks]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
             events = [\"report\"]\nbackoff = \"20ms\"\n"
        ),
    )
    .unwrap();

    // First life: until a report says T1 passed.
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("a report with T1's pass", WAIT, || {
        reports(&receiver)
            .iter()
            .any(|r| r["data"]["totals"]["passed"] == 1)
    });
    assert_eq!(daemon.terminate(), 0);
    let first_life = reports(&receiver).len();

    // Second life: its first report starts where the first life's last one ended.
    let daemon = Daemon::start(&fleet, &[]);
    wait_until("a report of the second life", WAIT, || {
        reports(&receiver).len() > first_life
    });
    assert_eq!(daemon.terminate(), 0);

    let seen = receiver.seen.lock().unwrap();
    assert!(
        seen.bad.is_empty(),
        "every signature checks: {:#?}",
        seen.bad
    );
    drop(seen);
    let got = reports(&receiver);
    for r in &got {
        assert_eq!(r["event"], "report", "{r:#}");
        assert_eq!(r["loop"], "", "{r:#}");
        assert_eq!(r["data"]["loops"][0]["name"], "main", "{r:#}");
        assert_eq!(r["data"]["generated_at"], r["at"], "{r:#}");
    }
    // One chain of periods, each starting where the last ended: none sent twice, none skipped.
    for w in got.windows(2) {
        assert_eq!(
            w[1]["data"]["since"], w[0]["data"]["generated_at"],
            "{:#}\nthen\n{:#}",
            w[0], w[1]
        );
    }
    let passes: usize = got
        .iter()
        .map(|r| r["data"]["loops"][0]["passed"].as_array().unwrap().len())
        .sum();
    assert_eq!(passes, 1, "T1's pass is in exactly one report");

    // What the journal holds is what arrived.
    let store = Store::open(&fleet.state_dir()).unwrap();
    let journal: Vec<u64> = store
        .events_after(0, 100_000)
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::Report)
        .map(|e| e.id)
        .collect();
    let ids: Vec<u64> = got.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, journal);
}

fn hook(url: &str) -> WebhookConfig {
    let mut h = WebhookConfig::new(url, SECRET);
    h.backoff = Duration::from_millis(10);
    h.max_backoff = Duration::from_millis(50);
    h.max_tries = 1000;
    h
}

fn passed(n: usize) -> Batch {
    Batch {
        events: (0..n)
            .map(|i| {
                Event::new(EventKind::TestPassed, "l", format!("T{i} passed"))
                    .about(&format!("T{i}"), Some(1))
            })
            .collect(),
        ..Batch::default()
    }
}

/// On a current-thread runtime, one batch of more events than the broadcast holds overflows it
/// before the notifier runs: it must read what it missed from the journal.
#[tokio::test]
async fn a_notifier_that_falls_behind_reads_the_journal_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(Store::open(dir.path()).unwrap(), dir.path());
    // Events from before the start are not sent.
    ctx.record(passed(3)).await.unwrap();
    let receiver = Receiver::new(true);
    let url = receiver.serve().await;
    let mut h = hook(&url);
    h.queue = 10_000;
    let notifier = Notifier::start(&ctx, vec![h]).await.unwrap();
    let events = ctx.record(passed(5000)).await.unwrap();
    assert!(
        notifier.drain(Duration::from_secs(120)).await,
        "not drained"
    );
    let got = receiver.accepted_ids();
    let want: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>(),
        want.iter().copied().collect::<BTreeSet<_>>()
    );
    assert!(receiver.seen.lock().unwrap().bad.is_empty());
}

/// A full queue drops its oldest events (and logs them), never blocking whoever publishes.
#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(Store::open(dir.path()).unwrap(), dir.path());
    let receiver = Receiver::new(false);
    let url = receiver.serve().await;
    let mut h = hook(&url);
    h.queue = 3;
    let notifier = Notifier::start(&ctx, vec![h]).await.unwrap();
    let events = ctx.record(passed(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    receiver.up.store(true, Ordering::SeqCst);
    assert!(notifier.drain(Duration::from_secs(30)).await);
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    // The last three waited in the queue; the worker may have taken the first one before the
    // rest arrived (then it was in flight, not queued); everything else was dropped.
    let accepted = receiver.accepted_ids();
    assert!(accepted.ends_with(&ids[7..]), "{accepted:?}");
    assert!(
        accepted.len() == 3 || accepted == [ids[0], ids[7], ids[8], ids[9]],
        "{accepted:?}"
    );
    let dropped: Vec<u64> = ctx
        .store()
        .deliveries_after(0, 100)
        .unwrap()
        .into_iter()
        .filter(|d| d.status == DeliveryStatus::Dropped)
        .map(|d| d.event_id)
        .collect();
    let not_sent: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !accepted.contains(id))
        .collect();
    assert_eq!(dropped, not_sent);
}
