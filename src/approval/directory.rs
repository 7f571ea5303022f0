//! Who is in which group: the [`Directory`] trait a host implements, the fixed [`Groups`]
//! table, and [`NoGroups`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::forward::forward_impls;
use crate::id::{IdError, Person};

/// Resolves groups to people: the host implements it from its own directory (LDAP, GitHub
/// teams, a config file).
///
/// Membership is asked when votes are counted, not when they are cast: someone removed from
/// a group stops counting at once.
///
/// ```
/// use tollgate::approval::{Directory, Groups};
///
/// let groups = Groups::new()
///     .group("release-managers", ["rita", "sam"])?
///     .group("security", ["sam", "ines"])?;
/// assert!(groups.is_member("sam", "security"));
/// assert!(!groups.is_member("rita", "security"));
/// # Ok::<(), tollgate::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate directory",
    label = "this type does not implement `tollgate::approval::Directory`",
    note = "use `tollgate::approval::Groups` for a fixed table, or implement `fn is_member(&self, person: &str, group: &str) -> bool`"
)]
pub trait Directory: Send + Sync {
    /// Whether `person` belongs to `group`.
    fn is_member(&self, person: &str, group: &str) -> bool;

    /// The one name of `person` as this directory knows people: where logins or e-mail
    /// addresses are case-insensitive, fold them (`Dana` → `dana`), so that the author
    /// cannot approve as `Dana` and one person cannot count twice as `ines` and `INES`.
    /// Every comparison of people in a policy (self-approval, the triggerer rule, one vote
    /// per person, the people a rule names) goes through it. By default names are compared
    /// as they are.
    fn canonical(&self, person: &str) -> String {
        person.to_owned()
    }
}

forward_impls! {
    impl Directory {
        fn is_member(&self, person: &str, group: &str) -> bool;
        fn canonical(&self, person: &str) -> String;
    }
}

/// A fixed table of groups: the simplest [`Directory`], and a serde form of one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Groups(BTreeMap<String, BTreeSet<Person>>);

impl Groups {
    /// No groups.
    #[must_use]
    pub fn new() -> Self {
        Groups::default()
    }

    /// Adds `members` to `group` (creating it).
    pub fn group<I, P>(mut self, group: impl Into<String>, members: I) -> Result<Self, IdError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let members = members
            .into_iter()
            .map(Person::new)
            .collect::<Result<BTreeSet<_>, IdError>>()?;
        self.0.entry(group.into()).or_default().extend(members);
        Ok(self)
    }

    /// Removes `person` from `group`; returns whether they were in it.
    pub fn remove(&mut self, group: &str, person: &str) -> bool {
        self.0.get_mut(group).is_some_and(|m| m.remove(person))
    }
}

impl Directory for Groups {
    fn is_member(&self, person: &str, group: &str) -> bool {
        self.0.get(group).is_some_and(|m| m.contains(person))
    }
}

/// A directory without groups: only people named directly in a rule may approve.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGroups;

impl Directory for NoGroups {
    fn is_member(&self, _person: &str, _group: &str) -> bool {
        false
    }
}
