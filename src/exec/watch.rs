//! The steps running now: a watchdog stops those past their time limit, and an
//! interrupt stops them all.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How a watched step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Normally,
    TimedOut,
    Interrupted,
}

struct Entry {
    id: u64,
    pid: u32,
    deadline: Instant,
    stopped: Option<Ended>,
}

struct Running {
    entries: Mutex<(u64, Vec<Entry>)>,
    wake: Condvar,
}

fn running() -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    RUNNING.get_or_init(|| {
        std::thread::spawn(watchdog);
        Running {
            entries: Mutex::new((0, Vec::new())),
            wake: Condvar::new(),
        }
    })
}

/// One step being watched; [`Watched::finish`] once it has been waited for.
pub struct Watched {
    id: u64,
}

/// Watches process `pid` (the step's PID 1, whose end takes the whole step
/// with it) for `limit`.
pub fn watch(pid: u32, limit: Duration) -> Watched {
    let r = running();
    let mut guard = r.entries.lock().unwrap_or_else(|e| e.into_inner());
    let (next, entries) = &mut *guard;
    *next += 1;
    let id = *next;
    let now = Instant::now();
    entries.push(Entry {
        id,
        pid,
        deadline: now
            .checked_add(limit)
            .unwrap_or(now + Duration::from_secs(1 << 40)),
        stopped: if crate::interrupt::requested().is_some() {
            stop(pid);
            Some(Ended::Interrupted)
        } else {
            None
        },
    });
    r.wake.notify_all();
    Watched { id }
}

impl Watched {
    pub fn finish(self) -> Ended {
        let ended = self.take().unwrap_or(Ended::Normally);
        // Taken already: Drop would only look for it again.
        std::mem::forget(self);
        ended
    }

    fn take(&self) -> Option<Ended> {
        let r = running();
        let mut guard = r.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entries = &mut guard.1;
        let i = entries.iter().position(|e| e.id == self.id)?;
        Some(entries.swap_remove(i).stopped.unwrap_or(Ended::Normally))
    }
}

impl Drop for Watched {
    /// A step given up on (its launcher failed) is watched no more: its pid
    /// may soon be another process's.
    fn drop(&mut self) {
        self.take();
    }
}

/// Stops every running step (an interrupt); steps started later stop at once.
pub fn kill_all() {
    let r = running();
    let mut guard = r.entries.lock().unwrap_or_else(|e| e.into_inner());
    for e in guard.1.iter_mut().filter(|e| e.stopped.is_none()) {
        e.stopped = Some(Ended::Interrupted);
        stop(e.pid);
    }
}

fn stop(pid: u32) {
    // The process is our child, or a lane launcher's, which reaps it only once
    // bake has read its end, and bake stops watching before (`lane::run`):
    // the pid is still its own.
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        super::process::stop(pid);
    }
}

fn watchdog() {
    let r = running();
    let mut guard = r.entries.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        for e in guard.1.iter_mut() {
            if e.stopped.is_none() && e.deadline <= now {
                e.stopped = Some(Ended::TimedOut);
                stop(e.pid);
            }
        }
        let next = guard
            .1
            .iter()
            .filter(|e| e.stopped.is_none())
            .map(|e| e.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        guard = r
            .wake
            .wait_timeout(guard, next)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
