//! [`MemoryJournal`]: a journal in memory, for tests, simulations and examples.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{ChainHash, ChainKey, Entry, Journal, JournalError, Seq, Stored, link_all};

/// A journal kept in memory: durable for as long as the process lives.
///
/// [`entries_mut`](MemoryJournal::entries_mut) hands out the stored entries for editing, the
/// way an attacker with write access to a store would: tests use it to check that edits are
/// found.
#[derive(Debug)]
pub struct MemoryJournal {
    key: ChainKey,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Stored>,
    last_of_key: HashMap<String, Seq>,
    by_key: HashMap<String, Vec<usize>>,
}

impl MemoryJournal {
    /// An empty journal chained under `key`.
    #[must_use]
    pub fn new(key: ChainKey) -> Self {
        MemoryJournal {
            key,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Runs `edit` on the stored entries as they are, without any check: what someone who
    /// can write the store can do. The key index is rebuilt afterwards.
    pub fn entries_mut<R>(&self, edit: impl FnOnce(&mut Vec<Stored>) -> R) -> R {
        let mut inner = self.lock();
        let result = edit(&mut inner.entries);
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        let mut last_of_key = HashMap::new();
        for (i, stored) in inner.entries.iter().enumerate() {
            by_key.entry(stored.key.clone()).or_default().push(i);
            last_of_key.insert(stored.key.clone(), stored.seq);
        }
        inner.by_key = by_key;
        inner.last_of_key = last_of_key;
        result
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the journal is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError> {
        let mut inner = self.lock();
        let (head, head_hash) = inner
            .entries
            .last()
            .map_or((0, ChainHash::GENESIS), |s| (s.seq, s.hash));
        let Inner {
            entries: stored,
            last_of_key,
            by_key,
        } = &mut *inner;
        for entry in link_all(&self.key, head, head_hash, last_of_key, entries)? {
            by_key
                .entry(entry.key.clone())
                .or_default()
                .push(stored.len());
            stored.push(entry);
        }
        Ok(stored.last().map_or(0, |s| s.seq))
    }

    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        let inner = self.lock();
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        Ok(inner
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        let inner = self.lock();
        Ok(inner
            .by_key
            .get(key)
            .map(|ids| {
                ids.iter()
                    .filter_map(|&i| inner.entries.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn head(&self) -> Result<(Seq, ChainHash), JournalError> {
        Ok(self
            .lock()
            .entries
            .last()
            .map_or((0, ChainHash::GENESIS), |s| (s.seq, s.hash)))
    }

    fn key(&self) -> &ChainKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::journal::{check_key_chain, verify};

    fn journal() -> MemoryJournal {
        let j = MemoryJournal::new(ChainKey::derive(b"test key"));
        block_on(j.append(vec![
            Entry::new("r1", b"started".to_vec()),
            Entry::new("r2", b"started".to_vec()),
            Entry::new("r1", b"built".to_vec()),
        ]))
        .unwrap();
        block_on(j.append(vec![Entry::new("r1", b"tested".to_vec())])).unwrap();
        j
    }

    #[test]
    fn appends_chain_and_verify() {
        let j = journal();
        let (head, _) = block_on(verify(&j)).unwrap();
        assert_eq!(head, 4);
        let r1 = block_on(j.read_key("r1")).unwrap();
        assert_eq!(r1.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(r1.iter().map(|s| s.key_prev).collect::<Vec<_>>(), [0, 1, 3]);
        check_key_chain(j.key(), &r1).unwrap();
    }

    #[test]
    fn a_conditional_append_is_refused_when_the_key_moved_on() {
        let j = journal();
        // r1's last entry is 4; r2's is 2.
        let stale = block_on(j.append(vec![
            Entry::new("r2", b"x".to_vec()).after(2),
            Entry::new("r1", b"deployed".to_vec()).after(3),
        ]))
        .unwrap_err();
        assert!(
            matches!(&stale, JournalError::Conflict { key, expected: 3, found: 4 } if key == "r1"),
            "{stale}"
        );
        assert_eq!(j.len(), 4, "nothing of a refused append is written");
        let head = block_on(j.append(vec![
            Entry::new("r1", b"deployed".to_vec()).after(4),
            Entry::new("r1", b"noted".to_vec()).after(5),
        ]))
        .unwrap();
        assert_eq!(head, 6);
        assert!(block_on(j.append(vec![Entry::new("r3", b"new".to_vec()).after(0)])).is_ok());
        block_on(verify(&j)).unwrap();
    }

    #[test]
    fn an_edit_a_removal_or_a_foreign_key_is_found() {
        let j = journal();
        j.entries_mut(|e| e[2].payload = b"tested".to_vec());
        let err = block_on(verify(&j)).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { seq: 3, .. }), "{err}");

        let j = journal();
        j.entries_mut(|e| e.remove(2));
        let err = block_on(verify(&j)).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { seq: 3, .. }), "{err}");
        let r1 = block_on(j.read_key("r1")).unwrap();
        assert!(check_key_chain(j.key(), &r1).is_err());

        // Written with another key: a forger without the secret.
        let forged = MemoryJournal::new(ChainKey::derive(b"guess"));
        block_on(forged.append(vec![Entry::new("r1", b"approved".to_vec())])).unwrap();
        let stolen = forged.entries_mut(|e| e.clone());
        let j = journal();
        j.entries_mut(|e| {
            let mut s = stolen[0].clone();
            s.seq = 5;
            s.prev = e[3].hash;
            s.key_prev = 4;
            e.push(s);
        });
        let err = block_on(verify(&j)).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { seq: 5, .. }), "{err}");
    }
}
