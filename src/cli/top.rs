//! `loopd top [CONFIG] [--plain]`: the fleet live in the terminal. On a terminal a full-screen
//! view (ratatui): the fleet table, the selected loop's tests, the rendered tail of its
//! attempt, and keys for pause, resume, reset, skip and hint. Off a terminal (or with
//! `--plain`) one line per journal event, `HH:MM:SS LOOP TEST EVENT MESSAGE`, until the
//! daemon shuts down.
//!
//! Both read the daemon's event stream (`GET /api/events`), never poll: the view fetches every
//! loop once, then a loop again only when it is selected or an event names it.
//!
//! Layout: `model` (what is shown, changed by events and keys, deterministic), `keys` (what a
//! key does to it), `draw` (how it looks), `app` (the threads that feed it and carry out what
//! it asks).

mod app;
mod draw;
mod keys;
mod model;

use std::io::IsTerminal;
use std::path::PathBuf;

use loopd_actors::model::Event;

use super::client::Failed;
use super::logs::follow::{self, Follow};
use super::target::FleetRef;
use super::{source, words, Exit};

/// `loopd top [CONFIG] [--plain]`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
    /// One line per journal event instead of the full-screen view (the default when stdout is
    /// not a terminal).
    #[arg(long)]
    pub plain: bool,
}

/// `loopd top`.
pub fn top(fleet: &FleetRef, args: &TopArgs) -> anyhow::Result<Exit> {
    if args.plain || !std::io::stdout().is_terminal() {
        let how = Follow {
            command: "top",
            retry: false,
            path: "/api/events".into(),
            lines: None,
        };
        return Ok(
            match follow::follow_with(&fleet.path, &how, |kind, data| {
                if let Some(line) = plain_line(kind, data) {
                    println!("{line}");
                }
            }) {
                Ok(()) => Exit::Ok,
                Err(Failed(code)) => code,
            },
        );
    }
    match source::daemon(fleet, false) {
        Ok(d) => app::run(d.client),
        Err(code) => Ok(code),
    }
}

/// `HH:MM:SS LOOP TEST EVENT MESSAGE` (`-` for an event about no test) of one journal event.
fn plain_line(kind: &str, data: &str) -> Option<String> {
    let e: Event = serde_json::from_str(data).ok()?;
    let at = follow::clock(&serde_json::Value::from(e.at.to_rfc3339()));
    let kind = if kind.is_empty() {
        words(&e.kind)
    } else {
        kind.to_string()
    };
    Some(format!(
        "{at} {} {} {kind} {}",
        // `-` for the fleet's own events (the scheduled report) too.
        if e.loop_name.is_empty() {
            "-"
        } else {
            e.loop_name.as_str()
        },
        e.test_id.as_deref().unwrap_or("-"),
        // One event, one line, whatever the message holds.
        e.message.replace(['\n', '\r'], " ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopd_actors::model::EventKind;

    #[test]
    fn one_event_is_one_line_with_its_loop_test_and_kind() {
        let e = Event::new(
            EventKind::AttemptStarted,
            "auth",
            "attempt 2 of T1\nstarted",
        )
        .about("T1", Some(2));
        let data = serde_json::to_string(&e).unwrap();
        let line = plain_line("attempt_started", &data).unwrap();
        let (clock, rest) = line.split_once(' ').unwrap();
        assert_eq!(clock.len(), 8, "{line}");
        assert_eq!(rest, "auth T1 attempt_started attempt 2 of T1 started");
        let state = Event::new(EventKind::LoopState, "auth", "paused");
        let line = plain_line("loop_state", &serde_json::to_string(&state).unwrap()).unwrap();
        assert!(line.ends_with(" auth - loop_state paused"), "{line}");
        assert_eq!(plain_line("transcript", "{\"line\": \"x\"}"), None);
        let report = Event::new(EventKind::Report, "", "the report of the last 24 h");
        let line = plain_line("report", &serde_json::to_string(&report).unwrap()).unwrap();
        assert!(
            line.ends_with(" - - report the report of the last 24 h"),
            "{line}"
        );
    }
}
