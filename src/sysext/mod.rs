//! systemd-sysext images: the tree from build outputs and repository files, its
//! extension-release file, the checks, and the packed image.

mod check;
mod ddi;
mod files;
mod pack;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use check::{check_tree, normalise_modes};
pub use ddi::{make_ddi, roothash_name, sign_ddi, DDI_ARCHITECTURES};
pub use files::{files_list_name, read_files_list, write_files_list, FileEntry};
pub use pack::pack;

use crate::recipe::ImageFormat;
use crate::store::chown_tree;
use crate::variation::Variation;

/// Architecture names systemd knows (`ARCHITECTURE=`, `%a` in sysupdate patterns).
pub const ARCHITECTURES: &[&str] = &[
    "x86-64",
    "x86",
    "arm64",
    "arm64-be",
    "arm",
    "arm-be",
    "riscv64",
    "riscv32",
    "ppc64-le",
    "ppc64",
    "ppc-le",
    "ppc",
    "s390x",
    "s390",
    "loongarch64",
    "mips64-le",
    "mips-le",
    "alpha",
    "arc",
    "arc-be",
    "cris",
    "ia64",
    "m68k",
    "parisc64",
    "parisc",
    "sh64",
    "sh",
    "sparc64",
    "sparc",
    "tilegx",
];

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SysextError {
    /// The tree has something an image may not carry.
    #[error("refusing to pack `{path}`: {why}")]
    #[diagnostic(code(bake::sysext::refused))]
    Refused { path: String, why: String },
    #[error("{0}")]
    #[diagnostic(code(bake::sysext::io))]
    Io(String),
    #[error("{0}")]
    #[diagnostic(code(bake::sysext::tool))]
    Tool(String),
}

impl From<io::Error> for SysextError {
    fn from(e: io::Error) -> Self {
        SysextError::Io(e.to_string())
    }
}

/// `NAME-vVERSION-ARCH.raw`, the name images are published under.
pub fn image_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}-v{version}-{arch}.raw")
}

/// What an image says about itself in its extension-release file, and how it is packed.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    pub version: String,
    /// A systemd architecture name, or `_any`.
    pub arch: String,
    /// `ID=`: `_any`, or an OS id together with `sysext_level`.
    pub os: String,
    pub sysext_level: Option<String>,
    pub reload_manager: bool,
    pub format: ImageFormat,
}

/// The contents of `usr/lib/extension-release.d/extension-release.NAME`.
pub fn extension_release(spec: &Metadata) -> String {
    let mut s = format!("ID={}\n", spec.os);
    if let Some(level) = &spec.sysext_level {
        s.push_str(&format!("SYSEXT_LEVEL={level}\n"));
    }
    s.push_str(&format!("ARCHITECTURE={}\n", spec.arch));
    if spec.reload_manager {
        s.push_str("EXTENSION_RELOAD_MANAGER=1\n");
    }
    s
}

/// Builds the image of sysext `name` into `out/NAME-vVERSION-ARCH.raw`: the trees
/// in `sources` (build outputs, repository files) merged under `work/tree`, the
/// extension-release file written, the tree checked, modes normalised, packed
/// (under `variation`, for a `bake check` rebuild); beside it the list of its
/// files (`NAME-vVERSION-ARCH.files.json`) and, for a DDI, its root hash
/// (`NAME-vVERSION-ARCH.roothash`).
pub fn make_image(
    name: &str,
    spec: &Metadata,
    sources: &[PathBuf],
    work: &Path,
    out: &Path,
    epoch: i64,
    variation: Option<&Variation>,
) -> Result<PathBuf, SysextError> {
    let tree = work.join("tree");
    fs::create_dir_all(&tree)?;
    for source in sources {
        copy_tree(source, &tree)?;
    }
    let release_dir = tree.join("usr/lib/extension-release.d");
    fs::create_dir_all(&release_dir)?;
    fs::write(
        release_dir.join(format!("extension-release.{name}")),
        extension_release(spec),
    )?;
    check_tree(&tree)?;
    normalise_modes(&tree)?;
    fs::create_dir_all(out)?;
    let file = image_name(name, &spec.version, &spec.arch);
    write_files_list(&tree, &out.join(files_list_name(&file)))?;
    let image = out.join(file);
    let _reordered = match variation {
        Some(v) => {
            if let Some(uid) = v.uid() {
                chown_tree(&tree, uid)?;
                chown_tree(out, uid)?;
            }
            v.reorder(&tree, &work.join("tree.lower"))?
        }
        None => None,
    };
    match spec.format {
        ImageFormat::Ddi => {
            make_ddi(&tree, &image, &spec.arch, work, epoch, variation)?;
        }
        format => pack(&tree, &image, format, epoch, variation)?,
    }
    Ok(image)
}

/// Merges the tree at `from` into `to`: directories joined, files and symlinks copied
/// with their mode bits (store objects are read-only; copies are made writable).
/// Device nodes, fifos and sockets are refused here: copying one would read it.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), SysextError> {
    copy_under(from, to, Path::new(""))
}

fn copy_under(from: &Path, to: &Path, rel: &Path) -> Result<(), SysextError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(from)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = to.join(e.file_name());
        let child = rel.join(e.file_name());
        let meta = fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let _ = fs::remove_file(&dst);
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            fs::create_dir_all(&dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
            copy_under(&src, &dst, &child)?;
        } else if ft.is_file() {
            let _ = fs::remove_file(&dst);
            fs::copy(&src, &dst)?;
            let mode = meta.permissions().mode() | 0o200;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))?;
        } else {
            let why = if ft.is_fifo() || ft.is_socket() {
                "fifos and sockets are not allowed"
            } else {
                "device nodes are not allowed"
            };
            return Err(SysextError::Refused {
                path: child.display().to_string(),
                why: why.to_string(),
            });
        }
    }
    Ok(())
}
