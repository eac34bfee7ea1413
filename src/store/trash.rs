//! Scratch trees removed off the critical path: a finished step's scratch
//! directory goes to a thread of the store, so the next step starts while the
//! last one's files are unlinked. The store waits for the thread when it is
//! closed; the trees of a killed process are its leftovers, which the next open
//! sweeps.
//!
//! A step's scratch directory is not removed but emptied down to the
//! directories every step has, and handed to the next step: each inode freed
//! makes the next ones dearer, as ext4 without a journal (this machine's) looks
//! past every inode freed in the last minute for a free one. 2,000 trivial
//! steps took 17.8 s with their scratch removed and 10.7 s with it left.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::remove_tree;

/// What of a step's scratch directory the next step gets again, emptied: these
/// directories, and the script's file.
const KEPT: &[&str] = &["src", "home", "tmp", "inputs"];
const SCRIPT: &str = "script.sh";

/// Scratch directories emptied and ready, at most (about one per lane).
const READY_MAX: usize = 64;

/// A tree to remove, or with `true` to empty for reuse; None stops the thread
/// (a scratch dir dropped after that is removed where it is dropped).
pub type Bin = Sender<Option<(PathBuf, bool)>>;

#[derive(Default)]
pub struct Trash {
    worker: Mutex<Option<(Bin, JoinHandle<()>)>>,
    ready: Arc<Mutex<Vec<PathBuf>>>,
}

impl Trash {
    /// Where to send trees to remove; None when no thread can be started.
    pub fn sender(&self) -> Option<Bin> {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_none() {
            let (tx, rx) = mpsc::channel::<Option<(PathBuf, bool)>>();
            let ready = Arc::clone(&self.ready);
            let thread = std::thread::Builder::new()
                .name("bake-trash".into())
                .spawn(move || {
                    while let Ok(Some((path, reuse))) = rx.recv() {
                        let full = || ready.lock().map_or(true, |r| r.len() >= READY_MAX);
                        if reuse && !full() && empty_for_reuse(&path).is_ok() {
                            if let Ok(mut r) = ready.lock() {
                                r.push(path);
                                continue;
                            }
                        }
                        let _ = remove_tree(&path);
                    }
                })
                .ok()?;
            *worker = Some((tx, thread));
        }
        worker.as_ref().map(|(tx, _)| tx.clone())
    }

    /// A step's scratch directory emptied for reuse, if one is ready.
    pub fn reuse(&self) -> Option<PathBuf> {
        self.ready.lock().ok()?.pop()
    }

    /// Waits until every tree sent so far is removed, and removes the ready ones.
    pub fn finish(&self) {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, thread)) = worker {
            let _ = tx.send(None);
            let _ = thread.join();
        }
        let ready = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for dir in ready {
            let _ = remove_tree(&dir);
        }
    }
}

/// Empties a step's scratch directory down to its [`KEPT`] directories and its
/// [`SCRIPT`], each emptied and the process's own again, as new ones would be.
/// Whatever the step made of them (a link, a file for a directory, a second
/// name for the script) is removed instead.
fn empty_for_reuse(dir: &Path) -> io::Result<()> {
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let reset = |path: &Path| {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
    };
    reset(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let meta = fs::symlink_metadata(&path)?;
        if name == SCRIPT && meta.is_file() && meta.nlink() == 1 {
            reset(&path)?;
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)?;
            continue;
        }
        if !(meta.is_dir() && name.to_str().is_some_and(|n| KEPT.contains(&n))) {
            remove_tree(&path)?;
            continue;
        }
        reset(&path)?;
        for child in fs::read_dir(&path)? {
            remove_tree(&child?.path())?;
        }
    }
    Ok(())
}
