//! Process executors: [`ProcessExecutor`] runs a stage as a real program and captures its
//! output as the stage's log; [`CommandTable`] picks the program by stage id.
//!
//! The program starts in a process group of its own, with standard input closed, standard
//! output and error piped, and a cookie in its environment; one helper thread per program
//! (`supervise`) reads both pipes, waits for the program and sweeps up what it started
//! (`sweep`), keeping the log within its limit (`log`). What this guarantees, and what it does
//! not, is documented on [`ProcessExecutor`], where users read it.

// One file per concern: the capped log, the supervisor thread, the sweep of escaped processes.
mod log;
mod supervise;
mod sweep;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use self::supervise::{Finished, Running, Settings};
use self::sweep::COOKIE_VARIABLE;
use super::{
    Executor, ExecutorError, Outputs, StageContext, StageOutcome, StageStatus, StepOutcome,
};
use crate::artifact::{ArtifactRef, Digest};
use crate::graph::StageId;

/// Runs a stage as a program.
///
/// The stage succeeds when the program exits with one of the
/// [success codes](ProcessExecutor::success_codes) (by default only `0`), and fails with
/// `exit code N` otherwise, or `killed by signal N` if a signal ended it. Either way its log is
/// what it printed, one [`LogLine`](super::LogLine) per line, each tagged with its
/// [`Stream`](super::Stream), within the [log limit](ProcessExecutor::log_limit). A successful
/// stage has the output `exit_code`.
///
/// The stage ends when the program ends: see
/// [below](#how-a-program-is-run-and-what-is-guaranteed) for what happens to the processes it
/// started, and on which systems.
///
/// # How a program is run, and what is guaranteed
///
/// The program starts in a process group of its own, with standard input closed, standard
/// output and error piped, and a unique cookie in its environment (`TOLLGATE_STAGE_COOKIE`),
/// which every process it starts inherits. One helper thread per program reads both pipes and
/// waits for the program's exit in a single `poll`; the stage's future only awaits a channel,
/// so it never blocks the thread that polls it, and it [holds](crate::time::Clock::hold) the
/// pipeline's clock, so virtual time does not jump past the program while it runs.
///
/// **The stage ends when its program ends.** When the program exits, its process group is
/// killed at once, and so is (on Linux) every process that carries the stage's cookie. Then
/// the output has a [grace period](ProcessExecutor::grace) to close; after it, every process
/// that can still write to the output pipes is killed (Linux), and a second later the helper
/// stops reading whatever is still open, and says so in the log. So a daemon that keeps the
/// pipes open (`setsid sh -c 'loop' &`) cannot hold its stage.
///
/// **Nothing a stage started outlives it (Linux).** When the program exits, or the stage is
/// cut off (a timeout, a cancel, fail-fast: the engine drops the stage's future), the
/// program's group is killed with `SIGKILL`, and the helper thread sweeps `/proc` for the
/// processes that left the group (`setsid`, a double fork, `nohup`) by the cookie in their
/// environment, and for those that can write to the output pipes, kills them, and waits for
/// them to die. The group is killed only while the program is an unreaped zombie or still
/// running, so its id cannot have been reused; swept processes are pinned with a pidfd and
/// checked again before they are signalled.
///
/// **The log stays within its [limit](ProcessExecutor::log_limit)**, whatever the program
/// prints: lines are stored back to back (a line costs about its own size while it is
/// captured), and past the limit the first and last halves are kept, with a line in between
/// saying how many lines and bytes were cut. `::output` and `::artifact` lines are read as
/// they arrive, so cutting the log loses none. A stage that is cut off keeps what it logged
/// until then ([`PartialLog`](crate::executor::PartialLog)).
///
/// **The helper thread stops with the stage**: when the stage is cut off it kills, sweeps,
/// reaps the program and ends; it never waits on a pipe the stage no longer reads.
///
/// ## What is not guaranteed
///
/// - **A process that both leaves the group and drops the cookie escapes** if it does not hold
///   the output either: `setsid env -i daemon >/dev/null 2>&1 &` survives its stage, as it
///   would survive Jenkins' process tree killer. (It is killed if it keeps the pipes.) Only a
///   container or a cgroup the host gives each stage (systemd's way) closes that gap; a child
///   subreaper would, too, but it is a property of the whole host process and makes it reap
///   every orphan below it, which a library cannot impose on its host.
/// - **Processes the host cannot signal or read** (another user's, after `sudo` or a setuid
///   program) are neither found nor killed.
/// - **The host must live**: the sweeps run in the host process, so if it is killed itself
///   (`SIGKILL`, a crash), the stages it was running are left as they are.
/// - **Other Unix systems** (macOS, the BSDs) have no `/proc` to sweep: there, only the
///   program's group is killed, escaped processes survive, and a stage whose escaped
///   processes keep the output open ends after the grace period plus a second, with the
///   output abandoned.
/// - **Cost**: each sweep reads the environment of every process of the host's user, once
///   when the program exits (and once more after the grace period if the output is still
///   open): a few milliseconds on a busy machine.
/// - **Starting the program** (`fork`/`exec`) happens on the thread that polls the stage, as
///   with `std::process::Command::spawn`; everything after that is on the helper thread.
/// - **Other executors** get none of this. One that starts processes itself must end them
///   itself (from its future's `Drop`, which is how the engine cuts a stage off), and keep its
///   log with [`PartialLog`](crate::executor::PartialLog). One that blocks the thread polling
///   it stalls every stage on that thread and, under [`run_virtual`](crate::time::run_virtual),
///   the clock too, so not even its timeout can fire: blocking work belongs on a thread of its
///   own, with the clock [held](crate::time::Clock::hold) meanwhile, as here.
///
/// # Talking back to the pipeline
///
/// Two kinds of lines on standard output are read as commands (and logged like any other):
///
/// - `::output key=value` sets the named output `key`, which dependent stages see;
/// - `::output key<<DELIMITER` sets `key` to a value of several lines: every line of
///   standard output after it, up to a line that is exactly `DELIMITER`, joined with `\n`
///   (GitHub Actions' form; choose a delimiter the value cannot contain). An output left
///   open when the program ends, or with a line too long to keep, fails the stage;
/// - `::artifact <name> <digest>` reports the artifact a build stage produced; the digest is
///   parsed with [`Digest`]'s `FromStr` (`sha256:<hex>`), and a malformed one fails the stage.
///
/// # What the program is told
///
/// Besides the environment it inherits and any set with [`env`](ProcessExecutor::env):
///
/// | variable | value |
/// |---|---|
/// | `TOLLGATE_STAGE` | the stage id |
/// | `TOLLGATE_STEP` | `build`, `test`, `stage` or `deploy` |
/// | `TOLLGATE_RELEASE` | the release id |
/// | `TOLLGATE_REVISION` | the source revision id |
/// | `TOLLGATE_IDEMPOTENCY_KEY` | the attempt's idempotency key (the same for attempt n of this stage across a crash and takeover; see `StageContext::idempotency_key`) |
/// | `TOLLGATE_ATTEMPT` | which attempt this is, from `1` |
/// | `TOLLGATE_MATRIX_<AXIS>` | each value of the stage's matrix combination ([`StageSpec::matrix`](crate::graph::StageSpec::matrix)) |
/// | `TOLLGATE_ARTIFACT_NAME`, `TOLLGATE_ARTIFACT_DIGEST` | the release's artifact, after the build step |
/// | `TOLLGATE_ENVIRONMENT` | the environment deployed to, in the stage and deploy steps |
/// | `TOLLGATE_INPUT_<STAGE>_<KEY>` | each output of each direct dependency |
/// | `TOLLGATE_STATUS_<STAGE>` | how each direct dependency ended: `succeeded`, `failed`, `timed_out`, `cancelled` or `skipped` (only a finally stage sees anything but `succeeded`) |
/// | `TOLLGATE_STEP_OUTCOME` | in a finally stage, how the step's ordinary stages ended: `succeeded`, `failed`, `cancelled` or `timed_out` |
/// | `TOLLGATE_STAGE_COOKIE` | a token unique to this run of the stage, by which the processes it starts are found and killed when it ends (after the cookies of any stage the host itself runs in, separated by `:`) |
///
/// In `TOLLGATE_INPUT_<STAGE>_<KEY>` and `TOLLGATE_STATUS_<STAGE>`, the stage id and key are
/// upper-cased and every character other than an ASCII letter or digit becomes `_`: the output
/// `version` of `compile` is `TOLLGATE_INPUT_COMPILE_VERSION`. These variables always
/// describe the stage being run: inherited ones are removed (but for the cookie, which is
/// extended) and they are set after [`env`](ProcessExecutor::env)'s.
///
/// A finally stage that reports on its step, as Tekton's `$(tasks.status)` allows:
///
/// ```
/// use tollgate::executor::ProcessExecutor;
///
/// let notify = ProcessExecutor::shell(
///     r#"[ "$TOLLGATE_STEP_OUTCOME" = succeeded ] || echo "unit tests: $TOLLGATE_STATUS_UNIT""#,
/// );
/// # let _ = notify;
/// ```
///
/// # Example
///
/// ```
/// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
/// use tollgate::artifact::Digest;
/// use tollgate::executor::ProcessExecutor;
/// use tollgate::prelude::*;
///
/// let digest = Digest::sha256(b"app");
/// let pipeline = Pipeline::<Deployment>::builder("web")
///     .stage(Stage::build("compile").run(ProcessExecutor::shell(format!(
///         "echo compiling; echo '::output version=1.2.3'; echo '::artifact app {digest}'"
///     ))))
///     .stage(Stage::test("unit").after("compile").run(ProcessExecutor::shell(
///         r#"test "$TOLLGATE_INPUT_COMPILE_VERSION" = 1.2.3"#,
///     )))
///     .stage(Stage::stage("staging").run(ProcessExecutor::new("true")))
///     .stage(Stage::deploy("production").run(ProcessExecutor::new("true")))
///     .build()?;
///
/// let built = pipeline.start("web-1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
/// assert_eq!(built.artifact().digest, digest);
/// let report = &built.record().steps()[0];
/// assert_eq!(report.stage("compile").unwrap().outputs["version"], "1.2.3");
/// let _tested = built.test(&pipeline, &ArtifactRef::new("app", digest)).await?;
/// # Ok(()) }) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExecutor {
    program: OsString,
    args: Vec<OsString>,
    /// In the order given; `None` removes the variable.
    env: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
    success_codes: Vec<i32>,
    log_limit: usize,
    grace: Duration,
}

