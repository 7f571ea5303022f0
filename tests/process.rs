//! `ProcessExecutor` and `CommandTable` against real programs: arguments, environment and
//! working directory, captured log lines, exit codes and signals, outputs and artifacts, typed
//! spawn errors, and a program's whole process group killed on every way a stage can be cut
//! off (cancel, timeouts, fail-fast, a panicking observer) with no orphan left behind.
//!
//! Nothing here sleeps to synchronise. A script that must be cut off announces its pid and its
//! background child's through a FIFO, which the test reads; only then is the stage cancelled
//! or the virtual clock moved past its timeout; and the test waits for each process's death
//! on its pidfd. The waits on the FIFO and the pidfds have a generous watchdog, so a broken
//! script fails its test instead of hanging it.

// Pidfds, which let the tests wait for a process's death without polling, are Linux's.
#![cfg(target_os = "linux")]

mod support;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags};
use support::{START, block_on, clock, revision};
use tollgate::engine::{
    CancelHandle, Engine, Event, RetryPolicy, StageReport, StepOutcome, StepReport, observer_fn,
};
use tollgate::executor::{
    BoxExecutor, CommandTable, ExecutorError, LogLine, ProcessError, ProcessExecutor, StageStatus,
    Stream, TimeoutKind, from_async_fn,
};
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::id::ReleaseId;
use tollgate::lifecycle::{StateName, Step};
use tollgate::prelude::*;
use tollgate::time::{ManualClock, run_virtual};

/// How long a test waits for a kernel event (a FIFO write, a process's death) before it fails.
/// Far above what any of these events takes, so it never decides a passing run.
const WATCHDOG: Duration = Duration::from_secs(10);

/// The script of a stage that has to be cut off: it starts a background grandchild, tells
/// the test both pids through the FIFO in `$PIDS`, and waits for the grandchild forever.
const ANNOUNCE_AND_WAIT: &str = r#"
echo "waiting"
sleep 1000 &
echo "$$ $!" > "$PIDS"
wait
"#;

// ---- helpers ----

/// A fresh directory under the system temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "tollgate-process-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Makes a FIFO called `name` in this directory.
    fn fifo(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .expect("make a FIFO");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a failure to clean up must not hide the test's own result.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Waits up to [`WATCHDOG`] for `fd` to become readable; false if it did not.
fn readable_in_time(fd: impl AsFd) -> bool {
    let timeout = Timespec::try_from(WATCHDOG).expect("the watchdog fits a timespec");
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(ready) => return ready > 0,
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => panic!("poll failed: {error}"),
        }
    }
}

/// A process the test watches through its pidfd, opened while the process was known to be
/// alive (or, for [`Watched::lenient`], already dead), so that its death is seen even after
/// its pid is reused.
struct Watched {
    pid: Pid,
    /// `None` if the process had already exited and been reaped when the test looked.
    pidfd: Option<OwnedFd>,
}

impl Watched {
    /// Watches a process that must still be running.
    fn new(raw: i32) -> Self {
        let watched = Watched::lenient(raw);
        assert!(
            watched.pidfd.is_some(),
            "process {raw} should still be running when it is announced"
        );
        watched
    }

    /// Watches a process that may already be gone.
    fn lenient(raw: i32) -> Self {
        let pid = Pid::from_raw(raw).expect("a positive pid");
        let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Some(fd),
            Err(rustix::io::Errno::SRCH) => None,
            Err(error) => panic!("pidfd_open({raw}) failed: {error}"),
        };
        Watched { pid, pidfd }
    }

    /// Blocks until the process has exited (a pidfd becomes readable then), failing the test
    /// if that takes longer than the watchdog.
    fn assert_dies(&self) {
        if let Some(pidfd) = &self.pidfd {
            assert!(
                readable_in_time(pidfd),
                "process {} still alive {WATCHDOG:?} after its stage was cut off",
                self.pid.as_raw_nonzero()
            );
        }
    }
}

