//! Finding and killing what a stage left outside its process group (Linux): every process
//! whose environment carries the stage's cookie and, once the grace period is over, every
//! process that can still write to one of the stage's output pipes. Both are read from `/proc`, the way
//! Jenkins' process tree killer finds a build's processes by the cookie in their environment.
//!
//! Each match is pinned with a pidfd and checked again before it is signalled, so a pid that
//! was reused meanwhile is never killed; the scan repeats until a pass finds no process it had
//! not signalled, so children forked during a pass are found by the next; and the sweep waits
//! (a bounded time) for the processes it killed to die, so that when the stage reports, they
//! are gone. On other systems there is no `/proc` to read, and the sweep does nothing.

/// The variable that carries the cookies of the stages a process belongs to, separated by
/// `:` (a tollgate host that itself runs in a stage adds its own stages' cookies after the
/// one it inherited).
pub(super) const COOKIE_VARIABLE: &str = "TOLLGATE_STAGE_COOKIE";

#[cfg(target_os = "linux")]
pub(super) use linux::kill_marked;

/// Does nothing: only Linux has a `/proc` to find escaped processes in.
#[cfg(not(target_os = "linux"))]
pub(super) fn kill_marked(_cookie: &str, _pipes: &[u64]) {}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashSet;
    use std::fs;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::process::{Pid, PidfdFlags, Signal};

    use super::COOKIE_VARIABLE;

    /// At most this many passes over `/proc`: each finds the children forked during the one
    /// before, and a process killed in a pass can no longer fork, so two or three suffice.
    const PASSES: usize = 64;

    /// How long a sweep waits for the processes it killed to die.
    const DEATH_WAIT: Duration = Duration::from_secs(2);

    /// Kills every process (but this one) that carries `cookie` in its environment, or can
    /// write to a pipe whose inode is in `pipes`, and waits for them to die.
    pub(crate) fn kill_marked(cookie: &str, pipes: &[u64]) {
        let me = std::process::id();
        let pipe_links: Vec<String> = pipes.iter().map(|ino| format!("pipe:[{ino}]")).collect();
        let marked = |pid: u32| carries(pid, cookie) || holds(pid, &pipe_links);
        let mut signalled = HashSet::new();
        let mut dying = Vec::new();
        for _ in 0..PASSES {
            let Ok(entries) = fs::read_dir("/proc") else {
                return;
            };
            let mut found = false;
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == me || signalled.contains(&pid) || !marked(pid) {
                    continue;
                }
                let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
                    continue;
                };
                match rustix::process::pidfd_open(target, PidfdFlags::empty()) {
                    Ok(pidfd) => {
                        // The pid is pinned now: make sure it is still the process just read.
                        if !marked(pid) {
                            continue;
                        }
                        let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
                        dying.push(pidfd);
                    }
                    // Gone already.
                    Err(rustix::io::Errno::SRCH) => continue,
                    // A kernel without pidfds (before 5.3): a plain kill, which a pid reused
                    // in the last microseconds could receive instead.
                    Err(_) => {
                        let _ = rustix::process::kill_process(target, Signal::KILL);
                    }
                }
                signalled.insert(pid);
                found = true;
            }
            if !found {
                break;
            }
        }
        wait_for_death(dying, DEATH_WAIT);
    }

    /// Whether process `pid` has `cookie` among the cookies in its environment. A process
    /// that cannot be read (another user's) does not.
    fn carries(pid: u32, cookie: &str) -> bool {
        fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|environ| environ_carries(&environ, cookie))
    }

    /// Whether `environ` (`KEY=value` entries, each ended by a NUL byte) has `cookie` among
    /// the cookies of [`COOKIE_VARIABLE`].
    fn environ_carries(environ: &[u8], cookie: &str) -> bool {
        let prefix = format!("{COOKIE_VARIABLE}=");
        environ
            .split(|&b| b == 0)
            .filter_map(|entry| entry.strip_prefix(prefix.as_bytes()))
            .any(|cookies| {
                cookies
                    .split(|&b| b == b':')
                    .any(|c| c == cookie.as_bytes())
            })
    }

    /// Whether process `pid` can write to one of `pipe_links` (`pipe:[<inode>]`): only a
    /// writer keeps the stage's output open.
    ///
    /// Readers do not count, and must not: a process the host has just forked (another stage
    /// starting) holds the host's read ends until it `exec`s, and is no holder.
    fn holds(pid: u32, pipe_links: &[String]) -> bool {
        if pipe_links.is_empty() {
            return false;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            let is_ours = fs::read_link(fd.path()).is_ok_and(|target| {
                let target: &Path = &target;
                pipe_links.iter().any(|link| target == Path::new(link))
            });
            is_ours
                && fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| writable(&info))
        })
    }

    /// Whether an `fdinfo` (`flags:` in octal, among other lines) is of a descriptor open for
    /// writing.
    fn writable(fdinfo: &str) -> bool {
        const ACCESS_MODE: u32 = 0o3;
        const READ_ONLY: u32 = 0o0;
        fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
            .is_some_and(|flags| flags & ACCESS_MODE != READ_ONLY)
    }

    /// Waits until every pidfd in `dying` is readable (its process has exited), or `limit`
    /// has passed.
    fn wait_for_death(mut dying: Vec<OwnedFd>, limit: Duration) {
        let until = Instant::now() + limit;
        while !dying.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(timeout) = Timespec::try_from(left) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            let mut fds: Vec<PollFd<'_>> = dying
                .iter()
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
            let dead: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
            drop(fds);
            let mut dead = dead.into_iter();
            dying.retain(|_| !dead.next().unwrap_or(false));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_a_descriptor_open_for_writing_holds_the_output() {
            assert!(writable("pos:\t0\nflags:\t01\nmnt_id:\t15\nino:\t42\n"));
            assert!(writable("pos:\t0\nflags:\t02000001\nmnt_id:\t15\n"));
            assert!(writable("flags:\t02\n"), "read-write");
            assert!(!writable("pos:\t0\nflags:\t02000000\nmnt_id:\t15\n"));
            assert!(!writable("pos:\t0\n"), "no flags: not known to write");
        }

        #[test]
        fn a_cookie_is_found_whole_among_the_inherited_ones() {
            let environ = b"PATH=/bin\0TOLLGATE_STAGE_COOKIE=1-2-ab:7-8-cd\0HOME=/root\0";
            assert!(environ_carries(environ, "1-2-ab"));
            assert!(environ_carries(environ, "7-8-cd"));
            assert!(
                !environ_carries(environ, "7-8-c"),
                "a prefix is not the cookie"
            );
            assert!(!environ_carries(environ, "2-ab"), "nor a suffix");
            assert!(!environ_carries(
                b"X_TOLLGATE_STAGE_COOKIE=1-2-ab\0",
                "1-2-ab"
            ));
            assert!(
                !environ_carries(b"", "1-2-ab"),
                "a zombie's environment is empty"
            );
        }
    }
}