impl ProcessExecutor {
    /// The default [`log_limit`](Self::log_limit): 8 MiB.
    pub const DEFAULT_LOG_LIMIT: usize = 8 * 1024 * 1024;

    /// The smallest [`log_limit`](Self::log_limit): 4 KiB.
    pub const MIN_LOG_LIMIT: usize = log::MIN_LIMIT;

    /// The default [`grace`](Self::grace) period: one second.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

    /// Runs `program` (looked up in `PATH` unless it contains a `/`), with no arguments.
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let unit = ProcessExecutor::new("cargo").args(["test", "--workspace"]);
    /// # let _ = unit;
    /// ```
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        ProcessExecutor {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            success_codes: vec![0],
            log_limit: Self::DEFAULT_LOG_LIMIT,
            grace: Self::DEFAULT_GRACE,
        }
    }

    /// Runs `script` with `sh -c`. Arguments added with [`arg`](Self::arg) become `$0`, `$1`,
    /// and so on.
    ///
    /// One script can serve every stage as a pipeline's default executor, since it sees the
    /// stage id in `TOLLGATE_STAGE`:
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let each_stage = ProcessExecutor::shell(r#"exec "./ci/$TOLLGATE_STAGE.sh""#);
    /// # let _ = each_stage;
    /// ```
    pub fn shell(script: impl AsRef<OsStr>) -> Self {
        ProcessExecutor::new("sh").arg("-c").arg(script)
    }

    /// Adds an argument.
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let lint = ProcessExecutor::new("cargo").arg("clippy");
    /// # let _ = lint;
    /// ```
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let lint = ProcessExecutor::new("cargo").args(["clippy", "--", "-D", "warnings"]);
    /// # let _ = lint;
    /// ```
    #[must_use]
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the program (after the inherited ones, before the
    /// `TOLLGATE_*` ones).
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let test = ProcessExecutor::new("cargo").arg("test").env("RUST_BACKTRACE", "1");
    /// # let _ = test;
    /// ```
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable the program would otherwise inherit (or that an
    /// earlier [`env`](Self::env) set).
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let hermetic = ProcessExecutor::new("make").env_remove("MAKEFLAGS");
    /// # let _ = hermetic;
    /// ```
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Runs the program in `dir` instead of the current directory. A directory that does
    /// not exist is reported as [`ProcessError::MissingDirectory`].
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let frontend = ProcessExecutor::new("npm").arg("test").current_dir("web");
    /// # let _ = frontend;
    /// ```
    #[must_use]
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// The exit codes that mean success (by default only `0`).
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// // `diff` exits with 1 when the files differ, which this stage accepts; 2 is trouble.
    /// let report = ProcessExecutor::new("diff").args(["old.txt", "new.txt"]).success_codes([0, 1]);
    /// # let _ = report;
    /// ```
    #[must_use]
    pub fn success_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.success_codes = codes.into_iter().collect();
        self
    }

    /// The most memory the stage's log may take, in bytes (by default
    /// [`DEFAULT_LOG_LIMIT`](Self::DEFAULT_LOG_LIMIT), and never less than
    /// [`MIN_LOG_LIMIT`](Self::MIN_LOG_LIMIT)).
    ///
    /// Each line counts as its text plus 64 bytes (about what a [`LogLine`](super::LogLine) costs on top of
    /// its text), so many short lines reach the limit sooner than a few long ones. Past the
    /// limit the log keeps its first half and its last half, with a line between them saying
    /// how many lines and bytes were cut. A line longer than half the limit is kept in pieces
    /// of that length (cut at character boundaries), and is not read as a command.
    ///
    /// ```
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// // A chatty test suite: keep 1 MiB of its log.
    /// let unit = ProcessExecutor::new("cargo").arg("test").log_limit(1024 * 1024);
    /// # let _ = unit;
    /// ```
    #[must_use]
    pub fn log_limit(mut self, bytes: usize) -> Self {
        self.log_limit = bytes.max(Self::MIN_LOG_LIMIT);
        self
    }

    /// How long the program's output may stay open after the program exited (by default
    /// [`DEFAULT_GRACE`](Self::DEFAULT_GRACE)) before whatever still holds it is killed.
    ///
    /// The program's group and every process carrying the stage's cookie are killed as soon
    /// as the program exits; the grace period is for processes that hold the output without
    /// the cookie (see [what is guaranteed](Self#how-a-program-is-run-and-what-is-guaranteed)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::executor::ProcessExecutor;
    ///
    /// let deploy = ProcessExecutor::new("./deploy.sh").grace(Duration::from_secs(5));
    /// # let _ = deploy;
    /// ```
    #[must_use]
    pub fn grace(mut self, period: Duration) -> Self {
        self.grace = period;
        self
    }

    fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// The command for the stage in `ctx`, with its environment, `cookie` included.
    fn command(&self, ctx: &StageContext<'_>, cookie: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The program leads a new group, so that cancelling the stage can kill everything
            // it started, and so that a terminal's Ctrl-C does not reach it past tollgate.
            .process_group(0);
        // The cookies of the stages this host itself runs in (if it runs in one) stay, so
        // that their sweeps still find what this stage starts.
        let mut cookies = std::env::var_os(COOKIE_VARIABLE).unwrap_or_default();
        if !cookies.is_empty() {
            cookies.push(":");
        }
        cookies.push(cookie);
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"TOLLGATE_") {
                command.env_remove(key);
            }
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
            .env("TOLLGATE_STAGE", ctx.stage().as_str())
            .env("TOLLGATE_STEP", ctx.step().as_str())
            .env("TOLLGATE_RELEASE", ctx.release().as_str())
            .env("TOLLGATE_REVISION", ctx.revision())
            .env("TOLLGATE_ATTEMPT", ctx.attempt().to_string());
        command.env("TOLLGATE_IDEMPOTENCY_KEY", ctx.idempotency_key());
        if let Some(artifact) = ctx.artifact() {
            command
                .env("TOLLGATE_ARTIFACT_NAME", &artifact.name)
                .env("TOLLGATE_ARTIFACT_DIGEST", artifact.digest.to_string());
        }
        if let Some(environment) = ctx.environment() {
            command.env("TOLLGATE_ENVIRONMENT", environment.name().as_str());
        }
        for (stage, outputs) in ctx.inputs() {
            for (key, value) in outputs {
                command.env(input_variable(stage.as_str(), key), value);
            }
        }
        for (axis, value) in &ctx.spec().matrix {
            command.env(format!("TOLLGATE_MATRIX_{}", shout(axis)), value);
        }
        if let Some(outcome) = ctx.step_outcome() {
            command.env("TOLLGATE_STEP_OUTCOME", step_outcome_word(outcome));
        }
        for (stage, status) in ctx.dependencies() {
            command.env(status_variable(stage.as_str()), status_word(status));
        }
        command.env(COOKIE_VARIABLE, cookies);
        command
    }

    /// Turns what the program did into the stage's outcome.
    fn outcome(&self, finished: Finished) -> StageOutcome {
        let Finished {
            status,
            logs,
            commands,
        } = finished;
        let Commands {
            mut outputs,
            artifact,
            malformed,
            ..
        } = commands;
        let failure = match (status.code(), status.signal()) {
            (Some(code), _) if self.success_codes.contains(&code) => malformed,
            (Some(code), _) => Some(format!("exit code {code}")),
            (None, Some(signal)) => Some(format!("killed by signal {signal}")),
            (None, None) => Some(format!("ended with {status}")),
        };
        let mut outcome = match failure {
            None => {
                let code = status.code().unwrap_or_default();
                outputs.insert("exit_code".to_owned(), code.to_string());
                let mut outcome = StageOutcome::success();
                outcome.artifact = artifact.map(Box::new);
                outcome
            }
            Some(reason) => StageOutcome::failure(reason),
        };
        outcome.logs = logs;
        outcome.outputs = outputs;
        outcome
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        // Virtual time must not jump past the program while it runs.
        let _hold = ctx.clock().hold();
        let program = self.program_name();
        let cookie = new_cookie();
        let mut command = self.command(&ctx, &cookie);
        let child = command.spawn().map_err(|source| {
            if source.kind() != io::ErrorKind::NotFound {
                ProcessError::Spawn {
                    program: program.clone(),
                    source,
                }
            } else if let Some(dir) = self.current_dir.as_ref().filter(|d| !d.is_dir()) {
                // `chdir` fails with the same error kind as a missing program.
                ProcessError::MissingDirectory {
                    program: program.clone(),
                    dir: dir.clone(),
                }
            } else {
                ProcessError::NotFound {
                    program: program.clone(),
                }
            }
        })?;
        let settings = Settings {
            log_limit: self.log_limit,
            grace: self.grace,
            cookie,
        };
        // From here on, dropping `running` (the engine cutting this future off) kills the
        // program and everything it started, and keeps its log so far.
        let mut running =
            Running::start(child, settings, ctx.partial_log().clone()).map_err(|source| {
                ProcessError::Io {
                    program: program.clone(),
                    source,
                }
            })?;
        let finished = running
            .finished()
            .await
            .map_err(|source| ProcessError::Io { program, source })?;
        Ok(self.outcome(finished))
    }
}

