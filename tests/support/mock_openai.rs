//! A mock of the OpenAI Responses API for driving the real Codex CLI offline.
//!
//! Start it with [`MockOpenAi::start`] and point Codex at it with a model provider in
//! `$CODEX_HOME/config.toml` (`base_url = <mock.base_url()>`, `wire_api = "responses"`,
//! `env_key` naming a variable that holds any key): the codex preset's `base_url` and
//! `api_key_env` write exactly that. It listens on 127.0.0.1 on a free port, on its own thread and
//! tokio runtime, so sync tests can use it; it stops when dropped. Every request is recorded
//! ([`MockOpenAi::requests`]) and, with `--nocapture`, printed.
//!
//! # Choosing a scenario
//! Each conversation (one Codex run; it sends a `session-id` header on every request) gets one
//! [`Scenario`]: the marker `LOOPD-MOCK-SCENARIO: <name>` anywhere in the request's input wins;
//! otherwise the next one of the script given to `start` (the last one repeats).
//!
//! # The wire, as Codex 0.171.0 uses it
//! Only `POST /v1/responses`, `stream: true`, with the conversation so far in `input` (a
//! `function_call_output` / `custom_tool_call_output` item for each tool call answered) and its
//! tools (`exec_command` taking `{"cmd": ...}`, the freeform `apply_patch`, ...). Answers are
//! SSE, sent in pieces as the real service sends them: `response.created`,
//! `response.output_item.added`, the item's deltas, `response.output_item.done`, and
//! `response.completed` with `usage` (`input_tokens` with `input_tokens_details.cached_tokens`,
//! `output_tokens` with `output_tokens_details.reasoning_tokens`). Errors are JSON bodies
//! `{"error": {"message", "type", "code"}}` with the HTTP status of the real service.
//! What Codex prints for each scenario is in `actors/src/agent/codex.rs` and recorded under
//! `tests/fixtures/codex/` (`LOOPD_RECORD_FIXTURES=1 cargo test --test codex -- --include-ignored`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// What the mock model does for one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `exec_command` writes [`TOOLS_FILE`], then `apply_patch` adds [`PATCH_FILE`], then a
    /// text answer.
    Tools,
    /// HTTP 429 `rate_limit_exceeded` (with `retry-after: 1`) on every request.
    RateLimited,
    /// HTTP 429 `rate_limit_exceeded` on the first request of the conversation, then as `Tools`.
    RateLimitedOnce,
    /// HTTP 500 `server_error` on every request.
    ServerError,
    /// HTTP 429 `insufficient_quota` on every request: the account has no credit left.
    Quota,
    /// HTTP 429 `usage_limit_reached`: a ChatGPT plan's limit, with the time it resets.
    UsageLimit,
    /// A stream that starts (`response.created`, one `output_item.added`) and then never sends
    /// another byte nor closes.
    Hang,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Tools,
        Scenario::RateLimited,
        Scenario::RateLimitedOnce,
        Scenario::ServerError,
        Scenario::Quota,
        Scenario::UsageLimit,
        Scenario::Hang,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Tools => "tools",
            Scenario::RateLimited => "rate_limited",
            Scenario::RateLimitedOnce => "rate_limited_once",
            Scenario::ServerError => "server_error",
            Scenario::Quota => "quota",
            Scenario::UsageLimit => "usage_limit",
            Scenario::Hang => "hang",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The marker that selects this scenario from inside a prompt.
    pub fn marker(self) -> String {
        format!("{MARKER}{}", self.name())
    }
}

/// Put `LOOPD-MOCK-SCENARIO: hang` (etc.) in a prompt to choose its scenario.
pub const MARKER: &str = "LOOPD-MOCK-SCENARIO: ";
/// The file the `exec_command` call of [`Scenario::Tools`] writes in the working directory.
pub const TOOLS_FILE: &str = "hello.txt";
/// Its content.
pub const TOOLS_CONTENT: &str = "hello from the mock model\n";
/// The command of that call.
pub const TOOLS_COMMAND: &str =
    "printf 'hello from the mock model\\n' > hello.txt && cat hello.txt";
