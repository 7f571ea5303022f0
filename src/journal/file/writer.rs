//! The writer thread: it opens, locks, checks and repairs the file, then group-commits
//! appends (link, write, `fdatasync`, publish, acknowledge) until the journal is closed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::journal::{ChainKey, Entry, JournalError, KeyIndex, Seq, link_all};

use super::format::{self, HEADER_LEN, Header, VERSION};
use super::reader::{self, ReadRequest};
use super::{DiskQuota, FileJournalOptions, Index, OpenReport, read_index, write_index};

/// How much a group commit takes at most (entries' bytes); the rest waits for the next one.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// What the journal asks of its writer.
#[derive(Debug)]
pub(super) enum WriteRequest {
    /// Append these entries as one unit; answer with the new head or why not.
    Append { entries: Vec<Entry>, reply: Reply },
    /// Finish what came before, close the file (releasing the lock), then answer.
    Close(oneshot::Sender<()>),
}

/// What the writer thread hands back once the file is open.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) index: Arc<RwLock<Index>>,
    pub(super) report: OpenReport,
    pub(super) writer: mpsc::Sender<WriteRequest>,
    pub(super) reader: mpsc::Sender<ReadRequest>,
}

/// Starts the writer thread for the journal at `path`. It answers on the returned channel
/// with the open journal's parts, or with why it could not open it (and then ends).
pub(super) fn spawn(
    path: PathBuf,
    key: ChainKey,
    options: FileJournalOptions,
) -> Result<oneshot::Receiver<Result<Opened, JournalError>>, JournalError> {
    let (reply, opened) = oneshot::channel();
    std::thread::Builder::new()
        .name("tollgate-journal-writer".to_owned())
        .spawn(move || {
            let (file, index, report) = match open(&path, &key, options.lock_wait) {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let index = Arc::new(RwLock::new(index));
            let reader = match reader::spawn(&path, Arc::clone(&index)) {
                Ok(reader) => reader,
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            };
            let (writer, requests) = mpsc::channel();
            let opened = Opened {
                index: Arc::clone(&index),
                report,
                writer,
                reader,
            };
            if reply.send(Ok(opened)).is_ok() {
                Writer {
                    file,
                    key,
                    index,
                    quota: options.quota,
                    poisoned: None,
                }
                .run(&requests);
            }
        })?;
    Ok(opened)
}

/// Opens (creating if need be) and locks the file, writes the header of a new one, scans it
/// and cuts a torn tail away, durably.
fn open(
    path: &Path,
    key: &ChainKey,
    lock_wait: Duration,
) -> Result<(File, Index, OpenReport), JournalError> {
    let shown = path.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    lock(&file, lock_wait).map_err(|e| match e {
        TryLockError::WouldBlock => JournalError::Locked {
            path: shown.clone(),
        },
        TryLockError::Error(e) => e.into(),
    })?;
    let found_len = file.metadata()?.len();
    let mut head = [0; HEADER_LEN];
    let head_len = HEADER_LEN.min(usize::try_from(found_len).unwrap_or(usize::MAX));
    file.read_exact_at(&mut head[..head_len], 0)?;
    let mut created = false;
    let mut file_len = found_len;
    if format::check_header(&head[..head_len], &shown)? == Header::Missing {
        // A new file, or one whose creation a crash cut short (nothing in it was ever
        // acknowledged): write the header, and make the file's name durable too.
        file.set_len(0)?;
        file.write_all_at(&format::header(VERSION), 0)?;
        file.sync_data()?;
        sync_parent(path)?;
        created = true;
        file_len = HEADER_LEN as u64;
    }
    let scanned = format::scan(&file, file_len, key)?;
    if let Some(torn) = &scanned.torn {
        file.set_len(torn.offset)?;
        file.sync_data()?;
    }
    let report = OpenReport {
        entries: scanned.offsets.len() as Seq,
        file_len: found_len,
        created,
        torn: scanned.torn,
    };
    let index = Index {
        offsets: scanned.offsets,
        end: scanned.end,
        head_hash: scanned.head_hash,
        last_of_key: scanned.last_of_key,
        commits: 0,
        appends: 0,
    };
    Ok((file, index, report))
}

/// Takes the file's lock, trying again for up to `wait`.
///
/// The lock (`flock`) belongs to the open file, and a process this one forks to run a
/// command shares this process's open files until it execs: for that moment, a journal that
/// was just closed still looks held. Trying again for a short while tells that from a real
/// second writer.
fn lock(file: &File, wait: Duration) -> Result<(), TryLockError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => {
                let Some(left) = wait
                    .checked_sub(start.elapsed())
                    .filter(|left| !left.is_zero())
                else {
                    return Err(TryLockError::WouldBlock);
                };
                // On the writer thread, never an executor's.
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// The writer's state: the locked file, and what it needs to link and write.
struct Writer {
    file: File,
    key: ChainKey,
    index: Arc<RwLock<Index>>,
    quota: Option<DiskQuota>,
    /// Set when a failed write could not be rolled back: what is on disk past the last
    /// acknowledged record is unknown, so nothing more is written until the journal is
    /// reopened (and its tail checked).
    poisoned: Option<String>,
}

/// Where an append is answered.
type Reply = oneshot::Sender<Result<Seq, JournalError>>;

/// An append of the batch being committed: where to answer, and the answer once the batch
/// is durable (the head after it, or the conflict that kept it out).
type Ack = (Reply, Result<Seq, JournalError>);

impl Writer {
    /// Serves requests until the journal is closed or dropped.
    fn run(mut self, requests: &Receiver<WriteRequest>) {
        let mut batch = Vec::new();
        while let Ok(first) = requests.recv() {
            let mut close = None;
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    WriteRequest::Append { entries, reply } => {
                        bytes += entries
                            .iter()
                            .map(|e| e.key.len() + e.payload.len())
                            .sum::<usize>();
                        batch.push((entries, reply));
                    }
                    WriteRequest::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if bytes < MAX_BATCH_BYTES {
                    // Empty or disconnected: the group is what came so far.
                    next = requests.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            if let Some(reply) = close {
                drop(self);
                let _ = reply.send(());
                return;
            }
        }
    }

    /// One group commit: links every append of `batch` in order, writes them with one
    /// `write`, makes them durable with one `fdatasync`, publishes them to readers, and only
    /// then acknowledges each. On failure nothing is published, the file is cut back to its
    /// last durable length, and every append of the batch fails.
    fn commit(&mut self, batch: &mut Vec<(Vec<Entry>, Reply)>) {
        if let Some(why) = &self.poisoned {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(io::Error::other(why.clone()).into()));
            }
            return;
        }
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        let mut acks: Vec<Ack> = Vec::with_capacity(batch.len());
        let (start, head, head_hash, new_keys) = {
            let index = read_index(&self.index);
            let mut keys = Overlay {
                base: &index.last_of_key,
                batch: HashMap::new(),
            };
            let start = index.end;
            let mut head = index.offsets.len() as Seq;
            let mut head_hash = index.head_hash;
            for (entries, reply) in batch.drain(..) {
                // A refused condition keeps this append out and leaves `keys` as it was; the
                // others of the group go on.
                let linked = link_all(&self.key, head, head_hash, &mut keys, entries);
                let answer = linked.map(|stored| {
                    for stored in stored {
                        offsets.push(start + bytes.len() as u64);
                        format::encode(
                            stored.seq,
                            stored.key_prev,
                            &stored.prev,
                            &stored.hash,
                            &stored.key,
                            &stored.payload,
                            &mut bytes,
                        );
                        head = stored.seq;
                        head_hash = stored.hash;
                    }
                    head
                });
                acks.push((reply, answer));
            }
            (start, head, head_hash, keys.batch)
        };
        // A group whose appends were all refused has nothing to write or sync.
        let written = if bytes.is_empty() {
            Ok(())
        } else {
            self.write_durably(&bytes, start)
        };
        match written {
            Ok(()) => {
                {
                    let mut index = write_index(&self.index);
                    index.offsets.extend(offsets);
                    index.end = start + bytes.len() as u64;
                    index.head_hash = head_hash;
                    index.last_of_key.extend(new_keys);
                    index.commits += u64::from(!bytes.is_empty());
                    index.appends += acks.iter().filter(|(_, a)| a.is_ok()).count() as u64;
                    debug_assert_eq!(index.offsets.len() as Seq, head);
                }
                // Conflicts are answered now too: the entries they name may be this group's.
                for (reply, answer) in acks {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                self.roll_back(start, &e);
                // A conflict found against this group's own entries may not hold without
                // them, so every append of the group fails alike, and is safe to retry.
                for (reply, _) in acks {
                    let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string()).into()));
                }
            }
        }
    }

    /// Writes `bytes` at `at` and waits until they are durable.
    fn write_durably(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        if let Some(quota) = &self.quota {
            let limit = quota.get();
            let end = at + bytes.len() as u64;
            if end > limit {
                // Write what fits, as a filling disk does, so that the rollback has
                // something real to cut away.
                let fits = usize::try_from(limit.saturating_sub(at)).unwrap_or(usize::MAX);
                self.file
                    .write_all_at(&bytes[..fits.min(bytes.len())], at)?;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "the journal's quota of {limit} bytes is reached (a write to byte {end})"
                    ),
                ));
            }
        }
        self.file.write_all_at(bytes, at)?;
        self.file.sync_data()
    }

    /// Cuts the file back to `durable` bytes after a failed write, durably, so that a later
    /// append does not follow garbage and a reopen does not find records whose appends were
    /// told they failed. If even that fails, the writer stops writing.
    fn roll_back(&mut self, durable: u64, cause: &io::Error) {
        let undone = self
            .file
            .set_len(durable)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = undone {
            self.poisoned = Some(format!(
                "an earlier write failed ({cause}) and could not be rolled back ({e}); \
                 reopen the journal"
            ));
        }
    }
}

/// The last sequence number of each key while a batch is linked: the published index, with
/// the batch's own entries on top, so that a failed batch leaves the index untouched.
struct Overlay<'a> {
    base: &'a HashMap<String, Seq>,
    batch: HashMap<String, Seq>,
}

impl KeyIndex for Overlay<'_> {
    fn last(&self, key: &str) -> Seq {
        self.batch
            .get(key)
            .or_else(|| self.base.get(key))
            .copied()
            .unwrap_or(0)
    }

    fn set(&mut self, key: &str, seq: Seq) {
        self.batch.insert(key.to_owned(), seq);
    }
}
