//! What the engine tells observers: [`Event`], the [`Observer`] trait and [`observer_fn`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::artifact::{ArtifactRef, Digest};
use crate::executor::StageStatus;
use crate::forward::forward_impls;
use crate::id::ReleaseId;
use crate::id::StageId;
use crate::id::{EnvironmentName, Person, PipelineName};
use crate::lifecycle::Step;
use crate::lifecycle::{ModeKind, Move, StateName, Verdict};
use crate::time::Timestamp;

/// Something that happened to a release or while one of its steps ran, stamped with the
/// pipeline clock's time.
///
/// Events of one step arrive in the order they happened; replaying them with
/// [`final_statuses`] gives the same per-stage outcome as the returned
/// [`StepReport`](super::StepReport).
///
/// Two families share the stream. **Step events** (`step_started` … `step_finished`) come
/// from the engine while a step runs. **Release events** (`release_started`, `moved`,
/// `refused`, `parked`, `approved`, `deployed` to staging or to the target) come from the
/// release's moves, each sent once the fact behind it is in the journal, so a UI or a chat
/// bot can follow releases rather than stages:
///
/// ```
/// use tollgate::engine::Event;
///
/// let event: Event = serde_json::from_str(
///     r#"{"event":"parked","release":"shop-1","move":"approve","gate":null,
///         "waiting_for":"a person's approval","until":null,"at":5}"#,
/// )?;
/// assert_eq!(event.to_string(), "@5ms shop-1: parked before approve at the button, waiting for a person's approval");
/// assert_eq!(event.release().map(|r| r.as_str()), Some("shop-1"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The step began.
    StepStarted {
        /// The release.
        release: ReleaseId,
        /// The step.
        step: Step,
        /// How many stages it has.
        stages: usize,
        /// When.
        at: Timestamp,
    },
    /// A stage's dependencies are done; it waits for a worker.
    StageReady {
        /// The stage.
        stage: StageId,
        /// When.
        at: Timestamp,
    },
    /// An attempt of a stage started.
    AttemptStarted {
        /// The stage.
        stage: StageId,
        /// The attempt, from 1.
        attempt: u32,
        /// When.
        at: Timestamp,
    },
    /// An attempt failed or timed out.
    AttemptFailed {
        /// The stage.
        stage: StageId,
        /// The attempt.
        attempt: u32,
        /// How it ended: [`StageStatus::Failed`] with the reason, or
        /// [`StageStatus::TimedOut`] with the limit that cut it off.
        #[serde(flatten)]
        status: StageStatus,
        /// When.
        at: Timestamp,
    },
    /// The stage will be tried again after a delay.
    Retrying {
        /// The stage.
        stage: StageId,
        /// The attempt that comes next.
        next_attempt: u32,
        /// The delay before it, jitter included.
        #[serde(with = "crate::time::millis")]
        delay: Duration,
        /// When.
        at: Timestamp,
    },
    /// A stage reached its final status.
    StageFinished {
        /// The stage.
        stage: StageId,
        /// Its status.
        #[serde(flatten)]
        status: StageStatus,
        /// How many attempts it made.
        attempts: u32,
        /// When.
        at: Timestamp,
    },
    /// A gate gave its verdict on a move of a release (recorded in the release too).
    GateEvaluated {
        /// The release.
        release: ReleaseId,
        /// The move it guarded.
        #[serde(rename = "move")]
        mv: Move,
        /// The gate's name.
        gate: String,
        /// Its verdict: the reason when closed, what it waits for when pending, and who
        /// when a person overrode it.
        #[serde(flatten)]
        verdict: Verdict,
        /// When.
        at: Timestamp,
    },
    /// Host code misbehaved and the engine contained it (see [`Warning`]); the same warning
    /// is in the step's [`StepReport::warnings`](super::StepReport::warnings).
    Warning {
        /// What happened.
        #[serde(flatten)]
        warning: Warning,
        /// When.
        at: Timestamp,
    },
    /// The step ended.
    StepFinished {
        /// The release.
        release: ReleaseId,
        /// The step.
        step: Step,
        /// Whether every stage succeeded.
        succeeded: bool,
        /// When.
        at: Timestamp,
    },
    /// A release was started from a revision ([`Pipeline::start`](crate::pipeline::Pipeline)).
    ReleaseStarted {
        /// The release.
        release: ReleaseId,
        /// The pipeline that started it.
        pipeline: PipelineName,
        /// Delivery (a person approves) or deployment (the gates approve).
        mode: ModeKind,
        /// The revision's id (a commit hash).
        revision: String,
        /// Who wrote the revision.
        author: Person,
        /// When.
        at: Timestamp,
    },
    /// A release moved from one state to the next (the move is in the journal).
    Moved {
        /// The release.
        release: ReleaseId,
        /// The state it left.
        from: StateName,
        /// The state it reached.
        to: StateName,
        /// The artifact the move fixed: the build move's, `None` for every other move.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artifact: Option<ArtifactRef>,
        /// When.
        at: Timestamp,
    },
    /// A move was refused and the release handed back unmoved, with the reason.
    Refused {
        /// The release.
        release: ReleaseId,
        /// The move refused.
        #[serde(rename = "move")]
        mv: Move,
        /// Why (the move's error, as its message).
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// A release waits before a move: at a pending gate, or (continuous delivery, once
    /// staged) at the button, for a person's approval.
    Parked {
        /// The release.
        release: ReleaseId,
        /// The move it waits to take.
        #[serde(rename = "move")]
        mv: Move,
        /// The pending gate; `None` when it waits at the button.
        gate: Option<String>,
        /// What it waits for (a person, a time, a verdict).
        waiting_for: String,
        /// When the gate will decide on its own, if it knows.
        until: Option<Timestamp>,
        /// When.
        at: Timestamp,
    },
    /// A release was approved for its target environment.
    Approved {
        /// The release.
        release: ReleaseId,
        /// The people whose sign-offs gave the approval; empty when the automated gates
        /// approved it (continuous deployment).
        by: Vec<Person>,
        /// Why, as the approver said it (empty for an automatic approval).
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// A release was deployed to an environment: staging (by the stage move) or its target
    /// (by the deploy move). Sent just before the `moved` event of that move.
    Deployed {
        /// The release.
        release: ReleaseId,
        /// Where it runs now.
        environment: EnvironmentName,
        /// The digest of the artifact it runs (the one that was tested).
        digest: Digest,
        /// When.
        at: Timestamp,
    },
}

impl Event {
    /// The release the event is about; `None` for stage events, which belong to the step
    /// around them.
    #[must_use]
    pub fn release(&self) -> Option<&ReleaseId> {
        match self {
            Event::StepStarted { release, .. }
            | Event::GateEvaluated { release, .. }
            | Event::StepFinished { release, .. }
            | Event::ReleaseStarted { release, .. }
            | Event::Moved { release, .. }
            | Event::Refused { release, .. }
            | Event::Parked { release, .. }
            | Event::Approved { release, .. }
            | Event::Deployed { release, .. } => Some(release),
            Event::StageReady { .. }
            | Event::AttemptStarted { .. }
            | Event::AttemptFailed { .. }
            | Event::Retrying { .. }
            | Event::StageFinished { .. }
            | Event::Warning { .. } => None,
        }
    }

    /// When it happened.
    #[must_use]
    pub fn at(&self) -> Timestamp {
        match self {
            Event::StepStarted { at, .. }
            | Event::StageReady { at, .. }
            | Event::AttemptStarted { at, .. }
            | Event::AttemptFailed { at, .. }
            | Event::Retrying { at, .. }
            | Event::StageFinished { at, .. }
            | Event::GateEvaluated { at, .. }
            | Event::Warning { at, .. }
            | Event::StepFinished { at, .. }
            | Event::ReleaseStarted { at, .. }
            | Event::Moved { at, .. }
            | Event::Refused { at, .. }
            | Event::Parked { at, .. }
            | Event::Approved { at, .. }
            | Event::Deployed { at, .. } => *at,
        }
    }

    /// Whether it is a release event (started, moved, refused, parked, approved, deployed)
    /// rather than one of a step's.
    #[must_use]
    pub fn is_release_event(&self) -> bool {
        matches!(
            self,
            Event::ReleaseStarted { .. }
                | Event::Moved { .. }
                | Event::Refused { .. }
                | Event::Parked { .. }
                | Event::Approved { .. }
                | Event::Deployed { .. }
        )
    }
}

/// Host code that misbehaved during a step and was contained: the step carried on, and says
/// what happened in [`StepReport::warnings`](super::StepReport::warnings) and an
/// [`Event::Warning`].
///
/// ```
/// use std::time::Duration;
/// use tollgate::engine::Warning;
///
/// let warning = Warning::ExecutorBlocked {
///     stage: "lint".parse()?,
///     attempt: 1,
///     blocked: Duration::from_secs(2),
/// };
/// assert_eq!(
///     warning.to_string(),
///     "the executor of stage `lint` held its thread for 2s in one poll (attempt 1): \
///      executors must not block; run blocking work on a thread of its own"
/// );
/// let json = serde_json::to_string(&warning)?;
/// assert_eq!(json, r#"{"warning":"executor_blocked","stage":"lint","attempt":1,"blocked":2000}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Warning {
    /// One poll of a stage's executor (making its future included) held the thread for
    /// `blocked` on the pipeline's clock, more than
    /// [`Engine::blocking_threshold`](super::Engine::blocking_threshold). Nothing else of the
    /// step ran meanwhile, and an attempt whose poll crossed its deadline is timed out
    /// whatever it returned. Told once per stage and step, for the first poll that blocked.
    ExecutorBlocked {
        /// The stage.
        stage: StageId,
        /// The attempt whose poll blocked.
        attempt: u32,
        /// How long that poll held the thread, on the pipeline's clock.
        #[serde(with = "crate::time::millis")]
        blocked: Duration,
    },
    /// The observer panicked while it was told an event; the event was lost to it and the
    /// step carried on. Said once per step, for the first panic, with how many there were.
    ObserverPanicked {
        /// The kind of event it panicked on (`stage_finished`, …).
        event: String,
        /// The panic's text.
        message: String,
        /// How many events it panicked on in the step.
        times: u64,
    },
    /// A stage's retry predicate panicked: the stage was not tried again, and ended with
    /// the failure the predicate was asked about.
    RetryPredicatePanicked {
        /// The stage.
        stage: StageId,
        /// The attempt that failed.
        attempt: u32,
        /// The panic's text.
        message: String,
    },
    /// A stage's executor future panicked while it was dropped (when it finished, or when
    /// it was cut off by a timeout, a cancel or a failure elsewhere); the attempt ended as
    /// it would have otherwise.
    DropPanicked {
        /// The stage.
        stage: StageId,
        /// The attempt.
        attempt: u32,
        /// The panic's text.
        message: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ExecutorBlocked {
                stage,
                attempt,
                blocked,
            } => write!(
                f,
                "the executor of stage `{stage}` held its thread for {blocked:?} in one poll \
                 (attempt {attempt}): executors must not block; run blocking work on a thread \
                 of its own"
            ),
            Warning::ObserverPanicked {
                event,
                message,
                times,
            } => write!(
                f,
                "the observer panicked on a `{event}` event ({times} time(s) in the step): \
                 {message}"
            ),
            Warning::RetryPredicatePanicked {
                stage,
                attempt,
                message,
            } => write!(
                f,
                "the retry predicate of stage `{stage}` panicked after attempt {attempt}, so \
                 it was not retried: {message}"
            ),
            Warning::DropPanicked {
                stage,
                attempt,
                message,
            } => write!(
                f,
                "the executor future of stage `{stage}` (attempt {attempt}) panicked while \
                 dropped: {message}"
            ),
        }
    }
}