/// Reads the line `<program pid> <grandchild pid>` that [`ANNOUNCE_AND_WAIT`] writes into
/// `fifo`, and starts watching both processes, which must still be running.
fn read_pids(fifo: &Path) -> (Watched, Watched) {
    let (program, grandchild) = read_raw_pids(fifo);
    (Watched::new(program), Watched::new(grandchild))
}

/// Reads the line `<program pid> <grandchild pid>` from `fifo`.
fn read_raw_pids(fifo: &Path) -> (i32, i32) {
    // Opened without blocking, so a script that dies before it opens its end cannot hang the
    // test: the poll below then times out instead.
    let fd = rustix::fs::open(
        fifo,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .expect("open the FIFO");
    let mut file = fs::File::from(fd);
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        assert!(
            readable_in_time(&file),
            "the script never announced its pids"
        );
        let mut buf = [0; 64];
        match file.read(&mut buf) {
            Ok(0) => panic!("the script closed the FIFO without announcing its pids"),
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the FIFO failed: {e}"),
        }
    }
    let line = String::from_utf8(line).expect("pids are ASCII");
    let mut pids = line
        .split_whitespace()
        .map(|p| p.parse::<i32>().expect("a pid"));
    let (Some(program), Some(grandchild), None) = (pids.next(), pids.next(), pids.next()) else {
        panic!("expected two pids, got {line:?}");
    };
    (program, grandchild)
}

/// Work running on another thread, so that the test thread stays free to read the FIFO.
struct Background<T>(mpsc::Receiver<thread::Result<T>>);

impl<T: Send + 'static> Background<T> {
    fn spawn(work: impl FnOnce() -> T + Send + 'static) -> Self {
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            // The test may have failed and gone: then nobody wants the result.
            let _ = send.send(catch_unwind(AssertUnwindSafe(work)));
        });
        Background(receive)
    }

    /// The work's result, or its panic; fails the test if it takes longer than the watchdog,
    /// instead of hanging it.
    fn join(self) -> thread::Result<T> {
        self.0
            .recv_timeout(WATCHDOG)
            .unwrap_or_else(|e| panic!("the run did not end within {WATCHDOG:?}: {e}"))
    }
}

/// Cancels `handle` when dropped: the test's side of a run holds one, so that if the test
/// panics before it stops the stage itself, the run still ends and kills its processes.
struct CancelOnDrop(CancelHandle);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs one step of `graph` with `executor` on a fresh virtual clock, which jumps over every
/// backoff and timeout.
fn run_step(graph: &StageGraph, step: Step, executor: &dyn Executor) -> StepReport {
    let clock = clock();
    let release = ReleaseId::new("web-1").expect("valid release id");
    run_virtual(
        &clock,
        Engine::new().run_graph(graph, step, executor, &clock, &release, "4f2a9c1"),
    )
}

/// Runs a graph of one stage `job` in `step` and returns its report.
fn run_one(step: Step, executor: &dyn Executor) -> StageReport {
    let graph = StageGraph::builder()
        .stage(StageSpec::new("job", step))
        .build()
        .expect("a one-stage graph is valid");
    let mut report = run_step(&graph, step, executor);
    report.stages.remove(0)
}

/// The text of the lines of `logs` from `stream`, in order.
fn lines(logs: &[LogLine], stream: Stream) -> Vec<&str> {
    logs.iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text.as_str())
        .collect()
}

fn failed(reason: impl Into<String>) -> StageStatus {
    StageStatus::Failed {
        reason: reason.into(),
    }
}

