//! `GET /api/events`: the event journal as server-sent events.
//!
//! Each event goes out as `id: <journal id>`, `event: <kind>`, `data: <Event as JSON>`. A client
//! that reconnects with `Last-Event-ID: N` (or `?after=N`) first gets every journaled event after
//! N, then the live ones, with no gap and no duplicate: the live subscription is taken *before*
//! the journal is read, and live events already sent from the journal are skipped. Without either,
//! the stream starts with the live events.
//!
//! `?loop=NAME` keeps one loop's events. `?transcripts=true` adds, without ids (they are not
//! journaled), `event: transcript` lines `{"loop", "test", "attempt", "line", "at"}` of the
//! running attempts' transcripts: this is what `loopd logs -f` renders. With `&lines=N` the
//! attempts running at connect start with their last N lines (else from their beginning).
//! Each transcript line carries `n`, its number in the transcript (from 1), so that a reader
//! who sees the start again after a reconnect can skip what it has. `&render=true` sends each
//! line as a person reads it instead (`"rendered": [...]` in place of `"line"`), rendered by the
//! same code as `loopd logs`: what the dashboard's attempt view shows.
//!
//! When the server stops, every stream gets `event: shutdown` and ends.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use loopd_actors::model::{Event, EventKind};
use loopd_actors::runtime::Ctx;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{broadcast, mpsc};

use super::error::{check_name, ApiError, Code};
use super::ApiState;

/// Journal events read per store call while replaying.
const PAGE: usize = 500;
/// The longest unended line a follower holds back before sending it as it is.
const MAX_PARTIAL: usize = 64 * 1024;

/// How often running transcripts are looked at for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(200);
/// Ids remembered to skip duplicates between the journal and the live stream.
const REMEMBERED: usize = 10_000;

/// What a stream is asked for.
#[derive(Debug, Clone)]
struct Filter {
    loop_name: Option<String>,
    after: Option<u64>,
    transcripts: bool,
    /// The last lines of each attempt running at connect to send first (`None`: all).
    lines: Option<usize>,
    /// Transcript lines go out rendered for people.
    render: bool,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        self.loop_name.as_ref().is_none_or(|l| *l == e.loop_name)
    }
}

/// `GET /api/events[?loop=NAME][&after=ID][&transcripts=true]`, `Last-Event-ID` honoured.
pub async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id_of = |what: &str, raw: &str| {
        raw.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                Code::BadRequest,
                format!("{what} must be an event id, found `{raw}`"),
            )
        })
    };
    let after = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    {
        Some(h) => Some(id_of("Last-Event-ID", h)?),
        None => q.get("after").map(|a| id_of("`after`", a)).transpose()?,
    };
    let loop_name = q.get("loop").cloned();
    if let Some(l) = &loop_name {
        check_name("loop", l)?;
    }
    let transcripts = matches!(
        q.get("transcripts").map(String::as_str),
        Some("" | "true" | "1")
    );
    let lines = q
        .get("lines")
        .map(|n| {
            n.trim().parse::<usize>().map_err(|_| {
                ApiError::new(
                    Code::BadRequest,
                    format!("`lines` must be a number of lines, found `{n}`"),
                )
            })
        })
        .transpose()?;
    let render = matches!(q.get("render").map(String::as_str), Some("" | "true" | "1"));
    let filter = Filter {
        loop_name,
        after,
        transcripts,
        lines,
        render,
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    // Subscribe here, before the journal is read in the task: nothing can fall between the two.
    let live = state.ctx().subscribe();
    tokio::spawn(pump(state.ctx().clone(), live, state.closing(), filter, tx));
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Ids sent so far, to skip an event the journal and the live stream both deliver.
#[derive(Default)]
struct Sent {
    ids: BTreeSet<u64>,
}

impl Sent {
    fn first_time(&mut self, id: u64) -> bool {
        let new = self.ids.insert(id);
        while self.ids.len() > REMEMBERED {
            self.ids.pop_first();
        }
        new
    }

    fn highest(&self) -> Option<u64> {
        self.ids.last().copied()
    }
}

fn sse_of(e: &Event) -> SseEvent {
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "event".into());
    SseEvent::default()
        .id(e.id.to_string())
        .event(kind)
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"))
}

