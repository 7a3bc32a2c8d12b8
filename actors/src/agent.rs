//! Agent presets (`command`, `claude-code`): the command line of one attempt, and what the
//! agent's output says about the run and about its provider.
//!
//! The attempt feeds every output line to an [`OutputWatcher`] (each line is also a heartbeat),
//! then calls [`OutputWatcher::finish`] with the exit code to get an [`AgentReport`]: cost,
//! tokens, summary, and whether the provider failed (`api_error`) or ran out of credits.
//! The agent's word never decides a pass: loopd runs verify itself.

mod claude;
mod command;

use std::path::{Path, PathBuf};

use crate::config::AgentConfig;
use crate::pricing::{Cost, Usage};

/// Longest summary kept from an agent, in characters.
pub const MAX_SUMMARY_CHARS: usize = 4000;

/// Prompts longer than this (bytes) are not passed as one argument (Linux caps a single argument
/// at 128 KiB); Claude Code is told to read the prompt file instead.
const MAX_PROMPT_ARG: usize = 100 * 1024;

/// The tools the claude-code preset allows without asking.
pub const CLAUDE_ALLOWED_TOOLS: &str = "Bash,Edit,Write,Read,Glob,Grep";

/// Environment for Claude Code running unattended: no auto-update, no telemetry, no error
/// reports, no other non-essential traffic.
pub const CLAUDE_ENV: [(&str, &str); 4] = [
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
];

/// What Claude Code reads from its environment: its API key, base URL and model settings
/// (`ANTHROPIC_*`), its own switches and config folder (`CLAUDE_*`, including
/// `CLAUDE_CONFIG_DIR`, where a logged-in user's credentials live), Bedrock and Vertex settings
/// (`AWS_*`, `CLOUD_ML_REGION`, `GOOGLE_*`), the proxy and the CA certificates a network may
/// need, and `XDG_CONFIG_HOME`.
pub const CLAUDE_INHERIT: &[&str] = &[
    "ANTHROPIC_*",
    "CLAUDE_*",
    "AWS_*",
    "CLOUD_ML_REGION",
    "GOOGLE_*",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "XDG_CONFIG_HOME",
];

/// The command line of one attempt, before loopd adds the workdir and its `LOOPD_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The executable (looked up on PATH when it has no slash).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables the preset sets.
    pub env: Vec<(String, String)>,
    /// Variables of loopd's environment the preset's agent needs (names or `PREFIX*`), beyond
    /// [`crate::process::SESSION_VARS`].
    pub inherit: &'static [&'static str],
}

