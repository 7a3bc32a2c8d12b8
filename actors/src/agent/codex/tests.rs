//! The codex preset: its command line and `config.toml`, and its reader fed the real recordings
//! under `tests/fixtures/codex/` (made by `LOOPD_RECORD_FIXTURES=1 cargo test --test codex --
//! --include-ignored` from the pinned CLI against the mock Responses API) and hand-written lines
//! (`HANDWRITTEN_*`) for what a recording cannot reach.

use std::path::{Path, PathBuf};

use crate::agent::tests::at;
use crate::agent::{command_line, AgentReport, LineEvent, OutputWatcher, Place, ProviderFailure};
use crate::config::AgentConfig;

fn codex(base_url: Option<&str>, key: Option<&str>) -> AgentConfig {
    AgentConfig::Codex {
        binary: None,
        extra_args: vec!["-s".into(), "workspace-write".into()],
        base_url: base_url.map(String::from),
        api_key_env: key.map(String::from),
    }
}

/// The lines of a real recording in `tests/fixtures/codex/`.
fn recording(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/codex")
        .join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(String::from).collect()
}

fn feed<S: AsRef<str>>(lines: &[S]) -> (Vec<LineEvent>, OutputWatcher) {
    let mut watcher = OutputWatcher::new(&codex(None, None));
    let events = lines.iter().map(|l| watcher.line(l.as_ref())).collect();
    (events, watcher)
}

fn report<S: AsRef<str>>(lines: &[S], exit_code: Option<i32>) -> AgentReport {
    feed(lines)
        .1
        .finish(exit_code, &PathBuf::from("/nonexistent"))
}

fn recorded(name: &str, exit_code: Option<i32>) -> AgentReport {
    report(&recording(name), exit_code)
}

const HANDWRITTEN_NETWORK: &str = r#"{"type":"error","message":"Reconnecting... waiting for network (Connection failed: error sending request)"}"#;
const HANDWRITTEN_MISSING_KEY: &str =
    r#"{"type":"turn.failed","error":{"message":"Missing environment variable: `LOOPD_KEY`."}}"#;
const HANDWRITTEN_METADATA: &str = r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `gpt-x` not found. Defaulting to fallback metadata; this can degrade performance and cause issues."}}"#;
const HANDWRITTEN_MESSAGE_ABOUT_QUOTA: &str = r#"{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"The test expects 'Quota exceeded' and an HTTP 429 from the mock."}}"#;

#[test]
fn the_command_line_is_unattended_and_keeps_the_prompt_a_prompt() {
    let place = Place {
        workdir: Path::new("/lanes/a/1"),
        prompt_file: Path::new("/state/1.prompt.md"),
        home: Path::new("/state/1.home"),
        in_git: true,
    };
    let line = command_line(&codex(None, None), Some("gpt-5.5"), "-rf resume", &place);
    assert_eq!(line.program, PathBuf::from("codex"));
    assert_eq!(
        line.args,
        [
            "exec",
            "--json",
            "--ephemeral",
            "-C",
            "/lanes/a/1",
            "--model",
            "gpt-5.5",
            "-s",
            "workspace-write",
            "--",
            "-rf resume",
        ]
    );
    assert_eq!(
        line.env,
        [("CODEX_HOME".to_string(), "/state/1.home".to_string())]
    );
    assert!(line.inherit.iter().any(|v| v == "OPENAI_API_KEY"));
    assert!(line.inherit.iter().any(|v| v == "CODEX_API_KEY"));

    // Outside git (checkpoints off), no model, a key variable of its own for base_url.
    let plain = Place {
        in_git: false,
        ..place
    };
    let cfg = codex(Some("http://127.0.0.1:9/v1"), Some("MY_KEY"));
    let line = command_line(&cfg, None, &"x".repeat(200 * 1024), &plain);
    assert!(line.args.contains(&"--skip-git-repo-check".to_string()));
    assert!(!line.args.contains(&"--model".to_string()));
    assert!(line.inherit.iter().any(|v| v == "MY_KEY"));
    let prompt = line.args.last().unwrap();
    assert!(prompt.contains("/state/1.prompt.md") && prompt.len() < 1000);
}

