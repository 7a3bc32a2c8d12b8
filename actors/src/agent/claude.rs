//! Claude Code's `--output-format stream-json --verbose` events.
//!
//! Measured with Claude Code 2.1 (DESIGN.md): an overloaded API shows as
//! `{"type":"system","subtype":"api_retry","error_status":529,...}` while it retries on its own;
//! when it gives up, a synthetic assistant message (`"model":"<synthetic>"`, text `API Error: ...`)
//! and a `result` with `"is_error":true` follow. An empty credit balance is an assistant message
//! with `"error":"billing_error"` (text "Credit balance is too low"), then an error result.
//! The final `result` carries `total_cost_usd`, `usage` and the final text in `result`.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use super::command::status_in;
use super::{truncate_chars, AgentReport, LineEvent, ProviderFailure, MAX_SUMMARY_CHARS};

/// Longest piece of evidence kept from an event.
const MAX_EVIDENCE: usize = 500;

fn billing_text() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)credit balance (is )?too low").expect("valid"))
}

/// Words of an error text that point at the provider's API rather than at the agent's work.
fn api_error_text() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)api error|overloaded|rate[ _-]?limit|\b(429|5[0-9]{2})\b|connection error|econnreset|econnrefused|etimedout|socket hang up|fetch failed|request timed out",
        )
        .expect("valid")
    })
}

/// The final `result` event.
#[derive(Debug, Default)]
struct ResultEvent {
    is_error: bool,
    subtype: String,
    cost_usd: Option<f64>,
    tokens_reported: bool,
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    text: String,
}

#[derive(Debug, Default)]
pub(super) struct ClaudeWatcher {
    /// `api_retry` events seen.
    api_retries: u32,
    /// The status of the last `api_retry`.
    last_retry_status: Option<u16>,
    /// The last event was an `api_retry`: Claude Code was still waiting on the API.
    retrying: bool,
    /// An assistant message that reported an API failure: status and text.
    api_error: Option<(Option<u16>, String)>,
    /// An assistant message (or stray line) that reported an empty credit balance.
    billing: Option<String>,
    /// The final result, once seen.
    result: Option<ResultEvent>,
    /// Lines that were not stream-json events.
    malformed: u32,
    /// Things worth a log line.
    notes: Vec<String>,
}

