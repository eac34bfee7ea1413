//! Whether the user asked bake to stop (SIGINT, SIGTERM): running steps are
//! stopped, nothing new starts, downloads end.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Once, OnceLock};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signal that asked bake to stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

pub fn request(signal: i32) {
    SIGNAL.store(signal, Ordering::Relaxed);
}

/// What starts listening for SIGINT and SIGTERM, for a command that would
/// rather not start it (a thread) before there is work to stop: a no-op build
/// has none, and till then the signals' default, ending bake, loses nothing.
static LISTEN: OnceLock<fn()> = OnceLock::new();

/// Starts `listen` once work begins (see [`work_begins`]).
pub fn listen_once_work_begins(listen: fn()) {
    let _ = LISTEN.set(listen);
}

/// Steps are about to run: the listener starts, if a command left one.
pub fn work_begins() {
    static STARTED: Once = Once::new();
    if let Some(listen) = LISTEN.get() {
        STARTED.call_once(listen);
    }
}
