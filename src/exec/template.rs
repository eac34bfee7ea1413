//! Template mount namespaces: what a lane's confined steps share of their root
//! file system, mounted once.
//!
//! A confined step's root is some 25 mounts, and all but its own (`/tmp`,
//! `/dev/shm`, `/proc`, `/build` and the inputs) are the same for every step
//! with the same toolchains and builder. A launcher mounts those once, in a
//! mount namespace a thread of its makes, pivots into the root and leaves
//! (kept by its descriptor), so that it holds the root's mounts alone, none
//! of the host's others. Each step's PID 1 opens what it binds (`open_tree`:
//! its `/build` and inputs as the host has them at that moment, a disorderfs
//! mount of `bake check` included), copies the template (`setns`, then
//! `unshare`) and attaches them and its own `/tmp`, `/dev/shm` and `/proc`:
//! copying a mount costs less than making it (a bind and its read-only
//! remount, a tmpfs), and the step needs no `pivot_root`. What the steps
//! share is root's and read-only, or a tmpfs root owns, so no step can leave
//! anything there for the next; a step whose builder is root shares nothing
//! (see `Sandbox::confine`).
//!
//! A template that cannot be made costs nothing but the attempt: its steps
//! make their whole root themselves, and tell what fails. So do all steps on
//! a kernel without `open_tree` and `mount_setattr` (before Linux 5.12).

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::OwnedFd;

use super::sandbox::{make_private, pivot_into, run_op, trees_attach, Entry, Op};

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
        let Some((ops, root)) = entry.template_ops().filter(|_| trees_attach()) else {
            return;
        };
        let template = match self.held.iter().position(|t| t.ops == ops) {
            Some(i) => self.held.remove(i),
            None => Template {
                ns: make(ops, root),
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

/// A mount namespace with `ops` done in it and `root` its root, made by a
/// thread that leaves it.
fn make(ops: &[Op], root: &CStr) -> Option<OwnedFd> {
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
                // Opened before the pivot: the root has no /proc.
                let ns = File::open("/proc/thread-self/ns/mnt").ok()?;
                // SAFETY: as above, this thread's alone; the host's mounts
                // are detached from the template here.
                unsafe { pivot_into(root).ok().map(|()| OwnedFd::from(ns)) }
            })
            .join()
            .ok()
            .flatten()
    })
}