#[test]
fn config_toml_never_prompts_and_stays_offline() {
    let text = crate::agent::codex_config_toml(None, None);
    let doc: toml::Table = text.parse().unwrap();
    assert_eq!(doc["approval_policy"].as_str(), Some("never"));
    assert_eq!(doc["sandbox_mode"].as_str(), Some("danger-full-access"));
    assert_eq!(doc["check_for_update_on_startup"].as_bool(), Some(false));
    assert_eq!(doc["analytics"]["enabled"].as_bool(), Some(false));
    assert_eq!(doc["otel"]["exporter"].as_str(), Some("none"));
    assert_eq!(doc["features"]["plugins"].as_bool(), Some(false));
    assert_eq!(
        doc["features"]["unbounded_connection_retries"].as_bool(),
        Some(false)
    );
    // Codex's own OpenAI provider unless a base_url is set.
    assert!(!doc.contains_key("model_provider"), "{text}");

    let text = crate::agent::codex_config_toml(Some("http://127.0.0.1:9/v1"), None);
    let doc: toml::Table = text.parse().unwrap();
    assert_eq!(doc["model_provider"].as_str(), Some("loopd"));
    let p = &doc["model_providers"]["loopd"];
    assert_eq!(p["base_url"].as_str(), Some("http://127.0.0.1:9/v1"));
    assert_eq!(p["env_key"].as_str(), Some("OPENAI_API_KEY"));
    assert_eq!(p["wire_api"].as_str(), Some("responses"));
}

