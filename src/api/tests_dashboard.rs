//! The dashboard through the router (`oneshot`) against a real fleet: signing in, the CSRF
//! rules of the session cookie, pages refused off loopback, and text an agent wrote shown as
//! text. An attacker's page can send a browser's cookie with a form or a `text/plain` fetch;
//! these tests send exactly what such a browser would, and check that nothing changed.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::auth::Token;
use super::tests::{fixture, Fixture, TOKEN};
use super::{router, AuthPolicy};

const HOST: &str = "127.0.0.1:7433";

fn app(f: &Fixture, everything: bool) -> Router {
    router(
        f.state.clone(),
        AuthPolicy {
            token: Token::new(TOKEN),
            everything,
        },
    )
}

/// The cookie a sign-in with the right token sets.
fn session() -> String {
    AuthPolicy {
        token: Token::new(TOKEN),
        everything: false,
    }
    .session_value()
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A request as a browser sends it: `Host`, and the headers given.
fn browser(method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

async fn hint_of(f: &Fixture) -> Value {
    f.get("/api/loops/main").await.1["hint"].clone()
}

fn quiet_fleet() -> (Value, &'static str) {
    (
        json!([{"id": "T1", "title": "T1", "spec": "s", "verify": "test -f T1.done"}]),
        "touch T1.done",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_sets_a_strict_http_only_cookie_that_is_not_the_token() {
    let (tests, agent) = quiet_fleet();
    let f = fixture(tests, agent).await;
    let app = app(&f, false);
    let form = [(
        header::CONTENT_TYPE.as_str(),
        "application/x-www-form-urlencoded",
    )];
    let a = send(
        &app,
        browser(Method::POST, "/login", &form, &format!("token={TOKEN}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text);
    assert_eq!(a.headers[header::LOCATION], "/");
    let cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(
        cookie,
        format!(
            "loopd_session={}; HttpOnly; SameSite=Strict; Path=/",
            session()
        )
    );
    assert!(!cookie.contains(TOKEN));
    // Signed in, the page says so and its buttons are live.
    let a = send(
        &app,
        browser(
            Method::GET,
            "/",
            &[("cookie", &format!("loopd_session={}", session()))],
            "",
        ),
    )
    .await;
    assert!(a.text.contains(r#"data-signed-in="true""#), "{}", a.text);
    // Signing out expires it.
    let a = send(&app, browser(Method::POST, "/logout", &[], "")).await;
    assert!(a.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    f.stop().await;
}

/// Captures what loopd logs while `f` runs on this thread.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_at_login_is_refused_and_not_logged() {
    let (tests, agent) = quiet_fleet();
    let f = fixture(tests, agent).await;
    let app = app(&f, false);
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let guess = "guessed-secret-8d1f";
    let a = {
        // The request is polled on this thread (not spawned), so this subscriber sees it.
        let _guard = tracing::subscriber::set_default(subscriber);
        send(
            &app,
            browser(
                Method::POST,
                "/login",
                &[(
                    header::CONTENT_TYPE.as_str(),
                    "application/x-www-form-urlencoded",
                )],
                &format!("token={guess}"),
            ),
        )
        .await
    };
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.headers.get(header::SET_COOKIE).is_none());
    assert!(a.text.contains("wrong token"), "{}", a.text);
    assert!(!a.text.contains(guess));
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("sign-in refused"), "{logged}");
    assert!(!logged.contains(guess), "{logged}");
    assert!(!logged.contains(TOKEN), "{logged}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cookie_changes_state_only_in_the_dashboards_own_json_requests() {
    let (tests, agent) = quiet_fleet();
    let f = fixture(tests, agent).await;
    let app = app(&f, false);
    let cookie = format!("loopd_session={}", session());
    let uri = "/api/loops/main/hints";
    let body = r#"{"text": "try the other library"}"#;
    /// What the request is, its headers, and the refusal expected.
    type Refused<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);
    let refused: Vec<Refused> = vec![
        // A cross-site form: the browser sends the cookie (were it not SameSite=Strict), a form
        // content type, and says where it comes from.
        (
            "a cross-site form",
            vec![
                ("cookie", &cookie),
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            StatusCode::FORBIDDEN,
        ),
        // The same form from an old browser that sends neither Origin nor Sec-Fetch-Site.
        (
            "a form without origin headers",
            vec![
                ("cookie", &cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            StatusCode::FORBIDDEN,
        ),
        // fetch() with text/plain needs no preflight; it cannot add the dashboard's header.
        (
            "a text/plain fetch",
            vec![("cookie", &cookie), ("content-type", "text/plain")],
            StatusCode::FORBIDDEN,
        ),
        (
            "JSON without the dashboard's header",
            vec![("cookie", &cookie), ("content-type", "application/json")],
            StatusCode::FORBIDDEN,
        ),
        (
            "the dashboard's request from another site",
            vec![
                ("cookie", &cookie),
                ("content-type", "application/json"),
                ("x-loopd-request", "dashboard"),
                ("sec-fetch-site", "same-site"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "the dashboard's request with a foreign Origin",
            vec![
                ("cookie", &cookie),
                ("content-type", "application/json"),
                ("x-loopd-request", "dashboard"),
                ("origin", "http://127.0.0.1:9999"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "a forged cookie",
            vec![
                ("cookie", "loopd_session=00ff"),
                ("content-type", "application/json"),
                ("x-loopd-request", "dashboard"),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "the token itself as the cookie",
            vec![
                ("cookie", "loopd_session=test-token"),
                ("content-type", "application/json"),
                ("x-loopd-request", "dashboard"),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no cookie, text/plain",
            vec![("content-type", "text/plain")],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, headers, status) in &refused {
        let a = send(&app, browser(Method::POST, uri, headers, body)).await;
        assert_eq!(a.status, *status, "{what}: {}", a.text);
        assert_eq!(hint_of(&f).await, Value::Null, "{what} changed something");
    }
    // What the dashboard's script sends.
    let a = send(
        &app,
        browser(
            Method::POST,
            uri,
            &[
                ("cookie", &cookie),
                ("content-type", "application/json; charset=utf-8"),
                ("x-loopd-request", "dashboard"),
                ("origin", &format!("http://{HOST}")),
                ("sec-fetch-site", "same-origin"),
            ],
            body,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(hint_of(&f).await["text"], "try the other library");
    // The bearer header works as before, whatever else the request says.
    let a = send(
        &app,
        browser(
            Method::DELETE,
            uri,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        ),
    )
    .await;
    assert!(a.status.is_success(), "{}", a.text);
    assert_eq!(hint_of(&f).await, Value::Null);
    // Signing in from another site is refused too.
    let a = send(
        &app,
        browser(
            Method::POST,
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-site", "cross-site"),
            ],
            &format!("token={TOKEN}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.headers.get(header::SET_COOKIE).is_none());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_pages_need_the_cookie_on_loopback_they_are_read_only() {
    let (tests, agent) = quiet_fleet();
    let f = fixture(tests, agent).await;
    let open = app(&f, true);
    for uri in [
        "/",
        "/loops/main",
        "/timeline",
        "/cost",
        "/insights",
        "/alerts",
    ] {
        let a = send(&open, browser(Method::GET, uri, &[], "")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(a.text.contains(r#"<form id="login""#), "{uri}: {}", a.text);
        assert!(
            !a.text.contains("data-loop=\"main\""),
            "{uri} leaked the fleet"
        );
    }
    // The API too, the sign-in form and its assets not.
    let a = send(&open, browser(Method::GET, "/api/loops", &[], "")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    for uri in [
        "/login",
        "/assets/app.js",
        "/assets/events.js",
        "/assets/app.css",
    ] {
        assert_eq!(
            send(&open, browser(Method::GET, uri, &[], "")).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
    let cookie = format!("loopd_session={}", session());
    for uri in ["/", "/api/loops"] {
        let a = send(&open, browser(Method::GET, uri, &[("cookie", &cookie)], "")).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
    }
    // The pages' event stream (its head is enough: it never ends).
    let events = |cookie: Option<&str>| {
        let mut headers = vec![];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        open.clone()
            .oneshot(browser(Method::GET, "/api/events", &headers, ""))
    };
    assert_eq!(
        events(Some(&cookie)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        events(None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // On loopback, anyone reads; the buttons are there, but off.
    let local = app(&f, false);
    let a = send(&local, browser(Method::GET, "/", &[], "")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text.contains(r#"data-signed-in="false""#));
    assert!(
        a.text
            .contains(r#"data-action="pause" data-loop="main" disabled"#),
        "{}",
        a.text
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn script_an_agent_wrote_is_shown_as_text_never_as_markup() {
    // The title comes from the tests file, the transcript and verify's output from the agent,
    // the hint from a person: none of them may become markup.
    let tests = json!([{
        "id": "T1",
        "title": "<script>alert('title')</script>",
        "spec": "s",
        "verify": "echo \"<script>alert('verify')</script>\"; test -f T1.done",
    }]);
    let agent = r#"echo "<script>alert('transcript')</script>"
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"<img src=x onerror=alert(1)>"}]}}'
if [ "$LOOPD_ATTEMPT" -gt 1 ]; then touch T1.done; fi"#;
    let f = fixture(tests, agent).await;
    f.wait_for("/api/loops/main", "the first attempt to end", |v| {
        v["tests"][0]["attempts"][0]["outcome"].is_string()
    })
    .await;
    let app = app(&f, false);
    let pages = [
        "/",
        "/loops/main",
        "/loops/main/tests/T1/attempts/1",
        "/timeline",
        "/cost",
        "/insights",
        "/alerts",
    ];
    let mut seen = String::new();
    for uri in pages {
        let a = send(&app, browser(Method::GET, uri, &[], "")).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text);
        let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{uri}: {csp}");
        // The shared worker that holds the tabs' one event stream may start.
        assert!(csp.contains("worker-src 'self'"), "{uri}: {csp}");
        // The only script element is the embedded one.
        assert_eq!(a.text.matches("<script").count(), 1, "{uri}: {}", a.text);
        assert!(!a.text.contains("<img"), "{uri}: {}", a.text);
        seen.push_str(&a.text);
    }
    // ... and the text is there, escaped: the title, the transcript (rendered: the assistant's
    // text of the stream-json line), verify's output.
    for shown in [
        "&lt;script&gt;alert('title')&lt;/script&gt;",
        "&lt;script&gt;alert('transcript')&lt;/script&gt;",
        "&lt;img src=x onerror=alert(1)&gt;",
        "&lt;script&gt;alert('verify')&lt;/script&gt;",
    ] {
        assert!(seen.contains(shown), "{shown} is not shown");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sends_running_transcripts_rendered_and_numbered() {
    let tests = json!([{"id": "T1", "title": "T1", "spec": "s", "verify": "test -f T1.done"}]);
    let agent = r#"echo 'plain line'
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"first\nsecond"},{"type":"tool_use","name":"Bash","input":{"command":"make"}}]}}'
while [ ! -f release ]; do sleep 0.05; done
touch T1.done"#;
    let f = fixture(tests, agent).await;
    f.wait_for("/api/loops/main", "the attempt to run", |v| {
        v["current_test"] == "T1"
    })
    .await;
    let resp = app(&f, false)
        .oneshot(browser(
            Method::GET,
            "/api/events?transcripts=true&render=true&loop=main",
            &[],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let wanted = r#""n":2"#;
    let read = async {
        while !text.contains(wanted) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.push_str(&String::from_utf8_lossy(data));
                    }
                }
                _ => break,
            }
        }
    };
    // Bounded only so that a broken stream fails instead of hanging.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), read).await;
    let transcripts: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("rendered").is_some())
        .collect();
    assert_eq!(transcripts.len(), 2, "{text}");
    assert_eq!(transcripts[0]["n"], 1);
    assert_eq!(transcripts[0]["rendered"], json!(["plain line"]));
    assert_eq!(transcripts[1]["n"], 2);
    // The renderer of `loopd logs`: the assistant's lines, one line per tool call.
    assert_eq!(
        transcripts[1]["rendered"],
        json!(["first", "second", "→ Bash make"])
    );
    assert!(transcripts[1].get("line").is_none());
    std::fs::write(f.workdir().join("release"), "").unwrap();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_view_pages_sorts_what_needs_a_person_first_filters_and_searches() {
    use loopd_actors::model::{LoopRecord, LoopState};
    use loopd_actors::store::Batch;
    let (tests, agent) = quiet_fleet();
    let f = fixture(tests, agent).await;
    // 250 more loops, as the store has them (a fleet that ran for a while): every tenth
    // crashed, every twenty-fifth paused out of credits.
    let loops: Vec<LoopRecord> = (0..250)
        .map(|i| {
            let mut r = LoopRecord::new(&format!("bulk-{i:03}"));
            if i % 10 == 3 {
                r.state = LoopState::Crashed;
                r.reason = Some(loopd_actors::model::LoopReason::RestartIntensity(
                    String::new(),
                ));
            } else if i % 25 == 7 {
                r.state = LoopState::Paused;
                r.reason = Some(loopd_actors::model::LoopReason::OutOfCredits);
            }
            r
        })
        .collect();
    f.state
        .ctx()
        .store()
        .write(Batch {
            loops,
            ..Batch::default()
        })
        .unwrap();
    let app = app(&f, false);
    let page = |uri: String| {
        let app = app.clone();
        async move {
            let a = send(&app, browser(Method::GET, &uri, &[], "")).await;
            assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text);
            a.text
        }
    };
    let rows = |html: &str| -> Vec<String> {
        html.split("<tr data-loop=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .collect()
    };
    let first = page("/".into()).await;
    let names = rows(&first);
    assert_eq!(names.len(), 100);
    // Out of credits (10 loops) before crashed (25), before the rest by name.
    assert_eq!(names[0], "bulk-007");
    assert_eq!(names[9], "bulk-232");
    assert_eq!(names[10], "bulk-003");
    assert!(
        first.contains(r#"<a rel="next" href="/?page=2">"#),
        "{first}"
    );
    let last = page("/?page=3".into()).await;
    assert_eq!(rows(&last).len(), 51);
    assert!(!last.contains(r#"rel="next""#));
    let crashed = rows(&page("/?state=crashed".into()).await);
    assert_eq!(crashed.len(), 25);
    assert!(crashed.iter().all(|n| n.ends_with('3')));
    let found = rows(&page("/?q=BULK-24".into()).await);
    // The crashed one first, also among what a search found.
    assert_eq!(found.len(), 10);
    assert_eq!(found[0], "bulk-243");
    assert!(found.iter().all(|n| n.starts_with("bulk-24")));
    // The rows an event names, alone.
    let some = page("/?rows=bulk-003,main".into()).await;
    assert_eq!(rows(&some), ["bulk-003", "main"]);
    assert!(some.starts_with("<tbody>"), "{some}");
    let a = send(&app, browser(Method::GET, "/?state=bogus", &[], "")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text.contains("attention"), "{}", a.text);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_carries_what_the_contract_names() {
    let tests = json!([
        {"id": "T1", "title": "one", "spec": "s", "verify": "test -f T1.done"},
        {"id": "T2", "title": "two", "spec": "s", "verify": "false", "depends_on": ["T1"]},
        {"id": "T3", "title": "three", "spec": "s", "verify": "test -f T3.done", "depends_on": ["T2"]},
    ]);
    let f = fixture(tests, "echo working on $LOOPD_TEST_ID; touch T1.done").await;
    f.wait_for("/api/loops/main", "T2 to fail for good", |v| {
        v["tests"][1]["status"] == "failed"
    })
    .await;
    let app = app(&f, false);
    let get = |uri: &'static str| {
        let app = app.clone();
        async move {
            let a = send(&app, browser(Method::GET, uri, &[], "")).await;
            assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text);
            a.text
        }
    };
    for uri in [
        "/",
        "/loops/main",
        "/loops/main/tests/T1/attempts/1",
        "/timeline",
        "/cost",
        "/insights",
        "/alerts",
        "/login",
    ] {
        let html = get(uri).await;
        for part in [
            "<nav>",
            r#"id="alerts-count""#,
            r#"<button id="notify""#,
            "data-live=",
            r#"data-signed-in="false""#,
        ] {
            assert!(html.contains(part), "{uri} has no {part}");
        }
    }
    let fleet = get("/").await;
    for part in [
        r#"<table id="fleet">"#,
        r#"<tr data-loop="main" data-state="#,
        r#"data-field="state""#,
        r#"data-field="test""#,
        r#"data-field="attempt""#,
        r#"data-field="heartbeat""#,
        r#"data-field="progress""#,
        r#"data-field="cost""#,
        r#"<select id="filter-state""#,
        r#"<input id="search""#,
        r#"data-action="pause" data-loop="main""#,
        r#"data-action="resume" data-loop="main""#,
        r#"data-action="stop" data-loop="main""#,
        r#"data-action="start" data-loop="main""#,
    ] {
        assert!(fleet.contains(part), "the fleet view has no {part}");
    }
    let lp = get("/loops/main").await;
    for part in [
        r#"<table id="tests">"#,
        r#"data-test="T1" data-status="passed""#,
        r#"data-test="T2" data-status="failed""#,
        r#"<svg id="graph""#,
        r#"<g class="node" data-test="T3" data-status="blocked">"#,
        // T2 holds T3 back; T1 passed and holds nothing.
        r#"class="edge blocked" data-edge="T2-&gt;T3""#,
        r#"class="edge" data-edge="T1-&gt;T2""#,
        r#"data-action="reset" data-loop="main" data-test="T2""#,
        r#"data-action="skip" data-loop="main" data-test="T2""#,
        r#"data-action="rollback" data-loop="main" data-test="T1""#,
        r#"<form id="hint">"#,
        r#"name="text""#,
        r#"<select id="hint-test" name="test""#,
        "Diagnoses",
        r#"<dl class="facts" id="config">"#,
    ] {
        assert!(lp.contains(part), "the loop view has no {part}");
    }
    let attempt = get("/loops/main/tests/T1/attempts/1").await;
    for part in [
        r#"<div id="transcript""#,
        r#"<div class="line" data-n="1">working on T1</div>"#,
        r#"id="verify""#,
        r#"id="diff""#,
        r#"id="fingerprint""#,
        r#"id="outcome" data-outcome="passed""#,
        // The pass's diff: what the agent added.
        "diff --git a/T1.done b/T1.done",
    ] {
        assert!(
            attempt.contains(part),
            "the attempt view has no {part}: {attempt}"
        );
    }
    let timeline = get("/timeline").await;
    assert!(
        timeline.contains(r#"data-test="T2" data-attempt="1" data-outcome="no_change""#),
        "{timeline}"
    );
    f.stop().await;
}
