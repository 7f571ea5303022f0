//! Restoring a typed release from the journal: [`Pipeline::restore`] replays a release's
//! facts and re-derives every state from them, refusing any history this pipeline could not
//! have written. No other public path turns stored data into a typed release.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{OpenRun, Release};
use crate::approval::Ballot;
use crate::engine::{StageReport, StepReport};
use crate::error::{Error, Result};
use crate::executor::{StageStatus, StepOutcome, idempotency_key};
use crate::fact::{Fact, FactError, read_release};
use crate::id::{ReleaseId, StageId};
use crate::journal::Seq;
use crate::lifecycle::{Mode, ModeKind, Move, State, StateName, Step, Verdict};
use crate::pipeline::{Pipeline, request_for};
use crate::record::AnyRelease;

/// A release restored from the journal, in whichever state its facts say it reached.
///
/// Turn it into the typed release you expect with `Release::<S, M>::try_from(restored)`
/// (a release in another state is a [`RecordError::WrongState`](crate::record::RecordError)),
/// or match on [`state`](Restored::state) first.
#[derive(Debug)]
pub struct Restored<M: Mode> {
    any: AnyRelease,
    head: Seq,
    /// The run of the next move that was claimed and not concluded, if any.
    run: Option<ReplayedRun>,
    fingerprint: crate::fact::Fingerprint,
    _mode: std::marker::PhantomData<fn() -> M>,
}

impl<M: Mode> Restored<M> {
    /// The state the release reached.
    #[must_use]
    pub fn state(&self) -> StateName {
        self.any.state()
    }

    /// The release's record, as the facts make it.
    #[must_use]
    pub fn record(&self) -> &AnyRelease {
        &self.any
    }

    /// The move a copy of the release claimed and did not conclude (it crashed, or could
    /// not write its last facts), if any: the release's next move, which carries on from
    /// where that copy stopped once the claim's lease is over
    /// ([`Pipeline::claim_lease`](crate::pipeline::Pipeline::claim_lease)).
    #[must_use]
    pub fn interrupted(&self) -> Option<Move> {
        self.run.as_ref().map(|run| run.open.mv)
    }

    /// The stages of the interrupted move's step that succeeded before it was cut off, in
    /// the order they did, as their facts say: running the move again does not run them
    /// again (their outputs and artifact count as they were). Empty when no move was
    /// interrupted, or none of its stages succeeded.
    #[must_use]
    pub fn finished_stages(&self) -> &[StageReport] {
        self.run.as_ref().map_or(&[], |run| &run.open.done)
    }
}

impl<S: State, M: Mode> TryFrom<Restored<M>> for Release<S, M> {
    type Error = Error;

    /// The typed release, if it is in state `S`.
    fn try_from(restored: Restored<M>) -> Result<Self> {
        restored.any.check_as(S::NAME, M::KIND)?;
        let claim = restored
            .run
            .as_ref()
            .map(|run| (run.open.mv, run.claimed_at));
        let mut release = Release::new(restored.any, Some(restored.head), restored.fingerprint)
            .claimed_by_another(claim);
        release.run = restored.run.map(|run| run.open);
        Ok(release)
    }
}

impl<M: Mode> Pipeline<M> {
    /// Restores release `id` from the pipeline's journal: reads its facts (checking their
    /// chain), and replays them, re-deriving each state: the release was started by this
    /// pipeline with this definition ([`Fingerprint`](crate::fact::Fingerprint)); every move
    /// came in lifecycle order, after the gates on it were open; every step that moved it
    /// ran every stage of the step, and each succeeded; the artifact is the one the build
    /// reported; and an approval was issued by this pipeline's policy from the votes the
    /// journal holds, unexpired when used.
    ///
    /// A move cut off mid-step (the process that ran it died) comes back as the release's
    /// next move, [`interrupted`](Restored::interrupted), with the stages that finished
    /// ([`finished_stages`](Restored::finished_stages)), each checked as well: a stage of
    /// that step of this pipeline's graph, settled once, after its dependencies and after
    /// the claim, under the idempotency keys of the move's run. Once the claim's lease is
    /// over, taking the move runs only the other stages.
    ///
    /// ```
    /// # use tollgate::prelude::*;
    /// # use tollgate::executor::from_fn;
    /// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
    /// # let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
    /// let pipeline = Pipeline::<Deployment>::builder("web")
    ///     # .stage(Stage::build("compile").run(ok())).stage(Stage::test("unit").run(ok()))
    ///     # .stage(Stage::stage("staging").run(ok())).stage(Stage::deploy("production").run(ok()))
    ///     .build()?;
    /// let built = pipeline.start("r1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
    /// drop(built); // the bot restarts
    /// let restored = pipeline.restore("r1").await?;
    /// let built = Release::<Built, Deployment>::try_from(restored)?;
    /// assert_eq!(built.id(), "r1");
    /// # Ok(()) }) }
    /// ```
    pub async fn restore(&self, id: &str) -> Result<Restored<M>> {
        let facts = read_release(self.journal(), id).await?;
        let Replayed { any, head, run } = self.replay(id, &facts).await?;
        Ok(Restored {
            any,
            head,
            run,
            fingerprint: self.fingerprint().clone(),
            _mode: std::marker::PhantomData,
        })
    }

