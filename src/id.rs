//! Every validated name of the crate, at the ground floor: [`ReleaseId`], [`PipelineName`],
//! [`EnvironmentName`] and [`Person`] (non-empty, at most 256 bytes, no control characters),
//! and [`StageId`] (a stricter alphabet, safe in diagrams and command lines), with the one
//! error a bad name gives, [`IdError`].

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A name that is empty, too long or holds characters that are not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The name is malformed.
    #[error("invalid {what} `{}`: {reason}", quoted(.value))]
    Invalid {
        /// What the name is of (`person`, `stage id`, `release id`, …).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

type Result<T, E = IdError> = std::result::Result<T, E>;

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Checks a name: non-empty, not blank, at most [`MAX_NAME_LEN`] bytes, no control characters.
pub(crate) fn check(what: &'static str, value: String) -> Result<String> {
    let reason = if value.trim().is_empty() {
        "it may not be empty or blank"
    } else if value.len() > MAX_NAME_LEN {
        "it may be at most 256 bytes long"
    } else if value.chars().any(char::is_control) {
        "it may not contain control characters"
    } else if value.chars().any(is_invisible) {
        "it may not contain bidirectional or zero-width formatting characters"
    } else {
        return Ok(value);
    };
    Err(IdError::Invalid {
        what,
        value,
        reason,
    })
}

/// Whether `c` reorders or hides text without being seen: the bidirectional embeddings,
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069), marks (U+200E, U+200F, U+061C),
/// and zero-width characters (U+200B–U+200D, U+2060, U+FEFF). A name holding one can look
/// like another name (`admin` reversed, `ri` + U+200B + `ta`).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200B}'..='\u{200F}'
            | '\u{061C}'
            | '\u{2060}'
            | '\u{FEFF}'
    )
}

/// The longest part of an input an error message quotes, in characters.
pub const MAX_QUOTED: usize = 160;

/// `value` as an error message quotes it: at most [`MAX_QUOTED`] characters (saying how
/// many bytes were cut), control and invisible characters escaped, so that a message is
/// short, one line, and shows what it names.
#[must_use]
pub fn quoted(value: &str) -> String {
    let mut out = String::new();
    let mut cut_at = value.len();
    for (shown, (at, c)) in value.char_indices().enumerate() {
        if shown == MAX_QUOTED {
            cut_at = at;
            break;
        }
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if cut_at < value.len() {
        use std::fmt::Write as _;
        let _ = write!(out, "… ({} more bytes)", value.len() - cut_at);
    }
    out
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Validates `value` as a ", $what, ".")]
            pub fn new(value: impl Into<String>) -> Result<Self> {
                check($what, value.into()).map($name)
            }

            /// The name as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// The id of a release (`v1.4.2`, `shop#1289`), unique within its pipeline.
    ReleaseId,
    "release id"
);

name_type!(
    /// The name of an environment (`staging`, `production`, `eu-west/prod`).
    EnvironmentName,
    "environment name"
);

name_type!(
    /// The name of a pipeline (`shop`, `payments/api`): what releases, approvals and ballots are
    /// bound to.
    PipelineName,
    "pipeline name"
);

name_type!(
    /// A person (or a bot acting as one): an author, a trigger, an approver.
    Person,
    "person"
);

/// The longest stage id accepted, in bytes.
pub const MAX_STAGE_ID_LEN: usize = 128;

/// The id of a stage: non-empty, at most [`MAX_STAGE_ID_LEN`] bytes of ASCII letters, digits
/// and `-`, `_`, `.`, `/`, `:`, and the space, `(`, `)`, `=` and `,` of matrix ids
/// (`test (os=linux, rust=1.85)`), with no space at either end and never two in a row.
///
/// The restricted alphabet keeps ids safe to print in logs and in quoted Mermaid and DOT
/// labels, with no quote, backslash or control character to escape.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
// Shared, not owned: reports, events and inputs all hold ids, and a copy is then a
// reference-count increment instead of an allocation.
pub struct StageId(Arc<str>);

impl StageId {
    /// Validates `id` and wraps it.
    ///
    /// ```
    /// use tollgate::id::StageId;
    /// assert!(StageId::new("unit-tests").is_ok());
    /// assert!(StageId::new("test (os=linux, rust=1.85)").is_ok());
    /// assert!(StageId::new("deploy|prod").is_err());
    /// assert!(StageId::new(" padded").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        match check_id(&id) {
            None => Ok(StageId(id.into())),
            Some(reason) => Err(IdError::Invalid {
                what: "stage id",
                value: id,
                reason,
            }),
        }
    }

    /// Wraps `id` without checking it; [`StageGraphBuilder::build`](crate::graph::StageGraphBuilder::build) checks it later.
    pub(crate) fn unchecked(id: impl Into<String>) -> Self {
        StageId(id.into().into())
    }

    /// Why this id is invalid, if it is.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        check_id(&self.0)
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_id(id: &str) -> Option<&'static str> {
    let bytes = id.as_bytes();
    if bytes.is_empty() {
        return Some("a stage id may not be empty");
    }
    if bytes.len() > MAX_STAGE_ID_LEN {
        return Some("a stage id may be at most 128 bytes long");
    }
    // One pass over the bytes, a table lookup each: every graph build checks every id, and a
    // chain of `matches!` and three more scans for the spaces cost a tenth of a build. The
    // alphabet is checked over the whole id before the spaces, as the messages are ordered.
    let mut alphabet = true;
    let mut double_space = false;
    let mut previous = 0u8;
    for &b in bytes {
        alphabet &= STAGE_ID_BYTE[b as usize];
        double_space |= b == b' ' && previous == b' ';
        previous = b;
    }
    if !alphabet {
        Some("a stage id may contain only ASCII letters, digits, spaces and - _ . / : ( ) = ,")
    } else if bytes[0] == b' ' || previous == b' ' || double_space {
        Some("a stage id may not start or end with a space, nor have two in a row")
    } else {
        None
    }
}

