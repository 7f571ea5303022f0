//! How far a ballot has come under a policy: [`Progress`] and its [`RuleProgress`] per rule.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::Vote;
use crate::id::Person;

/// How far one rule has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleProgress {
    /// The rule's name.
    pub rule: String,
    /// How many distinct people it needs.
    pub need: usize,
    /// The distinct people whose current approval counts for it.
    pub approved_by: Vec<Person>,
}

impl RuleProgress {
    /// Whether the rule is met.
    #[must_use]
    pub fn is_met(&self) -> bool {
        self.approved_by.len() >= self.need
    }
}

/// How far a ballot has come under a policy: per rule, any rejection, and votes that expired.
///
/// Its `Display` is the sentence a bot posts: `release-managers 2 of 3 (rita, sam), waiting
/// for security 0 of 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Every rule, in the policy's order.
    pub rules: Vec<RuleProgress>,
    /// The latest current rejection, which blocks the approval.
    pub rejection: Option<Vote>,
    /// People whose votes no longer count because they expired.
    pub expired: Vec<Person>,
}

impl Progress {
    /// Whether there are rules, every one is met, and nobody rejects. A policy without rules
    /// is never met: it names nobody who could approve.
    #[must_use]
    pub fn is_met(&self) -> bool {
        self.rejection.is_none()
            && !self.rules.is_empty()
            && self.rules.iter().all(RuleProgress::is_met)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.rejection {
            return write!(f, "rejected by {}: {}", r.person, r.reason);
        }
        if self.rules.is_empty() {
            return f.write_str("the policy has no rules");
        }
        let describe = |r: &RuleProgress| {
            let mut s = format!("{} {} of {}", r.rule, r.approved_by.len(), r.need);
            if !r.approved_by.is_empty() {
                let names: Vec<&str> = r.approved_by.iter().map(Person::as_str).collect();
                // Writing to a String cannot fail.
                let _ = write!(s, " ({})", names.join(", "));
            }
            s
        };
        let met: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.is_met())
            .map(describe)
            .collect();
        let open: Vec<String> = self
            .rules
            .iter()
            .filter(|r| !r.is_met())
            .map(describe)
            .collect();
        match (met.is_empty(), open.is_empty()) {
            (_, true) => write!(f, "approved: {}", met.join(", "))?,
            (true, false) => write!(f, "waiting for {}", open.join(", "))?,
            (false, false) => write!(f, "{}, waiting for {}", met.join(", "), open.join(", "))?,
        }
        if !self.expired.is_empty() {
            let names: Vec<&str> = self.expired.iter().map(Person::as_str).collect();
            write!(f, " (expired: {})", names.join(", "))?;
        }
        Ok(())
    }
}