/// Maps stage ids to the programs that run them: a pipeline's
/// [`default_executor`](crate::pipeline::PipelineBuilder::default_executor) for stages
/// that are all processes.
///
/// A stage with no entry runs the [`fallback`](CommandTable::fallback), or fails with
/// [`ProcessError::NoCommand`] if there is none.
///
/// ```
/// use tollgate::executor::{CommandTable, ProcessExecutor};
/// use tollgate::prelude::*;
///
/// let commands = CommandTable::new()
///     .command("compile", ProcessExecutor::new("cargo").args(["build", "--release"]))
///     .command("unit", ProcessExecutor::new("cargo").arg("test"))
///     .fallback(ProcessExecutor::shell(r#"exec "./ci/$TOLLGATE_STAGE.sh""#));
/// let pipeline = Pipeline::<Deployment>::builder("web")
///     .stage(Stage::build("compile"))
///     .stage(Stage::test("unit").after("compile"))
///     .stage(Stage::stage("staging"))
///     .stage(Stage::deploy("production"))
///     .default_executor(commands)
///     .build()?;
/// # let _ = pipeline;
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandTable {
    commands: Vec<(String, ProcessExecutor)>,
    fallback: Option<ProcessExecutor>,
}

impl CommandTable {
    /// An empty table.
    ///
    /// ```
    /// let table = tollgate::executor::CommandTable::new();
    /// # let _ = table;
    /// ```
    #[must_use]
    pub fn new() -> Self {
        CommandTable::default()
    }

