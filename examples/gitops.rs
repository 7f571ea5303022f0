//! GitOps with a real git repository: the desired state of each environment is a file
//! (`environments/production.toml` names a release, its digest and its configuration), a
//! reconcile loop converges a simulated cluster to it through the fleet, a hand-made change
//! on the cluster is repaired, a commit naming a digest that was never tested is refused,
//! and a `git revert` rolls production back, recorded as a rollback.
//!
//! The deploy stage is a real progressive rollout (`tollgate::rollout::Rollout`): all at
//! once in staging, a canary with analysis of the error rate in production. The last act is
//! a release whose canary fails its analysis in production: the rollout rolls it back, the
//! pass reports the failed deployment, and the passes after it hold production where the
//! rollback left it instead of trying the same canary again every minute; a new desired
//! state for production (here a `git revert`) is what moves it again.
//!
//! Reading the repository is this example's (host) code: it runs the `git` program; the
//! library has no git in it, only the `DesiredSource` trait. Run with
//! `cargo run --example gitops` (needs `git` on the PATH).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tollgate::environment::EnvironmentName;
use tollgate::executor::{Executor, ExecutorError, StageContext, from_fn};
use tollgate::fleet::{Fleet, FleetOptions, Lifecycle, Phase, RollbackPolicy, TicketStatus};
use tollgate::gate::{GateContext, MetricSource, Threshold};
use tollgate::journal::{ChainKey, MemoryJournal};
use tollgate::prelude::*;
use tollgate::reconcile::{
    Action, Desired, DesiredSource, DesiredState, Difference, Fetched, Hold, Outcome, Pass,
    Reconciler, Refusal, SourceError, SourceRevision,
};
use tollgate::rollout::{
    Analysis, Canary, Health, MetricCheck, Observed, Pause, Rollout, Strategy, Target, TargetError,
    Version, Weight,
};
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

type Error = Box<dyn std::error::Error + Send + Sync>;

// ---- the desired state: a git repository, read with the `git` program -------------------

/// Runs `git` in `dir`, returning its standard output.
fn git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The repository holding `environments/<name>.toml`, one file per environment.
#[derive(Debug, Clone)]
struct GitSource {
    repo: PathBuf,
    /// The desired state last read, for the deploy stage's configuration.
    last: Arc<Mutex<Option<DesiredState>>>,
}

impl GitSource {
    fn error(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError {
            source_name: self.repo.display().to_string(),
            message: message.to_string(),
        }
    }

    /// Reads every environment file at `revision` (`git show`, not the working tree).
    fn read(&self, revision: &str) -> Result<DesiredState, SourceError> {
        let files = git(
            &self.repo,
            &["ls-tree", "--name-only", revision, "environments/"],
        )
        .map_err(|e| self.error(e))?;
        let mut environments = BTreeMap::new();
        for file in files.lines().filter(|f| {
            Path::new(f)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        }) {
            let text = git(&self.repo, &["show", &format!("{revision}:{file}")])
                .map_err(|e| self.error(e))?;
            let name = file
                .trim_start_matches("environments/")
                .trim_end_matches(".toml");
            let env = EnvironmentName::new(name).map_err(|e| self.error(e))?;
            let desired = parse(&text).map_err(|e| self.error(format!("{file}: {e}")))?;
            environments.insert(env, desired);
        }
        Ok(DesiredState {
            revision: SourceRevision::new(revision),
            environments,
        })
    }

