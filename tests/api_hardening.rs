//! The API against hostile clients, over raw TCP to the real `loopd serve`: a DNS-rebinding
//! page (a `Host` that is not loopback) is refused by an API bound to loopback, and a client
//! that sends half a header, never sends one, or idles after a request is disconnected.

mod common;
mod serving;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Fleet;
use serde_json::json;
use serving::Daemon;

/// Longer than the server's header-read timeout (10 s), so that a server without one is caught
/// here rather than hanging the test.
const PATIENCE: Duration = Duration::from_secs(45);

fn daemon() -> (Fleet, Daemon) {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "t", "spec": "s", "verify": "test -f T1.done"}]))
        .agent("echo transcript-line\ntouch T1.done")
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    (fleet, daemon)
}

fn connect(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(&daemon.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends one `GET path` with `host` and returns the whole answer (the connection is closed
/// after it).
fn get(daemon: &Daemon, path: &str, host: &str) -> String {
    let mut stream = connect(daemon);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Reads until the server closes the connection; panics when it does not within [`PATIENCE`].
fn read_until_closed(mut stream: TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        // A reset is a close too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("{what}: the server kept the connection open ({e})"),
    }
}

#[test]
fn a_loopback_api_answers_only_loopback_hosts() {
    let (_fleet, daemon) = daemon();
    let port = daemon.addr.rsplit(':').next().unwrap();
    for path in [
        "/api/loops",
        "/api/events",
        "/api/loops/main/transcripts",
        "/healthz",
    ] {
        for host in [
            "evil.example",
            &format!("evil.example:{port}"),
            "127.0.0.1.nip.io",
        ] {
            let answer = get(&daemon, path, host);
            assert!(
                answer.starts_with("HTTP/1.1 403"),
                "{path} {host}: {answer}"
            );
            assert!(answer.contains("\"host_not_allowed\""), "{answer}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ] {
        let answer = get(&daemon, "/api/loops", &host);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

#[test]
fn half_a_header_is_cut_off() {
    let (_fleet, daemon) = daemon();
    let mut stream = connect(&daemon);
    stream
        .write_all(b"GET /api/loops HTTP/1.1\r\nHost: local")
        .unwrap();
    let got = read_until_closed(stream, "half a header");
    // hyper answers 408 or just closes; no request was served either way.
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1 200"));
}

#[test]
fn a_silent_connection_and_an_idle_keep_alive_one_are_closed() {
    let (_fleet, daemon) = daemon();
    let silent = connect(&daemon);
    let mut idle = connect(&daemon);
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let answered = read_until_closed(idle, "an idle keep-alive connection");
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );
    read_until_closed(silent, "a connection that never sent a byte");
}
