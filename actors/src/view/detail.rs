//! `loopd status LOOP` and `GET /api/loops/:id?view=detail`: one loop with what a person asks
//! next (where it works, with which agent, against which budget), like `pm2 show`.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LoopView;
use crate::config::{AgentConfig, LoopConfig};

/// One loop in detail: its full view plus its settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoopDetail {
    /// Exactly what `GET /api/loops/:id` returns.
    #[serde(flatten)]
    pub view: LoopView,
    /// Its configuration, as far as a person needs it; absent when the daemon or the fleet
    /// file does not know the loop's configuration (a loop the store alone remembers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<LoopSettings>,
}

/// The parts of a loop's configuration that `status LOOP` shows. Never the agent's
/// environment: it may hold secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoopSettings {
    /// The git working tree (resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// The tests file (resolved).
    pub tests_file: PathBuf,
    /// The agent: `claude-code`, `codex` or the command's program.
    pub agent: String,
    /// The provider whose API the agent uses.
    pub provider: String,
    /// The agent's model, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Counted failures before a test is `failed`.
    pub max_attempts: u32,
    /// Dollars the loop may spend in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Attempts the loop may make in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts_total: Option<u32>,
}

impl From<&LoopConfig> for LoopSettings {
    fn from(lp: &LoopConfig) -> LoopSettings {
        let agent = match &lp.agent {
            AgentConfig::ClaudeCode { binary, .. } => binary.as_ref().map_or_else(
                || "claude-code".into(),
                |b| format!("claude-code ({})", b.display()),
            ),
            AgentConfig::Codex { binary, .. } => binary
                .as_ref()
                .map_or_else(|| "codex".into(), |b| format!("codex ({})", b.display())),
            AgentConfig::Command { command, .. } => command.first().cloned().unwrap_or_default(),
        };
        LoopSettings {
            workdir: lp.workdir.clone(),
            tests_file: lp.tests_file.clone(),
            agent,
            provider: lp.agent.provider().to_string(),
            model: lp.model.clone(),
            max_attempts: lp.max_attempts,
            budget_usd: lp.budget_usd,
            max_attempts_total: lp.max_attempts_total,
        }
    }
}