    /// The configuration the desired state gives `environment`.
    fn config(&self, environment: &EnvironmentName) -> BTreeMap<String, String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|s| s.environments.get(environment))
            .map(|d| d.config.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl DesiredSource for GitSource {
    // The example drives everything on its main thread with `block_on`, so a blocking
    // `git` call here holds up nothing else; a server would run it on a blocking pool.
    async fn fetch(&self, known: Option<&SourceRevision>) -> Result<Fetched, SourceError> {
        let head = git(&self.repo, &["rev-parse", "--short", "HEAD"]).map_err(|e| self.error(e))?;
        if known.is_some_and(|k| k.as_str() == head) {
            return Ok(Fetched::Unchanged);
        }
        let state = self.read(&head)?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(state.clone());
        Ok(Fetched::Changed(state))
    }
}

/// The few lines of TOML an environment file holds: `release`, `digest`, and a `[config]`
/// table of strings.
fn parse(text: &str) -> Result<Desired, String> {
    let (mut release, mut digest, mut config, mut in_config) = (None, None, BTreeMap::new(), false);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[config]" {
            in_config = true;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("not `key = \"value\"`: {line}"))?;
        let (key, value) = (key.trim(), value.trim().trim_matches('"').to_owned());
        match (in_config, key) {
            (true, _) => {
                config.insert(key.to_owned(), value);
            }
            (false, "release") => release = Some(value.parse().map_err(|e| format!("{e}"))?),
            (false, "digest") => digest = Some(value.parse().map_err(|e| format!("{e}"))?),
            (false, other) => return Err(format!("unknown key `{other}`")),
        }
    }
    let (Some(release), Some(digest)) = (release, digest) else {
        return Err("`release` and `digest` are required".to_owned());
    };
    Ok(Desired {
        version: Version { release, digest },
        config,
    })
}

// ---- the cluster: a simulated platform -----------------------------------------------------

/// One environment of the cluster: what runs, and what a deployment prepared (with its
/// configuration).
type Slot = (Observed, Option<(Version, BTreeMap<String, String>)>);

/// What runs in each environment.
#[derive(Debug, Clone, Default)]
struct Cluster(Arc<Mutex<HashMap<EnvironmentName, Slot>>>);

impl Cluster {
    fn with<R>(&self, env: &EnvironmentName, f: impl FnOnce(&mut Slot) -> R) -> R {
        f(self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(env.clone())
            .or_default())
    }
}

#[async_trait]
impl Target for Cluster {
    async fn observe(&self, env: &EnvironmentName) -> Result<Observed, TargetError> {
        Ok(self.with(env, |slot| slot.0.clone()))
    }
    async fn prepare(
        &self,
        env: &EnvironmentName,
        candidate: &Version,
        config: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        self.with(env, |slot| {
            slot.0.candidate = Some((candidate.clone(), Weight::NONE));
            slot.1 = Some((candidate.clone(), config.clone()));
        });
        Ok(())
    }
    async fn shift(&self, env: &EnvironmentName, weight: Weight) -> Result<(), TargetError> {
        self.with(env, |slot| {
            if let Some((_, w)) = &mut slot.0.candidate {
                *w = weight;
            }
        });
        Ok(())
    }
    async fn replace(
        &self,
        env: &EnvironmentName,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
    ) -> Result<(), TargetError> {
        Err(TargetError {
            action: "replace".into(),
            environment: env.clone(),
            message: "the simulation only shifts traffic".into(),
        })
    }
    async fn health(&self, _: &EnvironmentName) -> Result<Health, TargetError> {
        Ok(Health::Healthy)
    }
    async fn promote(&self, env: &EnvironmentName) -> Result<(), TargetError> {
        self.with(env, |slot| {
            if let Some((version, config)) = slot.1.take() {
                slot.0 = Observed {
                    stable: Some(version),
                    candidate: None,
                    config,
                };
            }
        });
        Ok(())
    }
    async fn abort(&self, env: &EnvironmentName) -> Result<(), TargetError> {
        self.with(env, |slot| {
            slot.0.candidate = None;
            slot.1 = None;
        });
        Ok(())
    }
}

/// The cluster as the rollout drives it: a candidate is prepared with the configuration git
/// gives its environment (the manifests), whatever the rollout itself was configured with.
#[derive(Debug, Clone)]
struct Manifests {
    cluster: Cluster,
    source: GitSource,
}

