//! [`Revision`]: the source change a release is built from, and who wrote and triggered it.

use serde::{Deserialize, Serialize};

use crate::id::{IdError, Person};

/// The source revision a release is built from: a commit id and its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The commit id (a SHA, a tag, a change number).
    pub id: String,
    /// Who wrote the change; by default they may not approve it.
    pub author: Person,
    /// The commit message's first line, for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who triggered the pipeline for it (merged it, pressed "run"), when known; by default
    /// they may not approve it either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<Person>,
}

impl Revision {
    /// A revision `id` written by `author`.
    ///
    /// ```
    /// use tollgate::record::Revision;
    /// let rev = Revision::new("4f2a9c1", "dana")?.message("Add checkout flow");
    /// assert_eq!(rev.author, "dana");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn new(id: impl Into<String>, author: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err(IdError::Invalid {
                what: "revision id",
                value: id,
                reason: "it may not be empty or blank",
            });
        }
        Ok(Revision {
            id,
            author: Person::new(author)?,
            message: None,
            triggered_by: None,
        })
    }

    /// Sets the message.
    #[must_use]
    pub fn message(mut self, text: impl Into<String>) -> Self {
        self.message = Some(text.into());
        self
    }

    /// Records who triggered the pipeline for this revision.
    ///
    /// ```
    /// use tollgate::id::Person;
    /// use tollgate::record::Revision;
    /// let rev = Revision::new("4f2a9c1", "dana")?.triggered_by(Person::new("merge-bot")?);
    /// assert_eq!(rev.triggered_by.unwrap(), "merge-bot");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn triggered_by(mut self, person: Person) -> Self {
        self.triggered_by = Some(person);
        self
    }
}
