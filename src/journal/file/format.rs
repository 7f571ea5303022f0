//! The file journal's bytes: the header, a record's frame, and the scan that checks a journal
//! file record by record when it is opened.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use crate::journal::{ChainHash, ChainKey, JournalError, KeyIndex as _, Seq};

use super::TornTail;

/// The first 8 bytes of every journal file. The high first byte and the trailing newline
/// (as in PNG's signature) catch a file mangled as text.
pub(super) const MAGIC: [u8; 8] = *b"\x89TGJRNL\n";
/// The format this code writes and reads.
pub(super) const VERSION: u32 = 1;
/// Magic, version, and a CRC-32 of both. In every version to come, bytes 12..16 stay the
/// CRC of bytes 0..12, so a damaged header is told from a newer one.
pub(super) const HEADER_LEN: usize = 16;
/// A frame's length and CRC fields.
pub(super) const FRAME_HEAD: usize = 8;
/// The fixed part of a record's body: `seq`, `key_prev`, `prev`, `hash`, the key's length.
pub(super) const BODY_FIXED: usize = 8 + 8 + 32 + 32 + 4;
/// The smallest frame: an empty key and an empty payload.
pub(super) const MIN_FRAME: usize = FRAME_HEAD + BODY_FIXED;
/// The largest key + payload a frame can hold (its length field is a `u32`).
pub(super) const MAX_ENTRY: usize = u32::MAX as usize - BODY_FIXED;

/// How much the scan at open reads at a time.
const CHUNK: usize = 1 << 20;

/// The header of a journal file of `version`.
pub(super) fn header(version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the first bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Header {
    /// A journal of this version.
    Valid,
    /// No header: an empty file, or a header cut short while it was being created.
    Missing,
}

/// Reads a header (`found` is the file's first bytes, up to [`HEADER_LEN`]).
pub(super) fn check_header(found: &[u8], path: &str) -> Result<Header, JournalError> {
    let corrupt = |reason: &str| JournalError::Corrupt {
        seq: 0,
        offset: 0,
        reason: format!("the file header: {reason}"),
    };
    if found.len() < HEADER_LEN {
        return if header(VERSION).starts_with(found) {
            Ok(Header::Missing)
        } else {
            Err(corrupt(
                "the file is shorter than a journal header and is not the start of one",
            ))
        };
    }
    if found[..8] != MAGIC {
        return Err(corrupt(
            "the file does not start with the journal's magic bytes (not a tollgate journal)",
        ));
    }
    if crc32fast::hash(&found[..12]) != le_u32(&found[12..16]) {
        return Err(corrupt("its checksum does not match"));
    }
    match le_u32(&found[8..12]) {
        VERSION => Ok(Header::Valid),
        0 => Err(corrupt("format version 0 does not exist")),
        newer => Err(JournalError::Version {
            path: path.to_owned(),
            found: newer,
            supported: VERSION,
        }),
    }
}

/// Appends the frame of one record to `out`:
///
/// ```text
/// [body len: u32][crc32 of body len and body: u32]
/// body: [seq: u64][key_prev: u64][prev: 32 bytes][hash: 32 bytes][key len: u32][key][payload]
/// ```
///
/// All integers little-endian. The caller has checked that key and payload fit
/// ([`MAX_ENTRY`]).
pub(super) fn encode(
    seq: Seq,
    key_prev: Seq,
    prev: &ChainHash,
    hash: &ChainHash,
    key: &str,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let body_len = BODY_FIXED + key.len() + payload.len();
    let start = out.len();
    out.reserve(FRAME_HEAD + body_len);
    // Both casts are in range: `append` refuses entries larger than `MAX_ENTRY`.
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&key_prev.to_le_bytes());
    out.extend_from_slice(&prev.0);
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(payload);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 4]);
    crc.update(&out[start + FRAME_HEAD..]);
    out[start + 4..start + FRAME_HEAD].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// A record read from its frame, borrowing the frame's bytes.
#[derive(Debug)]
pub(super) struct Record<'a> {
    pub(super) seq: Seq,
    pub(super) key_prev: Seq,
    pub(super) prev: ChainHash,
    pub(super) hash: ChainHash,
    pub(super) key: &'a str,
    pub(super) payload: &'a [u8],
}

impl Record<'_> {
    /// The record as the [`Journal`](crate::journal::Journal) trait hands it out.
    pub(super) fn to_stored(&self, offset: u64) -> crate::journal::Stored {
        crate::journal::Stored {
            seq: self.seq,
            key: self.key.to_owned(),
            key_prev: self.key_prev,
            payload: self.payload.to_vec(),
            prev: self.prev,
            hash: self.hash,
            offset,
        }
    }
}

