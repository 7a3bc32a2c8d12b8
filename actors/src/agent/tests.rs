//! The output parsers, fed two kinds of samples:
//! - the real recordings of Claude Code's stream-json under `tests/fixtures/claude-code/` (made by
//!   `LOOPD_RECORD_FIXTURES=1 cargo test --test claude_code` from the installed CLI against the
//!   mock Anthropic API), read by the `recorded_*` tests;
//! - hand-written lines, named `HANDWRITTEN_*`, for the cases a recording cannot reach (a
//!   network retry, a max-turns result, malformed lines) and to pin one field at a time.

use std::path::{Path, PathBuf};

use super::*;

fn claude() -> AgentConfig {
    AgentConfig::ClaudeCode {
        binary: None,
        extra_args: vec!["--max-turns".into(), "40".into()],
    }
}

fn command(codes: Vec<i32>, api: &[&str], billing: &[&str]) -> AgentConfig {
    AgentConfig::Command {
        command: vec!["./agent.sh".into(), "--fast".into()],
        provider: "scripted".into(),
        api_error_exit_codes: codes,
        api_error_patterns: api.iter().map(|s| s.to_string()).collect(),
        billing_patterns: billing.iter().map(|s| s.to_string()).collect(),
        cost_patterns: Vec::new(),
        token_patterns: Vec::new(),
    }
}

const HANDWRITTEN_INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"0b1c","tools":["Bash","Edit","Write","Read","Glob","Grep"],"mcp_servers":[],"model":"claude-sonnet-4-5","permissionMode":"acceptEdits","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.29","uuid":"a1"}"#;
const HANDWRITTEN_TOOL_USE: &str = r#"{"type":"assistant","message":{"model":"claude-sonnet-4-5","id":"msg_01","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"Write","input":{"file_path":"/w/hello.txt","content":"hi"}}],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":8}},"parent_tool_use_id":null,"session_id":"0b1c","uuid":"a2"}"#;
const HANDWRITTEN_TOOL_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"File created successfully at: /w/hello.txt"}]},"parent_tool_use_id":null,"session_id":"0b1c","uuid":"a3"}"#;
const HANDWRITTEN_TEXT_ABOUT_BILLING: &str = r#"{"type":"assistant","message":{"model":"claude-sonnet-4-5","id":"msg_02","type":"message","role":"assistant","content":[{"type":"text","text":"The test expects the error 'Credit balance is too low' and an HTTP 529 from the mock."}]},"session_id":"0b1c","uuid":"a4"}"#;
const HANDWRITTEN_SUCCESS: &str = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":5210,"duration_api_ms":4800,"num_turns":3,"result":"Created hello.txt with the greeting.","session_id":"0b1c","total_cost_usd":0.0421,"usage":{"input_tokens":120,"cache_creation_input_tokens":2000,"cache_read_input_tokens":10000,"output_tokens":345,"server_tool_use":{"web_search_requests":0}},"permission_denials":[],"uuid":"a5"}"#;
const HANDWRITTEN_RETRY_529: &str = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1120,"error_status":529,"error":"server_error","session_id":"0b1c","uuid":"r1"}"#;
const HANDWRITTEN_RETRY_NETWORK: &str = r#"{"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"retry_delay_ms":2250,"error_status":null,"error":"unknown","session_id":"0b1c","uuid":"r2"}"#;
const HANDWRITTEN_SYNTHETIC_529: &str = r#"{"type":"assistant","message":{"id":"5f0e","model":"<synthetic>","role":"assistant","stop_reason":"stop_sequence","type":"message","usage":{"input_tokens":0,"output_tokens":0},"content":[{"type":"text","text":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}]},"parent_tool_use_id":null,"session_id":"0b1c","uuid":"s1","error":"server_error"}"#;
const HANDWRITTEN_RESULT_529: &str = r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":61234,"num_turns":1,"result":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}","session_id":"0b1c","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"uuid":"s2"}"#;
const HANDWRITTEN_BILLING: &str = r#"{"type":"assistant","message":{"id":"7a1d","model":"<synthetic>","role":"assistant","stop_reason":"stop_sequence","type":"message","usage":{"input_tokens":0,"output_tokens":0},"content":[{"type":"text","text":"Credit balance is too low"}]},"parent_tool_use_id":null,"session_id":"0b1c","uuid":"b1","error":"billing_error"}"#;
const HANDWRITTEN_RESULT_BILLING: &str = r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":812,"num_turns":1,"result":"Credit balance is too low","session_id":"0b1c","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"uuid":"b2"}"#;
const HANDWRITTEN_RESULT_MAX_TURNS: &str = r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":40,"session_id":"0b1c","total_cost_usd":1.25,"usage":{"input_tokens":50,"output_tokens":900},"uuid":"m1"}"#;