#[async_trait]
impl Target for Manifests {
    async fn observe(&self, env: &EnvironmentName) -> Result<Observed, TargetError> {
        self.cluster.observe(env).await
    }
    async fn prepare(
        &self,
        env: &EnvironmentName,
        candidate: &Version,
        _: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        let config = self.source.config(env);
        self.cluster.prepare(env, candidate, &config).await
    }
    async fn shift(&self, env: &EnvironmentName, weight: Weight) -> Result<(), TargetError> {
        self.cluster.shift(env, weight).await
    }
    async fn replace(
        &self,
        env: &EnvironmentName,
        done: u32,
        total: u32,
        surge: u32,
        unavailable: u32,
    ) -> Result<(), TargetError> {
        self.cluster
            .replace(env, done, total, surge, unavailable)
            .await
    }
    async fn health(&self, env: &EnvironmentName) -> Result<Health, TargetError> {
        self.cluster.health(env).await
    }
    async fn promote(&self, env: &EnvironmentName) -> Result<(), TargetError> {
        self.cluster.promote(env).await
    }
    async fn abort(&self, env: &EnvironmentName) -> Result<(), TargetError> {
        self.cluster.abort(env).await
    }
}

/// The share of requests each release fails: 1.2 has a bug that fails one in five.
fn error_rate(release: &str) -> f64 {
    if release == "1.2" { 0.2 } else { 0.002 }
}

/// Monitoring: an environment's error rate, the stable and the candidate release mixed by
/// the candidate's share of the traffic.
#[async_trait]
impl MetricSource for Cluster {
    async fn sample(&self, _query: &str, ctx: &GateContext<'_>) -> Option<f64> {
        let observed = self.with(ctx.environment().name(), |slot| slot.0.clone());
        let stable = observed
            .stable
            .as_ref()
            .map_or(0.0, |v| error_rate(v.release.as_str()));
        Some(match &observed.candidate {
            None => stable,
            Some((v, w)) => {
                let share = f64::from(w.get()) / 100.0;
                share * error_rate(v.release.as_str()) + (1.0 - share) * stable
            }
        })
    }
}

/// The deploy stage: a rollout per environment, all at once in staging (nobody uses it),
/// a canary under analysis in production.
#[derive(Debug)]
struct ByEnvironment {
    staging: Rollout,
    production: Rollout,
}

impl ByEnvironment {
    fn new(cluster: &Cluster, source: &GitSource) -> Self {
        let target = Manifests {
            cluster: cluster.clone(),
            source: source.clone(),
        };
        let canary = Canary::new()
            .weight(Weight::percent(10).expect("a percentage"))
            .pause(Pause::For(Duration::from_secs(300)))
            .weight(Weight::percent(50).expect("a percentage"))
            .pause(Pause::For(Duration::from_secs(300)));
        let analysis = Analysis::new([MetricCheck::new(
            "errors",
            "rate(http_requests_total{code=~\"5..\"}[1m])",
            Threshold::AtMost(0.01),
        )])
        .interval(Duration::from_secs(60));
        ByEnvironment {
            staging: Rollout::new(Strategy::AllAtOnce, target.clone()),
            production: Rollout::new(Strategy::Canary(canary), target)
                .analysis(analysis, cluster.clone()),
        }
    }
}

#[async_trait]
impl Executor for ByEnvironment {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        match ctx.environment().map(|e| e.name().as_str()) {
            Some("production") => Executor::run(&self.production, ctx).await,
            _ => Executor::run(&self.staging, ctx).await,
        }
    }
}

// ---- the timeline ------------------------------------------------------------------------

fn clock_text(start: Timestamp, now: Timestamp) -> String {
    let secs = now.saturating_since(start).as_secs();
    format!("+{:02}:{:02}", secs / 60, secs % 60)
}

fn difference(d: &Difference) -> String {
    match d {
        Difference::Release { desired, live } => format!(
            "git says {}, the ledger has {}",
            desired.release,
            live.as_ref()
                .map_or("nothing".to_owned(), |v| v.release.to_string())
        ),
        Difference::Stable { expected, observed } => format!(
            "the cluster runs {} instead of {}",
            observed
                .as_ref()
                .map_or("nothing".to_owned(), |v| v.release.to_string()),
            expected
                .as_ref()
                .map_or("nothing".to_owned(), |v| v.release.to_string())
        ),
        Difference::Candidate { observed, weight } => {
            format!("a stray candidate {} takes {weight}", observed.release)
        }
        Difference::Config {
            key,
            desired,
            observed,
        } => format!(
            "config {key} is {} instead of {}",
            observed.as_deref().unwrap_or("unset"),
            desired.as_deref().unwrap_or("unset")
        ),
    }
}

