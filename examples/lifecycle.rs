//! A fleet: Dev → Test → Production (two regions, deployed in waves), three releases in
//! flight, an older release refused over a newer one, and a rollback in production, with the
//! dashboard printed after each step.
//!
//! Every deploy stage is a real command (`sh -c`, through the process executor): it copies
//! the release's artifact into the directory that stands for its environment and checks the
//! copy's digest, in a scratch area removed at the end. Promotion, rollback and redeploy run
//! only that deploy stage: nothing is built or tested again.
//!
//! Run with `cargo run --example lifecycle` (Unix only).

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::executor::block_on;
use tollgate::executor::ProcessExecutor;
use tollgate::fleet::{Actor, Fleet, FleetOptions, Lifecycle, Phase, RollbackPolicy};
use tollgate::prelude::*;

/// The build: an "application" file per release, its digest reported as the artifact.
const COMPILE: &str = r#"
set -e
mkdir -p "builds/$TOLLGATE_RELEASE"
printf 'shop %s (revision %s)\n' "$TOLLGATE_RELEASE" "$TOLLGATE_REVISION" > "builds/$TOLLGATE_RELEASE/app"
digest=$( (sha256sum "builds/$TOLLGATE_RELEASE/app" 2>/dev/null || shasum -a 256 "builds/$TOLLGATE_RELEASE/app") | cut -d' ' -f1)
echo "::artifact app sha256:$digest"
"#;

/// The tests: the file is there and names its release.
const UNIT: &str = r#"grep -q "$TOLLGATE_RELEASE" "builds/$TOLLGATE_RELEASE/app""#;

/// Deploy and verify: copy the tested file into the environment's directory, then check that
/// the copy has the tested digest.
const DEPLOY: &str = r#"
set -e
mkdir -p "envs/$TOLLGATE_ENVIRONMENT"
cp "builds/$TOLLGATE_RELEASE/app" "envs/$TOLLGATE_ENVIRONMENT/app"
digest=$( (sha256sum "envs/$TOLLGATE_ENVIRONMENT/app" 2>/dev/null || shasum -a 256 "envs/$TOLLGATE_ENVIRONMENT/app") | cut -d' ' -f1)
test "sha256:$digest" = "$TOLLGATE_ARTIFACT_DIGEST"
"#;

