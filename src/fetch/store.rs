//! The store's `sources/` directory: fetched files named by their declared hash.
//!
//! An entry appears only by rename from `.tmp/`, so a reader never sees half a
//! file; a per-hash lock in `.locks/` makes concurrent fetchers of one source
//! (threads or processes) download it once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::FetchError;
use super::hashing::SourceHasher;
use crate::hash::SourceHash;

#[derive(Clone, Debug)]
pub struct SourceStore {
    dir: PathBuf,
}

impl SourceStore {
    /// `dir` is the store's `sources/` directory; it is created when first written.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SourceStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the source with this hash lives (`<algo>-<hex>`), present or not.
    pub fn path_of(&self, hash: &SourceHash) -> PathBuf {
        self.dir.join(format!("{}-{}", hash.algo.name(), hash.hex))
    }

    /// The stored file, if the store has it.
    pub fn get(&self, hash: &SourceHash) -> Option<PathBuf> {
        let path = self.path_of(hash);
        path.is_file().then_some(path)
    }

    /// Waits for the exclusive right to add `hash`; released when dropped.
    pub(crate) fn lock(&self, hash: &SourceHash) -> Result<EntryLock, FetchError> {
        let locks = self.dir.join(".locks");
        fs::create_dir_all(&locks)
            .map_err(|e| FetchError::io("cannot create lock directory", &locks, e))?;
        let path = locks.join(format!("{}-{}", hash.algo.name(), hash.hex));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| FetchError::io("cannot open lock file", &path, e))?;
        file.lock()
            .map_err(|e| FetchError::io("cannot lock", &path, e))?;
        Ok(EntryLock { _file: file })
    }

    /// A fresh, empty temporary file in the store's `.tmp/`.
    pub(crate) fn temp_file(&self) -> Result<TempEntry, FetchError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(".tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| FetchError::io("cannot create temporary directory", &tmp, e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = tmp.join(format!("{}-{n}.part", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| FetchError::io("cannot create temporary file", &path, e))?;
        Ok(TempEntry {
            path,
            file,
            committed: false,
        })
    }

    /// Moves a complete temporary file into place as the entry for `hash`.
    pub(crate) fn commit(
        &self,
        mut temp: TempEntry,
        hash: &SourceHash,
    ) -> Result<PathBuf, FetchError> {
        temp.file
            .sync_all()
            .map_err(|e| FetchError::io("cannot flush", &temp.path, e))?;
        fs::set_permissions(&temp.path, fs::Permissions::from_mode(0o444))
            .map_err(|e| FetchError::io("cannot make read-only", &temp.path, e))?;
        let dest = self.path_of(hash);
        fs::rename(&temp.path, &dest)
            .map_err(|e| FetchError::io("cannot move into the store", &dest, e))?;
        temp.committed = true;
        Ok(dest)
    }
}

/// Held while one fetcher adds one hash.
pub(crate) struct EntryLock {
    _file: File,
}

/// A file being written in `.tmp/`; removed when dropped unless committed.
pub(crate) struct TempEntry {
    path: PathBuf,
    file: File,
    committed: bool,
}

impl TempEntry {
    /// Copies `reader` to the end, hashing as it goes. The outer error is a
    /// failure to write here (fatal), the inner one a failure to read there.
    /// Reading more than `limit` bytes is a read failure of kind `FileTooLarge`.
    pub(crate) fn fill_from(
        &mut self,
        reader: &mut dyn Read,
        hasher: &mut SourceHasher,
        limit: u64,
        mut on_chunk: impl FnMut(u64),
    ) -> Result<Result<u64, io::Error>, FetchError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            if crate::interrupt::requested().is_some() {
                return Err(FetchError::Interrupted);
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(Ok(total)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Err(e)),
            };
            if total + n as u64 > limit {
                return Ok(Err(io::ErrorKind::FileTooLarge.into()));
            }
            hasher.update(&buf[..n]);
            self.file
                .write_all(&buf[..n])
                .map_err(|e| FetchError::io("cannot write", &self.path, e))?;
            total += n as u64;
            on_chunk(n as u64);
        }
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: leftovers in .tmp/ are harmless and named by pid.
            let _ = fs::remove_file(&self.path);
        }
    }
}
