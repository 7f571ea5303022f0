//! The journal: an append-only, keyed hash chain of entries, the durable source of truth a
//! release bot keeps across restarts. This module is storage only: an [`Entry`] is a key (the
//! release it is about, or empty) and opaque bytes; what the bytes mean (the facts about
//! releases) is the [`fact`](crate::fact) layer's business.
//!
//! Every stored entry carries its sequence number, the sequence number of the previous entry
//! with the same key, and a MAC chained over the previous entry's ([`ChainKey::link`]):
//! HMAC-SHA256 under a key the host keeps out of the store. So someone who can write the
//! store but does not hold the key cannot add, edit, delete or reorder an entry without the
//! chain breaking there, and [`verify`] names the first bad entry; and one release's entries,
//! read through the key index, are checked on their own (each MAC, and each back-link to the
//! release's previous entry).
//!
//! What the chain cannot tell is the loss of the newest entries of the whole journal (a
//! truncated tail, or a rollback of the store to an older copy): a [`HeadWitness`] keeps the
//! journal's [`Head`] somewhere the store's writers cannot reach, and [`Witnessed`] (a
//! journal that has it witness every append) or [`check_head`] refuse a journal behind it
//! ([`JournalError::Behind`]) or holding another history ([`JournalError::Diverged`]).
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the [`Journal`] trait, [`Entry`], [`Stored`], [`ChainKey`], [`JournalError`], [`verify`] |
//! | `memory.rs` | [`MemoryJournal`]: for tests and simulations |
//! | `witness.rs` | [`Head`], [`check_head`], [`HeadWitness`], [`MemoryWitness`], [`Witnessed`]: rollback detection |
//! | `file/` | [`FileJournal`] (Unix): the embedded default, one checksummed, `fdatasync`ed file |
//! | `postgres/` | `PgJournal` (feature `postgres`): one table in PostgreSQL, shared by every replica of a bot |

#[cfg(unix)]
mod file;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod witness;

use std::fmt;

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

#[cfg(unix)]
pub use file::{DiskQuota, FileJournal, FileJournalOptions, FileStats, OpenReport, TornTail};
pub use memory::MemoryJournal;
#[cfg(feature = "postgres")]
pub use postgres::{PgJournal, PgJournalOptions};
pub use witness::{Head, HeadWitness, MemoryWitness, WitnessError, Witnessed, check_head};

/// A position in a journal: the first entry is 1; 0 means "before everything".
pub type Seq = u64;

/// The MAC of an entry in the chain (HMAC-SHA256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash "before" the first entry.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ChainHash {
    /// The first 8 bytes, in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The secret the chain is keyed with. The host keeps it out of the store (an environment
/// variable, a secret manager); whoever holds it can write entries the chain accepts.
///
/// Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl ChainKey {
    /// A key of 32 secret bytes.
    #[must_use]
    pub const fn new(bytes: [u8; 32]) -> Self {
        ChainKey(bytes)
    }

    /// A fresh key no one else knows (from the process's random hash keys): for a journal
    /// that lives and dies with the process, such as a pipeline's default in-memory one.
    #[must_use]
    pub fn ephemeral() -> Self {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        ChainKey(bytes)
    }

    /// A key derived from a secret of any length (SHA-256 of it).
    #[must_use]
    pub fn derive(secret: &[u8]) -> Self {
        use sha2::Digest as _;
        ChainKey(Sha256::digest(secret).into())
    }

    /// The MAC of entry `seq` (filed under `key`, whose previous entry is `key_prev`, with
    /// `payload`) after the entry whose MAC is `previous`.
    #[must_use]
    pub fn link(
        &self,
        previous: &ChainHash,
        seq: Seq,
        key: &str,
        key_prev: Seq,
        payload: &[u8],
    ) -> ChainHash {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"tollgate-journal-v1");
        mac.update(&previous.0);
        mac.update(&seq.to_le_bytes());
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac.update(&key_prev.to_le_bytes());
        mac.update(&(payload.len() as u64).to_le_bytes());
        mac.update(payload);
        ChainHash(mac.finalize().into_bytes().into())
    }

    /// Checks that `stored` is a link of the chain: its MAC follows from its content and the
    /// previous entry's MAC it names.
    pub fn check(&self, stored: &Stored) -> Result<(), JournalError> {
        let expected = self.link(
            &stored.prev,
            stored.seq,
            &stored.key,
            stored.key_prev,
            &stored.payload,
        );
        if expected == stored.hash {
            Ok(())
        } else {
            Err(JournalError::Corrupt {
                seq: stored.seq,
                offset: stored.offset,
                reason: "its MAC does not match its content (edited, or written without the key)"
                    .to_owned(),
            })
        }
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// What is appended: the key it is filed under (a release id, so that one release's entries
/// can be read without the rest), its bytes, and optionally the condition that the key's
/// last entry is still the one the writer saw (optimistic concurrency: two copies of a
/// release cannot both take the same move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key (a release id), or empty for entries about no release.
    pub key: String,
    /// The entry's bytes.
    pub payload: Vec<u8>,
    /// When set, the append is refused ([`JournalError::Conflict`]) unless the last entry
    /// filed under `key` is this one (0: the key has no entry yet).
    pub expect_prev: Option<Seq>,
}

