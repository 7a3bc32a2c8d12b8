//! api_latency (issue 5): `GET /api/loops` latency under load, and the idle daemon's footprint.
//!
//! Run: `cargo bench --bench api_latency` (release build of loopd and of this bench).
//! Knobs: `LOOPD_BENCH_API_LOOPS` (default 1000), `LOOPD_BENCH_API_REQUESTS` (default 20000),
//! `LOOPD_BENCH_API_CLIENTS` (default 50), `LOOPD_BENCH_IDLE_SECS` (default 10),
//! `LOOPD_BENCH_KEEP=1`.
//!
//! In a fresh temporary directory: `loopd serve` on a fleet file with no loops, bound to
//! 127.0.0.1 on a free port (read from `<state_dir>/daemon.json`, `addr`; the bearer token from
//! `<state_dir>/token`). Then:
//! 1. baseline footprint with no loops: VmRSS (`/proc/<pid>/status`) and CPU over the idle
//!    window (utime + stime from `/proc/<pid>/stat`, in % of one core);
//! 2. registers the loops with `POST /api/loops?start=false` (8 at a time; command agent `true`,
//!    checkpoints off), so they are registered and idle, and measures the same footprint again;
//! 3. a bounded local load generator (tokio + reqwest, one connection pool, `clients`
//!    concurrent tasks, `requests` requests in all, every request timed from send to the whole
//!    body read) on `GET /api/loops?limit=100` (each answer checked: 100 loops), p50/p99/max
//!    and throughput, beside the same load on `GET /healthz` (the server's floor: HTTP, routing,
//!    no store), measured in the same run.
//!
//! Aims (issue 5): p99 < 10 ms for the 100-loop page with 1000 loops and 50 clients; resident
//! memory < 150 MB and idle CPU < 1% of a core with 1000 registered idle loops.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

type Daemon = Served;

fn start_daemon(dir: &Path) -> Daemon {
    fs::write(dir.join("loopd.toml"), "[fleet]\nstate_dir = \".loopd\"\n").unwrap();
    write_tests(
        &dir.join("idle.tests.json"),
        &[("IDLE-1".to_string(), "true".to_string())],
    );
    serve(dir)
}

fn rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (RSS in MB, idle CPU in % of one core over `secs`).
fn footprint(pid: u32, secs: u64) -> (f64, f64) {
    let hz = clock_ticks();
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let c1 = cpu_ticks(pid);
    let cpu = (c1 - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    (rss_kb(pid) as f64 / 1024.0, cpu)
}

async fn register(d: &Daemon, loops: usize) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, next) = (client.clone(), next.clone());
        let url = format!("http://{}/api/loops?start=false", d.addr);
        let token = d.token.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= loops {
                    return;
                }
                let body = serde_json::json!({
                    "name": format!("idle-{i:05}"),
                    "tests_file": "idle.tests.json",
                    "init_workdir": true,
                    "checkpoints": false,
                    "agent": {"kind": "command", "command": ["true"]},
                });
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("POST /api/loops");
                let status = r.status();
                assert!(
                    status.is_success(),
                    "POST /api/loops: {status}: {}",
                    r.text().await.unwrap_or_default()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

struct Load {
    latencies_ms: Vec<f64>,
    wall: Duration,
}

async fn load(d: &Daemon, path: &str, clients: usize, requests: usize, expect: usize) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let url = format!("http://{}{path}", d.addr);
    // Open the connections before the clock starts.
    let mut warm = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (client.clone(), url.clone(), d.token.clone());
        warm.push(tokio::spawn(async move {
            let _ = client.get(&url).bearer_auth(&token).send().await;
        }));
    }
    for w in warm {
        let _ = w.await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, token, next) =
            (client.clone(), url.clone(), d.token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < requests {
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("GET");
                assert!(r.status().is_success(), "GET {url}: {}", r.status());
                let body = r.bytes().await.expect("body");
                mine.push(t.elapsed().as_secs_f64() * 1e3);
                if expect > 0 && mine.len() == 1 {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["loops"].as_array().map(|a| a.len()), Some(expect));
                }
            }
            mine
        }));
    }
    let mut latencies_ms = Vec::with_capacity(requests);
    for t in tasks {
        latencies_ms.extend(t.await.unwrap());
    }
    Load {
        latencies_ms,
        wall: started.elapsed(),
    }
}

fn row(label: &str, l: &Load) {
    println!(
        "| {label} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} req/s |",
        l.latencies_ms.len(),
        percentile(&l.latencies_ms, 50.0),
        percentile(&l.latencies_ms, 99.0),
        percentile(&l.latencies_ms, 100.0),
        l.latencies_ms.len() as f64 / l.wall.as_secs_f64()
    );
}

fn main() {
    let loops = env_usize("LOOPD_BENCH_API_LOOPS", 1000);
    let requests = env_usize("LOOPD_BENCH_API_REQUESTS", 20_000);
    let clients = env_usize("LOOPD_BENCH_API_CLIENTS", 50).max(1);
    let idle_secs = env_usize("LOOPD_BENCH_IDLE_SECS", 10) as u64;
    let _cleanup = header(
        "api_latency",
        &format!("loopd serve with {loops} idle loops; {clients} clients, {requests} requests"),
    );
    let scratch = Scratch::new("api");
    let daemon = start_daemon(scratch.path());
    let pid = daemon.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    std::thread::sleep(Duration::from_secs(1));
    let (rss0, cpu0) = footprint(pid, idle_secs);
    let t = Instant::now();
    rt.block_on(register(&daemon, loops));
    let reg = t.elapsed();
    // Let the registrations settle (background flushes) before the idle window.
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, cpu1) = footprint(pid, idle_secs);

    let page = rt.block_on(load(
        &daemon,
        "/api/loops?limit=100",
        clients,
        requests,
        100.min(loops),
    ));
    let health = rt.block_on(load(&daemon, "/healthz", clients, requests, 0));
    let rss2 = rss_kb(pid) as f64 / 1024.0;
    drop(daemon);

    println!(
        "registered {loops} loops in {:.1} s ({:.1} ms per POST, 8 at a time)",
        reg.as_secs_f64(),
        reg.as_secs_f64() * 1e3 / loops.max(1) as f64
    );
    println!();
    println!("| request ({clients} clients) | requests | p50 | p99 | max | throughput |");
    println!("|---|---|---|---|---|---|");
    row(&format!("GET /api/loops?limit=100 ({loops} loops)"), &page);
    row("GET /healthz (baseline)", &health);
    println!();
    println!("| daemon footprint | VmRSS | idle CPU ({idle_secs} s) |");
    println!("|---|---|---|");
    println!("| no loops (baseline) | {rss0:.1} MB | {cpu0:.2}% of a core |");
    println!("| {loops} idle loops | {rss1:.1} MB | {cpu1:.2}% of a core |");
    println!("| {loops} idle loops, after the load | {rss2:.1} MB | |");
    println!();
    let p99 = percentile(&page.latencies_ms, 99.0);
    println!("aim: p99 < 10 ms: {p99:.2} ms, {}", verdict(p99 < 10.0));
    println!(
        "aim: < 150 MB resident with {loops} idle loops: {rss1:.1} MB, {}",
        verdict(rss1 < 150.0)
    );
    println!(
        "aim: < 1% of a core idle with {loops} idle loops: {cpu1:.2}%, {}",
        verdict(cpu1 < 1.0)
    );
}