impl Event {
    /// The event's kind, as its serde form names it (`stage_finished`, …).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StepStarted { .. } => "step_started",
            Event::StageReady { .. } => "stage_ready",
            Event::AttemptStarted { .. } => "attempt_started",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::Retrying { .. } => "retrying",
            Event::StageFinished { .. } => "stage_finished",
            Event::GateEvaluated { .. } => "gate_evaluated",
            Event::Warning { .. } => "warning",
            Event::StepFinished { .. } => "step_finished",
            Event::ReleaseStarted { .. } => "release_started",
            Event::Moved { .. } => "moved",
            Event::Refused { .. } => "refused",
            Event::Parked { .. } => "parked",
            Event::Approved { .. } => "approved",
            Event::Deployed { .. } => "deployed",
        }
    }
}

/// Replays events and returns each stage's final status, in the order they finished.
#[must_use]
pub fn final_statuses(events: &[Event]) -> Vec<(StageId, StageStatus)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StageFinished { stage, status, .. } => Some((stage.clone(), status.clone())),
            _ => None,
        })
        .collect()
}

/// Receives the engine's events. Called on the thread that polls the step, so it must be
/// quick: hand the event to a channel or a buffer for anything slow.
///
/// A closure observes through [`observer_fn`]; an observer shared with the host (an
/// `Arc<dyn Observer>`, a `&'static` one) is an observer itself.
///
/// ```
/// use std::sync::Arc;
/// use tollgate::engine::{Engine, EventLog, Observer};
///
/// let log = EventLog::new();
/// let shared: Arc<dyn Observer> = Arc::new(log.clone());
/// let engine = Engine::builder().observer(shared).build()?;
/// # let _ = engine;
/// # Ok::<(), tollgate::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate event observer",
    note = "implement `fn observe(&self, event: &Event)`, wrap a closure with `tollgate::engine::observer_fn(|event: &Event| ...)`, or use `EventLog`"
)]
pub trait Observer: Send + Sync {
    /// Called once per event.
    fn observe(&self, event: &Event);
}

