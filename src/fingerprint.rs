//! Content fingerprints of local files (toolchains, files kept in the repository),
//! cached by path, size, mtime, ctime and inode as git's index does, so an
//! unchanged 150 MB compiler is not rehashed on every run; and the record of
//! every path an evaluation looked at, by which the evaluation cache knows
//! with one stat per path that nothing it read has changed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hash::Digest;

/// Version tag of the fingerprint encoding; change it when the encoding changes.
const VERSION: &str = "bake-fingerprint-v1";

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stat {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            ino: m.ino(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// How a path looked: enough to tell by one stat whether it changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileState {
    pub fn of(m: &fs::Metadata) -> FileState {
        let s = Stat::of(m);
        FileState {
            dev: m.dev(),
            ino: s.ino,
            mode: m.mode(),
            size: s.size,
            mtime_ns: s.mtime_ns,
            ctime_ns: s.ctime_ns,
        }
    }

    /// The state of `path` now; None when it does not exist.
    pub fn now(path: &Path, follow: bool) -> io::Result<Option<FileState>> {
        let meta = if follow {
            fs::metadata(path)
        } else {
            fs::symlink_metadata(path)
        };
        match meta {
            Ok(m) => Ok(Some(FileState::of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the path changed so shortly before `since` that a change made
    /// after it could carry the same times (git's "racily clean" entries): file
    /// times come from a clock that ticks every few milliseconds, or every
    /// second or two on file systems that keep no fractions (seen as none).
    pub fn racy(&self, since: SystemTime) -> bool {
        let whole = |ns: i128| ns % 1_000_000_000 == 0;
        let tick = if whole(self.mtime_ns) && whole(self.ctime_ns) {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(100)
        };
        let since = since
            .checked_sub(tick)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        self.mtime_ns.max(self.ctime_ns) >= since
    }
}

/// The running executable as it is now: a rebuilt bake may evaluate and key
/// differently, so what it computed is kept under this.
pub fn running_exe() -> Option<FileState> {
    let path = std::env::current_exe().ok()?;
    FileState::now(&path, true).ok().flatten()
}

/// One path an evaluation looked at, and how it looked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub path: PathBuf,
    /// Through symlinks (stat) or not (lstat).
    pub follow: bool,
    /// None: it did not exist.
    pub state: Option<FileState>,
}

impl Seen {
    /// Whether the path still looks as it did.
    pub fn unchanged(&self) -> bool {
        FileState::now(&self.path, self.follow).is_ok_and(|now| now == self.state)
    }
}

/// File hashes remembered by stat, optionally persisted in a file, and every
/// path looked at through it.
#[derive(Default)]
pub struct StatCache {
    entries: HashMap<PathBuf, (Stat, Digest)>,
    file: Option<PathBuf>,
    dirty: bool,
    seen: Vec<Seen>,
    seen_paths: HashSet<(PathBuf, bool)>,
    /// A path could not be looked at (other than by not existing): what was
    /// seen does not tell everything the evaluation depended on.
    incomplete: bool,
}

impl StatCache {
    /// Loads the cache kept at `file`; a missing or unreadable one starts empty.
    pub fn load(file: PathBuf) -> StatCache {
        let mut entries = HashMap::new();
        if let Ok(text) = fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((path, entry)) = parse_line(line) {
                    entries.insert(path, entry);
                }
            }
        }
        StatCache {
            entries,
            file: Some(file),
            ..StatCache::default()
        }
    }

    /// Records what `path` looked like (`meta`: None when it does not exist).
    pub fn saw(&mut self, path: &Path, follow: bool, meta: Option<&fs::Metadata>) {
        if self.seen_paths.insert((path.to_path_buf(), follow)) {
            self.seen.push(Seen {
                path: path.to_path_buf(),
                follow,
                state: meta.map(FileState::of),
            });
        }
    }

    /// Looks at `path` and records what it saw.
    pub fn stat(&mut self, path: &Path, follow: bool) -> io::Result<fs::Metadata> {
        let meta = if follow {
            fs::metadata(path)
        } else {
            fs::symlink_metadata(path)
        };
        match &meta {
            Ok(m) => self.saw(path, follow, Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.saw(path, follow, None),
            Err(_) => self.incomplete = true,
        }
        meta
    }

    /// Every path looked at, unless one could not be.
    pub fn seen(&self) -> Option<&[Seen]> {
        (!self.incomplete).then_some(&self.seen)
    }

    /// Writes the cache back if it changed. Failing to is harmless (the next run
    /// rehashes), so errors are returned for the caller to ignore or report.
    pub fn save(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
        for (path, (s, d)) in &self.entries {
            writeln!(
                out,
                "{} {} {} {} {} {}",
                s.ino,
                s.size,
                s.mtime_ns,
                s.ctime_ns,
                d,
                path.display()
            )?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, file)?;
        self.dirty = false;
        Ok(())
    }

    fn file_digest(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<Digest> {
        let stat = Stat::of(meta);
        if let Some((s, d)) = self.entries.get(path) {
            if *s == stat {
                return Ok(*d);
            }
        }
        let mut h = blake3::Hasher::new();
        h.update_mmap(path)?;
        let d = Digest::from(h.finalize());
        self.entries.insert(path.to_path_buf(), (stat, d));
        self.dirty = true;
        Ok(d)
    }
}

fn parse_line(line: &str) -> Option<(PathBuf, (Stat, Digest))> {
    let mut it = line.splitn(6, ' ');
    let stat = Stat {
        ino: it.next()?.parse().ok()?,
        size: it.next()?.parse().ok()?,
        mtime_ns: it.next()?.parse().ok()?,
        ctime_ns: it.next()?.parse().ok()?,
    };
    let digest = it.next()?.parse().ok()?;
    Some((PathBuf::from(it.next()?), (stat, digest)))
}

/// The result of fingerprinting: a digest over every path, and the paths that do
/// not exist (a missing toolchain still evaluates; building with it fails).
pub struct Fingerprint {
    pub digest: Digest,
    pub missing: Vec<PathBuf>,
}

/// Fingerprints `roots` (files or directories, followed recursively in name order):
/// names relative to each root, types, exec bits, symlink targets and file bytes.
/// Each root is named by its label (the path as the recipe wrote it), not by where
/// the checkout happens to be, so the digest is the same on every machine.
/// At most `max_bytes` of files are read: past that, an error of kind `FileTooLarge`.
pub fn fingerprint(
    roots: &[(&str, PathBuf)],
    cache: &mut StatCache,
    max_bytes: u64,
) -> io::Result<Fingerprint> {
    let mut h = blake3::Hasher::new();
    h.update(VERSION.as_bytes());
    let mut missing = Vec::new();
    let mut budget = Budget {
        left: max_bytes,
        max: max_bytes,
    };
    for (label, root) in roots {
        field(&mut h, label.as_bytes());
        match cache.stat(root, false) {
            Ok(_) => walk(root, Path::new(""), &mut h, cache, &mut budget)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                h.update(b"missing");
                missing.push(root.clone());
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", root.display()))),
        }
    }
    Ok(Fingerprint {
        digest: Digest::from(h.finalize()),
        missing,
    })
}

/// Bytes of files still to be hashed before the fingerprint is refused.
struct Budget {
    left: u64,
    max: u64,
}

fn walk(
    path: &Path,
    rel: &Path,
    h: &mut blake3::Hasher,
    cache: &mut StatCache,
    budget: &mut Budget,
) -> io::Result<()> {
    // Follow a symlink given as a root (`.venv/zig`), not ones met inside the tree.
    let meta = cache
        .stat(path, rel.as_os_str().is_empty())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    field(h, rel.as_os_str().as_encoded_bytes());
    if meta.file_type().is_symlink() {
        h.update(b"l");
        field(h, fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if meta.is_dir() {
        h.update(b"d");
        let mut names: Vec<_> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            walk(&path.join(&name), &rel.join(&name), h, cache, budget)?;
        }
    } else if meta.is_file() {
        budget.left = budget.left.checked_sub(meta.len()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "more than {} of files to hash, the most bake reads at evaluation",
                    crate::units::show_size(budget.max)
                ),
            )
        })?;
        let exec = meta.permissions().mode() & 0o111 != 0;
        h.update(if exec { b"x" } else { b"f" });
        h.update(cache.file_digest(path, &meta)?.as_bytes());
    } else {
        // Devices, fifos, sockets: their type is all there is to hash (reading a
        // fifo would block).
        h.update(b"s");
        h.update(&meta.permissions().mode().to_le_bytes());
    }
    Ok(())
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_digest_matches_fresh_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cc");
        fs::write(&f, "one").unwrap();
        let cache_file = dir.path().join("cache");
        let mut cache = StatCache::load(cache_file.clone());
        let roots = [("cc", f.clone())];
        let first = fingerprint(&roots, &mut cache, u64::MAX).unwrap().digest;
        cache.save().unwrap();
        let mut reloaded = StatCache::load(cache_file);
        assert_eq!(
            fingerprint(&roots, &mut reloaded, u64::MAX).unwrap().digest,
            first
        );
        fs::write(&f, "two").unwrap();
        assert_ne!(
            fingerprint(&roots, &mut reloaded, u64::MAX).unwrap().digest,
            first
        );
        let gone = fingerprint(
            &[("nope", dir.path().join("nope"))],
            &mut reloaded,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(gone.missing.len(), 1);
        let err = fingerprint(&roots, &mut reloaded, 2).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn digest_names_roots_by_label_not_location() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(a.path().join("cc"), "same").unwrap();
        fs::write(b.path().join("cc"), "same").unwrap();
        let mut cache = StatCache::default();
        let da = fingerprint(&[("bin", a.path().to_path_buf())], &mut cache, u64::MAX).unwrap();
        let db = fingerprint(&[("bin", b.path().to_path_buf())], &mut cache, u64::MAX).unwrap();
        assert_eq!(da.digest, db.digest);
    }
}
