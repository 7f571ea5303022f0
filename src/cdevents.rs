//! [CDEvents](https://cdevents.dev) (spec v0.4) from tollgate's events (feature `cdevents`):
//! the CD Foundation's standard JSON events, for tools that already consume them.
//!
//! The mapping, from the [`Event`] stream of one pipeline:
//!
//! | tollgate | CDEvents (v0.4) |
//! |---|---|
//! | `release_started` | `pipelinerun.queued.0.2.0` (the release is the pipeline run) |
//! | `step_started` of the build step | `pipelinerun.started.0.2.0` |
//! | a stage's first `attempt_started` | `taskrun.started.0.2.0` (the stage is the task run) |
//! | `stage_finished` of a stage that started | `taskrun.finished.0.2.0` (`success`, `failure` or `cancel`) |
//! | `moved` to built | `artifact.packaged.0.2.0` (the artifact as a `pkg:generic` package URL) |
//! | `deployed` (to staging or to the target) | `service.deployed.0.2.0` the first time a pipeline's service reaches an environment, `service.upgraded.0.2.0` after; and `environment.modified.0.2.0` |
//! | `moved` to deployed | `pipelinerun.finished.0.2.0` with outcome `success` |
//! | `refused` | `pipelinerun.finished.0.2.0` with outcome `failure` and the reason (a release tried again starts a new run of the same id) |
//!
//! Not mapped: gate verdicts, parking and approvals (CDEvents v0.4 has no approval events).
//! A fleet's deployments (promotions, upgrades, redeploys and `service.rolledback` for a
//! rollback) come from the fleet itself: `Fleet::cdevents` (the fleet sits above this
//! module and builds them with [`envelope`], [`service_subject`] and [`purl`]).
//!
//! [`CdEvents`] is written without the `cdevents-sdk` crate: that crate brings `time`,
//! `fluent-uri`, `enum_dispatch` and (by default) `cloudevents-sdk` for what is, here, a
//! dozen JSON shapes built with `serde_json`, which tollgate already uses.
//!
//! ```
//! use tollgate::cdevents::CdEvents;
//! use tollgate::engine::Event;
//!
//! let cdevents = CdEvents::new("/tollgate/shop");
//! let event: Event = serde_json::from_str(
//!     r#"{"event":"release_started","release":"shop-1","pipeline":"shop","mode":"delivery",
//!         "revision":"4f2a9c1","author":"dana","at":1700000000000}"#,
//! )?;
//! let out = cdevents.convert(&event);
//! assert_eq!(out[0]["context"]["type"], "dev.cdevents.pipelinerun.queued.0.2.0");
//! assert_eq!(out[0]["context"]["timestamp"], "2023-11-14T22:13:20Z");
//! assert_eq!(out[0]["subject"]["id"], "shop-1");
//! assert_eq!(out[0]["subject"]["content"]["pipelineName"], "shop");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};

use crate::artifact::ArtifactRef;
use crate::engine::Event;
use crate::executor::StageStatus;
use crate::id::{PipelineName, ReleaseId};
use crate::lifecycle::{StateName, Step};
use crate::time::Timestamp;

/// The CDEvents specification version written in every event's context.
pub const SPEC_VERSION: &str = "0.4.1";

/// Turns tollgate's events into CDEvents JSON. It remembers what it needs across events
/// (the release whose step is running, the stages that started, the environments each
/// service reached), so give it one pipeline's events in the order they came; it is `Sync`,
/// so an [`observer_fn`](crate::engine::observer_fn) can call it directly.
#[derive(Debug)]
pub struct CdEvents {
    source: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// How many events this converter made: the last part of each event's id.
    made: u64,
    /// The pipeline of each release seen starting (the service's name).
    pipelines: Vec<(ReleaseId, PipelineName)>,
    /// The release whose step is running: stage events belong to it.
    running: Option<ReleaseId>,
    /// Stages of the running step that started (a stage that never started has no task run).
    started: BTreeSet<String>,
    /// The artifact of each release, from its build move.
    artifacts: Vec<(ReleaseId, ArtifactRef)>,
    /// (service, environment) pairs already deployed to.
    deployed: BTreeSet<(String, String)>,
}

