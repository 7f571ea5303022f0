//! The supervision of a running program: one helper thread per program ([`supervise`]) reads
//! both of its pipes, waits for it to exit and ends whatever it left behind; [`Running`], the
//! stage's side, cuts it all off when it is dropped.
//!
//! The thread waits in one `poll` on the two pipes, on the program's exit (a pidfd on Linux;
//! elsewhere a small waiter thread that closes a socket when the program exits) and on a stop
//! socket whose other end [`Running`] closes when the stage is cut off. So nothing blocks on
//! a read the stage no longer wants: the thread stops with the stage. (The two signals are
//! socket pairs rather than pipes because std opens them close-on-exec on every Unix, so no
//! program started meanwhile inherits an end and keeps it open.)

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

use super::log::Capture;
use super::{Commands, sweep};
use crate::executor::{LogLine, PartialLog, Stream};

/// How a program is supervised.
#[derive(Debug)]
pub(super) struct Settings {
    /// The most memory its log may take.
    pub(super) log_limit: usize,
    /// How long its output may stay open after it exited.
    pub(super) grace: Duration,
    /// The token in the environment of every process it starts.
    pub(super) cookie: String,
}

/// What a program that ran to its end left: how it ended, its log, the commands it sent.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) status: ExitStatus,
    pub(super) logs: Vec<LogLine>,
    pub(super) commands: Commands,
}

/// How much one wake of the supervisor, or a cut-off, reads from one pipe at most before it
/// looks at the rest again; it bounds how long the reading lock is held, which a cut-off, on
/// the stage's own thread, may have to wait for.
const READ_BUDGET: usize = 256 * 1024;

/// The size of one read.
const CHUNK: usize = 64 * 1024;

/// How long, after the sweep that ends the grace period, the supervisor still waits for the
/// pipes to close (killed holders close them as they die) before it stops reading them.
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// A started program, as the stage sees it: dropping it before the program finished cuts the
/// program off (kills its group, keeps the log read so far in the attempt's partial log, and
/// tells the supervisor to sweep up what is left).
pub(super) struct Running {
    shared: Arc<Shared>,
    /// Closed (dropped) to tell the supervisor the stage is cut off.
    stop: Option<UnixStream>,
    finished: oneshot::Receiver<io::Result<Finished>>,
    partial: PartialLog,
    done: bool,
}

impl Running {
    /// Hands `child`, whose stdout and stderr are piped, to a supervisor thread.
    pub(super) fn start(
        mut child: Child,
        settings: Settings,
        partial: PartialLog,
    ) -> io::Result<Self> {
        let group = Group::of(&child);
        let pipes = [
            child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
        ];
        // Non-blocking, so that a cut-off can take what the pipes hold without waiting.
        let prepared = pipes
            .iter()
            .flatten()
            .try_for_each(|pipe| rustix::io::ioctl_fionbio(pipe, true))
            .map_err(io::Error::from)
            .and_then(|()| UnixStream::pair());
        let (stop_reader, stop) = match prepared {
            Ok(stop) => stop,
            Err(error) => {
                drop(child);
                group.kill_and_reap();
                return Err(error);
            }
        };
        let shared = Arc::new(Shared {
            group,
            reading: Mutex::new(Reading {
                capture: Capture::new(settings.log_limit),
                buffer: Vec::new(),
                open: [pipes[0].is_some(), pipes[1].is_some()],
            }),
            pipes,
        });
        let (send, finished) = oneshot::channel();
        let spawned = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("tollgate-process-{}", child.id()))
                .spawn(move || {
                    let result = supervise(&shared, child, &stop_reader, &settings);
                    // The receiver is gone if the stage was cut off; nobody is waiting then.
                    let _ = send.send(result);
                })
        };
        if let Err(error) = spawned {
            // The closure, with the child and the channel in it, was dropped: nobody would
            // reap the program, so end it here. Killed with `SIGKILL`, it exits at once.
            shared.group.kill_and_reap();
            return Err(error);
        }
        Ok(Running {
            shared,
            stop: Some(stop),
            finished,
            partial,
            done: false,
        })
    }

    /// Waits for the program to end, and for its output to close or be given up on.
    pub(super) async fn finished(&mut self) -> io::Result<Finished> {
        let result = (&mut self.finished).await.unwrap_or_else(|_| {
            Err(io::Error::other(
                "the thread supervising the program panicked",
            ))
        });
        self.done = true;
        result
    }
}

