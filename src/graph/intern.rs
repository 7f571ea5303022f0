//! [`Interner`]: the graph's id → index map, built once per graph.
//!
//! Resolving ids is most of what building a big graph costs, and at a million stages the cost
//! is cache misses, not instructions. So the map is an open-addressing table of 32-byte slots
//! holding a hash tag, the index *and* the id's bytes (ids up to [`INLINE`] bytes whole,
//! longer ones their first bytes): a lookup usually reads one cache line, and only an id
//! longer than [`INLINE`] bytes is compared against the stage's own id. A
//! `HashMap<StageId, u32>` reads a control group, a slot, and then follows the id's pointer
//! to compare it: three misses per lookup where this has one, and it clones every id into the
//! map. `build` hashes and touches ids a few stages ahead of using them, so that their misses
//! overlap. Hashing is foldhash: ids are the host's own names, so a flood-resistant
//! hash buys nothing.

use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;

use super::StageSpec;

/// Ids up to this many bytes live in their slot whole; most ids are this short.
const INLINE: usize = 23;

/// One stage: a tag from its id's hash (never 0, which marks a free slot), its index, its
/// id's length and the id's first [`INLINE`] bytes. Two slots fill a cache line exactly.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    tag: u32,
    index: u32,
    /// Ids are at most [`MAX_STAGE_ID_LEN`](super::MAX_STAGE_ID_LEN) = 128 bytes long, and
    /// longer ones never get this far (`check_ids` runs first), so a byte holds the length.
    len: u8,
    bytes: [u8; INLINE],
}

/// The tag of a hash: its high half, never 0.
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

impl Slot {
    fn new(hash: u64, index: u32, id: &str) -> Self {
        let mut bytes = [0; INLINE];
        let head = &id.as_bytes()[..id.len().min(INLINE)];
        bytes[..head.len()].copy_from_slice(head);
        Slot {
            tag: tag(hash),
            index,
            len: u8::try_from(id.len()).unwrap_or(u8::MAX),
            bytes,
        }
    }

    /// Whether this slot is `id`, whose hash has tag `tag`; `stages` is consulted only for
    /// ids longer than [`INLINE`].
    fn is(&self, tag: u32, id: &str, stages: &[StageSpec]) -> bool {
        let id = id.as_bytes();
        if self.tag != tag || usize::from(self.len) != id.len() {
            return false;
        }
        if id.len() <= INLINE {
            self.bytes[..id.len()] == *id
        } else {
            self.bytes == id[..INLINE] && stages[self.index as usize].id.as_str().as_bytes() == id
        }
    }
}

/// The id → index map of a graph: open addressing with linear probing over a power-of-two
/// array at most three quarters full. Its slots refer to the stages by index, so every
/// method takes the stages the map was built from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    slots: Vec<Slot>,
}

/// The hash of an id. One `write` of the bytes: the length needs no mixing in, because a
/// slot compares lengths before bytes.
pub(crate) fn hash(id: &str) -> u64 {
    let mut hasher = foldhash::fast::FixedState::default().build_hasher();
    hasher.write(id.as_bytes());
    hasher.finish()
}

impl Interner {
    /// An empty map with room for `stages` ids.
    pub(crate) fn with_capacity(stages: usize) -> Self {
        let capacity = (stages + stages / 3 + 1).next_power_of_two().max(8);
        Interner {
            slots: vec![Slot::default(); capacity],
        }
    }

    /// Maps `id`, whose hash is `hash`, to `index`; returns `false`, changing nothing, if
    /// the map already has `id`. Ids must already be checked (at most 128 bytes), and the
    /// map must have been made with room for every id.
    pub(crate) fn insert(&mut self, hash: u64, index: u32, id: &str, stages: &[StageSpec]) -> bool {
        let tag = tag(hash);
        let mut at = self.home(hash);
        loop {
            let slot = &mut self.slots[at];
            if slot.tag == 0 {
                *slot = Slot::new(hash, index, id);
                return true;
            }
            if slot.is(tag, id, stages) {
                return false;
            }
            at = (at + 1) & (self.slots.len() - 1);
        }
    }

    /// The index of the stage with this id.
    pub(crate) fn get(&self, id: &str, stages: &[StageSpec]) -> Option<u32> {
        self.find(hash(id), id, stages)
    }

    /// The index of the stage with this id, whose hash is `hash`.
    pub(crate) fn find(&self, hash: u64, id: &str, stages: &[StageSpec]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mut at = self.home(hash);
        loop {
            let slot = &self.slots[at];
            if slot.tag == 0 {
                return None;
            }
            if slot.is(tag, id, stages) {
                return Some(slot.index);
            }
            at = (at + 1) & (self.slots.len() - 1);
        }
    }

    /// Reads the slot where `hash` starts probing, so that it is in cache when it is needed:
    /// a lookup that misses the cache waits for memory, and touching the slots of the next
    /// few lookups first lets the processor wait for several at once.
    pub(crate) fn touch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(self.home(hash)) {
            black_box(slot.tag);
        }
    }

    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.slots.len().max(1) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage's id mapped, or the index of the first repeat.
    fn interned(stages: &[StageSpec]) -> Result<Interner, usize> {
        let mut interner = Interner::with_capacity(stages.len());
        for (i, spec) in stages.iter().enumerate() {
            let id = spec.id.as_str();
            if !interner.insert(hash(id), i as u32, id, stages) {
                return Err(i);
            }
        }
        Ok(interner)
    }

    #[test]
    fn short_and_long_ids_resolve_and_near_misses_do_not() {
        let long = "a".repeat(INLINE) + "-tail";
        let other_long = "a".repeat(INLINE) + "-tale";
        let stages = [
            StageSpec::build("x"),
            StageSpec::build(long.clone()),
            StageSpec::build("a".repeat(INLINE)),
        ];
        let interner = interned(&stages).unwrap();
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
        assert_eq!(interned(&stages).unwrap_err(), 2);
    }
}
