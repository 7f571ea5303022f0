//! [`LifecycleSpec`]: a fleet's lifecycle as data, the spec form of
//! [`Lifecycle`](crate::fleet::Lifecycle) (phases, each with its environments in waves, a rule
//! and who enters it). The fleet builds one with
//! [`Lifecycle::from_spec`](crate::fleet::Lifecycle::from_spec), which runs every check of
//! [`Lifecycle::new`](crate::fleet::Lifecycle::new).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::environment::EnvironmentName;
use crate::id::Person;

/// A fleet's lifecycle: its phases in order, the last one production.
///
/// ```toml
/// [[lifecycle.phases]]
/// name = "test"
/// waves = [["test-a", "test-b"]]
/// rule = { at_least = 1 }
///
/// [[lifecycle.phases]]
/// name = "production"
/// waves = [["eu-west"], ["us-east"]]
/// entry = { people = ["rita"] }
/// ```
///
/// A pipeline built from a spec keeps its lifecycle as written (it runs no fleet itself, and
/// [`Pipeline::to_spec`](crate::pipeline::Pipeline::to_spec) gives it back); a fleet opens on
/// it in two lines: `let lifecycle = Lifecycle::from_spec(&lifecycle_spec)?;` then
/// `Fleet::open(pipeline, lifecycle, options).await?`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LifecycleSpec {
    /// The phases, in order; the last is production.
    pub phases: Vec<PhaseSpec>,
}

/// One phase: its environments in waves, its rule for progressing and who enters it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// The phase's name, unique in the lifecycle.
    pub name: String,
    /// Its environments, wave after wave: every environment of a wave has the release live
    /// before the next wave takes it.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<Vec<String>>"))]
    pub waves: Vec<Vec<EnvironmentName>>,
    /// What it needs before the next phase opens (default `"all"`).
    #[serde(default, skip_serializing_if = "PhaseRuleSpec::is_all")]
    pub rule: PhaseRuleSpec,
    /// Who moves a release into it (default `"automatic"`).
    #[serde(default, skip_serializing_if = "PhaseEntrySpec::is_automatic")]
    pub entry: PhaseEntrySpec,
}

/// A phase's rule: `"all"`, `{ at_least = k }` or `"optional"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PhaseRuleSpec {
    /// The release went live in every environment of the phase.
    #[default]
    All,
    /// The release went live in at least this many environments of the phase.
    AtLeast(usize),
    /// The phase may be skipped (never the production phase).
    Optional,
}

impl PhaseRuleSpec {
    /// Whether it is the default, `all`.
    #[must_use]
    pub fn is_all(&self) -> bool {
        *self == PhaseRuleSpec::All
    }
}

/// Who enters a phase: `"automatic"` (anyone, or an automated trigger) or
/// `{ people = ["rita", "sam"] }` (only one of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PhaseEntrySpec {
    /// Anyone: continuous deployment into the phase.
    #[default]
    Automatic,
    /// Only one of these people: continuous delivery into the phase.
    People(#[cfg_attr(feature = "schema", schemars(with = "BTreeSet<String>"))] BTreeSet<Person>),
}

impl PhaseEntrySpec {
    /// Whether it is the default, `automatic`.
    #[must_use]
    pub fn is_automatic(&self) -> bool {
        *self == PhaseEntrySpec::Automatic
    }
}
