//! The fleet file (`loopd.toml`) and the loops it describes.
//!
//! These structs are the user's documentation: every field says what it is, then its default.
//! The loader resolves relative paths against the file that names them, so after loading every
//! path in a [`Fleet`] is absolute.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod check;
mod env;
mod inputs;
mod load;
mod locate;
mod report;
mod salvage;
mod schema_fix;
mod tests_check;
mod validate;
mod webhooks;

pub use inputs::{input_schemas, schema_of};
pub use load::{load_fleet, load_fleet_with_env};
pub use report::{Problem, Report};
pub use tests_check::{load_tests, resolve_spec};
pub use validate::{parse_loop_value, validate_fleet, validate_fleet_with_env};
pub use webhooks::{unresolved_secrets, Secret, WebhookConfig, WebhookEvent};

/// The fleet file as written by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Settings for the whole fleet.
    #[serde(default)]
    pub fleet: FleetSettings,
    /// Glob patterns of files that each hold one loop (same schema as a `[[loops]]` table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// The loops of this fleet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<LoopConfig>,
    /// Endpoints told about what happens in the fleet (signed JSON POSTs, retried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// Prices per model (`[pricing."<model>"]`, the loop's `model`), for agents that report
    /// tokens but no cost. Your provider's prices: loopd ships none. Default empty (such an
    /// attempt's cost is recorded as unknown).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pricing: crate::pricing::Pricing,
}

/// The `[fleet]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// Where loopd keeps its store, its generation record and transcripts. Default `.loopd` next
    /// to the fleet file. No workdir may lie inside it.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How many agents may run at once across all loops. Default 1.
    #[serde(default = "default_max_concurrent_agents")]
    #[schemars(range(min = 1))]
    pub max_concurrent_agents: usize,
    /// Restart intensity: a loop actor restarted more than this many times within
    /// `restart_window` is marked `crashed`. Default 5.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: usize,
    /// Restart intensity window. Default "60s".
    #[serde(default = "default_restart_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub restart_window: Duration,
    /// First backoff before restarting a crashed loop actor; doubled per restart in the window.
    /// Default "100ms".
    #[serde(default = "default_restart_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub restart_backoff: Duration,
    /// How long a waiting slot request takes to climb one priority level. Default "30s".
    #[serde(default = "default_aging", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub aging: Duration,
    /// Longest provider-wide backoff after API errors. Default "5m".
    #[serde(default = "default_api_backoff_max", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub api_backoff_max: Duration,
    /// API errors in a row before an alert. Default 3.
    #[serde(default = "default_api_alert_after")]
    pub api_alert_after: u32,
    /// How long a provider out of credits stays paused before loopd probes it. Default "15m".
    #[serde(default = "default_credit_probe_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub credit_probe_interval: Duration,
    /// How often the monitor checks that every loop actor still answers. Default "10s".
    #[serde(default = "default_ping", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ping_interval: Duration,
    /// How long a loop actor may take to answer before it is killed and restarted. Default "10s".
    #[serde(default = "default_ping", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ping_timeout: Duration,
    /// Dollars the whole fleet may spend; reaching it pauses every loop (`budget_exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Attempts the whole fleet may make; reaching it pauses every loop (`budget_exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts_total: Option<u32>,
    /// The folder of loop templates (`<NAME>.toml`) that `POST /api/loops {"template": NAME}`
    /// and `loopd new` render. Default "loop-templates" next to the fleet file.
    #[serde(default = "default_templates_dir")]
    pub templates_dir: PathBuf,
    /// How often the daemon makes the morning report of the period since the last one and
    /// sends it as the webhook event `report` (to every `[[webhooks]]` entry whose `events`
    /// include `report`, or leave `events` out). A duration such as "24h"; at least "1s".
    /// Default: off.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub report_every: Option<Duration>,
}

fn default_max_restarts() -> usize {
    5
}
fn default_restart_window() -> Duration {
    Duration::from_secs(60)
}
fn default_restart_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_aging() -> Duration {
    Duration::from_secs(30)
}
fn default_api_backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn default_api_alert_after() -> u32 {
    3
}
fn default_ping() -> Duration {
    Duration::from_secs(10)
}
fn default_credit_probe_interval() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".loopd")
}