fn feed(cfg: &AgentConfig, lines: &[&str]) -> (Vec<LineEvent>, OutputWatcher) {
    let mut watcher = OutputWatcher::new(cfg);
    let events = lines.iter().map(|l| watcher.line(l)).collect();
    (events, watcher)
}

/// The lines of a real recording in `tests/fixtures/claude-code/`.
fn recording(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/claude-code")
        .join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(String::from).collect()
}

fn feed_recording(name: &str) -> (Vec<LineEvent>, OutputWatcher) {
    let lines = recording(name);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    feed(&claude(), &lines)
}

/// An attempt's place whose prompt file is `prompt_file`.
pub(super) fn at(prompt_file: &str) -> Place<'_> {
    Place {
        workdir: Path::new("/w"),
        prompt_file: Path::new(prompt_file),
        home: Path::new("/state/transcripts/l/t/1.home"),
        in_git: true,
    }
}

fn no_file() -> PathBuf {
    PathBuf::from("/nonexistent/loopd-result.json")
}

#[test]
fn claude_command_line_is_unattended() {
    let line = command_line(&claude(), Some("opus"), "do it", &at("/tmp/p.md"));
    assert_eq!(line.program, PathBuf::from("claude"));
    assert_eq!(
        line.args,
        [
            "-p",
            "do it",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Bash,Edit,Write,Read,Glob,Grep",
            "--model",
            "opus",
            "--max-turns",
            "40",
        ]
    );
    for (key, value) in CLAUDE_ENV {
        assert!(
            line.env.contains(&(key.to_string(), value.to_string())),
            "{key}"
        );
    }
    let no_model = command_line(
        &AgentConfig::ClaudeCode {
            binary: Some("/opt/claude/bin/claude".into()),
            extra_args: vec![],
        },
        None,
        "x",
        &at("p"),
    );
    assert_eq!(no_model.program, PathBuf::from("/opt/claude/bin/claude"));
    assert!(!no_model.args.contains(&"--model".to_string()));
}

#[test]
fn huge_prompts_go_through_the_prompt_file() {
    let prompt = "x".repeat(200 * 1024);
    let line = command_line(&claude(), None, &prompt, &at("/state/prompt-3.md"));
    assert!(line.args[1].contains("/state/prompt-3.md"));
    assert!(line.args[1].len() < 1000);
}

#[test]
fn command_line_of_a_command_agent_is_its_argv() {
    let line = command_line(&command(vec![], &[], &[]), Some("m"), "p", &at("f"));
    assert_eq!(line.program, PathBuf::from("./agent.sh"));
    assert_eq!(line.args, ["--fast"]);
    assert!(line.env.is_empty());
    let cmd = line.command(&[], &Default::default());
    assert_eq!(cmd.as_std().get_program(), "./agent.sh");
}