/// Sends the journal after `after`; false when the client has gone.
async fn replay(
    ctx: &Ctx,
    filter: &Filter,
    mut after: u64,
    sent: &mut Sent,
    tx: &mpsc::Sender<SseEvent>,
) -> bool {
    loop {
        let page = match ctx.read(move |s| s.events_after(after, PAGE)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading the event journal for SSE");
                return false;
            }
        };
        for e in &page {
            after = after.max(e.id);
            if sent.first_time(e.id) && filter.wants(e) && tx.send(sse_of(e)).await.is_err() {
                return false;
            }
        }
        if page.len() < PAGE {
            return true;
        }
    }
}

/// One transcript being followed.
struct Tail {
    path: PathBuf,
    offset: u64,
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// Its attempt finished: read what is left, then drop it.
    finished: bool,
    /// Lines read so far: the number of the next one, less one.
    read: u64,
}

type AttemptKey = (String, String, u32);

async fn pump(
    ctx: Ctx,
    mut live: broadcast::Receiver<Event>,
    mut closing: tokio::sync::watch::Receiver<bool>,
    filter: Filter,
    tx: mpsc::Sender<SseEvent>,
) {
    let mut sent = Sent::default();
    if let Some(after) = filter.after {
        if !replay(&ctx, &filter, after, &mut sent, &tx).await {
            return;
        }
    }
    let mut tails: HashMap<AttemptKey, Tail> = HashMap::new();
    if filter.transcripts {
        let running = ctx
            .read(|s| s.unfinished_attempts())
            .await
            .unwrap_or_default();
        for a in running {
            if filter.loop_name.as_ref().is_none_or(|l| *l == a.loop_name) {
                let key = (a.loop_name, a.test_id, a.number);
                let mut tail = Tail {
                    path: a.transcript,
                    offset: 0,
                    partial: Vec::new(),
                    finished: false,
                    read: 0,
                };
                if let Some(n) = filter.lines {
                    // What it printed so far, but only its end: a follower wants the picture,
                    // not the whole history.
                    let lines = new_lines(&mut tail).await;
                    let skip = lines.len().saturating_sub(n);
                    for (line, number) in &lines[skip..] {
                        let e = transcript_event(&key, line, *number, filter.render);
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                }
                tails.insert(key, tail);
            }
        }
    }
    let mut tick = tokio::time::interval(TAIL_EVERY);
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(e) => {
                    if filter.transcripts && filter.wants(&e) {
                        follow(&ctx, &e, &mut tails, &tx, filter.render).await;
                    }
                    if sent.first_time(e.id) && filter.wants(&e) && tx.send(sse_of(&e)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live stream: pick the missed events up from the journal.
                    let from = sent.highest().or(filter.after).unwrap_or(0);
                    if !replay(&ctx, &filter, from, &mut sent, &tx).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if filter.transcripts => {
                if !read_tails(&mut tails, &tx, filter.render).await {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = stopping(&mut closing) => {
                let _ = tx.send(SseEvent::default().event("shutdown").data("{}")).await;
                return;
            }
        }
    }
}

/// Returns once the server stops (never when it outlives every sender, as in tests).
async fn stopping(closing: &mut tokio::sync::watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Starts or ends following a transcript on `attempt_started` / `attempt_finished`.
async fn follow(
    ctx: &Ctx,
    e: &Event,
    tails: &mut HashMap<AttemptKey, Tail>,
    tx: &mpsc::Sender<SseEvent>,
    render: bool,
) {
    let (Some(test), Some(n)) = (e.test_id.clone(), e.attempt) else {
        return;
    };
    let key = (e.loop_name.clone(), test, n);
    match e.kind {
        EventKind::AttemptStarted => {
            let path = ctx.attempt_paths(&key.0, &key.1, n).transcript;
            tails.entry(key).or_insert(Tail {
                path,
                offset: 0,
                partial: Vec::new(),
                finished: false,
                read: 0,
            });
        }
        EventKind::AttemptFinished => {
            if let Some(t) = tails.get_mut(&key) {
                t.finished = true;
            }
            // Its last lines go out before the event that says it finished.
            read_tails(tails, tx, render).await;
        }
        _ => {}
    }
}

/// Sends the new complete lines of every followed transcript; false when the client has gone.
async fn read_tails(
    tails: &mut HashMap<AttemptKey, Tail>,
    tx: &mpsc::Sender<SseEvent>,
    render: bool,
) -> bool {
    let mut done: Vec<AttemptKey> = Vec::new();
    let mut keys: Vec<&AttemptKey> = tails.keys().collect();
    keys.sort();
    let keys: Vec<AttemptKey> = keys.into_iter().cloned().collect();
    for key in keys {
        let Some(tail) = tails.get_mut(&key) else {
            continue;
        };
        let mut lines = new_lines(tail).await;
        if tail.finished {
            if !tail.partial.is_empty() {
                tail.read += 1;
                lines.push((text_of(&std::mem::take(&mut tail.partial)), tail.read));
            }
            done.push(key.clone());
        }
        for (line, n) in lines {
            if tx
                .send(transcript_event(&key, &line, n, render))
                .await
                .is_err()
            {
                return false;
            }
        }
    }
    for key in done {
        tails.remove(&key);
    }
    true
}

/// `event: transcript` for line `n` of an attempt's transcript, stamped with when it was
/// read; with `render`, as a person reads it.
fn transcript_event(key: &AttemptKey, line: &str, n: u64, render: bool) -> SseEvent {
    let at = chrono::Utc::now();
    let data = if render {
        json!({"loop": key.0, "test": key.1, "attempt": key.2, "n": n,
               "rendered": crate::render::render(line), "at": at})
    } else {
        json!({"loop": key.0, "test": key.1, "attempt": key.2, "n": n, "line": line, "at": at})
    };
    SseEvent::default()
        .event("transcript")
        .json_data(data)
        .unwrap_or_default()
}

/// The complete lines added to the transcript since the last read, each with its number.
async fn new_lines(tail: &mut Tail) -> Vec<(String, u64)> {
    let Ok(mut file) = tokio::fs::File::open(&tail.path).await else {
        return Vec::new();
    };
    if file
        .seek(std::io::SeekFrom::Start(tail.offset))
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).await.is_err() {
        return Vec::new();
    }
    tail.offset += buf.len() as u64;
    tail.partial.extend_from_slice(&buf);
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(i) = tail.partial[start..].iter().position(|&b| b == b'\n') {
        tail.read += 1;
        lines.push((text_of(&tail.partial[start..=start + i]), tail.read));
        start += i + 1;
    }
    tail.partial.drain(..start);
    if tail.partial.len() >= MAX_PARTIAL {
        // A line without end (a progress bar, binary output) goes out in pieces.
        tail.read += 1;
        lines.push((text_of(&std::mem::take(&mut tail.partial)), tail.read));
    }
    lines
}

/// A transcript line for people: decoded only now, once it is whole, so a character split
/// between two reads is not replaced.
fn text_of(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\n', '\r'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_character_split_between_two_reads_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let mut tail = Tail {
            path: path.clone(),
            offset: 0,
            partial: Vec::new(),
            finished: false,
            read: 0,
        };
        let bytes = "café ok\n".as_bytes();
        let split = bytes.iter().position(|&b| b == 0xc3).unwrap() + 1;
        std::fs::write(&path, &bytes[..split]).unwrap();
        assert!(new_lines(&mut tail).await.is_empty());
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(new_lines(&mut tail).await, [("café ok".to_string(), 1)]);
    }
}
