//! Whether the user asked bake to stop (SIGINT, SIGTERM): running steps are
//! stopped, nothing new starts, downloads end.

use std::sync::atomic::{AtomicI32, Ordering};

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