impl Entry {
    /// An entry filed under `key`.
    pub fn new(key: impl Into<String>, payload: Vec<u8>) -> Self {
        Entry {
            key: key.into(),
            payload,
            expect_prev: None,
        }
    }

    /// The same entry, appended only if the last entry of its key is `seq`.
    #[must_use]
    pub fn after(mut self, seq: Seq) -> Self {
        self.expect_prev = Some(seq);
        self
    }
}

/// An entry as stored: its place in the journal and in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence number, from 1, without gaps.
    pub seq: Seq,
    /// The key it was filed under.
    pub key: String,
    /// The sequence number of the previous entry with the same key, 0 for the first.
    pub key_prev: Seq,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// The MAC of the entry before it (`seq - 1`), [`ChainHash::GENESIS`] for the first.
    pub prev: ChainHash,
    /// Its own MAC.
    pub hash: ChainHash,
    /// Where it starts in the backend's storage, in bytes (0 where that means nothing).
    pub offset: u64,
}

/// What can go wrong with a journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Another writer holds the journal.
    #[error("the journal `{path}` is held by another writer")]
    Locked {
        /// Where the journal is.
        path: String,
    },
    /// An entry does not fit the chain, its framing or its checksum.
    #[error("journal entry {seq} (at byte {offset}) is corrupt: {reason}")]
    Corrupt {
        /// The sequence number the entry has, or should have.
        seq: Seq,
        /// Where it starts, in bytes from the start of the journal (0 for backends without
        /// offsets).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry is larger than the journal takes.
    #[error("a journal entry of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// The entry's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The storage failed (a full disk, a lost connection); nothing of the failed append was
    /// acknowledged.
    #[error("journal storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// The journal was closed, or its writer stopped.
    #[error("the journal is closed")]
    Closed,
    /// A conditional append found another entry of its key written since the writer looked:
    /// someone else moved the release first. Nothing of the append was written.
    #[error("`{key}` moved on since entry {expected}: its last entry is {found}")]
    Conflict {
        /// The key.
        key: String,
        /// The last entry the writer saw.
        expected: Seq,
        /// The last entry there is.
        found: Seq,
    },
    /// The journal ends before the head a witness kept: its newest entries are gone (its
    /// tail was cut, or an older copy of the store was put back). Nothing is read from it.
    #[error(
        "the journal ends at entry {head}, but entry {witnessed} was witnessed: its newest entries were removed (a truncated tail, or an older copy of the store)"
    )]
    Behind {
        /// The sequence number of the witnessed head.
        witnessed: Seq,
        /// The journal's last entry.
        head: Seq,
    },
    /// The journal's entry at the witnessed head is not the witnessed one: it holds another
    /// history (a forked chain, another store written with the same key).
    #[error(
        "journal entry {seq} is {found}, not the {witnessed} that was witnessed: the journal holds another history (a forked chain, or another store)"
    )]
    Diverged {
        /// The witnessed position.
        seq: Seq,
        /// The MAC witnessed there.
        witnessed: ChainHash,
        /// The MAC the journal has there.
        found: ChainHash,
    },
    /// The head witness failed to keep or to give a head (its own error is the source). An
    /// append that fails with it is durable nonetheless.
    #[error("the head witness failed: {0}")]
    Witness(#[source] WitnessError),
    /// The database refused or failed the work, could not be reached, or its settings are
    /// malformed (the Postgres journal). Nothing of a failed append was acknowledged; when
    /// `in_doubt`, the connection was lost while its commit was under way, so it may have
    /// been written: read its key before writing it again.
    #[error("{database}: {reason}{}", if *in_doubt { " (the append may have been committed)" } else { "" })]
    Database {
        /// The database and schema.
        database: String,
        /// What went wrong, as the database or the client said it.
        reason: String,
        /// Whether the failed append may have been written all the same.
        in_doubt: bool,
    },
    /// The journal was written in a newer format than this version of tollgate reads.
    #[error(
        "the journal `{path}` has format version {found}; this tollgate reads up to {supported}"
    )]
    Version {
        /// Where the journal is.
        path: String,
        /// The version its header names.
        found: u32,
        /// The newest version this code reads.
        supported: u32,
    },
}

