//! [`Attempts`]: the attempts of one stage, stored without an allocation for the common case
//! of a single attempt.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Attempt;

/// Every attempt of a stage, oldest first.
///
/// Reads as a slice (`len`, `iter`, `last`, indexing) and serialises as a list. Most stages
/// make exactly one attempt, so one attempt is kept inline: a step of 100,000 stages makes
/// 100,000 fewer allocations than with a `Vec`.
///
/// ```
/// use tollgate::engine::{Attempt, Attempts};
/// use tollgate::executor::StageStatus;
/// use tollgate::time::Timestamp;
///
/// let mut attempts = Attempts::new();
/// attempts.push(Attempt {
///     number: 1,
///     started_at: Timestamp::EPOCH,
///     finished_at: Timestamp::from_millis(250),
///     status: StageStatus::Succeeded,
/// });
/// assert_eq!(attempts.len(), 1);
/// assert!(attempts[0].status.is_success());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attempts(Repr);

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

    /// Adds `attempt` after the others.
    pub fn push(&mut self, attempt: Attempt) {
        self.0 = match std::mem::take(&mut self.0) {
            Repr::None => Repr::One(attempt),
            Repr::One(first) => Repr::Many(vec![first, attempt]),
            Repr::Many(mut all) => {
                all.push(attempt);
                Repr::Many(all)
            }
        };
    }

    /// Removes and returns the latest attempt.
    pub fn pop(&mut self) -> Option<Attempt> {
        match std::mem::take(&mut self.0) {
            Repr::None => None,
            Repr::One(only) => Some(only),
            Repr::Many(mut all) => {
                let last = all.pop();
                self.0 = Repr::Many(all);
                last
            }
        }
    }

    /// For serde's `skip_serializing_if`, which wants a function of `&Self`.
    pub(crate) fn is_empty_list(&self) -> bool {
        self.is_empty()
    }

    /// The attempts as a `Vec`.
    #[must_use]
    pub fn into_vec(self) -> Vec<Attempt> {
        match self.0 {
            Repr::None => Vec::new(),
            Repr::One(only) => vec![only],
            Repr::Many(all) => all,
        }
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

impl From<Attempts> for Vec<Attempt> {
    fn from(attempts: Attempts) -> Self {
        attempts.into_vec()
    }
}

impl FromIterator<Attempt> for Attempts {
    fn from_iter<I: IntoIterator<Item = Attempt>>(iter: I) -> Self {
        let mut attempts = Attempts::new();
        for attempt in iter {
            attempts.push(attempt);
        }
        attempts
    }
}

impl Extend<Attempt> for Attempts {
    fn extend<I: IntoIterator<Item = Attempt>>(&mut self, iter: I) {
        for attempt in iter {
            self.push(attempt);
        }
    }
}

impl IntoIterator for Attempts {
    type Item = Attempt;
    type IntoIter = std::vec::IntoIter<Attempt>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a Attempts {
    type Item = &'a Attempt;
    type IntoIter = std::slice::Iter<'a, Attempt>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq<[Attempt]> for Attempts {
    fn eq(&self, other: &[Attempt]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<Attempt>> for Attempts {
    fn eq(&self, other: &Vec<Attempt>) -> bool {
        **self == **other
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
        for number in 1..=4 {
            attempts.push(attempt(number));
            reference.push(attempt(number));
            assert_eq!(attempts, reference);
            assert_eq!(attempts.last(), reference.last());
        }
        attempts[0].status = StageStatus::Succeeded;
        reference[0].status = StageStatus::Succeeded;
        assert_eq!(attempts, reference);
        while let Some(last) = reference.pop() {
            assert_eq!(attempts.pop(), Some(last));
            assert_eq!(attempts, reference);
        }
        assert_eq!(attempts.pop(), None);
        assert!(attempts.is_empty());
    }

    #[test]
    fn serialises_as_a_list_and_back() {
        for n in 0..=3 {
            let attempts: Attempts = (1..=n).map(attempt).collect();
            let json = serde_json::to_string(&attempts).unwrap();
            let list: Vec<Attempt> = (1..=n).map(attempt).collect();
            assert_eq!(json, serde_json::to_string(&list).unwrap());
            let back: Attempts = serde_json::from_str(&json).unwrap();
            assert_eq!(back, attempts);
            assert_eq!(back.into_vec(), list);
        }
    }
}
