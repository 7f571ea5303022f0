//! Forwarding impls: every host trait (`Executor`, `Gate`, `Artifact`, `Clock`, `Observer`,
//! `MetricSource`, `Directory`) is implemented by `&T`, `Box<T>` and `Arc<T>`, trait objects
//! included, and each of them answers exactly what the value it points to answers: a yes
//! stays a yes, a no stays a no, and an overridden default method is not replaced by the
//! default.

mod support;

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{self, BoxFuture, FutureExt};
use futures::task::noop_waker;
use support::{START, block_on, built, clock, deployment_pipeline, staged, standard_stages};
use tollgate::approval::{ApprovalError, ApprovalPolicy, Directory, Groups, Rule};
use tollgate::artifact::ArtifactError;
use tollgate::engine::{Engine, Event, EventLog, Observer};
use tollgate::error::Error;
use tollgate::executor::{ExecutorError, StageContext, StageStatus};
use tollgate::gate::{GateContext, MetricGate, MetricSource, Threshold};
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::id::{ReleaseId, StageId};
use tollgate::lifecycle::Step;
use tollgate::prelude::*;
use tollgate::time::{Clock, Timestamp};

/// Calls `$check(label, pointers.., extra..)` once per pointer: each of the `$value`s behind
/// `&T`, `Box<T>`, `Arc<T>`, `&dyn $Trait`, `Box<dyn $Trait>` and `Arc<dyn $Trait>` (all the
/// values of one call behind the same kind of pointer).
macro_rules! through_every_pointer {
    ($check:path, dyn $Trait:path, ($($value:ident),+) $(, $extra:expr)* $(,)?) => {{
        $check("&T", $(&$value),+ $(, $extra)*);
        $check("Box<T>", $(Box::new($value.clone())),+ $(, $extra)*);
        $check("Arc<T>", $(Arc::new($value.clone())),+ $(, $extra)*);
        $check("&dyn", $(&$value as &dyn $Trait),+ $(, $extra)*);
        $check("Box<dyn>", $(Box::new($value.clone()) as Box<dyn $Trait>),+ $(, $extra)*);
        $check("Arc<dyn>", $(Arc::new($value.clone()) as Arc<dyn $Trait>),+ $(, $extra)*);
    }};
}

// Directory ---------------------------------------------------------------------------------

/// Who is in which group in these tests: omar and ines are in security, rita is not.
fn org() -> Groups {
    Groups::new()
        .group("security", ["ines", "omar"])
        .expect("valid names")
        .group("release-managers", ["rita", "sam"])
        .expect("valid names")
}

fn check_directory(label: &str, directory: impl Directory) {
    assert!(
        directory.is_member("omar", "security"),
        "{label}: a member of the group"
    );
    assert!(
        !directory.is_member("rita", "security"),
        "{label}: someone in another group only"
    );
    assert!(
        !directory.is_member("omar", "auditors"),
        "{label}: a group that does not exist"
    );
}

#[test]
fn a_directory_behind_a_pointer_answers_membership_as_the_directory_does() {
    let groups = org();
    through_every_pointer!(check_directory, dyn Directory, (groups));
}

/// Builds a delivery pipeline whose only approval rule is "someone in security", with
/// `directory`, and checks that a member may sign off and a non-member may not.
fn check_pipeline_directory(label: &str, directory: impl Directory + 'static) {
    let clock = clock();
    let policy = ApprovalPolicy::new()
        .rule(Rule::new("security").group("security"))
        .expect("a valid rule");
    let pipeline = support::delivery_with("shop", &clock, policy)
        .stages(standard_stages())
        .directory(directory)
        .build()
        .expect("a valid pipeline");
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let release = staged.id().as_str();

    let refused = block_on(pipeline.sign_off(release, "rita", "looks fine to me"))
        .expect_err("rita is not in security");
    assert!(
        matches!(&refused, Error::Approval(ApprovalError::NotAnApprover { person, .. }) if person == "rita"),
        "{label}: {refused:?}"
    );
    let approval = block_on(pipeline.sign_off(release, "omar", "scan is clean"))
        .unwrap_or_else(|e| panic!("{label}: omar is in security: {e}"));
    let approved = block_on(staged.approve(&pipeline, approval))
        .unwrap_or_else(|e| panic!("{label}: {}", e.error()));
    let record = approved.record().approval().expect("an approval record");
    assert_eq!(record.signoffs.len(), 1, "{label}");
    assert_eq!(record.signoffs[0].person, "omar", "{label}");
}

#[test]
fn a_pipeline_with_a_shared_directory_admits_members_and_refuses_everyone_else() {
    check_pipeline_directory("Arc<T>", Arc::new(org()));
    check_pipeline_directory("Box<T>", Box::new(org()));
    check_pipeline_directory("&'static T", &*Box::leak(Box::new(org())));
    check_pipeline_directory("Arc<dyn>", Arc::new(org()) as Arc<dyn Directory>);
    check_pipeline_directory("Box<dyn>", Box::new(org()) as Box<dyn Directory>);
}

