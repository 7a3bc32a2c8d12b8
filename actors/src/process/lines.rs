//! Reading an agent's output line by line with a bounded line length, bytes kept as they came.
//!
//! An agent may print megabytes without a newline. Each line is capped: an overlong line comes
//! out in pieces of at most the cap (each piece but the last marked `truncated`), so memory stays
//! bounded. A line keeps its bytes as read (its `\n` or `\r\n` included, invalid UTF-8 kept), so
//! the transcript is what the agent wrote; text is decoded only for those who read it as text.
//! Every read from a pipe is a sign of life, whether or not it completed a line: [`OnRead`] is
//! told of each one (a `\r` progress bar or a long line being written is an agent at work).

use std::borrow::Cow;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};

/// Default cap on one line: large enough for Claude Code's stream-json events.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

/// Told of every read from a pipe that returned bytes.
pub type OnRead = Arc<dyn Fn() + Send + Sync>;

/// Reads lines of at most `max` bytes from an async reader.
pub struct LineReader<R> {
    /// The buffered source.
    reader: BufReader<R>,
    /// The cap on one line, in bytes.
    max: usize,
    /// The line being assembled.
    buf: Vec<u8>,
    /// Told of every read.
    on_read: Option<OnRead>,
}

impl<R> std::fmt::Debug for LineReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("max", &self.max)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader with the [`DEFAULT_MAX_LINE`] cap.
    pub fn new(reader: R) -> Self {
        Self::with_max_line(reader, DEFAULT_MAX_LINE)
    }

    /// A reader whose lines are at most `max` bytes (at least 1).
    pub fn with_max_line(reader: R, max: usize) -> Self {
        LineReader {
            reader: BufReader::new(reader),
            max: max.max(1),
            buf: Vec::new(),
            on_read: None,
        }
    }

    /// The next line with its `\n` (when it had one), as read, and whether it is a piece of a
    /// longer line; `None` at end of input. Cancel-safe: bytes read before the future is dropped
    /// stay in the line being assembled.
    pub async fn next_line(&mut self) -> std::io::Result<Option<(Vec<u8>, bool)>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((std::mem::take(&mut self.buf), false)));
            }
            if let Some(on_read) = &self.on_read {
                on_read();
            }
            let room = self.max - self.buf.len();
            let newline = available.iter().take(room).position(|&b| b == b'\n');
            match newline {
                Some(i) => {
                    self.buf.extend_from_slice(&available[..=i]);
                    self.reader.consume(i + 1);
                    return Ok(Some((std::mem::take(&mut self.buf), false)));
                }
                None => {
                    let n = available.len().min(room);
                    self.buf.extend_from_slice(&available[..n]);
                    self.reader.consume(n);
                    if self.buf.len() >= self.max {
                        return Ok(Some((std::mem::take(&mut self.buf), true)));
                    }
                }
            }
        }
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The agent's stdout.
    Stdout,
    /// The agent's stderr.
    Stderr,
}

/// One line of agent output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Which pipe it came from.
    pub stream: OutputStream,
    /// The bytes as the agent wrote them, with the `\n` that ended the line, if one did.
    pub bytes: Vec<u8>,
    /// A piece of a line longer than the cap; the rest follows in the next line(s).
    pub truncated: bool,
}

impl OutputLine {
    /// The line as text, without its `\n` (or `\r\n`); invalid UTF-8 is replaced.
    pub fn text(&self) -> Cow<'_, str> {
        let mut b = self.bytes.as_slice();
        if let Some(rest) = b.strip_suffix(b"\n") {
            b = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        String::from_utf8_lossy(b)
    }
}

/// A child's stdout and stderr, read line by line by whoever awaits [`Output::next`], with no
/// helper task: every task between a child's output and its reader is a wake-up more on the way
/// from an agent's exit to the next attempt. Backpressure is the pipe's own: a child that
/// prints faster than its lines are taken blocks in `write`.
#[derive(Debug)]
pub struct Output {
    out: Option<LineReader<ChildStdout>>,
    err: Option<LineReader<ChildStderr>>,
}

impl Output {
    /// Takes the child's stdout and stderr (when piped); lines are capped at `max_line` bytes.
    pub fn take(child: &mut Child, max_line: usize) -> Output {
        Output {
            out: child
                .stdout
                .take()
                .map(|r| LineReader::with_max_line(r, max_line)),
            err: child
                .stderr
                .take()
                .map(|r| LineReader::with_max_line(r, max_line)),
        }
    }

    /// `on_read` is told of every read from either pipe, before any line is complete.
    pub fn on_read(mut self, on_read: OnRead) -> Output {
        if let Some(r) = self.out.as_mut() {
            r.on_read = Some(on_read.clone());
        }
        if let Some(r) = self.err.as_mut() {
            r.on_read = Some(on_read);
        }
        self
    }

