//! The pictures, pinned by snapshots (`cargo insta review` shows a change as a diff): the
//! whole pipeline in Mermaid, DOT and SVG in both modes, a run as a gantt, and the HTML
//! report's promises (everything escaped, nothing fetched, the decision shown).

mod support;

use std::time::Duration;

use support::{block_on, clock, compile, ok, revision};
use tollgate::engine::{Engine, Event, EventLog};
use tollgate::executor::from_fn;
use tollgate::gate;
use tollgate::graph::{Backoff, RetryPolicy};
use tollgate::picture::{gantt, html_report};
use tollgate::pipeline::PipelineBuilder;
use tollgate::prelude::*;
use tollgate::release::Mode;
use tollgate::time::{ManualClock, run_virtual};

/// Every shape a picture draws: a build, tests beside each other with a finally stage,
/// staging with acceptance, production, and gates on three moves (one per environment).
fn everything<M: Mode, A>(builder: PipelineBuilder<M, A>) -> PipelineBuilder<M, A> {
    builder
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").run(ok()))
        .stage(Stage::test("lint").after("compile").run(ok()))
        .stage(Stage::test("coverage-report").finally().run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::stage("acceptance").after("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .gate(
            Move::Stage,
            gate::from_fn("tests \"green\"", |_| Verdict::Open),
        )
        .gate(Move::Approve, gate::soak(Duration::from_secs(30 * 60)))
        .gate(
            Move::Deploy,
            gate::from_fn("change-window", |_| Verdict::Open),
        )
}

fn delivery() -> Pipeline<Delivery> {
    everything(Pipeline::<Delivery>::builder("shop"))
        .approvals(ApprovalPolicy::any_of(["rita", "sam"]).unwrap())
        .build()
        .unwrap()
}

fn deployment() -> Pipeline<Deployment> {
    everything(Pipeline::<Deployment>::builder("shop"))
        .build()
        .unwrap()
}

#[test]
fn delivery_mermaid() {
    insta::assert_snapshot!(delivery().picture().to_mermaid());
}

#[test]
fn deployment_mermaid() {
    insta::assert_snapshot!(deployment().picture().to_mermaid());
}

#[test]
fn delivery_dot() {
    insta::assert_snapshot!(delivery().picture().to_dot());
}

#[test]
fn deployment_dot() {
    insta::assert_snapshot!(deployment().picture().to_dot());
}

#[test]
fn delivery_svg() {
    insta::assert_snapshot!(delivery().picture().to_svg());
}

#[test]
fn deployment_svg() {
    insta::assert_snapshot!(deployment().picture().to_svg());
}

#[test]
fn the_two_modes_differ_in_the_picture_only_at_the_approval_and_the_title() {
    let (delivery, deployment) = (
        delivery().picture().to_mermaid(),
        deployment().picture().to_mermaid(),
    );
    let differing: Vec<(&str, &str)> = delivery
        .lines()
        .zip(deployment.lines())
        .filter(|(d, p)| d != p)
        .collect();
    assert_eq!(delivery.lines().count(), deployment.lines().count());
    assert_eq!(differing.len(), 2, "{differing:?}");
    assert!(differing[0].0.starts_with("title: ") && differing[0].0.contains("delivery"));
    assert!(
        differing[1]
            .0
            .starts_with(r#"    approval[\"👤 the button"#)
    );
    assert!(differing[1].1.starts_with(r#"    approval{{"⚙ automatic"#));
}

/// A delivery run in virtual time: `unit` fails once and is retried 30 s later, the release
/// waits 30 minutes at the soak and the button, then rita presses it.
fn delivery_run() -> (Pipeline<Delivery>, AnyRelease, Vec<Event>) {
    let clock = clock();
    let events = EventLog::new();
    let flaky = std::sync::atomic::AtomicU32::new(0);
    let pipeline = Pipeline::<Delivery>::builder("shop")
        .clock(clock.clone())
        .engine(Engine::builder().observer(events.clone()).build().unwrap())
        .stage(Stage::build("compile").run(compile()))
        .stage(
            Stage::test("unit")
                .after("compile")
                .retry(RetryPolicy::attempts(2).backoff(Backoff::Fixed {
                    delay: Duration::from_secs(30),
                }))
                .run(from_fn(move |_| {
                    if flaky.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        Err("flaky: <connection reset>".into())
                    } else {
                        Ok(StageOutcome::success().log("12 tests <passed> & done"))
                    }
                })),
        )
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .gate(Move::Approve, gate::soak(Duration::from_secs(30 * 60)))
        .approvals(ApprovalPolicy::any_of(["rita"]).unwrap())
        .build()
        .unwrap();
    let record = run_virtual(&clock, drive(&pipeline, &clock));
    (pipeline, record, events.events())
}

async fn drive(pipeline: &Pipeline<Delivery>, clock: &ManualClock) -> AnyRelease {
    let release = pipeline.start("shop-1", revision("4f2a9c1")).unwrap();
    let built = release.build(pipeline).await.unwrap();
    let artifact = built.artifact().clone();
    let tested = built.test(pipeline, &artifact).await.unwrap();
    let staged = tested.stage(pipeline, &artifact).await.unwrap();
    let approval = pipeline
        .sign_off("shop-1", "rita", "<b>signed</b> off")
        .await
        .unwrap();
    // Too early: the soak holds the release, and the approval comes back in the error.
    let mut refused = staged.approve(pipeline, approval).await.unwrap_err();
    clock.advance(Duration::from_secs(30 * 60));
    let approval = refused.take_approval().unwrap();
    let approved = refused
        .into_release()
        .approve(pipeline, approval)
        .await
        .unwrap();
    approved
        .deploy(pipeline, &artifact)
        .await
        .unwrap()
        .record()
        .clone()
}

#[test]
fn a_run_as_a_gantt() {
    let (_, _, events) = delivery_run();
    insta::assert_snapshot!(gantt(&events));
}

#[test]
fn the_report_escapes_everything_and_fetches_nothing() {
    let (pipeline, record, events) = delivery_run();
    let html = html_report(&pipeline.picture(), &record, &events);
    // The host's text is escaped: the log, the reason, the failure.
    assert!(html.contains("12 tests &lt;passed&gt; &amp; done"));
    assert!(html.contains("flaky: &lt;connection reset&gt;"));
    assert!(!html.contains("<passed>") && !html.contains("<b>signed</b>"));
    // Nothing to fetch: the only URL is the SVG namespace, and the policy forbids the rest.
    let urls: Vec<&str> = html
        .match_indices("http")
        .map(|(i, _)| &html[i..i + 26])
        .collect();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("http://www.w3.org/2000/svg") || u.starts_with("http-equiv")),
        "{urls:?}"
    );
    assert!(html.contains("default-src 'none'"));
    // The decision and the wait are shown.
    assert!(html.contains("<td id=\"approved-by\">by rita (&lt;b&gt;signed&lt;/b&gt; off)"));
    assert!(html.contains("waiting at gate soak 30m"));
    assert!(html.contains("class=\"approval button\""));
    // Every stage's log is there, and the pictures.
    for stage in ["compile", "unit", "staging", "production"] {
        assert!(html.contains(&format!("<summary>{stage}: ")), "{stage}");
    }
    assert_eq!(html.matches("<svg ").count(), 2);
}

#[test]
fn reports_of_a_deployment_say_no_person_approved() {
    let pipeline = support::deployment_pipeline(&clock());
    let events = EventLog::new();
    let (staged, artifact) = support::staged(&pipeline, "shop-2", "9e1f00d");
    let record = block_on(async {
        let approved = staged.auto_approve(&pipeline).await.unwrap();
        approved
            .deploy(&pipeline, &artifact)
            .await
            .unwrap()
            .record()
            .clone()
    });
    let html = html_report(&pipeline.picture(), &record, &events.events());
    assert!(html.contains("<td id=\"approved-by\">by the automated gates (no person)</td>"));
    assert!(html.contains("class=\"approval automatic\""));
}

/// The pipeline of the guide's first chapter (`docs/guide/practices.md`), in `M`.
fn guide_pipeline<M: Mode, A>(builder: PipelineBuilder<M, A>) -> PipelineBuilder<M, A> {
    builder
        .stage(Stage::build("compile").run(ok()))
        .stage(Stage::test("unit").after("compile").run(ok()))
        .stage(Stage::test("lint").after("compile").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::stage("acceptance").after("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
}

/// The guide draws both pipelines with the SVG the crate makes for them, not a stale copy:
/// when a drawing changes, paste `to_svg()`'s output into the chapter (the failure prints it).
#[test]
fn the_guide_shows_the_pictures_the_crate_draws() {
    let chapter = include_str!("../docs/guide/practices.md");
    let delivery = guide_pipeline(Pipeline::<Delivery>::builder("shop"))
        .approvals(ApprovalPolicy::any_of(["rita"]).unwrap())
        .build()
        .unwrap();
    let deployment = guide_pipeline(Pipeline::<Deployment>::builder("shop"))
        .build()
        .unwrap();
    let missing: Vec<String> = [delivery.picture().to_svg(), deployment.picture().to_svg()]
        .into_iter()
        .filter(|svg| !chapter.contains(svg.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the chapter lacks these drawings:\n{}",
        missing.join("\n")
    );
}
