//! Pipelines from specs and back: `PipelineBuilder::from_spec`, `Pipeline::from_spec` (one
//! of each per mode, so the mode stays a type) and `Pipeline::to_spec`.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::graph::{Matrix, StageId, StageSpec};
use crate::lifecycle::{Delivery, Deployment, Mode, ModeKind};
use crate::spec::{
    ApprovalSpec, CommandSpec, EngineSpec, GateRegistry, GateSpec, LifecycleSpec, PipelineSpec,
    SpecError, StageDef,
};

use super::{NoApprovals, Pipeline, PipelineBuilder, Stage, WithApprovals};

/// What a pipeline keeps of how it was declared that its parts cannot say again: the gates
/// by name and parameters (a built gate is opaque), each stage's command (an executor is
/// opaque), and (for a pipeline built in code too) each matrix stage as written and the
/// `after` of each stage that names one, which the graph holds expanded.
#[derive(Debug, Clone, Default)]
pub(super) struct Declared {
    pub(super) gates: Vec<GateSpec>,
    pub(super) commands: BTreeMap<StageId, CommandSpec>,
    /// Each matrix stage: where its combinations are in the graph, its stage as written and
    /// its matrix.
    pub(super) matrices: Vec<(std::ops::Range<usize>, StageSpec, Matrix)>,
    /// The `after` as written of each other stage (by its position in the graph) that names
    /// a matrix stage.
    pub(super) afters: BTreeMap<usize, Vec<StageId>>,
    /// The spec's lifecycle, kept as written for a fleet.
    pub(super) lifecycle: Option<LifecycleSpec>,
}

impl PipelineBuilder<Delivery, WithApprovals> {
    /// A delivery pipeline's builder set up as `spec` says, its gates made by `gates`; the
    /// host may add what a spec does not hold (a clock, a journal, a directory, an engine
    /// with an observer, a default executor for stages without a command) before building.
    ///
    /// Refuses a spec for a deployment pipeline ([`SpecError::ModeMismatch`]) and one with no
    /// approval policy ([`SpecError::MissingApprovals`]).
    pub fn from_spec(spec: &PipelineSpec, gates: &GateRegistry) -> Result<Self> {
        check_mode::<Delivery>(spec)?;
        let approvals = spec.approvals.as_ref().ok_or(SpecError::MissingApprovals)?;
        let mut builder = common(
            Pipeline::<Delivery>::builder(spec.name.as_str()),
            spec,
            gates,
        )?
        .approvals(approvals.to_policy()?);
        for (environment, policy) in &approvals.environments {
            if !policy.environments.is_empty() {
                return Err(SpecError::NestedApprovals {
                    environment: environment.clone(),
                }
                .into());
            }
            builder = builder.approvals_for(environment.as_str(), policy.to_policy()?)?;
        }
        Ok(builder)
    }
}

impl PipelineBuilder<Deployment, NoApprovals> {
    /// A deployment pipeline's builder set up as `spec` says (see the delivery twin,
    /// [`PipelineBuilder::<Delivery, WithApprovals>::from_spec`]).
    ///
    /// Refuses a spec for a delivery pipeline ([`SpecError::ModeMismatch`]) and one with an
    /// approval policy ([`SpecError::ApprovalsInDeployment`]).
    pub fn from_spec(spec: &PipelineSpec, gates: &GateRegistry) -> Result<Self> {
        check_mode::<Deployment>(spec)?;
        if spec.approvals.is_some() {
            return Err(SpecError::ApprovalsInDeployment.into());
        }
        common(
            Pipeline::<Deployment>::builder(spec.name.as_str()),
            spec,
            gates,
        )
    }
}

impl Pipeline<Delivery> {
    /// Builds the delivery pipeline `spec` describes, its gates made by `gates`, with the
    /// defaults for everything a spec does not hold (the system clock, a journal in memory).
    /// Use [`PipelineBuilder::<Delivery, WithApprovals>::from_spec`] to set those.
    ///
    /// ```
    /// use tollgate::prelude::*;
    /// use tollgate::spec::{GateRegistry, PipelineSpec, SpecError};
    ///
    /// let spec = PipelineSpec::from_json_str(r#"{ "name": "web", "mode": "deployment",
    ///   "stages": [ { "id": "b", "step": "build", "run": "true" }, { "id": "t", "step": "test", "run": "true" },
    ///               { "id": "s", "step": "stage", "run": "true" }, { "id": "d", "step": "deploy", "run": "true" } ] }"#,
    ///   "web.json")?;
    /// let refused = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    /// assert!(matches!(refused, Error::Spec(SpecError::ModeMismatch { .. })));
    /// let pipeline = Pipeline::<Deployment>::from_spec(&spec, &GateRegistry::new())?;
    /// # let _ = pipeline;
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn from_spec(spec: &PipelineSpec, gates: &GateRegistry) -> Result<Self> {
        PipelineBuilder::<Delivery, WithApprovals>::from_spec(spec, gates)?.build()
    }
}

impl Pipeline<Deployment> {
    /// Builds the deployment pipeline `spec` describes (see the delivery twin,
    /// [`Pipeline::<Delivery>::from_spec`]).
    pub fn from_spec(spec: &PipelineSpec, gates: &GateRegistry) -> Result<Self> {
        PipelineBuilder::<Deployment, NoApprovals>::from_spec(spec, gates)?.build()
    }
}

