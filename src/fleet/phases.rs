//! [`Lifecycle`]: the ordered phases a release is promoted through (Octopus Deploy's
//! lifecycles), each with its environments in waves, a rule for progressing and who may
//! promote into it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::environment::EnvironmentName;
use crate::id::{IdError, Person};
use crate::spec::{LifecycleSpec, PhaseEntrySpec, PhaseRuleSpec, PhaseSpec};

/// What a phase needs of a release before the next phase opens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule", content = "k")]
pub enum PhaseRule {
    /// The release went live in every environment of the phase.
    All,
    /// The release went live in at least `k` environments of the phase.
    AtLeast(usize),
    /// The phase may be skipped: later phases are open without it.
    Optional,
}

/// Who moves a release into a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "entry", content = "people")]
pub enum PhaseEntry {
    /// Anyone: a person or an automated trigger (continuous deployment into the phase).
    Automatic,
    /// Only one of these people (continuous delivery into the phase).
    People(BTreeSet<Person>),
}

/// One phase of a [`Lifecycle`]: environments deployed in waves (every environment of a wave
/// must have the release live before the next wave takes it), a [`PhaseRule`] and a
/// [`PhaseEntry`].
///
/// ```
/// use tollgate::fleet::{Phase, PhaseRule};
/// let production = Phase::new("production")
///     .wave(["eu-west"])?
///     .wave(["us-east", "ap-south"])?
///     .rule(PhaseRule::All);
/// assert_eq!(production.environments().count(), 3);
/// # Ok::<(), tollgate::id::IdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    name: String,
    waves: Vec<Vec<EnvironmentName>>,
    rule: PhaseRule,
    entry: PhaseEntry,
}

impl Phase {
    /// A phase called `name`, with no environment yet, rule [`PhaseRule::All`] and entry
    /// [`PhaseEntry::Automatic`].
    pub fn new(name: impl Into<String>) -> Self {
        Phase {
            name: name.into(),
            waves: Vec::new(),
            rule: PhaseRule::All,
            entry: PhaseEntry::Automatic,
        }
    }

    /// Adds one environment as a wave of its own.
    pub fn environment(self, name: impl Into<String>) -> Result<Self, IdError> {
        self.wave([name])
    }

    /// Adds a wave: environments that take the release once every earlier wave of the phase
    /// has it live.
    pub fn wave<I>(mut self, names: I) -> Result<Self, IdError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let wave = names
            .into_iter()
            .map(EnvironmentName::new)
            .collect::<Result<Vec<_>, _>>()?;
        self.waves.push(wave);
        Ok(self)
    }

    /// Sets the rule for progressing.
    #[must_use]
    pub fn rule(mut self, rule: PhaseRule) -> Self {
        self.rule = rule;
        self
    }

    /// Only these people may promote into the phase.
    pub fn entered_by<I>(mut self, people: I) -> Result<Self, IdError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.entry = PhaseEntry::People(
            people
                .into_iter()
                .map(Person::new)
                .collect::<Result<_, _>>()?,
        );
        Ok(self)
    }

    /// The phase's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its environments, wave after wave.
    pub fn environments(&self) -> impl Iterator<Item = &EnvironmentName> {
        self.waves.iter().flatten()
    }

    /// Its waves.
    #[must_use]
    pub fn waves(&self) -> &[Vec<EnvironmentName>] {
        &self.waves
    }

    /// Its rule.
    #[must_use]
    pub fn progress_rule(&self) -> PhaseRule {
        self.rule
    }

    /// Who may promote into it.
    #[must_use]
    pub fn entry(&self) -> &PhaseEntry {
        &self.entry
    }

    /// Whether `live_in` environments of the phase (counted once each) satisfy its rule.
    #[must_use]
    pub fn passed_with(&self, live_in: usize) -> bool {
        match self.rule {
            PhaseRule::All => live_in >= self.environments().count(),
            PhaseRule::AtLeast(k) => live_in >= k,
            PhaseRule::Optional => true,
        }
    }
}

/// The ordered phases of a fleet: every phase but the last is pre-production; the last is
/// production.
///
/// How phases map onto a release's typed states: a release enters the first phase once it is
/// `Tested` (CI is done); each later phase opens once every earlier phase's rule is met
/// (pre-production phases are where `Staged` is earned: passing them all is what staging
/// means in a fleet); the production phase opens only to a release that is `Approved` or
/// `Deployed`, so the mode type still decides production (a person's approval in
/// `Delivery`, the automated gates in `Deployment`).
///
/// ```
/// use tollgate::fleet::{Lifecycle, Phase, PhaseRule};
/// let lifecycle = Lifecycle::new([
///     Phase::new("dev").environment("dev")?,
///     Phase::new("test").wave(["test-a", "test-b"])?.rule(PhaseRule::AtLeast(1)),
///     Phase::new("production").wave(["eu"])?.wave(["us"])?.entered_by(["rita"])?,
/// ])?;
/// assert_eq!(lifecycle.production().name(), "production");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    phases: Vec<Phase>,
}

