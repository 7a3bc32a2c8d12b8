//! `loopd logs LOOP [TEST[:N]] [--raw]`: an attempt's transcript, then verify's output for it;
//! `loopd logs -f [LOOP]`: the fleet live (see `follow`).
//!
//! Without `-f` it works with or without a daemon and prints the same: through the daemon's API
//! when one holds the state directory, else from the store and the transcript files on disk.
//! `--raw` prints the transcript's lines as the agent wrote them on stdout, and what loopd says
//! about the attempt (verify's output, how it ended) on stderr.

pub(crate) mod follow;

use std::path::Path;

use loopd_actors::model::AttemptRecord;
use loopd_actors::store::Store;
use reqwest::Method;
use serde_json::Value;

use super::client::{Client, Failed};
use super::{words, Exit};

/// Arguments of `loopd logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Only this loop (required without `-f`).
    pub loop_name: Option<String>,
    /// Without `-f`: `TEST` (its latest attempt) or `TEST:N`; default the loop's latest attempt.
    #[arg(value_name = "TEST[:N]")]
    pub target: Option<String>,
    /// Follow: stream live transcripts and events until the daemon shuts down.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// With `-f`: how many of the last lines of each running attempt to show on connect.
    #[arg(short = 'n', long = "lines", default_value_t = 20)]
    pub lines: usize,
    /// With `-f`: keep reconnecting when the daemon goes away, also after it shut down.
    #[arg(long)]
    pub retry: bool,
    /// Print transcript lines as the agent wrote them.
    #[arg(long)]
    pub raw: bool,
    /// The same as the positional `TEST:N`.
    #[arg(long, value_name = "TEST:N", conflicts_with = "target")]
    pub attempt: Option<String>,
}

/// `loopd logs`.
pub fn logs(file: &Path, args: &LogsArgs) -> anyhow::Result<Exit> {
    let result = if args.follow {
        follow::follow(file, args)
    } else {
        show(file, args)
    };
    Ok(match result {
        Ok(()) => Exit::Ok,
        Err(Failed(code)) => code,
    })
}

/// Where attempts and transcripts are read from.
enum Source {
    /// The daemon that holds the state directory.
    Daemon(Client),
    /// The store and the transcript files, while no daemon runs.
    Disk(Store),
}

impl Source {
    fn of(file: &Path) -> Result<Source, Failed> {
        let fleet = super::target::FleetRef::from_path(file);
        match super::source::discover(&fleet, false).map_err(Failed)? {
            super::source::Found::Daemon(d) => Ok(Source::Daemon(d.client)),
            super::source::Found::NoDaemon { fleet, .. } => super::source::open_store(&fleet)
                .map(Source::Disk)
                .map_err(Failed),
        }
    }

    /// The attempt `test` (latest when `number` is `None`; of any test when `test` is too).
    fn attempt(
        &self,
        loop_name: &str,
        test: Option<&str>,
        number: Option<u32>,
    ) -> Result<Option<AttemptRecord>, Failed> {
        let attempts = match self {
            Source::Daemon(client) => {
                // The latest of the whole loop is found in the transcript list, so that only
                // one test's attempts are fetched.
                let test = match test {
                    Some(t) => t.to_string(),
                    None => {
                        let list: Value =
                            client.get(&format!("/api/loops/{loop_name}/transcripts"))?;
                        match list["transcripts"].as_array().and_then(|t| t.last()) {
                            Some(last) => last["test"].as_str().unwrap_or_default().to_string(),
                            None => return Ok(None),
                        }
                    }
                };
                client.attempts(loop_name, Some(&test))?.attempts
            }
            Source::Disk(store) => {
                let found = store.get_loop(loop_name).map_err(store_failed)?;
                if found.is_none() {
                    eprintln!("loopd: no loop named `{loop_name}` in the store");
                    return Err(Failed(Exit::Invalid));
                }
                store.list_attempts(loop_name, test).map_err(store_failed)?
            }
        };
        Ok(match number {
            Some(n) => attempts.into_iter().find(|a| a.number == n),
            None if test.is_some() => attempts.into_iter().max_by_key(|a| a.number),
            None => attempts.into_iter().max_by_key(|a| a.started_at),
        })
    }

    /// The attempt's transcript as the agent wrote it (empty when there is no file).
    fn transcript(&self, loop_name: &str, a: &AttemptRecord) -> Result<Vec<u8>, Failed> {
        match self {
            Source::Daemon(client) => Ok(client
                .send(
                    Method::GET,
                    &format!(
                        "/api/loops/{loop_name}/transcripts/{}:{}",
                        a.test_id, a.number
                    ),
                    None,
                )?
                .bytes()
                .map(|b| b.to_vec())
                .unwrap_or_default()),
            Source::Disk(_) => match std::fs::read(&a.transcript) {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => {
                    eprintln!(
                        "loopd: cannot read the transcript {}: {e}",
                        a.transcript.display()
                    );
                    Err(Failed(Exit::NotAllPassed))
                }
            },
        }
    }
}

