//! Scratch trees removed off the critical path: a finished step's scratch
//! directory goes to a thread of the store, so the next step starts while the
//! last one's files are unlinked (a dozen directory removals, a good part of a
//! small step). The store waits for the thread when it is closed; the trees of
//! a killed process are its leftovers, which the next open sweeps.

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use super::remove_tree;

/// A tree to remove; None stops the thread (a scratch dir dropped after that
/// is removed where it is dropped).
pub type Bin = Sender<Option<PathBuf>>;

#[derive(Default)]
pub struct Trash {
    worker: Mutex<Option<(Bin, JoinHandle<()>)>>,
}

impl Trash {
    /// Where to send trees to remove; None when no thread can be started.
    pub fn sender(&self) -> Option<Bin> {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_none() {
            let (tx, rx) = mpsc::channel::<Option<PathBuf>>();
            let thread = std::thread::Builder::new()
                .name("bake-trash".into())
                .spawn(move || {
                    while let Ok(Some(path)) = rx.recv() {
                        let _ = remove_tree(&path);
                    }
                })
                .ok()?;
            *worker = Some((tx, thread));
        }
        worker.as_ref().map(|(tx, _)| tx.clone())
    }

    /// Waits until every tree sent so far is removed.
    pub fn finish(&self) {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, thread)) = worker {
            let _ = tx.send(None);
            let _ = thread.join();
        }
    }
}
