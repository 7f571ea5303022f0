//! A whole pipeline as data: [`PipelineSpec`], read from TOML or JSON with errors that say
//! where (file, line, column, the field's path, and "did you mean" for a misspelt key), and
//! built into a typed pipeline by
//! [`Pipeline::<Delivery>::from_spec`](crate::pipeline::Pipeline::from_spec) (or the
//! deployment twin).
//!
//! A spec holds the stages (steps, dependencies, retries, timeouts, groups, finally stages,
//! conditions, `continue_on_error`, matrices, concurrency groups, and the command each runs
//! through the [process executor](crate::executor::ProcessExecutor), which writes an output
//! with a line `::output key=value`, or `::output key<<END`, the value's lines, then `END`;
//! a dependent reads it as `TOLLGATE_INPUT_<STAGE>_<KEY>`),
//! the gates by name with their parameters (built by a [`GateRegistry`] the host fills; the
//! built-in gates are there by default), the approval policies, the staging and production
//! environments, and the engine's settings. The mode is named in the spec and is still a
//! type: building a `deployment` spec as a `Pipeline<Delivery>` is a typed error
//! ([`SpecError::ModeMismatch`]), never a delivery pipeline without a person.
//!
//! A spec is untrusted plain data: every field is checked again by the same builders that
//! check a pipeline written in code, and unknown keys are refused at every level.
//! Durations are written as people write them (`"10m"`, `"1h 30m"`, `"500ms"`) or as
//! milliseconds.
//!
//! ```
//! use tollgate::prelude::*;
//! use tollgate::spec::{GateRegistry, PipelineSpec};
//!
//! let spec = PipelineSpec::from_json_str(r#"{
//!     "name": "shop",
//!     "mode": "delivery",
//!     "stages": [
//!         { "id": "compile", "step": "build", "run": "make dist" },
//!         { "id": "unit", "step": "test", "after": ["compile"], "run": "true", "timeout": "10m" },
//!         { "id": "staging", "step": "stage", "run": "true" },
//!         { "id": "production", "step": "deploy", "run": "true",
//!           "retry": { "max_attempts": 3, "backoff": { "kind": "fixed", "delay": "30s" } } }
//!     ],
//!     "gates": [ { "kind": "soak", "on": "approve", "params": { "duration": "1h" } } ],
//!     "approvals": { "rules": [ { "name": "release-managers", "people": ["rita", "sam"] } ] }
//! }"#, "shop.json")?;
//! let pipeline = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new())?;
//! assert_eq!(pipeline.to_spec(), spec); // a pipeline says what it was built from
//!
//! // The mode is a type: this spec does not make a deployment pipeline.
//! let wrong = Pipeline::<Deployment>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
//! assert_eq!(wrong.to_string(), "the spec is for a delivery pipeline, not a deployment one");
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the spec's types |
//! | `lifecycle.rs` | [`LifecycleSpec`]: a fleet's phases, built by the fleet |
//! | `parse.rs` | reading TOML and JSON, [`SpecError`] with its [`Location`] |
//! | `registry.rs` | [`GateRegistry`], [`GateParams`], the built-in gates |
//! | `schema.rs` | the spec's JSON Schema (feature `schema`) |

mod lifecycle;
mod parse;
mod registry;
#[cfg(feature = "schema")]
mod schema;
#[cfg(feature = "schema")]
use schema::{
    ConcurrencySchema, ConditionSchema, DurationSchema, EnvironmentSchema, FailureSchema,
    MatrixSchema, ModeSchema, MoveSchema, RetrySchema, StepSchema,
};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalError, ApprovalPolicy, Approver, Rule};
use crate::engine::{Engine, EngineBuilder, FailurePolicy};
use crate::environment::{Environment, EnvironmentName};
use crate::graph::{Concurrency, Condition, Matrix, RetryPolicy, StageId, StageSpec, Step};
use crate::id::{Person, PipelineName};
use crate::lifecycle::{ModeKind, Move};

pub use lifecycle::{LifecycleSpec, PhaseEntrySpec, PhaseRuleSpec, PhaseSpec};
pub use parse::{Location, SpecError};
pub use registry::{GateFactory, GateParams, GateRegistry, ParamError};