impl CommandLine {
    /// A `tokio` command with program, arguments and the preset's environment, inheriting from
    /// loopd only the session variables, the preset's [`CommandLine::inherit`] and `passthrough`
    /// (the loop's `env_passthrough`); the caller adds the current directory, the loop's env and
    /// `LOOPD_*`, and spawns it with [`crate::process::spawn_group`].
    /// `env` is the loop's, for the `PATH` the program is found on.
    pub fn command(
        &self,
        passthrough: &[String],
        env: &std::collections::BTreeMap<String, String>,
    ) -> tokio::process::Command {
        let program = crate::process::resolve_program(
            &self.program,
            crate::process::child_path(env).as_deref(),
        );
        let mut cmd = tokio::process::Command::new(program);
        crate::process::inherit_only(
            &mut cmd,
            self.inherit
                .iter()
                .copied()
                .chain(passthrough.iter().map(String::as_str)),
        );
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// The command line for one attempt. `prompt_file` holds the rendered prompt (also passed in
/// `prompt`); command agents find it through `LOOPD_PROMPT_FILE`, which the caller sets.
pub fn command_line(
    cfg: &AgentConfig,
    model: Option<&str>,
    prompt: &str,
    prompt_file: &Path,
) -> CommandLine {
    match cfg {
        AgentConfig::Command { command, .. } => CommandLine {
            program: PathBuf::from(command.first().cloned().unwrap_or_default()),
            args: command.iter().skip(1).cloned().collect(),
            env: Vec::new(),
            inherit: &[],
        },
        AgentConfig::ClaudeCode { binary, extra_args } => {
            let prompt = if prompt.len() > MAX_PROMPT_ARG {
                format!(
                    "Your instructions are in the file {}. Read all of it first, then follow it.",
                    prompt_file.display()
                )
            } else {
                prompt.to_string()
            };
            let mut args: Vec<String> = vec![
                "-p".into(),
                prompt,
                "--output-format".into(),
                "stream-json".into(),
                "--verbose".into(),
                "--permission-mode".into(),
                "acceptEdits".into(),
                "--allowedTools".into(),
                CLAUDE_ALLOWED_TOOLS.into(),
            ];
            if let Some(model) = model {
                args.extend(["--model".to_string(), model.to_string()]);
            }
            args.extend(extra_args.iter().cloned());
            CommandLine {
                program: binary.clone().unwrap_or_else(|| PathBuf::from("claude")),
                args,
                env: CLAUDE_ENV
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                inherit: CLAUDE_INHERIT,
            }
        }
    }
}

/// Checks the agent's regular expressions; every invalid one is listed (key, pattern, error),
/// and so is a cost or token pattern without the named groups it must capture with
/// ([`AgentConfig::pattern_problems`], which the loader reports).
pub fn check_patterns(cfg: &AgentConfig) -> Result<(), String> {
    let problems: Vec<String> = cfg
        .pattern_problems()
        .into_iter()
        .map(|(key, why)| match key.rsplit_once('/') {
            Some((list, i)) => format!("{}[{i}]: {why}", list.replace('/', ".")),
            None => format!("{key}: {why}"),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// What one line of agent output meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// Ordinary output (tool use, text, anything not listed below).
    Output,
    /// Claude Code is retrying a failed API request on its own (`system`/`api_retry`).
    ApiRetry {
        /// The HTTP status of the failed request, when known (529 overloaded, 429, 5xx).
        status: Option<u16>,
    },
    /// The line says the provider's API failed (an `api_error_patterns` match, or a Claude Code
    /// assistant message with a rate-limit or server error).
    ApiError {
        /// The HTTP status, when the line names one.
        status: Option<u16>,
    },
    /// The line says the credit balance is empty (`billing_patterns`, `billing_error`).
    Billing,
    /// Claude Code's final `result` event.
    Result,
    /// Not a stream-json event (kept in the transcript, otherwise ignored).
    Malformed,
}

/// What the agent's run says about the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderFailure {
    /// The API failed (429, 5xx, 529 overloaded, network): back off, do not count the attempt.
    ApiError {
        /// The HTTP status, when known.
        status: Option<u16>,
        /// Evidence, for people: the line or the message that showed it.
        message: String,
    },
    /// The credit balance is empty: pause every loop of the provider.
    OutOfCredits {
        /// Evidence, for people.
        message: String,
    },
}

/// What the agent reported about its run, once it exited (or was ended).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentReport {
    /// Cost in US dollars, when the agent said (the price table is applied later, by
    /// [`AgentReport::cost`]).
    pub cost_usd: Option<f64>,
    /// The agent reported its tokens (the three counts below mean something even when 0).
    pub tokens_reported: bool,
    /// Input tokens, cache reads and writes included (0 when the agent did not say).
    pub input_tokens: u64,
    /// Of the input tokens, those read from the provider's cache (0 when the agent did not say).
    pub cached_input_tokens: u64,
    /// Output tokens (0 when the agent did not say).
    pub output_tokens: u64,
    /// The agent's own account of what it did, truncated to [`MAX_SUMMARY_CHARS`].
    pub summary: Option<String>,
    /// The agent says its run failed (non-zero exit, `is_error`, or no final result).
    pub is_error: bool,
    /// What the run says about the provider; `None` when nothing points at it.
    pub provider_failure: Option<ProviderFailure>,
    /// API retries Claude Code reported (`api_retry` events).
    pub api_retries: u32,
    /// Lines that were not stream-json (claude-code only).
    pub malformed_lines: u32,
    /// Things worth a line in the log: an unreadable result file, an invalid pattern, ...
    pub notes: Vec<String>,
}

impl AgentReport {
    /// The run's cost: the agent's own figure, else its tokens at `pricing`'s prices for
    /// `model`, else unknown (and why).
    pub fn cost(&self, model: Option<&str>, pricing: &crate::pricing::Pricing) -> Cost {
        let usage = self.tokens_reported.then_some(Usage {
            input_tokens: self.input_tokens,
            cached_input_tokens: self.cached_input_tokens,
            output_tokens: self.output_tokens,
        });
        crate::pricing::cost(self.cost_usd, usage.as_ref(), model, pricing)
    }
}

/// Watches one attempt's output line by line.
#[derive(Debug)]
pub struct OutputWatcher {
    /// The preset-specific state.
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Command(command::CommandWatcher),
    Claude(claude::ClaudeWatcher),
}

impl OutputWatcher {
    /// A watcher for `cfg`'s agent. Invalid patterns are skipped with a note in the report
    /// (validation refuses them earlier with [`check_patterns`]).
    pub fn new(cfg: &AgentConfig) -> Self {
        let inner = match cfg {
            AgentConfig::Command { .. } => Inner::Command(command::CommandWatcher::new(cfg)),
            AgentConfig::ClaudeCode { .. } => Inner::Claude(claude::ClaudeWatcher::default()),
        };
        OutputWatcher { inner }
    }

    /// What the line meant.
    pub fn line(&mut self, line: &str) -> LineEvent {
        match &mut self.inner {
            Inner::Command(w) => w.line(line),
            Inner::Claude(w) => w.line(line),
        }
    }

    /// The report, from what was seen, the exit code (`None`: killed by a signal or never
    /// waited) and, for command agents, the `LOOPD_RESULT_FILE` they may have written.
    ///
    /// Reads the result file synchronously: it is small and capped at 1 MiB.
    pub fn finish(self, exit_code: Option<i32>, result_file: &Path) -> AgentReport {
        match self.inner {
            Inner::Command(w) => w.finish(exit_code, result_file),
            Inner::Claude(w) => w.finish(exit_code),
        }
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