    /// Replays `facts` (one release's, in order) into its record, checking each against the
    /// ones before it and against this pipeline's definition.
    pub(crate) async fn replay(&self, id: &str, facts: &[(Seq, Fact)]) -> Result<Replayed> {
        let Some(((first_seq, first), rest)) = facts.split_first() else {
            return Err(FactError::UnknownRelease {
                release: id.to_owned(),
            }
            .into());
        };
        let Fact::Started {
            release,
            pipeline,
            fingerprint,
            mode,
            revision,
            staging,
            target,
            at,
        } = first
        else {
            return Err(inconsistent_id(
                id,
                *first_seq,
                "is not the release's start",
            ));
        };
        let mut differences = fingerprint.differences(self.fingerprint());
        if pipeline != self.name() {
            differences.insert(0, "name");
        }
        if !differences.is_empty() {
            return Err(FactError::ForeignPipeline {
                release: release.clone(),
                expected: pipeline.clone(),
                found: self.name().clone(),
                differences,
            }
            .into());
        }
        if *mode != M::KIND {
            return Err(inconsistent(
                release,
                *first_seq,
                "starts a release of another mode",
            ));
        }
        let mut any = AnyRelease::new(
            release.clone(),
            pipeline.clone(),
            *mode,
            revision.clone(),
            *at,
            staging.clone(),
            target.clone(),
        );
        let mut replay = Replay {
            pipeline: self,
            release,
            ballot: None,
            step_ok: None,
            gates_open: false,
            approval_used: false,
            run: None,
            last_at: *at,
        };
        let mut head = *first_seq;
        for (seq, fact) in rest {
            replay.apply(&mut any, *seq, fact).await?;
            // Votes are filed under a key of their own: the release's position is its own key's.
            if !matches!(fact, Fact::Voted { .. }) {
                head = *seq;
            }
        }
        any.check_as(any.state(), M::KIND)?;
        Ok(Replayed {
            any,
            head,
            run: replay.run,
        })
    }
}

/// What a replay gives: the record, the release's last entry, and the run of its next move
/// that was claimed and not concluded.
pub(crate) struct Replayed {
    pub any: AnyRelease,
    pub head: Seq,
    pub run: Option<ReplayedRun>,
}

/// A run of a move, as the replay follows it (see [`OpenRun`]). Its sets make each stage
/// fact's checks cost the same however many stages the step has.
#[derive(Debug)]
pub(crate) struct ReplayedRun {
    open: OpenRun,
    /// When the latest claim of the run was made (by the copy that opened it, or by the
    /// latest that took it over): its lease runs from then, and its stages started after.
    claimed_at: crate::time::Timestamp,
    /// The stages that succeeded in the run (those of `open.done`).
    succeeded: HashSet<StageId>,
    /// The stages that settled since the latest claim, whatever their status: a copy runs
    /// each stage at most once.
    since_claim: HashSet<StageId>,
    /// The reports of the stages that settled since the latest claim without succeeding
    /// (those that succeeded are in `open.done`).
    not_succeeded: Vec<StageReport>,
}

impl ReplayedRun {
    fn new(mv: Move, claim: Seq, at: crate::time::Timestamp) -> Self {
        ReplayedRun {
            open: OpenRun {
                mv,
                claim,
                done: Vec::new(),
            },
            claimed_at: at,
            succeeded: HashSet::new(),
            since_claim: HashSet::new(),
            not_succeeded: Vec::new(),
        }
    }
}

