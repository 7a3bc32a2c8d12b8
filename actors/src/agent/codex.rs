//! OpenAI's Codex CLI: its unattended command line, the `config.toml` of the `CODEX_HOME` loopd
//! gives each attempt, and its `codex exec --json` events.
//!
//! Checked with `@openai/codex` 0.171.0 (the version `.ci/install-agents.sh` pins) against the
//! mock Responses API of `tests/support/mock_openai.rs`; the recordings are under
//! `tests/fixtures/codex/`. One JSON object a line on stdout:
//! `thread.started`, `turn.started`, `item.started` / `item.completed` (`agent_message{text}`,
//! `command_execution{command, aggregated_output, exit_code}`, `file_change{changes}`,
//! `reasoning`, `error`, ...), then `turn.completed{usage}` (`input_tokens` with the cached ones
//! in them, `cached_input_tokens`, `output_tokens` with the reasoning ones in them; no cost), or
//! `error{message}` and `turn.failed{error{message}}` with exit 1. Codex retries the API on its
//! own and says so in `error` lines whose message starts `Reconnecting...`; those are not the
//! end of the turn. What it prints when it gives up (measured):
//! - a 429 that never clears: `exceeded retry limit, last status: 429 Too Many Requests`;
//! - HTTP 500: `We're currently experiencing high demand, ...` (after its retries, no status);
//! - 502/503 without a JSON body: `unexpected status 503 Service Unavailable: ...`;
//! - `response.failed`, or a stream cut short: `stream disconnected before completion: ...`;
//! - an unreachable endpoint (with `unbounded_connection_retries` off, as loopd sets it):
//!   `Connection failed: error sending request`;
//! - `insufficient_quota` (as HTTP 429 or in `response.failed`): `Quota exceeded. Check your plan
//!   and billing details.`, with no retry; a plan's `usage_limit_reached`: `You've hit your usage
//!   limit. ... try again at 6:52 PM.`
//!
//! A stream that stops mid-way leaves Codex silent after `turn.started` for its idle timeout
//! (300 s, five times over): loopd's `stall_timeout` ends it first.

use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use super::command::status_in;
use super::{truncate_chars, AgentReport, LineEvent, ProviderFailure, MAX_SUMMARY_CHARS};

/// Longest piece of evidence kept from an event.
const MAX_EVIDENCE: usize = 500;

/// The model provider id loopd writes for `base_url`.
pub const PROVIDER_ID: &str = "loopd";

/// What Codex reads from its environment beyond the session variables: its API keys and
/// organisation, the proxy and CA variables a network may need.
pub const CODEX_INHERIT: &[&str] = &[
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
    "OPENAI_ORGANIZATION",
    "OPENAI_PROJECT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CODEX_CA_CERTIFICATE",
];

