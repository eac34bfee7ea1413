//! Template mount namespaces: what a lane's confined steps share of their root
//! file system, mounted once.
//!
//! A confined step's root is some 25 mounts, and all but its own (`/tmp`,
//! `/dev/shm`, `/proc`, `/build` and the inputs) are the same for every step
//! with the same toolchains and builder. A launcher mounts those once, in a
//! mount namespace a thread of its makes and leaves (kept by its descriptor);
//! each step's PID 1 copies it (`setns`, then `unshare`) and adds its own:
//! copying a mount costs less than making it (a bind and its read-only
//! remount, a tmpfs). What the steps share is root's and read-only, or a
//! tmpfs root owns, so no step can leave anything there for the next; a step
//! whose builder is root shares nothing (see `Sandbox::confine`).
//!
//! A template that cannot be made costs nothing but the attempt: its steps
//! make their whole root themselves, and tell what fails.
//!
//! A template is a copy of the host's mounts of its moment, kept while the
//! lane lives: a mount made on the host later is not in it, and one unmounted
//! there later stays alive in it (a FUSE daemon would wait for it). So a
//! process that mounts while steps run (`bake check` serving a source tree
//! by disorderfs) turns them off first, see [`forbid`].

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::sandbox::{make_private, run_op, Entry, Op};

static FORBIDDEN: AtomicBool = AtomicBool::new(false);

/// No step started from now on in this process shares a template: for a
/// process about to mount on the host while steps run.
pub fn forbid() {
    FORBIDDEN.store(true, Ordering::Relaxed);
}

/// Whether the steps made from now on may share a template.
pub(super) fn allowed() -> bool {
    !FORBIDDEN.load(Ordering::Relaxed)
}

/// How many templates a launcher keeps, for steps of different toolchains or
/// builders taking turns on its lane.
const KEPT: usize = 4;

#[derive(Default)]
pub(super) struct Templates {
    /// Least recently used first.
    held: Vec<Template>,
}

struct Template {
    ops: Vec<Op>,
    /// None: it could not be made, and is not tried again.
    ns: Option<OwnedFd>,
}

impl Templates {
    /// Gives the step the template of its shared mounts, made now if this
    /// launcher has none yet.
    pub fn lend(&mut self, entry: &mut Entry) {
        let Some(ops) = entry.template_ops() else {
            return;
        };
        let template = match self.held.iter().position(|t| t.ops == ops) {
            Some(i) => self.held.remove(i),
            None => Template {
                ns: make(ops),
                ops: ops.to_vec(),
            },
        };
        entry.template = template.ns.as_ref().and_then(|ns| ns.try_clone().ok());
        self.held.push(template);
        if self.held.len() > KEPT {
            self.held.remove(0);
        }
    }
}

/// A mount namespace with `ops` done in it, made by a thread that leaves it.
fn make(ops: &[Op]) -> Option<OwnedFd> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare gives this thread a mount namespace (and
                // file system attributes) of its own, so the mounts and the
                // umask below are the template's alone.
                unsafe {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return None;
                    }
                    // The directories it makes (a toolchain's parents) are
                    // the builder's to walk through, whatever bake's umask.
                    libc::umask(0o022);
                    make_private().ok()?;
                    for op in ops {
                        run_op(op).ok()?;
                    }
                }
                File::open("/proc/thread-self/ns/mnt")
                    .ok()
                    .map(OwnedFd::from)
            })
            .join()
            .ok()
            .flatten()
    })
}
