//! Safe unpacking of source archives: tar (gz, xz, bz2, zst) and zip, detected by
//! their first bytes; the single top directory stripped; absolute paths, `..`,
//! links leaving the tree, devices and fifos refused; setuid/setgid dropped;
//! mtimes set to SOURCE_DATE_EPOCH.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub enum UnpackError {
    Io(io::Error),
    /// An entry that would escape or harm the tree; nothing was kept.
    Refused {
        entry: String,
        why: String,
    },
    NotAnArchive,
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpackError::Io(e) => write!(f, "{e}"),
            UnpackError::Refused { entry, why } => {
                write!(f, "refused archive entry `{entry}`: {why}")
            }
            UnpackError::NotAnArchive => {
                write!(f, "not a tar (gz, xz, bz2, zst) or zip archive; declare `unpack #false` for a plain file")
            }
        }
    }
}

impl std::error::Error for UnpackError {}

impl From<io::Error> for UnpackError {
    fn from(e: io::Error) -> Self {
        UnpackError::Io(e)
    }
}

fn refuse(entry: &Path, why: &str) -> UnpackError {
    UnpackError::Refused {
        entry: entry.display().to_string(),
        why: why.to_string(),
    }
}

/// Unpacks `archive` into `dest` (created; must not exist), or, for a plain file,
/// copies it into `dest` under its name.
pub fn unpack_or_copy(
    archive: &Path,
    dest: &Path,
    unpack_it: bool,
    epoch: i64,
) -> Result<(), UnpackError> {
    if unpack_it {
        return unpack(archive, dest, epoch);
    }
    fs::create_dir_all(dest)?;
    let name = archive.file_name().unwrap_or_default();
    fs::copy(archive, dest.join(name))?;
    Ok(())
}

enum Format {
    Tar,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
    Zip,
}

fn detect(path: &Path) -> io::Result<Option<Format>> {
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let h = &head[..n];
    Ok(if h.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Format::Xz)
    } else if h.starts_with(b"BZh") {
        Some(Format::Bzip2)
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Format::Zstd)
    } else if h.starts_with(b"PK\x03\x04") {
        Some(Format::Zip)
    } else if n >= 262 && &h[257..262] == b"ustar" {
        Some(Format::Tar)
    } else {
        None
    })
}

/// Unpacks `archive` into `dest`. On any error nothing is left at `dest`.
pub fn unpack(archive: &Path, dest: &Path, epoch: i64) -> Result<(), UnpackError> {
    let staging = dest.with_extension("unpacking");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    let result = unpack_into(archive, &staging).and_then(|()| {
        set_mtimes(&staging, epoch)?;
        let top = single_top_dir(&staging)?;
        fs::rename(top.as_deref().unwrap_or(&staging), dest)?;
        Ok(())
    });
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn unpack_into(archive: &Path, dir: &Path) -> Result<(), UnpackError> {
    let file = || fs::File::open(archive).map(io::BufReader::new);
    match detect(archive)?.ok_or(UnpackError::NotAnArchive)? {
        Format::Tar => tar_entries(file()?, dir),
        Format::Gzip => tar_entries(flate2::read::MultiGzDecoder::new(file()?), dir),
        Format::Xz => tar_entries(xz2::read::XzDecoder::new_multi_decoder(file()?), dir),
        Format::Bzip2 => tar_entries(bzip2::read::MultiBzDecoder::new(file()?), dir),
        Format::Zstd => tar_entries(zstd::stream::read::Decoder::new(file()?)?, dir),
        Format::Zip => zip_entries(archive, dir),
    }
}

/// `name` as a relative path of plain components, or why not.
fn safe_relative(name: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(name, "`..` in the path")),
            Component::RootDir | Component::Prefix(_) => return Err(refuse(name, "absolute path")),
        }
    }
    Ok(out)
}

/// A symlink at `at` (relative to the tree) pointing at `target` must stay inside.
fn check_link_target(at: &Path, target: &Path) -> Result<(), UnpackError> {
    if target.is_absolute() {
        return Err(refuse(
            at,
            &format!("symlink to the absolute path {}", target.display()),
        ));
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(refuse(
                at,
                &format!("symlink to {} leaves the tree", target.display()),
            ));
        }
    }
    Ok(())
}

fn mode_of(mode: u32, is_dir: bool) -> u32 {
    // setuid, setgid and sticky bits are dropped; directories stay traversable.
    let m = mode & 0o777;
    if is_dir {
        m | 0o700
    } else {
        m | 0o600
    }
}

fn tar_entries(reader: impl Read, dir: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let raw = entry.path()?.into_owned();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let rel = safe_relative(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&path)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(mode, true)))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut out = fs::File::create(&path)?;
                io::copy(&mut entry, &mut out)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(mode, false)))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&raw, "symlink without a target"))?;
                check_link_target(&rel, &target)?;
                std::os::unix::fs::symlink(&target, &path)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&raw, "hard link without a target"))?;
                let target = safe_relative(&target)
                    .map_err(|_| refuse(&raw, "hard link to outside the tree"))?;
                let source = dir.join(&target);
                if fs::symlink_metadata(&source).is_err() {
                    return Err(refuse(&raw, "hard link to an entry not in the archive"));
                }
                fs::hard_link(&source, &path)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refuse(&raw, "device node"))
            }
            tar::EntryType::Fifo => return Err(refuse(&raw, "fifo")),
            _ => return Err(refuse(&raw, "unsupported entry type")),
        }
    }
    Ok(())
}

fn zip_entries(archive: &Path, dir: &Path) -> Result<(), UnpackError> {
    let mut zip = zip::ZipArchive::new(fs::File::open(archive)?)
        .map_err(|e| UnpackError::Io(io::Error::other(e)))?;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| UnpackError::Io(io::Error::other(e)))?;
        let raw = PathBuf::from(f.name());
        let rel = safe_relative(&raw)?;
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mode = f
            .unix_mode()
            .unwrap_or(if f.is_dir() { 0o755 } else { 0o644 });
        const S_IFMT: u32 = 0o170000;
        match mode & S_IFMT {
            0o120000 => {
                let mut target = String::new();
                f.read_to_string(&mut target)?;
                check_link_target(&rel, Path::new(&target))?;
                std::os::unix::fs::symlink(&target, &path)?;
            }
            0o020000 | 0o060000 => return Err(refuse(&raw, "device node")),
            0o010000 => return Err(refuse(&raw, "fifo")),
            _ if f.is_dir() => {
                fs::create_dir_all(&path)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(mode, true)))?;
            }
            _ => {
                let mut out = fs::File::create(&path)?;
                io::copy(&mut f, &mut out)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode_of(mode, false)))?;
            }
        }
    }
    Ok(())
}

/// The one directory `dir` holds, when it holds nothing else.
fn single_top_dir(dir: &Path) -> io::Result<Option<PathBuf>> {
    let entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    Ok(match &entries[..] {
        [only] if only.file_type()?.is_dir() => Some(only.path()),
        _ => None,
    })
}

fn set_mtimes(root: &Path, epoch: i64) -> io::Result<()> {
    let when = UNIX_EPOCH + Duration::from_secs(epoch.max(0) as u64);
    walk_set(root, when)
}

fn walk_set(path: &Path, when: SystemTime) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        for e in fs::read_dir(path)? {
            walk_set(&e?.path(), when)?;
        }
    }
    fs::File::open(path)?.set_modified(when)
}