/// Runs each stage with its own executor, as a pipeline would; `Engine::run_graph` takes one
/// executor for the whole graph.
struct ByStage(Vec<(&'static str, BoxExecutor)>);

#[async_trait]
impl Executor for ByStage {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        let (_, executor) = self
            .0
            .iter()
            .find(|(id, _)| ctx.stage() == *id)
            .ok_or("no executor for this stage")?;
        executor.run(ctx).await
    }
}

/// The executor's own error that the stage of `report` failed with, as a `ProcessError`.
fn process_error(report: &StageReport) -> &ProcessError {
    report
        .error()
        .expect("the executor returned an error, which the report keeps")
        .downcast_ref::<ProcessError>()
        .expect("the error is a ProcessError")
}

// ---- running a program ----

#[test]
fn arguments_environment_and_working_directory_reach_the_program() {
    let dir = TempDir::new();
    let script = r#"
        printf '[%s]' "$0" "$@"; echo
        echo "greeting=$GREETING"
        echo "doomed=${DOOMED-unset}"
        echo "stage=$TOLLGATE_STAGE step=$TOLLGATE_STEP release=$TOLLGATE_RELEASE"
        echo "revision=$TOLLGATE_REVISION attempt=$TOLLGATE_ATTEMPT"
        pwd -P
    "#;
    let executor = ProcessExecutor::shell(script)
        .args(["argv0", "one two", "three"])
        .env("GREETING", "hello world")
        .env("DOOMED", "set, then removed")
        .env_remove("DOOMED")
        .current_dir(dir.path());
    let report = run_one(Step::Test, &executor);
    assert_eq!(report.status, StageStatus::Succeeded);
    let cwd = fs::canonicalize(dir.path()).expect("the temp dir exists");
    assert_eq!(
        lines(&report.logs, Stream::Stdout),
        [
            "[argv0][one two][three]",
            "greeting=hello world",
            "doomed=unset",
            "stage=job step=test release=web-1",
            "revision=4f2a9c1 attempt=1",
            cwd.to_str().expect("a UTF-8 temp dir"),
        ]
    );
    assert!(lines(&report.logs, Stream::Stderr).is_empty());
    assert_eq!(report.outputs["exit_code"], "0");
}

#[test]
fn the_program_inherits_the_environment_except_what_env_remove_drops() {
    // Any variable this test process has will do; `PATH` is left alone so `env` is found.
    let (key, value) = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .find(|(k, v)| k != "PATH" && !k.starts_with("TOLLGATE_") && !v.contains('\n'))
        .expect("the test process has some environment");
    let entry = format!("{key}={value}");
    let listed = |executor: &ProcessExecutor| -> bool {
        let report = run_one(Step::Test, executor);
        assert_eq!(report.status, StageStatus::Succeeded);
        lines(&report.logs, Stream::Stdout).contains(&entry.as_str())
    };
    assert!(
        listed(&ProcessExecutor::new("env")),
        "{entry} not inherited"
    );
    assert!(
        !listed(&ProcessExecutor::new("env").env_remove(&key)),
        "{key} was removed but the program still saw it"
    );
}

#[test]
fn stdout_and_stderr_arrive_as_lines_tagged_with_their_stream_in_order() {
    let script = r#"
        i=1
        while [ $i -le 100 ]; do
            echo "out $i"
            echo "err $i" >&2
            i=$((i + 1))
        done
        printf 'windows\r\n'
        printf 'bad \377 byte\n'
        printf 'no newline at the end'
    "#;
    let report = run_one(Step::Test, &ProcessExecutor::shell(script));
    assert_eq!(report.status, StageStatus::Succeeded);
    let expected =
        |stream: &str| -> Vec<String> { (1..=100).map(|i| format!("{stream} {i}")).collect() };
    let mut out = expected("out");
    out.extend(["windows", "bad \u{fffd} byte", "no newline at the end"].map(str::to_owned));
    assert_eq!(lines(&report.logs, Stream::Stdout), out);
    assert_eq!(lines(&report.logs, Stream::Stderr), expected("err"));
    assert_eq!(report.logs.len(), 203);
}

#[test]
fn a_flood_on_both_streams_is_drained_without_a_stall() {
    // Far more than a pipe holds (64 KiB on Linux) on each stream at once: a reader that
    // drained one stream before the other would leave the program blocked on a full pipe.
    let script = r#"
        yes "stdout line of some length, to fill the pipe quickly" | head -n 20000 &
        yes "stderr line of some length, to fill the pipe quickly" | head -n 20000 >&2 &
        wait
    "#;
    let report = run_one(Step::Test, &ProcessExecutor::shell(script));
    assert_eq!(report.status, StageStatus::Succeeded);
    let out = lines(&report.logs, Stream::Stdout);
    let err = lines(&report.logs, Stream::Stderr);
    assert_eq!((out.len(), err.len()), (20_000, 20_000));
    assert!(out.iter().all(|l| l.starts_with("stdout line")));
    assert!(err.iter().all(|l| l.starts_with("stderr line")));
}

#[test]
fn a_child_left_holding_the_pipes_does_not_keep_the_stage_running() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    // The program exits at once, but its background child still holds stdout and stderr
    // open: without the group kill at exit, the log readers would wait for it forever.
    let script = r#"sleep 1000 & echo "$$ $!" > "$PIDS"; echo "leaving""#;
    let executor = ProcessExecutor::shell(script).env("PIDS", &fifo);
    let running = Background::spawn(move || run_one(Step::Test, &executor));
    // The program exits right after announcing, and may be reaped (and its child killed)
    // before the test looks.
    let (program, grandchild) = read_raw_pids(&fifo);
    let (program, grandchild) = (Watched::lenient(program), Watched::lenient(grandchild));
    let report = running.join().expect("the run does not panic");
    assert_eq!(report.status, StageStatus::Succeeded);
    assert_eq!(lines(&report.logs, Stream::Stdout), ["leaving"]);
    program.assert_dies();
    grandchild.assert_dies();
}

