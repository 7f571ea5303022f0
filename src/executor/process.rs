//! Process executors: [`ProcessExecutor`] runs a stage as a real program and captures its
//! output as the stage's log; [`CommandTable`] picks the program by stage id.
//!
//! # How a process is run
//!
//! The program starts in a process group of its own, with standard input closed and standard
//! output and error piped. Helper threads (one supervisor and one reader per pipe) read the
//! pipes line by line and wait for the program; the stage's future only awaits a channel, so
//! it never blocks the thread that polls it.
//!
//! When the program exits, whatever it left running in its group is killed, so a stage never
//! outlives itself and never keeps its pipes open. When the future is dropped (the engine
//! cancels the stage, or a timeout fires), the whole group is killed at once with `SIGKILL`
//! and the supervisor reaps the program.
//!
//! The group's id is the program's pid. The supervisor waits for the program to exit without
//! reaping it (`waitid` with `WNOWAIT`), kills the group, and only then reaps: while the
//! program is an unreaped zombie its pid cannot be reused, so a kill can never reach a
//! stranger's group.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead as _, BufReader, Read};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use async_trait::async_trait;
use futures::channel::oneshot;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

use super::{Executor, ExecutorError, LogLine, Outputs, StageContext, StageOutcome, Stream};
use crate::artifact::{ArtifactRef, Digest};
use crate::graph::StageId;

/// Runs a stage as a program.
///
/// The stage succeeds when the program exits with one of the
/// [success codes](ProcessExecutor::success_codes) (by default only `0`), and fails with
/// `exit code N` otherwise, or `killed by signal N` if a signal ended it. Either way its log is
/// everything it printed, one [`LogLine`] per line, each tagged with its [`Stream`]. A
/// successful stage has the output `exit_code`.
///
/// # Talking back to the pipeline
///
/// Two kinds of lines on standard output are read as commands (and logged like any other):
///
/// - `::output key=value` sets the named output `key`, which dependent stages see;
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
/// | `TOLLGATE_ATTEMPT` | which attempt this is, from `1` |
/// | `TOLLGATE_ARTIFACT_NAME`, `TOLLGATE_ARTIFACT_DIGEST` | the release's artifact, after the build step |
/// | `TOLLGATE_ENVIRONMENT` | the environment deployed to, in the stage and deploy steps |
/// | `TOLLGATE_INPUT_<STAGE>_<KEY>` | each output of each direct dependency |
///
/// In `TOLLGATE_INPUT_<STAGE>_<KEY>`, the stage id and key are upper-cased and every character
/// other than an ASCII letter or digit becomes `_`: the output `version` of `compile` is
/// `TOLLGATE_INPUT_COMPILE_VERSION`. These variables always describe the stage being run:
/// inherited ones are removed and they are set after [`env`](ProcessExecutor::env)'s.
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
}

impl ProcessExecutor {
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

    fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// The command for the stage in `ctx`, with its environment.
    fn command(&self, ctx: &StageContext<'_>) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The program leads a new group, so that cancelling the stage can kill everything
            // it started, and so that a terminal's Ctrl-C does not reach it past tollgate.
            .process_group(0);
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
        command
    }

