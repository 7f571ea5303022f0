//! The journal backends from the outside. The file journal on real files: cut at every byte
//! of its last records, a byte flipped anywhere, a writer killed with SIGKILL, a full disk, a
//! second writer, a newer format. The behaviour both backends share, run on each. A journal
//! rolled back behind the head its witness keeps (a truncated tail, an older copy, a fork).
//! And a property test of the file journal against the memory journal as the reference.
//!
//! Every test's name says `journal`, so `cargo test --test journal --lib journal` runs them all.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::executor::block_on;
use futures::future::join_all;
use proptest::prelude::*;
use tollgate::journal::{
    ChainHash, ChainKey, DiskQuota, Entry, FileJournal, FileJournalOptions, Head, HeadWitness,
    Journal, JournalError, MemoryJournal, MemoryWitness, Stored, WitnessError, Witnessed,
    check_head, check_key_chain, verify,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A directory of its own under the system's temp dir, removed (with what is in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tollgate-journal-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("a temp dir");
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn key() -> ChainKey {
    ChainKey::derive(b"journal tests")
}

fn open(path: &Path) -> FileJournal {
    block_on(FileJournal::open(path, key())).expect("the journal opens")
}

fn entry(key: &str, payload: &str) -> Entry {
    Entry::new(key, payload.as_bytes().to_vec())
}

/// Lets the other futures of a `block_on` run before going on.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Everything in `journal`, in order.
fn all(journal: &impl Journal) -> Vec<Stored> {
    block_on(journal.read(1, usize::MAX)).expect("the journal reads")
}

/// Where each of `stored` ends in the file: where the next starts, or the file's end.
fn ends(stored: &[Stored], file_len: u64) -> Vec<u64> {
    stored
        .iter()
        .skip(1)
        .map(|s| s.offset)
        .chain([file_len])
        .collect()
}

/// `stored` without offsets, which only the file journal has.
fn without_offsets(stored: Vec<Stored>) -> Vec<Stored> {
    stored
        .into_iter()
        .map(|s| Stored { offset: 0, ..s })
        .collect()
}

/// A small journal at `path` of `n` entries over three keys, appended one, then three at a
/// time; closed. Returns what it holds and the file's bytes.
fn small_journal(path: &Path, n: usize) -> (Vec<Stored>, Vec<u8>) {
    let journal = open(path);
    let mut i = 0;
    while i < n {
        let group: Vec<Entry> = (i..n.min(i + 1 + i % 3))
            .map(|j| entry(&format!("r{}", j % 3), &format!("payload {j}")))
            .collect();
        i += group.len();
        block_on(journal.append(group)).expect("an append");
    }
    let stored = all(&journal);
    block_on(journal.close());
    (stored, fs::read(path).expect("the journal file"))
}

// ---------------------------------------------------------------------------------------------
// What both backends do alike
// ---------------------------------------------------------------------------------------------

/// The behaviour every backend shares: appends, heads, ranges, keys, conditions, verify.
async fn behaves_like_a_journal(j: &impl Journal) {
    assert_eq!(j.head().await.unwrap(), (0, ChainHash::GENESIS));
    assert!(j.read(1, 10).await.unwrap().is_empty());
    assert!(j.read_key("r1").await.unwrap().is_empty());
    assert_eq!(verify(j).await.unwrap(), (0, ChainHash::GENESIS));

    let head = j
        .append(vec![
            entry("r1", "started"),
            entry("r2", "started"),
            entry("r1", "built"),
        ])
        .await
        .unwrap();
    assert_eq!(head, 3);
    assert_eq!(j.append(Vec::new()).await.unwrap(), 3, "an empty append");
    assert_eq!(j.append(vec![entry("r1", "tested")]).await.unwrap(), 4);
    assert_eq!(j.append(vec![entry("", "")]).await.unwrap(), 5, "no key");

    let stored = j.read(1, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(stored[2].payload, b"built");
    assert_eq!(stored[4].key, "");
    assert_eq!(stored[0].prev, ChainHash::GENESIS);
    for pair in stored.windows(2) {
        assert_eq!(
            pair[1].prev, pair[0].hash,
            "each entry names the one before"
        );
    }
    assert_eq!(j.head().await.unwrap(), (5, stored[4].hash));
    assert_eq!(verify(j).await.unwrap(), (5, stored[4].hash));

    // Ranges.
    assert_eq!(j.read(0, 2).await.unwrap(), stored[..2]);
    assert_eq!(j.read(3, 10).await.unwrap(), stored[2..]);
    assert_eq!(j.read(5, 1).await.unwrap(), stored[4..]);
    assert!(j.read(6, 1).await.unwrap().is_empty());
    assert!(j.read(1, 0).await.unwrap().is_empty());

    // Keys.
    let r1 = j.read_key("r1").await.unwrap();
    assert_eq!(r1.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(r1.iter().map(|s| s.key_prev).collect::<Vec<_>>(), [0, 1, 3]);
    assert_eq!(r1[1], stored[2]);
    check_key_chain(j.key(), &r1).unwrap();
    assert_eq!(j.read_key("r2").await.unwrap(), stored[1..2]);
    assert_eq!(j.read_key("").await.unwrap(), stored[4..]);
    assert!(j.read_key("r9").await.unwrap().is_empty());

    // Conditions: refused as a whole, then taken.
    let stale = j
        .append(vec![entry("r2", "x").after(2), entry("r1", "y").after(3)])
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, JournalError::Conflict { key, expected: 3, found: 4 } if key == "r1"),
        "{stale}"
    );
    assert_eq!(j.head().await.unwrap().0, 5, "nothing of a refused append");
    assert_eq!(
        j.append(vec![
            entry("r1", "deployed").after(4),
            entry("r3", "new").after(0)
        ])
        .await
        .unwrap(),
        7
    );
    assert_eq!(verify(j).await.unwrap().0, 7);
}

#[test]
fn the_memory_journal_behaves_like_a_journal() {
    block_on(behaves_like_a_journal(&MemoryJournal::new(key())));
}

#[test]
fn the_file_journal_behaves_like_a_journal_and_keeps_it_across_a_reopen() {
    let dir = TempDir::new("behaves");
    let path = dir.file("j");
    let journal = open(&path);
    assert!(journal.opened().created);
    block_on(behaves_like_a_journal(&journal));
    let before = all(&journal);
    let stats = journal.stats();
    assert_eq!(
        (stats.entries, stats.bytes),
        (7, fs::metadata(&path).unwrap().len())
    );
    block_on(journal.close());

    let journal = open(&path);
    let report = journal.opened();
    assert_eq!(
        (report.entries, report.created, report.repaired_bytes()),
        (7, false, 0)
    );
    assert_eq!(all(&journal), before);
    assert_eq!(
        block_on(journal.read_key("r1")).unwrap(),
        [&before[0], &before[2], &before[3], &before[5]].map(Clone::clone)
    );
    block_on(journal.close());
}

#[test]
fn both_journals_chain_the_same_appends_to_the_same_macs() {
    let dir = TempDir::new("same");
    let file = open(&dir.file("j"));
    let memory = MemoryJournal::new(key());
    for group in [
        vec![entry("a", "1")],
        vec![entry("b", "2"), entry("a", "3")],
        vec![entry("", "4")],
    ] {
        let a = block_on(file.append(group.clone())).unwrap();
        let b = block_on(memory.append(group)).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(without_offsets(all(&file)), all(&memory));
    block_on(file.close());
}

#[test]
fn concurrent_journal_appends_share_syncs_and_readers_never_see_a_gap() {
    let dir = TempDir::new("group");
    let journal = open(&dir.file("j"));
    let done = AtomicUsize::new(0);
    let appenders = join_all((0..64).map(|w| {
        let (journal, done) = (&journal, &done);
        async move {
            for i in 0..20 {
                journal
                    .append(vec![entry(&format!("w{w}"), &format!("{i}"))])
                    .await
                    .unwrap();
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let reader = async {
        let mut reads = 0;
        while done.load(Ordering::SeqCst) < 64 {
            // Whatever the head says is there is readable, with nothing missing before it.
            let (head, hash) = journal.head().await.unwrap();
            let seen = journal.read(1, usize::MAX).await.unwrap();
            assert!(seen.len() as u64 >= head);
            for (n, s) in seen.iter().enumerate() {
                assert_eq!(s.seq, n as u64 + 1);
            }
            if head > 0 {
                assert_eq!(seen[head as usize - 1].hash, hash);
            }
            reads += 1;
            yield_now().await;
        }
        reads
    };
    let (_, reads) = block_on(futures::future::join(appenders, reader));
    assert!(reads > 1, "the reads ran beside the appends");
    let stats = journal.stats();
    assert_eq!((stats.entries, stats.appends), (1280, 1280));
    assert!(
        stats.commits < stats.appends / 4,
        "{stats:?}: appends did not share syncs"
    );
    assert_eq!(block_on(verify(&journal)).unwrap().0, 1280);
    for w in 0..64 {
        let mine = block_on(journal.read_key(&format!("w{w}"))).unwrap();
        let payloads: Vec<_> = mine.iter().map(|s| s.payload.clone()).collect();
        let expected: Vec<_> = (0..20).map(|i| format!("{i}").into_bytes()).collect();
        assert_eq!(payloads, expected, "each appender's entries in its order");
        check_key_chain(journal.key(), &mine).unwrap();
    }
    block_on(journal.close());
}

// ---------------------------------------------------------------------------------------------
// Torn tails and damage
// ---------------------------------------------------------------------------------------------

#[test]
fn a_journal_cut_anywhere_in_its_last_records_loses_no_entry_before_the_cut() {
    let dir = TempDir::new("cut");
    let (stored, bytes) = small_journal(&dir.file("whole"), 12);
    let ends = ends(&stored, bytes.len() as u64);
    let cut_path = dir.file("cut");
    let first_cut = stored[stored.len() - 4].offset as usize;
    let cuts = (0..=16).chain(first_cut..=bytes.len());
    for cut in cuts {
        fs::write(&cut_path, &bytes[..cut]).unwrap();
        let journal = block_on(FileJournal::open(&cut_path, key()))
            .unwrap_or_else(|e| panic!("a cut at {cut} does not open: {e}"));
        let whole = ends.iter().filter(|&&end| end <= cut as u64).count();
        let report = journal.opened().clone();
        assert_eq!(report.entries, whole as u64, "cut at {cut}");
        let clean_end = if cut < 16 {
            0
        } else {
            whole.checked_sub(1).map_or(16, |last| ends[last])
        };
        if cut < 16 {
            assert!(report.created, "cut at {cut}: a torn header starts anew");
        } else {
            assert_eq!(
                report.repaired_bytes(),
                cut as u64 - clean_end,
                "cut at {cut}: the torn tail is cut away"
            );
            if let Some(torn) = &report.torn {
                assert_eq!((torn.offset, torn.first_seq), (clean_end, whole as u64 + 1));
            }
        }
        assert_eq!(all(&journal), stored[..whole], "cut at {cut}");
        let head = block_on(verify(&journal)).unwrap();
        assert_eq!(head.0, whole as u64);
        // The repaired journal takes the next append where the cut one stopped.
        let next = block_on(journal.append(vec![entry("r0", "after the cut")])).unwrap();
        assert_eq!(next, whole as u64 + 1);
        block_on(journal.close());
        let reopened = open(&cut_path);
        assert_eq!(reopened.opened().repaired_bytes(), 0);
        assert_eq!(block_on(verify(&reopened)).unwrap().0, next);
        block_on(reopened.close());
    }
}

#[test]
fn a_flipped_journal_byte_is_named_by_its_record_or_cut_away_as_a_torn_last_record() {
    let dir = TempDir::new("flip");
    let (stored, bytes) = small_journal(&dir.file("whole"), 5);
    let ends = ends(&stored, bytes.len() as u64);
    let last = stored.last().unwrap();
    let flipped_path = dir.file("flipped");
    for at in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut flipped = bytes.clone();
            flipped[at] ^= mask;
            fs::write(&flipped_path, &flipped).unwrap();
            let holder = stored
                .iter()
                .zip(&ends)
                .position(|(s, &end)| s.offset <= at as u64 && (at as u64) < end);
            match (block_on(FileJournal::open(&flipped_path, key())), holder) {
                (Err(JournalError::Corrupt { seq, offset, .. }), None) => {
                    assert_eq!((seq, offset), (0, 0), "a flip at {at} in the header");
                }
                (
                    Err(JournalError::Corrupt {
                        seq,
                        offset,
                        reason,
                    }),
                    Some(i),
                ) => {
                    assert_ne!(i, stored.len() - 1, "a flip at {at}: {reason}");
                    assert_eq!(
                        (seq, offset),
                        (stored[i].seq, stored[i].offset),
                        "a flip at {at} is named by its record: {reason}"
                    );
                }
                (Ok(journal), Some(i)) if i == stored.len() - 1 => {
                    let torn = journal.opened().torn.clone().expect("a repair");
                    assert_eq!((torn.offset, torn.first_seq), (last.offset, last.seq));
                    assert_eq!(all(&journal), stored[..i], "a flip at {at}");
                    assert_eq!(block_on(verify(&journal)).unwrap().0, last.seq - 1);
                    block_on(journal.close());
                }
                (Ok(_), _) => panic!("a flip at {at} (mask {mask:#x}) went unnoticed"),
                (Err(e), _) => panic!("a flip at {at}: unexpected {e}"),
            }
        }
    }
}

/// Rewrites the CRC of the record at `offset` in `bytes`, as someone who knows the format
/// (but not the chain's key) can.
fn fix_crc(bytes: &mut [u8], offset: usize) {
    let body_len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[offset..offset + 4]);
    crc.update(&bytes[offset + 8..offset + 8 + body_len]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.finalize().to_le_bytes());
}

#[test]
fn a_journal_edit_that_keeps_the_crc_right_is_caught_by_the_chain_even_at_the_end() {
    let dir = TempDir::new("edit");
    let (stored, bytes) = small_journal(&dir.file("whole"), 5);
    let path = dir.file("edited");
    for (i, s) in stored.iter().enumerate() {
        // The payload's last byte, then the CRC made to fit.
        let end = ends(&stored, bytes.len() as u64)[i] as usize;
        let mut edited = bytes.clone();
        edited[end - 1] ^= 1;
        fix_crc(&mut edited, s.offset as usize);
        fs::write(&path, &edited).unwrap();
        let err = block_on(FileJournal::open(&path, key())).unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { seq, offset, reason }
                if *seq == s.seq && *offset == s.offset && reason.contains("MAC")),
            "{err}"
        );
    }
    // A record taken out whole: the next one does not follow.
    let mut removed = bytes[..stored[2].offset as usize].to_vec();
    removed.extend_from_slice(&bytes[stored[3].offset as usize..]);
    fs::write(&path, &removed).unwrap();
    let err = block_on(FileJournal::open(&path, key())).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { seq: 3, offset, .. } if offset == stored[2].offset),
        "{err}"
    );
    // Opened with another key: the first record is named.
    let err = block_on(FileJournal::open(
        dir.file("whole"),
        ChainKey::derive(b"guess"),
    ))
    .unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { seq: 1, .. }), "{err}");
}