/// A lifecycle that cannot be: each variant names the phase or environment at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// No phase at all.
    #[error("a lifecycle needs at least one phase (the last one is production)")]
    Empty,
    /// A phase without environments.
    #[error("phase `{phase}` has no environment")]
    EmptyPhase {
        /// The phase.
        phase: String,
    },
    /// A wave without environments.
    #[error("phase `{phase}` has an empty wave")]
    EmptyWave {
        /// The phase.
        phase: String,
    },
    /// Two phases with one name.
    #[error("two phases are called `{phase}`")]
    DuplicatePhase {
        /// The name.
        phase: String,
    },
    /// An environment in two places.
    #[error("environment `{environment}` appears twice (in phase `{phase}`)")]
    DuplicateEnvironment {
        /// The environment.
        environment: EnvironmentName,
        /// The phase it appears in the second time.
        phase: String,
    },
    /// A rule asking for more environments than the phase has, or for none.
    #[error("phase `{phase}` asks for at least {k} of its {environments} environments")]
    ImpossibleRule {
        /// The phase.
        phase: String,
        /// The count asked for.
        k: usize,
        /// The count it has.
        environments: usize,
    },
    /// The production phase declared optional.
    #[error("the production phase `{phase}` cannot be optional")]
    OptionalProduction {
        /// The phase.
        phase: String,
    },
}

impl Lifecycle {
    /// A lifecycle of `phases`, in order; the last is production. Every check happens here.
    pub fn new(phases: impl IntoIterator<Item = Phase>) -> Result<Self, LifecycleError> {
        let phases: Vec<Phase> = phases.into_iter().collect();
        let Some(last) = phases.last() else {
            return Err(LifecycleError::Empty);
        };
        if last.rule == PhaseRule::Optional {
            return Err(LifecycleError::OptionalProduction {
                phase: last.name.clone(),
            });
        }
        let mut names = BTreeSet::new();
        let mut environments = BTreeSet::new();
        for phase in &phases {
            if !names.insert(phase.name.as_str()) {
                return Err(LifecycleError::DuplicatePhase {
                    phase: phase.name.clone(),
                });
            }
            if phase.waves.is_empty() {
                return Err(LifecycleError::EmptyPhase {
                    phase: phase.name.clone(),
                });
            }
            if phase.waves.iter().any(Vec::is_empty) {
                return Err(LifecycleError::EmptyWave {
                    phase: phase.name.clone(),
                });
            }
            for environment in phase.environments() {
                if !environments.insert(environment) {
                    return Err(LifecycleError::DuplicateEnvironment {
                        environment: environment.clone(),
                        phase: phase.name.clone(),
                    });
                }
            }
            let count = phase.environments().count();
            if let PhaseRule::AtLeast(k) = phase.rule {
                if k == 0 || k > count {
                    return Err(LifecycleError::ImpossibleRule {
                        phase: phase.name.clone(),
                        k,
                        environments: count,
                    });
                }
            }
        }
        Ok(Lifecycle { phases })
    }

    /// The phases, in order.
    #[must_use]
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// The production phase (the last).
    ///
    /// # Panics
    ///
    /// Never: [`Lifecycle::new`] refuses a lifecycle without phases.
    #[must_use]
    pub fn production(&self) -> &Phase {
        self.phases
            .last()
            .expect("a lifecycle has at least one phase (checked by `new`)")
    }

    /// Every environment, phase after phase, wave after wave.
    pub fn environments(&self) -> impl Iterator<Item = &EnvironmentName> {
        self.phases.iter().flat_map(Phase::environments)
    }
}