/// A whole pipeline as data. See the [module docs](self) for an example.
///
/// Its serde form is what a spec file holds; every key not listed here is refused, at every
/// level. Fields left out take the defaults shown, and a spec equal to what
/// [`Pipeline::to_spec`](crate::pipeline::Pipeline::to_spec) gives back leaves them out too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub name: PipelineName,
    /// `delivery` (a person approves each production release) or `deployment` (the
    /// automated gates alone do). The pipeline type it is built as must agree.
    #[cfg_attr(feature = "schema", schemars(with = "ModeSchema"))]
    pub mode: ModeKind,
    /// The stages, in the order they are added to the graph.
    pub stages: Vec<StageDef>,
    /// Gates on moves or on environments, built by name from a [`GateRegistry`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateSpec>,
    /// Who may approve (delivery only, where it is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalSpec>,
    /// The staging environment (default `staging`).
    #[serde(
        default = "default_staging",
        skip_serializing_if = "is_default_staging"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "EnvironmentSchema"))]
    pub staging: Environment,
    /// The production environment (default `production`).
    #[serde(
        default = "default_production",
        skip_serializing_if = "is_default_production"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "EnvironmentSchema"))]
    pub production: Environment,
    /// The engine's settings.
    #[serde(default, skip_serializing_if = "EngineSpec::is_default")]
    pub engine: EngineSpec,
    /// How long a claimed move keeps other copies of a release out (default `1h`; see
    /// [`PipelineBuilder::claim_lease`](crate::pipeline::PipelineBuilder::claim_lease)).
    #[serde(
        default = "default_claim_lease",
        skip_serializing_if = "is_default_claim_lease",
        with = "crate::time::human"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "DurationSchema"))]
    pub claim_lease: Duration,
    /// The lifecycle a fleet promotes the pipeline's releases through (see
    /// [`LifecycleSpec`]). The pipeline itself keeps it as written and runs no fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSpec>,
}

/// One stage of a spec: what the graph knows of it ([`StageSpec`]) and the command it runs.
///
/// The fields are the graph's, listed again rather than flattened in, because serde's
/// `flatten` turns `deny_unknown_fields` off (a misspelt `aftr` would be dropped in silence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StageDef {
    /// The stage's unique id.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: StageId,
    /// The lifecycle step it belongs to: `build`, `test`, `stage` or `deploy`.
    #[cfg_attr(feature = "schema", schemars(with = "StepSchema"))]
    pub step: Step,
    /// The stages it runs after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub after: Vec<StageId>,
    /// A description for reports and diagrams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How long it is expected to take (critical-path ordering and plans).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::opt_human"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Option<DurationSchema>"))]
    pub estimate: Option<Duration>,
    /// How often to try and how long to wait in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<RetrySchema>"))]
    pub retry: Option<RetryPolicy>,
    /// The longest one attempt may run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::opt_human"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Option<DurationSchema>"))]
    pub attempt_timeout: Option<Duration>,
    /// The longest the stage may take over all its attempts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::opt_human"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Option<DurationSchema>"))]
    pub timeout: Option<Duration>,
    /// The concurrency group it counts against (see [`EngineSpec::group_limits`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Whether it is a finally stage (runs after the rest of its step, whatever happened).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    /// When it runs, decided once its dependencies have settled: `"on_success"` (the
    /// default), `"on_failure"`, `"always"`, or `{ dependency_failed = "<stage>" }` naming one
    /// of its `after` stages (see [`Condition`]); after a matrix stage, name one of its
    /// combinations (`{ dependency_failed = "unit (os=macos)" }`), since its base id stands
    /// for them all. A finally stage takes none.
    #[serde(default, skip_serializing_if = "Condition::is_on_success")]
    #[cfg_attr(feature = "schema", schemars(with = "ConditionSchema"))]
    pub when: Condition,
    /// Whether its failure (after its retries) leaves the step going: its dependents see a
    /// success and its report keeps the failure (GitHub's `continue-on-error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    /// The axes it runs over: one stage per combination, with ids like
    /// `build-wheels (target=x86_64-linux)`, and `after = ["<id>"]` waits for all of them
    /// (see [`Matrix`]). Written `{ axes = { target = ["…", "…"] }, exclude = [{ … }],
    /// include = [{ … }] }`; the axes are kept in the order written, which orders the ids. The
    /// spec keeps the stage unexpanded.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "matrix_form")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<MatrixSchema>"))]
    pub matrix: Option<Matrix>,
    /// The concurrency group it holds while it runs, across steps and releases:
    /// `{ group = "production", cancel_in_progress = true }` (see [`Concurrency`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<ConcurrencySchema>"))]
    pub concurrency: Option<Concurrency>,
    /// The command it runs (feature `process`). A stage without one runs on the executor the
    /// host sets with [`default_executor`](crate::pipeline::PipelineBuilder::default_executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<CommandSpec>,
}