    /// The next line of either pipe, as they come; `None` once both are at end of input. A read
    /// error ends that pipe (it comes back as a last stderr line). Cancel-safe: a line being
    /// read when the future is dropped is kept for the next call.
    pub async fn next(&mut self) -> Option<OutputLine> {
        loop {
            let (read, stream) = tokio::select! {
                r = next_piece(&mut self.out), if self.out.is_some() => (r, OutputStream::Stdout),
                r = next_piece(&mut self.err), if self.err.is_some() => (r, OutputStream::Stderr),
                else => return None,
            };
            let pipe_ends = |o: &mut Output| match stream {
                OutputStream::Stdout => o.out = None,
                OutputStream::Stderr => o.err = None,
            };
            match read {
                Ok(Some((bytes, truncated))) => {
                    return Some(OutputLine {
                        stream,
                        bytes,
                        truncated,
                    })
                }
                Ok(None) => pipe_ends(self),
                Err(e) => {
                    pipe_ends(self);
                    return Some(OutputLine {
                        stream: OutputStream::Stderr,
                        bytes: format!("loopd: reading the child's {stream:?} failed: {e}\n")
                            .into_bytes(),
                        truncated: false,
                    });
                }
            }
        }
    }
}

async fn next_piece<R: AsyncRead + Unpin>(
    pipe: &mut Option<LineReader<R>>,
) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    match pipe.as_mut() {
        Some(p) => p.next_line().await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut reader = LineReader::with_max_line(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(bytes: &[u8]) -> String {
        OutputLine {
            stream: OutputStream::Stdout,
            bytes: bytes.to_vec(),
            truncated: false,
        }
        .text()
        .into_owned()
    }

    #[tokio::test]
    async fn splits_lines_keeps_their_bytes_and_the_last_unterminated_one() {
        let input = b"one\r\ntwo\n\nthree";
        let lines = all(input, 64).await;
        let texts: Vec<String> = lines.iter().map(|(b, _)| text(b)).collect();
        assert_eq!(texts, ["one", "two", "", "three"]);
        assert!(lines.iter().all(|(_, truncated)| !truncated));
        let joined: Vec<u8> = lines.iter().flat_map(|(b, _)| b.clone()).collect();
        assert_eq!(joined, input);
    }

    #[tokio::test]
    async fn caps_long_lines_into_pieces() {
        let mut input = vec![b'x'; 10];
        input.extend_from_slice(b"\nok\n");
        let lines = all(&input, 4).await;
        let got: Vec<(&[u8], bool)> = lines.iter().map(|(b, t)| (b.as_slice(), *t)).collect();
        assert_eq!(
            got,
            [
                (&b"xxxx"[..], true),
                (&b"xxxx"[..], true),
                (&b"xx\n"[..], false),
                (&b"ok\n"[..], false),
            ]
        );
    }

    #[tokio::test]
    async fn invalid_utf8_is_kept_and_replaced_only_as_text() {
        let lines = all(b"a\xffb\n", 64).await;
        assert_eq!(lines[0].0, b"a\xffb\n");
        assert_eq!(text(&lines[0].0), "a\u{fffd}b");
    }

    #[tokio::test]
    async fn every_read_is_told_before_a_line_is_complete() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A progress bar: `\r` but no newline, written in three reads.
        let (mut tx, rx) = tokio::io::duplex(64);
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = reads.clone();
        let mut reader = LineReader::with_max_line(rx, 1024);
        reader.on_read = Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let line = tokio::spawn(async move { reader.next_line().await.unwrap() });
        for (i, part) in [&b"10%\r"[..], b"50%\r", b"90%\r"].iter().enumerate() {
            tokio::io::AsyncWriteExt::write_all(&mut tx, part)
                .await
                .unwrap();
            while reads.load(Ordering::SeqCst) <= i {
                tokio::task::yield_now().await;
            }
        }
        drop(tx);
        let (bytes, truncated) = line.await.unwrap().unwrap();
        assert_eq!(bytes, b"10%\r50%\r90%\r");
        assert!(!truncated);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn megabytes_without_newline_stay_bounded() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "head -c 3000000 /dev/zero | tr '\\0' 'a'; echo; echo err >&2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut output = Output::take(&mut child, 64 * 1024);
        let (mut pieces, mut longest, mut saw_err) = (0, 0, false);
        while let Some(line) = output.next().await {
            longest = longest.max(line.bytes.len());
            match line.stream {
                OutputStream::Stdout => pieces += 1,
                OutputStream::Stderr => saw_err = line.text() == "err",
            }
        }
        child.wait().await.unwrap();
        assert!(saw_err);
        assert_eq!(longest, 64 * 1024);
        assert_eq!(pieces, 3_000_000 / (64 * 1024) + 1);
    }
}
