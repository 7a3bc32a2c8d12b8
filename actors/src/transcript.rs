//! An attempt's transcript: the bytes the agent printed, as it printed them, capped at the loop's
//! `max_transcript_bytes`.
//!
//! The first half of the cap is written as it comes, so that followers (`logs -f`) see it live
//! and a crash of loopd leaves a valid head. Beyond it, the newest bytes are kept in a ring as
//! large as the other half and written when the attempt ends, after a marker line
//! `[loopd: N bytes cut]`: the file only ever grows, and holds at most the cap plus that line.
//! Bytes are never decoded here (binary output stays byte for byte); readers decode lossily
//! when they render text.
//!
//! Writes are gathered: one write to the file per line made an agent printing short lines wait
//! on loopd (1.5 million lines took two minutes). The attempt writes what is gathered once
//! [`Transcript::flush_at`] has come, so that followers and a crash lose at most a moment.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Bytes gathered before they are written, whatever the time.
const GATHER: usize = 64 * 1024;
/// How long gathered bytes may wait for more.
const GATHER_FOR: Duration = Duration::from_millis(50);

/// How often the file's modification time is refreshed while output goes to the ring only:
/// the API reads it as the running agent's last sign of life.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// The transcript of one running attempt.
#[derive(Debug)]
pub struct Transcript {
    /// The file; `None` once a write failed (a full disk must not end the attempt).
    file: Option<tokio::fs::File>,
    /// Head bytes not written yet.
    pending: Vec<u8>,
    /// When the pending bytes are due.
    due: Option<Instant>,
    /// Bytes the head may still take.
    head_room: u64,
    /// Whether the head ends with a newline (the marker goes on a line of its own).
    head_ends_line: bool,
    /// The newest bytes beyond the head.
    tail: VecDeque<u8>,
    /// The most bytes the ring keeps.
    tail_cap: usize,
    /// Bytes dropped between the head and the tail.
    cut: u64,
    /// When the file's modification time was last refreshed.
    touched: Option<Instant>,
}

impl Transcript {
    /// A transcript written to `file` (none: the output is only counted), of at most `cap`
    /// bytes plus the marker line.
    pub fn new(file: Option<std::fs::File>, cap: u64) -> Transcript {
        let head = cap / 2;
        Transcript {
            file: file.map(tokio::fs::File::from_std),
            pending: Vec::new(),
            due: None,
            head_room: head,
            head_ends_line: true,
            tail: VecDeque::new(),
            tail_cap: usize::try_from(cap - head).unwrap_or(usize::MAX),
            cut: 0,
            touched: None,
        }
    }

    /// Appends what the agent printed.
    pub async fn write(&mut self, bytes: &[u8]) {
        let to_head = bytes
            .len()
            .min(usize::try_from(self.head_room).unwrap_or(usize::MAX));
        if to_head > 0 {
            self.head_room -= to_head as u64;
            self.head_ends_line = bytes[to_head - 1] == b'\n';
            self.pending.extend_from_slice(&bytes[..to_head]);
            self.due.get_or_insert_with(|| Instant::now() + GATHER_FOR);
            if self.pending.len() >= GATHER {
                self.flush().await;
            }
        }
        let rest = &bytes[to_head..];
        if !rest.is_empty() {
            self.flush().await;
            self.keep(rest);
            self.touch().await;
        }
    }

    /// When the gathered bytes are due to be written ([`Transcript::flush`]), if any are.
    pub fn flush_at(&self) -> Option<Instant> {
        self.due
    }