impl Lifecycle {
    /// The lifecycle a spec describes, through every check of [`Lifecycle::new`]; the error
    /// names the phase or environment at fault.
    ///
    /// ```
    /// use tollgate::fleet::{Lifecycle, LifecycleError};
    /// use tollgate::spec::PipelineSpec;
    /// let spec = PipelineSpec::from_json_str(r#"{
    ///     "name": "shop", "mode": "deployment", "stages": [],
    ///     "lifecycle": { "phases": [
    ///         { "name": "dev", "waves": [["dev"]] },
    ///         { "name": "production", "waves": [["eu"], ["us", "dev"]] }
    ///     ] }
    /// }"#, "shop.json")?;
    /// let error = Lifecycle::from_spec(spec.lifecycle.as_ref().unwrap()).unwrap_err();
    /// assert!(matches!(
    ///     error,
    ///     LifecycleError::DuplicateEnvironment { ref environment, ref phase }
    ///         if environment.as_str() == "dev" && phase == "production"
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_spec(spec: &LifecycleSpec) -> Result<Self, LifecycleError> {
        Lifecycle::new(spec.phases.iter().map(|phase| Phase {
            name: phase.name.clone(),
            waves: phase.waves.clone(),
            rule: match phase.rule {
                PhaseRuleSpec::All => PhaseRule::All,
                PhaseRuleSpec::AtLeast(k) => PhaseRule::AtLeast(k),
                PhaseRuleSpec::Optional => PhaseRule::Optional,
            },
            entry: match &phase.entry {
                PhaseEntrySpec::Automatic => PhaseEntry::Automatic,
                PhaseEntrySpec::People(people) => PhaseEntry::People(people.clone()),
            },
        }))
    }

    /// The spec of this lifecycle: [`Lifecycle::from_spec`] of it gives this lifecycle back.
    #[must_use]
    pub fn to_spec(&self) -> LifecycleSpec {
        LifecycleSpec {
            phases: self
                .phases
                .iter()
                .map(|phase| PhaseSpec {
                    name: phase.name.clone(),
                    waves: phase.waves.clone(),
                    rule: match phase.rule {
                        PhaseRule::All => PhaseRuleSpec::All,
                        PhaseRule::AtLeast(k) => PhaseRuleSpec::AtLeast(k),
                        PhaseRule::Optional => PhaseRuleSpec::Optional,
                    },
                    entry: match &phase.entry {
                        PhaseEntry::Automatic => PhaseEntrySpec::Automatic,
                        PhaseEntry::People(people) => PhaseEntrySpec::People(people.clone()),
                    },
                })
                .collect(),
        }
    }
}

impl TryFrom<&LifecycleSpec> for Lifecycle {
    type Error = LifecycleError;

    /// [`Lifecycle::from_spec`].
    fn try_from(spec: &LifecycleSpec) -> Result<Self, LifecycleError> {
        Lifecycle::from_spec(spec)
    }
}

impl<'de> Deserialize<'de> for Lifecycle {
    /// A lifecycle read from plain data goes through every check of [`Lifecycle::new`].
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Plain {
            phases: Vec<Phase>,
        }
        let plain = Plain::deserialize(d)?;
        Lifecycle::new(plain.phases).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_lifecycles_are_refused_by_name() {
        assert_eq!(Lifecycle::new([]), Err(LifecycleError::Empty));
        let dev = || Phase::new("dev").environment("dev").unwrap();
        assert!(matches!(
            Lifecycle::new([dev(), dev()]),
            Err(LifecycleError::DuplicatePhase { phase }) if phase == "dev"
        ));
        assert!(matches!(
            Lifecycle::new([dev(), Phase::new("prod").environment("dev").unwrap()]),
            Err(LifecycleError::DuplicateEnvironment { phase, .. }) if phase == "prod"
        ));
        assert!(matches!(
            Lifecycle::new([Phase::new("prod")]),
            Err(LifecycleError::EmptyPhase { .. })
        ));
        assert!(matches!(
            Lifecycle::new([dev().rule(PhaseRule::AtLeast(2))]),
            Err(LifecycleError::ImpossibleRule {
                k: 2,
                environments: 1,
                ..
            })
        ));
        assert!(matches!(
            Lifecycle::new([dev().rule(PhaseRule::Optional)]),
            Err(LifecycleError::OptionalProduction { .. })
        ));
        let json = r#"{"phases":[{"name":"p","waves":[[]],"rule":{"rule":"all"},"entry":{"entry":"automatic"}}]}"#;
        let error = serde_json::from_str::<Lifecycle>(json).unwrap_err();
        assert!(error.to_string().contains("empty wave"), "{error}");
    }

    #[test]
    fn rules_count_environments() {
        let phase = Phase::new("t").wave(["a", "b", "c"]).unwrap();
        assert!(!phase.passed_with(2));
        assert!(phase.passed_with(3));
        let phase = phase.rule(PhaseRule::AtLeast(2));
        assert!(!phase.passed_with(1));
        assert!(phase.passed_with(2));
        assert!(phase.rule(PhaseRule::Optional).passed_with(0));
    }
}
