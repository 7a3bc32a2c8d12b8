//! Reading an agent's output line by line with a bounded line length.
//!
//! An agent may print megabytes without a newline. Each line is capped: an overlong line comes
//! out in pieces of at most the cap (each piece but the last marked `truncated`), so memory stays
//! bounded and every piece still counts as output (a heartbeat) while the agent keeps printing.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};

/// Default cap on one line: large enough for Claude Code's stream-json events.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

/// Reads lines of at most `max` bytes from an async reader.
#[derive(Debug)]
pub struct LineReader<R> {
    /// The buffered source.
    reader: BufReader<R>,
    /// The cap on one line, in bytes.
    max: usize,
    /// The line being assembled.
    buf: Vec<u8>,
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
        }
    }

    /// The next line without its `\n` (and `\r`), decoded lossily, and whether it is a piece of
    /// a longer line; `None` at end of input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<(String, bool)>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((self.take(), false)));
            }
            let room = self.max - self.buf.len();
            let newline = available.iter().take(room).position(|&b| b == b'\n');
            match newline {
                Some(i) => {
                    self.buf.extend_from_slice(&available[..i]);
                    self.reader.consume(i + 1);
                    return Ok(Some((self.take(), false)));
                }
                None => {
                    let n = available.len().min(room);
                    self.buf.extend_from_slice(&available[..n]);
                    self.reader.consume(n);
                    if self.buf.len() >= self.max {
                        return Ok(Some((self.take(), true)));
                    }
                }
            }
        }
    }

    fn take(&mut self) -> String {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        line
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
    /// The text, without its newline.
    pub text: String,
    /// A piece of a line longer than the cap; the rest follows in the next line(s).
    pub truncated: bool,
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
                Ok(Some((text, truncated))) => {
                    return Some(OutputLine {
                        stream,
                        text,
                        truncated,
                    })
                }
                Ok(None) => pipe_ends(self),
                Err(e) => {
                    pipe_ends(self);
                    return Some(OutputLine {
                        stream: OutputStream::Stderr,
                        text: format!("loopd: reading the child's {stream:?} failed: {e}"),
                        truncated: false,
                    });
                }
            }
        }
    }
}

async fn next_piece<R: AsyncRead + Unpin>(
    pipe: &mut Option<LineReader<R>>,
) -> std::io::Result<Option<(String, bool)>> {
    match pipe.as_mut() {
        Some(p) => p.next_line().await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let mut reader = LineReader::with_max_line(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_last_unterminated_one() {
        let lines = all(b"one\r\ntwo\n\nthree", 64).await;
        let texts: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["one", "two", "", "three"]);
        assert!(lines.iter().all(|(_, truncated)| !truncated));
    }

    #[tokio::test]
    async fn caps_long_lines_into_pieces() {
        let mut input = vec![b'x'; 10];
        input.extend_from_slice(b"\nok\n");
        let lines = all(&input, 4).await;
        assert_eq!(
            lines,
            [
                ("xxxx".to_string(), true),
                ("xxxx".to_string(), true),
                ("xx".to_string(), false),
                ("ok".to_string(), false),
            ]
        );
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let lines = all(b"a\xffb\n", 64).await;
        assert_eq!(lines[0].0, "a\u{fffd}b");
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
            longest = longest.max(line.text.len());
            match line.stream {
                OutputStream::Stdout => pieces += 1,
                OutputStream::Stderr => saw_err = line.text == "err",
            }
        }
        child.wait().await.unwrap();
        assert!(saw_err);
        assert_eq!(longest, 64 * 1024);
        assert_eq!(pieces, 3_000_000 / (64 * 1024) + 1);
    }
}