impl StageDef {
    /// A stage of `step` with id `id` and nothing else set (the id is checked when the
    /// pipeline is built).
    pub fn new(id: impl Into<String>, step: Step) -> Self {
        StageDef::from_stage_spec(&StageSpec::new(id, step), None)
    }

    /// What the stage graph keeps of this stage.
    #[must_use]
    pub fn to_stage_spec(&self) -> StageSpec {
        StageSpec {
            id: self.id.clone(),
            step: self.step,
            after: self.after.clone(),
            description: self.description.clone(),
            estimate: self.estimate,
            retry: self.retry,
            attempt_timeout: self.attempt_timeout,
            timeout: self.timeout,
            group: self.group.clone(),
            finally: self.finally,
            when: self.when.clone(),
            continue_on_error: self.continue_on_error,
            concurrency: self.concurrency.clone(),
            // A matrix stage's combination values are set as the matrix expands it.
            ..StageSpec::new(self.id.as_str(), self.step)
        }
    }

    /// A stage of a spec from a graph's stage and its command, with no matrix (set
    /// [`matrix`](Self::matrix) for a stage the graph expands). A stage already expanded from
    /// a matrix keeps its combination's id, and its values are not said again.
    #[must_use]
    pub fn from_stage_spec(spec: &StageSpec, run: Option<CommandSpec>) -> Self {
        StageDef {
            id: spec.id.clone(),
            step: spec.step,
            after: spec.after.clone(),
            description: spec.description.clone(),
            estimate: spec.estimate,
            retry: spec.retry,
            attempt_timeout: spec.attempt_timeout,
            timeout: spec.timeout,
            group: spec.group.clone(),
            finally: spec.finally,
            when: spec.when.clone(),
            continue_on_error: spec.continue_on_error,
            matrix: None,
            concurrency: spec.concurrency.clone(),
            run,
        }
    }
}

/// The program a stage runs: a shell script (`run = "make test"`, short for
/// `run = { shell = "make test" }`) or a program with arguments
/// (`run = { program = "cargo", args = ["test"] }`), with the environment, directory and
/// exit codes it runs with. See [`ProcessExecutor`](crate::executor::ProcessExecutor) for
/// what a program is told and how it talks back (`::output`, `::artifact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandSpec {
    /// A script run with `sh -c`. Exactly one of `shell` and `program` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// A program, looked up in `PATH` unless it contains a `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Its arguments (after `shell`, they become `$0`, `$1`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Variables set in its environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The directory it runs in (default: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// The exit codes that count as success (default `[0]`).
    #[serde(
        default = "default_success_codes",
        skip_serializing_if = "is_default_success"
    )]
    pub success_codes: Vec<i32>,
}

impl CommandSpec {
    /// A shell script.
    pub fn shell(script: impl Into<String>) -> Self {
        CommandSpec {
            shell: Some(script.into()),
            program: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            dir: None,
            success_codes: default_success_codes(),
        }
    }

    /// A program with no arguments yet.
    pub fn program(program: impl Into<String>) -> Self {
        CommandSpec {
            shell: None,
            program: Some(program.into()),
            ..CommandSpec::shell("")
        }
    }
}