/// The text blocks of an assistant message, joined.
fn message_text(event: &Value) -> String {
    let Some(content) = event.pointer("/message/content").and_then(Value::as_array) else {
        return event
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    };
    content
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ClaudeWatcher {
    pub(super) fn line(&mut self, line: &str) -> LineEvent {
        let event: Value = match serde_json::from_str(line) {
            Ok(event @ Value::Object(_)) => event,
            _ => return self.not_an_event(line),
        };
        let Some(kind) = event.get("type").and_then(Value::as_str) else {
            return self.not_an_event(line);
        };
        match kind {
            "system" => {
                if event.get("subtype").and_then(Value::as_str) != Some("api_retry") {
                    return LineEvent::Output;
                }
                let status = event
                    .get("error_status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok());
                self.api_retries += 1;
                self.last_retry_status = status;
                self.retrying = true;
                LineEvent::ApiRetry { status }
            }
            "assistant" => {
                self.retrying = false;
                self.assistant(&event)
            }
            "result" => {
                self.result(&event);
                LineEvent::Result
            }
            _ => {
                self.retrying = false;
                LineEvent::Output
            }
        }
    }

    fn not_an_event(&mut self, line: &str) -> LineEvent {
        self.malformed += 1;
        if line.trim().is_empty() {
            return LineEvent::Output;
        }
        // Claude Code's own plain-text errors (stderr) are not JSON.
        if billing_text().is_match(line) {
            self.billing
                .get_or_insert_with(|| truncate_chars(line, MAX_EVIDENCE));
            return LineEvent::Billing;
        }
        LineEvent::Malformed
    }

    fn assistant(&mut self, event: &Value) -> LineEvent {
        let error = event.get("error").and_then(Value::as_str);
        let synthetic =
            event.pointer("/message/model").and_then(Value::as_str) == Some("<synthetic>");
        // Only messages Claude Code made about a failure are read for error words: the model's
        // own text may well talk about billing or HTTP 500 as part of the work.
        if error.is_none() && !synthetic {
            return LineEvent::Output;
        }
        let text = message_text(event);
        let evidence = || {
            truncate_chars(
                if text.is_empty() {
                    error.unwrap_or_default()
                } else {
                    &text
                },
                MAX_EVIDENCE,
            )
        };
        if error == Some("billing_error") || billing_text().is_match(&text) {
            self.billing.get_or_insert_with(evidence);
            return LineEvent::Billing;
        }
        let api = matches!(error, Some("rate_limit" | "server_error"))
            || (synthetic && text.trim_start().starts_with("API Error"));
        if api {
            let status = status_in(&text).or(match error {
                Some("rate_limit") => Some(429),
                _ => None,
            });
            self.api_error = Some((status, evidence()));
            return LineEvent::ApiError { status };
        }
        if error == Some("authentication_failed") {
            self.notes.push(format!(
                "Claude Code could not authenticate: {}",
                evidence()
            ));
        }
        LineEvent::Output
    }

    fn result(&mut self, event: &Value) {
        let u64_at = |pointer: &str| event.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
        let mut text = event
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(errors) = event.get("errors").and_then(Value::as_array) {
            for e in errors.iter().filter_map(Value::as_str) {
                text = if text.is_empty() {
                    e.to_string()
                } else {
                    format!("{text}\n{e}")
                };
            }
        }
        let result = ResultEvent {
            is_error: event
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            subtype: event
                .get("subtype")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            cost_usd: event
                .get("total_cost_usd")
                .and_then(Value::as_f64)
                .filter(|c| c.is_finite() && *c >= 0.0),
            tokens_reported: event.get("usage").is_some_and(Value::is_object),
            cached_input_tokens: u64_at("/usage/cache_read_input_tokens"),
            input_tokens: u64_at("/usage/input_tokens")
                + u64_at("/usage/cache_creation_input_tokens")
                + u64_at("/usage/cache_read_input_tokens"),
            output_tokens: u64_at("/usage/output_tokens"),
            text,
        };
        if result.is_error && billing_text().is_match(&result.text) {
            self.billing
                .get_or_insert_with(|| truncate_chars(&result.text, MAX_EVIDENCE));
        }
        self.result = Some(result);
    }

    pub(super) fn finish(self, exit_code: Option<i32>) -> AgentReport {
        let mut report = AgentReport {
            api_retries: self.api_retries,
            malformed_lines: self.malformed,
            notes: self.notes,
            ..AgentReport::default()
        };
        let mut api_evidence = self.api_error;
        match &self.result {
            Some(result) => {
                report.cost_usd = result.cost_usd;
                report.tokens_reported = result.tokens_reported;
                report.input_tokens = result.input_tokens;
                report.cached_input_tokens = result.cached_input_tokens;
                report.output_tokens = result.output_tokens;
                if !result.text.trim().is_empty() {
                    report.summary = Some(truncate_chars(&result.text, MAX_SUMMARY_CHARS));
                }
                report.is_error = result.is_error || exit_code != Some(0);
                if result.is_error
                    && result.subtype != "error_max_turns"
                    && api_error_text().is_match(&result.text)
                {
                    api_evidence.get_or_insert_with(|| {
                        (
                            status_in(&result.text).or(self.last_retry_status),
                            truncate_chars(&result.text, MAX_EVIDENCE),
                        )
                    });
                }
            }
            None => {
                report.is_error = true;
                report
                    .notes
                    .push("Claude Code ended without a result event".to_string());
            }
        }
        if self.retrying {
            api_evidence.get_or_insert_with(|| {
                (
                    self.last_retry_status,
                    format!(
                        "Claude Code was still retrying the API ({}, last status {})",
                        crate::words::count(self.api_retries, "retry", "retries"),
                        self.last_retry_status
                            .map_or_else(|| "unknown".to_string(), |s| s.to_string())
                    ),
                )
            });
        }
        report.provider_failure = if let Some(message) = self.billing {
            Some(ProviderFailure::OutOfCredits { message })
        } else if report.is_error {
            api_evidence.map(|(status, message)| ProviderFailure::ApiError { status, message })
        } else {
            None
        };
        report
    }
}
