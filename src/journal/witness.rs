//! Rollback detection: the journal's [`Head`] kept somewhere else by a [`HeadWitness`], the
//! check of a journal against it ([`check_head`]), and [`Witnessed`], a journal that has its
//! witness keep every new head.
//!
//! The chain tells an edited, added, removed or reordered entry from a good one, but not a
//! journal that lost its newest entries: a truncated tail, or an older copy of the store put
//! back, is a chain that holds, only shorter. What was acknowledged and is gone can only be
//! told from a head kept out of the store's reach.

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ChainHash, Entry, Journal, JournalError, Seq, Stored, walk};

/// A journal's head: the sequence number and MAC of its last entry. Small (a number and 32
/// bytes; in JSON `{"seq": 12, "hash": "<64 hex digits>"}`), so a host can keep it wherever
/// the store's writers cannot reach: another disk, another host, a database row the bot
/// alone may write, a transparency log.
///
/// The MAC is keyed, so a head names one history: another journal can reach the same
/// sequence number only with another MAC, unless it was written with the host's key.
///
/// ```
/// use tollgate::journal::{ChainKey, Entry, Head, Journal, MemoryJournal};
/// # futures::executor::block_on(async {
/// let journal = MemoryJournal::new(ChainKey::derive(b"the host's secret"));
/// journal.append(vec![Entry::new("r1", b"started".to_vec())]).await?;
/// let head = Head::of(&journal).await?;
/// assert_eq!(head.seq, 1);
/// let json = serde_json::to_string(&head).unwrap();
/// assert_eq!(serde_json::from_str::<Head>(&json).unwrap(), head);
/// # Ok::<_, tollgate::journal::JournalError>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Head {
    /// The sequence number of the last entry (0 for an empty journal).
    pub seq: Seq,
    /// Its MAC ([`ChainHash::GENESIS`] for an empty journal).
    pub hash: ChainHash,
}

impl Head {
    /// The head of an empty journal.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: ChainHash::GENESIS,
    };

    /// The head `journal` has now.
    pub async fn of(journal: &(impl Journal + ?Sized)) -> Result<Head, JournalError> {
        let (seq, hash) = journal.head().await?;
        Ok(Head { seq, hash })
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} ({})", self.seq, self.hash)
    }
}

impl Serialize for ChainHash {
    /// 64 lower-case hex digits.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::artifact::to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(d)?;
        ChainHash::from_hex(&hex).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "a chain hash is 64 hex digits, not {}",
                crate::id::quoted(&hex)
            ))
        })
    }
}

impl ChainHash {
    /// Reads 64 hex digits (either case); `None` for anything else.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<ChainHash> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let mut hash = [0u8; 32];
        for (byte, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(ChainHash(hash))
    }
}

/// Checks that `journal` still holds the history whose head was `witnessed`, and resolves
/// with its head now: entry `witnessed.seq` is there with the witnessed MAC (and its MAC
/// holds), and every entry after it follows on ([`walk`]). Costs the entries since the
/// witnessed head, not the whole journal.
///
/// A journal that ends before the witnessed entry lost its newest entries
/// ([`JournalError::Behind`]); one whose entry there has another MAC holds another history
/// ([`JournalError::Diverged`]: a forked chain, another store).
///
/// ```
/// use tollgate::journal::{ChainKey, Entry, Head, Journal, JournalError, MemoryJournal, check_head};
/// # futures::executor::block_on(async {
/// let journal = MemoryJournal::new(ChainKey::derive(b"the host's secret"));
/// journal.append(vec![Entry::new("r1", b"staged".to_vec())]).await?;
/// journal.append(vec![Entry::new("r1", b"deployed".to_vec())]).await?;
/// let witnessed = Head::of(&journal).await?; // kept somewhere else
/// assert_eq!(check_head(&journal, &witnessed).await?, witnessed);
///
/// journal.entries_mut(|entries| entries.truncate(1)); // the store rolled back
/// let error = check_head(&journal, &witnessed).await.unwrap_err();
/// assert!(matches!(error, JournalError::Behind { witnessed: 2, head: 1 }), "{error}");
/// # Ok::<_, JournalError>(()) }).unwrap();
/// ```
pub async fn check_head(
    journal: &(impl Journal + ?Sized),
    witnessed: &Head,
) -> Result<Head, JournalError> {
    if witnessed.seq > 0 {
        let at = journal.read(witnessed.seq, 1).await?;
        let Some(entry) = at.first() else {
            let (head, _) = journal.head().await?;
            return Err(JournalError::Behind {
                witnessed: witnessed.seq,
                head,
            });
        };
        check_witnessed(journal, entry, witnessed)?;
    } else if witnessed.hash != ChainHash::GENESIS {
        return Err(JournalError::Diverged {
            seq: 0,
            witnessed: witnessed.hash,
            found: ChainHash::GENESIS,
        });
    }
    let (seq, hash) = walk(journal, witnessed.seq + 1, Some(witnessed.hash), |_| Ok(())).await?;
    Ok(Head { seq, hash })
}