#[test]
fn damage_done_while_the_journal_is_open_is_found_by_reads_and_verify() {
    use std::os::unix::fs::FileExt as _;

    let dir = TempDir::new("open-damage");
    let path = dir.file("j");
    let (stored, bytes) = small_journal(&path, 5);
    let ends = ends(&stored, bytes.len() as u64);
    let journal = open(&path);
    // The lock is advisory: another program can still write the file.
    let other = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = ends[1] - 1;
    other.write_all_at(&[bytes[at as usize] ^ 1], at).unwrap();
    let err = block_on(journal.read(1, 10)).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { seq: 2, .. }), "{err}");
    let err = block_on(journal.read_key(&stored[1].key)).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { seq: 2, .. }), "{err}");
    // With the CRC made to fit, reads hand the edit out, and verify names it.
    let mut edited = bytes.clone();
    edited[at as usize] ^= 1;
    fix_crc(&mut edited, stored[1].offset as usize);
    other.write_all_at(&edited, 0).unwrap();
    let err = block_on(verify(&journal)).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { seq: 2, .. }), "{err}");
    let r = block_on(journal.read_key(&stored[1].key)).unwrap();
    assert!(check_key_chain(journal.key(), &r).is_err());
    block_on(journal.close());
}

#[test]
fn a_newer_format_or_a_file_that_is_no_journal_is_refused_and_left_alone() {
    let dir = TempDir::new("format");
    let path = dir.file("j");
    let (_, bytes) = small_journal(&path, 2);

    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&newer[..12]);
    newer[12..16].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &newer).unwrap();
    let err = block_on(FileJournal::open(&path, key())).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Version {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), newer, "left as it was");

    let text = b"# not a journal, but someone's notes\n".repeat(3);
    fs::write(&path, &text).unwrap();
    let err = block_on(FileJournal::open(&path, key())).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Corrupt {
                seq: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), text, "left as it was");
}