    /// Turns what the program did into the stage's outcome.
    fn outcome(&self, status: ExitStatus, logs: Vec<LogLine>) -> StageOutcome {
        let mut outputs = Outputs::new();
        let mut artifact: Option<ArtifactRef> = None;
        let mut malformed = None;
        for line in logs.iter().filter(|l| l.stream == Stream::Stdout) {
            match parse_command(&line.text) {
                Some(Ok(Report::Output(key, value))) => {
                    outputs.insert(key.to_owned(), value.to_owned());
                }
                Some(Ok(Report::Artifact(reported))) => match &artifact {
                    Some(first) if *first != reported => {
                        malformed.get_or_insert_with(|| {
                            format!(
                                "more than one artifact reported: `{} {}` and `{} {}`",
                                first.name, first.digest, reported.name, reported.digest
                            )
                        });
                    }
                    _ => artifact = Some(reported),
                },
                Some(Err(reason)) => {
                    malformed.get_or_insert(reason);
                }
                None => {}
            }
        }
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
                outcome.artifact = artifact;
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
        let program = self.program_name();
        let mut command = self.command(&ctx);
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
        // From here on, dropping `running` (the engine cancelling this future) kills the group.
        let mut running = Running::start(child);
        let finished = running.finished().await;
        let (status, logs) = finished.map_err(|source| ProcessError::Io { program, source })?;
        Ok(self.outcome(status, logs))
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

/// `TOLLGATE_INPUT_<STAGE>_<KEY>`, upper-cased, with every other character turned into `_`.
fn input_variable(stage: &str, key: &str) -> String {
    let shout = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("TOLLGATE_INPUT_{}_{}", shout(stage), shout(key))
}

/// A command a program sends on standard output.
#[derive(Debug, PartialEq, Eq)]
enum Report<'a> {
    /// `::output key=value`
    Output(&'a str, &'a str),
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
        "output" | "::output" => Some(
            rest.split_once('=')
                .filter(|(key, _)| !key.is_empty() && !key.contains(char::is_whitespace))
                .map(|(key, value)| Report::Output(key, value))
                .ok_or_else(|| format!("malformed line `{line}`: expected `::output key=value`")),
        ),
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

/// A started program: the group to kill if this is dropped, and where its end arrives.
struct Running {
    group: Arc<Group>,
    finished: oneshot::Receiver<io::Result<(ExitStatus, Vec<LogLine>)>>,
}

impl Running {
    /// Hands `child` to a supervisor thread.
    fn start(mut child: Child) -> Self {
        let group = Arc::new(Group::of(&child));
        let (send, finished) = oneshot::channel();
        let pipes = (child.stdout.take(), child.stderr.take());
        let supervisor = {
            let group = Arc::clone(&group);
            thread::Builder::new()
                .name(format!("tollgate-process-{}", child.id()))
                .spawn(move || {
                    let result = supervise(&mut child, &group, pipes);
                    // The receiver is gone if the stage was cancelled; nobody is waiting then.
                    let _ = send.send(result);
                })
        };
        // Without a supervisor nobody would reap the program, so end it here. Killed with
        // `SIGKILL`, it exits at once, so this wait is short.
        if let Err(error) = supervisor {
            group.kill_and_reap();
            // The supervisor closure, with the channel's sender in it, was dropped: report
            // the spawn error through a fresh channel instead.
            let (send, finished) = oneshot::channel();
            let _ = send.send(Err(error));
            return Running { group, finished };
        }
        Running { group, finished }
    }

    async fn finished(&mut self) -> io::Result<(ExitStatus, Vec<LogLine>)> {
        (&mut self.finished).await.unwrap_or_else(|_| {
            Err(io::Error::other(
                "the thread supervising the program panicked",
            ))
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A no-op once the program has been reaped, which is always the case after
        // `finished` returned; otherwise the stage is being cancelled.
        self.group.kill();
    }
}

/// A program's process group. Its id is the program's pid (it was spawned with
/// `process_group(0)`).
struct Group {
    id: Pid,
    /// Whether the program has been reaped. Killing the group is only safe before: until
    /// then the program's pid, and so the group id, cannot be reused.
    reaped: Mutex<bool>,
}

impl Group {
    fn of(child: &Child) -> Self {
        Group {
            id: Pid::from_child(child),
            reaped: Mutex::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A panic while holding the lock cannot leave the flag half-written.
        self.reaped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `SIGKILL` to every process in the group, unless the program was reaped. Never
    /// blocks for long: the supervisor holds the lock only while it reaps an exited program.
    fn kill(&self) {
        let reaped = self.lock();
        if !*reaped {
            // `ESRCH` (nothing left in the group) is the only error possible here.
            let _ = rustix::process::kill_process_group(self.id, Signal::KILL);
        }
    }

    /// Kills the group and reaps the program by its pid: for when its `Child`, which would
    /// otherwise reap it, was dropped with a supervisor thread that could not be started.
    fn kill_and_reap(&self) {
        let mut reaped = self.lock();
        if !*reaped {
            let _ = rustix::process::kill_process_group(self.id, Signal::KILL);
            // Any error but `EINTR` means there is nothing left to reap.
            while let Err(rustix::io::Errno::INTR) =
                rustix::process::waitpid(Some(self.id), WaitOptions::empty())
            {}
            *reaped = true;
        }
    }

    /// Waits for the program to exit, kills what it left behind in its group, and reaps it.
    fn wait(&self, child: &mut Child) -> io::Result<ExitStatus> {
        loop {
            match rustix::process::waitid(
                WaitId::Pid(self.id),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => {
                    // Someone else reaped it (`SIGCHLD` ignored, or a stray `wait`): the pid
                    // may already be reused, so the group must not be killed any more.
                    *self.lock() = true;
                    return Err(error.into());
                }
            }
        }
        let mut reaped = self.lock();
        let _ = rustix::process::kill_process_group(self.id, Signal::KILL);
        // The program has exited, so this returns at once.
        let status = child.wait();
        *reaped = true;
        status
    }
}

/// Reads the program's pipes until they close and waits for it; runs on its own thread.
fn supervise(
    child: &mut Child,
    group: &Group,
    pipes: (Option<impl Read + Send>, Option<impl Read + Send>),
) -> io::Result<(ExitStatus, Vec<LogLine>)> {
    // Both readers push here as lines arrive, so the log interleaves the streams roughly as
    // the program wrote them, and keeps each stream's own order exactly.
    let log = Mutex::new(Vec::new());
    let (stdout, stderr) = pipes;
    let status = thread::scope(|scope| {
        let mut readers = Vec::with_capacity(2);
        let spawned = [
            stdout.map(|p| spawn_reader(scope, p, Stream::Stdout, &log)),
            stderr.map(|p| spawn_reader(scope, p, Stream::Stderr, &log)),
        ];
        let mut failed = None;
        for reader in spawned.into_iter().flatten() {
            match reader {
                Ok(reader) => readers.push(reader),
                Err(error) => failed = Some(error),
            }
        }
        if failed.is_some() {
            // Without a reader a pipe could fill up and stall the program: end it instead.
            group.kill();
        }
        let status = group.wait(child);
        // Once the group is dead the pipes are closed, so the readers finish.
        let mut read = Ok(());
        for reader in readers {
            let result = reader
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a log reader thread panicked")));
            read = read.and(result);
        }
        if let Some(error) = failed {
            return Err(error);
        }
        let status = status?;
        read?;
        Ok(status)
    })?;
    let logs = log.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok((status, logs))
}

fn spawn_reader<'scope, 'env>(
    scope: &'scope thread::Scope<'scope, 'env>,
    pipe: impl Read + Send + 'scope,
    stream: Stream,
    log: &'env Mutex<Vec<LogLine>>,
) -> io::Result<thread::ScopedJoinHandle<'scope, io::Result<()>>> {
    thread::Builder::new()
        .name("tollgate-process-log".to_owned())
        .spawn_scoped(scope, move || read_lines(pipe, stream, log))
}

/// Appends each line of `pipe` to `log` as it arrives, without its line ending, decoded as
/// UTF-8 with invalid bytes replaced.
fn read_lines(pipe: impl Read, stream: Stream, log: &Mutex<Vec<LogLine>>) -> io::Result<()> {
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        if pipe.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = String::from_utf8_lossy(text).into_owned();
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(LogLine { stream, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn exit_codes_decide_success() {
        let p = ProcessExecutor::new("x").success_codes([0, 3]);
        let ok = p.outcome(exited(3), vec![stdout("::output a=1")]);
        assert!(ok.status.is_success());
        assert_eq!(ok.outputs["exit_code"], "3");
        assert_eq!(ok.outputs["a"], "1");
        let failed = p.outcome(exited(4), vec![stdout("hello")]);
        assert_eq!(failed, StageOutcome::failure("exit code 4").log("hello"));
        let killed = p.outcome(ExitStatus::from_raw(9), vec![]);
        assert_eq!(killed, StageOutcome::failure("killed by signal 9"));
    }

    #[test]
    fn a_second_different_artifact_fails_the_stage() {
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        let p = ProcessExecutor::new("x");
        let same = p.outcome(
            exited(0),
            vec![
                stdout(&format!("::artifact x {a}")),
                stdout(&format!("::artifact x {a}")),
            ],
        );
        assert_eq!(same.artifact, Some(ArtifactRef::new("x", a.clone())));
        let two = p.outcome(
            exited(0),
            vec![
                stdout(&format!("::artifact x {a}")),
                stdout(&format!("::artifact y {b}")),
            ],
        );
        let reason = two.status.to_string();
        assert!(reason.contains("more than one artifact") && reason.contains(&b.to_string()));
        assert_eq!(two.artifact, None);
    }

    #[test]
    fn commands_on_stderr_are_only_logged() {
        let line = LogLine {
            stream: Stream::Stderr,
            text: "::output a=1".to_owned(),
        };
        let outcome = ProcessExecutor::new("x").outcome(exited(0), vec![line]);
        assert!(!outcome.outputs.contains_key("a"));
    }
}
