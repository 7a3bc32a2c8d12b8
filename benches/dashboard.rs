//! dashboard (issue 12): the fleet view in a real headless Chromium with 1,000 loops and a
//! journal of 100,000 events: time to first paint, bytes downloaded, and the daemon's CPU while
//! 10 dashboards are open and 100 events a second flow.
//!
//! Run: `cargo bench --bench dashboard` (release build of loopd and of this bench); needs
//! Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Knobs: `LOOPD_BENCH_DASH_LOOPS` (default 1,000), `LOOPD_BENCH_DASH_EVENTS` (journal, default
//! 100,000), `LOOPD_BENCH_DASH_LOADS` (page loads for the first paint, default 7),
//! `LOOPD_BENCH_DASH_PAGES` (dashboards open at once, default 10), `LOOPD_BENCH_DASH_RATE`
//! (events a second, default 100), `LOOPD_BENCH_DASH_SECS` (each CPU window, default 20),
//! `LOOPD_BENCH_KEEP=1`.
//!
//! What it does, in a fresh temporary directory:
//! - writes the journal through loopd's own store module before the daemon starts (batches of
//!   10,000 events spread over the loops and the last 24 hours: attempts started and finished,
//!   tests passed, now and then an alert), as a fleet that ran for a day leaves it;
//! - starts `loopd serve` on 127.0.0.1 (a free port) and registers the loops with
//!   `POST /api/loops?start=false` (8 at a time, command agent `true`); then pauses one loop in
//!   ten and stops one in twenty, so that the fleet view has something to sort;
//! - first paint: each of the loads is a new Chromium session (own profile, so a cold cache)
//!   that first opens `/healthz` (the browser's own start-up stays out), then `GET /`; it waits
//!   for the fleet table's rows and reads the Paint Timing API's `first-contentful-paint` and
//!   the Resource Timing entries: the document's and every resource's `transferSize` (headers
//!   included) and `encodedBodySize`, summed; then the same page once more in the same session
//!   (a warm cache); medians of the loads;
//! - CPU: utime + stime of the loopd process (`/proc/PID/stat`, its own threads, not its
//!   children) over a window, in % of one core, three times: with no dashboard open while the
//!   events flow (the baseline), with the dashboards open (each a Chromium of its own, on
//!   `/` and connected to the journal: ten browsers are ten event streams, the daemon's worst
//!   case, since the tabs of one browser share one) and the same flow, and with the
//!   dashboards open and no flow. The events are real: API actions that journal a
//!   `loop_state` event each (pause and stop, in turn, on a hundred of the idle loops), sent
//!   at the asked rate; the rate got is
//!   counted on an SSE subscription of the bench's own and printed. After the flow, every
//!   dashboard is checked to show the state the API gives for the loops the flow touched.
//!
//! Aims (issue 12): first paint under 1 s, under 500 KB transferred, the daemon under 10% of a
//! core with 10 dashboards and 100 events a second.

#[path = "../tests/browser/mod.rs"]
mod browser;
mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::{js_str, Browser, PAGE_WAIT};
use chrono::Utc;
use common::*;
use loopd_actors::model::{Event, EventKind};
use loopd_actors::store::{Batch, Store};

const BATCH: usize = 10_000;
/// The loops the event flow toggles (the first ones, past the paused and stopped ones).
const FLOW_LOOPS: usize = 100;

fn name(i: usize) -> String {
    format!("bench-{i:04}")
}