    /// Runs `command` for the stage `stage`, replacing any command set for it before.
    ///
    /// ```
    /// use tollgate::executor::{CommandTable, ProcessExecutor};
    ///
    /// let table = CommandTable::new().command("lint", ProcessExecutor::new("cargo").arg("clippy"));
    /// # let _ = table;
    /// ```
    #[must_use]
    pub fn command(mut self, stage: impl Into<String>, command: ProcessExecutor) -> Self {
        let stage = stage.into();
        self.commands.retain(|(s, _)| *s != stage);
        self.commands.push((stage, command));
        self
    }

    /// Runs `command` for every stage without an entry of its own.
    ///
    /// ```
    /// use tollgate::executor::{CommandTable, ProcessExecutor};
    ///
    /// let table = CommandTable::new().fallback(ProcessExecutor::new("make").arg("ci"));
    /// # let _ = table;
    /// ```
    #[must_use]
    pub fn fallback(mut self, command: ProcessExecutor) -> Self {
        self.fallback = Some(command);
        self
    }
}

#[async_trait]
impl Executor for CommandTable {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        let stage = ctx.stage();
        let command = self
            .commands
            .iter()
            .find(|(s, _)| s == stage.as_str())
            .map(|(_, c)| c)
            .or(self.fallback.as_ref())
            .ok_or_else(|| ProcessError::NoCommand {
                stage: stage.clone(),
            })?;
        command.run(ctx).await
    }
}

