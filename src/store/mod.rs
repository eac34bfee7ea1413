//! The content-addressed store (`cache/` by default).
//!
//! ```text
//! keys/<build key>          record: output hash, finish time, duration, log (written last)
//! objects/<output hash>/    an output tree, read-only
//! sources/                  fetched sources, by hash
//! instances/<id>.json       the last build of each instance id, for `bake why`
//! logs/<build key>.log      step logs
//! checks/<id>.html          `bake check`'s diffoscope reports, until gc
//! locks/<build key>.lock    held while a key is built, so two processes never build it twice
//! toolchains/<name>/        persistent caches of toolchains (zig's)
//! tmp/<token>.lock, tmp/<token>.N/   per-process scratch; debris of dead processes is removed
//! ```
//! Builds happen in `tmp/`, are renamed into `objects/`, and the key record is
//! written last: a build killed at any instant leaves only `tmp/` debris.

mod gc;
mod known;
mod trash;
mod tree;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fetch::SourceStore;
use crate::hash::{BuildKey, OutputHash};
use crate::names::{InstanceId, NodeName};

pub use known::KnownKeys;
pub use tree::{chown_tree, hash_tree, remove_tree, set_writable, tree_size};

/// What the store knows about one build key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub output: OutputHash,
    /// Seconds since the epoch when the build finished.
    pub finished: u64,
    pub duration_ms: u64,
}

/// The last build of one instance id, with what `why` compares against.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceRecord<S> {
    pub build_key: BuildKey,
    pub output: OutputHash,
    pub finished: u64,
    pub snapshot: S,
}

pub struct Store {
    root: PathBuf,
    /// This process's scratch name; its lock file is held while the store is open.
    token: String,
    /// None when the store is read-only.
    tmp_lock: Option<fs::File>,
    /// `lock`, held shared by every open store; gc and verify need it alone.
    store_lock: Option<fs::File>,
    counter: AtomicU64,
    /// Records written since the store last reached the disk (see `write_record`).
    unsynced: AtomicBool,
    trash: trash::Trash,
    /// Leftover temporary files removed when the store was opened.
    swept: usize,
}

/// A scratch directory of this process, removed on drop.
pub struct TmpDir {
    path: PathBuf,
    started: SystemTime,
    /// The store's remover, which takes the tree on drop.
    trash: Option<trash::Bin>,
    /// A step's: emptied for the next step rather than removed.
    reuse: bool,
}

impl TmpDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        let unsent = match &self.trash {
            Some(tx) => tx
                .send(Some((path, self.reuse)))
                .err()
                .and_then(|e| e.0.map(|(path, _)| path)),
            None => Some(path),
        };
        if let Some(path) = unsent {
            let _ = remove_tree(&path);
        }
    }
}

/// Held while one build key is being built.
pub struct KeyLock {
    _file: fs::File,
}

impl Store {
    /// Opens (creating) the store at `root` and clears debris left by dead
    /// processes. A store this process cannot write opens read-only: enough for
    /// eval, plan, a build with nothing to build, and `gc --dry-run`.
    pub fn open(root: &Path) -> io::Result<Store> {
        match Store::open_writable(root) {
            Err(e) if cannot_write(&e) && root.join("keys").is_dir() => Store::open_read_only(root),
            other => other,
        }
    }

    fn open_read_only(root: &Path) -> io::Result<Store> {
        let root = root.canonicalize()?;
        let store_lock = fs::File::open(root.join("lock")).ok();
        if let Some(lock) = &store_lock {
            lock.lock_shared()?;
        }
        Ok(Store {
            root,
            token: format!("{}-read-only", std::process::id()),
            tmp_lock: None,
            store_lock,
            counter: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            trash: trash::Trash::default(),
            swept: 0,
        })
    }