/// The file the `apply_patch` call of [`Scenario::Tools`] adds.
pub const PATCH_FILE: &str = "notes.txt";
/// Its content.
pub const PATCH_CONTENT: &str = "written by apply_patch\n";
/// The final text of [`Scenario::Tools`].
pub const TOOLS_FINAL_TEXT: &str = "Done: wrote hello.txt and notes.txt.";
/// The usage of every completed response: 1200 input tokens (1000 of them cached), 42 output
/// tokens (7 of them reasoning).
pub const USAGE_INPUT: u64 = 1200;
pub const USAGE_CACHED: u64 = 1000;
pub const USAGE_OUTPUT: u64 = 42;
pub const QUOTA_MESSAGE: &str =
    "You exceeded your current quota, please check your plan and billing details.";

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub session: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub tools: Vec<String>,
    /// Tool outputs in the input: the calls of earlier responses that were answered.
    pub tool_outputs: usize,
    pub authorization: Option<String>,
    pub scenario: Option<Scenario>,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    script: Vec<Scenario>,
    next: usize,
    sessions: HashMap<String, Scenario>,
    requests: Vec<RecordedRequest>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct MockOpenAi {
    addr: SocketAddr,
    inner: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockOpenAi {
    /// Starts the mock with a script of scenarios, one per conversation (the last repeats).
    pub fn start(script: &[Scenario]) -> MockOpenAi {
        assert!(!script.is_empty(), "the mock needs at least one scenario");
        let inner: Shared = Arc::new(Mutex::new(Inner {
            script: script.to_vec(),
            ..Inner::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/v1/responses", post(responses))
            .fallback(fallback)
            .with_state(inner.clone());
        let thread = std::thread::Builder::new()
            .name("mock-openai".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let server = axum::serve(listener, app);
                    tokio::select! {
                        r = server => { if let Err(e) = r { eprintln!("mock-openai: {e}"); } }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime cancels the connections still open (the hung streams).
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn mock thread");
        MockOpenAi {
            addr,
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Starts the mock with one scenario for every conversation.
    pub fn with(scenario: Scenario) -> MockOpenAi {
        MockOpenAi::start(&[scenario])
    }

    /// `http://127.0.0.1:PORT/v1`, the value for a model provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests to `/v1/responses`.
    pub fn response_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/responses")
            .collect()
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn record(inner: &Shared, r: RecordedRequest) {
    eprintln!(
        "mock-openai: {} {} session={} scenario={} model={} stream={} tools={} tool_outputs={} -> {}",
        r.method,
        r.path,
        r.session.as_deref().unwrap_or("-"),
        r.scenario.map(|s| s.name()).unwrap_or("-"),
        r.model.as_deref().unwrap_or("-"),
        r.stream,
        r.tools.len(),
        r.tool_outputs,
        r.status
    );
    inner.lock().unwrap().requests.push(r);
}

fn json_response(
    status: StatusCode,
    body: Value,
    extra: &[(&'static str, &'static str)],
) -> Response {
    let mut resp = (
        status,
        [
            ("content-type", "application/json"),
            ("x-request-id", "req_mock"),
        ],
        body.to_string(),
    )
        .into_response();
    for (k, v) in extra {
        resp.headers_mut()
            .insert(*k, axum::http::HeaderValue::from_static(v));
    }
    resp
}

fn api_error(kind: &str, code: Option<&str>, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

async fn fallback(State(inner): State<Shared>, method: axum::http::Method, uri: Uri) -> Response {
    record(
        &inner,
        RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            session: None,
            model: None,
            stream: false,
            tools: Vec::new(),
            tool_outputs: 0,
            authorization: None,
            scenario: None,
            status: 404,
        },
    );
    json_response(
        StatusCode::NOT_FOUND,
        api_error(
            "invalid_request_error",
            None,
            "the mock does not serve this path",
        ),
        &[],
    )
}

/// Every string in a JSON value, depth first.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn marker_in(req: &Value) -> Option<Scenario> {
    let mut all = Vec::new();
    strings(&req["input"], &mut all);
    all.iter().find_map(|s| {
        let at = s.find(MARKER)?;
        let rest = &s[at + MARKER.len()..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        Scenario::from_name(&word)
    })
}

fn count_tool_outputs(req: &Value) -> usize {
    req["input"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|i| {
                matches!(
                    i["type"].as_str(),
                    Some("function_call_output" | "custom_tool_call_output")
                )
            })
            .count()
    })
}

fn sse(kind: &str, mut data: Value) -> Bytes {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    data["type"] = json!(kind);
    data["sequence_number"] = json!(SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn response_object(id: &str, model: &str, status: &str, output: Vec<Value>) -> Value {
    let mut r = json!({"id": id, "object": "response", "created_at": 1_796_000_000,
        "status": status, "model": model, "output": output});
    if status == "completed" {
        r["usage"] = json!({
            "input_tokens": USAGE_INPUT,
            "input_tokens_details": {"cached_tokens": USAGE_CACHED},
            "output_tokens": USAGE_OUTPUT,
            "output_tokens_details": {"reasoning_tokens": 7},
            "total_tokens": USAGE_INPUT + USAGE_OUTPUT,
        });
    }
    r
}

/// What one response holds.
enum Output {
    Text(String),
    /// A function call: name and its JSON arguments.
    Function(&'static str, Value),
    /// A freeform (custom) tool call: name and its input text.
    Custom(&'static str, String),
}

/// The SSE events of one whole response, in the order the real API sends them.
fn response_events(id: &str, model: &str, output: &Output) -> Vec<Bytes> {
    let mut out = vec![sse(
        "response.created",
        json!({"response": response_object(id, model, "in_progress", vec![])}),
    )];
    let item = match output {
        Output::Text(text) => {
            let part = json!({"type": "output_text", "text": text, "annotations": []});
            let item = json!({"id": "msg_1", "type": "message", "status": "completed",
                "role": "assistant", "content": [part]});
            out.push(sse(
                "response.output_item.added",
                json!({"output_index": 0,
                "item": {"id": "msg_1", "type": "message", "status": "in_progress",
                         "role": "assistant", "content": []}}),
            ));
            out.push(sse(
                "response.content_part.added",
                json!({"item_id": "msg_1",
                "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            // The text arrives in pieces, as from the real API.
            let mut cut = text.len() / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            for piece in [&text[..cut], &text[cut..]] {
                out.push(sse(
                    "response.output_text.delta",
                    json!({"item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": piece}),
                ));
            }
            out.push(sse(
                "response.output_text.done",
                json!({"item_id": "msg_1",
                "output_index": 0, "content_index": 0, "text": text}),
            ));
            out.push(sse(
                "response.content_part.done",
                json!({"item_id": "msg_1",
                "output_index": 0, "content_index": 0, "part": part}),
            ));
            item
        }
        Output::Function(name, args) => {
            let args = args.to_string();
            let item = json!({"id": "fc_1", "type": "function_call", "status": "completed",
                "call_id": format!("call_{id}"), "name": name, "arguments": args});
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            added["arguments"] = json!("");
            out.push(sse(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ));
            out.push(sse(
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_1", "output_index": 0, "delta": args}),
            ));
            out.push(sse(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_1", "output_index": 0, "arguments": args}),
            ));
            item
        }
        Output::Custom(name, input) => {
            let item = json!({"id": "ctc_1", "type": "custom_tool_call", "status": "completed",
                "call_id": format!("call_{id}"), "name": name, "input": input});
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            added["input"] = json!("");
            out.push(sse(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ));
            out.push(sse(
                "response.custom_tool_call_input.delta",
                json!({"item_id": "ctc_1", "output_index": 0, "delta": input}),
            ));
            out.push(sse(
                "response.custom_tool_call_input.done",
                json!({"item_id": "ctc_1", "output_index": 0, "input": input}),
            ));
            item
        }
    };
    out.push(sse(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    ));
    out.push(sse(
        "response.completed",
        json!({"response": response_object(id, model, "completed", vec![item])}),
    ));
    out
}

fn sse_response(events: Vec<Bytes>, hang: bool) -> Response {
    use futures_util::StreamExt;
    let events = futures_util::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
    let body = if hang {
        Body::from_stream(events.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(events)
    };
    (
        StatusCode::OK,
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("x-request-id", "req_mock"),
        ],
        body,
    )
        .into_response()
}

async fn responses(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let session = headers
        .get("session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let tool_outputs = count_tool_outputs(&req);
    let (scenario, nth) = {
        let mut g = inner.lock().unwrap();
        let key = session.clone().unwrap_or_default();
        let chosen = match g.sessions.get(&key) {
            Some(s) => *s,
            None => {
                let s = marker_in(&req).unwrap_or_else(|| {
                    let i = g.next.min(g.script.len() - 1);
                    g.next += 1;
                    g.script[i]
                });
                g.sessions.insert(key.clone(), s);
                s
            }
        };
        let nth = g
            .requests
            .iter()
            .filter(|r| r.session.as_deref().unwrap_or_default() == key)
            .count();
        (chosen, nth)
    };
    let status = match scenario {
        Scenario::RateLimited | Scenario::Quota | Scenario::UsageLimit => 429,
        Scenario::RateLimitedOnce if nth == 0 => 429,
        Scenario::ServerError => 500,
        _ => 200,
    };
    let model = req["model"].as_str().unwrap_or("gpt-mock").to_string();
    record(
        &inner,
        RecordedRequest {
            method: "POST".into(),
            path: "/v1/responses".into(),
            session,
            model: Some(model.clone()),
            stream: req["stream"].as_bool().unwrap_or(false),
            tools: req["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str().or(t["type"].as_str()))
                .map(str::to_string)
                .collect(),
            tool_outputs,
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            scenario: Some(scenario),
            status,
        },
    );
    let rate_limited = || {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            api_error(
                "tokens",
                Some("rate_limit_exceeded"),
                "Rate limit reached for gpt-mock on tokens per min (TPM): Limit 30000, Used 30000, \
                 Requested 1200. Please try again in 1s.",
            ),
            &[("retry-after", "1")],
        )
    };
    let id = format!("resp_mock_{nth}");
    match scenario {
        Scenario::RateLimited => rate_limited(),
        Scenario::RateLimitedOnce if nth == 0 => rate_limited(),
        Scenario::Quota => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            api_error(
                "insufficient_quota",
                Some("insufficient_quota"),
                QUOTA_MESSAGE,
            ),
            &[],
        ),
        Scenario::UsageLimit => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"type": "usage_limit_reached",
                "message": "The usage limit has been reached", "plan_type": "plus",
                "resets_at": 1_796_003_600, "resets_in_seconds": 3600}}),
            &[],
        ),
        Scenario::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            api_error(
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that!",
            ),
            &[],
        ),
        Scenario::Hang => {
            let mut events = response_events(&id, &model, &Output::Text("Let me".into()));
            events.truncate(2); // response.created, response.output_item.added
            sse_response(events, true)
        }
        Scenario::Tools | Scenario::RateLimitedOnce => {
            let output = match tool_outputs {
                0 => Output::Function("exec_command", json!({"cmd": TOOLS_COMMAND})),
                1 => Output::Custom(
                    "apply_patch",
                    format!(
                        "*** Begin Patch\n*** Add File: {PATCH_FILE}\n+{}\n*** End Patch\n",
                        PATCH_CONTENT.trim_end()
                    ),
                ),
                _ => Output::Text(TOOLS_FINAL_TEXT.into()),
            };
            sse_response(response_events(&id, &model, &output), false)
        }
    }
}
