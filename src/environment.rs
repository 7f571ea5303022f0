//! Environments as first-class values: where a release runs (`staging`, `production`).

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::id::EnvironmentName;

use crate::id::IdError;

/// A place a release can be deployed to.
///
/// Environments are identical by construction (infrastructure as code); only their name and
/// configuration differ, never the artifact deployed to them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    name: EnvironmentName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

impl Environment {
    /// An environment called `name`.
    ///
    /// ```
    /// use tollgate::environment::Environment;
    /// let prod = Environment::new("production")?;
    /// assert_eq!(prod.name(), "production");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        Ok(Environment {
            name: EnvironmentName::new(name)?,
            description: None,
        })
    }

    /// Adds a description for reports.
    #[must_use]
    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The environment's name.
    #[must_use]
    pub fn name(&self) -> &EnvironmentName {
        &self.name
    }

    /// The description, if any.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
}

impl From<EnvironmentName> for Environment {
    fn from(name: EnvironmentName) -> Self {
        Environment {
            name,
            description: None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.name, f)
    }
}