    fn open_writable(root: &Path) -> io::Result<Store> {
        for dir in [
            "keys",
            "objects",
            "sources",
            "instances",
            "logs",
            "locks",
            "toolchains",
            "tmp",
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        let root = root.canonicalize()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let token = format!("{}-{nanos}", std::process::id());
        let store_lock = fs::File::create(root.join("lock"))?;
        let lock = fs::File::create(root.join("tmp").join(format!("{token}.lock")))?;
        lock.lock()?;
        let mut store = Store {
            root,
            token,
            tmp_lock: Some(lock),
            store_lock: Some(store_lock),
            counter: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            trash: trash::Trash::default(),
            swept: 0,
        };
        // Only a killed bake leaves records half written, and it leaves its
        // scratch lock too: a bake alone on the store that finds one sweeps
        // (reading `keys/` whole, which a no-op run should not pay for), then
        // shares the store like every bake. Not alone, it leaves the dead lock
        // for a bake that is.
        let alone = store.exclusive().is_ok();
        if store.remove_debris(alone)? && alone {
            store.swept = store.remove_leftovers()?;
        }
        if let Some(lock) = &store.store_lock {
            lock.lock_shared()?;
        }
        Ok(store)
    }

    /// Whether this process can write the store.
    pub fn writable(&self) -> bool {
        self.tmp_lock.is_some()
    }

    fn read_only_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ReadOnlyFilesystem,
            format!("the store {} is read-only here", self.root.display()),
        )
    }

    /// Removes temporary files that only a killed process leaves (a record
    /// half written, a partial download); call with the store held alone.
    pub(crate) fn remove_leftovers(&self) -> io::Result<usize> {
        let mut removed = 0;
        for dir in ["keys", "instances"] {
            for e in fs::read_dir(self.root.join(dir))? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    fs::remove_file(e.path())?;
                    removed += 1;
                }
            }
        }
        let partial = self.root.join("sources").join(".tmp");
        if partial.is_dir() {
            for e in fs::read_dir(&partial)? {
                remove_tree(&e?.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Takes the store for this process alone (gc, verify): fails at once when
    /// another bake has it open, rather than delete what a running build uses.
    fn exclusive(&self) -> io::Result<()> {
        let lock = self
            .store_lock
            .as_ref()
            .ok_or_else(|| self.read_only_error())?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another bake is using this store; try again when it has finished",
            )
        })
    }

    /// Removes the scratch of processes whose lock is no longer held, and their
    /// locks when `alone`; says whether there were any.
    fn remove_debris(&self, alone: bool) -> io::Result<bool> {
        let mut dead = false;
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(token) = name.strip_suffix(".lock") else {
                continue;
            };
            if token == self.token {
                continue;
            }
            let Ok(f) = fs::File::options().write(true).open(tmp.join(&name)) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue; // a live process
            }
            dead = true;
            for scratch in fs::read_dir(&tmp)? {
                let scratch = scratch?;
                let s = scratch.file_name().to_string_lossy().into_owned();
                if s.starts_with(&format!("{token}.")) && !s.ends_with(".lock") {
                    tree::detach_mounts(&scratch.path())?;
                    remove_tree(&scratch.path())?;
                }
            }
            if alone {
                fs::remove_file(tmp.join(&name))?;
            }
        }
        Ok(dead)
    }

    /// The fetched sources, by hash.
    pub fn sources(&self) -> SourceStore {
        SourceStore::new(self.root.join("sources"))
    }

    pub fn object_path(&self, output: &OutputHash) -> PathBuf {
        self.root.join("objects").join(output.to_string())
    }

    pub fn log_path(&self, key: &BuildKey) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }

    /// The log of `bake check`'s rebuild of `key`, beside the build's; gc removes it.
    pub fn rebuild_log_path(&self, key: &BuildKey) -> PathBuf {
        self.root.join("logs").join(format!("{key}.rebuild.log"))
    }

    /// What every step's sandbox shares (see `exec::Step::shared`), made by the
    /// first step that needs it.
    pub fn sandbox_dir(&self) -> PathBuf {
        self.root.join("sandbox")
    }

    /// A persistent, writable directory for a toolchain's own cache.
    pub fn toolchain_cache(&self, name: &NodeName) -> PathBuf {
        self.root.join("toolchains").join(name.as_str())
    }

    fn key_path(&self, key: &BuildKey) -> PathBuf {
        self.root.join("keys").join(key.to_string())
    }

    /// The record of `key`, if its object is in the store too.
    pub fn lookup(&self, key: &BuildKey) -> Option<KeyRecord> {
        let text = fs::read(self.key_path(key)).ok()?;
        let record: KeyRecord = serde_json::from_slice(&text).ok()?;
        self.object_path(&record.output).is_dir().then_some(record)
    }

    /// Removes an object (found corrupt): keys naming it no longer find it, so
    /// what produced it builds again.
    pub fn drop_object(&self, output: &OutputHash) {
        let _ = remove_tree(&self.object_path(output));
    }

    /// Blocks until this process alone may build `key`.
    pub fn lock_key(&self, key: &BuildKey) -> io::Result<KeyLock> {
        if !self.writable() {
            return Err(self.read_only_error());
        }
        let f = fs::File::create(self.root.join("locks").join(format!("{key}.lock")))?;
        f.lock()?;
        Ok(KeyLock { _file: f })
    }

    /// Blocks until this process alone uses the cache of toolchain instance `id`.
    pub fn lock_toolchain(&self, id: &InstanceId) -> io::Result<KeyLock> {
        let name = id.file_name();
        let f = fs::File::create(self.root.join("locks").join(format!("{name}.lock")))?;
        f.lock()?;
        Ok(KeyLock { _file: f })
    }

    /// A fresh scratch directory of this process.
    pub fn tmp_dir(&self) -> io::Result<TmpDir> {
        if !self.writable() {
            return Err(self.read_only_error());
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join("tmp").join(format!("{}.{n}", self.token));
        fs::create_dir_all(&path)?;
        Ok(TmpDir {
            path,
            started: SystemTime::now(),
            trash: self.trash.sender(),
            reuse: false,
        })
    }

    /// A scratch directory for a step: one an earlier step of this process
    /// left, emptied (see `trash`), or a fresh one.
    pub fn step_dir(&self) -> io::Result<TmpDir> {
        let mut dir = match self.trash.reuse() {
            Some(path) => TmpDir {
                path,
                started: SystemTime::now(),
                trash: self.trash.sender(),
                reuse: true,
            },
            None => self.tmp_dir()?,
        };
        dir.reuse = true;
        Ok(dir)
    }

    /// Moves the tree at `out` (inside `work`) into the store as the output of `key`.
    /// The object lands first, the key record last.
    pub fn commit(&self, key: &BuildKey, work: TmpDir, out: &Path) -> io::Result<OutputHash> {
        let output = self.keep(out)?;
        let record = KeyRecord {
            output,
            finished: now(),
            duration_ms: work
                .started
                .elapsed()
                .map_or(0, |d: Duration| d.as_millis() as u64),
        };
        self.write_record(&self.key_path(key), &serde_json::to_vec_pretty(&record)?)?;
        drop(work);
        Ok(output)
    }

    /// Moves the tree at `out` into the store as an object no key names yet
    /// (the next gc removes it unless one does), and returns its hash.
    pub fn keep(&self, out: &Path) -> io::Result<OutputHash> {
        let output = hash_tree(out)?;
        let object = self.object_path(&output);
        if !object.is_dir() {
            // Renaming a directory to another parent rewrites its `..`, which needs
            // write permission on it: read-only only once it is in place.
            match fs::rename(out, &object) {
                Ok(()) => set_writable(&object, false)?,
                // The same bytes arrived meanwhile (another key, or another process).
                Err(_) if object.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(output)
    }

    /// Where `bake check` writes its diffoscope report on `id`; gc removes it.
    pub fn check_report_path(&self, id: &InstanceId) -> io::Result<PathBuf> {
        let dir = self.root.join("checks");
        fs::create_dir_all(&dir)?;
        Ok(dir.join(format!("{}.html", id.file_name())))
    }

    pub fn save_instance<S: Serialize>(
        &self,
        id: &InstanceId,
        key: &BuildKey,
        output: &OutputHash,
        snapshot: &S,
    ) -> io::Result<()> {
        let record = InstanceRecord {
            build_key: *key,
            output: *output,
            finished: now(),
            snapshot,
        };
        self.write_record(
            &self.instance_path(id),
            &serde_json::to_vec_pretty(&record)?,
        )
    }

    /// Writes a record (a key's or an instance's) so that readers see the old
    /// or the new, whole, without waiting for the disk: two records a step,
    /// each file and directory synced, were a good part of a small step's
    /// time. The store syncs its file system once when it is closed, so what a
    /// run built is on disk when bake exits; before that a power cut can lose a
    /// record (or leave it empty), which reads as not built: built again.
    fn write_record(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.unsynced.store(true, Ordering::Relaxed);
        write_renamed(path, bytes, false)
    }

    /// The last build of `id`; none when there is none, or it is of an older
    /// bake whose snapshots read differently.
    pub fn load_instance<S: DeserializeOwned>(&self, id: &InstanceId) -> Option<InstanceRecord<S>> {
        let text = fs::read(self.instance_path(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn instance_path(&self, id: &InstanceId) -> PathBuf {
        self.root
            .join("instances")
            .join(format!("{}.json", id.file_name()))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.writable() {
            return;
        }
        // Scratch dirs are gone with their TmpDirs; the lock file is the last trace.
        self.trash.finish();
        let _ = fs::remove_file(self.root.join("tmp").join(format!("{}.lock", self.token)));
        if self.unsynced.load(Ordering::Relaxed) {
            if let Ok(dir) = fs::File::open(&self.root) {
                // SAFETY: syncfs only reads the descriptor, which is open.
                unsafe {
                    libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir));
                }
            }
        }
    }
}

fn cannot_write(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to `path` so that readers see the old file or the new, whole,
/// and it is on disk when this returns.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_renamed(path, bytes, true)
}

/// Writes a temporary file beside `path` and renames it over `path`; with
/// `durable`, syncs the file before and its directory after.
fn write_renamed(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    });
    if written.is_err() {
        // Only a killed process may leave one behind (see `remove_leftovers`).
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if durable {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
