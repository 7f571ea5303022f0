//! [`FileJournal`]: the embedded default backend, one append-only file (Unix only). Its
//! format, threads and index are described on the type. `format.rs` holds the bytes (header,
//! frames, the scan at open), `writer.rs` the writer thread (open, repair, group commit),
//! `reader.rs` the reader thread (positional reads through the index).

mod format;
mod reader;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::oneshot;

use crate::journal::{ChainHash, ChainKey, Entry, Journal, JournalError, Seq, Stored};

use reader::ReadRequest;
use writer::WriteRequest;

/// The embedded default journal: one append-only file, hash-chained, checksummed and
/// `fdatasync`ed with group commit. Unix only.
///
/// - **Durable acknowledgement**: an append resolves only once its records are written and
///   `fdatasync`ed; concurrent appends share one sync.
/// - **One writer**: the file is locked (`flock`) while the journal is open; a second
///   [`open`](FileJournal::open) of it, from this process or another, fails with
///   [`JournalError::Locked`] (after [`lock_wait`](FileJournalOptions::lock_wait)).
/// - **Repair on open**: a record cut short or failing its CRC at the end of the file, with
///   nothing good after it, is the torn write of an append a crash interrupted (never
///   acknowledged); it is cut away and reported in [`opened`](FileJournal::opened). Damage
///   anywhere else, and any record that does not fit the chain, fails the open with
///   [`JournalError::Corrupt`] naming the record's sequence number and byte offset: the
///   journal never drops or guesses at acknowledged entries on its own.
/// - **No blocking**: file work happens on the journal's two threads (below); open, append,
///   reads and close are futures that wait on them.
///
/// A write that fails (a full disk) fails every append of its group with
/// [`JournalError::Io`], and the file is cut back to its last durable length, so the journal
/// stays usable. Dropping an append's future does not withdraw the append.
///
/// # The file
///
/// ```text
/// header (16 bytes): [magic "\x89TGJRNL\n"][format version: u32][crc32 of the 12 bytes before: u32]
/// record:            [body len: u32][crc32 of body len + body: u32]
///                    body: [seq: u64][key_prev: u64][prev: 32 bytes][hash: 32 bytes]
///                          [key len: u32][key: UTF-8][payload]
/// ```
///
/// Integers are little-endian; `prev` and `hash` are the chain's MACs ([`ChainKey::link`]).
/// The CRC tells a torn or rotted record from a good one cheaply; the MAC chain tells an
/// edited, removed or forged one. A file of a newer format version is refused
/// ([`JournalError::Version`]), never guessed at.
///
/// # Threads
///
/// - **The writer thread** opens the file, takes its lock, checks and repairs it, and then
///   owns it: appends reach it through a channel, and it commits every append waiting as one
///   group (link in arrival order, one `write`, one `fdatasync`), publishes the group to the
///   in-memory index, and only then completes each append's future. While one group's
///   `fdatasync` runs, the next group queues, so the number of syncs adapts to the load.
/// - **The reader thread** answers [`read`](Journal::read) and
///   [`read_key`](Journal::read_key) with positional reads (`pread`) on its own handle, at
///   offsets the index gives. It sees only published (durable) records, and never waits for
///   a commit. It checks each record's CRC again (the file may have been changed since it
///   was opened); MACs are [`verify`](crate::journal::verify)'s and
///   [`check_key_chain`](crate::journal::check_key_chain)'s to check.
/// - [`head`](Journal::head), [`stats`](FileJournal::stats) and the checks `append` makes
///   before queueing read the index only (a short lock, no I/O), on the caller's thread.
///
/// # The index
///
/// Built by the scan at open and extended by each commit: where every record starts
/// (8 bytes per entry) and the last sequence number of each key. `read_key` follows the key's
/// back-links from its last entry, one `pread` per entry of the key, so restoring one release
/// out of 100,000 reads that release's records only. The file is the only truth: there is no
/// sidecar index to fall out of step; the price is that an open reads (and checks) the whole
/// file.
///
/// # What a crash can and cannot do
///
/// A process crash (`SIGKILL`, a panic, an abort) leaves the file as the completed `write`s
/// made it: at worst the last group is cut short, and the open cuts it away. A power loss in
/// the middle of a group commit can leave that unacknowledged group's pages on disk out of
/// order (a hole, then good records); the open cannot tell that from damage to acknowledged
/// records, so it refuses with [`JournalError::Corrupt`] rather than guess. Past a failed
/// `fdatasync` the journal cuts the file back and syncs again; if even that fails, it writes
/// nothing more until it is reopened.
///
/// ```
/// use futures::executor::block_on;
/// use tollgate::journal::{ChainKey, Entry, FileJournal, Journal, verify};
///
/// # let path = std::env::temp_dir().join(format!("tollgate-doc-{}.journal", std::process::id()));
/// block_on(async {
///     let key = ChainKey::derive(b"the host's secret");
///     let journal = FileJournal::open(&path, key.clone()).await?;
///     journal.append(vec![Entry::new("r1", b"built".to_vec())]).await?;
///     journal.close().await;
///
///     let journal = FileJournal::open(&path, key).await?; // checked record by record
///     assert_eq!(journal.read_key("r1").await?[0].payload, b"built");
///     assert_eq!(verify(&journal).await?.0, 1);
///     # journal.close().await;
///     # std::fs::remove_file(&path)?;
///     Ok::<_, tollgate::journal::JournalError>(())
/// })?;
/// # Ok::<_, tollgate::journal::JournalError>(())
/// ```
pub struct FileJournal {
    key: ChainKey,
    path: PathBuf,
    max_entry_bytes: usize,
    index: Arc<RwLock<Index>>,
    writer: mpsc::Sender<WriteRequest>,
    reader: mpsc::Sender<ReadRequest>,
    report: OpenReport,
}

