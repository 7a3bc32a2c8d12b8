//! The terminal view's threads: one reads keys, one follows the event stream, one talks to the
//! API (fetches and actions, one at a time), one waits for SIGTERM and SIGHUP; the main thread
//! feeds what they send to the [`Model`], draws, and hands the model's effects to the API
//! thread. The terminal is restored when the main thread leaves, by a signal as by `q`, and by
//! ratatui's panic hook on a panic.

use std::io::BufReader;
use std::ops::ControlFlow;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use loopd_actors::model::Event;
use loopd_actors::view::LoopSummary;
use ratatui::crossterm::event::{self as term_event, Event as TermEvent, KeyEvent};
use ratatui::crossterm::{cursor, execute};
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::draw::draw;
use super::model::{Action, Effect, Feed, Model, TranscriptLine, TAIL_LINES};
use crate::cli::client::{Client, Refused};
use crate::cli::logs::follow::{self, Ended, Unopened};
use crate::cli::{control, hint, Exit};

/// How long a lost stream waits before it is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// The most messages handled between two draws.
const BATCH: usize = 2000;
/// How often the screen is drawn when nothing happens: the heartbeat ages move on.
const REDRAW_EVERY: Duration = Duration::from_secs(1);

/// What the threads send the main thread.
enum Msg {
    /// A key was pressed.
    Key(KeyEvent),
    /// The terminal changed size.
    Resize,
    /// A journal event.
    Event(Box<Event>),
    /// A transcript line of a running attempt.
    Transcript(TranscriptLine),
    /// The stream is connected; `resumed` after an event id it resumes from.
    Connected { resumed: bool },
    /// The stream was lost (why).
    Lost(String),
    /// The daemon said it shuts down.
    Shutdown,
    /// Every loop, fetched.
    Loaded(Result<Vec<LoopSummary>, String>),
    /// One loop, fetched (`None`: it is gone).
    Fetched(String, Result<Option<LoopSummary>, String>),
    /// An attempt's transcript, fetched: `(loop, test, attempt, text)`.
    Past(String, String, u32, String),
    /// An action's answer.
    Done(Action, Result<Option<LoopSummary>, String>),
    /// SIGTERM, SIGHUP or SIGINT.
    Signal,
}

/// Restores the terminal when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = execute!(std::io::stdout(), cursor::Show);
    }
}

/// Runs the terminal view on `client` until `q`, Ctrl-C or a signal.
pub fn run(client: Client) -> anyhow::Result<Exit> {
    let (tx, rx) = mpsc::channel::<Msg>();
    // Before the terminal changes: a signal from now on ends the view, not the process.
    let mut signals = Signals::new([SIGTERM, SIGHUP, SIGINT])?;
    let to_main = tx.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = to_main.send(Msg::Signal);
        }
    });
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    // ratatui's hook restores the terminal and says what panicked; then the whole view ends,
    // whichever thread it was: a view without its feed or its worker would show a lie.
    let restoring = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restoring(info);
        std::process::exit(Exit::Internal as i32);
    }));
    let _ = execute!(std::io::stdout(), cursor::Hide);
    let (work, jobs) = mpsc::channel::<Effect>();
    spawn_keys(tx.clone());
    spawn_feed(client.clone(), tx.clone());
    spawn_worker(client, jobs, tx);
    let mut model = Model::new();
    loop {
        terminal.draw(|f| draw(f, &model, chrono::Utc::now()))?;
        let mut effects = match next(&rx)? {
            Some(Msg::Signal) => return Ok(Exit::Interrupted),
            Some(msg) => handle(&mut model, msg),
            None => Vec::new(),
        };
        // What came meanwhile, before the next draw; a bounded batch, so that a busy fleet's
        // stream cannot keep the screen from being drawn.
        for msg in rx.try_iter().take(BATCH) {
            if matches!(msg, Msg::Signal) {
                return Ok(Exit::Interrupted);
            }
            effects.extend(handle(&mut model, msg));
        }
        for effect in effects {
            match effect {
                Effect::Quit => return Ok(Exit::Ok),
                other => {
                    let _ = work.send(other);
                }
            }
        }
    }
}

/// The next message, or `None` when it is time to draw anyway.
fn next(rx: &Receiver<Msg>) -> anyhow::Result<Option<Msg>> {
    match rx.recv_timeout(REDRAW_EVERY) {
        Ok(msg) => Ok(Some(msg)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => anyhow::bail!("every input of the view has gone"),
    }
}

fn handle(model: &mut Model, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(k) => model.key(k),
        Msg::Resize | Msg::Signal => Vec::new(),
        Msg::Event(e) => model.event(&e),
        Msg::Transcript(t) => {
            model.transcript(t);
            Vec::new()
        }
        Msg::Connected { resumed } => model.connected(resumed),
        Msg::Lost(why) => {
            model.lost(why);
            Vec::new()
        }
        Msg::Shutdown => {
            model.feed = Feed::Shutdown;
            Vec::new()
        }
        Msg::Loaded(Ok(loops)) => model.loaded(loops),
        Msg::Loaded(Err(why)) => {
            model.said = Some((why, true));
            Vec::new()
        }
        Msg::Fetched(name, Ok(found)) => model.fetched(&name, found),
        Msg::Fetched(name, Err(_)) => {
            // Said by the title when the daemon is gone; the next event tries again.
            model.unfetched(&name);
            Vec::new()
        }
        Msg::Past(l, t, n, text) => {
            model.past(&l, (&t, n), &text);
            Vec::new()
        }
        Msg::Done(action, result) => model.done(&action, result),
    }
}

