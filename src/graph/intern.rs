//! [`Interner`]: the graph's id → index map, built once per graph.
//!
//! Resolving ids is most of what building a big graph costs, and at a million stages the cost
//! is cache misses, not instructions. So the map is a `hashbrown` table of 24-byte slots
//! holding the index *and* the id's bytes (ids up to [`INLINE`] bytes whole, longer ones their
//! first bytes): a lookup reads the table's control bytes and one slot, and only an id longer
//! than [`INLINE`] bytes is compared against the stage's own id. A `HashMap<StageId, u32>`
//! reads the same slot and then follows the id's pointer to compare it, one more miss per
//! lookup, and clones every id into the map. Hashing is foldhash: ids are the host's own
//! names, so a flood-resistant hash buys nothing.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::StageSpec;

/// Ids up to this many bytes live in their slot whole; most ids are this short.
const INLINE: usize = 19;

/// One stage: its index, its id's length and the id's first [`INLINE`] bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u32,
    /// Ids are at most [`MAX_STAGE_ID_LEN`](super::MAX_STAGE_ID_LEN) = 128 bytes long, and
    /// longer ones never get this far (`check_ids` runs first), so a byte holds the length.
    len: u8,
    bytes: [u8; INLINE],
}

impl Slot {
    fn new(index: u32, id: &str) -> Self {
        let mut bytes = [0; INLINE];
        let head = &id.as_bytes()[..id.len().min(INLINE)];
        bytes[..head.len()].copy_from_slice(head);
        Slot {
            index,
            len: u8::try_from(id.len()).unwrap_or(u8::MAX),
            bytes,
        }
    }

    /// Whether this slot is `id`; `stages` is consulted only for ids longer than [`INLINE`].
    fn is(&self, id: &str, stages: &[StageSpec]) -> bool {
        let id = id.as_bytes();
        if usize::from(self.len) != id.len() {
            return false;
        }
        if id.len() <= INLINE {
            self.bytes[..id.len()] == *id
        } else {
            self.bytes == id[..INLINE] && stages[self.index as usize].id.as_str().as_bytes() == id
        }
    }
}

/// The id → index map of a graph. Its slots refer to the stages by index, so every method
/// takes the stages the map was built from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    table: HashTable<Slot>,
}

/// The hash of an id. One `write` of the bytes: the length needs no mixing in, because a
/// slot compares lengths before bytes.
fn hash(id: &str) -> u64 {
    let mut hasher = foldhash::fast::FixedState::default().build_hasher();
    hasher.write(id.as_bytes());
    hasher.finish()
}

impl Interner {
    /// Maps every stage's id to its index, or returns the index of the first stage whose id
    /// an earlier stage already has. Ids must already be checked (at most 128 bytes).
    pub(crate) fn new(stages: &[StageSpec]) -> Result<Self, usize> {
        let mut table = HashTable::with_capacity(stages.len());
        for (i, spec) in stages.iter().enumerate() {
            let id = spec.id.as_str();
            let rehash = |slot: &Slot| hash(stages[slot.index as usize].id.as_str());
            match table.entry(hash(id), |slot: &Slot| slot.is(id, stages), rehash) {
                Entry::Occupied(_) => return Err(i),
                Entry::Vacant(vacant) => {
                    vacant.insert(Slot::new(i as u32, id));
                }
            }
        }
        Ok(Interner { table })
    }

    /// The index of the stage with this id.
    pub(crate) fn get(&self, id: &str, stages: &[StageSpec]) -> Option<u32> {
        self.table
            .find(hash(id), |slot| slot.is(id, stages))
            .map(|slot| slot.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_ids_resolve_and_near_misses_do_not() {
        let long = "a".repeat(INLINE) + "-tail";
        let other_long = "a".repeat(INLINE) + "-tale";
        let stages = [
            StageSpec::build("x"),
            StageSpec::build(long.clone()),
            StageSpec::build("a".repeat(INLINE)),
        ];
        let interner = Interner::new(&stages).unwrap();
        assert_eq!(interner.get("x", &stages), Some(0));
        assert_eq!(interner.get(&long, &stages), Some(1));
        assert_eq!(interner.get(&"a".repeat(INLINE), &stages), Some(2));
        assert_eq!(interner.get(&other_long, &stages), None);
        assert_eq!(interner.get("", &stages), None);
        assert_eq!(interner.get("xx", &stages), None);
    }

    #[test]
    fn a_repeated_id_names_its_second_stage() {
        let stages = [
            StageSpec::build("a"),
            StageSpec::build("b"),
            StageSpec::build("a"),
        ];
        assert_eq!(Interner::new(&stages).unwrap_err(), 2);
    }
}
