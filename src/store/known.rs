//! What the store held for one recipe's instances, by build key, as last seen:
//! a no-op run then reads one small file instead of a key record per instance.
//!
//! Key records are only ever added or replaced by a rename into `keys/`, or
//! removed by gc and verify: each changes the directory's times. The list is
//! kept with the state `keys/` had when it was read and used only while `keys/`
//! still has that state (one stat); objects are still looked at one by one. A
//! run that saw `keys/` change while it read, or change shortly before (within
//! a timestamp tick, when a change could go unseen), keeps nothing.
//!
//! With it, each instance's build key by its eval key and its dependencies'
//! digests (their outputs, or their eval keys when declared): the build key is
//! a function of those alone (the eval key fixes the description and the roles
//! and names of the dependencies), so a no-op run need not describe and hash
//! every instance again. A rebuilt bake may key differently: the file counts
//! only for the executable that wrote it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::fingerprint::{running_exe, FileState};
use crate::hash::{BuildKey, Digest, EvalKey, OutputHash};

/// Change whenever what the file holds changes.
const FORMAT: &str = "bake-known-keys-v2";

/// A build key, by the eval key and the dependencies' digests it was made from.
type Keyed = (EvalKey, Vec<Digest>, BuildKey);

#[derive(Serialize, Deserialize)]
struct Saved {
    format: String,
    exe: FileState,
    keys_dir: FileState,
    known: Vec<(BuildKey, OutputHash)>,
    keyed: Vec<Keyed>,
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
    exe: Option<FileState>,
    keyed: HashMap<EvalKey, (Vec<Digest>, BuildKey)>,
    /// Build keys computed in this run.
    learned: Mutex<Vec<Keyed>>,
}

impl KnownKeys {
    /// The keys kept in `file` for `store`, if `keys/` has not changed since.
    pub fn open(store: &Store, file: Option<&Path>) -> KnownKeys {
        let started = SystemTime::now();
        let keys_dir = FileState::now(&store.root.join("keys"), false)
            .ok()
            .flatten();
        let exe = running_exe();
        let saved = file
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| postcard::from_bytes::<Saved>(&b).ok())
            .filter(|s| s.format == FORMAT && Some(s.keys_dir) == keys_dir && Some(s.exe) == exe);
        let (known, keyed) = match saved {
            Some(s) => (
                s.known.into_iter().collect(),
                s.keyed.into_iter().map(|(e, d, k)| (e, (d, k))).collect(),
            ),
            None => (HashMap::new(), HashMap::new()),
        };
        KnownKeys {
            file: file.map(Path::to_path_buf),
            objects: std::fs::File::open(store.root.join("objects")).ok(),
            started,
            keys_dir,
            known,
            read: Mutex::new(Vec::new()),
            exe,
            keyed,
            learned: Mutex::new(Vec::new()),
        }
    }

    /// The build key last made from `eval` and `deps`, if any.
    pub fn build_key(&self, eval: &EvalKey, deps: &[Digest]) -> Option<BuildKey> {
        self.keyed
            .get(eval)
            .filter(|(d, _)| d[..] == *deps)
            .map(|(_, k)| *k)
    }

    /// Remembers the build key made from `eval` and `deps`.
    pub fn learn(&self, eval: EvalKey, deps: Vec<Digest>, key: BuildKey) {
        if self.file.is_some() && self.build_key(&eval, &deps) != Some(key) {
            self.learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((eval, deps, key));
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
        let (Some(file), Some(before), Some(exe)) = (&self.file, self.keys_dir, self.exe) else {
            return;
        };
        let read = self.read.into_inner().unwrap_or_else(|e| e.into_inner());
        let learned = self.learned.into_inner().unwrap_or_else(|e| e.into_inner());
        let now = FileState::now(&store.root.join("keys"), false)
            .ok()
            .flatten();
        if (read.is_empty() && learned.is_empty())
            || now != Some(before)
            || before.racy(self.started)
        {
            return;
        }
        let mut known = self.known;
        known.extend(read);
        let mut keyed = self.keyed;
        keyed.extend(learned.into_iter().map(|(e, d, k)| (e, (d, k))));
        let saved = Saved {
            format: FORMAT.to_string(),
            exe,
            keys_dir: before,
            known: known.into_iter().collect(),
            keyed: keyed.into_iter().map(|(e, (d, k))| (e, d, k)).collect(),
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
