//! `GET /api/openapi.json`: an OpenAPI 3.1 document built from [`OPERATIONS`] (the route table)
//! and the JSON Schemas of the Rust types the handlers read and write (schemars).
//!
//! A unit test sends every operation of the table to the real router and fails when one is not
//! routed, so the document cannot drift from the router without a red test.

use axum::Json;
use loopd_actors::config::LoopConfig;
use loopd_actors::model::Event;
use loopd_actors::tests_file::TestsFile;
use loopd_actors::view::{ExportDoc, InsightsDoc, LoopView, ReportDoc, TestView};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::Code;
use super::fleet::ShutdownAnswer;
use super::loops::{Health, LoopAnswer, LoopPageAnswer, TestList, TranscriptList};
use loopd_actors::view::AttemptPage;

/// `{"error": {...}}`: every failed request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code: see the `x-error-codes` of the document.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Details for programs; for `validation_failed`, `{"problems": [{"pointer", "message"}]}`.
    pub details: Value,
}

/// What a body or an answer holds.
#[derive(Clone, Copy)]
pub enum Content {
    /// Nothing.
    None,
    /// JSON of a Rust type.
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// Plain text.
    Text,
    /// Server-sent events.
    EventStream,
}

/// One operation of the API.
pub struct Operation {
    /// `get`, `post`, `delete`.
    pub method: &'static str,
    /// The path, with `{id}`-style parameters.
    pub path: &'static str,
    /// A unique id.
    pub id: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Query parameters: `(name, description)`.
    pub query: &'static [(&'static str, &'static str)],
    /// The request body.
    pub body: Content,
    /// The success status.
    pub status: u16,
    /// The success answer.
    pub answer: Content,
}

fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

const LOOP_BODY: Content = Content::Json(s::<LoopConfig>);
const LOOP: Content = Content::Json(s::<LoopView>);
const TEST: Content = Content::Json(s::<TestView>);
const TESTS: Content = Content::Json(s::<TestList>);
const INSIGHTS: Content = Content::Json(s::<InsightsDoc>);
const PATTERNS_LIMIT: &[(&str, &str)] = &[("limit", "most patterns, 1 to 1000, default 10")];

/// The `view` query parameter of `GET /api/loops/{id}`.
const ONE_VIEW: &str = "`full` (default): every attempt of every test; `summary`: per test its \
                        status, counts and last attempt only; `detail`: the full view plus the \
                        loop's settings (workdir, tests file, agent, budget, limits)";

/// The `view` query parameter of the loop reads.
const VIEW: &str = "`full` (default): every attempt of every test; `summary`: per test its \
                    status, counts and last attempt only, a size that does not grow with the \
                    history (attempts at /api/loops/{id}/tests/{test}/attempts)";

