//! `loopd logs [-f] [LOOP] [--raw]`: an attempt's transcript, or (`-f`) the live transcripts and
//! events of the fleet over SSE, with Claude Code's stream-json rendered for a person: assistant
//! text, one line per tool call, results, API retries, cost. `--raw` prints the lines as they are.
//!
//! `-f` reconnects after a dropped connection with `Last-Event-ID`, so no event is lost.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Failed};
use super::Exit;

/// Arguments of `loopd logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Only this loop (required without `-f`).
    pub loop_name: Option<String>,
    /// Follow: stream live transcripts and events until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print transcript lines as the agent wrote them.
    #[arg(long)]
    pub raw: bool,
    /// Without `-f`: this attempt (`TEST:N`) instead of the latest.
    #[arg(long)]
    pub attempt: Option<String>,
}

/// `loopd logs`.
pub fn logs(file: &Path, args: &LogsArgs) -> anyhow::Result<Exit> {
    let client = match Client::require(file) {
        Ok(c) => c,
        Err(Failed(code)) => return Ok(code),
    };
    let result = if args.follow {
        follow(&client, args)
    } else {
        show(&client, args)
    };
    Ok(match result {
        Ok(()) => Exit::Ok,
        Err(Failed(code)) => code,
    })
}

fn show(client: &Client, args: &LogsArgs) -> Result<(), Failed> {
    let Some(name) = &args.loop_name else {
        eprintln!("loopd logs: name a loop (or follow all with -f)");
        return Err(Failed(Exit::Invalid));
    };
    let list: Value = client.get(&format!("/api/loops/{name}/transcripts"))?;
    let entries = list["transcripts"].as_array().cloned().unwrap_or_default();
    let entry = match &args.attempt {
        Some(a) => entries.iter().find(|t| t["attempt"] == a.as_str()),
        None => entries.last(),
    };
    let address = match (&args.attempt, entry) {
        (Some(a), _) => a.clone(),
        (None, Some(e)) => e["attempt"].as_str().unwrap_or_default().to_string(),
        (None, None) => {
            eprintln!("loopd logs: loop `{name}` has no attempt yet");
            return Ok(());
        }
    };
    let text = client
        .send(
            Method::GET,
            &format!("/api/loops/{name}/transcripts/{address}"),
            None,
        )?
        .bytes()
        .unwrap_or_default();
    // Transcripts are the agent's bytes; they are decoded only here, to print them.
    for line in String::from_utf8_lossy(&text).lines() {
        print_line(line, args.raw, "");
    }
    if let Some(end) = entry.and_then(|e| ending(&address, e)) {
        // `--raw` prints the transcript as it is; what loopd says about it goes to stderr.
        if args.raw {
            eprintln!("{end}");
        } else {
            println!("{end}");
        }
    }
    Ok(())
}

/// How a finished attempt ended, and whether the monitor killed its agent, in a line.
fn ending(address: &str, entry: &Value) -> Option<String> {
    let outcome = entry["outcome"].as_str()?;
    let killed = match entry["killed"].as_str() {
        Some(k) => format!("; the monitor killed the agent ({k})"),
        None => String::new(),
    };
    Some(format!("── {address}: {outcome}{killed}"))
}

fn follow(client: &Client, args: &LogsArgs) -> Result<(), Failed> {
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    loop {
        let mut path = "/api/events?transcripts=true".to_string();
        if let Some(l) = &args.loop_name {
            path.push_str(&format!("&loop={l}"));
        }
        let mut req = client.http_get(&path);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id.as_str());
        }
        match req.send() {
            Ok(resp) if resp.status().is_success() => {
                failures = 0;
                read_stream(resp, args, &mut last_id);
                eprintln!("loopd logs: connection lost; reconnecting ...");
            }
            Ok(resp) => {
                let status = resp.status();
                let body: Value = resp.json().unwrap_or(Value::Null);
                eprintln!(
                    "loopd logs: {} ({status})",
                    body["error"]["message"].as_str().unwrap_or("refused")
                );
                return Err(Failed(if status.is_client_error() {
                    Exit::Invalid
                } else {
                    Exit::NotAllPassed
                }));
            }
            Err(e) => {
                failures += 1;
                if failures > 30 {
                    eprintln!("loopd logs: the daemon at {} is gone: {e}", client.base);
                    return Err(Failed(Exit::NotAllPassed));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reads server-sent events until the stream ends.
fn read_stream(resp: reqwest::blocking::Response, args: &LogsArgs, last_id: &mut Option<String>) {
    let reader = BufReader::new(resp);
    let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            if !data.is_empty() {
                render_event(&event, &data, args);
            }
            if let Some(i) = id.take() {
                *last_id = Some(i);
            }
            event.clear();
            data.clear();
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            "id" => id = Some(value.to_string()),
            _ => {}
        }
    }
}

fn render_event(event: &str, data: &str, args: &LogsArgs) {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return;
    };
    if event == "transcript" {
        let prefix = if args.loop_name.is_some() {
            format!("{}#{} │ ", v["test"].as_str().unwrap_or("?"), v["attempt"])
        } else {
            format!(
                "{}/{}#{} │ ",
                v["loop"].as_str().unwrap_or("?"),
                v["test"].as_str().unwrap_or("?"),
                v["attempt"]
            )
        };
        print_line(v["line"].as_str().unwrap_or(""), args.raw, &prefix);
        return;
    }
    let at = v["at"].as_str().and_then(|t| t.get(11..19)).unwrap_or("");
    println!(
        "── {at} {} [{}] {}",
        v["loop_name"].as_str().unwrap_or("?"),
        event,
        v["message"].as_str().unwrap_or("")
    );
}

fn print_line(line: &str, raw: bool, prefix: &str) {
    if raw {
        println!("{prefix}{line}");
        return;
    }
    for out in render(line) {
        println!("{prefix}{out}");
    }
}

fn short(s: &str, max: usize) -> String {
    let one = s.replace('\n', " ⏎ ");
    if one.chars().count() <= max {
        one
    } else {
        let cut: String = one.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// One line of agent output for a person: Claude Code's stream-json rendered, anything else
/// as it is.
pub fn render(line: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return vec![line.to_string()];
    };
    let Some(kind) = v["type"].as_str() else {
        return vec![line.to_string()];
    };
    match (kind, v["subtype"].as_str()) {
        ("system", Some("init")) => vec![format!(
            "● session started: model {}, {} tools",
            v["model"].as_str().unwrap_or("?"),
            v["tools"].as_array().map_or(0, Vec::len)
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
                "■ {}: {} turns, ${:.4}, {} in / {} out tokens{}",
                if v["is_error"] == true {
                    "failed"
                } else {
                    "done"
                },
                v["num_turns"],
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
        let fixture = include_str!("../../tests/fixtures/claude-code/tools.jsonl");
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
