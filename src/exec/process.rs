//! A started step's process: PID 1 of the step's namespaces (or, in place, the
//! step's shell), held by a pidfd and not reaped until its end has been told,
//! so that its pid stays its own for as long as bake may signal it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

pub struct Process {
    pid: libc::pid_t,
    /// Readable once it has ended; none on a kernel without pidfds (before 5.3).
    pidfd: Option<OwnedFd>,
    /// The step's mount namespace, kept past PID 1's exit: its teardown (an
    /// expedited RCU grace period for the mounts) then happens once the end
    /// has been told, not before.
    mounts: Option<OwnedFd>,
}

impl Process {
    /// Takes hold of `pid`, a child of this process not yet reaped; with
    /// `hold_mounts`, of its mount namespace too, where it can.
    pub fn new(pid: libc::pid_t, hold_mounts: bool) -> Process {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        // SAFETY: a new descriptor, owned by nothing else.
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
        // A step that is gone already leaves nothing to hold.
        let mounts = hold_mounts
            .then(|| std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok())
            .flatten()
            .map(OwnedFd::from);
        Process { pid, pidfd, mounts }
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Readable once the process has ended.
    pub fn pidfd(&self) -> Option<&OwnedFd> {
        self.pidfd.as_ref()
    }

    /// Waits for its end and returns how it ended, leaving it unreaped.
    pub fn status(&self) -> io::Result<ExitStatus> {
        loop {
            // SAFETY: a siginfo_t is plain data, valid zeroed.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid writes only the siginfo it is given.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                // SAFETY: waitid filled in a child's status.
                let status = unsafe { info.si_status() };
                return Ok(ExitStatus::from_raw(match info.si_code {
                    libc::CLD_EXITED => (status & 0xff) << 8,
                    libc::CLD_DUMPED => status | 0x80,
                    _ => status,
                }));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Lets the step's mount namespace go (see `mounts`).
    pub fn release_mounts(&mut self) {
        self.mounts = None;
    }

    /// Kills the step: PID 1 of its namespace takes every process there with
    /// it; in place, its process group goes.
    pub fn stop(&self) {
        stop(self.pid);
    }

    /// Reaps it if it has ended; false while it runs.
    pub fn try_reap(&self) -> bool {
        // SAFETY: waitpid on our own child, with a status it writes.
        let r = unsafe { libc::waitpid(self.pid, &mut 0, libc::WNOHANG) };
        r != 0
    }

    /// Waits for its end and reaps it.
    pub fn reap(self) {
        reap(self.pid);
    }
}

/// Kills `pid` and its process group (a step's PID 1 and the step in place
/// both lead one), with SIGKILL: PID 1 of a namespace ignores what it does not
/// handle of anything else from outside.
pub fn stop(pid: libc::pid_t) {
    // SAFETY: kill has no memory preconditions.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a status it writes.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}