impl FileJournal {
    /// Opens the journal at `path` (creating it if there is no file), chained under `key`,
    /// with default options. See [`open_with`](FileJournal::open_with).
    pub async fn open(path: impl AsRef<Path>, key: ChainKey) -> Result<Self, JournalError> {
        Self::open_with(path, key, FileJournalOptions::default()).await
    }

    /// Opens the journal at `path`, creating it if there is no file: takes its lock, checks
    /// the header, then reads every record and checks its frame, CRC, sequence number, link
    /// and MAC under `key`, and cuts a torn tail away (see [`OpenReport`]).
    ///
    /// Fails with [`JournalError::Locked`] if the journal is open elsewhere,
    /// [`JournalError::Version`] if a newer tollgate wrote it, [`JournalError::Corrupt`] if a
    /// record is damaged or does not fit the chain (also when `key` is not the key it was
    /// written with), and [`JournalError::Io`] if the file cannot be read or written.
    ///
    /// The work happens on the journal's writer thread; the future only waits for it.
    pub async fn open_with(
        path: impl AsRef<Path>,
        key: ChainKey,
        options: FileJournalOptions,
    ) -> Result<Self, JournalError> {
        let path = path.as_ref().to_path_buf();
        let max_entry_bytes = options.max_entry_bytes;
        let opened = writer::spawn(path.clone(), key.clone(), options)?
            .await
            .map_err(|_| JournalError::Closed)??;
        Ok(FileJournal {
            key,
            path,
            max_entry_bytes,
            index: opened.index,
            writer: opened.writer,
            reader: opened.reader,
            report: opened.report,
        })
    }

    /// What the open found and repaired.
    #[must_use]
    pub fn opened(&self) -> &OpenReport {
        &self.report
    }

    /// Where the journal is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How big the journal is, and how well group commit is doing since it was opened.
    #[must_use]
    pub fn stats(&self) -> FileStats {
        let index = read_index(&self.index);
        FileStats {
            entries: index.offsets.len() as Seq,
            bytes: index.end,
            commits: index.commits,
            appends: index.appends,
        }
    }

    /// Waits for every append made before to finish, closes the file and releases its lock:
    /// once this resolves, the journal can be opened again, in this process or another.
    ///
    /// Merely dropping a `FileJournal` also finishes the appends already queued and then
    /// releases the lock, but without telling when.
    pub async fn close(self) {
        let (done, closed) = oneshot::channel();
        if self.writer.send(WriteRequest::Close(done)).is_ok() {
            // An error means the writer thread is gone, and with it its file and lock.
            let _ = closed.await;
        }
    }

    /// Sends `request` (made with a reply channel) to the reader thread and waits.
    async fn ask_reader(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<Vec<Stored>, JournalError>>) -> ReadRequest,
    ) -> Result<Vec<Stored>, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.reader
            .send(request(reply))
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }
}

impl fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileJournal")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Journal for FileJournal {
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError> {
        for entry in &entries {
            let size = entry.key.len().saturating_add(entry.payload.len());
            if size > self.max_entry_bytes {
                return Err(JournalError::TooLarge {
                    size,
                    limit: self.max_entry_bytes,
                });
            }
        }
        if entries.is_empty() {
            return Ok(read_index(&self.index).head().0);
        }
        let (reply, acknowledged) = oneshot::channel();
        self.writer
            .send(WriteRequest::Append { entries, reply })
            .map_err(|_| JournalError::Closed)?;
        acknowledged.await.map_err(|_| JournalError::Closed)?
    }

    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        if limit == 0 || from.max(1) > read_index(&self.index).head().0 {
            return Ok(Vec::new());
        }
        self.ask_reader(|reply| ReadRequest::Range { from, limit, reply })
            .await
    }

    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        if !read_index(&self.index).last_of_key.contains_key(key) {
            return Ok(Vec::new());
        }
        let key = key.to_owned();
        self.ask_reader(|reply| ReadRequest::Key { key, reply })
            .await
    }

    async fn head(&self) -> Result<(Seq, ChainHash), JournalError> {
        Ok(read_index(&self.index).head())
    }

    fn key(&self) -> &ChainKey {
        &self.key
    }
}

