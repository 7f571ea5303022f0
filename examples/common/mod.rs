//! The pipeline both examples run: one build, two test stages in parallel, staging with an
//! acceptance check, and production. Only the mode differs between the examples.

use tollgate::executor::{ExecutorError, StageContext, from_fn};
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
    Ok(StageOutcome::success()
        .log(format!("deploy {} to {env}", artifact.digest))
        .output("error_rate", "0.002"))
}

/// The stages, bound to their executors.
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

/// Prints one move.
pub fn moved(from: &str, to: &str, note: impl std::fmt::Display) {
    println!("  {from:>8} -> {to:<9} {note}");
}

/// Prints the logs of the last step a release ran.
pub fn logs(record: &AnyRelease) {
    if let Some(step) = record.steps().last() {
        for stage in &step.stages {
            for line in &stage.logs {
                println!("             [{}] {}", stage.id, line.text);
            }
        }
    }
}
