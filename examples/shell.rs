//! A real pipeline of shell commands, run end to end through the typed lifecycle: a build
//! that writes a file and reports its digest, two test stages in parallel, a lint stage that
//! fails once and passes on its retry, and deploys to staging and production, each a
//! directory in a scratch area that is removed at the end.
//!
//! Run with `cargo run --example shell` (Unix only: every stage is `sh -c`).

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::executor::block_on;
use tollgate::engine::{Engine, Event, observer_fn};
use tollgate::executor::{ExecutorError, LogLine, ProcessExecutor, Stream};
use tollgate::gate::from_fn;
use tollgate::graph::{Backoff, RetryPolicy};
use tollgate::prelude::*;

/// The build: writes the binary into `dist/` and reports its digest. `sha256sum` is GNU's
/// name for the hasher; macOS calls it `shasum -a 256`.
const COMPILE: &str = r#"
set -e
mkdir -p dist
printf 'shop-api %s, built for release %s\n' "$TOLLGATE_REVISION" "$TOLLGATE_RELEASE" > dist/shop-api
echo "compiled dist/shop-api ($(wc -c < dist/shop-api) bytes)"
digest=$( (sha256sum dist/shop-api 2>/dev/null || shasum -a 256 dist/shop-api) | cut -d' ' -f1)
echo "::output path=dist/shop-api"
echo "::artifact shop-api sha256:$digest"
"#;

/// Unit tests: check that the file on disk is the artifact the build reported.
const UNIT: &str = r#"
set -e
echo "checking $TOLLGATE_INPUT_COMPILE_PATH against $TOLLGATE_ARTIFACT_DIGEST"
grep -q "$TOLLGATE_REVISION" "$TOLLGATE_INPUT_COMPILE_PATH"
echo "unit: 42 passed"
"#;

/// Integration tests, with a warning on standard error.
const INTEGRATION: &str = r#"
echo "integration: starting the service from $TOLLGATE_INPUT_COMPILE_PATH"
echo "warning: test_checkout took 1.2s" >&2
echo "integration: 7 passed"
"#;

/// The linter fails on its first attempt (a cold cache, say) and passes on the second.
const LINT: &str = r#"
if [ "$TOLLGATE_ATTEMPT" -eq 1 ]; then
    echo "lint: downloading the rule cache"
    echo "error: rule cache corrupt, giving up" >&2
    exit 101
fi
echo "lint: 0 warnings"
"#;

/// A deploy: copies the artifact into the environment's directory and reports it healthy.
const DEPLOY: &str = r#"
set -e
mkdir -p "envs/$TOLLGATE_ENVIRONMENT"
cp dist/shop-api "envs/$TOLLGATE_ENVIRONMENT/shop-api"
echo "deployed $TOLLGATE_ARTIFACT_NAME ($TOLLGATE_ARTIFACT_DIGEST) to $TOLLGATE_ENVIRONMENT"
echo "::output healthy=yes"
"#;

// The printing helpers the delivery and deployment examples share; this one uses `moved`.
#[allow(dead_code)]
mod common;
use common::moved;

fn main() -> Result<(), Box<dyn StdError>> {
    let scratch = Scratch::new()?;
    let transcript = Transcript::default();
    let result = block_on(run(scratch.path(), &transcript));
    // After a failed move, what its stages printed tells why.
    transcript.print();
    let path = scratch.remove()?;
    println!("\nremoved {}", path.display());
    result
}