// ---- exit codes and signals ----

#[test]
fn exit_codes_map_to_success_or_failure() {
    let cases = [
        (ProcessExecutor::new("true"), StageStatus::Succeeded),
        (ProcessExecutor::new("false"), failed("exit code 1")),
        (ProcessExecutor::shell("exit 3"), failed("exit code 3")),
        (
            ProcessExecutor::shell("exit 3").success_codes([0, 3]),
            StageStatus::Succeeded,
        ),
        (
            ProcessExecutor::new("true").success_codes([1]),
            failed("exit code 0"),
        ),
        (
            ProcessExecutor::shell("echo partial; exit 1").success_codes([0, 1]),
            StageStatus::Succeeded,
        ),
    ];
    for (executor, expected) in cases {
        let report = run_one(Step::Test, &executor);
        assert_eq!(report.status, expected, "{executor:?}");
    }
    let accepted = run_one(
        Step::Test,
        &ProcessExecutor::shell("exit 3").success_codes([0, 3]),
    );
    assert_eq!(accepted.outputs["exit_code"], "3");
}

#[test]
fn a_death_by_signal_is_reported_as_such_whatever_the_success_codes() {
    for (signal, number) in [("TERM", 15), ("KILL", 9)] {
        let executor =
            ProcessExecutor::shell(format!("echo dying; kill -{signal} $$")).success_codes(0..=255);
        let report = run_one(Step::Test, &executor);
        assert_eq!(report.status, failed(format!("killed by signal {number}")));
        assert_eq!(lines(&report.logs, Stream::Stdout), ["dying"]);
        assert!(report.outputs.is_empty());
    }
}

#[test]
fn each_attempt_is_told_its_number() {
    let executor = ProcessExecutor::shell(
        r#"echo "attempt $TOLLGATE_ATTEMPT"; [ "$TOLLGATE_ATTEMPT" -ge 3 ]"#,
    );
    let graph = StageGraph::builder()
        .stage(StageSpec::test("flaky").retry(RetryPolicy::attempts(3)))
        .build()
        .expect("valid graph");
    let report = run_step(&graph, Step::Test, &executor);
    let flaky = report.stage("flaky").expect("reported");
    assert_eq!(flaky.status, StageStatus::Succeeded);
    assert_eq!(
        lines(&flaky.logs, Stream::Stdout),
        ["attempt 1", "attempt 2", "attempt 3"]
    );
    let statuses: Vec<_> = flaky.attempts().iter().map(|a| a.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            failed("exit code 1"),
            failed("exit code 1"),
            StageStatus::Succeeded
        ]
    );
}

// ---- talking back to the pipeline ----