impl<M: Mode> Pipeline<M> {
    /// The spec of this pipeline: its stages, environments, engine settings, claim lease and
    /// approval policies as the pipeline holds them, and the gates and stage commands of the
    /// spec it was built from. For a pipeline built from a spec, building this spec again
    /// makes the same pipeline (the round trip is the identity); gates and executors a host
    /// added in code have no spec form and are left out.
    #[must_use]
    pub fn to_spec(&self) -> PipelineSpec {
        let approvals = (M::KIND == ModeKind::Delivery).then(|| {
            let mut spec = ApprovalSpec::from_policy(&self.approvals.default);
            spec.environments = self
                .approvals
                .per_environment
                .iter()
                .map(|(env, policy)| (env.clone(), ApprovalSpec::from_policy(policy)))
                .collect();
            spec
        });
        PipelineSpec {
            name: self.name.clone(),
            mode: M::KIND,
            stages: self.stage_defs(),
            gates: self.declared.gates.clone(),
            approvals,
            staging: self.staging.clone(),
            production: self.production.clone(),
            engine: EngineSpec::from_engine(&self.engine),
            claim_lease: self.claim_lease,
            lifecycle: self.declared.lifecycle.clone(),
        }
    }
}

impl<M: Mode> Pipeline<M> {
    /// The stages as declared: each matrix stage once, unexpanded, where its first
    /// combination is, and the `after` of the stages that name one as written.
    fn stage_defs(&self) -> Vec<StageDef> {
        let declared = &self.declared;
        let command = |id: &StageId| declared.commands.get(id).cloned();
        let mut matrices = declared.matrices.iter().peekable();
        let mut defs = Vec::with_capacity(self.graph.len());
        for (at, stage) in self.graph.stages().enumerate() {
            if let Some((range, base, matrix)) = matrices.peek() {
                if range.contains(&at) {
                    if at == range.start {
                        let mut def = StageDef::from_stage_spec(base, command(&base.id));
                        def.matrix = Some(matrix.clone());
                        defs.push(def);
                    }
                    if at + 1 == range.end {
                        matrices.next();
                    }
                    continue;
                }
            }
            let mut def = StageDef::from_stage_spec(stage, command(&stage.id));
            if let Some(after) = declared.afters.get(&at) {
                def.after.clone_from(after);
            }
            defs.push(def);
        }
        defs
    }
}

/// Refuses a spec for the other mode than `M`.
fn check_mode<M: Mode>(spec: &PipelineSpec) -> Result<(), SpecError> {
    if spec.mode == M::KIND {
        Ok(())
    } else {
        Err(SpecError::ModeMismatch {
            spec: spec.mode,
            built: M::KIND,
        })
    }
}

/// What both modes' `from_spec` do after checking the mode: the stages, gates, environments,
/// engine and claim lease.
fn common<M: Mode>(
    mut builder: PipelineBuilder<M, NoApprovals>,
    spec: &PipelineSpec,
    gates: &GateRegistry,
) -> Result<PipelineBuilder<M, NoApprovals>> {
    for def in &spec.stages {
        let mut stage = Stage::from_spec(def.to_stage_spec());
        if let Some(matrix) = &def.matrix {
            stage = stage.matrix(matrix.clone());
        }
        if let Some(command) = &def.run {
            stage = stage.run(process(&def.id, command)?);
            builder
                .declared
                .commands
                .insert(def.id.clone(), command.clone());
        }
        builder = builder.stage(stage);
    }
    for (index, gate) in spec.gates.iter().enumerate() {
        let built = gates.build(index, gate)?;
        builder = match (gate.on, &gate.environment) {
            (Some(mv), None) => builder.gate(mv, built),
            (None, Some(environment)) => builder.environment_gate(environment.as_str(), built)?,
            _ => {
                return Err(SpecError::GateTarget {
                    index,
                    kind: gate.kind.clone(),
                }
                .into());
            }
        };
    }
    builder.declared.gates.clone_from(&spec.gates);
    builder.declared.lifecycle.clone_from(&spec.lifecycle);
    Ok(builder
        .staging(spec.staging.clone())
        .production(spec.production.clone())
        .engine(spec.engine.to_builder().build()?)
        .claim_lease(spec.claim_lease))
}

/// The process executor that runs `command`.
#[cfg(feature = "process")]
fn process(stage: &StageId, command: &CommandSpec) -> Result<crate::executor::ProcessExecutor> {
    use crate::executor::ProcessExecutor;
    let mut executor = match (&command.shell, &command.program) {
        (Some(script), None) => ProcessExecutor::shell(script),
        (None, Some(program)) => ProcessExecutor::new(program),
        // The spec's reader refuses these; a spec built in code may still hold them.
        (shell, _) => {
            return Err(SpecError::Command {
                stage: stage.clone(),
                reason: if shell.is_some() {
                    "it has both `shell` and `program`"
                } else {
                    "it has neither `shell` nor `program`"
                },
            }
            .into());
        }
    };
    executor = executor.args(&command.args);
    for (key, value) in &command.env {
        executor = executor.env(key, value);
    }
    if let Some(dir) = &command.dir {
        executor = executor.current_dir(dir);
    }
    Ok(executor.success_codes(command.success_codes.iter().copied()))
}

/// Without the `process` feature, no stage of a spec may run a command.
#[cfg(not(feature = "process"))]
fn process(stage: &StageId, _command: &CommandSpec) -> Result<crate::executor::BoxExecutor> {
    Err(SpecError::Command {
        stage: stage.clone(),
        reason: "tollgate was built without its `process` feature",
    }
    .into())
}
