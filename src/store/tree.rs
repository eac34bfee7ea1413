//! The canonical serialisation of an output tree, and its hash.
//!
//! Sorted paths, entry type, exec bit, symlink target and file bytes; no mtimes,
//! owners or other mode bits, so the same bytes always hash the same.

use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::hash::{Digest, OutputHash};

/// Change whenever the serialisation changes.
const VERSION: &str = "bake-tree-v1";

/// Files at least this large are hashed by several threads.
const PARALLEL_HASH_BYTES: u64 = 1 << 20;

/// Hashes the tree at `root` (a directory, a file or a symlink).
pub fn hash_tree(root: &Path) -> io::Result<OutputHash> {
    let mut h = blake3::Hasher::new();
    field(&mut h, VERSION.as_bytes());
    entry(root, b"", &mut h)?;
    Ok(OutputHash::new(Digest::from(h.finalize())))
}

fn entry(path: &Path, rel: &[u8], h: &mut blake3::Hasher) -> io::Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| annotate(path, e))?;
    field(h, rel);
    let ft = meta.file_type();
    if ft.is_symlink() {
        h.update(b"l");
        field(h, fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        h.update(b"d");
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(|e| annotate(path, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        h.update(&(names.len() as u64).to_le_bytes());
        for name in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_encoded_bytes());
            entry(&path.join(&name), &child, h)?;
        }
    } else if ft.is_file() {
        let exec = meta.permissions().mode() & 0o111 != 0;
        h.update(if exec { b"x" } else { b"f" });
        h.update(&meta.len().to_le_bytes());
        let mut file_hash = blake3::Hasher::new();
        // Large files on every core, as b3sum does; the digest is the same.
        if meta.len() >= PARALLEL_HASH_BYTES {
            file_hash.update_mmap_rayon(path)
        } else {
            file_hash.update_mmap(path)
        }
        .map_err(|e| annotate(path, e))?;
        h.update(file_hash.finalize().as_bytes());
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a file, directory or symlink", path.display()),
        ));
    }
    Ok(())
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Sets `mode` bits on the tree: read-only (`writable` false: 0555 dirs and
/// executables, 0444 files, owned by this process's user, as a step may have
/// run as another) or back to writable for removal.
pub fn set_writable(root: &Path, writable: bool) -> io::Result<()> {
    let meta = fs::symlink_metadata(root)?;
    if !writable {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
        }
    }
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let exec = meta.is_dir() || meta.permissions().mode() & 0o111 != 0;
    let mode = match (exec, writable) {
        (true, false) => 0o555,
        (false, false) => 0o444,
        (true, true) => 0o755,
        (false, true) => 0o644,
    };
    if meta.is_dir() && writable {
        fs::set_permissions(root, fs::Permissions::from_mode(mode))?;
    }
    if meta.is_dir() {
        for e in fs::read_dir(root)? {
            set_writable(&e?.path(), writable)?;
        }
    }
    if !(meta.is_dir() && writable) {
        fs::set_permissions(root, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Gives a tree to `uid` (and the group of that number), links included.
pub fn chown_tree(path: &Path, uid: u32) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.uid() != uid || meta.gid() != uid {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    }
    if meta.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

/// Removes a tree that may be read-only.
pub fn remove_tree(root: &Path) -> io::Result<()> {
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(root),
        Ok(_) => {}
    }
    set_writable(root, true)?;
    fs::remove_dir_all(root)
}

/// Detaches every mount at or below `root` (deepest first), as a killed bake
/// leaves them (`bake check`'s disorderfs, its daemon killed with it): a dead
/// FUSE mount fails every look at its directory, so the tree could not be
/// removed.
pub fn detach_mounts(root: &Path) -> io::Result<()> {
    // `root` itself may be the dead mount, which canonicalize could not look at.
    let root = match (root.parent(), root.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)?.join(name),
        _ => fs::canonicalize(root)?,
    };
    let mut points: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_point(point)))
        .filter(|point| point.starts_with(&root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in &points {
        let c = std::ffi::CString::new(point.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: umount2 takes a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // Detached already with the mount above it.
            if e.raw_os_error() != Some(libc::EINVAL) && e.kind() != io::ErrorKind::NotFound {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{} is still mounted ({e}); unmount it: umount -l {0}",
                        point.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A mount point as mountinfo writes it: space, tab, newline and backslash as
/// three octal digits after a backslash.
fn unescape_mount_point(field: &str) -> std::ffi::OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Total size of the files in a tree, for reports.
pub fn tree_size(root: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(root) else {
        return 0;
    };
    if meta.is_dir() {
        fs::read_dir(root)
            .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        fs::write(d.path().join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            d.path().join("usr/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(d.path().join("a.txt"), "a").unwrap();
        symlink("usr/bin/tool", d.path().join("link")).unwrap();
        d
    }

    #[test]
    fn hash_ignores_mtime_and_mode_bits_other_than_exec() {
        let t = tree();
        let before = hash_tree(t.path()).unwrap();
        let f = fs::File::options()
            .write(true)
            .open(t.path().join("a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        fs::set_permissions(t.path().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(hash_tree(t.path()).unwrap(), before);
    }

    #[test]
    fn hash_sees_bytes_exec_bit_names_and_link_targets() {
        let t = tree();
        let base = hash_tree(t.path()).unwrap();
        fs::write(t.path().join("a.txt"), "b").unwrap();
        assert_ne!(hash_tree(t.path()).unwrap(), base);
        let t = tree();
        fs::set_permissions(t.path().join("a.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap(), base);
        let t = tree();
        fs::rename(t.path().join("a.txt"), t.path().join("b.txt")).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap(), base);
        let t = tree();
        fs::remove_file(t.path().join("link")).unwrap();
        symlink("usr/bin", t.path().join("link")).unwrap();
        assert_ne!(hash_tree(t.path()).unwrap(), base);
        assert_eq!(hash_tree(tree().path()).unwrap(), base);
    }

    #[test]
    fn read_only_then_removable() {
        let t = tree();
        set_writable(t.path(), false).unwrap();
        let mode = fs::metadata(t.path().join("a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o444);
        let mode = fs::metadata(t.path().join("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o555);
        remove_tree(t.path()).unwrap();
        assert!(!t.path().exists());
    }

    #[test]
    fn mount_points_are_unescaped_as_mountinfo_escapes_them() {
        assert_eq!(unescape_mount_point(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mount_point(r"/plain/path"), "/plain/path");
        assert_eq!(unescape_mount_point(r"/odd\04"), r"/odd\04");
        assert_eq!(unescape_mount_point(r"/no\999"), r"/no\999");
    }
}