/// The replay of one release's facts: what has been seen since the last move.
struct Replay<'a, M: Mode> {
    pipeline: &'a Pipeline<M>,
    release: &'a ReleaseId,
    /// The votes cast since the release was staged.
    ballot: Option<Ballot>,
    /// Whether the latest run of the next move's step succeeded in full.
    step_ok: Option<bool>,
    /// Whether the gates on the next move were all open, the latest time they were asked.
    gates_open: bool,
    /// Whether an approval was used since the release was staged.
    approval_used: bool,
    /// The run opened by a `Gates` fact (the claim of a move), until a move or a refusal
    /// concludes it.
    run: Option<ReplayedRun>,
    /// The latest time a fact carries (facts never go back in time).
    last_at: crate::time::Timestamp,
}

impl<M: Mode> Replay<'_, M> {
    async fn apply(&mut self, any: &mut AnyRelease, seq: Seq, fact: &Fact) -> Result<()> {
        let release = self.release;
        let bad = |reason: &str| inconsistent(release, seq, reason);
        let next = any.state().next_move();
        match fact {
            Fact::Started { .. } => return Err(bad("starts the release a second time")),
            Fact::StepRan { report, .. } => self.step_ran(any, seq, report)?,
            Fact::StageFinished {
                step,
                claim,
                report,
                keys,
                ..
            } => self.stage_finished(seq, *step, *claim, report, keys)?,
            Fact::Gates {
                mv, verdicts, at, ..
            } => {
                if Some(*mv) != next {
                    return Err(bad(&format!("records gates on a {mv} move out of turn")));
                }
                self.claimed(*mv, seq, *at);
                if verdicts.iter().any(|v| v.at != *at) {
                    return Err(bad("records verdicts given at another time than it says"));
                }
                let environment = any.aimed_at(*mv).name().clone();
                let asked: BTreeSet<String> = verdicts.iter().map(|v| v.gate.clone()).collect();
                let required: BTreeSet<String> = self
                    .pipeline
                    .gates_on(*mv, &environment)
                    .map(|g| g.name().into_owned())
                    .collect();
                self.gates_open = required.is_subset(&asked)
                    && verdicts.iter().all(|v| v.mv == *mv && v.verdict.is_open());
                // A gate whose verdict follows from the release and the time (a soak, a
                // window) is asked again at the recorded time: a recorded "open" must be one.
                let aimed = any.aimed_at(*mv).clone();
                let ctx = crate::gate::GateContext::new(any, *mv, &aimed, *at);
                for gate in self.pipeline.gates_on(*mv, &environment) {
                    if !gate.replayable() {
                        continue;
                    }
                    let name = gate.name();
                    let recorded_open = verdicts
                        .iter()
                        .any(|v| v.gate == name && v.verdict == Verdict::Open);
                    if recorded_open {
                        let verdict = gate.evaluate(&ctx).await;
                        if !verdict.is_open() {
                            return Err(bad(&format!(
                                "records gate `{name}` open at {at}, but it was {verdict}"
                            )));
                        }
                    }
                }
                for record in verdicts {
                    any.push_gate(record.clone());
                }
            }
            Fact::Voted { request, vote, .. } => {
                if any.state() != StateName::Staged || M::KIND != ModeKind::Delivery {
                    return Err(bad("records a vote on a release that is not awaiting one"));
                }
                let Some(expected) = request_for(any) else {
                    return Err(bad("records a vote on a release without an artifact"));
                };
                if *request != expected {
                    return Err(bad("records a vote on another request than the release's"));
                }
                let ballot = self
                    .ballot
                    .get_or_insert_with(|| Ballot::new(expected.clone()));
                ballot.push(vote.clone(), seq);
            }
            Fact::ApprovalUsed { record, at, .. } => {
                if any.state() != StateName::Staged || M::KIND != ModeKind::Delivery {
                    return Err(bad("uses an approval where none is taken"));
                }
                let Some(request) = request_for(any) else {
                    return Err(bad("uses an approval on a release without an artifact"));
                };
                let ballot = self.ballot.clone().unwrap_or_else(|| Ballot::new(request));
                // The approval is re-derived from the votes the journal holds, by this
                // pipeline's policy, as it was issued; and nothing since (a rejection, its
                // expiry) may have withdrawn it by the time it was used.
                self.pipeline
                    .check_recorded_approval(&ballot, record, *at)
                    .map_err(|e| bad(&format!("uses an approval its votes do not give: {e}")))?;

                self.at(*at);
                any.set_approval(record.clone());
                self.approval_used = true;
            }
            Fact::Moved {
                to, artifact, at, ..
            } => self.moved(any, seq, *to, artifact.as_ref(), *at)?,
            Fact::Refused { .. } => self.run = None,
        }
        Ok(())
    }

    /// A move to `to` at `at`: in turn, after the gates on it were open and its step ran in
    /// full; the build fixes the artifact its report names, and the approve move in delivery
    /// mode follows a used approval.
    fn moved(
        &mut self,
        any: &mut AnyRelease,
        seq: Seq,
        to: StateName,
        artifact: Option<&crate::artifact::ArtifactRef>,
        at: crate::time::Timestamp,
    ) -> Result<()> {
        let release = self.release;
        let bad = |reason: &str| inconsistent(release, seq, reason);
        let Some(mv) = any.state().next_move().filter(|m| m.to() == to) else {
            return Err(bad(&format!("moves the release to {to} out of turn")));
        };
        if !self.gates_open {
            return Err(bad(&format!("moves to {to} without the gates on it open")));
        }
        if mv.step().is_some() && self.step_ok != Some(true) {
            return Err(bad(&format!(
                "moves to {to} without a run of every stage of its step succeeding"
            )));
        }
        match (mv, artifact) {
            (Move::Build, Some(artifact)) => {
                let built = any
                    .steps()
                    .last()
                    .map(|report| any.artifact_from(report))
                    .transpose()
                    .map_err(|e| bad(&e.to_string()))?;
                if built.as_ref() != Some(artifact) {
                    return Err(bad("fixes an artifact the build did not report"));
                }
                any.set_artifact(artifact.clone());
            }
            (Move::Build, None) => return Err(bad("builds without an artifact")),
            (_, Some(_)) => return Err(bad("changes the artifact after the build")),
            (_, None) => {}
        }
        if mv == Move::Approve && (M::KIND == ModeKind::Delivery) != self.approval_used {
            return Err(bad(match M::KIND {
                ModeKind::Delivery => "approves a delivery release without an approval",
                ModeKind::Deployment => "approves a deployment release with a person's",
            }));
        }
        let at = self.at(at);
        any.set_state(to, at);
        if to == StateName::Deployed {
            any.set_deployed_at(at);
        }
        self.step_ok = None;
        self.gates_open = false;
        self.ballot = None;
        self.approval_used = false;
        self.run = None;
        Ok(())
    }

    /// The gates' verdicts on `mv` at `at`, journal position `seq`, claim the move: while
    /// the move's run is open, the claim takes it over (the copy that had it crashed, or
    /// could not conclude it); otherwise it opens a new run.
    fn claimed(&mut self, mv: Move, seq: Seq, at: crate::time::Timestamp) {
        match &mut self.run {
            Some(run) if run.open.mv == mv => {
                run.claimed_at = at;
                run.since_claim.clear();
                run.not_succeeded.clear();
            }
            _ => self.run = Some(ReplayedRun::new(mv, seq, at)),
        }
    }

    /// The step of the next move ran as `report`: that step, and (in a claimed run) holding
    /// every stage that settled in the run as its fact said.
    fn step_ran(&mut self, any: &mut AnyRelease, seq: Seq, report: &StepReport) -> Result<()> {
        let release = self.release;
        let bad = |reason: &str| inconsistent(release, seq, reason);
        let Some(step) = any.state().next_move().and_then(Move::step) else {
            return Err(bad("runs a step where the release's next move runs none"));
        };
        if report.step != step {
            return Err(bad(&format!(
                "runs the {} step where the next move runs the {step} step",
                report.step
            )));
        }
        if let Some(run) = &self.run {
            // The step's report holds every stage that settled in the run as its fact
            // said: those carried over from earlier copies, and this copy's.
            let reported: HashMap<&StageId, &StageReport> =
                report.stages.iter().map(|s| (&s.id, s)).collect();
            let contradicted = run
                .open
                .done
                .iter()
                .chain(&run.not_succeeded)
                .find(|s| reported.get(&s.id) != Some(s));
            if let Some(stage) = contradicted {
                return Err(bad(&format!(
                    "reports stage `{}` otherwise than its stage fact",
                    stage.id
                )));
            }
        }
        self.step_ok = Some(self.complete_run(step, report));
        any.push_step(report.clone());
        Ok(())
    }

    /// A stage of `step` settled as `report`, in the run opened by the claim at `claim`:
    /// the run is open and its move runs `step`; the stage is one of that step in this
    /// pipeline's graph; it did not settle before since the latest claim, nor succeed before
    /// in the run; every dependency it waited for (in its step and phase) succeeded before
    /// it in the run; it started, after the latest claim, and its attempts carry the keys
    /// this run gives them.
    fn stage_finished(
        &mut self,
        seq: Seq,
        step: Step,
        claim: Seq,
        report: &StageReport,
        keys: &[String],
    ) -> Result<()> {
        let release = self.release;
        let bad = |reason: &str| inconsistent(release, seq, reason);
        let id = &report.id;
        let Some(run) = &mut self.run else {
            return Err(bad(&format!(
                "records stage `{id}` settling outside any claimed move"
            )));
        };
        let mv = run.open.mv;
        if mv.step() != Some(step) {
            return Err(bad(&format!(
                "records a stage of the {step} step in a {mv} move"
            )));
        }
        if claim != run.open.claim {
            return Err(bad(&format!(
                "records stage `{id}` in the run claimed at {claim}, but the {mv} move's run was claimed at {}",
                run.open.claim
            )));
        }
        let graph = self.pipeline.graph();
        let Some(spec) = graph.get(id.as_str()) else {
            return Err(bad(&format!(
                "records stage `{id}`, which this pipeline does not have"
            )));
        };
        if spec.step != step {
            return Err(bad(&format!(
                "records stage `{id}` of the {} step as one of the {step} step",
                spec.step
            )));
        }
        if run.succeeded.contains(id) {
            return Err(bad(&format!(
                "records stage `{id}` again after it succeeded in the same run"
            )));
        }
        if run.since_claim.contains(id) {
            return Err(bad(&format!(
                "records stage `{id}` settling twice under one claim"
            )));
        }
        for dependency in &spec.after {
            let waited_for = graph
                .get(dependency.as_str())
                .is_some_and(|d| d.step == step && d.finally == spec.finally);
            if waited_for && !run.succeeded.contains(dependency) {
                return Err(bad(&format!(
                    "records stage `{id}` running before its dependency `{dependency}` succeeded"
                )));
            }
        }
        let attempts = report.attempts();
        let (Some(started), Some(finished)) = (report.started_at, report.finished_at) else {
            return Err(bad(&format!(
                "records stage `{id}` settling without running"
            )));
        };
        // Times are taken as written: a wall clock may step back (NTP) while a stage runs,
        // and the stage is bound to its run by its claim and its attempts' keys, not by time.
        let _ = (started, finished, run.claimed_at);
        if attempts.is_empty() {
            return Err(bad(&format!(
                "records stage `{id}` settling without an attempt"
            )));
        }
        let expected = attempts.iter().enumerate().map(|(n, a)| {
            (a.number as usize == n + 1)
                .then(|| idempotency_key(release, step, id, claim, a.number))
        });
        if keys.len() != attempts.len()
            || !expected
                .zip(keys)
                .all(|(expected, key)| expected.as_ref() == Some(key))
        {
            return Err(bad(&format!(
                "records stage `{id}` with idempotency keys its run does not give"
            )));
        }
        run.since_claim.insert(id.clone());
        if report.status == StageStatus::Succeeded {
            run.succeeded.insert(id.clone());
            run.open.done.push(report.clone());
        } else {
            run.not_succeeded.push(report.clone());
        }
        Ok(())
    }

    /// Facts never go back in time: a fact dated before the latest one is taken at the
    /// latest one's time (a wall clock that stepped back), never earlier.
    fn at(&mut self, at: crate::time::Timestamp) -> crate::time::Timestamp {
        self.last_at = self.last_at.max(at);
        self.last_at
    }

    /// Whether `report` is a full, successful run of `step`: it succeeded, and it holds every
    /// stage of the step in this pipeline's graph, and no other stage, each succeeded or
    /// (by the graph's own conditions and `continue_on_error`) allowed to end as it did.
    fn complete_run(&self, step: Step, report: &StepReport) -> bool {
        let graph = self.pipeline.graph();
        let expected: BTreeSet<&str> = graph.stages_in(step).map(|s| s.id.as_str()).collect();
        let ran: BTreeSet<&str> = report.stages.iter().map(|s| s.id.as_str()).collect();
        report.outcome == StepOutcome::Succeeded
            && report.stages.len() == expected.len()
            && ran == expected
            && report.succeeded_in(graph)
    }
}

fn inconsistent(release: &ReleaseId, seq: Seq, reason: &str) -> Error {
    FactError::Inconsistent {
        release: release.clone(),
        seq,
        reason: reason.to_owned(),
    }
    .into()
}

fn inconsistent_id(id: &str, seq: Seq, reason: &str) -> Error {
    match ReleaseId::new(id) {
        Ok(release) => inconsistent(&release, seq, reason),
        Err(e) => e.into(),
    }
}
