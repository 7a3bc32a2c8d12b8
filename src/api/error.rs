//! One error type for the whole API: `{"error": {"code", "message", "details"}}` with a stable
//! code, and nothing about the daemon's internals in the message.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use loopd_actors::config::Report;
use serde_json::{json, Value};

/// The stable error codes of the API (DESIGN.md: "Errors are JSON with a stable code").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 401: no bearer token where one is required.
    Unauthorized,
    /// 403: a bearer token that is not the daemon's.
    Forbidden,
    /// 403: a `Host` that is not loopback, to an API bound to loopback (DNS rebinding).
    HostNotAllowed,
    /// 404: no such route.
    NotFound,
    /// 404: no loop of that name.
    LoopNotFound,
    /// 404: no test of that id in the loop.
    TestNotFound,
    /// 404: no attempt (or transcript) of that address.
    AttemptNotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 400: the body is not JSON, or a query parameter is wrong.
    BadRequest,
    /// 400: a loop or test name that could escape the state directory.
    InvalidName,
    /// 422: the body is JSON but not a valid loop or tests document; `details` lists every problem.
    ValidationFailed,
    /// 409: the request conflicts with the fleet (a loop of that name exists, ...).
    Conflict,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 501: a feature this daemon does not have.
    NotImplemented,
    /// 503: the fleet is not running (yet, or any more).
    Unavailable,
    /// 500: something went wrong inside; the log has the details.
    Internal,
}

impl Code {
    /// The code as it appears in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::HostNotAllowed => "host_not_allowed",
            Code::NotFound => "not_found",
            Code::LoopNotFound => "loop_not_found",
            Code::TestNotFound => "test_not_found",
            Code::AttemptNotFound => "attempt_not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::BadRequest => "bad_request",
            Code::InvalidName => "invalid_name",
            Code::ValidationFailed => "validation_failed",
            Code::Conflict => "conflict",
            Code::PayloadTooLarge => "payload_too_large",
            Code::NotImplemented => "not_implemented",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden | Code::HostNotAllowed => StatusCode::FORBIDDEN,
            Code::NotFound | Code::LoopNotFound | Code::TestNotFound | Code::AttemptNotFound => {
                StatusCode::NOT_FOUND
            }
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::BadRequest | Code::InvalidName => StatusCode::BAD_REQUEST,
            Code::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code, for the OpenAPI document.
    pub const ALL: [Code; 16] = [
        Code::Unauthorized,
        Code::Forbidden,
        Code::HostNotAllowed,
        Code::NotFound,
        Code::LoopNotFound,
        Code::TestNotFound,
        Code::AttemptNotFound,
        Code::MethodNotAllowed,
        Code::BadRequest,
        Code::InvalidName,
        Code::ValidationFailed,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::NotImplemented,
        Code::Unavailable,
        Code::Internal,
    ];
}

/// A failed request, turned into JSON by [`IntoResponse`].
#[derive(Debug)]
pub struct ApiError {
    /// The stable code.
    pub code: Code,
    /// A sentence for people.
    pub message: String,
    /// Details for programs (`null` when there are none).
    pub details: Value,
}

impl ApiError {
    /// An error without details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The same error with details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 404 for a loop.
    pub fn no_loop(name: &str) -> Self {
        ApiError::new(Code::LoopNotFound, format!("no loop named `{name}`"))
            .with_details(json!({"loop": name}))
    }

    /// 404 for a test.
    pub fn no_test(loop_name: &str, test: &str) -> Self {
        ApiError::new(
            Code::TestNotFound,
            format!("no test `{test}` in loop `{loop_name}`"),
        )
        .with_details(json!({"loop": loop_name, "test": test}))
    }

    /// 500, logging the cause (which never goes to the client).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error in an API request");
        ApiError::new(Code::Internal, "internal error; see the daemon's log")
    }

    /// 422 listing every problem of `report`, each with its JSON pointer.
    pub fn invalid(what: &str, report: &Report) -> Self {
        let problems: Vec<Value> = report
            .problems
            .iter()
            .map(|p| {
                let mut v = json!({"pointer": p.pointer, "message": p.expected});
                if let Some(line) = p.line {
                    v["line"] = json!(line);
                }
                v
            })
            .collect();
        let n = problems.len();
        ApiError::new(
            Code::ValidationFailed,
            format!(
                "invalid {what}: {n} problem{}",
                if n == 1 { "" } else { "s" }
            ),
        )
        .with_details(json!({ "problems": problems }))
    }

    /// 400 for a name that is not `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub fn invalid_name(kind: &str, why: String) -> Self {
        ApiError::new(Code::InvalidName, format!("invalid {kind} name: {why}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.code.as_str(),
            "message": self.message,
            "details": self.details,
        }});
        (self.code.status(), Json(body)).into_response()
    }
}

impl From<loopd_actors::store::StoreError> for ApiError {
    fn from(e: loopd_actors::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Code::PayloadTooLarge,
                format!("the body is larger than {} bytes", super::BODY_LIMIT),
            )
        } else {
            ApiError::new(Code::BadRequest, r.body_text())
        }
    }
}

/// Checks a loop or test name from a path or body.
pub fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    loopd_actors::names::check_name(name).map_err(|why| ApiError::invalid_name(kind, why))
}
