//! In-process router tests (`oneshot`) against a real fleet: a git workdir, a tests file and a
//! scripted bash agent in a temporary folder, the real supervisor and store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use loopd_actors::runtime::Ctx;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::auth::Token;
use super::openapi::OPERATIONS;
use super::{auth, router, ApiState, AuthPolicy};
use crate::cli::fleet_start;

pub(super) const TOKEN: &str = "test-token";

/// A running fleet of one loop, `main`, and the API over it.
pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ctx: Ctx,
    pub(super) state: ApiState,
    running: loopd_actors::launch::Running,
    _lock: loopd_actors::statedir::StateDirLock,
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// `agent` is the body of a bash script run in the workdir for each attempt.
pub(super) async fn fixture(tests: Value, agent: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    for args in [
        &["init", "-q"][..],
        &["config", "user.name", "t"],
        &["config", "user.email", "t@localhost"],
        &["config", "commit.gpgsign", "false"],
    ] {
        git(&work, args);
    }
    std::fs::write(work.join("README"), "x\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    std::fs::write(
        root.join("tests.json"),
        serde_json::to_string(&json!({ "tests": tests })).unwrap(),
    )
    .unwrap();
    let script = root.join("agent.sh");
    std::fs::write(&script, format!("#!/usr/bin/env bash\nset -eu\n{agent}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        root.join("loopd.toml"),
        "[fleet]\nstate_dir = \"state\"\n\n[[loops]]\nname = \"main\"\nworkdir = \"work\"\n\
         tests_file = \"tests.json\"\nmax_attempts = 1\nkill_grace = \"1s\"\n\
         [loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n",
    )
    .unwrap();
    let prepared = fleet_start::prepare(&root.join("loopd.toml"), "serve")
        .unwrap_or_else(|code| panic!("the fixture fleet is invalid ({code:?})"));
    let fleet_start::Prepared { fleet, lock, store } = prepared;
    let running = loopd_actors::launch::start(&fleet, store).await.unwrap();
    let ctx = running.ctx().clone();
    let state = ApiState::new(
        ctx.clone(),
        std::sync::Arc::new(running.handle().clone()),
        root.clone(),
        fleet.loops.clone(),
    );
    state.set_ready(true);
    Fixture {
        _dir: dir,
        root,
        ctx,
        state,
        running,
        _lock: lock,
    }
}

impl Fixture {
    fn app(&self) -> Router {
        router(
            self.state.clone(),
            AuthPolicy {
                token: Token::new(TOKEN),
                everything: false,
            },
        )
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, uri, body, Some(TOKEN)).await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let resp = self
            .app()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// The loop's git working tree.
    pub(super) fn workdir(&self) -> PathBuf {
        self.root.join("work")
    }

    pub(super) async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(Method::POST, uri, body).await
    }

    /// Polls `GET uri` until `cond` holds on the answer.
    pub(super) async fn wait_for(
        &self,
        uri: &str,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..400 {
            let (status, v) = self.get(uri).await;
            if status == StatusCode::OK && cond(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "timed out waiting for {what} at {uri}: {:?}",
            self.get(uri).await
        );
    }

    pub(super) async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

fn test(id: &str, deps: &[&str]) -> Value {
    json!({"id": id, "title": id, "spec": format!("make {id}"), "verify": format!("test -f {id}.done"), "depends_on": deps})
}

/// The agent that passes every test by creating `<TEST>.done`.
const PASSING: &str = "touch \"$LOOPD_TEST_ID.done\"";

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_openapi_and_every_documented_route_is_routed() {
    let f = fixture(json!([test("T1", &[])]), PASSING).await;
    assert_eq!(f.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(f.get("/readyz").await.0, StatusCode::OK);
    f.state.set_ready(false);
    let (status, body) = f.get("/readyz").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    f.state.set_ready(true);

    let (status, doc) = f.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["components"]["schemas"]["LoopView"].is_object(),
        "{doc}"
    );
    for op in OPERATIONS {
        assert!(
            doc["paths"][op.path][op.method].is_object(),
            "{} {} missing from the document",
            op.method,
            op.path
        );
        if op.path == "/api/events" {
            continue; // a stream that never ends; routed, tested below
        }
        let uri = op
            .path
            .replace("{id}", "nope")
            .replace("{test}", "T1")
            .replace("{attempt}", "T1:1");
        let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = f.call(method, &uri, None).await;
        assert!(
            !matches!(code(&body), "not_found" | "method_not_allowed"),
            "{} {uri} is documented but not routed: {status} {body}",
            op.method
        );
    }
    let (status, body) = f.get("/api/nothing").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = f.call(Method::PUT, "/api/loops", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_need_the_token_and_non_loopback_needs_it_for_everything() {
    let f = fixture(json!([test("T1", &[])]), PASSING).await;
    let (status, body) = f
        .raw(Method::POST, "/api/loops/main/pause", vec![], None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, body) = f
        .raw(Method::POST, "/api/loops/main/pause", vec![], Some("wrong"))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(!body.to_string().contains(TOKEN));
    // Reads on loopback need none.
    assert_eq!(
        f.raw(Method::GET, "/api/loops", vec![], None).await.0,
        StatusCode::OK
    );

    let open_to_all = router(
        f.state.clone(),
        AuthPolicy {
            token: Token::new(TOKEN),
            everything: true,
        },
    );
    let req = |t: Option<&str>| {
        let mut r = Request::builder().uri("/api/loops");
        if let Some(t) = t {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let status = |r: Request<Body>| {
        let app = open_to_all.clone();
        async move { app.oneshot(r).await.unwrap().status() }
    };
    assert_eq!(status(req(None)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(req(Some("nope"))).await, StatusCode::FORBIDDEN);
    assert_eq!(status(req(Some(TOKEN))).await, StatusCode::OK);
    assert_eq!(
        status(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap()
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_loops_tests_health_transcripts_and_metrics() {
    let f = fixture(json!([test("T1", &[]), test("T2", &["T1"])]), PASSING).await;
    let lp = f
        .wait_for("/api/loops/main", "main to finish", |v| {
            v["status"] == "finished"
        })
        .await;
    assert_eq!(lp["progress"]["passed"], 2);
    // GET /api/loops/:id is exactly an entry of `status --json`.
    let doc = f.ctx.read(loopd_actors::view::status).await.unwrap();
    assert_eq!(lp, serde_json::to_value(&doc.loops[0]).unwrap());

    let (status, tests) = f.get("/api/loops/main/tests").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tests["tests"][1]["id"], "T2");

    let (status, health) = f.get("/api/loops/main/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "finished");
    assert_eq!(health["last_outcome"], "passed");

    let (_, list) = f.get("/api/loops/main/transcripts").await;
    assert_eq!(list["transcripts"][0]["attempt"], "T1:1");
    assert_eq!(
        list["transcripts"][0]["url"],
        "/api/loops/main/transcripts/T1:1"
    );
    let (status, _) = f.get("/api/loops/main/transcripts/T1:1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = f.get("/api/loops/main/transcripts/T1:9").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "attempt_not_found")
    );
    let (status, body) = f.get("/api/loops/main/transcripts/T1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    let (status, metrics) = f.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    assert!(text.contains("loopd_loops{state=\"finished\"} 1"), "{text}");
    assert!(
        text.contains("loopd_tests{loop=\"main\",status=\"passed\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("loopd_attempts_total{loop=\"main\",outcome=\"passed\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE loopd_cost_usd_total counter"),
        "{text}"
    );

    for uri in [
        "/api/loops/nope",
        "/api/loops/nope/tests",
        "/api/loops/nope/health",
    ] {
        let (status, body) = f.get(uri).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "loop_not_found"),
            "{uri}"
        );
    }
    // `..%2Fx` reaches the handler as `../x`: refused before it touches a path.
    let (status, body) = f.get("/api/loops/..%2Fx").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_pages_and_removes_loops() {
    let f = fixture(json!([test("T1", &[])]), PASSING).await;
    std::fs::write(
        f.root.join("more.json"),
        json!({"tests": [test("M1", &[])]}).to_string(),
    )
    .unwrap();
    let body = |name: &str| {
        json!({"name": name, "init_workdir": true, "tests_file": "more.json",
               "agent": {"kind": "command", "command": [f.root.join("agent.sh")]}})
    };
    for name in ["b-loop", "c-loop"] {
        let (status, v) = f.post("/api/loops", Some(body(name))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert_eq!(v["name"], name);
    }
    let (status, v) = f.post("/api/loops", Some(body("b-loop"))).await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "conflict"));

    let (_, page) = f.get("/api/loops?limit=2").await;
    let names: Vec<&str> = page["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b-loop", "c-loop"]);
    assert_eq!(page["next_cursor"], "c-loop");
    let (_, page) = f.get("/api/loops?limit=2&cursor=c-loop").await;
    assert_eq!(page["loops"][0]["name"], "main");
    assert!(page.get("next_cursor").is_none(), "{page}");
    let (status, v) = f.get("/api/loops?limit=0").await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));

    // Created but not started (no `?start=true`): start it, it runs M1 to the end.
    let (status, _) = f.post("/api/loops/c-loop/start", None).await;
    assert_eq!(status, StatusCode::OK);
    // Finished, so that nothing changes between the two reads below.
    f.wait_for("/api/loops/c-loop", "c-loop to pass M1 and finish", |v| {
        v["progress"]["passed"] == 1 && v["status"] == "finished"
    })
    .await;
    // The page served c-loop's entry from its cache before the run; the run's writes replaced it.
    let (_, page) = f.get("/api/loops?limit=2").await;
    let (_, one) = f.get("/api/loops/c-loop").await;
    assert_eq!(page["loops"][1]["progress"]["passed"], 1, "{page}");
    assert_eq!(
        page["loops"][1], one,
        "a page entry is what GET /api/loops/:id says"
    );

    let (status, _) = f.call(Method::DELETE, "/api/loops/b-loop", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = f.get("/api/loops?limit=2").await;
    assert_eq!(page["loops"][0]["name"], "c-loop", "{page}");
    let (status, v) = f.get("/api/loops/b-loop").await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "loop_not_found")
    );
    let (status, v) = f.call(Method::DELETE, "/api/loops/b-loop", None).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "loop_not_found")
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_bad_bodies_with_every_problem_and_its_pointer() {
    let f = fixture(json!([test("T1", &[])]), PASSING).await;
    // The loop is registered at once; its tests are loaded when its actor boots.
    f.wait_for("/api/loops/main", "main to boot", |v| {
        v["tests"].as_array().is_some_and(|t| !t.is_empty())
    })
    .await;
    let (status, v) = f
        .raw(
            Method::POST,
            "/api/loops",
            b"{\"name\": ".to_vec(),
            Some(TOKEN),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let huge = vec![b' '; super::BODY_LIMIT + 10];
    let (status, v) = f.raw(Method::POST, "/api/loops", huge, Some(TOKEN)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    let (status, v) = f
        .post(
            "/api/loops",
            Some(
                json!({"name": "../x", "tests_file": "tests.json", "max_attempts": "three",
                        "agent": {"kind": "command", "command": ["true"]}}),
            ),
        )
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    let pointers: Vec<&str> = v["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/name"), "{v}");
    assert!(!std::path::Path::new(&f.root.join("workdirs/x")).exists());

    let (status, v) = f
        .post(
            "/api/loops",
            Some(
                json!({"name": "ok", "tests_file": "missing.json", "max_attempts": "three",
                        "agent": {"kind": "command", "command": ["true"]}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&str> = v["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/max_attempts"), "{v}");

    // Injected tests: every problem, pointers into the body as sent.
    let (status, v) = f
        .post(
            "/api/loops/main/tests",
            Some(json!({"tests": [
                {"id": "T1", "title": "dup", "spec": "x", "verify": "true"},
                {"id": "../x", "title": "bad", "spec": "x", "verify": " "},
                {"id": "N1", "title": "dangling", "spec": "x", "verify": "true", "depends_on": ["nope"]},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let problems = v["error"]["details"]["problems"].as_array().unwrap();
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| {
            (
                p["pointer"].as_str().unwrap(),
                p["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        got.iter()
            .any(|(p, m)| *p == "/tests/0/id" && m.contains("already in the loop")),
        "{got:?}"
    );
    assert!(got.iter().any(|(p, _)| *p == "/tests/1/id"), "{got:?}");
    assert!(got.iter().any(|(p, _)| *p == "/tests/1/verify"), "{got:?}");
    assert!(
        got.iter()
            .any(|(p, m)| *p == "/tests/2/depends_on/0" && m.contains("nope")),
        "{got:?}"
    );
    let (status, v) = f.post("/api/loops/main/tests", Some(json!([]))).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    let (status, v) = f
        .post("/api/loops/nope/tests", Some(json!([test("X", &[])])))
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "loop_not_found")
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn controls_loops_and_tests_idempotently() {
    // T1 waits for a file the test creates, so the loop is mid-attempt while it is driven.
    // (The agent runs in `work/`, so `../go` is in the fixture's folder.)
    let agent =
        "if [ \"$LOOPD_TEST_ID\" = T1 ]; then while [ ! -f ../go ]; do sleep 0.05; done; fi\n\
                 touch \"$LOOPD_TEST_ID.done\"";
    let f = fixture(json!([test("T1", &[]), test("T2", &["T1"])]), agent).await;
    f.wait_for("/api/loops/main", "T1 to run", |v| {
        v["current_test"] == "T1"
    })
    .await;

    // Inject a test that depends on T1, while T1 runs.
    let (status, v) = f
        .post("/api/loops/main/tests", Some(json!([test("T3", &["T1"])])))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["tests"][0]["id"], "T3");
    assert_eq!(v["tests"][0]["status"], "pending");

    // Pause (twice: the same answer), then let T1 finish: no new attempt starts.
    for _ in 0..2 {
        let (status, v) = f.post("/api/loops/main/pause", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    std::fs::write(f.root.join("go"), "").unwrap();
    f.wait_for("/api/loops/main", "the paused loop to settle", |v| {
        v["status"] == "paused" && v.get("current_test").is_none()
    })
    .await;
    let (_, v) = f.get("/api/loops/main").await;
    assert_eq!(v["reason"], "by_user");
    assert_eq!(v["attempts"], 1, "a paused loop started an attempt: {v}");

    // Skip T2; reset of an unknown test is a 404.
    let (status, v) = f.post("/api/loops/main/tests/T2/skip", None).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("skipped")),
        "{v}"
    );
    let (status, v) = f.post("/api/loops/main/tests/NOPE/reset", None).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "test_not_found")
    );
    let (status, v) = f.post("/api/loops/nope/pause", None).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "loop_not_found")
    );
    let (status, v) = f.post("/api/loops/main/pause?now=maybe", None).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));

    // Resume (twice): T3 runs and passes; T2 stays skipped.
    for _ in 0..2 {
        let (status, _) = f.post("/api/loops/main/resume", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let v = f
        .wait_for("/api/loops/main", "T3 to pass", |v| {
            v["progress"]["passed"] == 2
        })
        .await;
    let status_of = |id: &str| {
        v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["status"].clone())
    };
    assert_eq!(status_of("T2"), Some(json!("skipped")));
    assert_eq!(status_of("T3"), Some(json!("passed")));

    // Reset T3: it runs again.
    let (status, v) = f.post("/api/loops/main/tests/T3/reset", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    f.wait_for("/api/loops/main/tests", "T3 to pass again", |v| {
        v["tests"].as_array().unwrap().iter().any(|t| {
            t["id"] == "T3"
                && t["status"] == "passed"
                && t["attempts"].as_array().unwrap().len() == 2
        })
    })
    .await;
    f.stop().await;
}

/// Reads SSE frames from a response body until `want` events with ids have arrived.
async fn sse_ids(app: Router, uri: &str, last_event_id: Option<u64>, want: usize) -> Vec<u64> {
    let mut req = Request::builder().uri(uri);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.into_body().into_data_stream();
    let mut text = String::new();
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ids.len() < want {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("SSE events in time")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ")) {
                ids.push(id.parse().unwrap());
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_resumes_from_last_event_id_without_gaps_or_duplicates() {
    let f = fixture(
        json!([test("T1", &[]), test("T2", &["T1"]), test("T3", &["T2"])]),
        PASSING,
    )
    .await;
    f.wait_for("/api/loops/main", "main to finish", |v| {
        v["status"] == "finished"
    })
    .await;
    let journal: Vec<u64> = f
        .ctx
        .read(|s| s.events_after(0, 10_000))
        .await
        .unwrap()
        .iter()
        .filter(|e| e.loop_name == "main")
        .map(|e| e.id)
        .collect();
    assert!(journal.len() >= 8, "{journal:?}");
    let half = journal.len() / 2;
    // First connection: everything, then drop it after half.
    let first = sse_ids(f.app(), "/api/events?after=0&loop=main", None, half).await;
    assert_eq!(first, journal[..half]);
    // Reconnect with the last id seen; then inject a test so live events follow the replay.
    let app = f.app();
    let resumed = tokio::spawn(sse_ids(
        app,
        "/api/events?loop=main",
        Some(*first.last().unwrap()),
        journal.len() - half + 3,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = f
        .post("/api/loops/main/tests", Some(json!([test("T4", &["T3"])])))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let second = resumed.await.unwrap();
    assert_eq!(second[..journal.len() - half], journal[half..]);
    let mut all = first.clone();
    all.extend(&second);
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "duplicates in {all:?}");
    // Everything sent is exactly the journal, in order.
    let journal_now: Vec<u64> = f
        .ctx
        .read(|s| s.events_after(0, 10_000))
        .await
        .unwrap()
        .iter()
        .filter(|e| e.loop_name == "main")
        .map(|e| e.id)
        .collect();
    assert_eq!(all, journal_now[..all.len()]);
    // A bad Last-Event-ID is a 400.
    let resp = f
        .app()
        .oneshot(
            Request::builder()
                .uri("/api/events")
                .header("last-event-id", "x")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    f.stop().await;
}

#[test]
fn the_token_file_is_used_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var("LOOPD_TOKEN").is_ok() {
        return;
    }
    let t = auth::load_or_create(dir.path()).unwrap();
    assert_eq!(auth::client_token(Some(dir.path())), Some(t));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_loop_runs_tests_unblocked_by_another_loop() {
    // Passes only once `flag` exists next to the script.
    let agent = r#"if [ -f "$(dirname "$0")/flag" ]; then touch "$LOOPD_TEST_ID.done"; fi"#;
    let f = fixture(json!([test("T1", &[])]), agent).await;
    f.wait_for("/api/loops/main", "main:T1 to fail", |v| {
        v["tests"][0]["status"] == "failed"
    })
    .await;

    std::fs::write(
        f.root.join("dep.json"),
        json!({"tests": [test("D1", &["main:T1"])]}).to_string(),
    )
    .unwrap();
    let body = json!({"name": "dep", "init_workdir": true, "tests_file": "dep.json",
                      "agent": {"kind": "command", "command": [f.root.join("agent.sh")]}});
    let (status, v) = f.post("/api/loops?start=true", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // Nothing to run: D1 waits behind a test that failed for good, and the loop is done.
    f.wait_for("/api/loops/dep", "dep to finish with D1 blocked", |v| {
        v["status"] == "finished" && v["tests"][0]["status"] == "blocked"
    })
    .await;

    // A person fixes what made T1 fail and resets it; T1 passes, and the finished loop `dep`
    // notices on its own.
    std::fs::write(f.root.join("flag"), "").unwrap();
    let (status, v) = f.post("/api/loops/main/tests/T1/reset", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    f.wait_for("/api/loops/main", "main:T1 to pass", |v| {
        v["tests"][0]["status"] == "passed"
    })
    .await;
    f.wait_for("/api/loops/dep", "dep:D1 to pass and dep to finish", |v| {
        v["tests"][0]["status"] == "passed" && v["status"] == "finished"
    })
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn insights_export_detail_and_a_shutdown_that_needs_the_token() {
    let f = fixture(json!([test("T1", &[])]), PASSING).await;
    f.wait_for("/api/loops/main", "T1 to pass", |v| {
        v["tests"][0]["status"] == "passed"
    })
    .await;
    let (status, insights) = f.get("/api/insights").await;
    assert_eq!(status, StatusCode::OK, "{insights}");
    assert_eq!(insights, json!({"patterns": [], "lessons": []}));
    assert_eq!(
        f.get("/api/loops/main/insights?limit=3").await.0,
        StatusCode::OK
    );
    let (status, body) = f.get("/api/loops/nosuch/insights").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "loop_not_found")
    );
    assert_eq!(
        f.get("/api/insights?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, report) = f.get("/api/report?since=1h").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["loops"][0]["passed"][0]["id"], "T1", "{report}");
    let (status, body) = f.get("/api/report?since=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["parameter"], "since", "{body}");
    let (status, export) = f.get("/api/export").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        export["loops"][0]["tests"][0]["status"], "passed",
        "{export}"
    );
    let (_, detail) = f.get("/api/loops/main?view=detail").await;
    assert_eq!(
        detail["settings"]["agent"],
        f.root.join("agent.sh").to_str().unwrap()
    );
    assert_eq!(
        detail["tests"][0]["id"], "T1",
        "the full view, flattened: {detail}"
    );

    let (status, body) = f.raw(Method::POST, "/api/shutdown", Vec::new(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let asked = f.state.clone();
    let heard = tokio::spawn(async move { asked.shutdown_requested().await });
    let (status, body) = f.post("/api/shutdown", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "shutting_down");
    tokio::time::timeout(Duration::from_secs(5), heard)
        .await
        .expect("the shutdown is heard")
        .unwrap();
    f.stop().await;
}