/// What the bytes at a record's offset hold.
#[derive(Debug)]
pub(super) enum Frame<'a> {
    /// A whole record whose CRC matches, and the length of its frame.
    Record(Record<'a>, usize),
    /// The bytes end before the frame does.
    Incomplete,
    /// Not a good frame: why, and its length if its length field is believable.
    Bad(&'static str, Option<usize>),
}

/// Reads the frame at the start of `buf`.
pub(super) fn parse(buf: &[u8]) -> Frame<'_> {
    let Some(head) = buf.get(..FRAME_HEAD) else {
        return Frame::Incomplete;
    };
    let body_len = le_u32(&head[..4]) as usize;
    if body_len < BODY_FIXED {
        return Frame::Bad("its length field is smaller than any record", None);
    }
    let Some(body) = buf.get(FRAME_HEAD..FRAME_HEAD + body_len) else {
        return Frame::Incomplete;
    };
    let frame_len = Some(FRAME_HEAD + body_len);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..4]);
    crc.update(body);
    if crc.finalize() != le_u32(&head[4..8]) {
        return Frame::Bad("its checksum does not match its bytes", frame_len);
    }
    let key_len = le_u32(&body[80..84]) as usize;
    let rest = &body[BODY_FIXED..];
    if key_len > rest.len() {
        return Frame::Bad("its key length runs past the record", frame_len);
    }
    let Ok(key) = std::str::from_utf8(&rest[..key_len]) else {
        return Frame::Bad("its key is not UTF-8", frame_len);
    };
    Frame::Record(
        Record {
            seq: le_u64(&body[0..8]),
            key_prev: le_u64(&body[8..16]),
            prev: ChainHash(hash_at(&body[16..48])),
            hash: ChainHash(hash_at(&body[48..80])),
            key,
            payload: &rest[key_len..],
        },
        FRAME_HEAD + body_len,
    )
}

/// What the scan at open found: the journal's index, and a torn tail if there was one.
#[derive(Debug)]
pub(super) struct Scanned {
    /// Where each record starts (`offsets[seq - 1]`).
    pub(super) offsets: Vec<u64>,
    /// Where the last good record ends.
    pub(super) end: u64,
    /// The last record's MAC.
    pub(super) head_hash: ChainHash,
    /// The last sequence number of each key.
    pub(super) last_of_key: HashMap<String, Seq>,
    /// The torn tail after `end`, to be cut away.
    pub(super) torn: Option<TornTail>,
}

/// Reads every record of a journal file of `file_len` bytes after its header and checks it:
/// its frame and CRC, its sequence number, its link to the record before, its MAC under
/// `key`, and its back-link to the previous record of its key.
///
/// A frame that is cut short or fails its CRC, with no good frame anywhere after it, is a
/// torn tail: a write the crash interrupted, never acknowledged (an append is acknowledged
/// only once all its bytes are durable). Anything else is corruption, named by the sequence
/// number the record should have and its offset: a bad frame followed by good ones (damage
/// in the middle), or a good frame that does not fit the chain (an edit, a removal, or a
/// record written without the key).
pub(super) fn scan(file: &File, file_len: u64, key: &ChainKey) -> Result<Scanned, JournalError> {
    let mut window = Window {
        file,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    let mut offset = HEADER_LEN as u64;
    let mut previous = ChainHash::GENESIS;
    let mut offsets = Vec::new();
    let mut last_of_key: HashMap<String, Seq> = HashMap::new();
    let mut torn = None;
    while offset < file_len {
        let seq = offsets.len() as Seq + 1;
        let head = window.get(offset, FRAME_HEAD)?;
        let want = if head.len() == FRAME_HEAD {
            FRAME_HEAD + le_u32(&head[..4]) as usize
        } else {
            FRAME_HEAD
        };
        let (reason, frame_len) = match parse(window.get(offset, want)?) {
            Frame::Record(record, len) => {
                check_link(key, &record, seq, &previous, &last_of_key).map_err(|reason| {
                    JournalError::Corrupt {
                        seq,
                        offset,
                        reason,
                    }
                })?;
                if let Some(last) = last_of_key.get_mut(record.key) {
                    *last = seq;
                } else {
                    last_of_key.insert(record.key.to_owned(), seq);
                }
                previous = record.hash;
                offsets.push(offset);
                offset += len as u64;
                continue;
            }
            Frame::Incomplete => ("it is cut short by the end of the file", None),
            Frame::Bad(reason, len) => (reason, len),
        };
        if let Some(at) = next_good_frame(&mut window, offset, frame_len, seq)? {
            return Err(JournalError::Corrupt {
                seq,
                offset,
                reason: format!(
                    "{reason}, and a good record follows at byte {at}, so this is damage, \
                     not a torn write"
                ),
            });
        }
        torn = Some(TornTail {
            offset,
            bytes: file_len - offset,
            first_seq: seq,
            reason: reason.to_owned(),
        });
        break;
    }
    Ok(Scanned {
        offsets,
        end: offset,
        head_hash: previous,
        last_of_key,
        torn,
    })
}

/// Checks that a record with a good frame is entry `seq` of the chain: the messages are
/// [`verify`](crate::journal::verify)'s.
fn check_link(
    key: &ChainKey,
    record: &Record<'_>,
    seq: Seq,
    previous: &ChainHash,
    last_of_key: &HashMap<String, Seq>,
) -> Result<(), String> {
    if record.seq != seq {
        return Err(format!(
            "found sequence number {} where {seq} belongs",
            record.seq
        ));
    }
    if record.prev != *previous {
        return Err(
            "it does not follow the entry before it (one was edited, removed or moved)".to_owned(),
        );
    }
    let expected = key.link(previous, seq, record.key, record.key_prev, record.payload);
    if expected != record.hash {
        return Err(
            "its MAC does not match its content (edited, or written without the key)".to_owned(),
        );
    }
    let expected = last_of_key.last(record.key);
    if record.key_prev != expected {
        return Err(format!(
            "it names entry {} as the previous one of `{}`, but that is {expected}",
            record.key_prev, record.key
        ));
    }
    Ok(())
}

/// Where a good frame starts after the bad one at `bad` (whose length, if believable, is
/// `bad_len`), if anywhere: first right after it, then at every byte after `bad`. A frame
/// counts only if its CRC matches and it claims a sequence number that could follow `seq` in
/// the bytes left, which keeps the search linear in practice.
fn next_good_frame(
    window: &mut Window<'_>,
    bad: u64,
    bad_len: Option<usize>,
    seq: Seq,
) -> io::Result<Option<u64>> {
    let file_len = window.file_len;
    let max_seq = seq.saturating_add((file_len - bad) / MIN_FRAME as u64 + 1);
    let mut is_good = |at: u64| -> io::Result<bool> {
        let head = window.get(at, MIN_FRAME)?;
        if head.len() < MIN_FRAME {
            return Ok(false);
        }
        let frame_len = FRAME_HEAD as u64 + u64::from(le_u32(&head[..4]));
        let claimed = le_u64(&head[FRAME_HEAD..FRAME_HEAD + 8]);
        if frame_len < MIN_FRAME as u64
            || at + frame_len > file_len
            || claimed < seq
            || claimed > max_seq
        {
            return Ok(false);
        }
        let frame = window.get(at, frame_len as usize)?;
        Ok(matches!(parse(frame), Frame::Record(..)))
    };
    if let Some(len) = bad_len {
        let after = bad + len as u64;
        if after < file_len && is_good(after)? {
            return Ok(Some(after));
        }
    }
    let mut at = bad + 1;
    while at + MIN_FRAME as u64 <= file_len {
        if is_good(at)? {
            return Ok(Some(at));
        }
        at += 1;
    }
    Ok(None)
}

/// A sliding window over the file for the scan at open, read a chunk at a time.
struct Window<'f> {
    file: &'f File,
    file_len: u64,
    /// The file offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// Up to `want` bytes from `offset`: fewer only where the file ends.
    fn get(&mut self, offset: u64, want: usize) -> io::Result<&[u8]> {
        let left = self.file_len.saturating_sub(offset);
        let want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        let end = offset + want as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            let read = want
                .max(CHUNK)
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            self.buf.resize(read, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + want])
    }
}

