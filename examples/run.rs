//! Runs a pipeline spec for real: `cargo run --example run -- examples/specs/shop.toml`.
//!
//! It makes a scratch git repository (with the `git` program), commits a small project to it
//! and tags it, then builds the pipeline the spec describes (in the mode it names) and takes
//! one release of that commit through every move, running each stage's command in the
//! repository with the process executor. Deploys go to directories under `$DEPLOY_ROOT`, a
//! folder beside the repository. It prints a line per stage as it ends, and a summary.
//!
//! A delivery spec needs a person: the release is signed off by `--approve-as NAME` (by
//! default the first person its approval policy names). A gate that is pending until a
//! known time (a soak, a wait timer) is waited for, up to `--max-wait` (default `60s`).
//!
//! The exit code says how it went:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | deployed |
//! | 1 | a stage failed (or timed out, or was cancelled) |
//! | 2 | a gate closed, or the approval was refused |
//! | 3 | a gate is still pending after `--max-wait`: the release is parked |
//! | 64 | bad arguments |
//! | 65 | the spec is malformed or does not build |
//! | 69 | the scratch repository could not be made (no `git`?) |
//! | 70 | anything else |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use tollgate::engine::{Event, EventLog, Observer, observer_fn};
use tollgate::executor::StageStatus;
use tollgate::gate::GateError;
use tollgate::lifecycle::ModeKind;
use tollgate::pipeline::{NoApprovals, PipelineBuilder, WithApprovals};
use tollgate::prelude::*;
use tollgate::release::{Mode, MoveError, State};
use tollgate::spec::{GateRegistry, PipelineSpec};
use tollgate::time::parse_duration;

/// The command line.
struct Args {
    spec: PathBuf,
    approve_as: Option<String>,
    max_wait: Duration,
    keep: bool,
    /// Where to write the run's HTML report (`--report PATH`), if anywhere.
    report: Option<PathBuf>,
    /// Every event of the run, for the report.
    log: EventLog,
}

const USAGE: &str = "usage: run [--approve-as NAME] [--max-wait DURATION] [--keep] [--report PATH] SPEC.toml|SPEC.json";

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let (mut spec, mut approve_as, mut max_wait, mut keep, mut report) =
        (None, None, Duration::from_secs(60), false, None);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("approve-as") => approve_as = Some(parser.value()?.string()?),
            Long("max-wait") => {
                let text = parser.value()?.string()?;
                max_wait = parse_duration(&text).map_err(|e| e.to_string())?;
            }
            Long("keep") => keep = true,
            Long("report") => report = Some(PathBuf::from(parser.value()?)),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(path) if spec.is_none() => spec = Some(PathBuf::from(path)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Args {
        spec: spec.ok_or("missing the spec file")?,
        approve_as,
        max_wait,
        keep,
        report,
        log: EventLog::new(),
    })
}

/// How a run ended, and its exit code.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Deployed = 0,
    StageFailed = 1,
    Refused = 2,
    Parked = 3,
    Usage = 64,
    BadSpec = 65,
    NoRepository = 69,
    Other = 70,
}

fn main() -> ExitCode {
    let outcome = match parse_args() {
        Ok(args) => run(&args),
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            Outcome::Usage
        }
    };
    println!("exit {} ({outcome:?})", outcome as u8);
    ExitCode::from(outcome as u8)
}

fn run(args: &Args) -> Outcome {
    let mut spec = match PipelineSpec::from_path(&args.spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::BadSpec;
        }
    };
    let scratch = match Scratch::new(&spec) {
        Ok(scratch) => scratch,
        Err(e) => {
            eprintln!("error: cannot make the scratch repository: {e}");
            return Outcome::NoRepository;
        }
    };
    // Every command finds the deploy root in its environment.
    let deploy_root = scratch.deploy_root.display().to_string();
    for command in spec.stages.iter_mut().filter_map(|s| s.run.as_mut()) {
        command
            .env
            .insert("DEPLOY_ROOT".into(), deploy_root.clone());
    }
    let outcome = match spec.mode {
        ModeKind::Delivery => delivery(&spec, &scratch, args),
        ModeKind::Deployment => deployment(&spec, &scratch, args),
    };
    let outcome = outcome.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        match e.kind() {
            ErrorKind::InvalidDefinition => Outcome::BadSpec,
            _ => Outcome::Other,
        }
    });
    scratch.finish(args.keep);
    outcome
}