fn default_templates_dir() -> PathBuf {
    PathBuf::from("loop-templates")
}

fn default_max_concurrent_agents() -> usize {
    1
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            state_dir: default_state_dir(),
            max_concurrent_agents: default_max_concurrent_agents(),
            max_restarts: default_max_restarts(),
            restart_window: default_restart_window(),
            restart_backoff: default_restart_backoff(),
            aging: default_aging(),
            api_backoff_max: default_api_backoff_max(),
            api_alert_after: default_api_alert_after(),
            credit_probe_interval: default_credit_probe_interval(),
            ping_interval: default_ping(),
            ping_timeout: default_ping(),
            budget_usd: None,
            max_attempts_total: None,
            templates_dir: default_templates_dir(),
            report_every: None,
        }
    }
}

/// One loop: an agent driven through a tests file in one git working tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = schema_fix::accept_tests_file_alias)]
pub struct LoopConfig {
    /// Unique in the fleet; `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (it becomes paths).
    pub name: String,
    /// The git working tree the agent works in. Default `workdirs/<name>` next to the fleet
    /// file; never inside the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Create the workdir (and `git init` it) when it does not exist. Default false.
    #[serde(default)]
    pub init_workdir: bool,
    /// A folder copied into the workdir when loopd creates it (with `init_workdir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir_template: Option<PathBuf>,
    /// Start even when the workdir has uncommitted changes. Default false.
    #[serde(default)]
    pub allow_dirty: bool,
    /// The JSON tests file (alias `test_state_file`, the prototype's name).
    #[serde(alias = "test_state_file")]
    pub tests_file: PathBuf,
    /// A folder of spec documents that tests may name with `spec_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs_dir: Option<PathBuf>,
    /// The model the agent should use (passed to the claude-code and codex presets as
    /// `--model`); also the `[pricing]` entry an agent's tokens are priced by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Counted failures before a test is `failed`. Default 3.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// How many attempts of this loop's tests may run at once, each in its own git worktree
    /// (`<state_dir>/lanes/<loop>/<k>`); passes are merged through the loop's merge queue.
    /// Default 1: one attempt at a time, in the workdir itself.
    #[serde(default = "default_lanes")]
    #[schemars(range(min = 1))]
    pub lanes: u32,
    /// 1 is highest. Default 5.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 1))]
    pub priority: u32,
    /// Let the healer try other strategies after `max_attempts`. Default false.
    #[serde(default)]
    pub auto_heal: bool,
    /// Wall-clock limit of one agent run. Default "30m".
    #[serde(default = "default_iteration_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub iteration_timeout: Duration,
    /// Longest silence (no agent output) before the attempt is `stalled`. Default "10m".
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stall_timeout: Duration,
    /// Wall-clock limit of one verify run; overrunning it is a failure. Default "5m".
    #[serde(default = "default_verify_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub verify_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an agent's process group is ended. Default "5s".
    #[serde(default = "default_kill_grace", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub kill_grace: Duration,
    /// Whether `stalled` and `timed_out` count toward `max_attempts`. Default true.
    #[serde(default = "default_true")]
    pub count_timeouts: bool,
    /// Most bytes kept of one attempt's transcript; beyond it the first and the last half are
    /// kept and the cut is marked `[loopd: N bytes cut]`. Default 67108864 (64 MiB).
    #[serde(default = "default_max_transcript_bytes")]
    #[schemars(range(min = 4096))]
    pub max_transcript_bytes: u64,
    /// Commit each pass and reset failures to the last checkpoint. Default true.
    #[serde(default = "default_true")]
    pub checkpoints: bool,
    /// What happens to tests behind a test that failed for good: `wait` for a person, `skip`
    /// the blocker and run them anyway, or `heal` the blocker first. Default "wait".
    #[serde(default)]
    pub on_blocked: OnBlocked,
    /// After a pass, re-run the verify commands of tests that passed before; a broken one rolls
    /// the new commit back (outcome `regression`). Default false.
    #[serde(default)]
    pub regression: bool,
    /// With `auto_heal`: extra attempts the healer may spend on a test after `max_attempts`.
    /// Default 2.
    #[serde(default = "default_heal_attempts")]
    pub heal_attempts: u32,
    /// With `auto_heal`: dollars the healer may spend on a test after `max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_budget_usd: Option<f64>,
    /// With `auto_heal`: a stronger model for the healer's last strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_model: Option<String>,
    /// Dollars this loop may spend in all; reaching it pauses the loop (`budget_exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Attempts this loop may make in all; reaching it pauses the loop (`budget_exhausted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts_total: Option<u32>,
    /// The prompt template file. Default: the built-in template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<PathBuf>,
    /// Extra environment variables for the agent and verify.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables of loopd's own environment the agent and verify also inherit, beyond the
    /// session variables (`PATH`, `HOME`, `USER`, `LOGNAME`, `LANG`, `LC_*`, `TERM`, `TMPDIR`,
    /// `SHELL`) and what the agent's preset needs: names, or prefixes ending in `*`
    /// (`"AWS_*"`). `LOOPD_TOKEN` and webhook secrets never pass. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_passthrough: Vec<String>,
    /// The coding agent.
    pub agent: AgentConfig,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_lanes() -> u32 {
    1
}
fn default_priority() -> u32 {
    5
}
fn default_iteration_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_verify_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_kill_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_max_transcript_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_true() -> bool {
    true
}
fn default_heal_attempts() -> u32 {
    2
}

/// A loop's `on_blocked` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnBlocked {
    /// Dependents stay `blocked` until a person resets or skips the blocker.
    #[default]
    Wait,
    /// The blocker is set aside (`skipped`) and the dependents run past it.
    Skip,
    /// The healer works on the blocker first (as with `auto_heal`), then escalates.
    Heal,
}

