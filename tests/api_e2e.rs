//! End-to-end tests of the control plane: the real `loopd serve` (and `run`) on port 0, driven
//! by the CLI and by HTTP, with a scripted agent.

mod common;
mod serving;

use std::process::Stdio;
use std::time::Duration;

use common::{wait_until, Fleet, LOOP, WAIT};
use serde_json::{json, Value};
use serving::{http, token, Daemon};

fn spec(id: &str, deps: &[&str]) -> Value {
    json!({"id": id, "title": id, "spec": format!("make {id}"), "verify": format!("test -f {id}.done"), "depends_on": deps})
}

/// T1 waits for `go` in the fleet's folder; every test passes by creating `<TEST>.done`.
fn gated_fleet() -> Fleet {
    Fleet::new()
        .tests(json!([spec("T1", &[]), spec("T2", &["T1"])]))
        .agent(
            "if [ \"$LOOPD_TEST_ID\" = T1 ]; then while [ ! -f ../go ]; do sleep 0.05; done; fi\n\
             echo \"working on $LOOPD_TEST_ID\"\n\
             touch \"$LOOPD_TEST_ID.done\"",
        )
        .write()
}

fn test_of<'a>(lp: &'a Value, id: &str) -> &'a Value {
    lp["tests"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no test {id} in {lp:#}"))
}

fn wait_loop(fleet: &Fleet, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(what, WAIT, || {
        last = fleet.loop_status();
        cond(&last)
    });
    last
}

#[test]
fn serve_is_driven_by_the_cli_and_http_and_keeps_its_registry() {
    let fleet = gated_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    let mode = std::fs::metadata(fleet.state_dir().join("token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    // The lock: a second daemon and a run are refused and told who holds the state.
    for cmd in [
        &["serve", "loopd.toml", "--bind", "127.0.0.1:0"][..],
        &["run", "loopd.toml"],
    ] {
        let second = fleet.cmd(cmd);
        assert_eq!(second.code(), 2, "{second}");
        assert!(
            second.stderr.contains("in use by `loopd serve`"),
            "{second}"
        );
    }

    // 401, 403, 413 and a path-like name over a real socket.
    let client = http();
    let pause = daemon.url("/api/loops/main/pause");
    assert_eq!(client.post(&pause).send().unwrap().status(), 401);
    assert_eq!(
        client
            .post(&pause)
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status(),
        403
    );
    // An oversized body is refused from its Content-Length, before it is read (a client that
    // keeps sending may see the connection closed instead of the answer, so send only headers).
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&daemon.addr).unwrap();
        write!(
            tcp,
            "POST /api/loops HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n",
            token(&fleet)
        )
        .unwrap();
        let mut answer = [0u8; 64];
        let n = tcp.read(&mut answer).unwrap();
        let head = String::from_utf8_lossy(&answer[..n]);
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    }
    let resp = client
        .post(daemon.url("/api/loops"))
        .bearer_auth(token(&fleet))
        .json(&json!({"name": "../x", "tests_file": "tests.json", "agent": {"kind": "command", "command": ["true"]}}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().unwrap();
    assert_eq!(
        body["error"]["details"]["problems"][0]["pointer"], "/name",
        "{body}"
    );
    assert!(
        !daemon.log().contains(&token(&fleet)),
        "the token was logged"
    );

    // `logs -f` follows the transcripts live.
    let logs_out = fleet.root().join("logs.out");
    let mut logs = fleet
        .loopd(&["-c", "loopd.toml", "logs", "-f", LOOP])
        .stdout(std::fs::File::create(&logs_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // While T1 runs: inject T3 through the CLI, pause (T1 finishes, nothing new starts).
    wait_loop(&fleet, "T1 to run", |l| l["current_test"] == "T1");
    let added = fleet.cmd(&[
        "-c",
        "loopd.toml",
        "add-test",
        LOOP,
        &spec("T3", &["T1"]).to_string(),
    ]);
    assert_eq!(added.code(), 0, "{added}");
    let bad = fleet.cmd(&[
        "-c",
        "loopd.toml",
        "add-test",
        LOOP,
        r#"{"id": "T4", "title": "x", "verify": ""}"#,
    ]);
    assert_eq!(bad.code(), 2, "{bad}");
    assert!(bad.stderr.contains("/0/verify"), "{bad}");
    let paused = fleet.cmd(&["-c", "loopd.toml", "pause", LOOP]);
    assert_eq!(paused.code(), 0, "{paused}");
    std::fs::write(fleet.root().join("go"), "").unwrap();
    let lp = wait_loop(&fleet, "the paused loop to settle", |l| {
        l["status"] == "paused" && l.get("current_test").is_none()
    });
    assert_eq!(lp["attempts"], 1, "{lp:#}");
    assert_eq!(test_of(&lp, "T1")["status"], "passed");
    assert_eq!(test_of(&lp, "T3")["status"], "pending");

    // Skip T2, resume: T3 passes; reset T3: it runs again.
    assert_eq!(
        fleet.cmd(&["-c", "loopd.toml", "skip", LOOP, "T2"]).code(),
        0
    );
    assert_eq!(fleet.cmd(&["-c", "loopd.toml", "resume", LOOP]).code(), 0);
    wait_loop(&fleet, "T3 to pass", |l| {
        test_of(l, "T3")["status"] == "passed"
    });
    assert_eq!(test_of(&fleet.loop_status(), "T2")["status"], "skipped");
    assert_eq!(
        fleet.cmd(&["-c", "loopd.toml", "reset", LOOP, "T3"]).code(),
        0
    );
    wait_loop(&fleet, "T3 to pass again", |l| {
        let t = test_of(l, "T3");
        t["status"] == "passed" && t["attempts"].as_array().unwrap().len() == 2
    });
    let unknown = fleet.cmd(&["-c", "loopd.toml", "reset", LOOP, "NOPE"]);
    assert_eq!(unknown.code(), 2, "{unknown}");
    assert!(unknown.stderr.contains("test_not_found"), "{unknown}");

    wait_until("logs -f to show T3's output", WAIT, || {
        std::fs::read_to_string(&logs_out).is_ok_and(|t| t.contains("working on T3"))
    });
    let _ = logs.kill();
    let _ = logs.wait();

    // `status --json` (through the API) agrees with GET /api/loops/:id, and `ls --json` with
    // its summary view.
    let ls = fleet.cmd(&["-c", "loopd.toml", "ls", "--json"]).json();
    let get =
        |path: &str| -> Value { client.get(daemon.url(path)).send().unwrap().json().unwrap() };
    assert_eq!(ls["loops"][0], get("/api/loops/main?view=summary"));
    assert_eq!(fleet.status()["loops"][0], get("/api/loops/main"));

    // A loop created through the API survives a restart.
    std::fs::write(
        fleet.root().join("extra.json"),
        json!({"tests": [spec("E1", &[])]}).to_string(),
    )
    .unwrap();
    let resp = client
        .post(daemon.url("/api/loops?start=true"))
        .bearer_auth(token(&fleet))
        .json(
            &json!({"name": "extra", "init_workdir": true, "tests_file": "extra.json",
                      "agent": {"kind": "command", "command": [fleet.root().join("agent.sh")]}}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    wait_until("extra to pass E1", WAIT, || {
        let v: Value = client
            .get(daemon.url("/api/loops/extra"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["progress"]["passed"] == 1
    });
    let log = daemon.log();
    assert_eq!(daemon.terminate(), 0, "{log}");
    assert!(!fleet.state_dir().join("daemon.json").exists());

    let daemon = Daemon::start(&fleet, &[]);
    let resp = client.get(daemon.url("/api/loops/extra")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(test_of(&v, "E1")["status"], "passed");
    let lp = fleet.loop_status();
    assert_eq!(test_of(&lp, "T3")["status"], "passed");
    assert_eq!(test_of(&lp, "T2")["status"], "skipped");
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn run_serves_the_api_while_it_runs() {
    let fleet = gated_fleet();
    let mut run = fleet.spawn_run();
    let info = fleet.state_dir().join("daemon.json");
    wait_until("run to record its API address", WAIT, || {
        std::fs::read_to_string(&info).is_ok_and(|t| t.contains("\"addr\""))
    });
    // Client commands work during a run: through its API.
    let lp = wait_loop(&fleet, "T1 to run", |l| l["current_test"] == "T1");
    assert_eq!(lp["status"], "running");
    let attempts = fleet.cmd(&["-c", "loopd.toml", "attempts", LOOP, "--json"]);
    assert_eq!(attempts.code(), 0, "{attempts}");
    assert!(run.is_running());
    std::fs::write(fleet.root().join("go"), "").unwrap();
    let done = run.wait(Duration::from_secs(60));
    assert_eq!(done.code(), 0, "{done}");
    assert!(!info.exists());
}

#[test]
fn sse_over_a_socket_resumes_with_last_event_id() {
    let fleet = Fleet::new()
        .tests(json!([spec("T1", &[]), spec("T2", &["T1"])]))
        .agent("touch \"$LOOPD_TEST_ID.done\"")
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    wait_loop(&fleet, "the loop to finish", |l| l["status"] == "finished");
    let read = |last: Option<&str>, n: usize| -> Vec<String> {
        let mut req = http().get(daemon.url("/api/events?loop=main"));
        req = match last {
            Some(id) => req.header("Last-Event-ID", id),
            None => req.query(&[("after", "0")]),
        };
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 200);
        let mut ids = Vec::new();
        use std::io::BufRead;
        for line in std::io::BufReader::new(resp).lines() {
            if let Some(id) = line.unwrap().strip_prefix("id: ") {
                ids.push(id.to_string());
                if ids.len() == n {
                    break;
                }
            }
        }
        ids
    };
    let all = read(None, 6);
    let first = read(None, 3);
    assert_eq!(first, all[..3]);
    let rest = read(Some(&first[2]), 3);
    assert_eq!(rest, all[3..6]);
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn run_says_which_loops_a_person_holds_and_does_not_wait_for_them() {
    let fleet = gated_fleet();
    let daemon = Daemon::start(&fleet, &[]);
    wait_loop(&fleet, "T1 to run", |l| l["current_test"] == "T1");
    let paused = http()
        .post(daemon.url("/api/loops/main/pause?now=true"))
        .bearer_auth(token(&fleet))
        .send()
        .unwrap();
    assert!(paused.status().is_success(), "{}", paused.status());
    assert_eq!(daemon.terminate(), 0);

    // The pause survives; `run` says so and ends at once instead of waiting for a resume that
    // nobody was told to give: 3, a person is needed (T1 and T2 have not passed).
    let run = fleet.run();
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("loop `main` was paused by a person; it stays so (`loopd resume main`"),
        "{run}"
    );
    assert_eq!(fleet.loop_status()["status"], "paused");
}

/// A test that failed 120 times: the summary view (what `ls` prints) stays small, with the
/// counts and the last attempt only, and the attempts come a page at a time by number.
#[test]
fn a_long_history_is_summarised_and_its_attempts_come_in_pages() {
    const N: u64 = 120;
    // The agent writes its summary and fails the same way every time, as fast as it can.
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "T1", "spec": "x",
                        "verify": "echo 'error: expected 1, got 2'; false"}]))
        .agent("echo '{\"summary\": \"tried again\"}' > \"$LOOPD_RESULT_FILE\"")
        .set("max_attempts", &N.to_string())
        .set("checkpoints", "false")
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    let client = http();
    let get = |path: &str| client.get(daemon.url(path)).send().unwrap();
    let json = |path: &str| -> Value { get(path).json().unwrap() };
    wait_until(
        "T1 to use up its attempts",
        Duration::from_secs(300),
        || json("/api/loops/main?view=summary")["tests"][0]["status"] == "failed",
    );

    let full = get("/api/loops/main").text().unwrap();
    let summary_text = get("/api/loops/main?view=summary").text().unwrap();
    let summary: Value = serde_json::from_str(&summary_text).unwrap();
    let t = &summary["tests"][0];
    assert_eq!(t["attempts"], N, "{t:#}");
    assert_eq!(t["counted_attempts"], N);
    assert_eq!(t["last_attempt"]["number"], N);
    assert_eq!(summary["attempts"], N);
    // The diagnosis names the repeated failure by range, not by 120 numbers.
    assert_eq!(
        t["diagnosis"]["repeated"][0]["attempts"],
        json!([[1, N]]),
        "{t:#}"
    );
    // One attempt record and a diagnosis: a bound that does not grow with the history, where the
    // full view carries every attempt.
    assert!(
        summary_text.len() < 16 * 1024,
        "summary of {N} attempts: {} bytes",
        summary_text.len()
    );
    assert!(full.len() > 20 * summary_text.len() / 2, "{}", full.len());
    let page = json("/api/loops?view=summary");
    assert_eq!(page["loops"][0], summary);
    let ls = fleet.cmd(&["-c", "loopd.toml", "ls", "--json"]).json();
    assert_eq!(ls["loops"][0], summary);
    // `attempts` through the daemon reads the pages.
    let all = fleet
        .cmd(&["-c", "loopd.toml", "attempts", "main", "T1", "--json"])
        .json();
    assert_eq!(all["attempts"].as_array().unwrap().len() as u64, N);

    // Pages of 50 by number, each naming where the next one starts.
    let mut numbers = Vec::new();
    let mut path = "/api/loops/main/tests/T1/attempts?limit=50".to_string();
    let mut pages = 0;
    loop {
        let page = json(&path);
        pages += 1;
        let got = page["attempts"].as_array().unwrap();
        assert!(got.len() <= 50);
        numbers.extend(got.iter().map(|a| a["number"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/loops/main/tests/T1/attempts?limit=50&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(numbers, (1..=N).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    // The default page is 50.
    let first = json("/api/loops/main/tests/T1/attempts");
    assert_eq!(first["attempts"].as_array().unwrap().len(), 50);

    // Bad parameters are refused with a code and the parameter's name.
    for (path, parameter) in [
        ("/api/loops/main/tests/T1/attempts?limit=0", "limit"),
        ("/api/loops/main/tests/T1/attempts?limit=1001", "limit"),
        ("/api/loops/main/tests/T1/attempts?cursor=soon", "cursor"),
        ("/api/loops/main?view=tiny", "view"),
        ("/api/loops?view=tiny", "view"),
    ] {
        let resp = get(path);
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
        assert_eq!(body["error"]["details"]["parameter"], parameter, "{path}");
    }
    let resp = get("/api/loops/main/tests/NOPE/attempts");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().unwrap()["error"]["code"],
        "test_not_found"
    );
    let resp = get("/api/loops/nope/tests/T1/attempts");
    assert_eq!(
        resp.json::<Value>().unwrap()["error"]["code"],
        "loop_not_found"
    );
}