/// Why a [`ProcessExecutor`] could not run its program at all. The stage then fails with
/// `executor error: ` and this message.
///
/// ```
/// use tollgate::executor::ProcessError;
///
/// let error = ProcessError::NotFound { program: "nope".to_owned() };
/// assert_eq!(error.to_string(), "program `nope` not found");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The program does not exist (or is not in `PATH`).
    #[error("program `{program}` not found")]
    NotFound {
        /// The program, as given.
        program: String,
    },
    /// The program exists but could not be started (not executable, too many processes).
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program, as given.
        program: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The directory set with [`ProcessExecutor::current_dir`] does not exist.
    #[error("working directory `{}` of `{program}` does not exist", dir.display())]
    MissingDirectory {
        /// The program, as given.
        program: String,
        /// The missing directory.
        dir: PathBuf,
    },
    /// Reading the program's output or waiting for it failed.
    #[error("i/o error while running `{program}`: {source}")]
    Io {
        /// The program, as given.
        program: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// A [`CommandTable`] has neither a command for the stage nor a fallback.
    #[error("no command for stage `{stage}`")]
    NoCommand {
        /// The stage.
        stage: StageId,
    },
}

// ---- private helpers ----

/// `s` upper-cased, with every character other than an ASCII letter or digit turned into `_`.
fn shout(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `TOLLGATE_INPUT_<STAGE>_<KEY>`.
fn input_variable(stage: &str, key: &str) -> String {
    format!("TOLLGATE_INPUT_{}_{}", shout(stage), shout(key))
}

/// `TOLLGATE_STATUS_<STAGE>`.
fn status_variable(stage: &str) -> String {
    format!("TOLLGATE_STATUS_{}", shout(stage))
}

/// How a stage ended, in one word (the `status` of its serde form).
fn status_word(status: &StageStatus) -> &'static str {
    match status {
        StageStatus::Succeeded => "succeeded",
        StageStatus::Failed { .. } => "failed",
        StageStatus::TimedOut { .. } => "timed_out",
        StageStatus::Cancelled => "cancelled",
        StageStatus::Skipped => "skipped",
    }
}