/// The `[loops.agent]` table: which coding agent a loop drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AgentConfig {
    /// Any command line agent.
    Command {
        /// argv; the rendered prompt is in the file named by `LOOPD_PROMPT_FILE`.
        #[schemars(length(min = 1))]
        command: Vec<String>,
        /// Provider name shared by loops whose agents use the same API account. Default "command".
        #[serde(default = "default_command_provider")]
        provider: String,
        /// Exit codes that mean the provider's API failed (not counted).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        api_error_exit_codes: Vec<i32>,
        /// Regular expressions on the agent's output that mean the API failed (not counted).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        api_error_patterns: Vec<String>,
        /// Regular expressions on the agent's output that mean the credit balance is empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        billing_patterns: Vec<String>,
        /// Regular expressions on the agent's output that name what a request cost, in a
        /// group `(?P<usd>...)`; every match is added up (`"Cost: \\$(?P<usd>[0-9.]+) message"`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cost_patterns: Vec<String>,
        /// Regular expressions on the agent's output that name tokens, in groups
        /// `(?P<input>...)`, `(?P<output>...)`, `(?P<cached>...)` (cached input, part of
        /// input); every match is added up. Numbers may be written `1,234`, `2.3k` or `1.1M`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        token_patterns: Vec<String>,
    },
    /// Claude Code in unattended stream-json mode.
    ClaudeCode {
        /// The `claude` executable. Default `claude` on PATH.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
        /// Extra arguments appended to the generated command line.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extra_args: Vec<String>,
    },
    /// OpenAI's Codex CLI in unattended `codex exec --json` mode, with a `CODEX_HOME` of its own
    /// per attempt whose `config.toml` loopd writes.
    Codex {
        /// The `codex` executable. Default `codex` on PATH.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
        /// Extra arguments of `codex exec`, placed before the prompt (`["-s", "workspace-write"]`
        /// to use Codex's own sandbox instead of `danger-full-access`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extra_args: Vec<String>,
        /// A Responses API endpoint to use instead of OpenAI's (`"http://127.0.0.1:8080/v1"`):
        /// loopd writes it into the attempt's `config.toml` as a model provider. Default: Codex's
        /// own OpenAI provider, which reads `OPENAI_API_KEY` or `CODEX_API_KEY`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_url: Option<String>,
        /// With `base_url`: the environment variable (loopd's, or the loop's `env`) that holds
        /// the endpoint's API key. Default "OPENAI_API_KEY".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key_env: Option<String>,
    },
}

/// The variable that holds the key of a codex agent's `base_url` when `api_key_env` names none.
pub const CODEX_DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

fn default_command_provider() -> String {
    "command".into()
}