fn action(a: &Action) -> String {
    match a {
        Action::Promote { release } => format!("promoted {release}"),
        Action::Rollback { from, to } => format!("rolled back {from} → {to}"),
        Action::Repair { release } => format!("repaired drift: redeployed {release}"),
    }
}

fn print_pass(start: Timestamp, pass: &Pass) {
    let when = clock_text(start, pass.at);
    if pass.converged() {
        println!(
            "{when}  pass at {}: all {} environments in sync",
            pass.revision, pass.environments
        );
        return;
    }
    for event in &pass.events {
        let what = match &event.outcome {
            Outcome::Converged { action: a, ticket } => format!("{} (ticket {ticket})", action(a)),
            Outcome::Queued { action: a, .. } => format!("{} queued", action(a)),
            Outcome::Failed {
                action: a, reason, ..
            } => format!("{} FAILED: {reason}", action(a)),
            Outcome::Held {
                hold: Hold::Pinned { by, live, .. },
            } => {
                format!("held: {by} rolled back to {live}")
            }
            Outcome::Held {
                hold: Hold::Failed { ticket, release },
            } => format!(
                "held: the deployment of {release} failed (ticket {ticket}), not tried again until git changes production"
            ),
            Outcome::Held { hold } => format!("held: {hold:?}"),
            Outcome::Refused {
                refusal:
                    Refusal::DigestMismatch {
                        release,
                        desired,
                        recorded,
                    },
            } => {
                format!("REFUSED: {release} was tested as {recorded}, git names {desired}")
            }
            Outcome::Refused {
                refusal: Refusal::ByFleet { reason, .. },
            } => format!("refused by the fleet: {reason}"),
            Outcome::Refused { refusal } => format!("REFUSED: {refusal:?}"),
            Outcome::ObserveFailed { error } => format!("cannot observe: {error}"),
        };
        let why: Vec<String> = event.differences.iter().map(difference).collect();
        println!(
            "{when}  pass at {}: {:<10} {what}{}",
            pass.revision,
            event.environment.as_str(),
            if why.is_empty() {
                String::new()
            } else {
                format!("  [{}]", why.join("; "))
            }
        );
    }
}

fn write_env(
    repo: &Path,
    env: &str,
    release: &str,
    digest: &Digest,
    replicas: u8,
) -> Result<(), Error> {
    std::fs::write(
        repo.join("environments").join(format!("{env}.toml")),
        format!(
            "# what {env} should run\nrelease = \"{release}\"\ndigest = \"{digest}\"\n\n[config]\nreplicas = \"{replicas}\"\n"
        ),
    )?;
    Ok(())
}

fn commit(repo: &Path, message: &str) -> Result<String, Error> {
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", message])?;
    let head = git(repo, &["rev-parse", "--short", "HEAD"])?;
    println!("        git commit {head} \"{message}\"");
    Ok(head)
}

/// The shop's pipeline. Its deploy stage is a rollout on the cluster ([`ByEnvironment`]):
/// all at once in staging, a canary under analysis in production.
fn pipeline(
    clock: &ManualClock,
    cluster: &Cluster,
    source: &GitSource,
) -> Result<Arc<Pipeline<Deployment>>, Error> {
    let deploy = ByEnvironment::new(cluster, source);
    Ok(Arc::new(
        Pipeline::<Deployment>::builder("shop")
            .clock(clock.clone())
            .journal(Arc::new(MemoryJournal::new(ChainKey::derive(
                b"gitops example",
            ))))
            .stage(Stage::build("compile").run(from_fn(|ctx| {
                let bytes = format!("shop binary built from {}", ctx.revision());
                Ok(StageOutcome::success()
                    .artifact(ArtifactRef::from_bytes("shop", bytes.as_bytes())))
            })))
            .stage(
                Stage::test("unit")
                    .after("compile")
                    .run(from_fn(|_| Ok(StageOutcome::success()))),
            )
            .stage(Stage::stage("acceptance").run(from_fn(|_| Ok(StageOutcome::success()))))
            .stage(Stage::deploy("roll-out").run(deploy))
            .build()?,
    ))
}