/// The engine the spec sets up, printing a line per stage as it ends.
fn engine(spec: &PipelineSpec, log: &EventLog) -> Result<tollgate::engine::Engine, Error> {
    let started = Instant::now();
    let log = log.clone();
    let progress = observer_fn(move |event: &Event| {
        log.observe(event);
        let at = started.elapsed().as_secs_f64();
        match event {
            Event::StepStarted { step, stages, .. } => {
                println!("[{at:7.2}s] {step}: {stages} stages");
            }
            Event::AttemptFailed {
                stage,
                attempt,
                status,
                ..
            } => {
                println!("[{at:7.2}s]   ~ {stage}: attempt {attempt} {status}");
            }
            Event::StageFinished {
                stage,
                status,
                attempts,
                ..
            } => {
                // A skip is not a failure of its own (a condition said no, or something
                // before it failed, which has its own line).
                let mark = match status {
                    s if s.is_success() => "ok",
                    StageStatus::Skipped => "skip",
                    _ => "FAIL",
                };
                let tries = if *attempts > 1 {
                    format!(" after {attempts} attempts")
                } else {
                    String::new()
                };
                println!("[{at:7.2}s]   {mark:<4} {stage}: {status}{tries}");
            }
            _ => {}
        }
    });
    Ok(spec.engine.to_builder().observer(progress).build()?)
}

fn delivery(spec: &PipelineSpec, scratch: &Scratch, args: &Args) -> Result<Outcome, Error> {
    let pipeline =
        PipelineBuilder::<Delivery, WithApprovals>::from_spec(spec, &GateRegistry::new())?
            .engine(engine(spec, &args.log)?)
            .build()?;
    let person = match &args.approve_as {
        Some(name) => name.clone(),
        None => pipeline
            .approval_policy()
            .approvers()
            .next()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
    };
    block_on(async {
        let staged = match to_staged(&pipeline, scratch, args).await? {
            Ok(staged) => staged,
            Err(outcome) => return Ok(outcome),
        };
        println!("approval: {person} signs off release {}", staged.id());
        let approved = waiting(&pipeline, args, staged, async |staged| {
            let approval = match pipeline
                .sign_off(
                    staged.id().as_str(),
                    &person,
                    "approved from the command line",
                )
                .await
            {
                Ok(approval) => approval,
                Err(e) => return Err((staged, MoveFailure::from(&e))),
            };
            staged.approve(&pipeline, approval).await.map_err(split)
        })
        .await;
        deploy(&pipeline, scratch, args, approved).await
    })
}

fn deployment(spec: &PipelineSpec, scratch: &Scratch, args: &Args) -> Result<Outcome, Error> {
    let pipeline =
        PipelineBuilder::<Deployment, NoApprovals>::from_spec(spec, &GateRegistry::new())?
            .engine(engine(spec, &args.log)?)
            .build()?;
    block_on(async {
        let staged = match to_staged(&pipeline, scratch, args).await? {
            Ok(staged) => staged,
            Err(outcome) => return Ok(outcome),
        };
        let approved = waiting(&pipeline, args, staged, async |staged| {
            staged.auto_approve(&pipeline).await.map_err(split)
        })
        .await;
        deploy(&pipeline, scratch, args, approved).await
    })
}

type Moved<N, M> = Result<Release<N, M>, (Outcome, AnyRelease)>;

