//! sse_fanout (issue 12): how late `GET /api/events` delivers each event to 100 clients.
//!
//! Run: `cargo bench --bench sse_fanout` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_SSE_CLIENTS` (default 100), `LOOPD_BENCH_SSE_LOOPS` (default 10),
//! `LOOPD_BENCH_SSE_SECS` (default 10, each phase), `LOOPD_BENCH_SSE_RATE` (default 100 hints
//! a second), `LOOPD_BENCH_KEEP=1`.
//!
//! In a fresh temporary directory: `loopd serve` on 127.0.0.1 (port 0) with a fleet of
//! `loops` loops of one test each (agent `true`, verify `false`, checkpoints off, as many
//! agents at once as loops, attempts without end), started stopped. `clients` SSE clients
//! (tokio + reqwest, in this process, on 2 worker threads) connect to `/api/events` before the
//! clock starts; each reads the stream, parses every event's `data` and records, per event,
//! its delay: the client's receipt minus the event's `at` (both on this machine's clock). `at`
//! is stamped when loopd makes the event, before its journal write and flush, so the delay
//! covers the group commit (sled flush), the broadcast, the SSE encoding and the socket. Two
//! phases, `secs` each:
//! 1. **fleet**: every loop started; attempts start and end as fast as the fleet can run them
//!    (`attempt_started`, `attempt_finished`, `loop_state` events), the rate the fleet makes;
//! 2. **paced hints**: the loops stopped, one `POST /api/loops/:id/hints` every 1/`rate` s
//!    (each journals a `hint` event), the "100 events a second".
//!
//! Printed per phase: events journaled and their rate, deliveries (events x clients, each
//! checked: every client got every event of the phase, in id order), delay p50/p99/max, and the
//! daemon's CPU (utime + stime over the phase, in % of one core). The bench's clients share the
//! machine's 2 cores with the daemon and the fleet's agents.
//!
//! Aim (issue 12): p99 delivery delay < 100 ms with 100 clients.

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

type Daemon = Served;

fn loop_name(i: usize) -> String {
    format!("fan-{i:03}")
}

fn start_daemon(dir: &Path, loops: usize) -> Daemon {
    let mut toml = format!(
        "[fleet]\nstate_dir = \".loopd\"\nmax_concurrent_agents = {}\n",
        loops.max(1)
    );
    for i in 0..loops {
        toml.push_str(&format!(
            "\n[[loops]]\nname = \"{}\"\ntests_file = \"fan.tests.json\"\ninit_workdir = true\n\
             checkpoints = false\nmax_attempts = 1000000\n\
             agent = {{ kind = \"command\", command = [\"true\"] }}\n",
            loop_name(i)
        ));
    }
    fs::write(dir.join("loopd.toml"), toml).unwrap();
    write_tests(
        &dir.join("fan.tests.json"),
        &[("FAN-1".to_string(), "false".to_string())],
    );
    serve(dir)
}

/// One delivery: the event's journal id and its delay in ms.
type Got = (u64, f64);

/// What each client received, by client.
type Inbox = Arc<Vec<Mutex<Vec<Got>>>>;

/// Connects `clients` streams; returns once every one has its answer's headers (so it is
/// subscribed: the server subscribes before it answers).
async fn connect(addr: &str, clients: usize) -> (Inbox, Vec<tokio::task::JoinHandle<()>>) {
    let inbox: Inbox = Arc::new((0..clients).map(|_| Mutex::new(Vec::new())).collect());
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for c in 0..clients {
        let (http, inbox, url) = (
            http.clone(),
            inbox.clone(),
            format!("http://{addr}/api/events"),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tasks.push(tokio::spawn(async move {
            let resp = http.get(&url).send().await.expect("GET /api/events");
            assert!(resp.status().is_success(), "{}", resp.status());
            let _ = tx.send(());
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { return };
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let Some(data) = line.strip_prefix(b"data: ") else {
                        continue;
                    };
                    let received = chrono::Utc::now();
                    #[derive(serde::Deserialize)]
                    struct Head {
                        id: u64,
                        at: chrono::DateTime<chrono::Utc>,
                    }
                    let Ok(e) = serde_json::from_slice::<Head>(data) else {
                        continue;
                    };
                    let delay = (received - e.at).num_microseconds().unwrap_or(i64::MAX) as f64;
                    inbox[c].lock().unwrap().push((e.id, delay / 1e3));
                }
            }
        }));
    }
    for r in ready {
        r.await.expect("a client connected");
    }
    (inbox, tasks)
}

/// The deliveries received since the last call, by client (emptied).
fn take(inbox: &Inbox) -> Vec<Vec<Got>> {
    inbox
        .iter()
        .map(|m| std::mem::take(&mut *m.lock().unwrap()))
        .collect()
}

struct Phase {
    label: String,
    events: usize,
    secs: f64,
    delays: Vec<f64>,
    cpu: f64,
    complete: bool,
}