forward_impls! {
    impl Observer {
        fn observe(&self, event: &Event);
    }
}

/// Wraps a closure as an observer.
///
/// ```
/// use tollgate::engine::{Engine, Event, observer_fn};
///
/// let engine = Engine::builder()
///     .observer(observer_fn(|event: &Event| println!("{event}")))
///     .build()?;
/// # let _ = engine;
/// # Ok::<(), tollgate::Error>(())
/// ```
pub fn observer_fn<F>(f: F) -> FnObserver<F>
where
    F: Fn(&Event) + Send + Sync,
{
    FnObserver(f)
}

/// The observer made by [`observer_fn`].
#[derive(Clone, Copy)]
pub struct FnObserver<F>(F);

impl<F> fmt::Debug for FnObserver<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnObserver")
    }
}

impl<F: Fn(&Event) + Send + Sync> Observer for FnObserver<F> {
    fn observe(&self, event: &Event) {
        (self.0)(event);
    }
}

/// An observer that keeps every event in memory. Clones share one log.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        EventLog::default()
    }

    /// A copy of the events so far.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Takes the events so far, leaving the log empty.
    #[must_use]
    pub fn take(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

impl Observer for EventLog {
    fn observe(&self, event: &Event) {
        // A poisoned log (an observer thread panicked) keeps accepting events.
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        events.push(event.clone());
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::StepStarted {
                release,
                step,
                stages,
                at,
            } => {
                write!(f, "{at} {release}: {step} step started ({stages} stages)")
            }
            Event::StageReady { stage, at } => write!(f, "{at} {stage}: ready"),
            Event::GateEvaluated {
                release,
                mv,
                gate,
                verdict,
                at,
            } => {
                write!(f, "{at} {release}: gate `{gate}` on {mv}: {verdict}")
            }
            Event::AttemptStarted { stage, attempt, at } => {
                write!(f, "{at} {stage}: attempt {attempt} started")
            }
            Event::AttemptFailed {
                stage,
                attempt,
                status,
                at,
            } => write!(f, "{at} {stage}: attempt {attempt} {status}"),
            Event::Retrying {
                stage,
                next_attempt,
                delay,
                at,
            } => {
                write!(f, "{at} {stage}: attempt {next_attempt} in {delay:?}")
            }
            Event::StageFinished {
                stage,
                status,
                attempts,
                at,
            } => {
                write!(f, "{at} {stage}: {status} after {attempts} attempt(s)")
            }
            Event::Warning { warning, at } => write!(f, "{at} warning: {warning}"),
            Event::StepFinished {
                release,
                step,
                succeeded,
                at,
            } => {
                let how = if *succeeded { "succeeded" } else { "failed" };
                write!(f, "{at} {release}: {step} step {how}")
            }
            release_event => fmt_release_event(release_event, f),
        }
    }
}