// Executor ----------------------------------------------------------------------------------

/// An executor that succeeds with an output, or fails with a reason.
#[derive(Clone)]
struct Scripted {
    failure: Option<&'static str>,
}

#[async_trait]
impl Executor for Scripted {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        Ok(match self.failure {
            Some(reason) => StageOutcome::failure(reason),
            None => StageOutcome::success().output("ran", ctx.stage().as_str()),
        })
    }
}

/// The report of a one-stage test step run by `executor`.
fn run_one(executor: &dyn Executor) -> tollgate::engine::StageReport {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("unit"))
        .build()
        .expect("a valid graph");
    let release = ReleaseId::new("shop-1").expect("a valid release id");
    let report = block_on(Engine::new().run_graph(
        &graph,
        Step::Test,
        executor,
        &clock(),
        &release,
        "4f2a9c1",
    ));
    report.stage("unit").expect("the stage is reported").clone()
}

fn check_executor(label: &str, passing: impl Executor, failing: impl Executor) {
    let passed = run_one(&passing);
    assert_eq!(passed.status, StageStatus::Succeeded, "{label}");
    assert_eq!(
        passed.outputs.get("ran").map(String::as_str),
        Some("unit"),
        "{label}"
    );
    let failed = run_one(&failing);
    assert_eq!(
        failed.status,
        StageStatus::Failed {
            reason: "the tests failed".into()
        },
        "{label}"
    );
}

#[test]
fn an_executor_behind_a_pointer_reports_what_the_executor_reports() {
    let passing = Scripted { failure: None };
    let failing = Scripted {
        failure: Some("the tests failed"),
    };
    through_every_pointer!(check_executor, dyn Executor, (passing, failing));
}

// Gate --------------------------------------------------------------------------------------

/// Closed while an incident is open; named, so that its name is not the type's.
#[derive(Clone)]
struct NoOpenIncidents {
    open: bool,
}

#[async_trait]
impl Gate for NoOpenIncidents {
    async fn evaluate(&self, _ctx: &GateContext<'_>) -> Verdict {
        if self.open {
            Verdict::closed("an incident is open")
        } else {
            Verdict::Open
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("no-open-incidents")
    }
}

fn check_gate(label: &str, calm: impl Gate, burning: impl Gate, ctx: &GateContext<'_>) {
    assert_eq!(block_on(calm.evaluate(ctx)), Verdict::Open, "{label}");
    assert_eq!(
        block_on(burning.evaluate(ctx)),
        Verdict::closed("an incident is open"),
        "{label}"
    );
    assert_eq!(
        calm.name(),
        "no-open-incidents",
        "{label}: the gate's own name"
    );
}

#[test]
fn a_gate_behind_a_pointer_gives_the_gates_verdict_and_name() {
    let clock = clock();
    let pipeline = deployment_pipeline(&clock);
    let release = staged(&pipeline, "r1", "aaa").0.into_any();
    let ctx = GateContext::new(&release, Move::Deploy, pipeline.production(), START);
    let calm = NoOpenIncidents { open: false };
    let burning = NoOpenIncidents { open: true };
    through_every_pointer!(check_gate, dyn Gate, (calm, burning), &ctx);
}

// MetricSource ------------------------------------------------------------------------------

/// Knows one query's value and nothing else.
#[derive(Clone)]
struct Canned;

#[async_trait]
impl MetricSource for Canned {
    async fn sample(&self, query: &str, _ctx: &GateContext<'_>) -> Option<f64> {
        (query == "error_rate").then_some(0.25)
    }
}

fn check_metric_source(label: &str, source: impl MetricSource, ctx: &GateContext<'_>) {
    assert_eq!(
        block_on(source.sample("error_rate", ctx)),
        Some(0.25),
        "{label}: a query with data"
    );
    assert_eq!(
        block_on(source.sample("latency_p99", ctx)),
        None,
        "{label}: a query without data"
    );
    // A metric gate reads the source through the pointer: 0.25 is too many errors.
    let gate = MetricGate::new("errors", source, "error_rate", Threshold::AtMost(0.1));
    assert!(
        matches!(block_on(gate.evaluate(ctx)), Verdict::Closed { .. }),
        "{label}"
    );
}

#[test]
fn a_metric_source_behind_a_pointer_samples_what_the_source_samples() {
    let clock = clock();
    let pipeline = deployment_pipeline(&clock);
    let release = staged(&pipeline, "r1", "aaa").0.into_any();
    let ctx = GateContext::new(&release, Move::Deploy, pipeline.production(), START);
    let canned = Canned;
    through_every_pointer!(check_metric_source, dyn MetricSource, (canned), &ctx);
}

// Artifact ----------------------------------------------------------------------------------

fn check_artifact(label: &str, artifact: impl Artifact, expected: &ArtifactRef) {
    assert_eq!(artifact.name(), expected.name, "{label}");
    assert_eq!(artifact.digest(), &expected.digest, "{label}");
    assert_eq!(
        artifact.metadata(),
        expected.metadata,
        "{label}: the artifact's own metadata"
    );
}

/// A move handed the wrong artifact behind a pointer refuses it; handed the right one, it
/// goes ahead.
fn check_artifact_move(
    label: &str,
    right: impl Artifact,
    wrong: impl Artifact,
    pipeline: &Pipeline<Deployment>,
) {
    let id = format!("r-{}", label.replace(|c: char| !c.is_alphanumeric(), ""));
    let (release, _) = built(pipeline, &id, "aaa");
    let refused = block_on(release.test(pipeline, &wrong)).expect_err("another artifact");
    assert!(
        matches!(
            refused.error(),
            Error::Artifact(ArtifactError::Mismatch { .. })
        ),
        "{label}: {:?}",
        refused.error()
    );
    let tested = block_on(refused.into_release().test(pipeline, &right))
        .unwrap_or_else(|e| panic!("{label}: the built artifact: {}", e.error()));
    assert_eq!(tested.artifact().digest, *right.digest(), "{label}");
}

#[test]
fn an_artifact_behind_a_pointer_has_the_artifacts_name_digest_and_metadata() {
    let artifact = ArtifactRef::from_bytes("app", b"the app").with_metadata("version", "1.4.0");
    through_every_pointer!(check_artifact, dyn Artifact, (artifact), &artifact);

    let clock = clock();
    let pipeline = deployment_pipeline(&clock);
    let right = support::artifact_for("aaa").with_metadata("version", "1.4.0");
    let wrong = support::artifact_for("bbb");
    through_every_pointer!(check_artifact_move, dyn Artifact, (right, wrong), &pipeline);
}

// Clock -------------------------------------------------------------------------------------

/// A clock whose every answer tells its methods apart: time stands still, `sleep` (which it
/// overrides) returns at once, and `sleep_until` never does, even for a deadline that has
/// passed. A pointer that answered with a default method, or with another method than the
/// one asked, would give itself away.
#[derive(Clone)]
struct Stopped(Timestamp);

impl Clock for Stopped {
    fn now(&self) -> Timestamp {
        self.0
    }