// ---------------------------------------------------------------------------------------------
// A writer killed mid-stream
// ---------------------------------------------------------------------------------------------

/// Tells the test binary, run again as a child, to act as the killed writer.
const WRITER_ENV: &str = "TOLLGATE_JOURNAL_TEST_WRITER";

/// How many appends the child makes at most, should nobody kill it.
const WRITER_LIMIT: usize = 20_000;

/// Not a test on its own: the child that `a_journal_writer_killed_with_sigkill_...` starts. It
/// appends from 8 concurrent writers and prints `ack <seq> <payload>` for each acknowledged
/// entry (Rust's stdout is line-buffered, so each line leaves as one write).
#[test]
fn sigkill_child_journal_writer() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let journal = open(Path::new(&path));
    let writers = (0..8).map(|w| {
        let journal = &journal;
        async move {
            for i in 0..WRITER_LIMIT / 8 {
                // Every third append carries two entries.
                let count = if i % 3 == 0 { 2 } else { 1 };
                let group: Vec<Entry> = (0..count)
                    .map(|k| entry(&format!("w{w}"), &format!("{w}:{i}:{k}")))
                    .collect();
                let head = journal.append(group.clone()).await.expect("an append");
                for (k, e) in group.iter().enumerate() {
                    let seq = head + 1 + k as u64 - count;
                    println!("ack {seq} {}", String::from_utf8_lossy(&e.payload));
                }
            }
        }
    });
    block_on(join_all(writers));
}