#[test]
fn claude_success_fills_the_report() {
    let (events, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_TOOL_USE,
            HANDWRITTEN_TOOL_RESULT,
            HANDWRITTEN_TEXT_ABOUT_BILLING,
            HANDWRITTEN_SUCCESS,
        ],
    );
    assert_eq!(
        events,
        [
            LineEvent::Output,
            LineEvent::Output,
            LineEvent::Output,
            LineEvent::Output,
            LineEvent::Result
        ]
    );
    let report = watcher.finish(Some(0), &no_file());
    assert_eq!(report.cost_usd, Some(0.0421));
    assert!(report.tokens_reported);
    assert_eq!(report.cached_input_tokens, 10000);
    assert_eq!(report.input_tokens, 120 + 2000 + 10000);
    assert_eq!(report.output_tokens, 345);
    assert_eq!(
        report.summary.as_deref(),
        Some("Created hello.txt with the greeting.")
    );
    assert!(!report.is_error);
    assert_eq!(
        report.provider_failure, None,
        "the model's own words are not evidence"
    );
}

#[test]
fn claude_overloaded_until_it_gives_up_is_an_api_error() {
    let (events, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_RETRY_NETWORK,
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_SYNTHETIC_529,
            HANDWRITTEN_RESULT_529,
        ],
    );
    assert_eq!(events[1], LineEvent::ApiRetry { status: Some(529) });
    assert_eq!(events[2], LineEvent::ApiRetry { status: None });
    assert_eq!(events[4], LineEvent::ApiError { status: Some(529) });
    assert_eq!(events[5], LineEvent::Result);
    let report = watcher.finish(Some(1), &no_file());
    assert!(report.is_error);
    assert_eq!(report.api_retries, 3);
    match report.provider_failure {
        Some(ProviderFailure::ApiError { status, message }) => {
            assert_eq!(status, Some(529));
            assert!(message.contains("Overloaded"), "{message}");
        }
        other => panic!("expected ApiError, got {other:?}"),
    }
}

#[test]
fn claude_error_result_with_api_words_alone_is_an_api_error() {
    let (_, watcher) = feed(&claude(), &[HANDWRITTEN_INIT, HANDWRITTEN_RESULT_529]);
    let report = watcher.finish(Some(1), &no_file());
    assert!(matches!(
        report.provider_failure,
        Some(ProviderFailure::ApiError {
            status: Some(529),
            ..
        })
    ));
}

#[test]
fn claude_killed_while_retrying_points_at_the_provider() {
    let (_, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_TOOL_USE,
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_RETRY_529,
        ],
    );
    let report = watcher.finish(None, &no_file());
    assert!(report.is_error);
    assert!(matches!(
        report.provider_failure,
        Some(ProviderFailure::ApiError {
            status: Some(529),
            ..
        })
    ));
}

#[test]
fn claude_retries_that_recovered_are_not_a_failure() {
    let (_, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_TOOL_USE,
            HANDWRITTEN_SUCCESS,
        ],
    );
    let report = watcher.finish(Some(0), &no_file());
    assert_eq!(report.api_retries, 1);
    assert!(!report.is_error);
    assert_eq!(report.provider_failure, None);

    // Recovered, then stalled for another reason: not the provider's fault.
    let (_, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_TOOL_USE,
        ],
    );
    let report = watcher.finish(None, &no_file());
    assert!(report.is_error);
    assert_eq!(report.provider_failure, None);
}

#[test]
fn claude_billing_error_is_out_of_credits() {
    let (events, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_BILLING,
            HANDWRITTEN_RESULT_BILLING,
        ],
    );
    assert_eq!(
        events,
        [LineEvent::Output, LineEvent::Billing, LineEvent::Result]
    );
    let report = watcher.finish(Some(1), &no_file());
    assert!(report.is_error);
    assert_eq!(
        report.provider_failure,
        Some(ProviderFailure::OutOfCredits {
            message: "Credit balance is too low".into()
        })
    );
}

#[test]
fn claude_billing_wins_over_api_errors() {
    let (_, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_BILLING,
            HANDWRITTEN_RESULT_BILLING,
        ],
    );
    let report = watcher.finish(Some(1), &no_file());
    assert!(matches!(
        report.provider_failure,
        Some(ProviderFailure::OutOfCredits { .. })
    ));
}

