//! Validated name types shared across the crate ([`ReleaseId`], [`EnvironmentName`],
//! [`Person`]): non-empty, at most 256 bytes, no control characters.

use std::borrow::Borrow;
use std::fmt;

use crate::error::{Error, Result};

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
    } else {
        return Ok(value);
    };
    Err(Error::InvalidName {
        what,
        value,
        reason,
    })
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
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
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
    /// A person (or a bot acting as one): an author, a trigger, an approver.
    Person,
    "person"
);

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

    #[test]
    fn serde_validates() {
        let ok: EnvironmentName = serde_json::from_str("\"production\"").unwrap();
        assert_eq!(ok, "production");
        assert!(serde_json::from_str::<EnvironmentName>("\"\"").is_err());
    }
}