/// Reads one line of the child's output into `acked`; false at the end of it.
fn read_ack(out: &mut impl std::io::BufRead, acked: &mut BTreeMap<u64, String>) -> bool {
    let mut line = String::new();
    if out.read_line(&mut line).unwrap_or(0) == 0 {
        return false;
    }
    // A line cut by the kill has no newline: it was not all written, so it is not counted.
    if let Some(ack) = line.strip_prefix("ack ").and_then(|l| l.strip_suffix('\n')) {
        let (seq, payload) = ack.split_once(' ').unwrap();
        acked.insert(seq.parse::<u64>().unwrap(), payload.to_owned());
    }
    true
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_journal_writer_killed_with_sigkill_loses_no_acknowledged_entry() {
    let dir = TempDir::new("sigkill");
    let path = dir.file("j");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child_journal_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut acked = BTreeMap::new();
    while acked.len() < 600 {
        assert!(read_ack(&mut out, &mut acked), "the child stopped early");
    }
    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed mid-stream, not finished: {status}"
    );
    // What it printed before it died was acknowledged too.
    while read_ack(&mut out, &mut acked) {}

    let journal = open(&path);
    let head = block_on(verify(&journal)).unwrap().0;
    let last_acked = *acked.keys().next_back().unwrap();
    assert!(
        head >= last_acked,
        "head {head} is before acknowledged {last_acked}"
    );
    let stored = all(&journal);
    for (seq, payload) in &acked {
        assert_eq!(
            stored[*seq as usize - 1].payload,
            payload.as_bytes(),
            "entry {seq}"
        );
    }
    for w in 0..8 {
        check_key_chain(
            journal.key(),
            &block_on(journal.read_key(&format!("w{w}"))).unwrap(),
        )
        .unwrap();
    }
    block_on(journal.close());
}

// ---------------------------------------------------------------------------------------------
// A full disk, a second writer, limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_full_disk_fails_the_group_and_leaves_the_journal_usable() {
    let dir = TempDir::new("full");
    let path = dir.file("j");
    let quota = DiskQuota::new(u64::MAX);
    let options = FileJournalOptions::default().quota(quota.clone());
    let journal = block_on(FileJournal::open_with(&path, key(), options.clone())).unwrap();
    for i in 0..5 {
        block_on(journal.append(vec![entry("r", &format!("before {i}"))])).unwrap();
    }
    quota.set(fs::metadata(&path).unwrap().len() + 300);

    let payload = "x".repeat(100);
    let results = block_on(join_all((0..20).map(|i| {
        let payload = format!("{i} {payload}");
        let journal = &journal;
        async move {
            (
                payload.clone(),
                journal.append(vec![entry("r", &payload)]).await,
            )
        }
    })));
    let mut acked = Vec::new();
    let mut failed = 0;
    for (payload, result) in results {
        match result {
            Ok(seq) => acked.push((seq, payload)),
            Err(JournalError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                failed += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(failed > 0, "the quota stopped nothing");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        journal.stats().bytes,
        "nothing of a failed group is left in the file"
    );
    assert_eq!(
        block_on(verify(&journal)).unwrap().0,
        5 + acked.len() as u64
    );

    // Space again: the journal goes on where the acknowledged entries end.
    quota.set(u64::MAX);
    let next = block_on(journal.append(vec![entry("r", "after")])).unwrap();
    assert_eq!(next, 6 + acked.len() as u64);
    block_on(journal.close());

    let journal = open(&path);
    assert_eq!(journal.opened().repaired_bytes(), 0);
    let stored = all(&journal);
    assert_eq!(stored.len() as u64, next);
    for (seq, payload) in &acked {
        assert_eq!(stored[*seq as usize - 1].payload, payload.as_bytes());
    }
    check_key_chain(journal.key(), &block_on(journal.read_key("r")).unwrap()).unwrap();
    block_on(journal.close());
}

#[test]
fn a_second_journal_writer_is_refused_until_the_first_closes() {
    let dir = TempDir::new("lock");
    let path = dir.file("j");
    let first = open(&path);
    for (same, wait) in [
        (path.clone(), Duration::ZERO),
        (dir.0.join(".").join("j"), Duration::from_millis(20)),
    ] {
        let options = FileJournalOptions::default().lock_wait(wait);
        let err = block_on(FileJournal::open_with(&same, key(), options)).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    }
    block_on(first.append(vec![entry("r", "one")])).unwrap();
    block_on(first.close());
    let second = open(&path);
    assert_eq!(second.opened().entries, 1);
    block_on(second.close());
}

#[test]
fn a_journal_entry_over_the_limit_is_refused_before_anything_is_written() {
    let dir = TempDir::new("limit");
    let path = dir.file("j");
    let options = FileJournalOptions::default().max_entry_bytes(10);
    let journal = block_on(FileJournal::open_with(&path, key(), options)).unwrap();
    let err =
        block_on(journal.append(vec![entry("r", "fits"), entry("r", "far too long")])).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::TooLarge {
                size: 13,
                limit: 10
            }
        ),
        "{err}"
    );
    assert_eq!(block_on(journal.head()).unwrap().0, 0);
    block_on(journal.close());
}

