//! The JSON Schema of [`PipelineSpec`] (feature `schema`): derived from the spec's own types,
//! with stand-ins for the types that live in lower layers (names, steps, moves, durations),
//! so editors complete and validate spec files. `docs/pipeline.schema.json` is its output,
//! checked by `tests/spec_schema.rs`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::{CommandSpec, GateParams, PipelineSpec};

impl PipelineSpec {
    /// The JSON Schema (draft 2020-12) of a spec file, pretty-printed (feature `schema`).
    ///
    /// ```
    /// let schema = tollgate::spec::PipelineSpec::json_schema();
    /// assert!(schema.contains("\"stages\""));
    /// ```
    #[must_use]
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(PipelineSpec);
        let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A duration: milliseconds, or text as people write it.
pub(super) struct DurationSchema;

impl JsonSchema for DurationSchema {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: whole milliseconds, or text such as \"10m\", \"1h 30m\", \"90s\", \"500ms\" or \"PT10M\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "examples": ["10m", "1h 30m", "500ms"] }
            ]
        })
    }
}

/// `delivery` or `deployment`.
#[derive(JsonSchema)]
#[schemars(rename = "Mode")]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used.
pub(super) enum ModeSchema {
    /// A person approves every production release.
    Delivery,
    /// The automated gates alone approve.
    Deployment,
}

/// A lifecycle step.
#[derive(JsonSchema)]
#[schemars(rename = "Step")]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used.
pub(super) enum StepSchema {
    /// Commit → Built.
    Build,
    /// Built → Tested.
    Test,
    /// Tested → Staged.
    Stage,
    /// Approved → Deployed.
    Deploy,
}

/// A move a gate guards.
#[derive(JsonSchema)]
#[schemars(rename = "Move")]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used.
pub(super) enum MoveSchema {
    /// Commit → Built.
    Build,
    /// Built → Tested.
    Test,
    /// Tested → Staged.
    Stage,
    /// Staged → Approved.
    Approve,
    /// Approved → Deployed.
    Deploy,
}

/// What the engine does when a stage fails.
#[derive(JsonSchema)]
#[schemars(rename = "FailurePolicy")]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used.
pub(super) enum FailureSchema {
    /// Stop at the first failure.
    FailFast,
    /// Keep running every stage that does not depend on a failed one.
    ContinueIndependent,
}

/// When a stage runs, decided once its dependencies have settled.
#[derive(JsonSchema)]
#[schemars(rename = "Condition")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(super) enum ConditionSchema {
    /// When every dependency succeeded (the default).
    OnSuccess,
    /// When some dependency failed, or was skipped because of a failure.
    OnFailure,
    /// Once every dependency has settled, whatever happened to it.
    Always,
    /// When this dependency (one of the stage's `after`) failed.
    DependencyFailed(String),
}

/// The axes a stage runs over: one stage per combination.
#[derive(JsonSchema)]
#[schemars(rename = "Matrix")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(super) struct MatrixSchema {
    /// Each axis and its values, in the order they appear in the stage ids.
    axes: BTreeMap<String, Vec<String>>,
    /// Partial combinations (axis → value) to leave out.
    #[serde(default)]
    exclude: Vec<BTreeMap<String, String>>,
    /// Combinations (axis → value) to add.
    #[serde(default)]
    include: Vec<BTreeMap<String, String>>,
}

/// A concurrency group across releases: one stage of the group runs at a time.
#[derive(JsonSchema)]
#[schemars(rename = "Concurrency")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(super) struct ConcurrencySchema {
    /// The group's name.
    group: String,
    /// Whether a newcomer cancels the stage in flight instead of queueing behind it.
    #[serde(default)]
    cancel_in_progress: bool,
}

/// An environment.
#[derive(JsonSchema)]
#[schemars(rename = "Environment")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(super) struct EnvironmentSchema {
    /// Its name.
    name: String,
    /// A description for reports.
    #[serde(default)]
    description: Option<String>,
}

/// How often a stage is tried and how long to wait in between.
#[derive(JsonSchema)]
#[schemars(rename = "RetryPolicy")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(super) struct RetrySchema {
    /// How many attempts in all (1 = no retry).
    max_attempts: u32,
    /// The delay between attempts.
    backoff: BackoffSchema,
    /// The percentage of each delay that is randomised, 0 to 100.
    #[serde(default)]
    jitter_percent: u8,
}

/// How long to wait between attempts.
#[derive(JsonSchema)]
#[schemars(rename = "Backoff")]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)] // Only its schema is used.
pub(super) enum BackoffSchema {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        delay: DurationSchema,
    },
    /// `initial`, multiplied by `factor` after every retry, never above `max`.
    Exponential {
        /// The first delay.
        initial: DurationSchema,
        /// The multiplier.
        factor: u32,
        /// The cap.
        max: DurationSchema,
    },
}

impl JsonSchema for CommandSpec {
    fn schema_name() -> Cow<'static, str> {
        "Command".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let strings = generator.subschema_for::<Vec<String>>();
        let env = generator.subschema_for::<BTreeMap<String, String>>();
        let codes = generator.subschema_for::<Vec<i32>>();
        json_schema!({
            "description": "A shell script, or a table with exactly one of `shell` and `program`.",
            "anyOf": [
                { "type": "string", "description": "A script run with `sh -c`." },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "shell": { "type": "string", "description": "A script run with `sh -c`." },
                        "program": { "type": "string", "description": "A program, looked up in PATH unless it contains a `/`." },
                        "args": strings,
                        "env": env,
                        "dir": { "type": "string", "description": "The directory it runs in." },
                        "success_codes": codes
                    },
                    "oneOf": [ { "required": ["shell"] }, { "required": ["program"] } ]
                }
            ]
        })
    }
}

impl JsonSchema for GateParams {
    fn schema_name() -> Cow<'static, str> {
        "GateParams".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The gate's parameters, read by its factory (see GateRegistry).",
            "type": "object"
        })
    }
}
