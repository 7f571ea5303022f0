//! The reader thread: it answers reads with positional reads (`pread`) of durable records,
//! found through the in-memory index, so no read waits for a group commit's `fdatasync`
//! and no executor thread waits for the disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, RwLock};

use futures::channel::oneshot;

use crate::journal::{JournalError, Seq, Stored};

use super::format::{self, Frame};
use super::{Index, read_index};

/// How many bytes one positional read takes at most when a range is read.
const MAX_READ: u64 = 4 << 20;

/// What the journal asks of its reader.
#[derive(Debug)]
pub(super) enum ReadRequest {
    /// Up to `limit` entries from `from` on.
    Range {
        from: Seq,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Stored>, JournalError>>,
    },
    /// Every entry of `key`.
    Key {
        key: String,
        reply: oneshot::Sender<Result<Vec<Stored>, JournalError>>,
    },
}

/// Opens the file for reading (its own open file, apart from the writer's locked one) and
/// starts the reader thread; it ends when the journal is dropped.
pub(super) fn spawn(
    path: &Path,
    index: Arc<RwLock<Index>>,
) -> io::Result<mpsc::Sender<ReadRequest>> {
    let file = File::open(path)?;
    let (sender, requests) = mpsc::channel();
    std::thread::Builder::new()
        .name("tollgate-journal-reader".to_owned())
        .spawn(move || Reader { file, index }.run(&requests))?;
    Ok(sender)
}

struct Reader {
    file: File,
    index: Arc<RwLock<Index>>,
}

impl Reader {
    fn run(&self, requests: &Receiver<ReadRequest>) {
        while let Ok(request) = requests.recv() {
            match request {
                ReadRequest::Range { from, limit, reply } => {
                    let _ = reply.send(self.range(from, limit));
                }
                ReadRequest::Key { key, reply } => {
                    let _ = reply.send(self.key(&key));
                }
            }
        }
    }

    /// Up to `limit` entries from `from` on: the records are contiguous in the file, so a
    /// few large reads fetch them.
    fn range(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        let from = from.max(1);
        // Where each wanted record starts, and where the last one ends.
        let (offsets, end) = {
            let index = read_index(&self.index);
            let count = index.offsets.len() as u64;
            if from > count {
                return Ok(Vec::new());
            }
            let first = (from - 1) as usize;
            let last = first.saturating_add(limit).min(index.offsets.len());
            let end = index.offsets.get(last).copied().unwrap_or(index.end);
            (index.offsets[first..last].to_vec(), end)
        };
        let mut out = Vec::with_capacity(offsets.len());
        let mut buf = Vec::new();
        let mut i = 0;
        while i < offsets.len() {
            // As many whole records as fit in one read (at least one).
            let start = offsets[i];
            let mut j = i + 1;
            while j < offsets.len() && offsets[j] - start <= MAX_READ {
                j += 1;
            }
            let stop = offsets.get(j).copied().unwrap_or(end);
            self.read_at(&mut buf, start, stop)?;
            for (k, &offset) in offsets.iter().enumerate().take(j).skip(i) {
                let next = offsets.get(k + 1).copied().unwrap_or(end);
                let at = (offset - start) as usize;
                let seq = from + k as u64;
                out.push(decode(
                    &buf[at..(next - start) as usize],
                    seq,
                    offset,
                    None,
                )?);
            }
            i = j;
        }
        Ok(out)
    }

    /// Every entry of `key`, found by following the key's back-links from its last entry:
    /// one positional read per entry, none of the others read.
    fn key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        let mut seq = read_index(&self.index)
            .last_of_key
            .get(key)
            .copied()
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while seq != 0 {
            let (offset, end) = {
                let index = read_index(&self.index);
                let Some(&offset) = index.offsets.get((seq - 1) as usize) else {
                    return Err(changed(seq, 0, "the index points past the journal's end"));
                };
                (
                    offset,
                    index
                        .offsets
                        .get(seq as usize)
                        .copied()
                        .unwrap_or(index.end),
                )
            };
            self.read_at(&mut buf, offset, end)?;
            let stored = decode(&buf, seq, offset, Some(key))?;
            if stored.key_prev >= seq {
                return Err(changed(
                    seq,
                    offset,
                    "its back-link does not point to an earlier entry",
                ));
            }
            seq = stored.key_prev;
            out.push(stored);
        }
        out.reverse();
        Ok(out)
    }

    /// Reads bytes `start..end` of the file into `buf`.
    fn read_at(&self, buf: &mut Vec<u8>, start: u64, end: u64) -> io::Result<()> {
        buf.resize((end - start) as usize, 0);
        self.file.read_exact_at(buf, start)
    }
}

/// Decodes the record that fills `bytes`, which the index says is entry `seq` at `offset`
/// (of `key`, where given). Its CRC is checked again: the file may have changed on disk since
/// it was opened. Its MAC is the caller's to check ([`verify`](crate::journal::verify),
/// [`check_key_chain`](crate::journal::check_key_chain)).
fn decode(bytes: &[u8], seq: Seq, offset: u64, key: Option<&str>) -> Result<Stored, JournalError> {
    match format::parse(bytes) {
        Frame::Record(record, len) if len == bytes.len() => {
            if record.seq != seq {
                return Err(changed(
                    seq,
                    offset,
                    &format!("it holds sequence number {}", record.seq),
                ));
            }
            if key.is_some_and(|key| key != record.key) {
                return Err(changed(seq, offset, "it is filed under another key"));
            }
            Ok(record.to_stored(offset))
        }
        Frame::Record(..) => Err(changed(seq, offset, "its length does not match the index")),
        Frame::Incomplete => Err(changed(seq, offset, "it is cut short")),
        Frame::Bad(reason, _) => Err(changed(seq, offset, reason)),
    }
}

/// A record that no longer is what the scan at open (or the writer) saw.
fn changed(seq: Seq, offset: u64, reason: &str) -> JournalError {
    JournalError::Corrupt {
        seq,
        offset,
        reason: format!("{reason} (the file changed on disk since the journal was opened)"),
    }
}