#[test]
fn a_journal_entry_exactly_at_the_limit_is_taken() {
    let dir = TempDir::new("at-limit");
    let options = FileJournalOptions::default().max_entry_bytes(10);
    let journal = block_on(FileJournal::open_with(&dir.file("j"), key(), options)).unwrap();
    // A one-byte key and a nine-byte payload: ten bytes, the limit.
    let seq = block_on(journal.append(vec![entry("r", "123456789")]))
        .expect("an entry at the limit is taken");
    assert_eq!(seq, 1);
    block_on(journal.close());
}

#[test]
fn journal_options_set_before_the_lock_wait_are_kept() {
    let dir = TempDir::new("options");
    let options = FileJournalOptions::default()
        .max_entry_bytes(10)
        .lock_wait(Duration::ZERO);
    let journal = block_on(FileJournal::open_with(&dir.file("j"), key(), options)).unwrap();
    let err = block_on(journal.append(vec![entry("r", "far too long")])).unwrap_err();
    assert!(
        matches!(err, JournalError::TooLarge { limit: 10, .. }),
        "{err}"
    );
    block_on(journal.close());
}

#[test]
fn a_journal_entry_limit_above_what_a_frame_holds_is_lowered_to_4_gib_less_84_bytes() {
    // A frame's length field is 32 bits and holds 84 bytes besides the key and payload.
    let options = FileJournalOptions::default().max_entry_bytes(usize::MAX);
    let shown = format!("{options:?}");
    assert!(
        shown.contains(&format!("max_entry_bytes: {}", u64::from(u32::MAX) - 84)),
        "{shown}"
    );
}

#[test]
fn a_file_journal_shows_its_path_and_size_in_its_debug_form() {
    let dir = TempDir::new("debug");
    let path = dir.file("j");
    let journal = open(&path);
    block_on(journal.append(vec![entry("r", "one"), entry("r", "two")])).unwrap();
    let shown = format!("{journal:?}");
    assert!(shown.starts_with("FileJournal {"), "{shown}");
    assert!(shown.contains(&format!("{path:?}")), "{shown}");
    assert!(shown.contains("entries: 2"), "{shown}");
    block_on(journal.close());
}

#[test]
fn a_closed_journal_holds_every_append_queued_before_it_and_opens_again_at_once() {
    let dir = TempDir::new("close");
    let path = dir.file("j");
    let journal = open(&path);
    // Two hundred appends handed to the writer and not waited for (each future polled once,
    // which queues its entry, then dropped): `close` waits for all of them to be written.
    block_on(async {
        for i in 0..200 {
            let mut append = Box::pin(journal.append(vec![entry("r", &format!("{i}"))]));
            assert!(futures::poll!(append.as_mut()).is_pending());
        }
    });
    block_on(journal.close());
    // Closed means unlocked: no waiting for the lock.
    let options = FileJournalOptions::default().lock_wait(Duration::ZERO);
    let reopened = block_on(FileJournal::open_with(&path, key(), options))
        .expect("a closed journal opens again at once");
    assert_eq!(reopened.opened().entries, 200);
    block_on(reopened.close());
}

// ---------------------------------------------------------------------------------------------
// Rollback: the head kept by a witness outside the store
// ---------------------------------------------------------------------------------------------

/// A witness that keeps its heads in memory, shared with the test.
fn new_witness() -> Arc<MemoryWitness> {
    Arc::new(MemoryWitness::default())
}

/// Appends `n` entries over three keys to `journal`, one to three at a time.
fn fill(journal: &impl Journal, n: usize) {
    let mut i = 0;
    while i < n {
        let group: Vec<Entry> = (i..n.min(i + 1 + i % 3))
            .map(|j| entry(&format!("r{}", j % 3), &format!("payload {j}")))
            .collect();
        i += group.len();
        block_on(journal.append(group)).expect("an append");
    }
}

/// The file journal at `path` opened behind `witness`.
fn open_witnessed(
    path: &Path,
    witness: &Arc<MemoryWitness>,
) -> Result<Witnessed<FileJournal, Arc<MemoryWitness>>, JournalError> {
    block_on(Witnessed::new(open(path), Arc::clone(witness)))
}

/// Closes a witnessed file journal.
fn close_witnessed(journal: Witnessed<FileJournal, Arc<MemoryWitness>>) {
    block_on(journal.into_parts().0.close());
}

