//! `ProcessExecutor` and `CommandTable` against real programs: arguments, environment and
//! working directory, captured log lines, exit codes and signals, outputs and artifacts, typed
//! spawn errors, and a program's whole process group killed on every way a stage can be cut
//! off (cancel, timeouts, fail-fast, a panicking observer) with no orphan left behind. Then
//! the edges: daemons and processes that leave the group (found by a marker, none left
//! behind), logs within their limit and kept when a stage is cut off, memory and helper
//! threads (measured in a child process running one test alone), real time under a virtual
//! clock, and what a finally command is told.
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
    CancelHandle, Engine, Event, RetryPolicy, StageReport, StepOutcome, StepReport, Warning,
    observer_fn,
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
fn a_multi_line_output_is_read_up_to_its_delimiter_and_an_open_one_fails_the_stage() {
    let executor = ProcessExecutor::shell(
        "echo '::output notes<<EOF'; printf 'fixed: #12\\n\\n::output fake=1\\n'; echo EOF; echo '::output after=yes'",
    );
    let report = run_one(Step::Test, &executor);
    assert_eq!(report.status, StageStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["notes"], "fixed: #12\n\n::output fake=1");
    assert_eq!(report.outputs["after"], "yes");
    assert!(!report.outputs.contains_key("fake"));

    let graph = StageGraph::builder()
        .matrix(
            StageSpec::test("unit"),
            &tollgate::graph::Matrix::new()
                .axis("os", ["linux"])
                .axis("rust-version", ["1.85"]),
        )
        .build()
        .unwrap();
    let matrix = ProcessExecutor::shell(
        "echo \"::output seen=$TOLLGATE_MATRIX_OS/$TOLLGATE_MATRIX_RUST_VERSION\"",
    );
    let report = run_step(&graph, Step::Test, &matrix);
    assert_eq!(report.stages[0].outputs["seen"], "linux/1.85", "{report:?}");

    let open = ProcessExecutor::shell("echo '::output notes<<EOF'; echo 'never closed'");
    let report = run_one(Step::Test, &open);
    assert!(
        matches!(&report.status, StageStatus::Failed { reason } if reason.contains("`notes` is not closed by a line `EOF`")),
        "{:?}",
        report.status
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
fn a_panicking_observer_is_contained_and_the_program_is_still_killed_when_the_run_ends() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    let graph = StageGraph::builder()
        .stage(StageSpec::test("hang"))
        .stage(StageSpec::test("sibling"))
        .build()
        .expect("valid graph");
    // The observer panics on the sibling's end, which the test triggers once `hang` runs,
    // and cancels the run just before: the panic is contained (the run goes on and reports
    // it), and the cancel ends the run with `hang`'s program still in it.
    let cancel = CancelHandle::new();
    let cancels = cancel.clone();
    // The test moves the virtual clock 60 s from its own thread while the engine may be in
    // the middle of polling `hang`'s program, and the engine times each poll on that clock:
    // such a poll would look blocked for 60 s (`Warning::ExecutorBlocked`, seen once in 50
    // runs under load). Blocking is not what this test is about, so its threshold is a day.
    let engine = Engine::builder()
        .cancel_handle(cancel)
        .blocking_threshold(Duration::from_secs(24 * 60 * 60))
        .observer(observer_fn(move |event: &Event| {
            if let Event::StageFinished { stage, .. } = event {
                if stage == "sibling" {
                    cancels.cancel();
                    panic!("deliberate panic in an observer");
                }
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
    let report = running
        .join()
        .expect("the observer's panic does not reach the host");
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    assert!(
        report
            .stage("sibling")
            .is_some_and(|s| s.status.is_success())
    );
    assert_eq!(
        report.stage("hang").map(|s| &s.status),
        Some(&StageStatus::Cancelled)
    );
    assert!(
        matches!(
            report.warnings.as_slice(),
            [Warning::ObserverPanicked { message, .. }]
                if message == "deliberate panic in an observer"
        ),
        "{:?}",
        report.warnings
    );
    program.assert_dies();
    grandchild.assert_dies();
}

#[test]
fn a_run_its_host_drops_still_kills_the_program() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    let graph = StageGraph::builder()
        .stage(StageSpec::test("hang"))
        .build()
        .expect("valid graph");
    let executor = ProcessExecutor::shell(ANNOUNCE_AND_WAIT).env("PIDS", &fifo);
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    // The host stops waiting (a request that timed out, a task that was aborted): the run's
    // future is dropped in the middle, with the program running.
    let running = Background::spawn(move || {
        let release = ReleaseId::new("web-1").expect("valid release id");
        let clock = clock();
        let run = engine_run(&graph, &executor, &clock, &release);
        block_on(futures::future::select(Box::pin(run), stopped));
    });
    let (program, grandchild) = read_pids(&fifo);
    stop.send(()).expect("the run waits");
    running.join().expect("dropping a run does not panic");
    program.assert_dies();
    grandchild.assert_dies();
}

/// The test step of `graph` run by a default engine.
async fn engine_run(
    graph: &StageGraph,
    executor: &dyn Executor,
    clock: &ManualClock,
    release: &ReleaseId,
) -> StepReport {
    Engine::new()
        .run_graph(graph, Step::Test, executor, clock, release, "4f2a9c1")
        .await
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

// ---- robust at the edges ----
//
// Programs that try to outlive their stage (a daemon, `setsid`, a double fork, `nohup`), real
// time under a virtual clock, and what a stage's log and environment keep at the edges. The
// processes a test starts carry its `Marker` (in their environment, or on their command line
// when they clear it); the test looks for live processes with the marker to find survivors,
// and kills any it finds, so that a failing test leaves nothing behind either.

/// A string unique to one test, carried by every process that test starts.
struct Marker(String);

impl Marker {
    /// The environment variable that carries the marker.
    const VARIABLE: &str = "PROCESS_TEST_MARKER";

    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Marker(format!(
            "tollgate-process-test-marker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn as_str(&self) -> &str {
        &self.0
    }

    /// `executor` with the marker in its program's environment.
    fn mark(&self, executor: ProcessExecutor) -> ProcessExecutor {
        executor.env(Self::VARIABLE, &self.0)
    }

    /// The live processes (zombies are dead) that carry the marker in their environment or on
    /// their command line.
    fn carriers(&self) -> Vec<i32> {
        let me = std::process::id().to_string();
        let Ok(proc) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let needle = self.0.as_bytes();
        let contains = |haystack: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        proc.filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()) && *name != me)
            .filter(|pid| {
                let dir = Path::new("/proc").join(pid);
                let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next());
                let alive = !matches!(state, None | Some('Z' | 'X'));
                alive
                    && (contains(&fs::read(dir.join("environ")).unwrap_or_default())
                        || contains(&fs::read(dir.join("cmdline")).unwrap_or_default()))
            })
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// Fails the test if a process with the marker is still alive: one found is given until
    /// the watchdog to die (a stage that was cut off may still be sweeping), and reported as a
    /// survivor if it does not.
    fn assert_none_survive(&self) {
        let survivors: Vec<String> = self
            .carriers()
            .into_iter()
            .map(Watched::lenient)
            .filter(|watched| {
                watched
                    .pidfd
                    .as_ref()
                    .is_some_and(|pidfd| !readable_in_time(pidfd))
            })
            .map(|watched| {
                let pid = watched.pid.as_raw_nonzero();
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!(
                    "{pid} ({})",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
            .collect();
        assert!(
            survivors.is_empty(),
            "processes outlived their stage: {survivors:?}"
        );
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        // Whatever the test's outcome, nothing it started stays behind.
        for pid in self.carriers() {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A one-stage graph `job` in the test step with `spec`'s limits, run in the background with
/// `block_on`, so that its virtual clock moves only when the test moves it.
fn spawn_one(
    spec: StageSpec,
    engine: Engine,
    executor: impl Executor + 'static,
    clock: ManualClock,
) -> Background<StepReport> {
    let graph = StageGraph::builder()
        .stage(spec)
        .build()
        .expect("a one-stage graph is valid");
    spawn_step(engine, graph, executor, clock)
}

/// The escapee's script: it tells the stage's program it is up through the FIFO in `$UP`,
/// then waits forever.
const ESCAPEE: &str = r#"echo up > "$UP"; exec sleep 1000"#;

#[test]
fn a_daemonising_command_ends_its_stage_when_the_command_ends() {
    let dir = TempDir::new();
    let up = dir.fifo("up");
    let marker = Marker::new();
    // The escapee leaves the program's group and session with `setsid`, and still holds
    // stdout and stderr: the program itself exits once the escapee is up.
    let script = r#"
        setsid sh -c "$ESCAPEE" &
        read up < "$UP"
        echo started
    "#;
    let executor = marker.mark(
        ProcessExecutor::shell(script)
            .env("ESCAPEE", ESCAPEE)
            .env("UP", &up),
    );
    let running = Background::spawn(move || run_one(Step::Test, &executor));
    let report = running.join().expect("the run does not panic");
    assert_eq!(report.status, StageStatus::Succeeded);
    assert_eq!(lines(&report.logs, Stream::Stdout), ["started"]);
    marker.assert_none_survive();
}

#[test]
fn a_stage_that_times_out_keeps_its_log_and_leaves_nothing_running() {
    let dir = TempDir::new();
    let (up, pids) = (dir.fifo("up"), dir.fifo("pids"));
    let marker = Marker::new();
    let script = r#"
        echo "before the timeout"
        echo "on stderr too" >&2
        setsid sh -c "$ESCAPEE" &
        read up < "$UP"
        echo "$$ $!" > "$PIDS"
        exec sleep 1000
    "#;
    let executor = marker.mark(
        ProcessExecutor::shell(script)
            .env("ESCAPEE", ESCAPEE)
            .env("UP", &up)
            .env("PIDS", &pids),
    );
    let clock = clock();
    let spec = StageSpec::test("job").timeout(Duration::from_secs(30));
    let running = spawn_one(spec, Engine::new(), executor, clock.clone());
    let _ = read_raw_pids(&pids);
    clock.advance(Duration::from_secs(30));
    let report = running.join().expect("the run does not panic");
    let job = report.stage("job").expect("reported");
    assert_eq!(
        job.status,
        StageStatus::TimedOut {
            limit: tollgate::executor::TimeoutKind::Stage
        }
    );
    assert_eq!(lines(&job.logs, Stream::Stdout), ["before the timeout"]);
    assert_eq!(lines(&job.logs, Stream::Stderr), ["on stderr too"]);
    marker.assert_none_survive();
}

/// How a program lets a process escape its process group.
#[derive(Debug, Clone, Copy)]
enum Escape {
    /// `setsid`: a session and group of its own.
    Setsid,
    /// A double fork: the subshell that started it exits at once, orphaning it, and it runs
    /// under `setsid`.
    DoubleFork,
    /// `nohup`: deaf to the hang-up signal.
    Nohup,
}

const ESCAPES: [Escape; 3] = [Escape::Setsid, Escape::DoubleFork, Escape::Nohup];

/// How the stage whose program let a process escape ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The program exits successfully once the escapee is up.
    Exit,
    /// The stage's timeout runs out.
    Timeout,
    /// `CancelHandle::cancel`.
    Cancel,
}

/// Runs a program that starts an escapee as `escape` says (with its output sent elsewhere, so
/// that only a sweep can find it), ends the stage as `ending` says, and checks that the
/// escapee did not outlive it.
fn escapee_dies(escape: Escape, ending: Ending) {
    const LIMIT: Duration = Duration::from_secs(30);
    let dir = TempDir::new();
    let (up, pids) = (dir.fifo("up"), dir.fifo("pids"));
    let marker = Marker::new();
    let start = match escape {
        Escape::Setsid => r#"setsid sh -c "$ESCAPEE" >/dev/null 2>&1 &"#,
        Escape::DoubleFork => r#"( setsid sh -c "$ESCAPEE" >/dev/null 2>&1 & )"#,
        Escape::Nohup => r#"nohup sh -c "$ESCAPEE" >/dev/null 2>&1 &"#,
    };
    let rest = match ending {
        Ending::Exit => "echo done",
        Ending::Timeout | Ending::Cancel => r#"echo "$$ $$" > "$PIDS"; exec sleep 1000"#,
    };
    let script = format!("{start}\nread up < \"$UP\"\n{rest}\n");
    let executor = marker.mark(
        ProcessExecutor::shell(script)
            .env("ESCAPEE", ESCAPEE)
            .env("UP", &up)
            .env("PIDS", &pids),
    );
    let cancel = CancelHandle::new();
    let engine = Engine::builder()
        .cancel_handle(cancel.clone())
        .build()
        .expect("valid engine");
    let clock = clock();
    let spec = StageSpec::test("job").timeout(LIMIT);
    let running = spawn_one(spec, engine, executor, clock.clone());
    let guard = CancelOnDrop(cancel.clone());
    let expected = match ending {
        Ending::Exit => StageStatus::Succeeded,
        Ending::Timeout => {
            let _ = read_raw_pids(&pids);
            clock.advance(LIMIT);
            StageStatus::TimedOut {
                limit: tollgate::executor::TimeoutKind::Stage,
            }
        }
        Ending::Cancel => {
            let _ = read_raw_pids(&pids);
            cancel.cancel();
            StageStatus::Cancelled
        }
    };
    let report = running.join().expect("the run does not panic");
    drop(guard);
    let job = report.stage("job").expect("reported");
    assert_eq!(job.status, expected, "{escape:?}, {ending:?}");
    marker.assert_none_survive();
}

#[test]
fn processes_that_leave_the_group_die_when_their_program_exits() {
    for escape in ESCAPES {
        escapee_dies(escape, Ending::Exit);
    }
}

#[test]
fn processes_that_leave_the_group_die_when_their_stage_times_out() {
    for escape in ESCAPES {
        escapee_dies(escape, Ending::Timeout);
    }
}

#[test]
fn processes_that_leave_the_group_die_when_their_stage_is_cancelled() {
    for escape in ESCAPES {
        escapee_dies(escape, Ending::Cancel);
    }
}

#[test]
fn a_real_process_holds_virtual_time_back_until_it_ends() {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("job").timeout(Duration::from_secs(30 * 60)))
        .build()
        .expect("valid graph");
    let report = run_step(&graph, Step::Test, &ProcessExecutor::shell("sleep 0.3"));
    let job = report.stage("job").expect("reported");
    assert_eq!(job.status, StageStatus::Succeeded);
    // Virtual time followed the process's real time.
    let took = job
        .finished_at
        .expect("finished")
        .saturating_since(job.started_at.expect("started"));
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[test]
fn a_hung_process_is_stopped_after_its_timeout_in_real_time() {
    let marker = Marker::new();
    let graph = StageGraph::builder()
        .stage(StageSpec::test("job").timeout(Duration::from_secs(1)))
        .build()
        .expect("valid graph");
    let executor = marker.mark(ProcessExecutor::shell("echo hanging; exec sleep 1000"));
    let started = std::time::Instant::now();
    let report = run_step(&graph, Step::Test, &executor);
    let took = started.elapsed();
    let job = report.stage("job").expect("reported");
    assert_eq!(
        job.status,
        StageStatus::TimedOut {
            limit: tollgate::executor::TimeoutKind::Stage
        }
    );
    assert!(took >= Duration::from_secs(1), "stopped after {took:?}");
    assert!(took < WATCHDOG, "stopped after {took:?}");
    assert_eq!(lines(&job.logs, Stream::Stdout), ["hanging"]);
    marker.assert_none_survive();
}

#[test]
fn a_finally_command_sees_the_step_outcome_and_each_dependency_s_status() {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("compile-ok"))
        .stage(StageSpec::test("broken"))
        .stage(StageSpec::test("after-broken").after("broken"))
        .stage(
            StageSpec::test("report")
                .after("compile-ok")
                .after("broken")
                .after("after-broken")
                .finally(),
        )
        .build()
        .expect("valid graph");
    let engine = Engine::builder()
        .failure_policy(tollgate::engine::FailurePolicy::ContinueIndependent)
        .build()
        .expect("valid engine");
    let executor = CommandTable::new()
        .command("compile-ok", ProcessExecutor::new("true"))
        .command("broken", ProcessExecutor::new("false"))
        .command("after-broken", ProcessExecutor::new("true"))
        .command(
            "report",
            ProcessExecutor::shell(
                r#"
                echo "step=$TOLLGATE_STEP_OUTCOME"
                echo "compile-ok=$TOLLGATE_STATUS_COMPILE_OK"
                echo "broken=$TOLLGATE_STATUS_BROKEN"
                echo "after-broken=$TOLLGATE_STATUS_AFTER_BROKEN"
                "#,
            ),
        );
    let clock = clock();
    let release = ReleaseId::new("web-1").expect("valid release id");
    let report = run_virtual(
        &clock,
        engine.run_graph(&graph, Step::Test, &executor, &clock, &release, "4f2a9c1"),
    );
    assert_eq!(report.outcome, StepOutcome::Failed);
    let finally = report.stage("report").expect("reported");
    assert_eq!(finally.status, StageStatus::Succeeded);
    assert_eq!(
        lines(&finally.logs, Stream::Stdout),
        [
            "step=failed",
            "compile-ok=succeeded",
            "broken=failed",
            "after-broken=skipped",
        ]
    );
}

#[test]
fn fail_fast_keeps_the_partial_logs_of_the_siblings_it_cancels() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    let marker = Marker::new();
    let graph = StageGraph::builder()
        .stage(StageSpec::test("long"))
        .stage(StageSpec::test("failing"))
        .build()
        .expect("valid graph");
    // At a fixed instant, which the failing stage may start waiting for only after the test
    // moved the clock there (see `cut_off`).
    let fails_at = START.saturating_add(Duration::from_secs(60));
    let failing = from_async_fn(move |ctx| {
        Box::pin(async move {
            ctx.clock().sleep_until(fails_at).await;
            Ok(StageOutcome::failure("failing failed"))
        })
    });
    let long = marker.mark(
        ProcessExecutor::shell(
            r#"
            echo "partial 1"
            echo "partial 2" >&2
            echo "partial 3"
            echo "$$ $$" > "$PIDS"
            exec sleep 1000
            "#,
        )
        .env("PIDS", &fifo),
    );
    let executor = ByStage(vec![
        ("long", Box::new(long)),
        ("failing", Box::new(failing)),
    ]);
    let clock = clock();
    let running = spawn_step(Engine::new(), graph, executor, clock.clone());
    let _ = read_raw_pids(&fifo);
    clock.set(fails_at);
    let report = running.join().expect("the run does not panic");
    let long = report.stage("long").expect("reported");
    assert_eq!(long.status, StageStatus::Cancelled);
    assert_eq!(
        lines(&long.logs, Stream::Stdout),
        ["partial 1", "partial 3"]
    );
    assert_eq!(lines(&long.logs, Stream::Stderr), ["partial 2"]);
    marker.assert_none_survive();
}

#[test]
fn a_process_that_clears_its_environment_but_holds_the_output_is_killed_after_the_grace_period() {
    let dir = TempDir::new();
    let (up, never) = (dir.fifo("up"), dir.fifo("never"));
    let marker = Marker::new();
    // Out of the group, without the cookie (or anything else) in its environment, and still
    // holding stdout and stderr; it waits to open a FIFO nobody writes. The marker is its `$0`.
    let script = r#"
        setsid env -i /bin/sh -c 'echo up > "$1"; read never < "$2"' "$MARKER" "$UP" "$NEVER" &
        read up < "$UP"
        echo started
    "#;
    let executor = ProcessExecutor::shell(script)
        .env("MARKER", marker.as_str())
        .env("UP", &up)
        .env("NEVER", &never)
        .grace(Duration::from_millis(100));
    let running = Background::spawn(move || run_one(Step::Test, &executor));
    let report = running.join().expect("the run does not panic");
    assert_eq!(report.status, StageStatus::Succeeded);
    assert_eq!(lines(&report.logs, Stream::Stdout), ["started"]);
    marker.assert_none_survive();
}

#[test]
fn a_flood_of_output_keeps_its_head_and_its_tail_within_the_log_limit() {
    const LIMIT: usize = 64 * 1024;
    const TOTAL: usize = 100_000;
    let executor =
        ProcessExecutor::shell(format!("seq 1 {TOTAL}; echo '::output last=yes'")).log_limit(LIMIT);
    let report = run_one(Step::Test, &executor);
    assert_eq!(report.status, StageStatus::Succeeded);
    // The command at the very end was read, though much of the log was cut.
    assert_eq!(report.outputs["last"], "yes");
    let logs = lines(&report.logs, Stream::Stdout);
    let marker = logs
        .iter()
        .position(|l| l.starts_with("[tollgate: "))
        .expect("a line says what was cut");
    let number = |l: &&str| l.parse::<usize>().expect("a number from seq");
    let head: Vec<usize> = logs[..marker].iter().map(number).collect();
    let tail: Vec<usize> = logs[marker + 1..logs.len() - 1]
        .iter()
        .map(number)
        .collect();
    assert_eq!(head, (1..=head.len()).collect::<Vec<_>>());
    assert_eq!(tail, (TOTAL - tail.len() + 1..=TOTAL).collect::<Vec<_>>());
    let cut = head.len() + 1..=TOTAL - tail.len();
    let cut_bytes: usize = cut.clone().map(|n| n.to_string().len()).sum();
    assert_eq!(
        logs[marker],
        format!(
            "[tollgate: {} lines ({cut_bytes} bytes) cut here to keep the log within {LIMIT} bytes]",
            cut.count()
        )
    );
    // Each line counts as its text and 64 bytes, and the kept lines fit the limit.
    let kept: usize = logs.iter().map(|l| l.len() + 64).sum();
    assert!(kept <= LIMIT + 256, "{kept} bytes kept");
}

/// Set in the environment of this test binary when it runs a test alone in a child process,
/// where the test measures the process's memory and threads without other tests beside it.
const ALONE: &str = "PROCESS_TEST_ALONE";

/// Runs the test `name` again, alone, in a child process of this test binary, and fails if it
/// fails there; returns true in that child, where the test does its work.
fn alone(name: &str) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, "1")
        .output()
        .expect("run the test binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "`{name}`, run alone, failed:\n{stdout}\n{stderr}"
    );
    false
}

/// A line of `/proc/self/status`, in kilobytes.
fn status_kb(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The names of this process's threads that start with `tollgate-`.
fn helper_threads() -> Vec<String> {
    fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("tollgate-"))
        .collect()
}

/// Waits (without sleeping) until no helper thread is left, failing after the watchdog.
fn assert_helper_threads_end() {
    let started = std::time::Instant::now();
    loop {
        let left = helper_threads();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < WATCHDOG,
            "helper threads still running {WATCHDOG:?} after their stages ended: {left:?}"
        );
        thread::yield_now();
    }
}

/// Runs `executor` as a stage with an attempt timeout of `limit`, in virtual time that follows
/// the program's real time.
fn run_with_timeout(executor: &ProcessExecutor, limit: Duration) -> tollgate::engine::StageReport {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("job").attempt_timeout(limit))
        .build()
        .expect("a one-stage graph is valid");
    let mut report = run_step(&graph, Step::Test, executor);
    report.stages.remove(0)
}

#[test]
fn memory_stays_in_proportion_to_the_log_limit_whatever_the_program_prints() {
    const LIMIT: usize = 1024 * 1024;
    if !alone("memory_stays_in_proportion_to_the_log_limit_whatever_the_program_prints") {
        return;
    }
    let before = status_kb("VmRSS");
    // A million two-byte lines.
    let short = ProcessExecutor::shell("yes | head -c 2000000").log_limit(LIMIT);
    let report = run_one(Step::Test, &short);
    assert_eq!(report.status, StageStatus::Succeeded);
    assert!(
        report.logs.len() < LIMIT / 64,
        "{} lines kept",
        report.logs.len()
    );
    // Endless output, cut off by a timeout: short lines, then one line without an end.
    let timeout = Duration::from_millis(200);
    for script in ["exec yes", "exec head -c 6G /dev/zero"] {
        let endless = ProcessExecutor::shell(script).log_limit(LIMIT);
        let report = run_with_timeout(&endless, timeout);
        assert!(
            matches!(report.status, StageStatus::TimedOut { .. }),
            "{script}: {}",
            report.status
        );
    }
    // Nothing keeps reading (and buffering) once the stages are over.
    assert_helper_threads_end();
    let grown_kb = status_kb("VmHWM").saturating_sub(before);
    assert!(
        grown_kb < 32 * 1024,
        "the process's peak memory grew by {grown_kb} kB with a log limit of {} kB",
        LIMIT / 1024
    );
}

#[test]
fn helper_threads_stop_with_their_stage() {
    if !alone("helper_threads_stop_with_their_stage") {
        return;
    }
    let dir = TempDir::new();
    let (up, pids) = (dir.fifo("up"), dir.fifo("pids"));
    let marker = Marker::new();
    // A program that hangs, with a daemon that holds its output, cut off by a timeout once
    // both are up.
    let script = r#"
        setsid sh -c "$ESCAPEE" &
        read up < "$UP"
        echo "$$ $!" > "$PIDS"
        exec sleep 1000
    "#;
    let executor = marker.mark(
        ProcessExecutor::shell(script)
            .env("ESCAPEE", ESCAPEE)
            .env("UP", &up)
            .env("PIDS", &pids),
    );
    let clock = clock();
    let spec = StageSpec::test("job").timeout(Duration::from_secs(30));
    let running = spawn_one(spec, Engine::new(), executor, clock.clone());
    let _ = read_raw_pids(&pids);
    clock.advance(Duration::from_secs(30));
    let report = running.join().expect("the run does not panic");
    let job = report.stage("job").expect("reported");
    assert!(
        matches!(job.status, StageStatus::TimedOut { .. }),
        "{}",
        job.status
    );
    assert_helper_threads_end();
    marker.assert_none_survive();
}