/// Checks that `entry`, read at the witnessed position, is the witnessed entry.
fn check_witnessed(
    journal: &(impl Journal + ?Sized),
    entry: &Stored,
    witnessed: &Head,
) -> Result<(), JournalError> {
    if entry.seq != witnessed.seq {
        return Err(JournalError::Corrupt {
            seq: witnessed.seq,
            offset: entry.offset,
            reason: format!("found sequence number {} in its place", entry.seq),
        });
    }
    journal.key().check(entry)?;
    if entry.hash == witnessed.hash {
        Ok(())
    } else {
        Err(JournalError::Diverged {
            seq: witnessed.seq,
            witnessed: witnessed.hash,
            found: entry.hash,
        })
    }
}

/// The error a [`HeadWitness`] fails with: its own, kept as the source of
/// [`JournalError::Witness`].
pub type WitnessError = Box<dyn StdError + Send + Sync>;

/// Somewhere outside the journal's store that keeps its newest [`Head`], so that a rollback
/// of the store (a truncated tail, an older copy) is found ([`Witnessed`] calls it).
///
/// Keep it where the store's writers cannot write: what it protects against is exactly
/// someone who can put back an older store.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a head witness",
    note = "use `tollgate::journal::MemoryWitness` in tests, or implement `witness` and `last`"
)]
#[async_trait]
pub trait HeadWitness: Send + Sync {
    /// Keeps `head`, a newer one than any it was given before. Resolves once it is kept as
    /// durably as the journal's entries are.
    async fn witness(&self, head: Head) -> Result<(), WitnessError>;

    /// The newest head it keeps, `None` before the first.
    async fn last(&self) -> Result<Option<Head>, WitnessError>;
}

crate::forward::forward_impls! {
    #[async_trait]
    impl HeadWitness {
        async fn witness(&self, head: Head) -> Result<(), WitnessError>;
        async fn last(&self) -> Result<Option<Head>, WitnessError>;
    }
}

/// A witness in memory: for tests, and for a journal whose rollback within one process's
/// life is what matters (a database another process can write).
///
/// ```
/// use tollgate::journal::{ChainKey, Entry, HeadWitness, Journal, MemoryJournal, MemoryWitness, Witnessed};
/// # futures::executor::block_on(async {
/// let witness = std::sync::Arc::new(MemoryWitness::default());
/// let journal = Witnessed::new(MemoryJournal::new(ChainKey::derive(b"secret")), witness.clone()).await?;
/// journal.append(vec![Entry::new("r1", b"started".to_vec())]).await?;
/// assert_eq!(witness.last().await.unwrap().map(|h| h.seq), Some(1));
/// # Ok::<_, tollgate::journal::JournalError>(()) }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryWitness(std::sync::Mutex<Option<Head>>);

impl MemoryWitness {
    /// A witness that already keeps `head` (as one read back from elsewhere would).
    #[must_use]
    pub fn holding(head: Head) -> Self {
        MemoryWitness(std::sync::Mutex::new(Some(head)))
    }
}