/// The `config.toml` loopd writes into an attempt's `CODEX_HOME`: never ask for approval, run
/// commands without Codex's own sandbox (loopd's is the place for isolation, and Codex's
/// bubblewrap cannot nest in it), no update check, analytics or OpenTelemetry export, no plugins
/// (they reach github.com and chatgpt.com at start), and connection failures that end the turn
/// (`unbounded_connection_retries` would otherwise retry an unreachable endpoint for ever,
/// where loopd's provider backoff should take over). With `base_url`, a model provider `loopd`
/// speaking the Responses API with the key from `key_env`.
pub fn config_toml(base_url: Option<&str>, key_env: &str) -> String {
    use toml::{Table, Value as T};
    let table = |pairs: &[(&str, T)]| -> T {
        T::Table(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let mut doc = Table::new();
    doc.insert("approval_policy".into(), "never".into());
    doc.insert("sandbox_mode".into(), "danger-full-access".into());
    doc.insert("check_for_update_on_startup".into(), false.into());
    if let Some(url) = base_url {
        doc.insert("model_provider".into(), PROVIDER_ID.into());
        doc.insert(
            "model_providers".into(),
            table(&[(
                PROVIDER_ID,
                table(&[
                    ("name", "loopd base_url".into()),
                    ("base_url", url.into()),
                    ("env_key", key_env.into()),
                    ("wire_api", "responses".into()),
                ]),
            )]),
        );
    }
    doc.insert("analytics".into(), table(&[("enabled", false.into())]));
    doc.insert("otel".into(), table(&[("exporter", "none".into())]));
    doc.insert(
        "features".into(),
        table(&[
            ("plugins", false.into()),
            ("apps", false.into()),
            ("unbounded_connection_retries", false.into()),
        ]),
    );
    format!(
        "# Written by loopd for one attempt of a codex agent; remade for every attempt.\n{}",
        toml::to_string(&doc).expect("a table of strings and booleans serializes")
    )
}

/// Makes `home` a fresh `CODEX_HOME` holding only loopd's `config.toml`: what an earlier
/// attempt's agent left there (hooks, rules, a changed config) is gone.
pub fn prepare_home(home: &Path, base_url: Option<&str>, key_env: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(home) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(home)?;
    std::fs::write(home.join("config.toml"), config_toml(base_url, key_env))
}

/// Words of an error that say the account is out of quota or credit (not a rate limit).
fn quota_text() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)quota exceeded|insufficient_quota|exceeded your current quota|usage limit|usage_limit_reached|purchase more credits|credit balance|billing details",
        )
        .expect("valid")
    })
}

/// Words of an error that point at the provider's API rather than at the agent's work.
fn api_error_text() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)exceeded retry limit|last status|unexpected status|stream disconnected|high demand|connection failed|error sending request|idle timeout|rate[ _-]?limit|server[ _]error|overloaded|service unavailable|bad gateway|gateway timeout|timed out|\b(429|5[0-9]{2})\b",
        )
        .expect("valid")
    })
}

/// The token counts of `turn.completed`.
#[derive(Debug, Default, Clone, Copy)]
struct Tokens {
    input: u64,
    cached: u64,
    output: u64,
}

#[derive(Debug, Default)]
pub(super) struct CodexWatcher {
    /// `Reconnecting...` lines seen.
    retries: u32,
    /// The HTTP status the last `Reconnecting...` line named.
    last_retry_status: Option<u16>,
    /// The last event was a `Reconnecting...` line: Codex was still waiting on the API.
    retrying: bool,
    /// The text of the last `agent_message`.
    last_message: Option<String>,
    /// Tokens of the `turn.completed` events, added up; `None` before the first.
    tokens: Option<Tokens>,
    /// Turns that completed.
    completed: u32,
    /// The message of the `turn.failed`, once seen.
    failed: Option<String>,
    /// The last `error` line that was not a retry.
    last_error: Option<String>,
    /// An error that said the quota or credit is gone.
    quota: Option<String>,
    /// Lines that were not JSON events.
    malformed: u32,
    /// Things worth a log line.
    notes: Vec<String>,
}

impl CodexWatcher {
    pub(super) fn line(&mut self, line: &str) -> LineEvent {
        let event: Value = match serde_json::from_str(line) {
            Ok(event @ Value::Object(_)) => event,
            _ => return self.not_an_event(line),
        };
        let Some(kind) = event.get("type").and_then(Value::as_str) else {
            return self.not_an_event(line);
        };
        match kind {
            "error" => {
                let message = event
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.error(message)
            }
            "turn.completed" => {
                self.retrying = false;
                self.completed += 1;
                let u64_at =
                    |pointer: &str| event.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
                let seen = self.tokens.get_or_insert_with(Tokens::default);
                seen.input = seen.input.saturating_add(u64_at("/usage/input_tokens"));
                seen.cached = seen
                    .cached
                    .saturating_add(u64_at("/usage/cached_input_tokens"));
                seen.output = seen.output.saturating_add(u64_at("/usage/output_tokens"));
                LineEvent::Result
            }
            "turn.failed" => {
                self.retrying = false;
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the turn failed")
                    .to_string();
                let class = self.classify(&message);
                self.failed = Some(message);
                match class {
                    LineEvent::Billing => LineEvent::Billing,
                    _ => LineEvent::Result,
                }
            }
            "item.started" | "item.updated" | "item.completed" => {
                self.retrying = false;
                if kind == "item.completed" {
                    self.item(&event);
                }
                LineEvent::Output
            }
            _ => LineEvent::Output,
        }
    }