/// CI: three releases built, tested and approved by the automated gates; the fleet registers
/// each with the digest it was tested with.
fn ci(
    clock: &ManualClock,
    pipeline: &Pipeline<Deployment>,
    fleet: &Fleet<Deployment>,
) -> Result<BTreeMap<&'static str, Digest>, Error> {
    println!("CI builds and tests three releases:");
    let mut digests = BTreeMap::new();
    for (id, rev) in [("1.0", "4f2a9c1"), ("1.1", "9b1e0d7"), ("1.2", "c3d5e7f")] {
        let approved = run_virtual(clock, async {
            let built = pipeline
                .start(id, Revision::new(rev, "dana")?)?
                .build(pipeline)
                .await?;
            let artifact = built.artifact().clone();
            let staged = built
                .test(pipeline, &artifact)
                .await?
                .stage(pipeline, &artifact)
                .await?;
            Ok::<_, Error>(staged.auto_approve(pipeline).await?)
        })?;
        run_virtual(clock, fleet.register(&approved))?;
        println!("        release {id}: {}", approved.artifact().digest);
        digests.insert(id, approved.artifact().digest.clone());
    }
    Ok(digests)
}

/// The fleet: staging, then production; people `rita` (and automation) may roll back.
async fn fleet(pipeline: &Arc<Pipeline<Deployment>>) -> Result<Fleet<Deployment>, Error> {
    let lifecycle = Lifecycle::new([
        Phase::new("staging").environment("staging")?,
        Phase::new("production").environment("production")?,
    ])?;
    let options = FleetOptions {
        rollback: RollbackPolicy::people(["rita"])?,
        ..FleetOptions::default()
    };
    Ok(Fleet::open(Arc::clone(pipeline), lifecycle, options).await?)
}

/// A new repository at `repo`, committing as dana.
fn init(repo: &Path) -> Result<(), Error> {
    git(repo, &["init", "-q"])?;
    git(repo, &["config", "user.name", "dana"])?;
    git(repo, &["config", "user.email", "dana@example.com"])?;
    git(repo, &["config", "commit.gpgsign", "false"])?;
    Ok(())
}

/// The last act: a release whose canary fails its analysis in production.
fn failed_canary(
    repo: &Path,
    clock: &ManualClock,
    fleet: &Fleet<Deployment>,
    digests: &BTreeMap<&'static str, Digest>,
    pass: &dyn Fn(&ManualClock) -> Result<Pass, Error>,
) -> Result<(), Error> {
    // A release whose canary fails its analysis in production: the rollout aborts it at the
    // failing sample, the fleet records the deployment as failed, and the passes after it
    // hold production on what the rollback left live instead of trying again every minute.
    for env in ["staging", "production"] {
        write_env(repo, env, "1.2", &digests["1.2"], 3)?;
    }
    let bad = commit(repo, "shop 1.2")?;
    pass(clock)?; // staging takes 1.2 at once; production waits for staging to have it
    let failed = pass(clock)?; // production's canary: 10 %, the error rate up, aborted
    assert!(failed.events.iter().any(|e| matches!(
        &e.outcome,
        Outcome::Failed { action: Action::Promote { release }, .. } if release.as_str() == "1.2"
    )));
    let tickets = fleet
        .ledger()
        .environments
        .iter()
        .map(|e| e.history.len())
        .sum::<usize>();
    for _ in 0..3 {
        let held = pass(clock)?;
        assert!(!held.events.is_empty());
        assert!(held.events.iter().all(|e| matches!(
            e.outcome,
            Outcome::Held {
                hold: Hold::Failed { .. }
            }
        )));
    }
    let after = fleet
        .ledger()
        .environments
        .iter()
        .map(|e| e.history.len())
        .sum::<usize>();
    assert_eq!(tickets, after, "a held environment deploys nothing");
    println!(
        "        three passes, no new deployment: production stays on 1.0 until git says otherwise"
    );
    println!("        git revert {bad} (1.2)");
    git(repo, &["revert", "--no-edit", &bad])?;
    while !pass(clock)?.converged() {}
    Ok(())
}