impl CdEvents {
    /// A converter whose events say they come from `source` (a URI reference naming this
    /// tollgate host or pipeline, such as `/tollgate/shop` or `https://ci.example/tollgate`).
    #[must_use]
    pub fn new(source: impl Into<String>) -> Self {
        CdEvents {
            source: source.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// The CDEvents (zero, one or more) that `event` stands for, as JSON objects with a
    /// `context` and a `subject`.
    #[must_use]
    pub fn convert(&self, event: &Event) -> Vec<Value> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let mut emit = |state: &mut State, kind: &str, at: Timestamp, subject: Value| {
            state.made += 1;
            let id = format!("{}#{}", self.source, state.made);
            out.push(envelope(&self.source, &id, kind, at, subject));
        };
        match event {
            Event::ReleaseStarted {
                release,
                pipeline,
                at,
                ..
            } => {
                state.pipelines.push((release.clone(), pipeline.clone()));
                let subject = pipeline_run(release, pipeline.as_str(), json!({}));
                emit(&mut state, "pipelinerun.queued", *at, subject);
            }
            Event::StepStarted {
                release, step, at, ..
            } => {
                state.running = Some(release.clone());
                state.started.clear();
                if *step == Step::Build {
                    let pipeline = state.pipeline_of(release);
                    let subject = pipeline_run(release, &pipeline, json!({}));
                    emit(&mut state, "pipelinerun.started", *at, subject);
                }
            }
            Event::AttemptStarted { .. } | Event::StageFinished { .. } => {
                self.task_event(&mut state, &mut emit, event);
            }
            Event::StepFinished { .. } => state.running = None,
            Event::Moved {
                release,
                to,
                artifact,
                at,
                ..
            } => {
                if let Some(artifact) = artifact {
                    state.artifacts.push((release.clone(), artifact.clone()));
                    let subject = json!({
                        "id": purl(artifact),
                        "type": "artifact",
                        "content": { "change": { "id": release.as_str() } },
                    });
                    emit(&mut state, "artifact.packaged", *at, subject);
                }
                if *to == StateName::Deployed {
                    let pipeline = state.pipeline_of(release);
                    let subject = pipeline_run(release, &pipeline, json!({ "outcome": "success" }));
                    emit(&mut state, "pipelinerun.finished", *at, subject);
                }
            }
            Event::Deployed {
                release,
                environment,
                at,
                ..
            } => {
                self.deployed_to(&mut state, &mut emit, release, environment.as_str(), *at);
            }
            Event::Refused {
                release,
                reason,
                at,
                ..
            } => {
                let pipeline = state.pipeline_of(release);
                let content = json!({ "outcome": "failure", "errors": reason });
                let subject = pipeline_run(release, &pipeline, content);
                emit(&mut state, "pipelinerun.finished", *at, subject);
            }
            _ => {}
        }
        out
    }

    /// `taskrun.started` and `taskrun.finished` of the running release's stages.
    fn task_event(
        &self,
        state: &mut State,
        emit: &mut impl FnMut(&mut State, &str, Timestamp, Value),
        event: &Event,
    ) {
        let Some(release) = state.running.clone() else {
            return;
        };
        match event {
            Event::AttemptStarted { stage, attempt, at }
                if *attempt == 1 && state.started.insert(stage.as_str().to_owned()) =>
            {
                let subject = task_run(&self.source, &release, stage.as_str(), json!({}));
                emit(state, "taskrun.started", *at, subject);
            }
            Event::StageFinished {
                stage, status, at, ..
            } if state.started.contains(stage.as_str()) => {
                let (outcome, errors) = outcome(status);
                let mut content = json!({ "outcome": outcome });
                if let Some(errors) = errors {
                    content["errors"] = json!(errors);
                }
                let subject = task_run(&self.source, &release, stage.as_str(), content);
                emit(state, "taskrun.finished", *at, subject);
            }
            _ => {}
        }
    }

    /// `service.deployed` (first time) or `service.upgraded`, then `environment.modified`.
    fn deployed_to(
        &self,
        state: &mut State,
        emit: &mut impl FnMut(&mut State, &str, Timestamp, Value),
        release: &ReleaseId,
        environment: &str,
        at: Timestamp,
    ) {
        let service = state.pipeline_of(release);
        let Some(artifact) = state
            .artifacts
            .iter()
            .rev()
            .find(|(r, _)| r == release)
            .map(|(_, a)| purl(a))
        else {
            return;
        };
        let kind = if state
            .deployed
            .insert((service.clone(), environment.to_owned()))
        {
            "service.deployed"
        } else {
            "service.upgraded"
        };
        let subject = service_subject(&self.source, &service, environment, &artifact);
        emit(state, kind, at, subject);
        let subject = json!({
            "id": environment,
            "source": self.source,
            "type": "environment",
            "content": { "name": environment },
        });
        emit(state, "environment.modified", at, subject);
    }
}

impl State {
    /// The name of the pipeline that started `release`; for a release restored rather than
    /// started while this converter listened, the release's own id stands in.
    fn pipeline_of(&self, release: &ReleaseId) -> String {
        self.pipelines
            .iter()
            .rev()
            .find(|(r, _)| r == release)
            .map_or_else(
                || release.as_str().to_owned(),
                |(_, p)| p.as_str().to_owned(),
            )
    }
}

/// One event in CDEvents form: the context (spec version, `id`, `source`, the type
/// `dev.cdevents.<kind>.0.2.0`, the timestamp in RFC 3339 UTC) around `subject`. For
/// producers of events outside [`CdEvents`] (the fleet's deployments), so every event has
/// the same envelope; `id` must be unique per `source`.
#[must_use]
pub fn envelope(source: &str, id: &str, kind: &str, at: Timestamp, subject: Value) -> Value {
    let mut event = json!({
        "context": {
            "specversion": SPEC_VERSION,
            "id": id,
            "source": source,
            "type": format!("dev.cdevents.{kind}.0.2.0"),
            "timestamp": rfc3339(at),
        },
    });
    event["subject"] = subject;
    event
}

/// The subject of a `service.deployed`, `service.upgraded` or `service.rolledback` event:
/// `service` running `artifact_id` (a package URL, see [`purl`]) in `environment`.
#[must_use]
pub fn service_subject(source: &str, service: &str, environment: &str, artifact_id: &str) -> Value {
    json!({
        "id": service,
        "source": source,
        "type": "service",
        "content": {
            "environment": { "id": environment, "source": source },
            "artifactId": artifact_id,
        },
    })
}

fn pipeline_run(release: &ReleaseId, pipeline: &str, mut content: Value) -> Value {
    content["pipelineName"] = json!(pipeline);
    json!({ "id": release.as_str(), "type": "pipelineRun", "content": content })
}

fn task_run(source: &str, release: &ReleaseId, stage: &str, mut content: Value) -> Value {
    content["taskName"] = json!(stage);
    content["pipelineRun"] = json!({ "id": release.as_str(), "source": source });
    json!({ "id": format!("{release}/{stage}"), "type": "taskRun", "content": content })
}

/// The outcome and errors of a task run: `success`, `failure` (with the reason), `cancel`.
fn outcome(status: &StageStatus) -> (&'static str, Option<String>) {
    match status {
        StageStatus::Succeeded => ("success", None),
        StageStatus::Cancelled | StageStatus::Skipped => ("cancel", None),
        other => ("failure", Some(other.to_string())),
    }
}

/// The artifact as a [package URL](https://github.com/package-url/purl-spec): generic type,
/// its name, and its digest as the checksum qualifier.
#[must_use]
pub fn purl(artifact: &ArtifactRef) -> String {
    let name: String = artifact
        .name
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("pkg:generic/{name}?checksum={}", artifact.digest)
}

/// RFC 3339 in UTC, to the millisecond when there are any.
fn rfc3339(at: Timestamp) -> String {
    let millis = i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(millis) {
        Ok(t) => t.to_string(),
        Err(_) => jiff::Timestamp::MAX.to_string(),
    }
}
