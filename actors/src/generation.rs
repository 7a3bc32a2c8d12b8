//! The generation record: a small file beside the store that says how many times the store was
//! made durable, so that a store which lost writes is noticed instead of being taken for a
//! fleet that never ran.
//!
//! Every [`crate::store::Store::flush`] takes the next generation number, writes it into the
//! store's `meta` tree, flushes sled, and only then hands the number to a [`Writer`] that
//! records it in `<state_dir>/generation` on its own thread. The record therefore never runs
//! ahead of the store: a crash between the two leaves the store a generation or two ahead,
//! which is accepted. The writer keeps the fsync off the flush's path, and writes only the
//! newest number when flushes come faster than it.
//!
//! The file holds two fixed-size slots, each a line with a generation, a time and a CRC-32 of
//! both. The writer overwrites the older slot in place and syncs its data: one write and one
//! fdatasync, no new file, no rename, no folder sync (replacing the file on every flush took
//! about 5 ms and two fsyncs, and its file creations slowed the attempt's own). A write torn by
//! a crash spoils only the slot being written, and the reader takes the newest slot whose CRC
//! holds; the other slot is the previous generation, which the store is never behind. A record
//! of the first format (one JSON object, sessions before this one) is still read. A store *behind* its record lost durable writes after they were made: it was
//! deleted, truncated, or sled recovered it only up to a damaged spot (a flipped byte without a
//! snapshot). The record lives outside sled's folder, so deleting the store leaves it behind as
//! a witness; an agent that deletes both is caught by the git history instead (see
//! [`crate::ledger`]).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The record's file name in the state directory.
pub const RECORD_FILE: &str = "generation";

/// What the record file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The store's generation at its last flush.
    pub generation: u64,
    /// When that flush was.
    pub written_at: DateTime<Utc>,
}

/// The record file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading, writing or syncing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is not what loopd writes.
    #[error("{path} is not a generation record ({reason}); if the store is intact, remove the file and loopd writes a new one")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// The bytes of one slot: `G <generation> <unix ms> <crc32>`, space-padded, ending in `\n`.
const SLOT: usize = 64;
/// What the CRC covers: `G `, the generation and the time (20 digits each).
const SIGNED: usize = 2 + 20 + 1 + 20;

fn slot(record: &Record) -> [u8; SLOT] {
    let signed = format!(
        "G {:020} {:020}",
        record.generation,
        record.written_at.timestamp_millis().max(0)
    );
    let line = format!("{signed} {:08x}", crc32fast::hash(signed.as_bytes()));
    let mut out = [b' '; SLOT];
    out[..line.len()].copy_from_slice(line.as_bytes());
    out[SLOT - 1] = b'\n';
    out
}

/// The record in one slot, or `None` when the slot does not hold one whole.
fn parse_slot(raw: &[u8]) -> Option<Record> {
    let signed = raw.get(..SIGNED)?;
    let crc = std::str::from_utf8(raw.get(SIGNED + 1..SIGNED + 9)?).ok()?;
    if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(signed) {
        return None;
    }
    let text = std::str::from_utf8(signed).ok()?.strip_prefix("G ")?;
    let (generation, ms) = text.split_once(' ')?;
    Some(Record {
        generation: generation.parse().ok()?,
        written_at: DateTime::from_timestamp_millis(ms.parse().ok()?)?,
    })
}

/// Where the record of `state_dir` is.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD_FILE)
}

/// The record of `state_dir`, or `None` when there is none (a first run, or a store older than
/// the record).
pub fn read(state_dir: &Path) -> Result<Option<Record>, RecordError> {
    let path = path(state_dir);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Io { path, source }),
    };
    let invalid = |reason: String| RecordError::Invalid {
        path: path.clone(),
        reason,
    };
    if raw.starts_with(b"{") {
        return serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| invalid(e.to_string()));
    }
    if raw.len() != 2 * SLOT {
        return Err(invalid(format!(
            "expected {} bytes, found {}",
            2 * SLOT,
            raw.len()
        )));
    }
    raw.chunks(SLOT)
        .filter_map(parse_slot)
        .max_by_key(|r| r.generation)
        .map(Some)
        .ok_or_else(|| invalid("neither of its two slots holds a whole record".into()))
}