    /// Writes the gathered bytes.
    pub async fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.due = None;
        self.write_file(&pending).await;
        self.pending = pending;
        self.pending.clear();
        // tokio hands a write to a blocking thread and returns: wait for it to be done.
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush().await;
        }
    }

    /// Bytes cut so far.
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// Writes the marker (when something was cut) and the tail, and flushes.
    pub async fn finish(mut self) {
        self.flush().await;
        if self.cut > 0 {
            let newline = if self.head_ends_line { "" } else { "\n" };
            let marker = format!("{newline}[loopd: {} bytes cut]\n", self.cut);
            self.write_file(marker.as_bytes()).await;
        }
        let tail = std::mem::take(&mut self.tail);
        let (a, b) = tail.as_slices();
        self.write_file(a).await;
        self.write_file(b).await;
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush().await;
        }
    }

    /// Keeps `bytes` at the end of the ring, dropping its oldest bytes beyond the cap.
    fn keep(&mut self, bytes: &[u8]) {
        if bytes.len() >= self.tail_cap {
            self.cut += (self.tail.len() + bytes.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let over = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        if over > 0 {
            self.tail.drain(..over);
            self.cut += over as u64;
        }
        self.tail.extend(bytes);
    }

    async fn write_file(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(bytes).await.is_err() {
                // The transcript just stops growing; the attempt goes on.
                self.file = None;
            }
        }
    }

    /// Refreshes the file's modification time, at most once per [`TOUCH_EVERY`].
    async fn touch(&mut self) {
        if self.touched.is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
            return;
        }
        self.touched = Some(Instant::now());
        let Some(f) = self.file.as_ref() else { return };
        if let Ok(clone) = f.try_clone().await {
            let std = clone.into_std().await;
            let _ = tokio::task::spawn_blocking(move || std.set_modified(SystemTime::now())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn transcript_of(chunks: &[&[u8]], cap: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut t = Transcript::new(Some(std::fs::File::create(&path).unwrap()), cap);
        for c in chunks {
            t.write(c).await;
        }
        t.finish().await;
        std::fs::read(&path).unwrap()
    }

    #[tokio::test]
    async fn output_within_the_cap_is_kept_byte_for_byte() {
        let chunks: [&[u8]; 3] = [b"one\r\n", b"\xff\x00binary", b"\nend"];
        assert_eq!(
            transcript_of(&chunks, 1024).await,
            chunks.concat(),
            "nothing cut, nothing added"
        );
        assert_eq!(transcript_of(&[&[b'x'; 16]], 16).await, vec![b'x'; 16]);
    }

    #[tokio::test]
    async fn beyond_the_cap_the_head_and_the_tail_are_kept_and_the_cut_marked() {
        let lines: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("line {i:04}\n").into_bytes())
            .collect();
        let chunks: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let all = lines.concat();
        let got = transcript_of(&chunks, 100).await;
        let text = String::from_utf8(got.clone()).unwrap();
        assert!(text.starts_with("line 0000\nline 0001\n"), "{text}");
        assert!(text.ends_with("line 0098\nline 0099\n"), "{text}");
        let cut = all.len() - 100;
        let marker = format!("[loopd: {cut} bytes cut]\n");
        assert!(
            text.contains(&format!("line 0004\n{marker}line 0095\n")),
            "{text}"
        );
        assert_eq!(got.len(), 100 + marker.len());
        assert_eq!(&got[..50], &all[..50]);
        assert_eq!(&got[got.len() - 50..], &all[all.len() - 50..]);
    }

    #[tokio::test]
    async fn gathered_bytes_are_on_disk_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut t = Transcript::new(Some(std::fs::File::create(&path).unwrap()), 1 << 20);
        t.write(b"one\n").await;
        assert!(t.flush_at().is_some());
        t.flush().await;
        assert_eq!(t.flush_at(), None);
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        t.write(&vec![b'x'; GATHER]).await;
        assert_eq!(t.flush_at(), None, "a full buffer is written at once");
        assert_eq!(std::fs::read(&path).unwrap().len(), 4 + GATHER);
    }

    #[tokio::test]
    async fn one_huge_write_keeps_its_ends() {
        let mut big = vec![b'a'; 10];
        big.extend(vec![b'm'; 1000]);
        big.extend(vec![b'z'; 10]);
        let got = transcript_of(&[&big], 20).await;
        assert_eq!(got, b"aaaaaaaaaa\n[loopd: 1000 bytes cut]\nzzzzzzzzzz");
    }
}