/// Sums up one phase: the events journaled in it are those the first client saw; every other
/// client must have seen the same ids, in order.
fn phase(label: &str, got: Vec<Vec<Got>>, secs: f64, cpu: f64) -> Phase {
    let ids: Vec<u64> = got[0].iter().map(|(id, _)| *id).collect();
    let in_order = ids.windows(2).all(|w| w[0] < w[1]);
    let complete = in_order
        && got
            .iter()
            .all(|c| c.iter().map(|(id, _)| *id).eq(ids.iter().copied()));
    Phase {
        label: label.to_string(),
        events: ids.len(),
        secs,
        delays: got.into_iter().flatten().map(|(_, d)| d).collect(),
        cpu,
        complete,
    }
}

async fn post(http: &reqwest::Client, d: &Daemon, path: &str, body: Option<serde_json::Value>) {
    let mut req = http
        .post(format!("http://{}{path}", d.addr))
        .bearer_auth(&d.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("POST");
    assert!(r.status().is_success(), "POST {path}: {}", r.status());
}

/// Waits until the clients have received everything sent so far (no new delivery for 500 ms).
async fn settle(inbox: &Inbox) {
    let count = || inbox.iter().map(|m| m.lock().unwrap().len()).sum::<usize>();
    let mut last = count();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = count();
        if now == last {
            return;
        }
        last = now;
    }
}

fn main() {
    let clients = env_usize("LOOPD_BENCH_SSE_CLIENTS", 100).max(1);
    let loops = env_usize("LOOPD_BENCH_SSE_LOOPS", 10).max(1);
    let secs = env_usize("LOOPD_BENCH_SSE_SECS", 10).max(1) as u64;
    let rate = env_usize("LOOPD_BENCH_SSE_RATE", 100).max(1);
    let _cleanup = header(
        "sse_fanout",
        &format!("{clients} SSE clients on /api/events; a fleet of {loops} loops, then {rate} hints/s; {secs} s each"),
    );
    let scratch = Scratch::new("sse");
    let daemon = start_daemon(scratch.path(), loops);
    let pid = daemon.child.id();
    let hz = clock_ticks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();

    // The fleet file's loops start on their own: stop them, then connect.
    rt.block_on(async {
        for i in 0..loops {
            post(
                &http,
                &daemon,
                &format!("/api/loops/{}/stop", loop_name(i)),
                None,
            )
            .await;
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let (inbox, tasks) = rt.block_on(connect(&daemon.addr, clients));
    rt.block_on(settle(&inbox));
    take(&inbox);

    // 1. The fleet runs.
    let c0 = cpu_ticks(pid);
    let t0 = Instant::now();
    rt.block_on(async {
        for i in 0..loops {
            post(
                &http,
                &daemon,
                &format!("/api/loops/{}/start", loop_name(i)),
                None,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        for i in 0..loops {
            post(
                &http,
                &daemon,
                &format!("/api/loops/{}/stop", loop_name(i)),
                None,
            )
            .await;
        }
    });
    let fleet_secs = t0.elapsed().as_secs_f64();
    let fleet_cpu = (cpu_ticks(pid) - c0) as f64 / hz / fleet_secs * 100.0;
    rt.block_on(settle(&inbox));
    let fleet = phase("fleet", take(&inbox), fleet_secs, fleet_cpu);

    // 2. Paced hints.
    let c0 = cpu_ticks(pid);
    let t0 = Instant::now();
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let n = rate * secs as usize;
        for k in 0..n {
            tick.tick().await;
            let body = serde_json::json!({"text": format!("hint {k}"), "author": "bench"});
            let path = format!("/api/loops/{}/hints", loop_name(k % loops));
            post(&http, &daemon, &path, Some(body)).await;
        }
    });
    let hint_secs = t0.elapsed().as_secs_f64();
    let hint_cpu = (cpu_ticks(pid) - c0) as f64 / hz / hint_secs * 100.0;
    rt.block_on(settle(&inbox));
    let hints = phase(
        &format!("paced hints ({rate}/s asked)"),
        take(&inbox),
        hint_secs,
        hint_cpu,
    );
    for t in tasks {
        t.abort();
    }
    drop(daemon);

    println!();
    println!(
        "| phase | events | event rate | deliveries | every client got every event, in order | p50 | p99 | max | daemon CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for p in [&fleet, &hints] {
        println!(
            "| {} | {} | {:.0}/s | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0}% of a core |",
            p.label,
            p.events,
            p.events as f64 / p.secs,
            p.delays.len(),
            if p.complete { "yes" } else { "NO" },
            percentile(&p.delays, 50.0),
            percentile(&p.delays, 99.0),
            percentile(&p.delays, 100.0),
            p.cpu
        );
    }
    println!();
    for p in [&fleet, &hints] {
        let p99 = percentile(&p.delays, 99.0);
        println!(
            "aim: p99 < 100 ms to {clients} clients ({}): {p99:.2} ms, {}",
            p.label,
            verdict(p99 < 100.0 && p.complete)
        );
    }
}
