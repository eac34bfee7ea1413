//! What a sysext image tree may not contain, checked before packing.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SysextError;

/// Refuses, naming the path: anything at the top besides `usr/` and `opt/`, a
/// `usr/sbin` (it shadows Flatcar's `/usr/sbin -> bin` symlink), an `os-release`,
/// setuid or setgid files, device nodes, fifos and sockets.
pub fn check_tree(root: &Path) -> Result<(), SysextError> {
    for e in read_dir(root)? {
        let name = e.file_name();
        if name != "usr" && name != "opt" {
            return Err(refused(
                &PathBuf::from(&name),
                "only usr/ and opt/ may be at the top of a sysext image",
            ));
        }
    }
    let sbin = root.join("usr/sbin");
    if fs::symlink_metadata(&sbin).is_ok() {
        return Err(refused(
            Path::new("usr/sbin"),
            "/usr/sbin is a symlink to bin on Flatcar; an image carrying usr/sbin shadows it: install to usr/bin",
        ));
    }
    walk(root, Path::new(""))
}

fn walk(root: &Path, rel: &Path) -> Result<(), SysextError> {
    let path = root.join(rel);
    for e in read_dir(&path)? {
        let child = rel.join(e.file_name());
        let meta = fs::symlink_metadata(root.join(&child)).map_err(|err| io(&child, err))?;
        let ft = meta.file_type();
        if e.file_name() == "os-release" {
            return Err(refused(
                &child,
                "an extension image must not carry os-release",
            ));
        }
        if ft.is_block_device() || ft.is_char_device() {
            return Err(refused(&child, "device nodes are not allowed"));
        }
        if ft.is_fifo() || ft.is_socket() {
            return Err(refused(&child, "fifos and sockets are not allowed"));
        }
        let mode = meta.permissions().mode();
        if !ft.is_symlink() && mode & 0o4000 != 0 {
            return Err(refused(&child, "setuid files are not allowed"));
        }
        if !ft.is_symlink() && mode & 0o2000 != 0 {
            return Err(refused(&child, "setgid files are not allowed"));
        }
        if ft.is_dir() {
            walk(root, &child)?;
        }
    }
    Ok(())
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>, SysextError> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(path)
        .and_then(|rd| rd.collect())
        .map_err(|e| io(path, e))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

fn refused(path: &Path, why: &str) -> SysextError {
    SysextError::Refused {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn io(path: &Path, e: std::io::Error) -> SysextError {
    SysextError::Io(format!("{}: {e}", path.display()))
}

/// Directories and executables 0755, other files 0644 (symlinks keep theirs).
pub fn normalise_modes(path: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = if meta.is_dir() || meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if meta.is_dir() {
        for e in fs::read_dir(path)? {
            normalise_modes(&e?.path())?;
        }
    }
    Ok(())
}
