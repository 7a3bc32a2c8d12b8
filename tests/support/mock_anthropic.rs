//! A mock of the Anthropic Messages API for driving the real Claude Code CLI offline.
//!
//! Start it with [`MockAnthropic::start`] and point the CLI at it with
//! `ANTHROPIC_BASE_URL=<mock.base_url()>` and any `ANTHROPIC_API_KEY`. It listens on
//! 127.0.0.1 on a free port, on its own thread and tokio runtime, so sync tests can use it; it
//! stops when dropped. Every request it gets is recorded ([`MockAnthropic::requests`]) and, with
//! `--nocapture`, printed.
//!
//! # Choosing a scenario
//! Each conversation (one CLI run; the CLI sends `X-Claude-Code-Session-Id` on every request)
//! gets one [`Scenario`]: the marker `LOOPD-MOCK-SCENARIO: <name>` anywhere in the prompt wins;
//! otherwise the next one of the script given to `start` (the last one repeats), so
//! `[Overloaded, Tools]` answers the first run with 529s and the second with tool calls.
//!
//! # What Claude Code 2.1.332 does against it
//! Measured with `claude -p PROMPT --output-format stream-json --verbose --permission-mode
//! acceptEdits --allowedTools Bash,Edit,Write,Read`, a temporary `HOME`, `DISABLE_AUTOUPDATER=1`,
//! `DISABLE_TELEMETRY=1`, `DISABLE_ERROR_REPORTING=1`, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`.
//! Full samples are in `tests/fixtures/claude-code/*.jsonl` (re-record them with
//! `LOOPD_RECORD_FIXTURES=1 cargo test --test claude_code`). The CLI only ever calls
//! `POST /v1/messages?beta=true` (streaming, with tools, model `claude-opus-5-5` by default);
//! no title, quota or count_tokens requests were seen with these variables, but they are answered.
//! Every run starts with one line
//! `{"type":"system","subtype":"init","cwd":...,"session_id":...,"tools":[...],"model":...,...}`.
//!
//! * **tools**: request 1 is answered with a text block and a `Write` tool_use (an absolute path
//!   in the "Primary working directory" the system prompt names), request 2 (carrying the
//!   tool_result) with a `Bash` tool_use, request 3 with a text answer and `end_turn`. The CLI
//!   prints one `assistant` line per content block, a `user` line per tool_result, then
//!   ```text
//!   {"type":"assistant","message":{...,"content":[{"type":"text","text":"I'll write the file."}],...},...}
//!   {"type":"assistant","message":{...,"content":[{"type":"tool_use","id":"toolu_01","name":"Write","input":{"file_path":"/…/hello.txt","content":"…"}}],...}}
//!   {"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"File created successfully at: …"}]},...}
//!   {"type":"assistant",...,"content":[{"type":"tool_use","id":"toolu_02","name":"Bash","input":{"command":"…"}}]...}
//!   {"type":"user",...,"content":[{"tool_use_id":"toolu_02","type":"tool_result","content":"…","is_error":false}]...,"tool_use_result":{"stdout":…}}
//!   {"type":"assistant",...,"content":[{"type":"text","text":"Done: …"}]...}
//!   {"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"Done: …","total_cost_usd":0.00372,"usage":{"input_tokens":300,"output_tokens":126,...},"api_error_status":null,"terminal_reason":"completed","stop_reason":"end_turn",...}
//!   ```
//!   (the result line's keys come in no fixed order: `"type":"result"` is not first) and exits 0.
//! * **overloaded**: every request gets HTTP 529 `overloaded_error`. The CLI prints
//!   `{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":507,"error_status":529,"error":"overloaded",...}`
//!   and `attempt":2` (about 0.5 s and 1 s later), then gives up after the third 529 with
//!   `{"type":"assistant","message":{"model":"<synthetic>","content":[{"type":"text","text":"API Error: Repeated 529 Overloaded errors. …"}],...},"error":"server_error","is_api_error_message":true,"api_error_status":529,"api_error_type":"overloaded_error",...}`
//!   `{"type":"result","subtype":"success","is_error":true,"api_error_status":529,"terminal_reason":"api_error","result":"API Error: Repeated 529 …","total_cost_usd":0,...}`
//!   and exits 1, about 2 s after the start. That is without `IS_SANDBOX` in the environment.
//!   With `IS_SANDBOX=1` (set on this workplace's machines, and CI may inherit it) it retries up
//!   to `max_retries` (10) times with growing delays, about three minutes of `api_retry` lines,
//!   before the same ending (DESIGN.md's "keeps retrying for minutes").
//!   `CLAUDE_CODE_MAX_RETRIES=N` sets the number of retries in both cases. `API_TIMEOUT_MS`
//!   does not end the **hang** below.
//! * **billing**: every request gets HTTP 400 `invalid_request_error` "Your credit balance is too
//!   low …". No retry; within about a second:
//!   `{"type":"assistant","message":{"model":"<synthetic>","content":[{"type":"text","text":"Credit balance is too low"}],...},"error":"billing_error","is_api_error_message":true,"api_error_status":400,"api_error_type":"invalid_request_error",...}`
//!   `{"type":"result","subtype":"success","is_error":true,"api_error_status":400,"terminal_reason":"api_error","result":"Credit balance is too low",...}`
//!   and exit 1.
//! * **hang**: HTTP 200, `message_start`, a text `content_block_start` and one `text_delta`, then
//!   nothing, with the connection kept open. The CLI prints the init line and then nothing at all
//!   and does not exit (observed for 150 s).
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
    /// `Write` creates [`TOOLS_FILE`] in the working directory, then `Bash` runs
    /// [`TOOLS_BASH_COMMAND`], then a text answer with `end_turn`.
    Tools,
    /// HTTP 529 `overloaded_error` on every request.
    Overloaded,
    /// HTTP 400 "Your credit balance is too low ..." on every request.
    Billing,
    /// A stream that starts and then never sends another byte nor closes.
    Hang,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Tools,
        Scenario::Overloaded,
        Scenario::Billing,
        Scenario::Hang,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Tools => "tools",
            Scenario::Overloaded => "overloaded",
            Scenario::Billing => "billing",
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
/// The file the `Write` tool call of [`Scenario::Tools`] creates in the working directory.
pub const TOOLS_FILE: &str = "hello.txt";
/// Its content.
pub const TOOLS_CONTENT: &str = "hello from the mock model\n";
/// The `Bash` tool call of [`Scenario::Tools`]; it proves the Write happened before it ran.
pub const TOOLS_BASH_COMMAND: &str = "cat hello.txt && echo bash-ran > bash.txt";
/// The final text of [`Scenario::Tools`].
pub const TOOLS_FINAL_TEXT: &str = "Done: wrote hello.txt and ran bash.";
pub const BILLING_MESSAGE: &str = "Your credit balance is too low to access the Anthropic API. \
     Please go to Plans & Billing to upgrade or purchase credits.";

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub session: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub tools: usize,
    pub messages: usize,
    pub tool_results: usize,
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