/// A file journal of `n` entries written behind a new witness, closed; with what it holds.
fn witnessed_file(name: &str, n: usize) -> (TempDir, PathBuf, Arc<MemoryWitness>, Vec<Stored>) {
    let dir = TempDir::new(name);
    let path = dir.file("j");
    let witness = new_witness();
    let journal = open_witnessed(&path, &witness).unwrap();
    fill(&journal, n);
    let stored = all(&journal);
    close_witnessed(journal);
    (dir, path, witness, stored)
}

#[test]
fn an_honest_journal_passes_its_witnessed_head_on_both_backends_and_across_a_reopen() {
    let memory = new_witness();
    let journal = block_on(Witnessed::new(
        MemoryJournal::new(key()),
        Arc::clone(&memory),
    ))
    .unwrap();
    fill(&journal, 10);
    // Concurrent appends: the witness is given heads in order, and ends with the last one.
    block_on(join_all((0..8).map(|i| {
        journal.append(vec![entry("c", &format!("concurrent {i}"))])
    })));
    let head = block_on(Head::of(journal.journal())).unwrap();
    assert_eq!(head.seq, 18);
    assert_eq!(block_on(memory.last()).unwrap(), Some(head));
    assert_eq!(block_on(journal.check()).unwrap(), head);
    assert_eq!(block_on(check_head(&journal, &head)).unwrap(), head);

    let dir = TempDir::new("witness-honest");
    let path = dir.file("j");
    let file = new_witness();
    let journal = open_witnessed(&path, &file).unwrap();
    fill(&journal, 10);
    let head = block_on(file.last()).unwrap().expect("a witnessed head");
    assert_eq!(head, block_on(Head::of(&journal)).unwrap());
    close_witnessed(journal);
    // The next process: the file is what was witnessed, and appends go on.
    let journal = open_witnessed(&path, &file).expect("an honest journal passes");
    fill(&journal, 3);
    assert_eq!(block_on(file.last()).unwrap().map(|h| h.seq), Some(13));
    assert_eq!(block_on(verify(&journal)).unwrap().0, 13);
    close_witnessed(journal);
}

#[test]
fn a_journal_truncated_behind_its_witnessed_head_is_refused() {
    // The file cut at the start of each of its last records: a clean, shorter journal
    // (no torn tail to repair), which the chain alone accepts.
    let (_dir, path, witness, stored) = witnessed_file("witness-truncated", 8);
    let bytes = fs::read(&path).unwrap();
    for cut in 1..=3 {
        let keep = &stored[..stored.len() - cut];
        let end = stored[stored.len() - cut].offset as usize;
        fs::write(&path, &bytes[..end]).unwrap();
        let reopened = open(&path);
        assert_eq!(
            reopened.opened().repaired_bytes(),
            0,
            "cut at a record's start"
        );
        assert_eq!(block_on(verify(&reopened)).unwrap().0, keep.len() as u64);
        let err = block_on(Witnessed::new(reopened, Arc::clone(&witness))).unwrap_err();
        assert!(
            matches!(err, JournalError::Behind { witnessed: 8, head } if head == keep.len() as u64),
            "{err}"
        );
        assert!(err.to_string().contains("entry 8 was witnessed"), "{err}");
    }
    fs::write(&path, &bytes).unwrap();
    close_witnessed(open_witnessed(&path, &witness).expect("the whole file passes"));

    // In memory, while it runs: reads, heads and appends are refused from then on.
    let store = Arc::new(MemoryJournal::new(key()));
    let journal = block_on(Witnessed::new(Arc::clone(&store), new_witness())).unwrap();
    fill(&journal, 6);
    store.entries_mut(|e| e.truncate(4));
    for err in [
        block_on(journal.check()).map(|_| ()).unwrap_err(),
        block_on(journal.head()).map(|_| ()).unwrap_err(),
        block_on(journal.read(1, 10)).map(|_| ()).unwrap_err(),
        block_on(journal.read_key("r1")).map(|_| ()).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                JournalError::Behind {
                    witnessed: 6,
                    head: 4
                }
            ),
            "{err}"
        );
    }
    // Appending to the rolled-back store (the bot's key writes entries 5 and 6 again) is
    // refused: entry 6 is not the one witnessed.
    let err = block_on(journal.append(vec![entry("r1", "x"), entry("r1", "y")])).unwrap_err();
    assert!(
        matches!(err, JournalError::Diverged { seq: 6, .. }),
        "{err}"
    );
}