/// A little-endian `u32` from the first 4 bytes of `b` (callers pass at least 4).
pub(super) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// A little-endian `u64` from the first 8 bytes of `b` (callers pass at least 8).
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A MAC from the first 32 bytes of `b` (callers pass at least 32).
fn hash_at(b: &[u8]) -> [u8; 32] {
    let mut a = [0; 32];
    a.copy_from_slice(&b[..32]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let hash = ChainHash([7; 32]);
        encode(3, 1, &ChainHash::GENESIS, &hash, key, payload, &mut out);
        out
    }

    #[test]
    fn a_frame_reads_back() {
        let bytes = frame("r1", b"built");
        let Frame::Record(record, len) = parse(&bytes) else {
            panic!("not a record");
        };
        assert_eq!(len, bytes.len());
        assert_eq!(
            (record.seq, record.key_prev, record.key, record.payload),
            (3, 1, "r1", &b"built"[..])
        );
        assert_eq!(record.hash, ChainHash([7; 32]));
    }

    #[test]
    fn every_cut_is_incomplete_and_every_flip_is_bad() {
        let bytes = frame("r1", b"built");
        for cut in 0..bytes.len() {
            assert!(matches!(parse(&bytes[..cut]), Frame::Incomplete), "{cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(
                !matches!(parse(&flipped), Frame::Record(..)),
                "a flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn headers() {
        let ours = header(VERSION);
        assert_eq!(check_header(&ours, "j").unwrap(), Header::Valid);
        assert_eq!(check_header(&ours[..5], "j").unwrap(), Header::Missing);
        assert_eq!(check_header(&[], "j").unwrap(), Header::Missing);
        assert!(matches!(
            check_header(&header(VERSION + 1), "j"),
            Err(JournalError::Version { found: 2, .. })
        ));
        let mut flipped = ours;
        flipped[9] ^= 1;
        assert!(matches!(
            check_header(&flipped, "j"),
            Err(JournalError::Corrupt {
                seq: 0,
                offset: 0,
                ..
            })
        ));
        assert!(matches!(
            check_header(b"hello", "j"),
            Err(JournalError::Corrupt { .. })
        ));
    }
}