pub struct MockAnthropic {
    addr: SocketAddr,
    inner: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockAnthropic {
    /// Starts the mock with a script of scenarios, one per conversation (the last repeats).
    pub fn start(script: &[Scenario]) -> MockAnthropic {
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
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(fallback)
            .with_state(inner.clone());
        let thread = std::thread::Builder::new()
            .name("mock-anthropic".into())
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
                        r = server => { if let Err(e) = r { eprintln!("mock-anthropic: {e}"); } }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime cancels the connections still open (the hung streams).
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn mock thread");
        MockAnthropic {
            addr,
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Starts the mock with one scenario for every conversation.
    pub fn with(scenario: Scenario) -> MockAnthropic {
        MockAnthropic::start(&[scenario])
    }

    /// `http://127.0.0.1:PORT`, the value for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests to `/v1/messages` (not count_tokens or anything else).
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/messages")
            .collect()
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The environment that makes the CLI unattended, offline and confined to `home`.
pub fn claude_env(base_url: &str, home: &std::path::Path) -> Vec<(String, String)> {
    [
        ("ANTHROPIC_BASE_URL", base_url),
        ("ANTHROPIC_API_KEY", "sk-ant-mock-not-a-key"),
        ("HOME", home.to_str().expect("utf-8 home")),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn record(inner: &Shared, r: RecordedRequest) {
    eprintln!(
        "mock-anthropic: {} {} session={} scenario={} model={} stream={} tools={} messages={} tool_results={} -> {}",
        r.method,
        r.path,
        r.session.as_deref().unwrap_or("-"),
        r.scenario.map(|s| s.name()).unwrap_or("-"),
        r.model.as_deref().unwrap_or("-"),
        r.stream,
        r.tools,
        r.messages,
        r.tool_results,
        r.status
    );
    inner.lock().unwrap().requests.push(r);
}

fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            ("content-type", "application/json"),
            ("request-id", "req_mock"),
        ],
        body,
    )
        .into_response()
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
            tools: 0,
            messages: 0,
            tool_results: 0,
            scenario: None,
            status: 404,
        },
    );
    json_response(
        StatusCode::NOT_FOUND,
        error_body("not_found_error", "the mock does not serve this path"),
    )
}

async fn count_tokens(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(
        &inner,
        RecordedRequest {
            method: "POST".into(),
            path: "/v1/messages/count_tokens".into(),
            session: session_of(&headers),
            model: req["model"].as_str().map(str::to_string),
            stream: false,
            tools: req["tools"].as_array().map_or(0, Vec::len),
            messages: req["messages"].as_array().map_or(0, Vec::len),
            tool_results: 0,
            scenario: None,
            status: 200,
        },
    );
    json_response(StatusCode::OK, json!({"input_tokens": 100}).to_string())
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
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
    strings(&req["messages"], &mut all);
    all.iter().find_map(|s| {
        let at = s.find(MARKER)?;
        let rest = &s[at + MARKER.len()..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        Scenario::from_name(&word)
    })
}

/// The "Primary working directory: /x/y" line of Claude Code's system prompt.
fn working_directory(req: &Value) -> Option<String> {
    let mut all = Vec::new();
    strings(req, &mut all);
    all.iter().find_map(|s| {
        let at = s.find("Primary working directory: ")?;
        let rest = &s[at + "Primary working directory: ".len()..];
        Some(rest.lines().next()?.trim().to_string())
    })
}

fn count_tool_results(req: &Value) -> usize {
    req["messages"].as_array().map_or(0, |msgs| {
        msgs.iter()
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|c| c["type"] == "tool_result")
            .count()
    })
}

enum Block {
    Text(String),
    ToolUse {
        id: &'static str,
        name: &'static str,
        input: Value,
    },
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn message_start(model: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sse(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_mock_{n:04}"), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )
}

/// The SSE events of one whole message, in the order the real API sends them.
fn message_events(model: &str, blocks: &[Block], stop_reason: &str) -> Vec<String> {
    let mut out = vec![message_start(model)];
    for (i, block) in blocks.iter().enumerate() {
        match block {
            Block::Text(text) => {
                out.push(sse(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                    "content_block": {"type": "text", "text": ""}}),
                ));
                out.push(sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i,
                    "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            Block::ToolUse { id, name, input } => {
                out.push(sse(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
                // The input JSON arrives in pieces, as from the real API.
                let text = input.to_string();
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                for part in [&text[..cut], &text[cut..]] {
                    out.push(sse(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
            }
        }
        out.push(sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    out.push(sse(
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": 42}}),
    ));
    out.push(sse("message_stop", json!({"type": "message_stop"})));
    out
}

fn message_json(model: &str, blocks: &[Block], stop_reason: &str) -> String {
    let content: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect();
    json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 100, "output_tokens": 42}})
    .to_string()
}

fn sse_response(events: Vec<String>) -> Response {
    let body = events.concat();
    (
        StatusCode::OK,
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("request-id", "req_mock"),
        ],
        body,
    )
        .into_response()
}

fn reply(req: &Value, blocks: Vec<Block>, stop_reason: &str) -> Response {
    let model = req["model"].as_str().unwrap_or("claude-mock");
    if req["stream"].as_bool().unwrap_or(false) {
        sse_response(message_events(model, &blocks, stop_reason))
    } else {
        json_response(StatusCode::OK, message_json(model, &blocks, stop_reason))
    }
}

async fn messages(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let session = session_of(&headers);
    let tools = req["tools"].as_array().map_or(0, Vec::len);
    let tool_results = count_tool_results(&req);
    // Requests without tools are side requests (titles, summaries): answer them plainly and
    // let them consume no scenario.
    let scenario = if tools == 0 {
        None
    } else {
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
                g.sessions.insert(key, s);
                s
            }
        };
        Some(chosen)
    };
    let status = match scenario {
        Some(Scenario::Overloaded) => 529,
        Some(Scenario::Billing) => 400,
        _ => 200,
    };
    record(
        &inner,
        RecordedRequest {
            method: "POST".into(),
            path: "/v1/messages".into(),
            session,
            model: req["model"].as_str().map(str::to_string),
            stream: req["stream"].as_bool().unwrap_or(false),
            tools,
            messages: req["messages"].as_array().map_or(0, Vec::len),
            tool_results,
            scenario,
            status,
        },
    );
    match scenario {
        None => reply(
            &req,
            vec![Block::Text("Mock side answer".into())],
            "end_turn",
        ),
        Some(Scenario::Overloaded) => json_response(
            StatusCode::from_u16(529).unwrap(),
            error_body("overloaded_error", "Overloaded"),
        ),
        Some(Scenario::Billing) => json_response(
            StatusCode::BAD_REQUEST,
            error_body("invalid_request_error", BILLING_MESSAGE),
        ),
        Some(Scenario::Hang) => {
            let model = req["model"].as_str().unwrap_or("claude-mock").to_string();
            let events: Vec<Result<Bytes, std::io::Error>> = message_events(
                &model,
                &[Block::Text("Let me think about".into())],
                "end_turn",
            )
            .into_iter()
            .take(3) // message_start, content_block_start, one content_block_delta
            .map(|e| Ok(Bytes::from(e)))
            .collect();
            use futures_util::StreamExt;
            let stream = futures_util::stream::iter(events).chain(futures_util::stream::pending());
            (
                StatusCode::OK,
                [
                    ("content-type", "text/event-stream; charset=utf-8"),
                    ("cache-control", "no-cache"),
                ],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Some(Scenario::Tools) => {
            let cwd = working_directory(&req).unwrap_or_else(|| ".".into());
            match tool_results {
                0 => reply(
                    &req,
                    vec![
                        Block::Text("I'll write the file.".into()),
                        Block::ToolUse {
                            id: "toolu_01",
                            name: "Write",
                            input: json!({"file_path": format!("{cwd}/{TOOLS_FILE}"),
                                          "content": TOOLS_CONTENT}),
                        },
                    ],
                    "tool_use",
                ),
                1 => reply(
                    &req,
                    vec![Block::ToolUse {
                        id: "toolu_02",
                        name: "Bash",
                        input: json!({"command": TOOLS_BASH_COMMAND,
                                      "description": "Check the file and leave a mark"}),
                    }],
                    "tool_use",
                ),
                _ => reply(&req, vec![Block::Text(TOOLS_FINAL_TEXT.into())], "end_turn"),
            }
        }
    }
}