/// How a step ended, in one word (its serde form).
fn step_outcome_word(outcome: StepOutcome) -> &'static str {
    match outcome {
        StepOutcome::Succeeded => "succeeded",
        StepOutcome::Failed => "failed",
        StepOutcome::Cancelled => "cancelled",
        StepOutcome::TimedOut => "timed_out",
    }
}

/// A token no other run of any stage has had: this process's id, a counter and the time.
fn new_cookie() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a line of standard output may be a command (`::…`).
fn input_is_command(text: &[u8]) -> bool {
    text.starts_with(b"::")
}

/// The commands a program sent on standard output, read as its lines arrive.
#[derive(Debug, Default)]
struct Commands {
    outputs: Outputs,
    artifact: Option<ArtifactRef>,
    /// Why the commands are unusable (the first reason found), which fails the stage.
    malformed: Option<String>,
    /// The bytes of the outputs' keys and values, which may not pass `limit`.
    bytes: usize,
    limit: usize,
    /// A multi-line output being read (`::output key<<DELIMITER`): its key, its delimiter
    /// and its lines so far (`None` before the first).
    heredoc: Option<(String, String, Option<String>)>,
}

impl Commands {
    fn new(limit: usize) -> Self {
        Commands {
            limit,
            ..Commands::default()
        }
    }

    /// Whether a multi-line output is being read: every line of standard output is then
    /// read, command or not.
    fn in_heredoc(&self) -> bool {
        self.heredoc.is_some()
    }

    /// Sets the output `key` to `value`, unless the outputs would pass the limit.
    fn set(&mut self, key: &str, value: String) {
        let before = self.outputs.get(key).map_or(0, |v| key.len() + v.len());
        let bytes = self.bytes - before + key.len() + value.len();
        if bytes > self.limit {
            self.over_limit();
            return;
        }
        self.bytes = bytes;
        self.outputs.insert(key.to_owned(), value);
    }

    fn over_limit(&mut self) {
        let limit = self.limit;
        self.malformed.get_or_insert_with(|| {
            format!("outputs take more than the log limit of {limit} bytes")
        });
    }

    /// A piece of a line too long to keep whole arrived: inside a multi-line output it
    /// would lose text, so the output is refused.
    fn cut_line(&mut self) {
        if let Some((key, _, _)) = self.heredoc.take() {
            self.malformed.get_or_insert_with(|| {
                format!("a line of the multi-line output `{key}` is too long to keep")
            });
        }
    }

    /// Standard output ended: a multi-line output still open is malformed.
    fn end(&mut self) {
        if let Some((key, delimiter, _)) = self.heredoc.take() {
            self.malformed.get_or_insert_with(|| {
                format!("the multi-line output `{key}` is not closed by a line `{delimiter}`")
            });
        }
    }

    /// Reads one line of standard output; anything but a command (or a line of a
    /// multi-line output) is ignored.
    fn read(&mut self, line: &str) {
        if let Some((_, delimiter, value)) = &mut self.heredoc {
            if line == delimiter {
                if let Some((key, _, value)) = self.heredoc.take() {
                    self.set(&key, value.unwrap_or_default());
                }
                return;
            }
            let value = value.get_or_insert_with(String::new);
            if !value.is_empty() || line.is_empty() {
                // Lines are joined with `\n`; an empty first line still counts as a line.
                value.push('\n');
            }
            value.push_str(line);
            if value.len() > self.limit {
                self.heredoc = None;
                self.over_limit();
            }
            return;
        }
        match parse_command(line) {
            Some(Ok(Report::Output(key, value))) => self.set(key, value.to_owned()),
            Some(Ok(Report::Heredoc(key, delimiter))) => {
                self.heredoc = Some((key.to_owned(), delimiter.to_owned(), None));
            }
            Some(Ok(Report::Artifact(reported))) => match &self.artifact {
                Some(first) if *first != reported => {
                    self.malformed.get_or_insert_with(|| {
                        format!(
                            "more than one artifact reported: `{} {}` and `{} {}`",
                            first.name, first.digest, reported.name, reported.digest
                        )
                    });
                }
                _ => self.artifact = Some(reported),
            },
            Some(Err(reason)) => {
                self.malformed.get_or_insert(reason);
            }
            None => {}
        }
    }
}

/// `key<<DELIMITER`, when `rest` (what follows `::output `) is one: a key without `=` or
/// whitespace, and a delimiter without whitespace.
fn heredoc(rest: &str) -> Option<(&str, &str)> {
    let (key, delimiter) = rest.split_once("<<")?;
    let word = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
    (word(key) && !key.contains('=') && word(delimiter)).then_some((key, delimiter))
}

/// A command a program sends on standard output.
#[derive(Debug, PartialEq, Eq)]
enum Report<'a> {
    /// `::output key=value`
    Output(&'a str, &'a str),
    /// `::output key<<DELIMITER`: the value is every following line up to a line that is
    /// exactly `DELIMITER`, joined with `\n` (GitHub Actions' multi-line outputs).
    Heredoc(&'a str, &'a str),
    /// `::artifact <name> <digest>`
    Artifact(ArtifactRef),
}