#[test]
fn claude_plain_text_credit_error_is_billing() {
    let (events, watcher) = feed(
        &claude(),
        &["Credit balance is too low · Add funds: https://console.anthropic.com/settings/billing"],
    );
    assert_eq!(events, [LineEvent::Billing]);
    assert!(matches!(
        watcher.finish(Some(1), &no_file()).provider_failure,
        Some(ProviderFailure::OutOfCredits { .. })
    ));
}

#[test]
fn claude_max_turns_is_an_agent_failure_not_the_provider() {
    let (_, watcher) = feed(
        &claude(),
        &[
            HANDWRITTEN_INIT,
            HANDWRITTEN_RETRY_529,
            HANDWRITTEN_TOOL_USE,
            HANDWRITTEN_RESULT_MAX_TURNS,
        ],
    );
    let report = watcher.finish(Some(1), &no_file());
    assert!(report.is_error);
    assert_eq!(report.cost_usd, Some(1.25));
    assert_eq!(report.provider_failure, None);
}

#[test]
fn claude_malformed_lines_never_panic() {
    let long = "{".repeat(100_000);
    let lines = [
        "not json at all",
        "",
        "[1,2,3]",
        r#"{"no_type":true}"#,
        r#"{"type":"result","is_error":"yes","total_cost_usd":"a lot","usage":"none"}"#,
        r#"{"type":"system","subtype":"api_retry","error_status":99999}"#,
        r#"{"type":"assistant","error":42,"message":"hello"}"#,
        r#"{"type":"assistant","error":"rate_limit","message":{"content":"plain"}}"#,
        long.as_str(),
        "\u{fffd}\u{fffd}",
    ];
    let (events, watcher) = feed(&claude(), &lines);
    assert_eq!(events[0], LineEvent::Malformed);
    assert_eq!(events[1], LineEvent::Output);
    assert_eq!(events[2], LineEvent::Malformed);
    assert_eq!(events[3], LineEvent::Malformed);
    assert_eq!(events[4], LineEvent::Result);
    assert_eq!(events[5], LineEvent::ApiRetry { status: None });
    assert_eq!(events[7], LineEvent::ApiError { status: Some(429) });
    assert_eq!(events[8], LineEvent::Malformed);
    let report = watcher.finish(Some(0), &no_file());
    assert_eq!(report.cost_usd, None);
    assert!(report.malformed_lines >= 5);
}

#[test]
fn claude_without_result_is_an_error() {
    let (_, watcher) = feed(&claude(), &[HANDWRITTEN_INIT, HANDWRITTEN_TOOL_USE]);
    let report = watcher.finish(Some(0), &no_file());
    assert!(report.is_error);
    assert_eq!(report.provider_failure, None);
    assert!(!report.notes.is_empty());
}

#[test]
fn long_summaries_are_truncated() {
    let text = "é".repeat(MAX_SUMMARY_CHARS + 10);
    let line =
        serde_json::json!({"type":"result","is_error":false,"result":text,"total_cost_usd":0.1})
            .to_string();
    let (_, watcher) = feed(&claude(), &[&line]);
    let summary = watcher.finish(Some(0), &no_file()).summary.unwrap();
    assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS + 1);
    assert!(summary.ends_with('…'));
}