/// The journal a day of a fleet leaves: `events` events over `loops` loops.
fn write_journal(state_dir: &Path, loops: usize, events: usize) -> Duration {
    let t = Instant::now();
    let store = Store::open(state_dir).expect("a new store");
    let start = Utc::now() - chrono::Duration::hours(24);
    let step = chrono::Duration::milliseconds((24 * 3600 * 1000 / events.max(1)) as i64);
    let mut batch = Vec::with_capacity(BATCH);
    for k in 0..events {
        let lp = name(k % loops);
        // Per loop: attempt n started, finished, and every third one a pass; an alert now and
        // then.
        let round = k / loops;
        let n = (round / 2 + 1) as u32;
        let test = format!("T{}", n % 10 + 1);
        let mut e = match (round % 2, k % 997) {
            (_, 0) => Event::new(EventKind::Alert, &lp, format!("{lp} has stalled twice")),
            (0, _) => Event::new(
                EventKind::AttemptStarted,
                &lp,
                format!("attempt {n} of {test} started"),
            )
            .about(&test, Some(n)),
            _ if n.is_multiple_of(3) => {
                Event::new(EventKind::TestPassed, &lp, format!("{test} passed"))
                    .about(&test, Some(n))
            }
            _ => Event::new(
                EventKind::AttemptFinished,
                &lp,
                format!("attempt {n} of {test}: failed"),
            )
            .about(&test, Some(n))
            .with_data(serde_json::json!({"outcome": "failed"})),
        };
        e.at = start + step * k as i32;
        batch.push(e);
        if batch.len() == BATCH {
            store
                .write(Batch {
                    events: std::mem::take(&mut batch),
                    ..Batch::default()
                })
                .unwrap();
        }
    }
    store
        .apply(Batch {
            events: batch,
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    t.elapsed()
}

/// Where the daemon's API is and its token.
#[derive(Clone)]
struct Api {
    addr: String,
    token: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The `loopd serve` of the bench; SIGTERM when dropped.
struct Daemon {
    served: Served,
    api: Api,
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        self.api.url(path)
    }

    fn pid(&self) -> u32 {
        self.served.pid()
    }
}

fn start_daemon(dir: &Path) -> Daemon {
    fs::write(dir.join("loopd.toml"), "[fleet]\nstate_dir = \".loopd\"\n").unwrap();
    let tests: Vec<(String, String)> = (1..=10)
        .map(|i| (format!("T{i}"), "true".to_string()))
        .collect();
    write_tests(&dir.join("bench.tests.json"), &tests);
    let served = serve(dir);
    let api = Api {
        addr: served.addr.clone(),
        token: served.token.clone(),
    };
    Daemon { served, api }
}

/// `POST path` with the token; panics unless it succeeds.
async fn post(client: &reqwest::Client, api: &Api, path: &str, body: Option<serde_json::Value>) {
    let mut req = client.post(api.url(path)).bearer_auth(&api.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status();
    assert!(
        status.is_success(),
        "POST {path}: {status}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// Registers the loops (idle), then pauses one in ten and stops one in twenty.
async fn register(api: &Api, loops: usize) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, next, d) = (client.clone(), next.clone(), api.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= loops {
                    return;
                }
                let body = serde_json::json!({
                    "name": name(i),
                    "tests_file": "bench.tests.json",
                    "init_workdir": true,
                    "checkpoints": false,
                    "agent": {"kind": "command", "command": ["true"]},
                });
                post(&client, &d, "/api/loops?start=false", Some(body)).await;
                // Past the flow's loops, some wait for a person: paused, or stopped.
                if i >= FLOW_LOOPS && i % 10 == 0 {
                    post(&client, &d, &format!("/api/loops/{}/pause", name(i)), None).await;
                } else if i >= FLOW_LOOPS && i % 20 == 5 {
                    post(&client, &d, &format!("/api/loops/{}/stop", name(i)), None).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// One load of the fleet view.
struct Load {
    /// First contentful paint, from the navigation's start.
    fcp_ms: f64,
    /// The document's and every resource's transferSize, summed (headers included).
    transfer: f64,
    /// The same with encodedBodySize (bodies only, as sent).
    encoded: f64,
    /// The document's own encodedBodySize.
    document: f64,
    /// Resources fetched (the document not counted).
    resources: usize,
    /// Rows of the fleet table on the page.
    rows: usize,
}

fn load_fleet(browser: &Browser, d: &Daemon) -> Load {
    browser.goto(&d.url("/"));
    browser.wait_for("#fleet tr[data-loop]");
    let fcp = browser.wait_js(
        "the first contentful paint",
        PAGE_WAIT,
        "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime",
    );
    let v = browser.js(
        "const nav = performance.getEntriesByType('navigation')[0];
         const res = performance.getEntriesByType('resource');
         const sum = (k) => res.reduce((s, r) => s + (r[k] || 0), 0);
         return {transfer: nav.transferSize + sum('transferSize'),
                 encoded: nav.encodedBodySize + sum('encodedBodySize'),
                 document: nav.encodedBodySize, resources: res.length,
                 rows: document.querySelectorAll('#fleet tr[data-loop]').length};",
        vec![],
    );
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Load {
        fcp_ms: fcp.as_f64().unwrap_or(f64::NAN),
        transfer: f("transfer"),
        encoded: f("encoded"),
        document: f("document"),
        resources: v["resources"].as_u64().unwrap_or(0) as usize,
        rows: v["rows"].as_u64().unwrap_or(0) as usize,
    }
}

/// utime + stime of `pid`'s own threads over `window`, in % of one core.
fn cpu_over(pid: u32, window: Duration) -> f64 {
    let hz = clock_ticks();
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(window);
    let (c1, t1) = (cpu_ticks(pid), t0.elapsed());
    (c1 - c0) as f64 / hz / t1.as_secs_f64() * 100.0
}

/// Sends pause and stop, in turn, to the flow's loops at `rate` requests a second until `stop`
/// (a loop gets its next request a hundred requests later, long after the last one's answer).
async fn flow(d: Api, rate: usize, stop: Arc<AtomicBool>) -> usize {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let lp = name(sent % FLOW_LOOPS);
        let action = if (sent / FLOW_LOOPS).is_multiple_of(2) {
            "pause"
        } else {
            "stop"
        };
        // Each request on its own task: the pace must not wait for the daemon's answers.
        let (client, d, path) = (
            client.clone(),
            d.clone(),
            format!("/api/loops/{lp}/{action}"),
        );
        tokio::spawn(async move { post(&client, &d, &path, None).await });
        sent += 1;
    }
    sent
}

/// Counts the events of the journal stream from now on, until `stop`.
async fn count_events(d: Api, counted: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    use futures_util::StreamExt;
    let resp = reqwest::Client::new()
        .get(d.url("/api/events"))
        .bearer_auth(&d.token)
        .send()
        .await
        .expect("GET /api/events");
    let mut body = resp.bytes_stream();
    let mut tail = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(200), body.next()).await
        else {
            continue;
        };
        tail.extend_from_slice(&chunk);
        while let Some(end) = tail.iter().position(|&b| b == b'\n') {
            if tail.starts_with(b"id:") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            tail.drain(..=end);
        }
    }
}

/// CPU over `window` while the flow runs at `rate`; returns (CPU %, events a second got).
fn cpu_with_flow(
    rt: &tokio::runtime::Runtime,
    d: &Daemon,
    rate: usize,
    window: Duration,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicUsize::new(0));
    let counter = rt.spawn(count_events(d.api.clone(), counted.clone(), stop.clone()));
    let sender = rt.spawn(flow(d.api.clone(), rate, stop.clone()));
    // Let the flow reach its pace before the window opens.
    std::thread::sleep(Duration::from_secs(2));
    let seen0 = counted.load(Ordering::SeqCst);
    let t = Instant::now();
    let cpu = cpu_over(d.pid(), window);
    let got = (counted.load(Ordering::SeqCst) - seen0) as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        let _ = sender.await;
        let _ = counter.await;
    });
    (cpu, got)
}