/// The map form of [`CommandSpec`], which its string shorthand stands for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandFields {
    #[serde(default)]
    shell: Option<String>,
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default = "default_success_codes")]
    success_codes: Vec<i32>,
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a shell script, or a table with `shell` or `program`")
            }
            fn visit_str<E: serde::de::Error>(self, script: &str) -> Result<CommandSpec, E> {
                Ok(CommandSpec::shell(script))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CommandSpec, A::Error> {
                let f =
                    CommandFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if f.shell.is_some() == f.program.is_some() {
                    return Err(serde::de::Error::custom(
                        "a command has exactly one of `shell` (a script) and `program`",
                    ));
                }
                Ok(CommandSpec {
                    shell: f.shell,
                    program: f.program,
                    args: f.args,
                    env: f.env,
                    dir: f.dir,
                    success_codes: f.success_codes,
                })
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A gate of a spec: which gate (`kind`, a name in the [`GateRegistry`]), with which
/// parameters, guarding which move (`on`) or every deployment into which environment
/// (`environment`); exactly one of the two.
///
/// ```toml
/// [[gates]]
/// kind = "change_windows"
/// environment = "production"
/// params = { offset = "+01:00", deny_weekly = [{ name = "weekend", from = "Fri 16:00", to = "Mon 08:00" }] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// The gate's name in the registry (`soak`, `change_windows`, `test_results`, or one the
    /// host registered).
    pub kind: String,
    /// The name the gate reports under (in records and explanations), if not its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The move it guards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<MoveSchema>"))]
    pub on: Option<Move>,
    /// The environment whose every deployment it guards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub environment: Option<EnvironmentName>,
    /// The gate's parameters, read by its factory.
    #[serde(default, skip_serializing_if = "GateParams::is_empty")]
    pub params: GateParams,
}

/// Who may approve: rules of people and groups (`need` distinct people each), how long an
/// approval counts, the separation-of-duties relaxations, and policies of their own for some
/// environments. See [`ApprovalPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// The rules; every one must be met.
    pub rules: Vec<RuleSpec>,
    /// How long an approval counts (default `24h`).
    #[serde(
        default = "default_validity",
        skip_serializing_if = "is_default_validity",
        with = "crate::time::human"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "DurationSchema"))]
    pub valid_for: Duration,
    /// Whether the release's author may approve it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
    /// Whether whoever triggered the pipeline may approve it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_triggerer_approval: bool,
    /// Policies of their own for approvals aimed at these environments (only at the top
    /// level: an environment's policy has no environments).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, ApprovalSpec>"))]
    pub environments: BTreeMap<EnvironmentName, ApprovalSpec>,
}

/// One approval rule: `need` distinct people among `people` and the members of `groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// How progress and errors name the rule.
    pub name: String,
    /// People who may approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub people: Vec<Person>,
    /// Groups (resolved by the pipeline's directory) whose members may approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How many distinct people must approve (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub need: usize,
}

impl ApprovalSpec {
    /// The policy this spec describes (its `environments` aside), checked rule by rule.
    pub fn to_policy(&self) -> Result<ApprovalPolicy, ApprovalError> {
        let mut policy = ApprovalPolicy::new()
            .valid_for(self.valid_for)
            .allow_self_approval(self.allow_self_approval)
            .allow_triggerer_approval(self.allow_triggerer_approval);
        for rule in &self.rules {
            let mut built = Rule::new(rule.name.clone()).need(rule.need);
            for person in &rule.people {
                built = built.person(person.as_str());
            }
            for group in &rule.groups {
                built = built.group(group.clone());
            }
            policy = policy.rule(built)?;
        }
        Ok(policy)
    }

    /// The spec of `policy`, with no environments.
    #[must_use]
    pub fn from_policy(policy: &ApprovalPolicy) -> Self {
        let rules = policy
            .rules()
            .iter()
            .map(|rule| {
                let mut spec = RuleSpec {
                    name: rule.name().to_owned(),
                    people: Vec::new(),
                    groups: Vec::new(),
                    need: rule.needed(),
                };
                for approver in rule.approvers() {
                    match approver {
                        Approver::Person(p) => spec.people.push(p.clone()),
                        Approver::Group(g) => spec.groups.push(g.clone()),
                    }
                }
                spec
            })
            .collect();
        ApprovalSpec {
            rules,
            valid_for: policy.validity(),
            allow_self_approval: policy.self_approval_allowed(),
            allow_triggerer_approval: policy.triggerer_approval_allowed(),
            environments: BTreeMap::new(),
        }
    }
}

/// The engine's settings: see [`EngineBuilder`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// How many stages run at once (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// How many stages of each concurrency group run at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_limits: BTreeMap<String, usize>,
    /// `fail_fast` (default) or `continue_independent`.
    #[serde(default, skip_serializing_if = "is_default")]
    #[cfg_attr(feature = "schema", schemars(with = "FailureSchema"))]
    pub failure_policy: FailurePolicy,
    /// The longest one step may run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::opt_human"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Option<DurationSchema>"))]
    pub step_timeout: Option<Duration>,
    /// The seed of retry jitter (default 0).
    #[serde(default, skip_serializing_if = "is_default")]
    pub seed: u64,
}

impl EngineSpec {
    /// An engine builder with these settings, to which a host may add an observer or a
    /// cancel handle before building it.
    #[must_use]
    pub fn to_builder(&self) -> EngineBuilder {
        let mut builder = Engine::builder()
            .failure_policy(self.failure_policy)
            .seed(self.seed);
        if let Some(n) = self.workers {
            builder = builder.workers(n);
        }
        for (group, &n) in &self.group_limits {
            builder = builder.group_limit(group.clone(), n);
        }
        if let Some(limit) = self.step_timeout {
            builder = builder.step_timeout(limit);
        }
        builder
    }