#[test]
fn an_older_copy_of_the_journal_file_is_refused_by_its_witness() {
    let (_dir, path, witness, _) = witnessed_file("witness-older", 5);
    let older = fs::read(&path).unwrap();
    let journal = open_witnessed(&path, &witness).unwrap();
    fill(&journal, 4);
    close_witnessed(journal);
    // Someone puts yesterday's backup back.
    fs::write(&path, &older).unwrap();
    let reopened = open(&path);
    assert_eq!(
        block_on(verify(&reopened)).unwrap().0,
        5,
        "the chain alone accepts it"
    );
    let err = block_on(Witnessed::new(reopened, Arc::clone(&witness))).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Behind {
                witnessed: 9,
                head: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn a_forked_journal_chain_is_refused_by_its_witness() {
    // Two files with one history up to entry 3, then each its own: the witness kept the
    // first one's head; the second is shown instead, shorter, as long, or longer.
    let dir = TempDir::new("witness-fork");
    for extra in [1, 2, 4] {
        let (ours, theirs) = (
            dir.file(&format!("ours{extra}")),
            dir.file(&format!("theirs{extra}")),
        );
        let witness = new_witness();
        let journal = open_witnessed(&ours, &witness).unwrap();
        fill(&journal, 3);
        block_on(journal.append(vec![entry("r1", "deployed"), entry("r2", "approved")])).unwrap();
        close_witnessed(journal);
        let other = open(&theirs);
        fill(&other, 3);
        for i in 0..extra {
            block_on(other.append(vec![entry("r1", &format!("rejected {i}"))])).unwrap();
        }
        block_on(verify(&other)).expect("the fork is a good chain under the key");
        let err = block_on(Witnessed::new(other, Arc::clone(&witness))).unwrap_err();
        if extra == 1 {
            // Shorter: behind the witnessed head (which history it is does not matter).
            assert!(
                matches!(
                    err,
                    JournalError::Behind {
                        witnessed: 5,
                        head: 4
                    }
                ),
                "{err}"
            );
        } else {
            assert!(
                matches!(err, JournalError::Diverged { seq: 5, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("another history"), "{err}");
        }
    }
}

/// A witness that keeps the empty journal's head and cannot keep any other.
#[derive(Debug)]
struct Unreachable;

#[async_trait::async_trait]
impl HeadWitness for Unreachable {
    async fn witness(&self, _: Head) -> Result<(), WitnessError> {
        Err("the witness host is down".into())
    }
    async fn last(&self) -> Result<Option<Head>, WitnessError> {
        Ok(Some(Head::EMPTY))
    }
}

#[test]
fn a_failing_journal_witness_fails_the_append_and_keeps_its_entries() {
    let store = Arc::new(MemoryJournal::new(key()));
    // An empty journal and an empty witness agree: nothing to keep yet.
    let journal = block_on(Witnessed::new(Arc::clone(&store), Unreachable)).unwrap();
    let err = block_on(journal.append(vec![entry("r1", "started")])).unwrap_err();
    assert!(matches!(err, JournalError::Witness(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "the head witness failed: the witness host is down"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(
        store.len(),
        1,
        "the entry is durable, as after a crash before the reply"
    );
}

#[test]
fn a_journal_head_round_trips_through_json_and_a_bad_hash_is_refused() {
    let journal = MemoryJournal::new(key());
    fill(&journal, 4);
    let head = block_on(Head::of(&journal)).unwrap();
    let json = serde_json::to_value(head).unwrap();
    assert_eq!(json["seq"], 4);
    assert_eq!(json["hash"].as_str().unwrap().len(), 64);
    assert_eq!(serde_json::from_value::<Head>(json.clone()).unwrap(), head);
    let upper = json["hash"].as_str().unwrap().to_uppercase();
    assert_eq!(ChainHash::from_hex(&upper), Some(head.hash));
    for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
        assert_eq!(ChainHash::from_hex(bad), None, "{bad:?}");
        let err =
            serde_json::from_value::<Head>(serde_json::json!({"seq": 1, "hash": bad})).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
    // A head at 0 with a hash that is not the genesis names no history this journal has.
    let err = block_on(check_head(
        &journal,
        &Head {
            seq: 0,
            hash: head.hash,
        },
    ))
    .unwrap_err();
    assert!(
        matches!(err, JournalError::Diverged { seq: 0, .. }),
        "{err}"
    );
    assert_eq!(block_on(check_head(&journal, &Head::EMPTY)).unwrap(), head);
}

// ---------------------------------------------------------------------------------------------
// The file journal against the memory journal
// ---------------------------------------------------------------------------------------------

/// One step of a generated history.
#[derive(Debug, Clone)]
enum Op {
    /// Entries `(key, payload)`, with a condition on the first one's key if given (the
    /// condition names `head - back`, clamped).
    Append(Vec<(u8, Vec<u8>)>, Option<u64>),
    /// Close and open the file journal again.
    Reopen,
    /// Read one key.
    ReadKey(u8),
    /// Read a range.
    Read(u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..40)), 0..5),
            prop::option::of(0u64..4),
        )
            .prop_map(|(entries, back)| Op::Append(entries, back)),
        1 => Just(Op::Reopen),
        2 => (0u8..5).prop_map(Op::ReadKey),
        2 => (0u64..30, 0usize..10).prop_map(|(from, limit)| Op::Read(from, limit)),
    ]
}

/// Compares two answers of the backends, errors by their variant and fields.
fn same_answer<T: PartialEq + std::fmt::Debug>(
    file: Result<T, JournalError>,
    memory: Result<T, JournalError>,
) -> Result<(), TestCaseError> {
    match (file, memory) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (a, b) => prop_assert!(false, "file {a:?}, memory {b:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_file_journal_answers_as_the_memory_journal_does(ops in prop::collection::vec(op(), 1..25)) {
        let dir = TempDir::new("prop");
        let path = dir.file("j");
        let memory = MemoryJournal::new(key());
        let mut file = Some(open(&path));
        for op in ops {
            let f = file.as_ref().unwrap();
            match op {
                Op::Append(entries, back) => {
                    let head = block_on(memory.head()).unwrap().0;
                    let mut entries: Vec<Entry> = entries
                        .into_iter()
                        .map(|(k, payload)| Entry::new(format!("k{k}"), payload))
                        .collect();
                    if let (Some(back), Some(first)) = (back, entries.first_mut()) {
                        first.expect_prev = Some(head.saturating_sub(back));
                    }
                    same_answer(block_on(f.append(entries.clone())), block_on(memory.append(entries)))?;
                }
                Op::Reopen => {
                    block_on(file.take().unwrap().close());
                    let reopened = open(&path);
                    prop_assert_eq!(reopened.opened().entries, memory.len() as u64);
                    prop_assert!(reopened.opened().torn.is_none());
                    file = Some(reopened);
                }
                Op::ReadKey(k) => {
                    let k = format!("k{k}");
                    same_answer(
                        block_on(f.read_key(&k)).map(without_offsets),
                        block_on(memory.read_key(&k)),
                    )?;
                }
                Op::Read(from, limit) => same_answer(
                    block_on(f.read(from, limit)).map(without_offsets),
                    block_on(memory.read(from, limit)),
                )?,
            }
            let f = file.as_ref().unwrap();
            prop_assert_eq!(block_on(f.head()).unwrap(), block_on(memory.head()).unwrap());
        }
        let f = file.take().unwrap();
        prop_assert_eq!(block_on(verify(&f)).unwrap(), block_on(verify(&memory)).unwrap());
        prop_assert_eq!(without_offsets(all(&f)), all(&memory));
        block_on(f.close());
    }
}

// ---------------------------------------------------------------------------------------------
// Verification of a long journal, and the forms that must not leak
// ---------------------------------------------------------------------------------------------

/// A memory journal that keeps a list of the reads asked of it (where from, how many entries
/// came back) and refuses reads after the 64th: a walk that does not stop at the head would
/// otherwise go on for ever, and the test would hang instead of failing.
struct CountedReads {
    inner: MemoryJournal,
    reads: std::sync::Mutex<Vec<(u64, usize)>>,
}

impl CountedReads {
    fn new() -> Self {
        CountedReads {
            inner: MemoryJournal::new(key()),
            reads: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The reads asked since the last call, and forgets them.
    fn take_reads(&self) -> Vec<(u64, usize)> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl Journal for CountedReads {
    async fn append(&self, entries: Vec<Entry>) -> Result<u64, JournalError> {
        self.inner.append(entries).await
    }
    async fn read(&self, from: u64, limit: usize) -> Result<Vec<Stored>, JournalError> {
        let got = self.inner.read(from, limit).await?;
        let mut reads = self.reads.lock().unwrap();
        if reads.len() >= 64 {
            return Err(JournalError::Closed);
        }
        reads.push((from, got.len()));
        Ok(got)
    }
    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        self.inner.read_key(key).await
    }
    async fn head(&self) -> Result<(u64, ChainHash), JournalError> {
        self.inner.head().await
    }
    fn key(&self) -> &ChainKey {
        self.inner.key()
    }
}

/// Appends entries `r{i % 7}` / `payload {i}` until `journal` holds `n`, 500 at a time.
fn fill_to(journal: &impl Journal, n: u64) {
    let mut head = block_on(journal.head()).unwrap().0;
    while head < n {
        let group = (head..n.min(head + 500))
            .map(|i| entry(&format!("r{}", i % 7), &format!("payload {i}")))
            .collect();
        head = block_on(journal.append(group)).unwrap();
    }
}

#[test]
fn journal_verify_reads_past_one_batch_to_the_head_and_stops_there() {
    let j = CountedReads::new();
    assert_eq!(block_on(verify(&j)).unwrap(), (0, ChainHash::GENESIS));
    assert_eq!(j.take_reads(), [(1, 0)], "an empty journal is one read");

    fill_to(&j, 4096);
    let head = block_on(j.head()).unwrap();
    assert_eq!(block_on(verify(&j)).unwrap(), head);
    assert_eq!(
        j.take_reads(),
        [(1, 4096), (4097, 0)],
        "a full batch may have more behind it"
    );

    fill_to(&j, 5000);
    let head = block_on(j.head()).unwrap();
    assert_eq!(head.0, 5000);
    assert_eq!(
        block_on(verify(&j)).unwrap(),
        head,
        "every entry, not the first batch"
    );
    assert_eq!(j.take_reads(), [(1, 4096), (4097, 904)]);
}

#[test]
fn journal_verify_finds_an_edit_past_the_first_batch_of_a_long_journal() {
    let j = MemoryJournal::new(key());
    fill_to(&j, 5000);
    for seq in [4096, 4097, 4500, 5000] {
        let original = j.entries_mut(|e| {
            std::mem::replace(&mut e[seq - 1].payload, b"approved by nobody".to_vec())
        });
        let err = block_on(verify(&j)).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { seq: s, .. } if s == seq as u64),
            "an edit of entry {seq}: {err}"
        );
        j.entries_mut(|e| e[seq - 1].payload = original);
        assert_eq!(block_on(verify(&j)).unwrap().0, 5000);
    }
}

#[test]
fn a_journal_chain_key_never_shows_in_its_debug_form() {
    let key = ChainKey::new([0x5a; 32]);
    assert_eq!(format!("{key:?}"), "ChainKey(..)");
    assert_eq!(format!("{:?}", ChainKey::derive(b"secret")), "ChainKey(..)");
}

#[test]
fn a_journal_chain_hash_shows_its_first_eight_bytes_in_hex() {
    let mut bytes = [0xff; 32];
    bytes[..8].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    let hash = ChainHash(bytes);
    assert_eq!(hash.to_string(), "0123456789abcdef");
    assert_eq!(format!("{hash:?}"), "0123456789abcdef");
    assert_eq!(ChainHash::GENESIS.to_string(), "0000000000000000");
}

#[test]
fn journal_ephemeral_keys_are_new_each_time_and_chain_differently() {
    let (a, b) = (ChainKey::ephemeral(), ChainKey::ephemeral());
    let link = |k: &ChainKey| k.link(&ChainHash::GENESIS, 1, "r1", 0, b"started");
    assert_ne!(link(&a), link(&b));
    assert_eq!(
        link(&a),
        link(&a.clone()),
        "a key chains the same way every time"
    );
    assert_ne!(link(&a), link(&ChainKey::new([0; 32])));
}

#[test]
fn a_memory_journal_counts_its_entries() {
    let j = MemoryJournal::new(key());
    assert!(j.is_empty());
    assert_eq!(j.len(), 0);
    fill_to(&j, 3);
    assert!(!j.is_empty());
    assert_eq!(j.len(), 3);
    j.entries_mut(Vec::clear);
    assert!(j.is_empty());
}