/// The release events' lines (the step events' are in `Display for Event`).
fn fmt_release_event(event: &Event, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match event {
        Event::ReleaseStarted {
            release,
            pipeline,
            mode,
            revision,
            author,
            at,
        } => write!(
            f,
            "{at} {release}: started by {pipeline} ({mode}) from revision {revision} by {author}"
        ),
        Event::Moved {
            release,
            from,
            to,
            at,
            ..
        } => write!(f, "{at} {release}: moved {from} -> {to}"),
        Event::Refused {
            release,
            mv,
            reason,
            at,
        } => write!(f, "{at} {release}: {mv} refused: {reason}"),
        Event::Parked {
            release,
            mv,
            gate,
            waiting_for,
            until,
            at,
        } => {
            write!(f, "{at} {release}: parked before {mv} ")?;
            match gate {
                Some(gate) => write!(f, "at gate `{gate}`")?,
                None => f.write_str("at the button")?,
            }
            write!(f, ", waiting for {waiting_for}")?;
            match until {
                Some(until) => write!(f, " (until {until})"),
                None => Ok(()),
            }
        }
        Event::Approved {
            release,
            by,
            reason,
            at,
        } => {
            if by.is_empty() {
                return write!(f, "{at} {release}: approved by its automated gates");
            }
            write!(f, "{at} {release}: approved by ")?;
            for (i, person) in by.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{person}")?;
            }
            write!(f, ": {reason}")
        }
        Event::Deployed {
            release,
            environment,
            digest,
            at,
        } => write!(f, "{at} {release}: deployed to {environment} ({digest})"),
        // Step events are written by `Display for Event` and never come here.
        step_event => write!(f, "{} {step_event:?}", step_event.at()),
    }
}