/// The named groups each of a command agent's usage pattern lists may capture with.
const PATTERN_GROUPS: [(&str, &[&str]); 2] = [
    ("cost_patterns", &["usd"]),
    ("token_patterns", &["input", "output", "cached"]),
];

impl AgentConfig {
    /// What is wrong with the agent's regular expressions, as `(key path under the loop,
    /// problem)`: one that does not compile, and a cost or token pattern that captures with no
    /// named group it may use, or with a group of another name.
    pub fn pattern_problems(&self) -> Vec<(String, String)> {
        let AgentConfig::Command {
            api_error_patterns,
            billing_patterns,
            cost_patterns,
            token_patterns,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for (key, patterns) in [
            ("api_error_patterns", api_error_patterns),
            ("billing_patterns", billing_patterns),
            ("cost_patterns", cost_patterns),
            ("token_patterns", token_patterns),
        ] {
            for (i, p) in patterns.iter().enumerate() {
                let at = format!("agent/{key}/{i}");
                let re = match regex::Regex::new(p) {
                    Ok(re) => re,
                    Err(e) => {
                        let e = e.to_string().replace('\n', " ");
                        problems.push((at, format!("invalid regular expression {p:?}: {e}")));
                        continue;
                    }
                };
                let Some((_, allowed)) = PATTERN_GROUPS.iter().find(|(k, _)| *k == key) else {
                    continue;
                };
                let expected = allowed
                    .iter()
                    .map(|g| format!("(?P<{g}>...)"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let names: Vec<&str> = re.capture_names().flatten().collect();
                if let Some(other) = names.iter().find(|n| !allowed.contains(n)) {
                    problems.push((
                        at,
                        format!("{p:?} has a group named `{other}`; expected only {expected}"),
                    ));
                } else if names.is_empty() {
                    problems.push((
                        at,
                        format!("{p:?} captures nothing by name; expected {expected}"),
                    ));
                }
            }
        }
        problems
    }

    /// What is wrong with the agent table beyond its schema, as `(key path under the loop,
    /// problem)`: [`AgentConfig::pattern_problems`], and a codex agent's `base_url` that is not
    /// an http(s) URL or an `api_key_env` that is no variable name or has no `base_url` to go with.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = self.pattern_problems();
        if let AgentConfig::Codex {
            base_url,
            api_key_env,
            ..
        } = self
        {
            if let Some(url) = base_url {
                let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
                let host = url.split_once("://").map_or("", |(_, rest)| rest);
                if !scheme_ok || host.is_empty() || url.chars().any(char::is_whitespace) {
                    problems.push((
                        "agent/base_url".into(),
                        format!(
                            "expected an http:// or https:// URL such as \"http://127.0.0.1:8080/v1\", found {url:?}"
                        ),
                    ));
                }
            }
            if let Some(var) = api_key_env {
                let name_ok = !var.is_empty()
                    && !var.starts_with(|c: char| c.is_ascii_digit())
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !name_ok {
                    problems.push((
                        "agent/api_key_env".into(),
                        format!("expected an environment variable name such as \"OPENAI_API_KEY\", found {var:?}"),
                    ));
                } else if base_url.is_none() {
                    problems.push((
                        "agent/api_key_env".into(),
                        "is read only with `base_url`; without it Codex's own OpenAI provider reads OPENAI_API_KEY or CODEX_API_KEY".into(),
                    ));
                }
            }
        }
        problems
    }

    /// The provider whose API this agent uses.
    pub fn provider(&self) -> &str {
        match self {
            AgentConfig::Command { provider, .. } => provider,
            AgentConfig::ClaudeCode { .. } => "anthropic",
            AgentConfig::Codex { .. } => "openai",
        }
    }
}

/// A loaded fleet: the fleet file with includes merged, environment overrides applied and every
/// path made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// The fleet file it was loaded from.
    pub file: PathBuf,
    /// `[fleet]`, with `state_dir` and `templates_dir` absolute.
    pub settings: FleetSettings,
    /// Every loop, from the file and its includes, paths absolute, `workdir` filled in.
    pub loops: Vec<LoopConfig>,
    /// The `[[webhooks]]`, with secrets from `secret_env` filled in.
    pub webhooks: Vec<WebhookConfig>,
    /// The `[pricing."<model>"]` table.
    pub pricing: crate::pricing::Pricing,
}
