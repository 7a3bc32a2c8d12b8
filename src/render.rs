//! How a transcript line reads for a person: Claude Code's stream-json rendered (assistant
//! text, one line per tool call, results, API retries, cost), Codex's `exec --json` events
//! likewise ([`codex`]), anything else as it is.
//!
//! One renderer for every reader: `loopd logs` prints its lines, `loopd top` shows them, and the
//! dashboard sends them (escaped) to the attempt view, rendered here on the server.

use loopd_actors::words::count;
use serde_json::Value;

mod codex;

fn short(s: &str, max: usize) -> String {
    let one = s.replace('\n', " ⏎ ");
    if one.chars().count() <= max {
        one
    } else {
        let cut: String = one.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// One line of agent output for a person: Claude Code's stream-json and Codex's events
/// rendered (an event of no interest to people, such as Codex's `item.updated`, gives no line),
/// anything else as it is.
pub fn render(line: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return vec![line.to_string()];
    };
    let Some(kind) = v["type"].as_str() else {
        return vec![line.to_string()];
    };
    if codex::is_codex(kind) {
        return codex::render(kind, &v);
    }
    match (kind, v["subtype"].as_str()) {
        ("system", Some("init")) => vec![format!(
            "● session started: model {}, {}",
            v["model"].as_str().unwrap_or("?"),
            count(v["tools"].as_array().map_or(0, Vec::len), "tool", "tools")
        )],
        ("system", Some("api_retry")) => vec![format!(
            "⟳ API retry {}/{}: {} {} (next in {} ms)",
            v["attempt"],
            v["max_retries"],
            v["error_status"],
            v["error"].as_str().unwrap_or(""),
            v["retry_delay_ms"]
        )],
        ("assistant", _) => {
            let mut out = Vec::new();
            for block in v["message"]["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => out.extend(
                        block["text"]
                            .as_str()
                            .unwrap_or("")
                            .lines()
                            .map(String::from),
                    ),
                    Some("tool_use") => out.push(format!(
                        "→ {} {}",
                        block["name"].as_str().unwrap_or("tool"),
                        tool_input(&block["input"])
                    )),
                    Some("thinking") => out.push("… thinking".into()),
                    _ => {}
                }
            }
            if let Some(err) = v["error"].as_str() {
                out.push(format!("✗ error: {err}"));
            }
            out
        }
        ("user", _) => v["message"]["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| {
                let text = match &b["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                let mark = if b["is_error"] == true { "✗" } else { "←" };
                format!("  {mark} {}", short(&text, 120))
            })
            .collect(),
        ("result", _) => {
            let usage = &v["usage"];
            vec![format!(
                "■ {}: {}, ${:.4}, {} in / {} out tokens{}",
                if v["is_error"] == true {
                    "failed"
                } else {
                    "done"
                },
                count(v["num_turns"].as_u64().unwrap_or(0), "turn", "turns"),
                v["total_cost_usd"].as_f64().unwrap_or(0.0),
                usage["input_tokens"],
                usage["output_tokens"],
                v["result"]
                    .as_str()
                    .map(|r| format!(": {}", short(r, 100)))
                    .unwrap_or_default()
            )]
        }
        _ => vec![line.to_string()],
    }
}

fn tool_input(input: &Value) -> String {
    for key in ["command", "file_path", "path", "pattern", "url"] {
        if let Some(s) = input[key].as_str() {
            return short(s, 100);
        }
    }
    short(&input.to_string(), 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_claude_code_stream_json_for_a_person() {
        let fixture = include_str!("../tests/fixtures/claude-code/tools.jsonl");
        let out: Vec<String> = fixture.lines().flat_map(render).collect();
        let text = out.join("\n");
        assert!(text.contains("● session started"), "{text}");
        assert!(text.contains("→ Write "), "{text}");
        assert!(text.contains("→ Bash "), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("■ done: 3 turns, $")),
            "{text}"
        );
        // Nothing is printed as raw JSON.
        assert!(!out.iter().any(|l| l.starts_with('{')), "{text}");
    }

    #[test]
    fn renders_codex_events_for_a_person() {
        let fixture = include_str!("../tests/fixtures/codex/tools.jsonl");
        let out: Vec<String> = fixture.lines().flat_map(render).collect();
        let text = out.join("\n");
        assert!(text.contains("● codex session "), "{text}");
        assert!(text.contains("→ $ /bin/bash -lc"), "{text}");
        assert!(
            text.contains("  ← exit 0: hello from the mock model"),
            "{text}"
        );
        assert!(
            text.contains("→ add /tmp/loopd-codex/work/notes.txt"),
            "{text}"
        );
        assert!(
            text.contains("Done: wrote hello.txt and notes.txt."),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "■ done: 3600 in (3000 cached) / 126 out tokens"),
            "{text}"
        );
        assert!(!out.iter().any(|l| l.starts_with('{')), "{text}");

        let failed = include_str!("../tests/fixtures/codex/rate_limited.jsonl");
        let text = failed
            .lines()
            .flat_map(render)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("⟳ Reconnecting... 1/5"), "{text}");
        assert!(text.contains("■ failed: exceeded retry limit"), "{text}");
    }

    #[test]
    fn renders_handwritten_retries_errors_and_plain_lines() {
        // Hand-written lines (the recordings hold no network retry); the real ones are above.
        let retry = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":507,"error_status":529,"error":"overloaded"}"#;
        assert_eq!(
            render(retry),
            vec!["⟳ API retry 1/10: 529 overloaded (next in 507 ms)"]
        );
        let billing = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Credit balance is too low"}]},"error":"billing_error"}"#;
        assert_eq!(
            render(billing),
            vec!["Credit balance is too low", "✗ error: billing_error"]
        );
        assert_eq!(render("[demo-agent] done"), vec!["[demo-agent] done"]);
    }
}