/// Checks that every open dashboard shows, for the flow's loops on its page, the state the API
/// gives; returns how many rows were checked.
fn dashboards_agree(rt: &tokio::runtime::Runtime, browsers: &[Browser], d: &Daemon) -> usize {
    let client = reqwest::Client::new();
    let api: serde_json::Map<String, serde_json::Value> = rt.block_on(async {
        let mut out = serde_json::Map::new();
        for i in 0..FLOW_LOOPS {
            let v: serde_json::Value = client
                .get(d.url(&format!("/api/loops/{}?view=summary", name(i))))
                .bearer_auth(&d.api.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            out.insert(name(i), v["status"].clone());
        }
        out
    });
    let want = js_str(&serde_json::Value::Object(api).to_string());
    let mut checked = 0;
    for browser in browsers {
        // The rows of the flow's loops that are on the page, once none differs from the API.
        let rows = browser.wait_js(
            "every row of the flow's loops to show the API's state",
            PAGE_WAIT,
            &format!(
                "(() => {{ const want = JSON.parse({want}); let n = 0;
                   for (const tr of document.querySelectorAll('#fleet tr[data-loop]')) {{
                     const s = want[tr.dataset.loop];
                     if (s === undefined) continue;
                     if (tr.dataset.state !== s) return 0;
                     n++; }}
                   return n; }})()"
            ),
        );
        checked += rows.as_u64().unwrap_or(0) as usize;
    }
    checked
}

