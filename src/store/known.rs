//! What the store held for one recipe's instances, by build key, as last seen:
//! a no-op run then reads one small file instead of a key record per instance.
//!
//! Key records are only ever added or replaced by a rename into `keys/`, or
//! removed by gc and verify: each changes the directory's times. The list is
//! kept with the state `keys/` had when it was read and used only while `keys/`
//! still has that state (one stat); objects are still looked at one by one. A
//! run that saw `keys/` change while it read, or change shortly before (within
//! a timestamp tick, when a change could go unseen), keeps nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::fingerprint::FileState;
use crate::hash::{BuildKey, OutputHash};

/// Change whenever what the file holds changes.
const FORMAT: &str = "bake-known-keys-v1";

#[derive(Serialize, Deserialize)]
struct Saved {
    format: String,
    keys_dir: FileState,
    known: Vec<(BuildKey, OutputHash)>,
}

/// The key records of one recipe's instances, as read at the start of a run
/// (if still valid), and those read during it.
pub struct KnownKeys {
    file: Option<PathBuf>,
    /// `objects/`, open: an object is looked up by its name alone, not by a
    /// path walked from `/` each time (most of a no-op run's system time).
    objects: Option<std::fs::File>,
    started: SystemTime,
    /// `keys/` when the run began.
    keys_dir: Option<FileState>,
    known: HashMap<BuildKey, OutputHash>,
    /// Read from the store in this run: the file is rewritten only then.
    read: Mutex<Vec<(BuildKey, OutputHash)>>,
}

impl KnownKeys {
    /// The keys kept in `file` for `store`, if `keys/` has not changed since.
    pub fn open(store: &Store, file: Option<&Path>) -> KnownKeys {
        let started = SystemTime::now();
        let keys_dir = FileState::now(&store.root.join("keys"), false)
            .ok()
            .flatten();
        let saved = file
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| postcard::from_bytes::<Saved>(&b).ok())
            .filter(|s| s.format == FORMAT && Some(s.keys_dir) == keys_dir);
        KnownKeys {
            file: file.map(Path::to_path_buf),
            objects: std::fs::File::open(store.root.join("objects")).ok(),
            started,
            keys_dir,
            known: saved.map_or_else(HashMap::new, |s| s.known.into_iter().collect()),
            read: Mutex::new(Vec::new()),
        }
    }

    /// The output stored under `key`, if its object is there: from the list
    /// when it has the key, else from the key's record.
    pub fn lookup(&self, store: &Store, key: &BuildKey) -> Option<OutputHash> {
        if let Some(output) = self.known.get(key) {
            let present = match &self.objects {
                Some(dir) => is_dir_at(dir, &output.to_string()),
                None => store.object_path(output).is_dir(),
            };
            if present {
                return Some(*output);
            }
        }
        let output = store.lookup(key)?.output;
        if self.file.is_some() {
            self.read
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*key, output));
        }
        Some(output)
    }

    /// Writes the list back when this run read records and `keys/` did not
    /// change since it began (nor just before). Failing to only costs time.
    pub fn save(self, store: &Store) {
        let (Some(file), Some(before)) = (&self.file, self.keys_dir) else {
            return;
        };
        let read = self.read.into_inner().unwrap_or_else(|e| e.into_inner());
        let now = FileState::now(&store.root.join("keys"), false)
            .ok()
            .flatten();
        if read.is_empty() || now != Some(before) || before.racy(self.started) {
            return;
        }
        let mut known = self.known;
        known.extend(read);
        let saved = Saved {
            format: FORMAT.to_string(),
            keys_dir: before,
            known: known.into_iter().collect(),
        };
        if let (Some(dir), Ok(bytes)) = (file.parent(), postcard::to_stdvec(&saved)) {
            if std::fs::create_dir_all(dir).is_ok() {
                let _ = super::write_atomic(file, &bytes);
            }
        }
    }
}

/// Whether `name` in the open directory `dir` is a directory, as `Path::is_dir` says.
fn is_dir_at(dir: &std::fs::File, name: &str) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid open descriptor, a NUL-terminated name, and room for the result.
    let ret = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), 0) };
    // SAFETY: fstatat filled it in when it returned 0.
    ret == 0 && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR
}