    fn not_an_event(&mut self, line: &str) -> LineEvent {
        if line.trim().is_empty() {
            return LineEvent::Output;
        }
        // Codex's stderr ("Reading additional input from stdin...") is plain text.
        self.malformed += 1;
        LineEvent::Malformed
    }

    fn item(&mut self, event: &Value) {
        let item = &event["item"];
        match item.get("type").and_then(Value::as_str) {
            Some("agent_message") => {
                if let Some(text) = item.get("text").and_then(Value::as_str) {
                    self.last_message = Some(text.to_string());
                }
            }
            Some("error") => {
                if let Some(message) = item.get("message").and_then(Value::as_str) {
                    self.notes
                        .push(format!("codex: {}", truncate_chars(message, MAX_EVIDENCE)));
                }
            }
            _ => {}
        }
    }

    /// An `error` line: a retry Codex is making, or what it gave up on.
    fn error(&mut self, message: &str) -> LineEvent {
        if message.trim_start().starts_with("Reconnecting") {
            let status = status_in(message);
            self.retries += 1;
            self.last_retry_status = status.or(self.last_retry_status);
            self.retrying = true;
            return LineEvent::ApiRetry { status };
        }
        self.retrying = false;
        self.last_error = Some(message.to_string());
        self.classify(message)
    }

    /// What an error message says about the provider.
    fn classify(&mut self, message: &str) -> LineEvent {
        if quota_text().is_match(message) {
            self.quota
                .get_or_insert_with(|| truncate_chars(message, MAX_EVIDENCE));
            return LineEvent::Billing;
        }
        if api_error_text().is_match(message) {
            return LineEvent::ApiError {
                status: status_in(message),
            };
        }
        LineEvent::Output
    }

    pub(super) fn finish(mut self, exit_code: Option<i32>) -> AgentReport {
        let mut report = AgentReport {
            api_retries: self.retries,
            malformed_lines: self.malformed,
            ..AgentReport::default()
        };
        if let Some(t) = self.tokens {
            report.tokens_reported = true;
            report.input_tokens = t.input.max(t.cached);
            report.cached_input_tokens = t.cached;
            report.output_tokens = t.output;
        }
        let ended_well = self.completed > 0 && self.failed.is_none();
        report.is_error = !ended_well || exit_code != Some(0);
        let failure = self.failed.clone().or_else(|| self.last_error.clone());
        let summary = if ended_well {
            self.last_message.clone()
        } else {
            failure.clone().or_else(|| self.last_message.clone())
        };
        report.summary = summary
            .filter(|s| !s.trim().is_empty())
            .map(|s| truncate_chars(&s, MAX_SUMMARY_CHARS));
        if self.completed == 0 && self.failed.is_none() {
            self.notes
                .push("codex ended without turn.completed or turn.failed".to_string());
        }
        let api_evidence = failure
            .filter(|m| api_error_text().is_match(m))
            .map(|m| {
                (
                    status_in(&m).or(self.last_retry_status),
                    truncate_chars(&m, MAX_EVIDENCE),
                )
            })
            .or_else(|| {
                self.retrying.then(|| {
                    (
                        self.last_retry_status,
                        format!(
                            "Codex was still reconnecting to the API ({})",
                            crate::words::count(self.retries, "retry", "retries"),
                        ),
                    )
                })
            });
        // A run that went on to complete its turn was not stopped by its provider, whatever
        // it printed on the way.
        report.provider_failure = match (report.is_error, self.quota) {
            (false, _) => None,
            (true, Some(message)) => Some(ProviderFailure::OutOfCredits { message }),
            (true, None) => {
                api_evidence.map(|(status, message)| ProviderFailure::ApiError { status, message })
            }
        };
        report.notes = self.notes;
        report
    }
}

#[cfg(test)]
mod tests;