impl Drop for Running {
    /// Cuts the program off: never blocks (a kill, non-blocking reads of what is already in
    /// the pipes, bounded), so it is safe on an async thread.
    fn drop(&mut self) {
        // A no-op once the program has been reaped, as it has when it finished; otherwise the
        // stage is being cut off (or its supervisor died, and nothing else would kill it).
        self.shared.group.kill();
        if self.done {
            return;
        }
        // Whole, even if the program finished just as the stage was cut off: the supervisor
        // leaves the capture in place when it is done.
        self.partial.keep(self.shared.snapshot());
        // The supervisor sweeps up what left the group, reaps the program and ends.
        drop(self.stop.take());
    }
}

/// What the stage and the supervisor share.
struct Shared {
    group: Group,
    /// The read ends of stdout and stderr, non-blocking, in [`STREAMS`] order.
    pipes: [Option<File>; 2],
    /// Only ever held for non-blocking reads and for copying the log.
    reading: Mutex<Reading>,
}

/// The captured output and the state of the pipes; every read of a pipe happens under its
/// lock, so lines enter the capture in the order they were read, whichever thread read them.
struct Reading {
    capture: Capture,
    buffer: Vec<u8>,
    /// Whether each pipe may still have something to read.
    open: [bool; 2],
}

impl Shared {
    fn reading(&self) -> MutexGuard<'_, Reading> {
        // A panic while reading leaves at worst a line half-kept: still a consistent log.
        self.reading.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> [bool; 2] {
        self.reading().open
    }

    /// Reads what pipe `index` has now, up to [`READ_BUDGET`].
    fn drain(&self, index: usize) -> io::Result<()> {
        match &self.pipes[index] {
            Some(pipe) => self.reading().drain(index, pipe),
            None => Ok(()),
        }
    }

    /// The log so far, after reading what the pipes already hold.
    fn snapshot(&self) -> Vec<LogLine> {
        let mut reading = self.reading();
        for (index, pipe) in self.pipes.iter().enumerate() {
            if let Some(pipe) = pipe {
                // A read error leaves the log as it was: still worth keeping.
                let _ = reading.drain(index, pipe);
            }
        }
        reading.capture.snapshot()
    }

    /// The pipes' inode numbers, by which their holders are found.
    fn pipe_inodes(&self) -> Vec<u64> {
        self.pipes
            .iter()
            .flatten()
            .filter_map(|pipe| pipe.metadata().ok())
            .map(|meta| meta.ino())
            .collect()
    }

    /// Stops reading the pipes that are still open, saying so in the log.
    fn give_up(&self, grace: Duration) {
        let mut reading = self.reading();
        for (index, stream) in STREAMS.into_iter().enumerate() {
            if reading.open[index] {
                reading.open[index] = false;
                reading.capture.finish(stream);
            }
        }
        reading.capture.note(format!(
            "[tollgate: stopped reading the output, still open {} ms after the program exited]",
            (grace + GIVE_UP_AFTER).as_millis()
        ));
    }

    /// The log and the commands, once both pipes are done.
    fn take(&self) -> (Vec<LogLine>, Commands) {
        // A copy of the lines: the stage may be cut off after the supervisor is done but
        // before it hears so, and its snapshot must still find the whole log.
        self.reading().capture.complete()
    }
}

