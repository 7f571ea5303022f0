//! Everything `delivery.rs` and `deployment.rs` share: the pipeline's stages, the run's
//! printing (release events as they happen, stage logs, what a release waits for) and its
//! HTML report. The two examples differ only in the decision: the mode, and who approves.
//! `shell.rs` and `release_bot.rs` use parts of it too.

use std::path::PathBuf;

use tollgate::engine::{Engine, Event, EventLog, Observer};
use tollgate::executor::{ExecutorError, StageContext, from_fn};
use tollgate::lifecycle::Mode;
use tollgate::prelude::*;

/// The "compiler": produces the artifact, whose digest is fixed from here on.
#[allow(clippy::unnecessary_wraps)] // The signature every executor closure has.
fn compile(ctx: &StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
    let binary = format!("shop-api built from {}", ctx.revision());
    let artifact = ArtifactRef::from_bytes("shop-api", binary.as_bytes())
        .with_metadata("revision", ctx.revision());
    Ok(StageOutcome::success()
        .log(format!("cargo build --release ({} bytes)", binary.len()))
        .output("digest", artifact.digest.to_string())
        .artifact(artifact))
}

fn check(what: &'static str) -> impl Fn(&StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
    move |ctx| {
        let artifact = ctx.artifact().ok_or("no artifact to test")?;
        Ok(StageOutcome::success().log(format!("{what}: {} ok", artifact.digest.short())))
    }
}

fn deploy_to(ctx: &StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
    let env = ctx.environment().ok_or("no environment")?;
    let artifact = ctx.artifact().ok_or("no artifact to deploy")?;
    Ok(StageOutcome::success().log(format!("deploy {} to {env}", artifact.digest)))
}

/// The stages, bound to their executors: one build, two test stages in parallel, staging
/// with an acceptance check, production.
pub fn stages() -> Vec<Stage> {
    vec![
        Stage::build("compile").run(from_fn(compile)),
        Stage::test("unit")
            .after("compile")
            .run(from_fn(check("unit tests"))),
        Stage::test("lint")
            .after("compile")
            .run(from_fn(check("clippy"))),
        Stage::stage("staging").run(from_fn(deploy_to)),
        Stage::stage("acceptance")
            .after("staging")
            .run(from_fn(check("acceptance tests"))),
        Stage::deploy("production").run(from_fn(deploy_to)),
    ]
}

/// Prints each release event as it happens (without its time, so two runs compare line by
/// line) and keeps every event for the report.
struct Printer(EventLog);

impl Observer for Printer {
    fn observe(&self, event: &Event) {
        self.0.observe(event);
        if event.is_release_event() {
            let line = event.to_string();
            // `@<ms>ms release: what happened`: the time differs from run to run.
            let what = line.split_once(' ').map_or(line.as_str(), |(_, what)| what);
            println!("  * {what}");
        }
    }
}

/// One run of an example: its events and where to write the report, if anywhere
/// (`--report PATH`).
pub struct Run {
    events: EventLog,
    report: Option<PathBuf>,
}

impl Run {
    /// Reads the command line.
    pub fn from_args() -> Run {
        let mut args = std::env::args().skip(1);
        let mut report = None;
        while let Some(arg) = args.next() {
            if arg == "--report" {
                report = args.next().map(PathBuf::from);
            }
        }
        Run {
            events: EventLog::new(),
            report,
        }
    }

    /// The engine, with this run's observer.
    pub fn engine(&self) -> Result<Engine, Error> {
        Ok(Engine::builder()
            .observer(Printer(self.events.clone()))
            .build()?)
    }

    /// Prints the end of the run and writes the report when asked to.
    pub fn finish<M: Mode>(
        &self,
        pipeline: &Pipeline<M>,
        record: &AnyRelease,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let digest = record.artifact().map(|a| a.digest.short().to_string());
        println!(
            "\n{} is {}: the bytes tested are the bytes deployed ({})",
            record.id(),
            record.state(),
            digest.unwrap_or_default()
        );
        if let Some(path) = &self.report {
            let html =
                tollgate::picture::html_report(&pipeline.picture(), record, &self.events.events());
            std::fs::write(path, html)?;
            println!("report written to {}", path.display());
        }
        Ok(())
    }
}

/// Prints the pipeline and its picture.
pub fn show<M: Mode>(pipeline: &Pipeline<M>) {
    println!(
        "pipeline `{}` ({}); the whole picture, in Mermaid:\n",
        pipeline.name(),
        pipeline.picture().mode()
    );
    println!("{}", pipeline.picture().to_mermaid());
}

/// Prints the logs of the last step a release ran.
pub fn logs(record: &AnyRelease) {
    if let Some(step) = record.steps().last() {
        for stage in &step.stages {
            for line in &stage.logs {
                println!("      [{}] {}", stage.id, line.text);
            }
        }
    }
}

/// Prints where a release stands and what its next move waits for.
pub async fn waiting<M: Mode>(pipeline: &Pipeline<M>, record: &AnyRelease) {
    println!("\n  state: {}; what the next move needs:", record.state());
    for line in pipeline.explain(record).await.to_string().lines() {
        println!("  | {line}");
    }
    println!();
}

/// The artifact is checked at every move: a rebuilt binary is refused, and the release is
/// handed back unmoved.
pub async fn try_a_rebuilt_binary<M: Mode>(
    pipeline: &Pipeline<M>,
    tested: Release<Tested, M>,
) -> Release<Tested, M> {
    let rebuilt = ArtifactRef::from_bytes("shop-api", b"a different build");
    match tested.stage(pipeline, &rebuilt).await {
        Ok(_) => unreachable!("a different artifact never moves a release"),
        Err(refused) => refused.into_release(),
    }
}

/// Continuous delivery's button: the author may not press it for her own change; a release
/// manager does.
#[allow(dead_code)] // Only the delivery twin has a button.
pub async fn press_the_button(
    pipeline: &Pipeline<Delivery>,
    release: &str,
) -> Result<Approval, Error> {
    match pipeline.sign_off(release, "dana", "ship it").await {
        Err(refused) => println!("  dana presses the button: refused: {refused}"),
        Ok(_) => unreachable!("authors never approve their own change"),
    }
    println!("  rita presses the button");
    pipeline
        .sign_off(release, "rita", "checkout flow signed off by product")
        .await
}

/// Prints one move (for examples that print their own moves rather than the events).
#[allow(dead_code)] // shell.rs prints its own moves; the twins print the events.
pub fn moved(from: &str, to: &str, note: impl std::fmt::Display) {
    println!("  {from:>8} -> {to:<9} {note}");
}