fn main() -> Result<(), Box<dyn StdError>> {
    let scratch = std::env::temp_dir().join(format!("tollgate-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = block_on(run(&scratch));
    std::fs::remove_dir_all(&scratch)?;
    println!("\nremoved {}", scratch.display());
    result
}

async fn run(work: &Path) -> Result<(), Box<dyn StdError>> {
    let sh = |script: &str| ProcessExecutor::shell(script).current_dir(work);
    let pipeline = Arc::new(
        Pipeline::<Delivery>::builder("shop")
            .stage(Stage::build("compile").run(sh(COMPILE)))
            .stage(Stage::test("unit").after("compile").run(sh(UNIT)))
            .stage(Stage::stage("acceptance").run(sh("true")))
            .stage(Stage::deploy("roll-out").run(sh(DEPLOY)))
            .approvals(ApprovalPolicy::any_of(["rita"])?)
            .build()?,
    );
    let lifecycle = Lifecycle::new([
        Phase::new("dev").environment("dev")?,
        Phase::new("test").environment("test")?,
        Phase::new("production")
            .wave(["eu-west"])?
            .wave(["us-east"])?
            .entered_by(["rita"])?,
    ])?;
    let options = FleetOptions {
        rollback: RollbackPolicy::people(["rita"])?,
        ..FleetOptions::default()
    };
    let fleet = Fleet::open(Arc::clone(&pipeline), lifecycle, options).await?;
    let ci = || Actor::automation("ci");
    let rita = Actor::person("rita")?;

    println!("== three releases built and tested once each");
    let mut tested = Vec::new();
    for (id, rev) in [("1.0", "a1f3e09"), ("1.1", "b27c4d1"), ("1.2", "c9e0f55")] {
        let built = pipeline
            .start(id, Revision::new(rev, "dana")?)?
            .build(&pipeline)
            .await?;
        let artifact = built.artifact().clone();
        let release = built.test(&pipeline, &artifact).await?;
        fleet.register(&release).await?;
        println!("{id}: {}", artifact.digest.short());
        tested.push(release);
    }
    let mut tested = tested.into_iter();
    let (r10, r11, r12) = (
        tested.next().ok_or("1.0")?,
        tested.next().ok_or("1.1")?,
        tested.next().ok_or("1.2")?,
    );
    print!("{}", fleet.ledger());

    println!("\n== 1.0 through dev and test, approved by rita, then production in waves");
    fleet.promote(&r10, "dev", ci()).await?;
    fleet.promote(&r10, "test", ci()).await?;
    let r10 = approve(&pipeline, r10).await?;
    fleet.promote(&r10, "eu-west", rita.clone()).await?;
    fleet.promote(&r10, "us-east", rita.clone()).await?;
    print!("{}", fleet.ledger());

    println!("\n== 1.1 the same way; 1.2 reaches dev");
    fleet.promote(&r11, "dev", ci()).await?;
    fleet.promote(&r11, "test", ci()).await?;
    let r11 = approve(&pipeline, r11).await?;
    fleet.promote(&r11, "eu-west", rita.clone()).await?;
    fleet.promote(&r11, "us-east", rita.clone()).await?;
    fleet.promote(&r12, "dev", ci()).await?;
    print!("{}", fleet.ledger());

    println!("\n== 1.0 asked for in dev, where 1.2 runs: refused");
    match fleet.promote(&r10, "dev", ci()).await {
        Err(error) => println!("refused: {error}"),
        Ok(d) => return Err(format!("1.0 went over 1.2 in dev: {d:?}").into()),
    }
    print!("{}", fleet.ledger());

    println!("\n== errors in eu-west: the error-rate monitor rolls it back to 1.0");
    let back = fleet
        .rollback(
            "eu-west",
            Actor::automation("error-rate monitor"),
            "5xx above 2%",
        )
        .await?;
    println!(
        "{} in {}: {} ({})",
        back.kind,
        back.environment,
        back.release,
        back.digest.short()
    );
    print!("{}", fleet.ledger());

    println!(
        "\n== the fleet advances on its own: test is entered automatically once dev is passed"
    );
    for d in fleet.advance("ci").await? {
        println!(
            "{} into {} by {} ({})",
            d.release, d.environment, d.by, d.kind
        );
    }
    print!("{}", fleet.ledger());

    check_directories(work, &fleet)
}

/// Where the file of `env` lives.
/// The directories say the same as the ledger: each holds the digest live there.
fn check_directories(work: &Path, fleet: &Fleet<Delivery>) -> Result<(), Box<dyn StdError>> {
    // The directories say the same as the ledger.
    for env in ["dev", "test", "eu-west", "us-east"] {
        let live = fleet.ledger().live_in(env).ok_or("nothing live")?.clone();
        let file = FileArtifact::open(path(work, env))?;
        if *file.digest() != live.digest {
            return Err(format!(
                "{env} holds {}, the ledger says {}",
                file.digest(),
                live.digest
            )
            .into());
        }
        println!(
            "{env}: {}",
            std::fs::read_to_string(path(work, env))?.trim()
        );
    }
    Ok(())
}

/// A person's approval: rita signs off, and the release moves to Approved.
async fn approve(
    pipeline: &Pipeline<Delivery>,
    tested: Release<Tested, Delivery>,
) -> Result<Release<Approved, Delivery>, Box<dyn StdError>> {
    let artifact = tested.artifact().clone();
    let staged = tested.stage(pipeline, &artifact).await?;
    let approval = pipeline
        .sign_off(staged.id().as_str(), "rita", "release notes ok")
        .await?;
    Ok(staged.approve(pipeline, approval).await?)
}

/// Where the file standing for `env`'s deployment lives.
fn path(work: &Path, env: &str) -> PathBuf {
    work.join("envs").join(env).join("app")
}