/// Every operation; the router in `mod.rs` serves exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/api/loops",
        id: "listLoops",
        summary: "One page of loops, by name",
        query: &[
            ("limit", "page size, 1 to 1000, default 100"),
            ("cursor", "`next_cursor` of the previous page"),
            ("view", VIEW),
        ],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<LoopPageAnswer>),
    },
    Operation {
        method: "post",
        path: "/api/loops",
        id: "createLoop",
        summary: "Register a loop (a loop config, as in the fleet file)",
        query: &[("start", "start it now (default false)")],
        body: LOOP_BODY,
        status: 201,
        answer: LOOP,
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}",
        id: "getLoop",
        summary: "One loop with its tests and attempts",
        query: &[("view", ONE_VIEW)],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<LoopAnswer>),
    },
    Operation {
        method: "delete",
        path: "/api/loops/{id}",
        id: "deleteLoop",
        summary: "Stop a loop and forget it",
        query: &[],
        body: Content::None,
        status: 204,
        answer: Content::None,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/start",
        id: "startLoop",
        summary: "Start a loop (undoes stop and pause)",
        query: &[],
        body: Content::None,
        status: 200,
        answer: LOOP,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/stop",
        id: "stopLoop",
        summary: "Stop a loop at once (the running attempt is interrupted)",
        query: &[],
        body: Content::None,
        status: 200,
        answer: LOOP,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/pause",
        id: "pauseLoop",
        summary: "Start no new attempt",
        query: &[("now", "interrupt the running attempt too")],
        body: Content::None,
        status: 200,
        answer: LOOP,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/resume",
        id: "resumeLoop",
        summary: "Undo a pause",
        query: &[],
        body: Content::None,
        status: 200,
        answer: LOOP,
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}/tests",
        id: "listTests",
        summary: "A loop's tests with their attempts",
        query: &[],
        body: Content::None,
        status: 200,
        answer: TESTS,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/tests",
        id: "injectTests",
        summary: "Add tests to a loop while it runs ({\"tests\": [...]} or [...])",
        query: &[],
        body: Content::Json(s::<TestsFile>),
        status: 201,
        answer: TESTS,
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}/tests/{test}/attempts",
        id: "listTestAttempts",
        summary: "One page of a test's attempts, by number",
        query: &[
            ("limit", "page size, 1 to 1000, default 50"),
            ("cursor", "`next_cursor` of the previous page (opaque)"),
        ],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<AttemptPage>),
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/tests/{test}/reset",
        id: "resetTest",
        summary: "Make a test pending again, its counted attempts cleared",
        query: &[],
        body: Content::None,
        status: 200,
        answer: TEST,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/tests/{test}/rollback",
        id: "rollbackToTest",
        summary:
            "Return the workdir to the checkpoint made when this test passed (later passes reopen)",
        query: &[],
        body: Content::None,
        status: 200,
        answer: TEST,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/tests/{test}/skip",
        id: "skipTest",
        summary: "Set a test aside (releases its dependents)",
        query: &[],
        body: Content::None,
        status: 200,
        answer: TEST,
    },
    Operation {
        method: "post",
        path: "/api/loops/{id}/hints",
        id: "giveHint",
        summary: "Guidance for the loop's (or one test's) next prompts; replaces the current one",
        query: &[],
        body: Content::Json(s::<super::hints::HintBody>),
        status: 201,
        answer: Content::Json(s::<loopd_actors::hints::Hint>),
    },
    Operation {
        method: "delete",
        path: "/api/loops/{id}/hints",
        id: "clearHint",
        summary: "Remove the loop's hint (or the test's, with `test`)",
        query: &[(
            "test",
            "the test whose hint to remove; absent: the loop's own",
        )],
        body: Content::None,
        status: 204,
        answer: Content::None,
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}/health",
        id: "loopHealth",
        summary: "Heartbeat and trouble of a loop",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<Health>),
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}/insights",
        id: "loopInsights",
        summary: "A loop's most frequent failure patterns, and the lessons that match them",
        query: PATTERNS_LIMIT,
        body: Content::None,
        status: 200,
        answer: INSIGHTS,
    },
    Operation {
        method: "get",
        path: "/api/insights",
        id: "insights",
        summary: "The fleet's most frequent failure patterns and the lessons learned",
        query: PATTERNS_LIMIT,
        body: Content::None,
        status: 200,
        answer: INSIGHTS,
    },
    Operation {
        method: "get",
        path: "/api/export",
        id: "export",
        summary: "The whole state as tests-file entries plus progress (`loopd export`)",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<ExportDoc>),
    },
    Operation {
        method: "get",
        path: "/api/report",
        id: "report",
        summary: "The morning report: per loop the period's passes, failures, tests for a person, \
                  attempts by outcome, cost, slowest tests, failures, alerts, and what it does now",
        query: &[(
            "since",
            "the period's start: a duration back from now (`8h`) or an RFC 3339 time; default 24h",
        )],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<ReportDoc>),
    },
    Operation {
        method: "post",
        path: "/api/shutdown",
        id: "shutdown",
        summary: "Stop the daemon as on SIGTERM: attempts interrupted (not counted), store flushed",
        query: &[],
        body: Content::None,
        status: 202,
        answer: Content::Json(s::<ShutdownAnswer>),
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}/transcripts",
        id: "listTranscripts",
        summary: "Every attempt's transcript",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::Json(s::<TranscriptList>),
    },
    Operation {
        method: "get",
        path: "/api/loops/{id}/transcripts/{attempt}",
        id: "getTranscript",
        summary: "One attempt's transcript; the attempt is TEST:N",
        query: &[("offset", "start at this byte")],
        body: Content::None,
        status: 200,
        answer: Content::Text,
    },
    Operation {
        method: "get",
        path: "/api/events",
        id: "events",
        summary: "Server-sent events (Last-Event-ID resumes from the journal); data is an Event",
        query: &[
            ("loop", "only this loop"),
            ("after", "replay the journal after this id"),
            ("transcripts", "also stream running transcripts' lines"),
            (
                "lines",
                "with transcripts: first the last N lines of the attempts running at connect",
            ),
            (
                "render",
                "with transcripts: each line rendered for people (`rendered`: [...]) as `loopd logs` prints it",
            ),
        ],
        body: Content::None,
        status: 200,
        answer: Content::EventStream,
    },
    Operation {
        method: "get",
        path: "/api/openapi.json",
        id: "openapi",
        summary: "This document",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::None,
    },
    Operation {
        method: "get",
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus metrics",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::Text,
    },
    Operation {
        method: "get",
        path: "/healthz",
        id: "healthz",
        summary: "The daemon answers",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::None,
    },
    Operation {
        method: "get",
        path: "/readyz",
        id: "readyz",
        summary: "The fleet is running (503 before)",
        query: &[],
        body: Content::None,
        status: 200,
        answer: Content::None,
    },
];

fn content(c: Content, g: &mut SchemaGenerator) -> Option<Value> {
    match c {
        Content::None => None,
        Content::Json(f) => Some(json!({"application/json": {"schema": f(g)}})),
        Content::Text => Some(json!({"text/plain": {"schema": {"type": "string"}}})),
        Content::EventStream => Some(json!({"text/event-stream": {"schema": {"type": "string"}}})),
    }
}

/// The document.
pub fn document() -> Value {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = g.subschema_for::<ErrorBody>();
    let event = g.subschema_for::<Event>();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut params: Vec<Value> = Vec::new();
        for name in ["id", "test", "attempt"] {
            if op.path.contains(&format!("{{{name}}}")) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,74}$"}}));
            }
        }
        for (name, description) in op.query {
            params.push(json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}}));
        }
        let mut responses = Map::new();
        let mut ok = json!({"description": "success"});
        if let Some(c) = content(op.answer, &mut g) {
            ok["content"] = c;
        }
        responses.insert(op.status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({"description": "an error", "content": {"application/json": {"schema": error.clone()}}}),
        );
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "parameters": params,
            "responses": responses,
        });
        if op.method != "get" {
            operation["security"] = json!([{"bearer": []}]);
        }
        if let Some(c) = content(op.body, &mut g) {
            operation["requestBody"] = json!({"required": true, "content": c});
        }
        paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(op.method.to_string(), operation));
    }
    let codes: Map<String, Value> = Code::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), json!(c.status().as_u16())))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "loopd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control plane of a loopd fleet. A bearer token is required for every request that changes state, and for every request when the daemon is bound to a non-loopback address. SSE `data` of /api/events is an Event.",
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "x-event-schema": event,
        "x-error-codes": codes,
    })
}

/// `GET /api/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}
