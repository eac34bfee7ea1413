//! Unpacking a fetched source into a build directory: tar (plain, gz, xz, bz2,
//! zst) and zip, recognised by content; a single top directory is stripped;
//! entries that would land outside the directory, and device nodes and fifos,
//! are refused; setuid/setgid bits are dropped and mtimes normalised.
//!
//! Everything is unpacked into a staging directory inside the destination and
//! moved into place only when the whole archive passed, so a refused archive
//! leaves the destination as it was (removed, if this call created it).

mod error;
mod format;
mod tar;
mod tree;
mod zip;

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;

pub use error::{Refusal, UnpackError};
use format::Format;
use tree::{make_dir, Tree};

/// How large an archive may unpack: at most `bytes`, and at most `ratio` times
/// its own size, whichever is less (each entry counts 512 bytes besides its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnpackLimits {
    pub bytes: u64,
    pub ratio: u64,
}

impl Default for UnpackLimits {
    /// Generous for real source tarballs (compression ratios of 3 to 15), not for
    /// bombs: 16 GiB, and 200 times the archive.
    fn default() -> Self {
        UnpackLimits {
            bytes: 16 << 30,
            ratio: 200,
        }
    }
}

/// Unpacks `archive` into `dest`, which must be missing or an empty directory.
/// Every mtime becomes `mtime` (the build's `SOURCE_DATE_EPOCH`, or 0).
pub fn unpack_archive(
    archive: &Path,
    dest: &Path,
    mtime: u64,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    let mut file = File::open(archive).map_err(|e| UnpackError::io("cannot open", archive, e))?;
    let size = file
        .metadata()
        .map_err(|e| UnpackError::io("cannot read", archive, e))?
        .len();
    let limit = limits
        .bytes
        .min(limits.ratio.saturating_mul(size.max(1 << 20)));
    let format = Format::detect(&mut file)
        .map_err(|e| UnpackError::io("cannot read", archive, e))?
        .ok_or_else(|| UnpackError::NotAnArchive {
            path: archive.to_path_buf(),
        })?;
    let created = claim(dest)?;
    let result = unpack_into(archive, file, format, dest, mtime, limit);
    if result.is_err() {
        // Best effort: the error being returned matters more than leftovers.
        let _ = clear(dest, created);
    }
    result
}

/// Places a source that is not an archive (`unpack false`) into `dest_dir`
/// under `file_name`, writable and with the normalised mtime.
pub fn copy_file(
    file: &Path,
    dest_dir: &Path,
    file_name: &str,
    mtime: u64,
) -> Result<PathBuf, UnpackError> {
    let mut parts = Path::new(file_name).components();
    if !matches!((parts.next(), parts.next()), (Some(Component::Normal(n)), None) if n == file_name)
    {
        return Err(UnpackError::BadFileName {
            name: file_name.to_string(),
        });
    }
    fs::create_dir_all(dest_dir)
        .map_err(|e| UnpackError::io("cannot create directory", dest_dir, e))?;
    let dst = dest_dir.join(file_name);
    if fs::symlink_metadata(&dst).is_ok() {
        fs::remove_file(&dst).map_err(|e| UnpackError::io("cannot replace", &dst, e))?;
    }
    fs::copy(file, &dst).map_err(|e| UnpackError::io("cannot copy to", &dst, e))?;
    // The store's copy is read-only; the build's must not be.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))
        .map_err(|e| UnpackError::io("cannot set mode of", &dst, e))?;
    set_mtime(&dst, mtime)?;
    Ok(dst)
}

fn unpack_into(
    archive: &Path,
    file: File,
    format: Format,
    dest: &Path,
    mtime: u64,
    limit: u64,
) -> Result<(), UnpackError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let staging = dest.join(format!(".bake-unpack-{}-{n}", std::process::id()));
    make_dir(&staging)?;
    let tree = Tree {
        root: &staging,
        archive,
        budget: std::cell::Cell::new(limit),
        limit,
    };
    match format {
        Format::Tar(compression) => {
            let stream = compression
                .decoder(file)
                .map_err(|e| UnpackError::io("cannot decompress", archive, e))?;
            tar::unpack(&tree, stream)?
        }
        Format::Zip => zip::unpack(&tree, file)?,
    }
    let root = single_top_dir(&staging)?.unwrap_or_else(|| staging.clone());
    tree.check_symlinks(&root, &staging)?;
    for child in list(&root)? {
        let name = child.file_name().unwrap_or_default();
        fs::rename(&child, dest.join(name))
            .map_err(|e| UnpackError::io("cannot move into place", &child, e))?;
    }
    fs::remove_dir_all(&staging).map_err(|e| UnpackError::io("cannot remove", &staging, e))?;
    normalise_mtimes(dest, mtime)
}

/// Makes `dest` ready: true if it was created here, false if it was an empty
/// directory already.
fn claim(dest: &Path) -> Result<bool, UnpackError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| UnpackError::io("cannot create directory", parent, e))?;
            }
            make_dir(dest)?;
            Ok(true)
        }
        Ok(meta) if meta.is_dir() && list(dest)?.is_empty() => Ok(false),
        Ok(_) => Err(UnpackError::DestNotEmpty {
            dest: dest.to_path_buf(),
        }),
        Err(e) => Err(UnpackError::io("cannot inspect", dest, e)),
    }
}

/// Undoes a failed unpack: `dest` removed if it was created, emptied otherwise.
fn clear(dest: &Path, created: bool) -> io::Result<()> {
    if created {
        return fs::remove_dir_all(dest);
    }
    for entry in fs::read_dir(dest)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The archive's only top-level entry, if that is a directory.
fn single_top_dir(staging: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let children = list(staging)?;
    Ok(match children.as_slice() {
        [only] if fs::symlink_metadata(only).is_ok_and(|m| m.is_dir()) => Some(only.clone()),
        _ => None,
    })
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, UnpackError> {
    let entries = fs::read_dir(dir).map_err(|e| UnpackError::io("cannot list", dir, e))?;
    entries
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()
        .map_err(|e| UnpackError::io("cannot list", dir, e))
}

fn normalise_mtimes(dest: &Path, mtime: u64) -> Result<(), UnpackError> {
    let mut dirs = vec![dest.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for path in list(&dir)? {
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                dirs.push(path.clone());
            }
            set_mtime(&path, mtime)?;
        }
        // Changing a child's times leaves its directory's mtime alone.
        set_mtime(&dir, mtime)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64) -> Result<(), UnpackError> {
    let time = FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    filetime::set_symlink_file_times(path, time, time)
        .map_err(|e| UnpackError::io("cannot set mtime of", path, e))
}
