//! Worker and group slots: how many attempts of a phase may run at once, in all and per
//! group.

use std::collections::HashMap;

/// The places a phase's attempts hold: a worker each, and a place in their group when the
/// engine limits that group. A stage waiting out a retry backoff holds neither.
pub(super) struct Slots<'a> {
    /// At most this many attempts run at once (`usize::MAX` without a limit).
    workers: usize,
    /// The engine's limit per group.
    group_limits: &'a HashMap<String, usize>,
    /// Attempts under way per limited group; a group appears once one of its stages started.
    group_running: HashMap<&'a str, usize>,
}

impl<'a> Slots<'a> {
    /// The places of a phase run with at most `workers` attempts at once and `group_limits`.
    pub(super) fn new(workers: Option<usize>, group_limits: &'a HashMap<String, usize>) -> Self {
        Slots {
            workers: workers.unwrap_or(usize::MAX),
            group_limits,
            group_running: HashMap::new(),
        }
    }

    /// Whether another attempt may start while `running` attempts are under way.
    #[inline]
    pub(super) fn worker_free(&self, running: usize) -> bool {
        running < self.workers
    }

    /// Whether the engine limits any group. Without group limits a stage's group need not
    /// even be read: on a big graph that read is a cache miss per stage.
    #[inline]
    pub(super) fn limits_groups(&self) -> bool {
        !self.group_limits.is_empty()
    }

    /// Takes a place in `group` for an attempt about to start, and says whether there was
    /// one; a group without a limit always has room.
    #[inline]
    pub(super) fn enter(&mut self, group: &'a str) -> bool {
        if let Some(&limit) = self.group_limits.get(group) {
            let count = self.group_running.entry(group).or_insert(0);
            if *count >= limit {
                return false;
            }
            *count += 1;
        }
        true
    }

    /// Whether an attempt may hold a group place (so an ended attempt's group is worth
    /// reading).
    #[inline]
    pub(super) fn holds_group_places(&self) -> bool {
        !self.group_running.is_empty()
    }

    /// Gives back the place in `group` an ended attempt held, if its group is limited.
    #[inline]
    pub(super) fn leave(&mut self, group: &str) {
        if let Some(count) = self.group_running.get_mut(group) {
            *count -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_group_refuses_until_a_place_is_given_back() {
        let group_limits = HashMap::from([("gpu".to_owned(), 2)]);
        let mut slots = Slots::new(Some(3), &group_limits);
        assert!(slots.limits_groups());
        assert!(!slots.holds_group_places());
        assert!(slots.enter("gpu") && slots.enter("gpu"));
        assert!(!slots.enter("gpu"), "a third gpu stage waits");
        assert!(slots.enter("cpu"), "an unlimited group always has room");
        slots.leave("gpu");
        assert!(slots.enter("gpu"));
        assert!(slots.worker_free(2) && !slots.worker_free(3));
    }

    #[test]
    fn without_limits_every_attempt_starts() {
        let group_limits = HashMap::new();
        let slots = Slots::new(None, &group_limits);
        assert!(!slots.limits_groups());
        assert!(slots.worker_free(usize::MAX - 1));
    }
}