    fn sleep_until(&self, _deadline: Timestamp) -> BoxFuture<'static, ()> {
        future::pending().boxed()
    }

    fn sleep(&self, _d: Duration) -> BoxFuture<'static, ()> {
        future::ready(()).boxed()
    }
}

fn check_clock(label: &str, clock: impl Clock) {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert_eq!(clock.now(), START, "{label}");
    assert_eq!(
        clock.sleep(Duration::from_secs(3600)).poll_unpin(&mut cx),
        Poll::Ready(()),
        "{label}: the clock's own sleep"
    );
    assert_eq!(
        clock.sleep_until(Timestamp::EPOCH).poll_unpin(&mut cx),
        Poll::Pending,
        "{label}: the clock's own sleep_until"
    );
}

#[test]
fn a_clock_behind_a_pointer_tells_the_clocks_time_and_sleeps_its_sleeps() {
    let stopped = Stopped(START);
    through_every_pointer!(check_clock, dyn Clock, (stopped));
}

// Observer ----------------------------------------------------------------------------------

fn check_observer(label: &str, observer: impl Observer, log: &EventLog) {
    let event = Event::StageReady {
        stage: StageId::new("unit").expect("a valid stage id"),
        at: START,
    };
    observer.observe(&event);
    assert_eq!(log.take(), [event], "{label}");
}

#[test]
fn an_observer_behind_a_pointer_sees_every_event() {
    let log = EventLog::new();
    through_every_pointer!(check_observer, dyn Observer, (log), &log);
}

#[test]
fn an_engine_takes_an_observer_the_host_keeps_a_handle_to() {
    let log = EventLog::new();
    let shared: Arc<dyn Observer> = Arc::new(log.clone());
    let engine = Engine::builder()
        .observer(Arc::clone(&shared))
        .build()
        .expect("a valid engine");
    let graph = StageGraph::builder()
        .stage(StageSpec::test("unit"))
        .build()
        .expect("a valid graph");
    let release = ReleaseId::new("shop-1").expect("a valid release id");
    let executor = Scripted { failure: None };
    let report =
        block_on(engine.run_graph(&graph, Step::Test, &executor, &clock(), &release, "4f2a9c1"));
    assert!(report.succeeded());
    let events = log.take();
    assert!(
        matches!(events.first(), Some(Event::StepStarted { .. })),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::StepFinished {
                succeeded: true,
                ..
            })
        ),
        "{events:?}"
    );
    assert_eq!(
        tollgate::engine::final_statuses(&events),
        [(
            StageId::new("unit").expect("a valid stage id"),
            StageStatus::Succeeded
        )]
    );
    // The host's handle still reaches the same log.
    shared.observe(&Event::StageReady {
        stage: StageId::new("unit").expect("a valid stage id"),
        at: START,
    });
    assert_eq!(log.take().len(), 1);
}