async fn run(work: &Path, transcript: &Transcript) -> Result<(), Box<dyn StdError>> {
    // Every stage runs in the scratch directory, and its lines are printed after its move.
    let sh = |script: &str| transcript.executor(ProcessExecutor::shell(script).current_dir(work));
    // Failed attempts and retries happen inside a move: the engine's events tell of them, in
    // order with the log lines of the attempts.
    let notes = transcript.clone();
    let engine = Engine::builder()
        .observer(observer_fn(move |event: &Event| match event {
            Event::AttemptFailed {
                stage,
                attempt,
                status,
                ..
            } => notes.note(format!("{stage} attempt {attempt} {status}")),
            Event::Retrying {
                stage,
                next_attempt,
                delay,
                ..
            } => notes.note(format!(
                "{stage} retries in {delay:?} (attempt {next_attempt})"
            )),
            _ => {}
        }))
        .build()?;
    let pipeline = Pipeline::<Deployment>::builder("shop")
        .engine(engine)
        .stage(Stage::build("compile").run(sh(COMPILE)))
        .stage(Stage::test("unit").after("compile").run(sh(UNIT)))
        .stage(
            Stage::test("integration")
                .after("compile")
                .run(sh(INTEGRATION)),
        )
        .stage(
            Stage::test("lint")
                .retry(RetryPolicy::attempts(2).backoff(Backoff::Fixed {
                    delay: Duration::from_millis(200),
                }))
                .run(sh(LINT)),
        )
        .stage(Stage::stage("staging").run(sh(DEPLOY)))
        .stage(Stage::deploy("production").run(sh(DEPLOY)))
        .gate(Move::Approve, healthy_in_staging())
        .build()?;

    println!("pipeline `{}` in {}:\n", pipeline.name(), work.display());
    let revision = Revision::new("4f2a9c1", "dana")?.message("Add checkout flow");
    let release = pipeline.start("shop-1.4.0", revision)?;
    println!("release {} of revision 4f2a9c1 by dana:", release.id());

    let built = release.build(&pipeline).await?;
    let reported = built.artifact().clone();
    moved("commit", "built", &reported.digest);
    transcript.print();

    // From here on every move is handed the file itself: it is hashed again, and a file
    // changed on disk since the build would be refused.
    let artifact = FileArtifact::open(work.join("dist/shop-api"))?;
    let tested = built.test(&pipeline, &artifact).await?;
    moved(
        "built",
        "tested",
        "unit, integration and lint ran in parallel",
    );
    transcript.print();

    let staged = tested.stage(&pipeline, &artifact).await?;
    moved("tested", "staged", pipeline.staging());
    transcript.print();

    let approved = staged.auto_approve(&pipeline).await?;
    for verdict in approved.record().gates() {
        moved(
            "staged",
            "approved",
            format!("gate `{}` is open", verdict.gate),
        );
    }

    let live = approved.deploy(&pipeline, &artifact).await?;
    moved("approved", "deployed", pipeline.production());
    transcript.print();

    let shipped = FileArtifact::open(work.join("envs/production/shop-api"))?;
    if *shipped.digest() != reported.digest {
        return Err(format!("production serves {}, not the build", shipped.digest()).into());
    }
    println!(
        "\n{} is live: production serves {}, the file built from {}",
        live.id(),
        shipped.digest().short(),
        live.record().revision().id,
    );
    Ok(())
}

/// Approval in continuous deployment: staging must have reported itself healthy.
fn healthy_in_staging() -> impl Gate {
    from_fn("staging-healthy", |ctx| {
        match ctx.release().output("staging", "healthy") {
            Some("yes") => Verdict::Open,
            Some(other) => Verdict::closed(format!("staging reported healthy={other}")),
            None => Verdict::pending("a health report from staging"),
        }
    })
}

/// What happened inside the moves, in order: the log lines of each attempt, tagged with
/// the stage and the attempt (a stage's report keeps the lines of all its attempts, but not
/// which attempt printed which), and notes on failed attempts and retries.
#[derive(Debug, Clone, Default)]
struct Transcript(Arc<Mutex<Vec<Entry>>>);

#[derive(Debug)]
enum Entry {
    Line {
        stage: String,
        attempt: u32,
        line: LogLine,
    },
    Note(String),
}

impl Transcript {
    fn executor(&self, inner: ProcessExecutor) -> Recorded {
        Recorded {
            inner,
            transcript: self.clone(),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        // The lock is only held to push or take entries, which cannot leave them half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, text: String) {
        self.entries().push(Entry::Note(text));
    }

    /// Prints, and forgets, what was recorded since the last call.
    fn print(&self) {
        for entry in std::mem::take(&mut *self.entries()) {
            match entry {
                Entry::Line {
                    stage,
                    attempt,
                    line,
                } => {
                    let stream = match line.stream {
                        Stream::Stdout => "out",
                        Stream::Stderr => "err",
                    };
                    println!("             [{stage} #{attempt} {stream}] {}", line.text);
                }
                Entry::Note(text) => println!("             ! {text}"),
            }
        }
    }
}

/// A process executor whose log lines also go to a [`Transcript`].
struct Recorded {
    inner: ProcessExecutor,
    transcript: Transcript,
}

#[async_trait]
impl Executor for Recorded {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        let (stage, attempt) = (ctx.stage().to_string(), ctx.attempt());
        let outcome = self.inner.run(ctx).await?;
        self.transcript
            .entries()
            .extend(outcome.logs.iter().map(|line| Entry::Line {
                stage: stage.clone(),
                attempt,
                line: line.clone(),
            }));
        Ok(outcome)
    }
}

/// A scratch directory under the system temp dir, removed with everything in it by
/// [`Scratch::remove`], or on drop if the example stops early.
struct Scratch(Option<PathBuf>);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("tollgate-shell-example-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().expect("present until removed")
    }

    /// Removes the directory and returns where it was.
    fn remove(mut self) -> std::io::Result<PathBuf> {
        let path = self.0.take().expect("present until removed");
        std::fs::remove_dir_all(&path)?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort on an early exit (a panic): the error being reported matters more.
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
