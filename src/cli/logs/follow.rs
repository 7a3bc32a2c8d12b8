//! `loopd logs -f`: the live transcripts and events of the fleet over SSE, each line after the
//! time it was read. On connect the last `-n` lines of the running attempts come first. When the
//! daemon shuts down (its stream says `shutdown`) the command says so and ends with 0; with
//! `--retry` it waits for the next daemon instead. A dropped connection is resumed with
//! `Last-Event-ID`, so no event is lost.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::print_line;
use super::LogsArgs;
use crate::cli::client::{Client, Failed};
use crate::cli::Exit;

/// How often a lost daemon is looked for again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Without `--retry`: how many times a dropped connection is tried again before giving up.
const RECONNECTS: u32 = 5;

/// Why a stream could not be opened.
pub(crate) enum Unopened {
    /// The daemon answered with an error (its words): trying again would not help.
    Refused(String),
    /// No daemon answered.
    Unreachable(String),
}

/// How one stream ended.
pub(crate) enum Ended {
    /// The daemon said it is shutting down.
    Shutdown,
    /// The connection was lost.
    Lost,
}

/// What a follower asks of the stream, besides the events it handles.
pub(crate) struct Follow<'a> {
    /// The command, for its messages (`logs`, `top`).
    pub command: &'a str,
    /// Keep reconnecting when the daemon goes away, also after it shut down.
    pub retry: bool,
    /// `/api/events?...`: the events wanted (without `lines`).
    pub path: String,
    /// With transcripts: how many of the last lines of each running attempt to send on
    /// connect (`None`: the stream has no transcripts).
    pub lines: Option<usize>,
}

/// Follows the fleet of `file` until the daemon shuts down (or for ever with `retry`), each
/// event given to `on` as its kind and data.
pub(crate) fn follow_with(
    file: &Path,
    how: &Follow<'_>,
    mut on: impl FnMut(&str, &str),
) -> Result<(), Failed> {
    let command = how.command;
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    // The last lines are wanted once, when the follower arrives, not again after a reconnect.
    let mut history = how.lines;
    loop {
        let client = if how.retry {
            Client::if_any(file)
        } else {
            Some(Client::require(file)?)
        };
        let ended = match client {
            Some(c) => {
                // After a reconnect, nothing old: what was printed before the drop is shown.
                let path = match how.lines {
                    Some(_) => format!("{}&lines={}", how.path, history.unwrap_or(0)),
                    None => how.path.clone(),
                };
                open(&c, &path, last_id.as_deref()).map(|resp| {
                    history = Some(0);
                    read_events(BufReader::new(resp), &mut last_id, |event, data| {
                        on(event, data);
                        ControlFlow::Continue(())
                    })
                })
            }
            None => Err(Unopened::Unreachable("no running daemon".into())),
        };
        match ended {
            Ok(Ended::Shutdown) if how.retry => {
                eprintln!("loopd {command}: the daemon shut down; waiting for the next one ...");
                failures = 0;
            }
            Ok(Ended::Shutdown) => {
                eprintln!("loopd {command}: the daemon shut down");
                return Ok(());
            }
            Ok(Ended::Lost) => {
                failures = 0;
                eprintln!("loopd {command}: connection lost; reconnecting ...");
            }
            Err(Unopened::Refused(why)) => {
                eprintln!("loopd {command}: {why}");
                return Err(Failed(Exit::Invalid));
            }
            Err(Unopened::Unreachable(e)) => {
                failures += 1;
                if !how.retry && failures > RECONNECTS {
                    eprintln!("loopd {command}: the daemon is gone: {e}");
                    return Err(Failed(Exit::NotAllPassed));
                }
            }
        }
        std::thread::sleep(RECONNECT_EVERY);
    }
}

/// Follows the fleet of `file` for `logs -f`.
pub fn follow(file: &Path, args: &LogsArgs) -> Result<(), Failed> {
    let mut path = "/api/events?transcripts=true".to_string();
    if let Some(l) = &args.loop_name {
        path.push_str(&format!("&loop={l}"));
    }
    let how = Follow {
        command: "logs",
        retry: args.retry,
        path,
        lines: Some(args.lines),
    };
    follow_with(file, &how, |event, data| render_event(event, data, args))
}

/// Opens the stream at `path` (`/api/events?...`), resuming after `last_id` when given.
pub(crate) fn open(
    client: &Client,
    path: &str,
    last_id: Option<&str>,
) -> Result<reqwest::blocking::Response, Unopened> {
    let mut req = client.http_get(path);
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req
        .send()
        .map_err(|e| Unopened::Unreachable(format!("{} ({e})", client.base)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        return Err(Unopened::Refused(format!(
            "{} ({status})",
            body["error"]["message"].as_str().unwrap_or("refused")
        )));
    }
    Ok(resp)
}

/// Reads server-sent events until the stream ends (or `on` breaks, which counts as lost),
/// giving each one's kind and data to `on` and keeping the id of the last one in `last_id`.
pub(crate) fn read_events(
    reader: impl BufRead,
    last_id: &mut Option<String>,
    mut on: impl FnMut(&str, &str) -> ControlFlow<()>,
) -> Ended {
    let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
    for line in reader.lines() {
        let Ok(line) = line else { return Ended::Lost };
        if line.is_empty() {
            if event == "shutdown" {
                return Ended::Shutdown;
            }
            if !data.is_empty() && on(&event, &data).is_break() {
                return Ended::Lost;
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
    Ended::Lost
}

fn render_event(event: &str, data: &str, args: &LogsArgs) {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return;
    };
    let at = clock(&v["at"]);
    if event == "transcript" {
        let prefix = if args.loop_name.is_some() {
            format!(
                "{at} {}#{} │ ",
                v["test"].as_str().unwrap_or("?"),
                v["attempt"]
            )
        } else {
            format!(
                "{at} {}/{}#{} │ ",
                v["loop"].as_str().unwrap_or("?"),
                v["test"].as_str().unwrap_or("?"),
                v["attempt"]
            )
        };
        print_line(v["line"].as_str().unwrap_or(""), args.raw, &prefix);
        return;
    }
    println!(
        "{at} ── {} [{}] {}",
        v["loop_name"].as_str().unwrap_or("?"),
        event,
        v["message"].as_str().unwrap_or("")
    );
}

/// `HH:MM:SS` in local time of an RFC 3339 time (now when there is none).
pub(crate) fn clock(at: &Value) -> String {
    let when = at
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Local))
        .unwrap_or_else(chrono::Local::now);
    when.format("%H:%M:%S").to_string()
}