#[test]
fn command_patterns_and_exit_codes() {
    let cfg = command(
        vec![75],
        &[r"HTTP (429|5\d\d)", "overloaded"],
        &["(?i)insufficient credit"],
    );
    let (events, watcher) = feed(
        &cfg,
        &[
            "working",
            "got HTTP 503 from upstream",
            "Insufficient credit, bye",
        ],
    );
    assert_eq!(
        events,
        [
            LineEvent::Output,
            LineEvent::ApiError { status: Some(503) },
            LineEvent::Billing
        ]
    );
    let report = watcher.finish(Some(75), &no_file());
    assert!(
        matches!(
            report.provider_failure,
            Some(ProviderFailure::OutOfCredits { .. })
        ),
        "billing wins"
    );

    let (_, watcher) = feed(&cfg, &["quiet"]);
    match watcher.finish(Some(75), &no_file()).provider_failure {
        Some(ProviderFailure::ApiError {
            status: None,
            message,
        }) => assert!(message.contains("75")),
        other => panic!("{other:?}"),
    }

    let (_, watcher) = feed(&cfg, &["model overloaded, giving up"]);
    let report = watcher.finish(Some(1), &no_file());
    assert!(report.is_error);
    assert_eq!(
        report.provider_failure,
        Some(ProviderFailure::ApiError {
            status: None,
            message: "model overloaded, giving up".into()
        })
    );

    let (_, watcher) = feed(&cfg, &["all good"]);
    let report = watcher.finish(Some(1), &no_file());
    assert!(report.is_error);
    assert_eq!(report.provider_failure, None);
}

#[test]
fn invalid_patterns_are_reported_and_skipped() {
    let cfg = command(vec![], &["(unclosed", "ok"], &["[z-a]"]);
    let err = check_patterns(&cfg).unwrap_err();
    assert!(err.contains("api_error_patterns[0]"), "{err}");
    assert!(err.contains("billing_patterns[0]"), "{err}");
    assert!(check_patterns(&command(vec![], &["fine"], &["also fine"])).is_ok());
    assert!(check_patterns(&claude()).is_ok());

    // The second watcher gets its sets from the cache, with the same notes and the same matches.
    for _ in 0..2 {
        let (events, watcher) = feed(&cfg, &["ok then", "OK THEN", "nothing"]);
        assert_eq!(
            events,
            [
                LineEvent::ApiError { status: None },
                LineEvent::ApiError { status: None },
                LineEvent::Output
            ]
        );
        assert_eq!(watcher.finish(Some(0), &no_file()).notes.len(), 2);
    }
    // Other patterns are other sets.
    let (events, _) = feed(&command(vec![], &["then"], &[]), &["ok", "then"]);
    assert_eq!(
        events,
        [LineEvent::Output, LineEvent::ApiError { status: None }]
    );
}

#[test]
fn command_result_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result.json");
    let cfg = command(vec![], &[], &[]);

    std::fs::write(
        &file,
        r#"{"cost_usd":0.5,"input_tokens":1000,"output_tokens":200,"summary":"did it"}"#,
    )
    .unwrap();
    let report = OutputWatcher::new(&cfg).finish(Some(0), &file);
    assert_eq!(
        (report.cost_usd, report.input_tokens, report.output_tokens),
        (Some(0.5), 1000, 200)
    );
    assert!(report.tokens_reported);
    assert_eq!(report.summary.as_deref(), Some("did it"));
    assert!(!report.is_error && report.notes.is_empty());

    std::fs::write(&file, r#"{"cost_usd":0.25}"#).unwrap();
    let report = OutputWatcher::new(&cfg).finish(Some(0), &file);
    assert_eq!(
        (report.cost_usd, report.input_tokens, report.summary),
        (Some(0.25), 0, None)
    );
    assert!(!report.tokens_reported);

    std::fs::write(
        &file,
        r#"{"cost_usd":-1,"input_tokens":"many","summary":7,"output_tokens":3}"#,
    )
    .unwrap();
    let report = OutputWatcher::new(&cfg).finish(Some(0), &file);
    assert_eq!(
        (report.cost_usd, report.input_tokens, report.output_tokens),
        (None, 0, 3)
    );
    assert_eq!(report.notes.len(), 3, "{:?}", report.notes);

    for bad in ["{not json", "[1]", "\u{0}\u{1}"] {
        std::fs::write(&file, bad).unwrap();
        let report = OutputWatcher::new(&cfg).finish(Some(2), &file);
        assert_eq!(report.cost_usd, None);
        assert!(report.is_error);
        assert_eq!(report.notes.len(), 1, "{bad}: {:?}", report.notes);
    }

    std::fs::write(&file, vec![b' '; 2 * 1024 * 1024]).unwrap();
    let report = OutputWatcher::new(&cfg).finish(Some(0), &file);
    assert_eq!(report.notes.len(), 1);

    std::fs::write(&file, "").unwrap();
    assert!(OutputWatcher::new(&cfg)
        .finish(Some(0), &file)
        .notes
        .is_empty());
    assert!(OutputWatcher::new(&cfg)
        .finish(Some(0), &no_file())
        .notes
        .is_empty());
}