fn spawn_keys(tx: Sender<Msg>) {
    std::thread::spawn(move || loop {
        let msg = match term_event::read() {
            Ok(TermEvent::Key(k)) => Msg::Key(k),
            Ok(TermEvent::Resize(..)) => Msg::Resize,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    });
}

/// Follows `/api/events?transcripts=true`, resuming with `Last-Event-ID` after a loss.
fn spawn_feed(client: Client, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut last_id: Option<String> = None;
        // Also after a reconnect: the model starts running attempts' tails over from these.
        let path = format!("/api/events?transcripts=true&lines={TAIL_LINES}");
        loop {
            let said = match follow::open(&client, &path, last_id.as_deref()) {
                Ok(resp) => {
                    let resumed = last_id.is_some();
                    if tx.send(Msg::Connected { resumed }).is_err() {
                        return;
                    }
                    let ended = follow::read_events(BufReader::new(resp), &mut last_id, |k, d| {
                        match stream_msg(k, d).map(|msg| tx.send(msg).is_err()) {
                            Some(true) => ControlFlow::Break(()),
                            _ => ControlFlow::Continue(()),
                        }
                    });
                    match ended {
                        Ended::Shutdown => Msg::Shutdown,
                        Ended::Lost => Msg::Lost("connection lost".into()),
                    }
                }
                Err(Unopened::Refused(why)) => Msg::Lost(why),
                // The address, not reqwest's sentence with the URL in it: it goes in a title.
                Err(Unopened::Unreachable(_)) => Msg::Lost(format!("cannot reach {}", client.base)),
            };
            if tx.send(said).is_err() {
                return;
            }
            std::thread::sleep(RECONNECT_EVERY);
        }
    });
}

/// The message of one server-sent event (`None`: not one the view reads).
fn stream_msg(kind: &str, data: &str) -> Option<Msg> {
    if kind == "transcript" {
        return serde_json::from_str(data).ok().map(Msg::Transcript);
    }
    serde_json::from_str::<Event>(data)
        .ok()
        .map(|e| Msg::Event(Box::new(e)))
}

/// Carries out fetches and actions, one at a time, in the order asked.
fn spawn_worker(client: Client, jobs: Receiver<Effect>, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        for job in jobs {
            let msg = match job {
                Effect::LoadAll => Msg::Loaded(client.try_summary().map(|d| d.loops).map_err(said)),
                Effect::Fetch(name) => {
                    let found = client.try_get(&format!("/api/loops/{name}?view=summary"));
                    let found = match found {
                        Ok(l) => Ok(Some(l)),
                        Err(r) if r.status == Some(reqwest::StatusCode::NOT_FOUND) => Ok(None),
                        Err(r) => Err(said(r)),
                    };
                    Msg::Fetched(name, found)
                }
                Effect::Transcript(l, t, n) => {
                    let path = format!("/api/loops/{l}/transcripts/{t}:{n}");
                    // Transcripts are the agent's bytes; decoded only to be shown.
                    let text = client
                        .answer(reqwest::Method::GET, &path, None)
                        .ok()
                        .and_then(|r| r.bytes().ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    Msg::Past(l, t, n, text)
                }
                Effect::Act(action) => {
                    let result = act(&client, &action);
                    Msg::Done(action, result)
                }
                Effect::Quit => return,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}

/// One action through the same calls as the commands `pause`, `resume`, `reset`, `skip` and
/// `hint`; the loop as it is after, when the answer says.
fn act(client: &Client, action: &Action) -> Result<Option<LoopSummary>, String> {
    let result = match action {
        Action::Pause(l) => control::loop_call(client, l, "pause", "").map(|v| Some(v.into())),
        Action::Resume(l) => control::loop_call(client, l, "resume", "").map(|v| Some(v.into())),
        Action::Reset(l, t) => control::test_call(client, (l, t), "reset").map(|_| None),
        Action::Skip(l, t) => control::test_call(client, (l, t), "skip").map(|_| None),
        Action::Hint {
            loop_name,
            test,
            text,
        } => hint::give(client, loop_name, test.as_deref(), text).map(|_| None),
    };
    result.map_err(said)
}

/// A refusal in one line, without the `loopd: ` the commands print before it.
fn said(r: Refused) -> String {
    let text = r.lines.join(" ");
    text.strip_prefix("loopd: ").unwrap_or(&text).to_string()
}
