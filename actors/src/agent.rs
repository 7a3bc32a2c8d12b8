//! Agent presets (`command`, `claude-code`, `codex`): the command line of one attempt, the files
//! a preset needs before it starts, and what the agent's output says about the run and about its
//! provider.
//!
//! The attempt feeds every output line to an [`OutputWatcher`] (each line is also a heartbeat),
//! then calls [`OutputWatcher::finish`] with the exit code to get an [`AgentReport`]: cost,
//! tokens, summary, and whether the provider failed (`api_error`) or ran out of credits.
//! The agent's word never decides a pass: loopd runs verify itself.

mod claude;
mod codex;
mod command;

use std::path::{Path, PathBuf};

use crate::config::{AgentConfig, CODEX_DEFAULT_KEY_ENV};
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
    pub inherit: Vec<String>,
}

/// Where one attempt's agent runs and keeps its files.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The folder it works in (the loop's workdir, or its lane).
    pub workdir: &'a Path,
    /// The rendered prompt (`LOOPD_PROMPT_FILE`).
    pub prompt_file: &'a Path,
    /// A folder of the attempt's own, under the state directory, for a preset that needs a home
    /// of its own (codex: `CODEX_HOME`); made by [`prepare`], removed when the attempt ends.
    pub home: &'a Path,
    /// loopd keeps the workdir in git (checkpoints on): an agent's own check that it runs in a
    /// repository need not be skipped.
    pub in_git: bool,
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
                .map(String::as_str)
                .chain(passthrough.iter().map(String::as_str)),
        );
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// The prompt as one argument, or, when it is too long for one, where to read it.
fn prompt_arg(prompt: &str, prompt_file: &Path) -> String {
    if prompt.len() > MAX_PROMPT_ARG {
        format!(
            "Your instructions are in the file {}. Read all of it first, then follow it.",
            prompt_file.display()
        )
    } else {
        prompt.to_string()
    }
}

/// The command line for one attempt at `place`. The rendered prompt is also in
/// `place.prompt_file`; command agents find it through `LOOPD_PROMPT_FILE`, which the caller
/// sets.
pub fn command_line(
    cfg: &AgentConfig,
    model: Option<&str>,
    prompt: &str,
    place: &Place,
) -> CommandLine {
    match cfg {
        AgentConfig::Command { command, .. } => CommandLine {
            program: PathBuf::from(command.first().cloned().unwrap_or_default()),
            args: command.iter().skip(1).cloned().collect(),
            env: Vec::new(),
            inherit: Vec::new(),
        },
        AgentConfig::ClaudeCode { binary, extra_args } => {
            let mut args: Vec<String> = vec![
                "-p".into(),
                prompt_arg(prompt, place.prompt_file),
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
                inherit: CLAUDE_INHERIT.iter().map(|s| s.to_string()).collect(),
            }
        }
        AgentConfig::Codex {
            binary,
            extra_args,
            base_url,
            api_key_env,
        } => {
            // Sandbox and approval are in the attempt's config.toml ([`prepare`]), so that a
            // `-s` in extra_args can override them: codex refuses `-s` twice.
            let mut args: Vec<String> = vec![
                "exec".into(),
                "--json".into(),
                "--ephemeral".into(),
                "-C".into(),
                place.workdir.display().to_string(),
            ];
            if !place.in_git {
                args.push("--skip-git-repo-check".into());
            }
            if let Some(model) = model {
                args.extend(["--model".to_string(), model.to_string()]);
            }
            args.extend(extra_args.iter().cloned());
            // After `--` a prompt that starts with `-` or reads `resume` is still the prompt.
            args.extend(["--".to_string(), prompt_arg(prompt, place.prompt_file)]);
            let mut inherit: Vec<String> =
                codex::CODEX_INHERIT.iter().map(|s| s.to_string()).collect();
            if base_url.is_some() {
                inherit.push(
                    api_key_env
                        .clone()
                        .unwrap_or_else(|| CODEX_DEFAULT_KEY_ENV.to_string()),
                );
            }
            CommandLine {
                program: binary.clone().unwrap_or_else(|| PathBuf::from("codex")),
                args,
                env: vec![("CODEX_HOME".to_string(), place.home.display().to_string())],
                inherit,
            }
        }
    }
}

/// Makes the files `cfg`'s agent needs before it starts at `place` (blocking: run it off the
/// runtime): for codex, a fresh `CODEX_HOME` with loopd's `config.toml`. Nothing for the others.
pub fn prepare(cfg: &AgentConfig, place: &Place) -> std::io::Result<()> {
    match cfg {
        AgentConfig::Codex {
            base_url,
            api_key_env,
            ..
        } => codex::prepare_home(
            place.home,
            base_url.as_deref(),
            api_key_env.as_deref().unwrap_or(CODEX_DEFAULT_KEY_ENV),
        ),
        AgentConfig::Command { .. } | AgentConfig::ClaudeCode { .. } => Ok(()),
    }
}

/// The `config.toml` a codex agent gets: what [`prepare`] writes (for tests and people).
pub fn codex_config_toml(base_url: Option<&str>, api_key_env: Option<&str>) -> String {
    codex::config_toml(base_url, api_key_env.unwrap_or(CODEX_DEFAULT_KEY_ENV))
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
    /// The agent is retrying a failed API request on its own (Claude Code's `system`/`api_retry`,
    /// Codex's `Reconnecting...` errors).
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
    /// The agent's final event (Claude Code's `result`, Codex's `turn.completed` or
    /// `turn.failed`).
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
    /// API retries the agent reported (Claude Code's `api_retry` events, Codex's
    /// `Reconnecting...` lines).
    pub api_retries: u32,
    /// Lines that were not JSON events (claude-code and codex only).
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
    Codex(codex::CodexWatcher),
}

impl OutputWatcher {
    /// A watcher for `cfg`'s agent. Invalid patterns are skipped with a note in the report
    /// (validation refuses them earlier with [`check_patterns`]).
    pub fn new(cfg: &AgentConfig) -> Self {
        let inner = match cfg {
            AgentConfig::Command { .. } => Inner::Command(command::CommandWatcher::new(cfg)),
            AgentConfig::ClaudeCode { .. } => Inner::Claude(claude::ClaudeWatcher::default()),
            AgentConfig::Codex { .. } => Inner::Codex(codex::CodexWatcher::default()),
        };
        OutputWatcher { inner }
    }

    /// What the line meant.
    pub fn line(&mut self, line: &str) -> LineEvent {
        match &mut self.inner {
            Inner::Command(w) => w.line(line),
            Inner::Claude(w) => w.line(line),
            Inner::Codex(w) => w.line(line),
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
            Inner::Codex(w) => w.finish(exit_code),
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