/// Starts the release of the scratch commit and takes it to Staged.
async fn to_staged<M: Mode>(
    pipeline: &Pipeline<M>,
    scratch: &Scratch,
    args: &Args,
) -> Result<Result<Release<Staged, M>, Outcome>, Error> {
    let revision = Revision::new(&scratch.commit, "dana")?.message("the commit the runner made");
    let fresh = pipeline.start(format!("{}-1", pipeline.name()), revision)?;
    println!(
        "release {} of commit {} ({} mode)\n",
        fresh.id(),
        scratch.commit,
        M::KIND
    );
    let built = match waiting(pipeline, args, fresh, async |r| {
        r.build(pipeline).await.map_err(split)
    })
    .await
    {
        Ok(built) => built,
        Err((outcome, record)) => return Ok(Err(finish(pipeline, args, &record, outcome))),
    };
    let artifact = built.artifact().clone();
    println!("artifact: {} {}\n", artifact.name, artifact.digest);
    let tested = match waiting(pipeline, args, built, async |r| {
        r.test(pipeline, &artifact).await.map_err(split)
    })
    .await
    {
        Ok(tested) => tested,
        Err((outcome, record)) => return Ok(Err(finish(pipeline, args, &record, outcome))),
    };
    match waiting(pipeline, args, tested, async |r| {
        r.stage(pipeline, &artifact).await.map_err(split)
    })
    .await
    {
        Ok(staged) => Ok(Ok(staged)),
        Err((outcome, record)) => Ok(Err(finish(pipeline, args, &record, outcome))),
    }
}

async fn deploy<M: Mode>(
    pipeline: &Pipeline<M>,
    scratch: &Scratch,
    args: &Args,
    approved: Moved<Approved, M>,
) -> Result<Outcome, Error> {
    let approved = match approved {
        Ok(approved) => approved,
        Err((outcome, record)) => return Ok(finish(pipeline, args, &record, outcome)),
    };
    let artifact = approved.artifact().clone();
    match approved.deploy(pipeline, &artifact).await {
        Ok(live) => {
            let outcome = finish(pipeline, args, live.record(), Outcome::Deployed);
            println!("deployed to {}:", scratch.deploy_root.display());
            for file in files_under(&scratch.deploy_root) {
                println!("  {file}");
            }
            Ok(outcome)
        }
        Err(e) => {
            let outcome = outcome_of(e.error());
            eprintln!("deploy: {}", e.error());
            Ok(finish(pipeline, args, e.release().record(), outcome))
        }
    }
}

/// A move's failure as the release handed back and what went wrong.
fn split<S: State, M: Mode>(e: MoveError<S, M>) -> (Release<S, M>, MoveFailure) {
    let failure = MoveFailure::from(e.error());
    (e.into_release(), failure)
}

/// Takes a move, waiting out a pending gate that says when it decides (up to `--max-wait`).
async fn waiting<S: State, N: State, M: Mode>(
    pipeline: &Pipeline<M>,
    args: &Args,
    mut release: Release<S, M>,
    mut take: impl AsyncFnMut(Release<S, M>) -> Result<Release<N, M>, (Release<S, M>, MoveFailure)>,
) -> Moved<N, M> {
    let deadline = pipeline.clock().now().saturating_add(args.max_wait);
    loop {
        match take(release).await {
            Ok(moved) => return Ok(moved),
            Err((back, failure)) => {
                let wait_until = failure.until.filter(|&until| until <= deadline);
                if let (ErrorKind::GatePending, Some(until)) = (failure.kind, wait_until) {
                    println!("waiting: {}", failure.message);
                    pipeline.clock().sleep_until(until).await;
                    release = back;
                } else {
                    eprintln!("{}: {}", back.id(), failure.message);
                    return Err((outcome_kind(failure.kind), back.record().clone()));
                }
            }
        }
    }
}

/// What a move failed with: its kind, its message, and until when a pending gate waits.
#[derive(Debug)]
struct MoveFailure {
    kind: ErrorKind,
    message: String,
    until: Option<tollgate::time::Timestamp>,
}

impl From<&Error> for MoveFailure {
    fn from(e: &Error) -> Self {
        MoveFailure {
            kind: e.kind(),
            message: e.to_string(),
            until: match e {
                Error::Gate(GateError::Pending { until, .. }) => *until,
                _ => None,
            },
        }
    }
}

fn outcome_of(e: &Error) -> Outcome {
    outcome_kind(e.kind())
}

fn outcome_kind(kind: ErrorKind) -> Outcome {
    match kind {
        ErrorKind::StageFailed | ErrorKind::Cancelled => Outcome::StageFailed,
        ErrorKind::GateClosed | ErrorKind::Approval => Outcome::Refused,
        ErrorKind::GatePending => Outcome::Parked,
        ErrorKind::InvalidDefinition => Outcome::BadSpec,
        _ => Outcome::Other,
    }
}