#[test]
fn output_lines_reach_direct_dependents_as_input_variables() {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("produce"))
        .stage(StageSpec::test("consume").after("produce"))
        .stage(StageSpec::test("report").after("consume"))
        .build()
        .expect("valid graph");
    let executor = CommandTable::new()
        .command(
            "produce",
            ProcessExecutor::shell(
                "echo '::output version=1.2.3'; echo '::output report-url=https://ci/r?a=b'",
            ),
        )
        .command(
            "consume",
            ProcessExecutor::shell(
                r#"
                echo "version=$TOLLGATE_INPUT_PRODUCE_VERSION"
                echo "url=$TOLLGATE_INPUT_PRODUCE_REPORT_URL"
                echo '::output checked=yes'
                "#,
            ),
        )
        .command(
            "report",
            ProcessExecutor::shell(
                r#"echo "direct=$TOLLGATE_INPUT_CONSUME_CHECKED transitive=${TOLLGATE_INPUT_PRODUCE_VERSION-unset}""#,
            ),
        );
    let report = run_step(&graph, Step::Test, &executor);
    assert!(report.succeeded(), "{report:#?}");
    let produce = report.stage("produce").expect("reported");
    assert_eq!(produce.outputs["version"], "1.2.3");
    assert_eq!(produce.outputs["report-url"], "https://ci/r?a=b");
    assert_eq!(produce.outputs["exit_code"], "0");
    let consume = report.stage("consume").expect("reported");
    assert_eq!(
        lines(&consume.logs, Stream::Stdout),
        [
            "version=1.2.3",
            "url=https://ci/r?a=b",
            "::output checked=yes"
        ]
    );
    assert_eq!(
        lines(
            &report.stage("report").expect("reported").logs,
            Stream::Stdout
        ),
        ["direct=yes transitive=unset"]
    );
}