#[test]
fn recorded_tool_calls_are_a_successful_run_with_its_cost() {
    let (events, watcher) = feed_recording("tools");
    assert_eq!(events.last(), Some(&LineEvent::Result));
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| *e == LineEvent::Output));
    let report = watcher.finish(Some(0), &no_file());
    assert!(!report.is_error, "{report:?}");
    assert_eq!(report.provider_failure, None);
    assert!(report.cost_usd.is_some_and(|c| c > 0.0), "{report:?}");
    assert!(
        report.input_tokens > 0 && report.output_tokens > 0,
        "{report:?}"
    );
    assert_eq!(report.malformed_lines, 0);
    assert!(report.summary.is_some());
}

#[test]
fn recorded_overloaded_run_is_an_api_error_after_its_retries() {
    let (events, watcher) = feed_recording("overloaded");
    let retries = events
        .iter()
        .filter(|e| matches!(e, LineEvent::ApiRetry { status: Some(529) }))
        .count();
    assert!(retries >= 1, "{events:?}");
    let report = watcher.finish(Some(1), &no_file());
    assert!(report.is_error);
    assert_eq!(report.api_retries as usize, retries);
    assert!(
        matches!(
            report.provider_failure,
            Some(ProviderFailure::ApiError {
                status: Some(529),
                ..
            })
        ),
        "{report:?}"
    );
}

#[test]
fn recorded_empty_balance_is_out_of_credits() {
    let (events, watcher) = feed_recording("billing");
    assert!(events.contains(&LineEvent::Billing), "{events:?}");
    let report = watcher.finish(Some(1), &no_file());
    assert!(
        matches!(
            report.provider_failure,
            Some(ProviderFailure::OutOfCredits { .. })
        ),
        "{report:?}"
    );
}

#[test]
fn recorded_stream_that_stops_midway_has_no_result() {
    let (events, watcher) = feed_recording("hang");
    assert!(!events.contains(&LineEvent::Result));
    // Killed by loopd as stalled: no exit code, no result line.
    let report = watcher.finish(None, &no_file());
    assert!(report.is_error);
    assert_eq!(report.provider_failure, None);
}

fn usage_command(cost: &[&str], tokens: &[&str]) -> AgentConfig {
    match command(vec![], &[], &[]) {
        AgentConfig::Command {
            command,
            provider,
            api_error_exit_codes,
            api_error_patterns,
            billing_patterns,
            ..
        } => AgentConfig::Command {
            command,
            provider,
            api_error_exit_codes,
            api_error_patterns,
            billing_patterns,
            cost_patterns: cost.iter().map(|s| s.to_string()).collect(),
            token_patterns: tokens.iter().map(|s| s.to_string()).collect(),
        },
        _ => unreachable!(),
    }
}

/// Lines as aider prints them after each request.
const AIDER_LINES: [&str; 3] = [
    "Tokens: 2.3k sent, 1.1k cache hit, 412 received. Cost: $0.0123 message, $0.0123 session.",
    "Applied edit to hello.py",
    "Tokens: 12,500 sent, 0 cache hit, 1.2k received. Cost: $0.04 message, $0.0523 session.",
];

