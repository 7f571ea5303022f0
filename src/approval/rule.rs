//! One requirement of an approval policy: a [`Rule`] (`need` distinct people from its
//! [`Approver`]s).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ApprovalError, Directory};
use crate::id::Person;

/// Someone a rule lets approve: a person, or every member of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approver {
    /// One person.
    Person(Person),
    /// Everyone the [`Directory`] says is in the group.
    Group(String),
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Person(p) => write!(f, "{p}"),
            Approver::Group(g) => write!(f, "@{g}"),
        }
    }
}

/// One requirement of a policy: `need` distinct people from `approvers`.
///
/// ```
/// use tollgate::approval::Rule;
///
/// let rule = Rule::new("release-managers").group("release-managers").need(2);
/// assert_eq!(rule.to_string(), "release-managers: 2 of @release-managers");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub(super) name: String,
    pub(super) approvers: Vec<Approver>,
    pub(super) need: usize,
    /// A person's name that failed validation in the builder chain, reported when the rule is
    /// added to a policy.
    #[serde(skip)]
    pub(super) invalid: Option<String>,
}

impl Rule {
    /// A rule called `name` (how progress and errors refer to it) needing one approval from
    /// nobody yet: add people and groups.
    pub fn new(name: impl Into<String>) -> Self {
        Rule {
            name: name.into(),
            approvers: Vec::new(),
            need: 1,
            invalid: None,
        }
    }

    /// Lets `person` approve. An invalid name is reported by
    /// [`ApprovalPolicy::rule`](super::ApprovalPolicy::rule) when the rule is added.
    #[must_use]
    pub fn person(mut self, person: impl Into<String>) -> Self {
        // The chain stays infallible; the first invalid name is reported by
        // `ApprovalPolicy::rule`.
        match Person::new(person) {
            Ok(p) => self.approvers.push(Approver::Person(p)),
            Err(e) => {
                self.invalid.get_or_insert(e.to_string());
            }
        }
        self
    }

    /// Lets every member of `group` approve.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.approvers.push(Approver::Group(group.into()));
        self
    }

    /// Needs `k` distinct people (default 1).
    #[must_use]
    pub fn need(mut self, k: usize) -> Self {
        self.need = k;
        self
    }

    /// The rule's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who may approve under this rule.
    #[must_use]
    pub fn approvers(&self) -> &[Approver] {
        &self.approvers
    }

    /// How many distinct people it needs.
    #[must_use]
    pub fn needed(&self) -> usize {
        self.need
    }

    /// Whether `person` may approve under this rule, as `directory` says now.
    pub fn admits(&self, person: &str, directory: &dyn Directory) -> bool {
        self.approvers.iter().any(|a| match a {
            Approver::Person(p) => {
                p == person || directory.canonical(p.as_str()) == directory.canonical(person)
            }
            Approver::Group(g) => directory.is_member(person, g),
        })
    }

    pub(super) fn check(&self) -> Result<(), ApprovalError> {
        let invalid = |reason: String| {
            Err(ApprovalError::InvalidRule {
                rule: self.name.clone(),
                reason,
            })
        };
        if let Some(reason) = &self.invalid {
            return invalid(reason.clone());
        }
        if self.name.trim().is_empty() {
            return invalid("a rule needs a name".to_owned());
        }
        if self.approvers.is_empty() {
            return invalid("it names no people or groups".to_owned());
        }
        if self.need == 0 {
            return invalid("it needs at least one approval".to_owned());
        }
        // Distinct people: a person listed twice counts once.
        let people = self
            .approvers
            .iter()
            .filter_map(|a| match a {
                Approver::Person(p) => Some(p),
                Approver::Group(_) => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let has_group = self
            .approvers
            .iter()
            .any(|a| matches!(a, Approver::Group(_)));
        if !has_group && people < self.need {
            return invalid(format!(
                "it needs {} approvals but names only {people} people",
                self.need
            ));
        }
        if self.need > MAX_NEED {
            return invalid(format!(
                "it needs {} approvals, more than the {MAX_NEED} any rule may ask for",
                self.need
            ));
        }
        Ok(())
    }
}

/// The most approvals one rule may need: more can never be met in practice, and is refused
/// as a mistake (a `need(usize::MAX)`).
pub const MAX_NEED: usize = 1_000;

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} of ", self.name, self.need)?;
        for (i, a) in self.approvers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}