/// An append-only, keyed hash chain: the durable source of truth.
///
/// Implementations promise: an append resolves only once its entries are durable (or fails
/// and leaves nothing of them acknowledged); entries get consecutive sequence numbers in the
/// order of the appends that were acknowledged; every stored entry is linked with
/// [`ChainKey::link`] under the journal's key to the one before it and to the previous entry
/// with its key; and readers never see a gap.
///
/// Every method that may wait for a disk or a database is async, so that no executor thread
/// is ever blocked.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate journal",
    note = "use `tollgate::journal::MemoryJournal` in tests, or implement `append`, `read`, `read_key`, `head` and `key`"
)]
#[async_trait]
pub trait Journal: Send + Sync {
    /// Appends `entries`, in order, as one unit: all of them are acknowledged or none.
    /// Resolves with the sequence number of the last one (the journal's new head) once they
    /// are durable.
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError>;

    /// Up to `limit` entries from sequence number `from` on (inclusive), in order.
    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError>;

    /// Every entry filed under `key`, in order, without reading the others where the backend
    /// has an index.
    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError>;

    /// The sequence number and MAC of the last entry (0 and [`ChainHash::GENESIS`] for an
    /// empty journal).
    async fn head(&self) -> Result<(Seq, ChainHash), JournalError>;

    /// The key the chain is checked with.
    fn key(&self) -> &ChainKey;
}

crate::forward::forward_impls! {
    #[async_trait]
    impl Journal {
        async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError>;
        async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError>;
        async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError>;
        async fn head(&self) -> Result<(Seq, ChainHash), JournalError>;
        fn key(&self) -> &ChainKey;
    }
}

/// Reads the whole of `journal` and checks its chain: consecutive sequence numbers from 1,
/// each entry naming the MAC of the one before, each MAC recomputed, each back-link pointing
/// at the previous entry with the same key. Resolves with the head, or names the first bad
/// entry.
pub async fn verify(journal: &(impl Journal + ?Sized)) -> Result<(Seq, ChainHash), JournalError> {
    let mut last_of_key: std::collections::HashMap<String, Seq> = std::collections::HashMap::new();
    walk(journal, 1, Some(ChainHash::GENESIS), |stored| {
        let expected = last_of_key.get(&stored.key).copied().unwrap_or(0);
        if stored.key_prev != expected {
            return Err(format!(
                "it names entry {} as the previous one of `{}`, but that is {expected}",
                stored.key_prev, stored.key
            ));
        }
        last_of_key.insert(stored.key.clone(), stored.seq);
        Ok(())
    })
    .await
}

/// Walks `journal` from entry `from` to its head, checking that the sequence numbers run on
/// without a gap, that each entry follows the one before it (the first one follows
/// `previous`, when known) and that its MAC holds; `each` looks at every entry too, and the
/// reason it gives refuses that entry. Resolves with the head, or names the first bad entry.
pub async fn walk(
    journal: &(impl Journal + ?Sized),
    from: Seq,
    previous: Option<ChainHash>,
    each: impl FnMut(&Stored) -> Result<(), String>,
) -> Result<(Seq, ChainHash), JournalError> {
    walk_vouched(journal, from, previous, |_| false, each).await
}

/// [`walk`], except that the MAC of an entry `vouched` answers yes for is not computed again:
/// the caller holds a copy of it, identical in every field the MAC covers, whose MAC it
/// checked already (one release's entries, read by key and checked, met again on the walk).
pub(crate) async fn walk_vouched(
    journal: &(impl Journal + ?Sized),
    from: Seq,
    mut previous: Option<ChainHash>,
    vouched: impl Fn(&Stored) -> bool,
    mut each: impl FnMut(&Stored) -> Result<(), String>,
) -> Result<(Seq, ChainHash), JournalError> {
    const BATCH: usize = 4096;
    let key = journal.key();
    let mut next = from.max(1);
    let mut head = previous.unwrap_or(ChainHash::GENESIS);
    loop {
        let batch = journal.read(next, BATCH).await?;
        // Nothing more: the head. (A short batch says so too, one read earlier; this also
        // ends the walk on a backend that never returns a short batch.)
        if batch.is_empty() {
            return Ok((next - 1, head));
        }
        let done = batch.len() < BATCH;
        for stored in batch {
            let corrupt = |reason: String| JournalError::Corrupt {
                seq: next,
                offset: stored.offset,
                reason,
            };
            if stored.seq != next {
                return Err(corrupt(format!(
                    "found sequence number {} where {next} belongs",
                    stored.seq
                )));
            }
            if previous.is_some_and(|p| p != stored.prev) {
                return Err(corrupt(
                    "it does not follow the entry before it (one was edited, removed or moved)"
                        .to_owned(),
                ));
            }
            if !vouched(&stored) {
                key.check(&stored)?;
            }
            each(&stored).map_err(corrupt)?;
            previous = Some(stored.hash);
            head = stored.hash;
            next += 1;
        }
        if done {
            return Ok((next - 1, head));
        }
    }
}

