//! Starting a process that shares its parent's memory until it execs
//! (`clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does): no page table is
//! copied and none is torn down at the exec, which a fork paid for on every
//! step.

use std::ffi::{c_char, c_void, CString};
use std::io;

use super::ExecError;

/// The stack the new process runs on until it execs: what it does there is a
/// few system calls.
const STACK: usize = 64 << 10;

/// Signals the new process puts back to their defaults: bake handles SIGINT
/// and SIGTERM (interrupts), Rust's runtime ignores SIGPIPE and a launcher
/// SIGINT. An ignored signal stays ignored across an exec.
const DEFAULTED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGPIPE];

/// Below the stack, a page the new process cannot touch: an overflow there
/// would otherwise write over this process's memory, which it shares.
const GUARD: usize = 4 << 10;

/// A program, its arguments and its environment, laid out for `execve` before
/// the fork, as nothing may allocate after it.
pub struct Exec {
    program: CString,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// What `argv` and `envp` point into; a `CString`'s bytes stay where they
    /// are when it moves.
    _strings: Vec<CString>,
    stack: Stack,
}

/// `GUARD` bytes of no access, then `STACK` bytes of stack, mapped for one
/// process's start.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: a new anonymous mapping; nothing else refers to it.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                GUARD + STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { base };
            if libc::mprotect(base, GUARD, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// Where the stack starts: it grows down from the end, 16-byte aligned.
    fn top(&self) -> *mut c_void {
        (self.base as usize + GUARD + STACK) as *mut c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, used by no process any more: the one
        // started on it has exec'd or exited before `spawn` returned.
        unsafe {
            libc::munmap(self.base, GUARD + STACK);
        }
    }
}

// SAFETY: the pointers point into `_strings` and `stack`'s mapping, owned by the
// same value and never changed after it is made.
unsafe impl Send for Exec {}
// SAFETY: as above; nothing is written through them.
unsafe impl Sync for Exec {}

impl Exec {
    /// `program` is a path (no search of `PATH`).
    pub fn new(
        program: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Exec, ExecError> {
        let c = |s: String| {
            CString::new(s).map_err(|e| ExecError::Io {
                what: "cannot pass a string holding a NUL byte to the step".into(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })
        };
        let program = c(program.to_owned())?;
        let mut strings = Vec::with_capacity(1 + args.len() + env.len());
        strings.push(program.clone());
        for a in args {
            strings.push(c(a.clone())?);
        }
        for (k, v) in env {
            strings.push(c(format!("{k}={v}"))?);
        }
        let ptrs = |s: &[CString]| {
            s.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argc = 1 + args.len();
        Ok(Exec {
            program,
            argv: ptrs(&strings[..argc]),
            envp: ptrs(&strings[argc..]),
            _strings: strings,
            stack: Stack::new().map_err(|e| ExecError::Io {
                what: "cannot map a stack for the step's start".into(),
                source: e,
            })?,
        })
    }

    /// Starts a process, in the new namespaces `namespaces` (`CLONE_NEW*`
    /// flags), that runs `prepare`, then execs the program; this process is
    /// stopped until it has. Returns its pid, or the error `prepare` or the
    /// exec returned (the process then reaped). The program starts with no
    /// signal blocked and [`DEFAULTED`] at their defaults.
    ///
    /// # Safety
    /// `prepare` runs in this process's memory, on its own stack: it may only
    /// make system calls on memory prepared before, as between fork and exec.
    pub unsafe fn spawn(
        &mut self,
        namespaces: libc::c_int,
        prepare: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<libc::pid_t> {
        let mut call = Call {
            prepare,
            program: self.program.as_ptr(),
            argv: self.argv.as_ptr(),
            envp: self.envp.as_ptr(),
            failed: None,
        };
        let top = self.stack.top();
        // No signal reaches the new process before it has put its handlers
        // back: they are this process's code, on memory it shares (as
        // `posix_spawn` does).
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let pid = libc::clone(
            run,
            top,
            namespaces | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut call as *mut Call).cast(),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        match call.failed.take() {
            None => Ok(pid),
            Some(e) => {
                let mut status = 0;
                while libc::waitpid(pid, &mut status, 0) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                Err(e)
            }
        }
    }
}

struct Call<'a> {
    prepare: &'a mut dyn FnMut() -> io::Result<()>,
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// Written by the new process when it cannot exec, read by this one once
    /// it has exited.
    failed: Option<io::Error>,
}

extern "C" fn run(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Call` of `spawn`, whose process is stopped until
    // this one execs or exits.
    unsafe {
        let call = &mut *arg.cast::<Call>();
        for sig in DEFAULTED {
            libc::signal(sig, libc::SIG_DFL);
        }
        let error = match (call.prepare)() {
            Ok(()) => {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                libc::execve(call.program, call.argv, call.envp);
                io::Error::last_os_error()
            }
            Err(e) => e,
        };
        call.failed = Some(error);
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(program: &str, args: &[&str]) -> Exec {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = [("ANSWER".to_string(), "42".to_string())];
        match Exec::new(program, &args, &env) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    fn wait(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: pid is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn the_program_runs_with_its_arguments_and_environment() {
        let mut e = exec(
            "/bin/sh",
            &["-c", "test \"$1 $ANSWER\" = \"x 42\"", "sh", "x"],
        );
        // SAFETY: the closure makes no call at all.
        let pid = unsafe { e.spawn(0, &mut || Ok(())) }.expect("spawned");
        let status = wait(pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        let mut e = exec("/bin/sh", &["-c", "test \"$ANSWER\" = 41"]);
        // SAFETY: as above.
        let pid = unsafe { e.spawn(0, &mut || Ok(())) }.expect("spawned");
        assert_eq!(libc::WEXITSTATUS(wait(pid)), 1);
    }

    #[test]
    fn a_failure_before_or_at_the_exec_is_returned() {
        let mut e = exec("/bin/true", &[]);
        // SAFETY: the closure makes no call at all.
        let err = unsafe { e.spawn(0, &mut || Err(io::Error::from_raw_os_error(libc::EPERM))) }
            .expect_err("prepare failed");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let mut e = exec("/nonexistent/program", &[]);
        // SAFETY: as above.
        let err = unsafe { e.spawn(0, &mut || Ok(())) }.expect_err("no such program");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    /// How deep `deep` got, written by the new process into the memory it
    /// shares with the test.
    static DEPTH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// 4 KiB a frame, as deep as it is let (4 GiB at most).
    fn deep(n: u64) -> u64 {
        DEPTH.store(n, std::sync::atomic::Ordering::Relaxed);
        let frame = std::hint::black_box([n; 512]);
        match n {
            1_000_000.. => 0,
            _ => deep(n + 1) + frame[7],
        }
    }

    #[test]
    fn an_overflow_before_the_exec_stops_at_the_guard_page() {
        let mut e = exec("/bin/true", &[]);
        // SAFETY: the closure only recurses until it faults on the guard page.
        let pid = unsafe {
            e.spawn(0, &mut || {
                std::hint::black_box(deep(0));
                Ok(())
            })
        }
        .expect("started");
        let status = wait(pid);
        assert!(libc::WIFSIGNALED(status), "status {status}");
        // 64 KiB hold about 16 such frames; past them it would write over
        // whatever this process has below its stack.
        let depth = DEPTH.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            depth > 4 && depth <= (STACK / 4096) as u64,
            "{depth} frames"
        );
    }

    #[test]
    fn a_string_with_a_nul_byte_is_refused() {
        let args = ["a\0b".to_string()];
        assert!(Exec::new("/bin/true", &args, &[]).is_err());
    }
}
