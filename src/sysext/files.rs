//! The list of an image's files, written beside the image: what its SBOM lists.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hash::hex;

/// One regular file of an image tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the image's root (`usr/bin/keepalived`).
    pub path: String,
    pub size: u64,
    pub sha1: String,
    pub sha256: String,
}

/// The name of the file list a sysext writes beside its image.
pub fn files_list_name(image: &str) -> String {
    format!("{}.files.json", image.trim_end_matches(".raw"))
}

/// Reads a file list written by [`write_files_list`].
pub fn read_files_list(path: &Path) -> io::Result<Vec<FileEntry>> {
    serde_json::from_slice(&fs::read(path)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Lists every regular file under `tree` with its size, SHA-1 (SPDX requires
/// one per file) and SHA-256, sorted by path, and writes the list to `out`.
pub fn write_files_list(tree: &Path, out: &Path) -> io::Result<Vec<FileEntry>> {
    let mut files = Vec::new();
    collect(tree, Path::new(""), &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut text = serde_json::to_string_pretty(&files)?;
    text.push('\n');
    fs::write(out, text)?;
    Ok(files)
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<FileEntry>) -> io::Result<()> {
    use sha1::Digest as _;
    for e in fs::read_dir(root.join(rel))? {
        let e = e?;
        let child = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            collect(root, &child, out)?;
        } else if ft.is_file() {
            let bytes = fs::read(root.join(&child))?;
            out.push(FileEntry {
                path: child.to_string_lossy().into_owned(),
                size: bytes.len() as u64,
                sha1: hex(&sha1::Sha1::digest(&bytes)),
                sha256: hex(&sha2::Sha256::digest(&bytes)),
            });
        }
    }
    Ok(())
}
