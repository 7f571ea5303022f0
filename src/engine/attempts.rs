//! `Attempts`: the attempts of one stage, stored without an allocation for the common case
//! of a single attempt (a detail of [`StageReport`](super::StageReport), which shows them as a
//! slice).

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Attempt;

/// Every attempt of a stage, oldest first.
///
/// Reads as a slice (`len`, `iter`, `last`, indexing) and serialises as a list. Most stages
/// make exactly one attempt, so one attempt is kept inline: a step of 100,000 stages makes
/// 100,000 fewer allocations than with a `Vec`.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Attempts(Repr);

#[derive(Clone, Default, PartialEq, Eq)]
enum Repr {
    #[default]
    None,
    One(Attempt),
    Many(Vec<Attempt>),
}

impl Attempts {
    /// No attempts.
    #[must_use]
    pub const fn new() -> Self {
        Attempts(Repr::None)
    }

    /// Adds `attempt` after the others. Inlined, so that the attempt is written into place
    /// rather than built on the stack and copied.
    #[inline]
    pub fn push(&mut self, attempt: Attempt) {
        // Every stage's first attempt takes the first arm, in place: no move of the whole
        // list out and back.
        match &mut self.0 {
            Repr::None => self.0 = Repr::One(attempt),
            Repr::Many(all) => all.push(attempt),
            Repr::One(_) => {
                let Repr::One(first) = std::mem::take(&mut self.0) else {
                    return;
                };
                self.0 = Repr::Many(vec![first, attempt]);
            }
        }
    }

    /// For serde's `skip_serializing_if`, which wants a function of `&Self`.
    pub(crate) fn is_empty_list(&self) -> bool {
        self.is_empty()
    }
}

impl Deref for Attempts {
    type Target = [Attempt];

    fn deref(&self) -> &[Attempt] {
        match &self.0 {
            Repr::None => &[],
            Repr::One(only) => std::slice::from_ref(only),
            Repr::Many(all) => all,
        }
    }
}

impl DerefMut for Attempts {
    fn deref_mut(&mut self) -> &mut [Attempt] {
        match &mut self.0 {
            Repr::None => &mut [],
            Repr::One(only) => std::slice::from_mut(only),
            Repr::Many(all) => all,
        }
    }
}

impl fmt::Debug for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Attempt>> for Attempts {
    fn from(mut all: Vec<Attempt>) -> Self {
        match all.len() {
            0 => Attempts::new(),
            1 => Attempts(all.pop().map_or(Repr::None, Repr::One)),
            _ => Attempts(Repr::Many(all)),
        }
    }
}

impl Serialize for Attempts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Attempt>::deserialize(deserializer).map(Attempts::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::StageStatus;
    use crate::time::Timestamp;

    fn attempt(number: u32) -> Attempt {
        Attempt {
            number,
            started_at: Timestamp::from_millis(u64::from(number)),
            finished_at: Timestamp::from_millis(u64::from(number) + 1),
            status: StageStatus::Failed {
                reason: format!("try {number}"),
            },
        }
    }

    #[test]
    fn behaves_as_the_vec_it_replaces() {
        let mut attempts = Attempts::new();
        let mut reference = Vec::new();
        assert!(attempts.is_empty());
        for number in 1..=4 {
            attempts.push(attempt(number));
            reference.push(attempt(number));
            assert_eq!(*attempts, *reference);
            assert_eq!(attempts.last(), reference.last());
        }
        attempts[0].status = StageStatus::Succeeded;
        reference[0].status = StageStatus::Succeeded;
        if let (Some(a), Some(r)) = (attempts.last_mut(), reference.last_mut()) {
            a.finished_at = Timestamp::from_millis(99);
            r.finished_at = Timestamp::from_millis(99);
        }
        assert_eq!(*attempts, *reference);
        assert_eq!(format!("{attempts:?}"), format!("{reference:?}"));
    }

    #[test]
    fn serialises_as_a_list_and_back() {
        for n in 0..=3 {
            let list: Vec<Attempt> = (1..=n).map(attempt).collect();
            let mut attempts = Attempts::new();
            for a in &list {
                attempts.push(a.clone());
            }
            let json = serde_json::to_string(&attempts).unwrap();
            assert_eq!(json, serde_json::to_string(&list).unwrap());
            let back: Attempts = serde_json::from_str(&json).unwrap();
            assert_eq!(back, attempts);
            assert_eq!(*back, *list);
        }
    }
}