/// Replaces the record of `state_dir` with `generation`, durably: a crash leaves the old record
/// or the new one, never half of one.
pub fn write(state_dir: &Path, generation: u64) -> Result<(), RecordError> {
    let path = path(state_dir);
    let io = |source| RecordError::Io {
        path: path.clone(),
        source,
    };
    let one = slot(&Record {
        generation,
        written_at: Utc::now(),
    });
    let body = [one, one].concat();
    // The pid keeps two processes that open the store one after the other (a `status` ending
    // while a `run` starts) from writing into one temporary file.
    let tmp = state_dir.join(format!(".{RECORD_FILE}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&body).map_err(io)?;
    file.sync_data().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)
}

/// The least time between two writes of the record.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes the record on its own thread: [`Writer::publish`] returns at once; dropping the
/// writer waits until the newest generation published is written.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state_dir: PathBuf,
    state: Mutex<WriterState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct WriterState {
    /// The newest generation published.
    latest: u64,
    /// The generation last written (or tried).
    written: u64,
    /// The writer is being dropped: write what is left, then end.
    closing: bool,
    /// A write that failed, until a publish reports it.
    failed: Option<String>,
}

impl Writer {
    /// A writer for `state_dir`, whose record holds `written` now.
    pub fn start(state_dir: &Path, written: u64) -> Writer {
        let shared = Arc::new(Shared {
            state_dir: state_dir.to_path_buf(),
            state: Mutex::new(WriterState {
                latest: written,
                written,
                ..WriterState::default()
            }),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("loopd-generation".into())
            .spawn(move || worker.run())
            .expect("starting the generation record's thread");
        Writer {
            shared,
            thread: Some(thread),
        }
    }

    /// Asks for `generation` to be recorded (the store is durable at it). `Err` is an earlier
    /// write that failed: the record may be stale, and the caller must say so.
    pub fn publish(&self, generation: u64) -> Result<(), String> {
        let mut state = self.shared.lock();
        state.latest = state.latest.max(generation);
        self.shared.wake.notify_one();
        state.failed.take().map_or(Ok(()), Err)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut slots = Slots::default();
        let mut state = self.lock();
        loop {
            while state.latest == state.written && !state.closing {
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.latest == state.written {
                return;
            }
            let next = state.latest;
            drop(state);
            let result = slots.write(&self.state_dir, next);
            state = self.lock();
            state.written = next;
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot write the store's generation record");
                state.failed = Some(e.to_string());
            }
            // Flushes come every few milliseconds while attempts run; recording the newest
            // at most every GATHER keeps the record's fsyncs from queueing behind (and ahead
            // of) sled's own in the file system's journal. Closing cuts the wait short.
            let until = std::time::Instant::now() + GATHER;
            while !state.closing {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// The writer's open record file and the slot it writes next.
#[derive(Debug, Default)]
struct Slots {
    file: Option<std::fs::File>,
    next: u64,
}

impl Slots {
    /// Overwrites the older slot with `generation` and syncs it; the first time (or when the
    /// file cannot be opened: it was removed, or is of the first format) the whole file is
    /// written anew.
    fn write(&mut self, state_dir: &Path, generation: u64) -> Result<(), RecordError> {
        let path = path(state_dir);
        let io = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        if self.file.is_none() {
            write(state_dir, generation)?;
            self.file = Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io)?,
            );
            return Ok(());
        }
        let file = self.file.as_ref().expect("opened above");
        let one = slot(&Record {
            generation,
            written_at: Utc::now(),
        });
        self.next = (self.next + 1) % 2;
        file.write_all_at(&one, self.next * SLOT as u64)
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                self.file = None;
                io(e)
            })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Removes the record (`loopd recover`, before it rebuilds the store from nothing).
pub fn remove(state_dir: &Path) -> Result<(), RecordError> {
    let path = path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RecordError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), 7).unwrap();
        write(dir.path(), 8).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().generation, 8);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [RECORD_FILE], "no temporary file is left behind");
        remove(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    #[test]
    fn the_writer_records_the_newest_generation_before_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(dir.path(), 0);
        for g in 1..=50 {
            writer.publish(g).unwrap();
        }
        drop(writer);
        assert_eq!(read(dir.path()).unwrap().unwrap().generation, 50);
    }

    #[test]
    fn a_write_that_failed_is_reported_by_the_next_publish() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let writer = Writer::start(&gone, 0);
        writer.publish(1).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let err = loop {
            match writer.publish(1) {
                Err(e) => break e,
                Ok(()) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Ok(()) => panic!("the failed write was never reported"),
            }
        };
        assert!(err.contains("gone"), "{err}");
    }

    #[test]
    fn the_writer_overwrites_the_older_slot_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut slots = Slots::default();
        slots.write(dir.path(), 3).unwrap();
        let inode = || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path(dir.path())).unwrap().ino()
        };
        let first = inode();
        for g in 4..=9 {
            slots.write(dir.path(), g).unwrap();
            assert_eq!(read(dir.path()).unwrap().unwrap().generation, g);
        }
        assert_eq!(inode(), first, "written in place, not replaced");
        let raw = std::fs::read(path(dir.path())).unwrap();
        let mut held: Vec<u64> = raw
            .chunks(SLOT)
            .map(|s| parse_slot(s).unwrap().generation)
            .collect();
        held.sort();
        assert_eq!(held, [8, 9], "the newest two");
    }

    #[test]
    fn a_torn_slot_leaves_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut slots = Slots::default();
        for g in 1..=4 {
            slots.write(dir.path(), g).unwrap();
        }
        let mut raw = std::fs::read(path(dir.path())).unwrap();
        let newest = raw
            .chunks(SLOT)
            .position(|s| parse_slot(s).unwrap().generation == 4)
            .unwrap();
        // A crash in the middle of writing the newest slot: half old bytes, half new.
        raw[newest * SLOT + 10] ^= 0x01;
        std::fs::write(path(dir.path()), &raw).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().generation, 3);
        // Both spoilt: not a record.
        raw[(1 - newest) * SLOT + 10] ^= 0x01;
        std::fs::write(path(dir.path()), &raw).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("neither of its two slots"), "{err}");
    }

    #[test]
    fn a_record_of_the_first_format_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            path(dir.path()),
            r#"{"generation":12,"written_at":"2026-12-01T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().generation, 12);
        // The writer replaces it with the slotted format on its first write.
        let mut slots = Slots::default();
        slots.write(dir.path(), 13).unwrap();
        slots.write(dir.path(), 14).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().generation, 14);
    }

    #[test]
    fn a_record_that_is_not_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "garbage").unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a generation record"), "{err}");
    }
}