impl Reading {
    fn drain(&mut self, index: usize, mut pipe: &File) -> io::Result<()> {
        let Reading {
            capture,
            buffer,
            open,
        } = self;
        if buffer.is_empty() {
            buffer.resize(CHUNK, 0);
        }
        let mut read = 0;
        while open[index] && read < READ_BUDGET {
            match pipe.read(buffer) {
                Ok(0) => {
                    open[index] = false;
                    capture.finish(STREAMS[index]);
                }
                Ok(n) => {
                    capture.feed(STREAMS[index], &buffer[..n]);
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    open[index] = false;
                    capture.finish(STREAMS[index]);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Where the supervisor is after the program exited.
#[derive(Clone, Copy)]
enum AfterExit {
    /// Within the grace period: the output may still close by itself.
    Grace,
    /// The holders of the output were killed; waiting for it to close.
    Swept,
}

/// Runs on the supervisor thread: reads the pipes until they close, waits for the program,
/// ends what it left behind, and returns how it went. Returns early, after killing everything
/// and reaping the program, if the stage is cut off (`stop` closes).
fn supervise(
    shared: &Shared,
    mut child: Child,
    stop: &UnixStream,
    settings: &Settings,
) -> io::Result<Finished> {
    let exit = match ExitSignal::of(&child) {
        Ok(exit) => exit,
        Err(error) => {
            end_everything(shared, &mut child, false, settings);
            return Err(error);
        }
    };
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut after_exit: Option<(Instant, AfterExit)> = None;
    let mut read_error = None;
    loop {
        let open = shared.open();
        if status.is_some() && open == [false, false] {
            break;
        }
        let waited = wait(
            shared,
            open,
            status.is_none().then(|| exit.as_fd()),
            stop,
            after_exit,
        );
        let ready = match waited {
            Ok(ready) if !ready.stop => ready,
            Ok(_) => {
                end_everything(shared, &mut child, status.is_some(), settings);
                return Err(io::Error::other("the stage was cut off"));
            }
            Err(error) => {
                end_everything(shared, &mut child, status.is_some(), settings);
                return Err(error);
            }
        };
        for (index, _) in ready.pipes.iter().enumerate().filter(|(_, r)| **r) {
            if let Err(error) = shared.drain(index) {
                read_error.get_or_insert(error);
            }
        }
        if ready.exit {
            // The program has exited: its group goes with it, and so does everything else
            // carrying the stage's cookie. What still holds the output gets a grace period.
            status = Some(shared.group.reap(&mut child));
            sweep::kill_marked(&settings.cookie, &[]);
            after_exit = Some((Instant::now() + settings.grace, AfterExit::Grace));
        }
        if let Some((at, stage)) = after_exit {
            if Instant::now() >= at {
                match stage {
                    AfterExit::Grace => {
                        sweep::kill_marked(&settings.cookie, &shared.pipe_inodes());
                        after_exit = Some((Instant::now() + GIVE_UP_AFTER, AfterExit::Swept));
                    }
                    AfterExit::Swept => {
                        shared.give_up(settings.grace);
                        after_exit = None;
                    }
                }
            }
        }
    }
    let (logs, commands) = shared.take();
    if let Some(error) = read_error {
        return Err(error);
    }
    Ok(Finished {
        status: status
            .unwrap_or_else(|| Err(io::Error::other("the program was never waited for")))?,
        logs,
        commands,
    })
}

/// Kills the program's group and everything carrying the cookie or holding the pipes, and
/// reaps the program unless it was (`reaped`).
fn end_everything(shared: &Shared, child: &mut Child, reaped: bool, settings: &Settings) {
    shared.group.kill();
    sweep::kill_marked(&settings.cookie, &shared.pipe_inodes());
    if !reaped {
        // Killed, the program exits at once (unless it is stuck in the kernel).
        let _ = shared.group.reap(child);
    }
}

/// What woke the supervisor.
#[derive(Default)]
struct Ready {
    pipes: [bool; 2],
    exit: bool,
    stop: bool,
}

/// Waits until a pipe in `open` has something (or closed), the program exits (`exit`, while
/// it has not), the stage is cut off, or the step after the program's exit is due.
fn wait(
    shared: &Shared,
    open: [bool; 2],
    exit: Option<BorrowedFd<'_>>,
    stop: &UnixStream,
    after_exit: Option<(Instant, AfterExit)>,
) -> io::Result<Ready> {
    const PIPE: [usize; 2] = [0, 1];
    let mut fds = Vec::with_capacity(4);
    let mut roles = Vec::with_capacity(4);
    for index in PIPE {
        if let (true, Some(pipe)) = (open[index], &shared.pipes[index]) {
            fds.push(PollFd::new(pipe, PollFlags::IN));
            roles.push(Some(index));
        }
    }
    if let Some(exit) = &exit {
        fds.push(PollFd::from_borrowed_fd(*exit, PollFlags::IN));
        roles.push(None);
    }
    fds.push(PollFd::new(stop, PollFlags::IN));
    let timeout = after_exit
        .map(|(at, _)| at.saturating_duration_since(Instant::now()))
        // A grace period too long for a timespec is as good as endless.
        .and_then(|left| Timespec::try_from(left).ok());
    loop {
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let woken = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
    let mut ready = Ready::default();
    let (last, rest) = fds.split_last().expect("the stop pipe is always polled");
    ready.stop = last.revents().intersects(woken);
    for (fd, role) in rest.iter().zip(&roles) {
        if fd.revents().intersects(woken) {
            match role {
                Some(index) => ready.pipes[*index] = true,
                None => ready.exit = true,
            }
        }
    }
    Ok(ready)
}

/// What becomes readable when the program exits.
enum ExitSignal {
    /// Linux: a pidfd, readable once the process has exited.
    #[cfg(target_os = "linux")]
    Pidfd(OwnedFd),
    /// Elsewhere (or on a kernel without pidfds): a socket whose other end a waiter thread
    /// closes when the process exits.
    Waiter(UnixStream),
}

impl ExitSignal {
    fn of(child: &Child) -> io::Result<Self> {
        let pid = Pid::from_child(child);
        #[cfg(target_os = "linux")]
        if let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            return Ok(ExitSignal::Pidfd(pidfd));
        }
        ExitSignal::waiter(pid)
    }

    fn waiter(pid: Pid) -> io::Result<Self> {
        let (exited, writer) = UnixStream::pair()?;
        thread::Builder::new()
            .name(format!("tollgate-wait-{}", pid.as_raw_nonzero()))
            .spawn(move || {
                // Waits without reaping, so the group id stays reserved; any error but `EINTR`
                // means there is nothing to wait for, which the supervisor finds out itself.
                while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                ) {}
                drop(writer);
            })?;
        Ok(ExitSignal::Waiter(exited))
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            #[cfg(target_os = "linux")]
            ExitSignal::Pidfd(fd) => fd.as_fd(),
            ExitSignal::Waiter(pipe) => pipe.as_fd(),
        }
    }
}

/// A program's process group. Its id is the program's pid (it was spawned with
/// `process_group(0)`).
///
/// The group is killed only while the program is unreaped: until then its pid, and so the
/// group id, cannot be reused, so a kill can never reach a stranger's group.
struct Group {
    id: Pid,
    /// Whether the program has been reaped.
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
    /// blocks for long: the lock is held only to reap a program that has already exited.
    fn kill(&self) {
        let reaped = self.lock();
        if !*reaped {
            // `ESRCH` (nothing left in the group) is the only error possible here.
            let _ = rustix::process::kill_process_group(self.id, Signal::KILL);
        }
    }

    /// Kills the group and reaps the program by its pid: for when its `Child`, which would
    /// otherwise reap it, was dropped with a supervisor that could not be started.
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

    /// Waits for the program to exit (at once, if it has), kills what it left in its group,
    /// and reaps it.
    fn reap(&self, child: &mut Child) -> io::Result<ExitStatus> {
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;
    use std::process::Command;

    use super::*;

    /// Whether `fd` becomes readable within ten seconds.
    fn readable(fd: BorrowedFd<'_>) -> bool {
        let timeout = Timespec::try_from(Duration::from_secs(10)).expect("fits");
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
        loop {
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(ready) => return ready > 0,
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => panic!("poll failed: {error}"),
            }
        }
    }

    // The waiter thread is what systems without pidfds use; here it is checked on Linux too.
    #[test]
    fn the_waiter_thread_signals_the_exit_and_leaves_the_reaping_to_the_group() {
        let mut child = Command::new("true")
            .process_group(0)
            .spawn()
            .expect("spawn `true`");
        let group = Group::of(&child);
        let exit = ExitSignal::waiter(Pid::from_child(&child)).expect("a waiter thread");
        assert!(readable(exit.as_fd()), "the exit was never signalled");
        let status = group.reap(&mut child).expect("reaped by the group");
        assert!(status.success());
    }
}