/// Reads `line` as a command: `None` if it is not one, `Some(Err(reason))` if it is a
/// malformed one.
fn parse_command(line: &str) -> Option<Result<Report<'_>, String>> {
    let (command, rest) = line
        .strip_prefix("::")?
        .split_once(' ')
        .unwrap_or((line, ""));
    match command {
        "output" | "::output" => Some(match heredoc(rest) {
            Some((key, delimiter)) => Ok(Report::Heredoc(key, delimiter)),
            None => rest
                .split_once('=')
                .filter(|(key, _)| !key.is_empty() && !key.contains(char::is_whitespace))
                .map(|(key, value)| Report::Output(key, value))
                .ok_or_else(|| {
                    format!(
                        "malformed line `{line}`: expected `::output key=value` or `::output key<<DELIMITER`"
                    )
                }),
        }),
        "artifact" | "::artifact" => {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(digest), None) = (words.next(), words.next(), words.next())
            else {
                return Some(Err(format!(
                    "malformed line `{line}`: expected `::artifact <name> <digest>`"
                )));
            };
            Some(
                Digest::from_str(digest)
                    .map(|d| Report::Artifact(ArtifactRef::new(name, d)))
                    .map_err(|e| format!("artifact `{name}` has a bad digest: {e}")),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::process::ExitStatus;

    use super::*;
    use crate::executor::{LogLine, Stream};

    #[test]
    fn input_variables_are_upper_case_and_alphanumeric() {
        assert_eq!(
            input_variable("compile", "version"),
            "TOLLGATE_INPUT_COMPILE_VERSION"
        );
        assert_eq!(
            input_variable("e2e-tests", "report.url"),
            "TOLLGATE_INPUT_E2E_TESTS_REPORT_URL"
        );
        assert_eq!(input_variable("bâtir", "x"), "TOLLGATE_INPUT_B_TIR_X");
    }

    #[test]
    fn a_multi_line_output_runs_to_its_delimiter_and_keeps_empty_and_command_like_lines() {
        let mut commands = Commands::new(ProcessExecutor::DEFAULT_LOG_LIMIT);
        for line in [
            "::output notes<<EOF",
            "first line",
            "",
            "::output not=a command",
            "EOF trailing is not the end",
            "EOF",
            "::output after=1",
            "::output empty<<END",
            "END",
            "::output blank<<END",
            "",
            "END",
        ] {
            commands.read(line);
        }
        commands.end();
        assert_eq!(commands.malformed, None);
        assert_eq!(
            commands.outputs["notes"],
            "first line\n\n::output not=a command\nEOF trailing is not the end"
        );
        assert_eq!(commands.outputs["after"], "1");
        assert!(!commands.outputs.contains_key("not"));
        assert_eq!(commands.outputs["empty"], "");
        assert_eq!(commands.outputs["blank"], "\n");
        // `key=value` still wins when the value holds `<<`.
        assert_eq!(
            parse_command("::output shift=a<<b"),
            Some(Ok(Report::Output("shift", "a<<b")))
        );
        assert_eq!(
            parse_command("::output notes<<EOF"),
            Some(Ok(Report::Heredoc("notes", "EOF")))
        );
    }

    #[test]
    fn a_multi_line_output_left_open_or_too_big_fails_the_stage_naming_it() {
        let mut commands = Commands::new(ProcessExecutor::DEFAULT_LOG_LIMIT);
        commands.read("::output notes<<EOF");
        commands.read("never closed");
        commands.end();
        assert_eq!(
            commands.malformed.as_deref(),
            Some("the multi-line output `notes` is not closed by a line `EOF`")
        );
        assert!(!commands.outputs.contains_key("notes"));

        let mut commands = Commands::new(16);
        commands.read("::output big<<EOF");
        commands.read("0123456789");
        commands.read("0123456789");
        commands.read("EOF");
        assert!(
            commands
                .malformed
                .as_deref()
                .is_some_and(|m| m.contains("log limit")),
            "{:?}",
            commands.malformed
        );
        assert!(!commands.outputs.contains_key("big"));
    }

    #[test]
    fn output_lines_are_parsed_and_malformed_ones_explained() {
        assert_eq!(
            parse_command("::output version=1.2=3"),
            Some(Ok(Report::Output("version", "1.2=3")))
        );
        assert_eq!(
            parse_command("::output empty="),
            Some(Ok(Report::Output("empty", "")))
        );
        for bad in [
            "::output",
            "::output novalue",
            "::output =v",
            "::output a b=c",
        ] {
            let reason = parse_command(bad).unwrap().unwrap_err();
            assert!(
                reason.contains(bad) && reason.contains("key=value"),
                "{reason}"
            );
        }
    }

    #[test]
    fn artifact_lines_parse_the_digest() {
        let digest = Digest::sha256(b"app");
        assert_eq!(
            parse_command(&format!("::artifact app {digest}")),
            Some(Ok(Report::Artifact(ArtifactRef::new("app", digest))))
        );
        let reason = parse_command("::artifact app sha256:beef")
            .unwrap()
            .unwrap_err();
        assert!(reason.contains("sha256:beef"), "{reason}");
        for bad in ["::artifact", "::artifact app", "::artifact a b c"] {
            let reason = parse_command(bad).unwrap().unwrap_err();
            assert!(reason.contains("<name> <digest>"), "{reason}");
        }
    }

    #[test]
    fn other_lines_are_not_commands() {
        for line in [
            "",
            "output x=1",
            ":: output x=1",
            "::outputs x=1",
            "::warning hi",
        ] {
            assert_eq!(parse_command(line), None, "{line}");
        }
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn stdout(text: &str) -> LogLine {
        LogLine {
            stream: Stream::Stdout,
            text: text.to_owned(),
        }
    }

    /// What the supervisor hands over for a program that printed `logs` and ended with
    /// `status`: the commands read from its standard output as they arrived.
    fn finished(status: ExitStatus, logs: Vec<LogLine>) -> Finished {
        let mut commands = Commands::new(ProcessExecutor::DEFAULT_LOG_LIMIT);
        for line in logs.iter().filter(|l| l.stream == Stream::Stdout) {
            commands.read(&line.text);
        }
        Finished {
            status,
            logs,
            commands,
        }
    }

    #[test]
    fn exit_codes_decide_success() {
        let p = ProcessExecutor::new("x").success_codes([0, 3]);
        let ok = p.outcome(finished(exited(3), vec![stdout("::output a=1")]));
        assert!(ok.status.is_success());
        assert_eq!(ok.outputs["exit_code"], "3");
        assert_eq!(ok.outputs["a"], "1");
        let failed = p.outcome(finished(exited(4), vec![stdout("hello")]));
        assert_eq!(failed, StageOutcome::failure("exit code 4").log("hello"));
        let killed = p.outcome(finished(ExitStatus::from_raw(9), vec![]));
        assert_eq!(killed, StageOutcome::failure("killed by signal 9"));
    }

    #[test]
    fn a_second_different_artifact_fails_the_stage() {
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        let p = ProcessExecutor::new("x");
        let same = p.outcome(finished(
            exited(0),
            vec![
                stdout(&format!("::artifact x {a}")),
                stdout(&format!("::artifact x {a}")),
            ],
        ));
        assert_eq!(
            same.artifact.as_deref(),
            Some(&ArtifactRef::new("x", a.clone()))
        );
        let two = p.outcome(finished(
            exited(0),
            vec![
                stdout(&format!("::artifact x {a}")),
                stdout(&format!("::artifact y {b}")),
            ],
        ));
        let reason = two.status.to_string();
        assert!(reason.contains("more than one artifact") && reason.contains(&b.to_string()));
        assert_eq!(two.artifact, None);
    }

    #[test]
    fn outputs_past_the_log_limit_fail_the_stage() {
        let mut commands = Commands::new(16);
        commands.read("::output a=1234567890");
        commands.read("::output a=12345678901");
        commands.read("::output b=1234");
        assert_eq!(commands.outputs["a"], "12345678901");
        assert!(!commands.outputs.contains_key("b"));
        assert_eq!(
            commands.malformed.as_deref(),
            Some("outputs take more than the log limit of 16 bytes")
        );
    }

    #[test]
    fn statuses_and_outcomes_read_as_their_serde_names() {
        let failed = StageStatus::Failed {
            reason: "x".to_owned(),
        };
        let timed_out = StageStatus::TimedOut {
            limit: crate::executor::TimeoutKind::Stage,
        };
        for status in [
            StageStatus::Succeeded,
            failed,
            timed_out,
            StageStatus::Cancelled,
            StageStatus::Skipped,
        ] {
            let json = serde_json::to_value(&status).expect("serialisable");
            assert_eq!(json["status"], status_word(&status));
        }
        for outcome in [
            StepOutcome::Succeeded,
            StepOutcome::Failed,
            StepOutcome::Cancelled,
            StepOutcome::TimedOut,
        ] {
            let json = serde_json::to_value(outcome).expect("serialisable");
            assert_eq!(json, step_outcome_word(outcome));
        }
        assert_eq!(status_variable("e2e-tests"), "TOLLGATE_STATUS_E2E_TESTS");
    }

    #[test]
    fn cookies_are_unique() {
        let (a, b) = (new_cookie(), new_cookie());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}-", std::process::id())));
        assert!(!a.contains(':'), "`:` separates cookies");
    }

    #[test]
    fn commands_on_stderr_are_only_logged() {
        let line = LogLine {
            stream: Stream::Stderr,
            text: "::output a=1".to_owned(),
        };
        let outcome = ProcessExecutor::new("x").outcome(finished(exited(0), vec![line]));
        assert!(!outcome.outputs.contains_key("a"));
    }
}