    /// The settings of `engine`.
    #[must_use]
    pub fn from_engine(engine: &Engine) -> Self {
        EngineSpec {
            workers: engine.workers(),
            group_limits: engine
                .group_limits()
                .map(|(g, n)| (g.to_owned(), n))
                .collect(),
            failure_policy: engine.failure_policy(),
            step_timeout: engine.step_timeout(),
            seed: engine.seed(),
        }
    }

    fn is_default(&self) -> bool {
        *self == EngineSpec::default()
    }
}

/// A stage's matrix as a spec writes it: `axes` a table of axis → values, `exclude` and
/// `include` lists of tables of axis → value, every table in the order written (the graph's
/// [`Matrix`] holds them as lists of pairs), unknown keys and repeated axes refused.
mod matrix_form {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Serialize};

    use crate::graph::Matrix;

    /// A table whose keys keep the order written: a list of pairs.
    struct Ordered<V>(Vec<(String, V)>);

    impl<V> Default for Ordered<V> {
        fn default() -> Self {
            Ordered(Vec::new())
        }
    }

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit<V>(PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for Visit<V> {
                type Value = Ordered<V>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a table of axis names")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<V>, A::Error> {
                    let mut pairs: Vec<(String, V)> = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        if pairs.iter().any(|(k, _)| *k == key) {
                            return Err(A::Error::custom(format!(
                                "the axis `{key}` is named twice"
                            )));
                        }
                        let value = map.next_value()?;
                        pairs.push((key, value));
                    }
                    Ok(Ordered(pairs))
                }
            }
            d.deserialize_map(Visit(PhantomData))
        }
    }

    /// Writes pairs as a table, in order.
    struct AsTable<'a, V>(&'a [(String, V)]);

    impl<V: Serialize> Serialize for AsTable<'_, V> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (key, value) in self.0 {
                map.serialize_entry(key, value)?;
            }
            map.end()
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fields {
        axes: Ordered<Vec<String>>,
        #[serde(default)]
        exclude: Vec<Ordered<String>>,
        #[serde(default)]
        include: Vec<Ordered<String>>,
    }

    #[derive(Serialize)]
    struct Written<'a> {
        axes: AsTable<'a, Vec<String>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<AsTable<'a, String>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        include: Vec<AsTable<'a, String>>,
    }

    // serde's `with` hands over the field's own type.
    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(
        matrix: &Option<Matrix>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match matrix {
            None => s.serialize_none(),
            Some(m) => s.serialize_some(&Written {
                axes: AsTable(&m.axes),
                exclude: m.exclude.iter().map(|e| AsTable(e)).collect(),
                include: m.include.iter().map(|e| AsTable(e)).collect(),
            }),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Matrix>, D::Error> {
        let fields = Fields::deserialize(d)?;
        Ok(Some(Matrix {
            axes: fields.axes.0,
            exclude: fields.exclude.into_iter().map(|e| e.0).collect(),
            include: fields.include.into_iter().map(|e| e.0).collect(),
        }))
    }
}

fn default_environment(name: &str) -> Environment {
    // Only ever called with `staging` and `production`, which are valid names.
    Environment::new(name).expect("the default environment names are valid")
}

fn default_staging() -> Environment {
    default_environment("staging")
}

fn default_production() -> Environment {
    default_environment("production")
}

fn is_default_staging(e: &Environment) -> bool {
    *e == default_staging()
}

fn is_default_production(e: &Environment) -> bool {
    *e == default_production()
}

/// The pipeline builder's default claim lease.
pub(crate) const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60 * 60);

fn default_claim_lease() -> Duration {
    DEFAULT_CLAIM_LEASE
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference.
fn is_default_claim_lease(d: &Duration) -> bool {
    *d == DEFAULT_CLAIM_LEASE
}

fn default_validity() -> Duration {
    ApprovalPolicy::DEFAULT_VALIDITY
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference.
fn is_default_validity(d: &Duration) -> bool {
    *d == ApprovalPolicy::DEFAULT_VALIDITY
}

fn default_success_codes() -> Vec<i32> {
    vec![0]
}

fn is_default_success(codes: &Vec<i32>) -> bool {
    codes.as_slice() == [0]
}

fn one() -> usize {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference.
fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