fn store_failed(e: loopd_actors::store::StoreError) -> Failed {
    eprintln!("loopd: {e}");
    Failed(Exit::NotAllPassed)
}

fn show(file: &Path, args: &LogsArgs) -> Result<(), Failed> {
    let Some(name) = &args.loop_name else {
        eprintln!("loopd logs: name a loop (or follow all with -f)");
        return Err(Failed(Exit::Invalid));
    };
    let (test, number) = match args.target.as_deref().or(args.attempt.as_deref()) {
        None => (None, None),
        Some(t) => match parse_target(t) {
            Some((test, n)) => (Some(test), n),
            None => {
                eprintln!(
                    "loopd logs: an attempt is TEST or TEST:N (e.g. `CALC-2:1`), found `{t}`"
                );
                return Err(Failed(Exit::Invalid));
            }
        },
    };
    let source = Source::of(file)?;
    let Some(attempt) = source.attempt(name, test, number)? else {
        match (test, number) {
            (Some(t), Some(n)) => {
                eprintln!("loopd logs: loop `{name}` has no attempt {t}:{n}");
                return Err(Failed(Exit::Invalid));
            }
            (Some(t), None) => eprintln!("loopd logs: test `{t}` of `{name}` has no attempt yet"),
            _ => eprintln!("loopd logs: loop `{name}` has no attempt yet"),
        }
        return Ok(());
    };
    let text = source.transcript(name, &attempt)?;
    // Transcripts are the agent's bytes; they are decoded only here, to print them.
    for line in String::from_utf8_lossy(&text).lines() {
        print_line(line, args.raw, "");
    }
    let said = about(&attempt);
    // `--raw` prints the transcript as it is; what loopd says about it goes to stderr.
    if args.raw {
        eprint!("{said}");
    } else {
        print!("{said}");
    }
    Ok(())
}

/// `TEST` or `TEST:N`.
/// Prints one transcript line after `prefix`: as it is with `raw`, else rendered.
fn print_line(line: &str, raw: bool, prefix: &str) {
    if raw {
        println!("{prefix}{line}");
        return;
    }
    for out in crate::render::render(line) {
        println!("{prefix}{out}");
    }
}

fn parse_target(t: &str) -> Option<(&str, Option<u32>)> {
    match t.rsplit_once(':') {
        Some((test, n)) => Some((test, Some(n.parse().ok()?))).filter(|(t, _)| !t.is_empty()),
        None => Some((t, None)).filter(|(t, _)| !t.is_empty()),
    }
}

/// What loopd recorded after the agent: verify's output and how the attempt ended.
fn about(a: &AttemptRecord) -> String {
    let address = format!("{}:{}", a.test_id, a.number);
    let Some(outcome) = a.outcome else {
        return format!("── {address}: running\n");
    };
    let mut out = String::new();
    let ran = a.verify_exit.is_some() || !a.verify_tail.is_empty();
    if ran {
        let exit = match a.verify_exit {
            Some(c) => format!("exit {c}"),
            None => "no exit status".into(),
        };
        out.push_str(&format!("── verify ({exit})\n"));
        if !a.verify_head.is_empty() {
            out.push_str(a.verify_head.trim_end());
            out.push_str("\n… (lines between not kept)\n");
        }
        if a.verify_tail.trim().is_empty() {
            out.push_str("(verify printed nothing)\n");
        } else {
            out.push_str(a.verify_tail.trim_end());
            out.push('\n');
        }
    } else {
        out.push_str("── verify did not run\n");
    }
    let killed = match a.killed {
        Some(k) => format!("; the monitor killed the agent ({})", k.word()),
        None => String::new(),
    };
    let reason = a
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "── {address}: {}{killed}{reason}\n",
        words(&outcome)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopd_actors::model::Outcome;

    #[test]
    fn an_attempt_is_test_or_test_and_number() {
        assert_eq!(parse_target("CALC-2"), Some(("CALC-2", None)));
        assert_eq!(parse_target("CALC-2:3"), Some(("CALC-2", Some(3))));
        assert_eq!(parse_target("CALC-2:x"), None);
        assert_eq!(parse_target(":3"), None);
    }

    #[test]
    fn verify_output_follows_with_its_head_and_how_it_ended() {
        let mut a = AttemptRecord::started("l", "T", 2, "t".into());
        a.outcome = Some(Outcome::Failed);
        a.verify_exit = Some(1);
        a.verify_head = "first\n".into();
        a.verify_tail = "last\n".into();
        a.reason = Some("verify exited non-zero".into());
        assert_eq!(
            about(&a),
            "── verify (exit 1)\nfirst\n… (lines between not kept)\nlast\n\
             ── T:2: failed: verify exited non-zero\n"
        );
        a.outcome = Some(Outcome::AgentUnavailable);
        a.verify_exit = None;
        a.verify_head.clear();
        a.verify_tail.clear();
        a.reason = Some("cannot start the agent `x`: No such file or directory".into());
        assert_eq!(
            about(&a),
            "── verify did not run\n── T:2: agent_unavailable: cannot start the agent `x`: No such file or directory\n"
        );
    }
}