/// How a [`FileJournal`] is opened.
#[derive(Debug, Clone)]
pub struct FileJournalOptions {
    max_entry_bytes: usize,
    quota: Option<DiskQuota>,
    lock_wait: Duration,
}

impl Default for FileJournalOptions {
    /// Entries up to 16 MiB, no quota, a lock wait of one second.
    fn default() -> Self {
        FileJournalOptions {
            max_entry_bytes: 16 << 20,
            quota: None,
            lock_wait: Duration::from_secs(1),
        }
    }
}

impl FileJournalOptions {
    /// The largest entry (key and payload bytes) an append takes; a larger one fails with
    /// [`JournalError::TooLarge`] before anything is written. At most 4 GiB less 84 bytes
    /// (the frame's length field is 32 bits); a larger value is lowered to that. Entries
    /// already in the file are read whatever their size.
    #[must_use]
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes.min(format::MAX_ENTRY);
        self
    }

    /// How long the open tries again to take the file's lock before it fails with
    /// [`JournalError::Locked`] (one second by default; on the journal's own thread).
    ///
    /// A process that this one forks to run a command holds a copy of this process's open
    /// files, and so of the lock, until it execs: a journal closed a moment before looks held
    /// for that moment. Waiting a little tells that from a real second writer. Zero fails at
    /// once.
    #[must_use]
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Caps the file's length with `quota` (see [`DiskQuota`]).
    #[must_use]
    pub fn quota(mut self, quota: DiskQuota) -> Self {
        self.quota = Some(quota);
        self
    }
}

/// A cap on a journal file's length that the writer obeys as if it were the disk's size: a
/// group commit that would pass it writes what fits and then fails as a full disk does
/// ([`std::io::ErrorKind::StorageFull`]), so every append of the group fails with
/// [`JournalError::Io`] and the file is cut back.
///
/// It exists so that hosts (and tollgate's tests) can see what a full disk does without
/// filling one, and it can bound a journal's size. Clones share the cap: [`set`](Self::set)
/// moves it while the journal is open, as freeing space would. The header of a new file is
/// written regardless.
#[derive(Debug, Clone)]
pub struct DiskQuota(Arc<AtomicU64>);

impl DiskQuota {
    /// A cap of `bytes`.
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        DiskQuota(Arc::new(AtomicU64::new(bytes)))
    }

    /// Moves the cap to `bytes`.
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }

    /// The cap, in bytes.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What [`FileJournal::open_with`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// The number of entries in the journal after the open (its head).
    pub entries: Seq,
    /// The file's length as found, before any repair.
    pub file_len: u64,
    /// Whether there was no journal (no file, an empty one, or a header cut short) and a new
    /// one was started.
    pub created: bool,
    /// The torn tail cut away, if there was one.
    pub torn: Option<TornTail>,
}

impl OpenReport {
    /// How many bytes the repair cut away (0 if the file ended cleanly).
    #[must_use]
    pub fn repaired_bytes(&self) -> u64 {
        self.torn.as_ref().map_or(0, |t| t.bytes)
    }
}

/// The end of a journal file that held no whole, good record: what an interrupted write
/// leaves. The open cuts it away.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// Where it started (the new length of the file).
    pub offset: u64,
    /// How many bytes it had.
    pub bytes: u64,
    /// The sequence number its first record would have had.
    pub first_seq: Seq,
    /// What was wrong with the record there.
    pub reason: String,
}

/// A [`FileJournal`]'s size and group-commit figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStats {
    /// Entries in the journal.
    pub entries: Seq,
    /// The file's length, in bytes.
    pub bytes: u64,
    /// Group commits (`fdatasync`s) since the journal was opened.
    pub commits: u64,
    /// Appends acknowledged since the journal was opened: `appends / commits` is the
    /// average group.
    pub appends: u64,
}

/// The in-memory index, shared by the writer (the only one to change it, after each durable
/// commit) and the readers.
#[derive(Debug)]
struct Index {
    /// Where each record starts: entry `seq` at `offsets[seq - 1]`.
    offsets: Vec<u64>,
    /// Where the last durable record ends: the file's length.
    end: u64,
    /// The last entry's MAC.
    head_hash: ChainHash,
    /// The last sequence number of each key.
    last_of_key: std::collections::HashMap<String, Seq>,
    /// Group commits since open.
    commits: u64,
    /// Appends acknowledged since open.
    appends: u64,
}

impl Index {
    fn head(&self) -> (Seq, ChainHash) {
        (self.offsets.len() as Seq, self.head_hash)
    }
}

/// The index for reading. A panic while it was held (there is none in the code that holds
/// it) could not have left it half-changed: every change is a few pushes and stores.
fn read_index(index: &RwLock<Index>) -> RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

/// The index for the writer's commit.
fn write_index(index: &RwLock<Index>) -> RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(PoisonError::into_inner)
}