fn main() {
    let loops = env_usize("LOOPD_BENCH_DASH_LOOPS", 1000).max(FLOW_LOOPS + 1);
    let events = env_usize("LOOPD_BENCH_DASH_EVENTS", 100_000);
    let loads = env_usize("LOOPD_BENCH_DASH_LOADS", 7).max(1);
    let pages = env_usize("LOOPD_BENCH_DASH_PAGES", 10).max(1);
    let rate = env_usize("LOOPD_BENCH_DASH_RATE", 100).max(1);
    let window = Duration::from_secs(env_usize("LOOPD_BENCH_DASH_SECS", 20) as u64);
    let _cleanup = header(
        "dashboard",
        &format!(
            "the fleet view in headless Chromium: {loops} loops, a journal of {events} events"
        ),
    );
    let scratch = Scratch::new("dashboard");
    let dir = scratch.path();
    let built = write_journal(&dir.join(".loopd"), loops, events);
    let daemon = start_daemon(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    rt.block_on(register(&daemon.api, loops));
    println!(
        "   journal of {events} events written in {:.1} s; {loops} loops registered in {:.1} s",
        built.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    // Let the registrations settle (background flushes) before measuring.
    std::thread::sleep(Duration::from_secs(2));

    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..loads {
        let browser = Browser::start();
        browser.goto(&daemon.url("/healthz"));
        cold.push(load_fleet(&browser, &daemon));
        warm.push(load_fleet(&browser, &daemon));
    }
    let med =
        |v: &[Load], f: fn(&Load) -> f64| percentile(&v.iter().map(f).collect::<Vec<_>>(), 50.0);
    println!();
    println!("| fleet view, {loops} loops ({loads} loads) | first contentful paint, median (min to max) | transferred | bodies | document | resources | rows |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, v) in [
        ("cold cache (new profile)", &cold),
        ("warm cache (same session)", &warm),
    ] {
        let fcps: Vec<f64> = v.iter().map(|l| l.fcp_ms).collect();
        println!(
            "| {label} | {:.0} ms ({:.0} to {:.0}) | {:.1} KB | {:.1} KB | {:.1} KB | {} | {} |",
            percentile(&fcps, 50.0),
            percentile(&fcps, 0.0),
            percentile(&fcps, 100.0),
            med(v, |l| l.transfer) / 1000.0,
            med(v, |l| l.encoded) / 1000.0,
            med(v, |l| l.document) / 1000.0,
            v[0].resources,
            v[0].rows,
        );
    }

    // CPU: the flow without dashboards, then with them, then the dashboards alone.
    eprintln!("   CPU with the flow and no dashboard...");
    let (cpu_base, rate_base) = cpu_with_flow(&rt, &daemon, rate, window);
    eprintln!("   opening {pages} dashboards...");
    // One browser per dashboard, as for ten people: ten event streams (the tabs of one
    // browser would share one, through the dashboard's SharedWorker).
    let first = Browser::start();
    let mut browsers = Vec::new();
    for _ in 1..pages {
        browsers.push(first.start_beside());
    }
    browsers.push(first);
    for b in &browsers {
        b.goto(&daemon.url("/"));
        b.wait_for("#fleet tr[data-loop]");
        b.wait_attr("body", "data-live", "connected");
    }
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("   CPU with the flow and {pages} dashboards...");
    let (cpu_dash, rate_dash) = cpu_with_flow(&rt, &daemon, rate, window);
    eprintln!("   checking the dashboards against the API...");
    let checked = dashboards_agree(&rt, &browsers, &daemon);
    eprintln!("   CPU with {pages} dashboards and no flow...");
    let cpu_idle = cpu_over(daemon.pid(), window);
    drop(browsers);

    println!();
    println!("| daemon CPU ({} s windows, utime + stime of loopd) | events a second got | CPU, % of one core |", window.as_secs());
    println!("|---|---:|---:|");
    println!("| no dashboard, the flow (baseline) | {rate_base:.1} | {cpu_base:.2}% |");
    println!("| {pages} dashboards open, the flow | {rate_dash:.1} | {cpu_dash:.2}% |");
    println!("| {pages} dashboards open, no flow | 0 | {cpu_idle:.2}% |");
    println!("   after the flow, {checked} rows on the {pages} dashboards showed the state the API gives");
    println!();
    let fcp = percentile(&cold.iter().map(|l| l.fcp_ms).collect::<Vec<_>>(), 50.0);
    let kb = med(&cold, |l| l.transfer) / 1000.0;
    println!(
        "aim: first paint < 1 s: {fcp:.0} ms, {}",
        verdict(fcp < 1000.0)
    );
    println!(
        "aim: < 500 KB transferred (cold): {kb:.1} KB, {}",
        verdict(kb < 500.0)
    );
    println!(
        "aim: daemon < 10% of a core with {pages} dashboards and {rate} events/s ({rate_dash:.1} got): {cpu_dash:.2}%, {}",
        verdict(cpu_dash < 10.0)
    );
}