#[test]
fn command_cost_and_token_patterns_add_up_every_match() {
    let cfg = usage_command(
        &[r"Cost: \$(?P<usd>[0-9.,]+) message"],
        &[
            r"Tokens: (?P<input>[0-9.,]+k?) sent, (?P<cached>[0-9.,]+k?) cache hit, (?P<output>[0-9.,]+k?) received",
        ],
    );
    assert!(check_patterns(&cfg).is_ok());
    let (events, watcher) = feed(&cfg, &AIDER_LINES);
    assert!(events.iter().all(|e| *e == LineEvent::Output));
    let report = watcher.finish(Some(0), &no_file());
    assert!(
        (report.cost_usd.unwrap() - 0.0523).abs() < 1e-9,
        "{report:?}"
    );
    assert!(report.tokens_reported);
    assert_eq!(report.input_tokens, 2300 + 12_500);
    assert_eq!(report.cached_input_tokens, 1100);
    assert_eq!(report.output_tokens, 412 + 1200);
}

#[test]
fn command_without_usage_lines_reports_nothing_and_the_result_file_wins() {
    let cfg = usage_command(&[r"Cost: \$(?P<usd>[0-9.]+)"], &[r"(?P<input>\d+) in"]);
    let (_, watcher) = feed(&cfg, &["no usage here", "Cost: $lots"]);
    let report = watcher.finish(Some(0), &no_file());
    assert_eq!(report.cost_usd, None);
    assert!(!report.tokens_reported);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result.json");
    std::fs::write(&file, r#"{"cost_usd":0.5,"input_tokens":7}"#).unwrap();
    let (_, watcher) = feed(&cfg, &["Cost: $0.10", "99 in"]);
    let report = watcher.finish(Some(0), &file);
    assert_eq!((report.cost_usd, report.input_tokens), (Some(0.5), 7));
}

#[test]
fn usage_patterns_without_their_groups_are_refused_by_key() {
    let cfg = usage_command(
        &[r"Cost: \$([0-9.]+)", r"(?P<dollars>[0-9.]+)", "(unclosed"],
        &[r"(?P<input>\d+) in", r"(?P<usd>\d+)"],
    );
    let err = check_patterns(&cfg).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with("agent.cost_patterns[0]:") && lines[0].contains("(?P<usd>...)"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("agent.cost_patterns[1]:") && lines[1].contains("`dollars`"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("agent.cost_patterns[2]: invalid regular expression"),
        "{err}"
    );
    assert!(
        lines[3].starts_with("agent.token_patterns[1]:") && lines[3].contains("`usd`"),
        "{err}"
    );
}

#[test]
fn counts_read_as_agents_print_them() {
    use super::command::parse_count;
    assert_eq!(parse_count("1234"), Some(1234));
    assert_eq!(parse_count("1,234"), Some(1234));
    assert_eq!(parse_count("2.3k"), Some(2300));
    assert_eq!(parse_count("1.1M"), Some(1_100_000));
    assert_eq!(parse_count(" 7 "), Some(7));
    for bad in ["", "k", "-3", "1e400", "many", "NaN"] {
        assert_eq!(parse_count(bad), None, "{bad}");
    }
}

#[test]
fn an_agents_report_is_priced_by_the_table_only_when_it_names_no_cost() {
    let mut table = crate::pricing::Pricing::new();
    table.insert(
        "m".into(),
        crate::pricing::Price {
            input_usd_per_mtok: 1.0,
            cached_input_usd_per_mtok: Some(0.5),
            output_usd_per_mtok: 10.0,
        },
    );
    let tokens = AgentReport {
        tokens_reported: true,
        input_tokens: 2_000_000,
        cached_input_tokens: 1_000_000,
        output_tokens: 100_000,
        ..AgentReport::default()
    };
    assert_eq!(tokens.cost(Some("m"), &table).usd(), Some(1.0 + 0.5 + 1.0));
    assert_eq!(tokens.cost(Some("other"), &table).usd(), None);
    let own = AgentReport {
        cost_usd: Some(0.01),
        ..tokens.clone()
    };
    assert_eq!(own.cost(Some("m"), &table).usd(), Some(0.01));
    assert_eq!(AgentReport::default().cost(Some("m"), &table).usd(), None);
}