/// Prints every step the release ran, stage by stage, and returns `outcome`.
/// Prints the summary, and writes the run's HTML report when `--report` asked for one (the
/// pipeline's picture, the timeline, the logs, the gates' verdicts, who approved).
fn finish<M: Mode>(
    pipeline: &Pipeline<M>,
    args: &Args,
    record: &AnyRelease,
    outcome: Outcome,
) -> Outcome {
    let outcome = summary(record, outcome);
    if let Some(path) = &args.report {
        let html = tollgate::picture::html_report(&pipeline.picture(), record, &args.log.events());
        match std::fs::write(path, html) {
            Ok(()) => println!("report written to {}", path.display()),
            Err(e) => eprintln!("error: cannot write the report {}: {e}", path.display()),
        }
    }
    outcome
}

fn summary(record: &AnyRelease, outcome: Outcome) -> Outcome {
    let mut text = format!("\nsummary of {} ({}):\n", record.id(), record.state());
    for step in record.steps() {
        let took = step.finished_at.saturating_since(step.started_at);
        let _ = writeln!(
            text,
            "  {} step: {} in {:.1}s",
            step.step,
            if step.succeeded() {
                "succeeded"
            } else {
                "failed"
            },
            took.as_secs_f64()
        );
        for stage in &step.stages {
            let attempts = stage.attempts().len();
            let plural = if attempts == 1 { "" } else { "s" };
            let _ = writeln!(
                text,
                "    {:<28} {} ({attempts} attempt{plural})",
                stage.id.as_str(),
                stage.status
            );
            if !stage.status.is_success() {
                // What a failed stage printed last tells why.
                for line in stage.logs.iter().rev().take(10).rev() {
                    let _ = writeln!(text, "      | {}", line.text);
                }
            }
        }
    }
    for gate in record.gates() {
        let _ = writeln!(
            text,
            "  gate {} on {}: {}",
            gate.gate, gate.mv, gate.verdict
        );
    }
    if let Some(approval) = record.approval() {
        let _ = writeln!(
            text,
            "  approved by {}: {}",
            approval.approver, approval.reason
        );
    }
    print!("{text}");
    outcome
}

fn files_under(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                files.push(rel.display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// The scratch area: a git repository with one tagged commit, and the deploy root beside it.
struct Scratch {
    root: PathBuf,
    deploy_root: PathBuf,
    commit: String,
}

impl Scratch {
    fn new(spec: &PipelineSpec) -> Result<Self, Box<dyn std::error::Error>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let root =
            std::env::temp_dir().join(format!("tollgate-run-{}-{nanos}", std::process::id()));
        let repo = root.join("repo");
        let deploy_root = root.join("deploy");
        std::fs::create_dir_all(repo.join("src"))?;
        std::fs::create_dir_all(&deploy_root)?;
        std::fs::write(
            repo.join("README.md"),
            format!("# {}\n\nMade by tollgate's runner.\n", spec.name),
        )?;
        std::fs::write(
            repo.join("src/main.sh"),
            "#!/bin/sh\necho hello from the pipeline\n",
        )?;
        let git = |args: &[&str]| -> Result<String, Box<dyn std::error::Error>> {
            let out = Command::new("git")
                .args([
                    "-c",
                    "user.name=dana",
                    "-c",
                    "user.email=dana@example.com",
                    "-c",
                    "init.defaultBranch=main",
                    "-c",
                    "commit.gpgsign=false",
                    "-c",
                    "tag.gpgsign=false",
                ])
                .args(args)
                .current_dir(&repo)
                .output()?;
            if !out.status.success() {
                return Err(format!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
                .into());
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        git(&["init", "--quiet"])?;
        git(&["add", "."])?;
        git(&["commit", "--quiet", "-m", "the commit the runner made"])?;
        git(&["tag", "v0.9.0"])?;
        let commit = git(&["rev-parse", "--short", "HEAD"])?;
        // Every stage runs in the repository.
        std::env::set_current_dir(&repo)?;
        println!("scratch repository {} at commit {commit}", repo.display());
        Ok(Scratch {
            root,
            deploy_root,
            commit,
        })
    }

    fn finish(&self, keep: bool) {
        if keep {
            println!("kept {}", self.root.display());
        } else if std::env::set_current_dir(std::env::temp_dir()).is_ok() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