/// Whether `a` and `b` are the same entry in every field its MAC covers, and carry the same
/// MAC: if one's MAC holds, so does the other's.
pub(crate) fn same_entry(a: &Stored, b: &Stored) -> bool {
    a.seq == b.seq
        && a.key_prev == b.key_prev
        && a.prev == b.prev
        && a.hash == b.hash
        && a.key == b.key
        && a.payload == b.payload
}

/// Checks entries read by key (one release's): each MAC, and that each names the one before
/// it as its predecessor, starting from 0. A removed, edited or reordered entry of the key
/// is found; entries removed after the last one are not (see the module docs).
pub fn check_key_chain(key: &ChainKey, entries: &[Stored]) -> Result<(), JournalError> {
    let mut expected: Seq = 0;
    for stored in entries {
        key.check(stored)?;
        if stored.key_prev != expected {
            return Err(JournalError::Corrupt {
                seq: stored.seq,
                offset: stored.offset,
                reason: format!(
                    "it names entry {} as the previous one of `{}`, but that is {expected}",
                    stored.key_prev, stored.key
                ),
            });
        }
        expected = stored.seq;
    }
    Ok(())
}

/// Links `entries` onto a chain whose head is `(head, head_hash)` and whose last entry per key
/// is given by `last_of_key`: what a backend stores for an append. `last_of_key` is updated
/// only when every entry's condition ([`Entry::expect_prev`]) holds; otherwise nothing is
/// linked and the first failed condition is the error.
pub fn link_all(
    key: &ChainKey,
    head: Seq,
    head_hash: ChainHash,
    last_of_key: &mut impl KeyIndex,
    entries: Vec<Entry>,
) -> Result<Vec<Stored>, JournalError> {
    // Conditions are checked against the journal as it is plus the entries before them in
    // this append, so a batch may hold several conditional entries of one key.
    let mut pending: Vec<(&str, Seq)> = Vec::new();
    let mut seq = head;
    for entry in &entries {
        seq += 1;
        let last = pending
            .iter()
            .rev()
            .find(|(k, _)| *k == entry.key)
            .map_or_else(|| last_of_key.last(&entry.key), |&(_, s)| s);
        if let Some(expected) = entry.expect_prev {
            if expected != last {
                return Err(JournalError::Conflict {
                    key: entry.key.clone(),
                    expected,
                    found: last,
                });
            }
        }
        pending.push((&entry.key, seq));
    }
    let mut previous = head_hash;
    let mut seq = head;
    Ok(entries
        .into_iter()
        .map(|entry| {
            seq += 1;
            let key_prev = last_of_key.last(&entry.key);
            let hash = key.link(&previous, seq, &entry.key, key_prev, &entry.payload);
            last_of_key.set(&entry.key, seq);
            let stored = Stored {
                seq,
                key: entry.key,
                key_prev,
                payload: entry.payload,
                prev: previous,
                hash,
                offset: 0,
            };
            previous = hash;
            stored
        })
        .collect())
}

/// Where a backend keeps the last sequence number of each key, for [`link_all`].
pub trait KeyIndex {
    /// The last sequence number filed under `key`, 0 if none.
    fn last(&self, key: &str) -> Seq;
    /// Records `seq` as the last one of `key`.
    fn set(&mut self, key: &str, seq: Seq);
}

impl<S: std::hash::BuildHasher> KeyIndex for std::collections::HashMap<String, Seq, S> {
    fn last(&self, key: &str) -> Seq {
        self.get(key).copied().unwrap_or(0)
    }
    fn set(&mut self, key: &str, seq: Seq) {
        self.insert(key.to_owned(), seq);
    }
}