#[async_trait]
impl HeadWitness for MemoryWitness {
    async fn witness(&self, head: Head) -> Result<(), WitnessError> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(head);
        Ok(())
    }

    async fn last(&self) -> Result<Option<Head>, WitnessError> {
        Ok(*self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// A journal whose every acknowledged append has its new head kept by a [`HeadWitness`], and
/// which is checked against the witness's head: in full when it is made
/// ([`Witnessed::new`]), on [`check`](Witnessed::check) and on every append (from the
/// witnessed head on, so the cost is the entries appended since), and by sequence number on
/// every read (a journal that now ends before the witnessed head is refused): give it to
/// [`PipelineBuilder::journal`](crate::pipeline::PipelineBuilder::journal) and the pipeline
/// has its head witnessed after each append, and refuses a rolled-back store at start.
///
/// An append resolves once the entries are durable *and* the witness kept the new head. If
/// the witness fails, the append fails with [`JournalError::Witness`] although its entries
/// are durable (as after a crash between the journal's acknowledgement and the caller's):
/// the next append's head covers them.
///
/// ```
/// use tollgate::journal::{ChainKey, Entry, Journal, JournalError, MemoryJournal, MemoryWitness, Witnessed};
/// # futures::executor::block_on(async {
/// let store = std::sync::Arc::new(MemoryJournal::new(ChainKey::derive(b"secret")));
/// let witness = std::sync::Arc::new(MemoryWitness::default());
/// let journal = Witnessed::new(store.clone(), witness.clone()).await?;
/// journal.append(vec![Entry::new("r1", b"staged".to_vec())]).await?;
/// journal.append(vec![Entry::new("r1", b"deployed".to_vec())]).await?;
///
/// store.entries_mut(|entries| entries.truncate(1)); // an older copy of the store
/// let error = Witnessed::new(store.clone(), witness.clone()).await.unwrap_err();
/// assert!(matches!(error, JournalError::Behind { witnessed: 2, head: 1 }), "{error}");
/// assert!(journal.head().await.is_err(), "the running journal sees it too");
/// # Ok::<_, JournalError>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct Witnessed<J, W> {
    journal: J,
    witness: W,
    /// The newest head the witness keeps; held while the witness is called, so that it is
    /// given heads in order.
    last: futures::lock::Mutex<Head>,
}

impl<J: Journal, W: HeadWitness> Witnessed<J, W> {
    /// `journal` with its head kept by `witness`: checks `journal` against the newest head
    /// the witness keeps ([`check_head`]), then has it keep the journal's head. A witness
    /// that keeps nothing yet takes the journal as it is (trust on first use).
    pub async fn new(journal: J, witness: W) -> Result<Self, JournalError> {
        let kept = witness.last().await.map_err(JournalError::Witness)?;
        let head = match kept {
            Some(kept) => check_head(&journal, &kept).await?,
            None => Head::of(&journal).await?,
        };
        if kept != Some(head) {
            witness.witness(head).await.map_err(JournalError::Witness)?;
        }
        Ok(Witnessed {
            journal,
            witness,
            last: futures::lock::Mutex::new(head),
        })
    }

    /// Checks the journal against the newest witnessed head now ([`check_head`]); resolves
    /// with the journal's head.
    pub async fn check(&self) -> Result<Head, JournalError> {
        let witnessed = *self.last.lock().await;
        check_head(&self.journal, &witnessed).await
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The witness.
    pub fn witness(&self) -> &W {
        &self.witness
    }

    /// The journal and the witness.
    pub fn into_parts(self) -> (J, W) {
        (self.journal, self.witness)
    }
}

impl<J: Journal, W: HeadWitness> Witnessed<J, W> {
    /// Refuses a journal that now ends before the newest witnessed head (a cheap check, by
    /// sequence number, made on every read).
    async fn not_behind(&self) -> Result<(Seq, ChainHash), JournalError> {
        let (seq, hash) = self.journal.head().await?;
        let witnessed = self.last.lock().await.seq;
        if seq < witnessed {
            return Err(JournalError::Behind {
                witnessed,
                head: seq,
            });
        }
        Ok((seq, hash))
    }
}

#[async_trait]
impl<J: Journal, W: HeadWitness> Journal for Witnessed<J, W> {
    /// Appends to the journal, then checks that the journal still holds the newest witnessed
    /// head and that everything after it follows on ([`check_head`]: the entries of this
    /// append and of any concurrent one), and has the witness keep the new head.
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError> {
        let seq = self.journal.append(entries).await?;
        let mut last = self.last.lock().await;
        // Appends running concurrently may have had a head past this one witnessed already;
        // the check is made anyway, so that an append to a store rolled back meanwhile
        // (whose new entries land at or before the witnessed head) is refused.
        let head = check_head(&self.journal, &last).await?;
        if head.seq < seq {
            return Err(JournalError::Behind {
                witnessed: seq,
                head: head.seq,
            });
        }
        if head != *last {
            self.witness
                .witness(head)
                .await
                .map_err(JournalError::Witness)?;
            *last = head;
        }
        Ok(seq)
    }

    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        self.not_behind().await?;
        self.journal.read(from, limit).await
    }

    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        self.not_behind().await?;
        self.journal.read_key(key).await
    }

    async fn head(&self) -> Result<(Seq, ChainHash), JournalError> {
        self.not_behind().await
    }

    fn key(&self) -> &super::ChainKey {
        self.journal.key()
    }
}