#[test]
fn prepare_makes_a_fresh_home_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("3.home");
    let cfg = codex(Some("http://127.0.0.1:9/v1"), Some("K"));
    let place = Place {
        home: &home,
        ..at("p")
    };
    crate::agent::prepare(&cfg, &place).unwrap();
    // What an agent leaves in its home (a hook, a changed config) is gone next time.
    std::fs::write(home.join("hooks.json"), "{}").unwrap();
    std::fs::write(home.join("config.toml"), "approval_policy = \"on-request\"").unwrap();
    crate::agent::prepare(&cfg, &place).unwrap();
    let names: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["config.toml"]);
    let text = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(text.contains(r#"approval_policy = "never""#), "{text}");
    assert!(text.contains(r#"env_key = "K""#), "{text}");
    // Other presets need no home.
    let other = dir.path().join("4.home");
    let claude = AgentConfig::ClaudeCode {
        binary: None,
        extra_args: vec![],
    };
    crate::agent::prepare(
        &claude,
        &Place {
            home: &other,
            ..at("p")
        },
    )
    .unwrap();
    assert!(!other.exists());
}

#[test]
fn recorded_tool_calls_are_a_successful_run_with_its_tokens() {
    let (events, _) = feed(&recording("tools"));
    assert_eq!(events.last(), Some(&LineEvent::Result));
    let r = recorded("tools", Some(0));
    assert!(!r.is_error, "{r:?}");
    assert_eq!(r.provider_failure, None);
    assert!(r.tokens_reported);
    assert_eq!(
        (r.input_tokens, r.cached_input_tokens, r.output_tokens),
        (3600, 3000, 126)
    );
    // Codex prints no cost: the price table decides.
    assert_eq!(r.cost_usd, None);
    assert_eq!(
        r.summary.as_deref(),
        Some("Done: wrote hello.txt and notes.txt.")
    );
    assert_eq!(r.malformed_lines, 0);
    let mut pricing = crate::pricing::Pricing::new();
    assert!(r.cost(Some("gpt-5.5"), &pricing).usd().is_none());
    pricing.insert(
        "gpt-5.5".into(),
        crate::pricing::Price {
            input_usd_per_mtok: 1.25,
            cached_input_usd_per_mtok: Some(0.125),
            output_usd_per_mtok: 10.0,
        },
    );
    let usd = r.cost(Some("gpt-5.5"), &pricing).usd().unwrap();
    assert!((usd - 0.002385).abs() < 1e-12, "{usd}");
}

#[test]
fn recorded_429_retries_that_recovered_are_not_a_failure() {
    let (events, _) = feed(&recording("rate_limited_once"));
    assert_eq!(events[2], LineEvent::ApiRetry { status: Some(429) });
    let r = recorded("rate_limited_once", Some(0));
    assert!(!r.is_error);
    assert_eq!(r.provider_failure, None);
    assert_eq!(r.api_retries, 1);
}

#[test]
fn recorded_429_that_never_cleared_is_an_api_error() {
    let r = recorded("rate_limited", Some(1));
    assert!(r.is_error);
    assert_eq!(r.api_retries, 5);
    match &r.provider_failure {
        Some(ProviderFailure::ApiError { status, message }) => {
            assert_eq!(*status, Some(429));
            assert!(message.contains("exceeded retry limit"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.summary.unwrap().contains("429"));
}

#[test]
fn recorded_server_errors_are_an_api_error_without_a_status() {
    let r = recorded("server_error", Some(1));
    assert!(matches!(
        &r.provider_failure,
        Some(ProviderFailure::ApiError { status: None, message }) if message.contains("high demand")
    ));
}

#[test]
fn recorded_quota_and_usage_limit_are_out_of_credits() {
    for name in ["quota", "usage_limit"] {
        let (events, _) = feed(&recording(name));
        assert_eq!(events[2], LineEvent::Billing, "{name}");
        let r = recorded(name, Some(1));
        match &r.provider_failure {
            Some(ProviderFailure::OutOfCredits { message }) => {
                assert!(message.contains("Quota exceeded") || message.contains("usage limit"))
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn recorded_stream_that_stops_midway_has_no_end_and_blames_nothing() {
    // Killed by the monitor: no exit code, no turn end; the stall is loopd's to record.
    let r = recorded("hang", None);
    assert!(r.is_error);
    assert_eq!(r.provider_failure, None);
    assert!(!r.tokens_reported);
    assert!(r.notes.iter().any(|n| n.contains("without turn.completed")));
}

#[test]
fn killed_while_reconnecting_points_at_the_provider() {
    let mut lines = recording("hang");
    lines.extend([
        HANDWRITTEN_NETWORK.to_string(),
        HANDWRITTEN_NETWORK.to_string(),
    ]);
    let r = report(&lines, None);
    match &r.provider_failure {
        Some(ProviderFailure::ApiError { message, .. }) => {
            assert!(message.contains("still reconnecting"), "{message}");
            assert!(message.contains("2 retries"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_turn_that_is_not_the_providers_is_the_agents() {
    let lines = [recording("hang"), vec![HANDWRITTEN_MISSING_KEY.to_string()]].concat();
    let r = report(&lines, Some(1));
    assert!(r.is_error);
    assert_eq!(r.provider_failure, None);
    assert!(r.summary.unwrap().contains("Missing environment variable"));
}

#[test]
fn the_models_own_words_and_error_items_blame_no_provider() {
    let mut lines = recording("tools");
    lines.insert(2, HANDWRITTEN_METADATA.to_string());
    lines.insert(3, HANDWRITTEN_MESSAGE_ABOUT_QUOTA.to_string());
    let r = report(&lines, Some(0));
    assert!(!r.is_error);
    assert_eq!(r.provider_failure, None);
    assert!(r.notes.iter().any(|n| n.contains("Model metadata")));
}

#[test]
fn malformed_lines_are_counted_and_never_panic() {
    let mut lines = vec![
        "Reading additional input from stdin...".to_string(),
        "{not json".to_string(),
        "[1,2]".to_string(),
        r#"{"no":"type"}"#.to_string(),
        r#"{"type":"turn.completed","usage":"lots"}"#.to_string(),
        r#"{"type":"error"}"#.to_string(),
        r#"{"type":"item.completed","item":null}"#.to_string(),
        String::new(),
        "\u{0}\u{fffd}".to_string(),
    ];
    lines.extend(recording("tools"));
    let r = report(&lines, Some(0));
    assert_eq!(r.malformed_lines, 5);
    assert!(!r.is_error);
    assert_eq!(r.output_tokens, 126);
}

#[test]
fn a_non_zero_exit_after_a_completed_turn_is_an_error() {
    let r = recorded("tools", Some(1));
    assert!(r.is_error);
    assert_eq!(r.provider_failure, None);
}