fn main() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("tollgate-gitops-{}", std::process::id()));
    let repo = dir.join("deploy");
    std::fs::create_dir_all(repo.join("environments"))?;
    init(&repo)?;

    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let start = clock.now();
    let cluster = Cluster::default();
    let source = GitSource {
        repo: repo.clone(),
        last: Arc::default(),
    };

    let pipeline = pipeline(&clock, &cluster, &source)?;
    let fleet = Arc::new(run_virtual(&clock, fleet(&pipeline))?);

    let digests = ci(&clock, &pipeline, &fleet)?;

    let reconciler =
        Reconciler::new(Arc::clone(&fleet), source.clone(), cluster.clone()).named("flux");
    let pass = |clock: &ManualClock| -> Result<Pass, Error> {
        clock.advance(Duration::from_secs(60));
        let pass = run_virtual(clock, reconciler.pass())?;
        print_pass(start, &pass);
        Ok(pass)
    };

    println!("\nThe timeline (a reconcile pass a minute; virtual time):");
    for env in ["staging", "production"] {
        write_env(&repo, env, "1.0", &digests["1.0"], 3)?;
    }
    commit(&repo, "run shop 1.0 everywhere")?;
    // Production opens only to a release live in staging: the first pass refuses it.
    while !pass(&clock)?.converged() {}

    for env in ["staging", "production"] {
        write_env(&repo, env, "1.1", &digests["1.1"], 4)?;
    }
    let upgrade = commit(&repo, "shop 1.1, four replicas")?;
    while !pass(&clock)?.converged() {}

    let production = EnvironmentName::new("production")?;
    println!("        someone runs `kubectl set image` on production, back to 1.0, by hand");
    cluster.with(&production, |slot| {
        slot.0.stable = Some(Version {
            release: "1.0".parse().expect("valid"),
            digest: digests["1.0"].clone(),
        });
    });
    while !pass(&clock)?.converged() {}

    let forged = Digest::sha256(b"a binary nobody tested");
    write_env(&repo, "production", "1.1", &forged, 4)?;
    commit(&repo, "production: hotfix image")?;
    let refused = pass(&clock)?;
    assert!(
        refused
            .events
            .iter()
            .all(|e| matches!(e.outcome, Outcome::Refused { .. }))
    );
    git(&repo, &["revert", "--no-edit", "HEAD"])?;
    println!("        git revert HEAD (the hotfix)");
    while !pass(&clock)?.converged() {}

    println!("        1.1 misbehaves: git revert {upgrade}");
    git(&repo, &["revert", "--no-edit", &upgrade])?;
    let revert = pass(&clock)?;
    // Every event is serde data, for a UI or a notification.
    println!(
        "        as JSON: {}",
        serde_json::to_string(&revert.events[0])?
    );
    while !pass(&clock)?.converged() {}

    failed_canary(&repo, &clock, &fleet, &digests, &pass)?;

    let ledger = fleet.ledger();
    let live = ledger
        .live_in("production")
        .expect("production runs something");
    assert_eq!(live.release.as_str(), "1.0");
    assert!(live.is_rollback());
    println!("\nThe ledger (a rollback and a drift repair are told apart):\n{ledger}");
    println!("production's deployments:");
    for d in &ledger
        .environments
        .iter()
        .find(|e| e.environment == production)
        .expect("listed")
        .history
    {
        let how = match d.status {
            TicketStatus::Failed { .. } => "failed",
            _ => "live",
        };
        println!(
            "  ticket {:>3}: {}, {} {how}, by {}",
            d.ticket, d.kind, d.release, d.by
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
