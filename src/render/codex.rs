//! Codex's `codex exec --json` events for a person: the agent's messages, one line per command
//! (and its exit), per file changed and per other tool call, retries, and the turn's end with
//! its tokens.

use serde_json::Value;

use super::short;

/// Whether `kind` is one of Codex's event types.
pub(super) fn is_codex(kind: &str) -> bool {
    matches!(
        kind,
        "thread.started"
            | "turn.started"
            | "turn.completed"
            | "turn.failed"
            | "item.started"
            | "item.updated"
            | "item.completed"
            | "error"
    )
}

/// One Codex event of type `kind` (see [`is_codex`]): no line for those of no interest to people.
pub(super) fn render(kind: &str, v: &Value) -> Vec<String> {
    match kind {
        "thread.started" => vec![format!(
            "● codex session {}",
            v["thread_id"].as_str().unwrap_or("?")
        )],
        "turn.started" => vec!["● turn started".into()],
        "turn.completed" => {
            let u = &v["usage"];
            vec![format!(
                "■ done: {} in ({} cached) / {} out tokens",
                u["input_tokens"].as_u64().unwrap_or(0),
                u["cached_input_tokens"].as_u64().unwrap_or(0),
                u["output_tokens"].as_u64().unwrap_or(0)
            )]
        }
        "turn.failed" => vec![format!(
            "■ failed: {}",
            short(v["error"]["message"].as_str().unwrap_or("?"), 200)
        )],
        "error" => {
            let message = v["message"].as_str().unwrap_or("?");
            if message.starts_with("Reconnecting") {
                vec![format!("⟳ {}", short(message, 200))]
            } else {
                vec![format!("✗ error: {}", short(message, 200))]
            }
        }
        // A command is shown when it starts (it may run long), its result when it ends; other
        // items once, when complete.
        "item.started" if v["item"]["type"] == "command_execution" => {
            vec![format!(
                "→ $ {}",
                short(v["item"]["command"].as_str().unwrap_or("?"), 100)
            )]
        }
        "item.completed" => item(&v["item"]),
        _ => Vec::new(),
    }
}

fn item(item: &Value) -> Vec<String> {
    let text = |key: &str| item[key].as_str().unwrap_or("").to_string();
    match item["type"].as_str().unwrap_or("") {
        "agent_message" => text("text").lines().map(String::from).collect(),
        "reasoning" => vec![format!("… {}", short(&text("text"), 120))],
        "command_execution" => {
            let mark = if item["exit_code"] == 0 { "←" } else { "✗" };
            let code = match item["exit_code"].as_i64() {
                Some(c) => format!("exit {c}"),
                None => item["status"].as_str().unwrap_or("?").to_string(),
            };
            let output = text("aggregated_output");
            if output.trim().is_empty() {
                vec![format!("  {mark} {code}")]
            } else {
                vec![format!(
                    "  {mark} {code}: {}",
                    short(output.trim_end(), 120)
                )]
            }
        }
        "file_change" => item["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "→ {} {}",
                    c["kind"].as_str().unwrap_or("change"),
                    c["path"].as_str().unwrap_or("?")
                )
            })
            .collect(),
        "mcp_tool_call" => vec![format!(
            "→ {}.{} ({})",
            text("server"),
            text("tool"),
            item["status"].as_str().unwrap_or("?")
        )],
        "web_search" => vec![format!("→ web search {}", short(&text("query"), 100))],
        "todo_list" => item["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let done = if t["completed"] == true { "☑" } else { "☐" };
                format!("  {done} {}", short(t["text"].as_str().unwrap_or(""), 100))
            })
            .collect(),
        "error" => vec![format!("✗ {}", short(&text("message"), 200))],
        other => vec![format!("· {other}")],
    }
}
