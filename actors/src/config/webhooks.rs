//! The `[[webhooks]]` tables: endpoints told about what happens in the fleet.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One `[[webhooks]]` table: an endpoint, its secret and the events it wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://` or `https://`). Required.
    #[schemars(length(min = 1))]
    pub url: String,
    /// The key of the `X-Loopd-Signature` HMAC-SHA256. Never logged. Either this or
    /// `secret_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The environment variable that holds the secret (read when the fleet is loaded), so that
    /// the fleet file can be shared. Either this or `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The events this endpoint wants. Default: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WebhookEvent>,
    /// How many times one event is tried before it is given up (recorded `failed`). Default 8.
    #[serde(default = "default_max_tries")]
    #[schemars(range(min = 1))]
    pub max_tries: u32,
    /// The wait after the first failed try; doubled after each further one. Default "1s".
    #[serde(default = "default_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff: Duration,
    /// The longest wait between two tries. Default "2m".
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
    /// How long one request may take before it counts as failed. Default "10s".
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Events waiting for this endpoint at most; when full, the oldest is dropped (and recorded
    /// `dropped`), so a dead endpoint never holds memory or loops back. Default 1000.
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1))]
    pub queue: usize,
}

fn default_max_tries() -> u32 {
    8
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(120)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_queue() -> usize {
    1000
}

impl WebhookConfig {
    /// An endpoint with every default, for `url` and `secret`.
    pub fn new(url: &str, secret: &str) -> Self {
        WebhookConfig {
            url: url.to_string(),
            secret: Some(Secret(secret.to_string())),
            secret_env: None,
            events: Vec::new(),
            max_tries: default_max_tries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
            queue: default_queue(),
        }
    }

    /// Whether this endpoint wants `event`.
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

/// The names of the events a webhook may ask for (the `event` field of a delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// An attempt ended (its outcome is in `data.outcome`).
    AttemptFinished,
    /// A test passed.
    TestPassed,
    /// A test failed for good (`max_attempts` reached).
    TestFailed,
    /// A test became blocked behind a dependency.
    TestBlocked,
    /// A loop paused (`data.reason`: `by_user`, `out_of_credits`, `budget_exhausted`, ...).
    LoopPaused,
    /// A loop crashed past its restart intensity.
    LoopCrashed,
    /// A loop has no runnable test left.
    LoopFinished,
    /// Something a person should know about.
    Alert,
    /// A person gave or cleared a hint.
    Hint,
    /// The morning report, on the schedule of the fleet's `report_every` (`data`: the report,
    /// as `GET /api/report` gives it).
    Report,
}

impl WebhookEvent {
    /// The name as it appears in `events` and in the `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::AttemptFinished => "attempt_finished",
            WebhookEvent::TestPassed => "test_passed",
            WebhookEvent::TestFailed => "test_failed",
            WebhookEvent::TestBlocked => "test_blocked",
            WebhookEvent::LoopPaused => "loop_paused",
            WebhookEvent::LoopCrashed => "loop_crashed",
            WebhookEvent::LoopFinished => "loop_finished",
            WebhookEvent::Alert => "alert",
            WebhookEvent::Hint => "hint",
            WebhookEvent::Report => "report",
        }
    }
}

/// A secret string: its `Debug` never shows it, so it cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Problems of the `[[webhooks]]` tables that the schema cannot see, as `(pointer, expected)`,
/// and the secrets of `secret_env` filled in from `env`.
pub(crate) fn resolve_webhooks(
    hooks: &mut [WebhookConfig],
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (i, hook) in hooks.iter_mut().enumerate() {
        let at = |key: &str| format!("/webhooks/{i}/{key}");
        if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
            problems.push((
                at("url"),
                format!("expected an http:// or https:// URL, found `{}`", hook.url),
            ));
        }
        match (&hook.secret, &hook.secret_env) {
            (Some(_), Some(_)) => problems.push((
                at("secret_env"),
                "give either `secret` or `secret_env`, not both".into(),
            )),
            (None, None) => problems.push((
                format!("/webhooks/{i}"),
                "a webhook needs `secret` or `secret_env` (deliveries are signed)".into(),
            )),
            // Unset is not a problem of the file: client commands load it without the secret.
            // `run` and `serve` refuse to start without it ([`unresolved_secrets`]).
            (None, Some(var)) => {
                if let Some((_, v)) = env.iter().find(|(k, v)| k == var && !v.is_empty()) {
                    hook.secret = Some(Secret(v.clone()));
                }
            }
            (Some(s), None) if s.0.is_empty() => {
                problems.push((at("secret"), "the secret must not be empty".into()))
            }
            (Some(_), None) => {}
        }
    }
    problems
}

/// The webhooks of `fleet` whose `secret_env` variable was not set when it was loaded.
pub fn unresolved_secrets(fleet: &super::Fleet) -> super::Report {
    let mut report = super::Report::default();
    for (i, hook) in fleet.webhooks.iter().enumerate() {
        if let (None, Some(var)) = (&hook.secret, &hook.secret_env) {
            report.push(super::Problem::new(
                &fleet.file,
                format!("/webhooks/{i}/secret_env"),
                format!("the environment variable `{var}` is not set (or empty)"),
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_file_or_the_environment_and_never_show() {
        let mut hooks = vec![
            WebhookConfig::new("http://127.0.0.1:9/a", "s3cret"),
            WebhookConfig {
                secret: None,
                secret_env: Some("HOOK_SECRET".into()),
                ..WebhookConfig::new("https://example.com/b", "")
            },
            WebhookConfig {
                secret: None,
                secret_env: Some("UNSET".into()),
                ..WebhookConfig::new("ftp://x", "")
            },
        ];
        let env = vec![("HOOK_SECRET".to_string(), "from-env".to_string())];
        let problems = resolve_webhooks(&mut hooks, &env);
        assert_eq!(
            problems,
            vec![(
                "/webhooks/2/url".to_string(),
                "expected an http:// or https:// URL, found `ftp://x`".to_string()
            ),]
        );
        assert_eq!(hooks[1].secret.as_ref().unwrap().expose(), "from-env");
        assert!(hooks[2].secret.is_none());
        let fleet = super::super::Fleet {
            file: "loopd.toml".into(),
            settings: Default::default(),
            loops: vec![],
            webhooks: hooks.clone(),
            pricing: Default::default(),
        };
        assert_eq!(
            unresolved_secrets(&fleet).to_string(),
            "loopd.toml: /webhooks/2/secret_env: the environment variable `UNSET` is not set \
             (or empty)\n1 problem"
        );
        assert!(!format!("{hooks:?}").contains("s3cret"));
        assert!(!format!("{hooks:?}").contains("from-env"));
    }

    #[test]
    fn an_empty_filter_wants_everything() {
        let mut hook = WebhookConfig::new("http://x", "k");
        assert!(hook.wants(WebhookEvent::Alert));
        hook.events = vec![WebhookEvent::TestPassed];
        assert!(hook.wants(WebhookEvent::TestPassed));
        assert!(!hook.wants(WebhookEvent::Alert));
    }
}