#[test]
fn an_artifact_line_sets_the_build_artifact() {
    let digest = Digest::sha256(b"app v1.2.3");
    let executor = ProcessExecutor::shell(r#"echo "::artifact app $DIGEST""#)
        .env("DIGEST", digest.to_string());
    let report = run_one(Step::Build, &executor);
    assert_eq!(report.status, StageStatus::Succeeded);
    assert_eq!(
        report.artifact.as_deref(),
        Some(&ArtifactRef::new("app", digest))
    );

    let bad = run_one(
        Step::Build,
        &ProcessExecutor::shell("echo '::artifact app sha256:beef'"),
    );
    assert!(
        matches!(&bad.status, StageStatus::Failed { reason } if reason.contains("sha256:beef")),
        "{}",
        bad.status
    );
    assert_eq!(bad.artifact, None);
}

#[test]
fn a_pipeline_of_programs_carries_the_reported_artifact_to_later_steps() {
    let digest = Digest::sha256(b"web 4f2a9c1");
    let expect_artifact =
        format!(r#"test "$TOLLGATE_ARTIFACT_NAME $TOLLGATE_ARTIFACT_DIGEST" = "web {digest}""#);
    let pipeline = Pipeline::<Deployment>::builder("web")
        .clock(clock())
        .stage(Stage::build("compile"))
        .stage(Stage::test("unit"))
        .stage(Stage::stage("staging"))
        .stage(Stage::deploy("production"))
        .default_executor(
            CommandTable::new()
                .command(
                    "compile",
                    ProcessExecutor::shell(format!("echo '::artifact web {digest}'")),
                )
                .fallback(ProcessExecutor::shell(expect_artifact)),
        )
        .build()
        .expect("valid pipeline");
    block_on(async {
        let built = pipeline
            .start("web-1", revision("4f2a9c1"))
            .expect("valid release id")
            .build(&pipeline)
            .await
            .expect("the build succeeds");
        let artifact = built.artifact().clone();
        assert_eq!(artifact, ArtifactRef::new("web", digest));
        let tested = built.test(&pipeline, &artifact).await.expect("tests pass");
        let staged = tested
            .stage(&pipeline, &artifact)
            .await
            .expect("staging passes");
        let approved = staged.auto_approve(&pipeline).await.expect("no gates");
        let deployed = approved
            .deploy(&pipeline, &artifact)
            .await
            .expect("the deploy succeeds");
        assert_eq!(deployed.record().steps().len(), 4);
    });
}

// ---- programs that cannot run ----

#[test]
fn a_missing_program_is_a_typed_error_naming_it() {
    for program in ["tollgate-no-such-program", "/nonexistent/bin/tool"] {
        let executor = ProcessExecutor::new(program).arg("--version");
        let report = run_one(Step::Test, &executor);
        assert_eq!(
            report.status,
            failed(format!("executor error: program `{program}` not found"))
        );
        match process_error(&report) {
            ProcessError::NotFound { program: named } => assert_eq!(named, program),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

#[test]
fn a_move_whose_program_cannot_spawn_fails_with_the_process_error_as_its_source() {
    let program = "tollgate-no-such-program";
    let pipeline = Pipeline::<Deployment>::builder("web")
        .clock(clock())
        .stage(Stage::build("compile").run(ProcessExecutor::new(program)))
        .stage(Stage::test("unit"))
        .stage(Stage::stage("staging"))
        .stage(Stage::deploy("production"))
        .default_executor(ProcessExecutor::new("true"))
        .build()
        .expect("valid pipeline");
    let fresh = pipeline
        .start("web-1", revision("4f2a9c1"))
        .expect("valid release id");

    let refused = block_on(fresh.build(&pipeline)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::StageFailed);
    let (fresh, err) = refused.into_parts();
    assert_eq!(
        err.to_string(),
        format!(
            "stage `compile` failed in the build step: executor error: program `{program}` not found"
        )
    );
    let source = std::error::Error::source(&err).expect("the executor's error is the source");
    match source.downcast_ref::<ProcessError>() {
        Some(ProcessError::NotFound { program: named }) => assert_eq!(named, program),
        other => panic!("expected the ProcessExecutor's NotFound, got {other:?} from {source:?}"),
    }
    assert_eq!(
        fresh.state(),
        StateName::Commit,
        "the release comes back unmoved"
    );
}

#[test]
fn a_missing_working_directory_is_a_typed_error_naming_it() {
    let dir = TempDir::new();
    let missing = dir.path().join("not-created");
    let executor = ProcessExecutor::new("true").current_dir(&missing);
    let report = run_one(Step::Test, &executor);
    assert_eq!(
        report.status,
        failed(format!(
            "executor error: working directory `{}` of `true` does not exist",
            missing.display()
        ))
    );
    match process_error(&report) {
        ProcessError::MissingDirectory { program, dir } => {
            assert_eq!((program.as_str(), dir), ("true", &missing));
        }
        other => panic!("expected MissingDirectory, got {other:?}"),
    }
}

#[test]
fn a_program_that_cannot_be_started_is_a_spawn_error() {
    let dir = TempDir::new();
    let script = dir.path().join("not-executable.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").expect("write the script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    let executor = ProcessExecutor::new(&script);
    let report = run_one(Step::Test, &executor);
    assert!(
        matches!(&report.status, StageStatus::Failed { reason } if reason.starts_with("executor error: could not start")),
        "{}",
        report.status
    );
    match process_error(&report) {
        ProcessError::Spawn { program, source } => {
            assert_eq!(OsString::from(program), script.into_os_string());
            assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
}

#[test]
fn a_command_table_without_an_entry_or_fallback_names_the_stage() {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("unit"))
        // After `unit`, so that its failure cannot cut `unit` off under fail-fast.
        .stage(StageSpec::test("lint").after("unit"))
        .build()
        .expect("valid graph");
    let table = CommandTable::new().command("unit", ProcessExecutor::new("true"));
    let report = run_step(&graph, Step::Test, &table);
    assert_eq!(
        report.stage("unit").expect("reported").status,
        StageStatus::Succeeded
    );
    assert_eq!(
        report.stage("lint").expect("reported").status,
        failed("executor error: no command for stage `lint`")
    );
}

// ---- cutting a program off ----

/// How a test cuts off the stage `hang` once its program has announced its pids.
#[derive(Debug, Clone, Copy)]
enum CutOff {
    /// `CancelHandle::cancel`.
    Cancel,
    /// The stage's attempt timeout runs out.
    AttemptTimeout,
    /// The stage's timeout runs out.
    StageTimeout,
    /// The engine's step timeout runs out.
    StepTimeout,
    /// A sibling stage fails under the default fail-fast policy.
    SiblingFails,
}

/// Runs `hang` ([`ANNOUNCE_AND_WAIT`]) beside a sibling that fails a minute of virtual time
/// into the run, cuts `hang` off as `how` says once it announced its pids, and checks that
/// its program and the program's background child both die. Returns `hang`'s status and
/// the step's outcome.
///
/// The sibling sleeps until a fixed instant, not for a duration: the engine first polls it
/// after `hang` has spawned its program, so the test, woken by the announcement, may move
/// the clock before the sibling starts waiting. A duration would then count from the moved
/// clock, and the sibling would wait past the only time the test ever sets.
fn cut_off(how: CutOff) -> (StageStatus, StepOutcome) {
    const LIMIT: Duration = Duration::from_secs(30);
    let sibling_fails_at = START.saturating_add(2 * LIMIT);
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    let mut hang = StageSpec::test("hang");
    let mut engine = Engine::builder();
    match how {
        CutOff::AttemptTimeout => hang = hang.attempt_timeout(LIMIT),
        CutOff::StageTimeout => hang = hang.timeout(LIMIT),
        CutOff::StepTimeout => engine = engine.step_timeout(LIMIT),
        CutOff::Cancel | CutOff::SiblingFails => {}
    }
    let cancel = CancelHandle::new();
    let engine = engine
        .cancel_handle(cancel.clone())
        .build()
        .expect("valid engine");
    let graph = StageGraph::builder()
        .stage(hang)
        .stage(StageSpec::test("sibling"))
        .build()
        .expect("valid graph");
    let sibling = from_async_fn(move |ctx| {
        Box::pin(async move {
            ctx.clock().sleep_until(sibling_fails_at).await;
            Ok(StageOutcome::failure("sibling failed"))
        })
    });
    let executor = ByStage(vec![
        (
            "hang",
            Box::new(ProcessExecutor::shell(ANNOUNCE_AND_WAIT).env("PIDS", &fifo)),
        ),
        ("sibling", Box::new(sibling)),
    ]);
    let clock = clock();
    let running = spawn_step(engine, graph, executor, clock.clone());

    let guard = CancelOnDrop(cancel.clone());
    let (program, grandchild) = read_pids(&fifo);
    match how {
        CutOff::Cancel => cancel.cancel(),
        CutOff::AttemptTimeout | CutOff::StageTimeout | CutOff::StepTimeout => {
            clock.advance(LIMIT);
        }
        CutOff::SiblingFails => clock.set(sibling_fails_at),
    }
    let report = running.join().expect("the run does not panic");
    drop(guard);
    program.assert_dies();
    grandchild.assert_dies();
    let hang = report.stage("hang").expect("reported");
    (hang.status.clone(), report.outcome)
}

/// Drives one test step of `graph` in the background with `block_on`, so that the virtual
/// clock moves only when the test moves it.
fn spawn_step(
    engine: Engine,
    graph: StageGraph,
    executor: impl Executor + 'static,
    clock: ManualClock,
) -> Background<StepReport> {
    Background::spawn(move || {
        let release = ReleaseId::new("web-1").expect("valid release id");
        block_on(engine.run_graph(&graph, Step::Test, &executor, &clock, &release, "4f2a9c1"))
    })
}

#[test]
fn cancelling_a_stage_kills_its_program_and_the_program_s_children() {
    assert_eq!(
        cut_off(CutOff::Cancel),
        (StageStatus::Cancelled, StepOutcome::Cancelled)
    );
}

#[test]
fn an_attempt_timeout_kills_the_program_and_its_children() {
    let timed_out = StageStatus::TimedOut {
        limit: TimeoutKind::Attempt,
    };
    assert_eq!(
        cut_off(CutOff::AttemptTimeout),
        (timed_out, StepOutcome::Failed)
    );
}

#[test]
fn a_stage_timeout_kills_the_program_and_its_children() {
    let timed_out = StageStatus::TimedOut {
        limit: TimeoutKind::Stage,
    };
    assert_eq!(
        cut_off(CutOff::StageTimeout),
        (timed_out, StepOutcome::Failed)
    );
}

#[test]
fn a_step_timeout_kills_the_program_and_its_children() {
    let timed_out = StageStatus::TimedOut {
        limit: TimeoutKind::Step,
    };
    assert_eq!(
        cut_off(CutOff::StepTimeout),
        (timed_out, StepOutcome::TimedOut)
    );
}

#[test]
fn a_failing_sibling_under_fail_fast_kills_the_program_and_its_children() {
    assert_eq!(
        cut_off(CutOff::SiblingFails),
        (StageStatus::Cancelled, StepOutcome::Failed)
    );
}

#[test]
fn a_panicking_observer_unwinds_the_run_and_still_kills_the_program() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    let graph = StageGraph::builder()
        .stage(StageSpec::test("hang"))
        .stage(StageSpec::test("sibling"))
        .build()
        .expect("valid graph");
    // The observer panics on the sibling's end, which the test triggers once `hang` runs: the
    // panic unwinds out of `block_on`, dropping the run with `hang` still in it.
    let engine = Engine::builder()
        .observer(observer_fn(|event: &Event| {
            if let Event::StageFinished { stage, .. } = event {
                assert_ne!(stage, "sibling", "deliberate panic in an observer");
            }
        }))
        .build()
        .expect("valid engine");
    // At a fixed instant, which the sibling may start waiting for only after the test moved
    // the clock there (see `cut_off`).
    let sibling_ends_at = START.saturating_add(Duration::from_secs(60));
    let sibling = from_async_fn(move |ctx| {
        Box::pin(async move {
            ctx.clock().sleep_until(sibling_ends_at).await;
            Ok(StageOutcome::success())
        })
    });
    let executor = ByStage(vec![
        (
            "hang",
            Box::new(ProcessExecutor::shell(ANNOUNCE_AND_WAIT).env("PIDS", &fifo)),
        ),
        ("sibling", Box::new(sibling)),
    ]);
    let clock = clock();
    let running = spawn_step(engine, graph, executor, clock.clone());
    let (program, grandchild) = read_pids(&fifo);
    clock.set(sibling_ends_at);
    assert!(running.join().is_err(), "the observer's panic ends the run");
    program.assert_dies();
    grandchild.assert_dies();
}

#[test]
fn a_reader_that_panics_before_stopping_the_stage_leaves_nothing_running() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    let cancel = CancelHandle::new();
    let engine = Engine::builder()
        .cancel_handle(cancel.clone())
        .build()
        .expect("valid engine");
    let graph = StageGraph::builder()
        .stage(StageSpec::test("hang"))
        .build()
        .expect("valid graph");
    let executor = ProcessExecutor::shell(ANNOUNCE_AND_WAIT).env("PIDS", &fifo);
    let running = spawn_step(engine, graph, executor, clock());
    // The reading side gives up (panics) after reading the pids and before stopping the
    // stage; unwinding drops its guard, whose cancel ends the run.
    let watched = Arc::new(Mutex::new(None));
    let reader = catch_unwind(AssertUnwindSafe(|| {
        let _guard = CancelOnDrop(cancel.clone());
        *watched.lock().unwrap_or_else(PoisonError::into_inner) = Some(read_pids(&fifo));
        panic!("deliberate panic in the reader");
    }));
    assert!(reader.is_err());
    let report = running.join().expect("the run does not panic");
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    let (program, grandchild) = watched
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .expect("the pids were read before the panic");
    program.assert_dies();
    grandchild.assert_dies();
}