/// Which bytes a stage id may hold (see [`StageId`]).
static STAGE_ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_' | b'.' | b'/' | b':' | b' ' | b'(' | b')' | b'=' | b','
            );
        b += 1;
    }
    table
};

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for StageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StageId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for StageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        StageId::new(s)
    }
}

impl TryFrom<String> for StageId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        StageId::new(s)
    }
}

impl From<StageId> for String {
    fn from(id: StageId) -> String {
        id.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for StageId {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for StageId {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_blank_long_and_control() {
        assert!(Person::new("dana").is_ok());
        for bad in ["", "   ", "a\nb"] {
            let err = Person::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid person"), "{err}");
        }
        assert!(ReleaseId::new("x".repeat(257)).is_err());
    }

    /// The stage id rules as first written, one rule at a time: the one-pass check must
    /// give the same verdict and the same message for every id.
    fn check_id_by_rule(id: &str) -> Option<&'static str> {
        if id.is_empty() {
            Some("a stage id may not be empty")
        } else if id.len() > MAX_STAGE_ID_LEN {
            Some("a stage id may be at most 128 bytes long")
        } else if !id.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'/' | b':' | b' ' | b'(' | b')' | b'=' | b','
                )
        }) {
            Some("a stage id may contain only ASCII letters, digits, spaces and - _ . / : ( ) = ,")
        } else if id.starts_with(' ') || id.ends_with(' ') || id.contains("  ") {
            Some("a stage id may not start or end with a space, nor have two in a row")
        } else {
            None
        }
    }

    proptest::proptest! {
        #[test]
        fn stage_ids_are_checked_as_the_rules_say(id in "[a-c0-9 ()=,|é\\n-]{0,12}|[a-z ]{120,135}") {
            proptest::prop_assert_eq!(check_id(&id), check_id_by_rule(&id));
        }
    }

    #[test]
    fn stage_id_edge_cases_match_the_rules() {
        for id in [
            "", " ", "a", " a", "a ", "a  b", "a b", "a|b", "  ", "é", "a\tb",
        ] {
            assert_eq!(check_id(id), check_id_by_rule(id), "{id:?}");
        }
        for len in [127, 128, 129] {
            let id = "a".repeat(len);
            assert_eq!(check_id(&id), check_id_by_rule(&id));
        }
    }

    #[test]
    fn serde_validates() {
        let ok: EnvironmentName = serde_json::from_str("\"production\"").unwrap();
        assert_eq!(ok, "production");
        assert!(serde_json::from_str::<EnvironmentName>("\"\"").is_err());
    }
}
