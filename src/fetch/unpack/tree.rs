//! The directory an archive is unpacked into, and the rules that keep every
//! entry inside it.
//!
//! Entries go only to validated relative paths, never through a symlink, and
//! links are checked twice: lexically when written, and by following them on
//! disk once the whole archive is out (a chain of individually harmless links
//! can still lead outside).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::error::{Refusal, UnpackError};

/// Mode of every unpacked directory: builds write into their sources.
const DIR_MODE: u32 = 0o755;
/// Symlinks followed before a chain counts as a loop (Linux's limit).
const MAX_HOPS: usize = 40;

/// What every entry costs besides its bytes, so a million empty files count too.
const ENTRY_COST: u64 = 512;

pub(crate) struct Tree<'a> {
    pub(crate) root: &'a Path,
    pub(crate) archive: &'a Path,
    /// Bytes the archive may still unpack to.
    pub(crate) budget: std::cell::Cell<u64>,
    /// The whole allowance, for the message when it runs out.
    pub(crate) limit: u64,
}

impl Tree<'_> {
    /// Takes `bytes` from the budget, or refuses the archive as too large.
    fn spend(&self, bytes: u64) -> Result<(), UnpackError> {
        match self.budget.get().checked_sub(bytes) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(UnpackError::TooLarge {
                archive: self.archive.to_path_buf(),
                limit: self.limit,
            }),
        }
    }

    pub(crate) fn refuse(&self, entry: &str, reason: Refusal) -> UnpackError {
        UnpackError::Refused {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string(),
            reason,
        }
    }

    /// The entry's path relative to the root; `None` for the root itself (`./`).
    pub(crate) fn relative(
        &self,
        entry: &str,
        path: &Path,
    ) -> Result<Option<PathBuf>, UnpackError> {
        let mut rel = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.refuse(entry, Refusal::ParentDir)),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(entry, Refusal::AbsolutePath))
                }
            }
        }
        Ok((!rel.as_os_str().is_empty()).then_some(rel))
    }

    /// Makes the parent directories of `rel` and clears its place; returns where
    /// to write it.
    pub(crate) fn prepare(&self, entry: &str, rel: &Path) -> Result<PathBuf, UnpackError> {
        self.spend(ENTRY_COST)?;
        let mut dir = self.root.to_path_buf();
        let parents: Vec<_> = rel
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .collect();
        for part in parents {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = dir.strip_prefix(self.root).unwrap_or(&dir);
                    return Err(self.refuse(
                        entry,
                        Refusal::ThroughSymlink {
                            link: link.display().to_string(),
                        },
                    ));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(self.refuse(entry, Refusal::Collision)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&dir)?,
                Err(e) => return Err(UnpackError::io("cannot inspect", &dir, e)),
            }
        }
        let dst = self.root.join(rel);
        match fs::symlink_metadata(&dst) {
            Ok(meta) if meta.is_dir() => Err(self.refuse(entry, Refusal::Collision)),
            // A later copy of a file replaces the earlier one, as tar does.
            Ok(_) => fs::remove_file(&dst)
                .map(|()| dst.clone())
                .map_err(|e| UnpackError::io("cannot replace", &dst, e)),
            Err(_) => Ok(dst),
        }
    }

    pub(crate) fn dir(&self, entry: &str, rel: &Path) -> Result<(), UnpackError> {
        let dst = self.root.join(rel);
        if fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let dst = self.prepare(entry, rel)?;
        make_dir(&dst)
    }

    pub(crate) fn file(
        &self,
        entry: &str,
        rel: &Path,
        content: &mut dyn Read,
        mode: u32,
    ) -> Result<(), UnpackError> {
        let dst = self.prepare(entry, rel)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&dst)
            .map_err(|e| UnpackError::io("cannot create", &dst, e))?;
        let corrupt = |source| UnpackError::Corrupt {
            archive: self.archive.to_path_buf(),
            entry: Some(entry.to_string()),
            source,
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(e)),
            };
            // A sparse or highly compressed entry is stopped while it streams.
            self.spend(n as u64)?;
            io::Write::write_all(&mut file, &buf[..n])
                .map_err(|e| UnpackError::io("cannot write", &dst, e))?;
        }
        // Setuid, setgid and sticky bits are dropped; the umask is not applied.
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| UnpackError::io("cannot set mode of", &dst, e))
    }

    pub(crate) fn symlink(
        &self,
        entry: &str,
        rel: &Path,
        target: &Path,
    ) -> Result<(), UnpackError> {
        let escapes = || {
            self.refuse(
                entry,
                Refusal::SymlinkEscapes {
                    target: target.display().to_string(),
                },
            )
        };
        let mut depth = rel.components().count() - 1;
        for component in target.components() {
            match component {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => depth = depth.checked_sub(1).ok_or_else(escapes)?,
                Component::RootDir | Component::Prefix(_) => return Err(escapes()),
            }
        }
        if target.as_os_str().is_empty() {
            return Err(escapes());
        }
        let dst = self.prepare(entry, rel)?;
        std::os::unix::fs::symlink(target, &dst)
            .map_err(|e| UnpackError::io("cannot create symlink", &dst, e))
    }

    pub(crate) fn hard_link(
        &self,
        entry: &str,
        rel: &Path,
        target: &Path,
    ) -> Result<(), UnpackError> {
        let name = target.display().to_string();
        let target_rel = match self.relative(entry, target) {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => {
                return Err(self.refuse(entry, Refusal::HardLinkEscapes { target: name }))
            }
        };
        // Its parents must be real directories, exactly as for a new entry.
        let mut parent = self.root.to_path_buf();
        for part in target_rel.parent().into_iter().flat_map(Path::components) {
            parent.push(part);
            if !fs::symlink_metadata(&parent).is_ok_and(|m| m.is_dir()) {
                return Err(self.refuse(entry, Refusal::HardLinkMissing { target: name }));
            }
        }
        let src = self.root.join(&target_rel);
        if !fs::symlink_metadata(&src).is_ok_and(|m| !m.is_dir()) {
            return Err(self.refuse(entry, Refusal::HardLinkMissing { target: name }));
        }
        let dst = self.prepare(entry, rel)?;
        fs::hard_link(&src, &dst).map_err(|e| UnpackError::io("cannot create hard link", &dst, e))
    }

    /// Follows every symlink under `root` on disk; refuses one that leads outside
    /// `root` or loops. Entries are named relative to `shown_from`.
    pub(crate) fn check_symlinks(&self, root: &Path, shown_from: &Path) -> Result<(), UnpackError> {
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries =
                fs::read_dir(&dir).map_err(|e| UnpackError::io("cannot list", &dir, e))?;
            for item in entries {
                let item = item.map_err(|e| UnpackError::io("cannot list", &dir, e))?;
                let path = item.path();
                let kind = item
                    .file_type()
                    .map_err(|e| UnpackError::io("cannot inspect", &path, e))?;
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_symlink() {
                    self.check_symlink(root, &path, shown_from)?;
                }
            }
        }
        Ok(())
    }

    fn check_symlink(
        &self,
        root: &Path,
        link: &Path,
        shown_from: &Path,
    ) -> Result<(), UnpackError> {
        let target =
            fs::read_link(link).map_err(|e| UnpackError::io("cannot read symlink", link, e))?;
        let start: Vec<OsString> = link
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .map(|p| p.iter().map(OsString::from).collect())
            .unwrap_or_default();
        let entry = link
            .strip_prefix(shown_from)
            .unwrap_or(link)
            .display()
            .to_string();
        let shown = target.display().to_string();
        match resolve(root, start, &target) {
            Resolution::Inside => Ok(()),
            Resolution::Outside => {
                Err(self.refuse(&entry, Refusal::SymlinkEscapes { target: shown }))
            }
            Resolution::Loop => Err(self.refuse(&entry, Refusal::SymlinkLoops { target: shown })),
        }
    }
}

enum Resolution {
    Inside,
    Outside,
    Loop,
}

/// Walks `target` from the directory `start` (components under `root`),
/// expanding symlinks met on disk as the kernel would.
fn resolve(root: &Path, start: Vec<OsString>, target: &Path) -> Resolution {
    let mut at = start;
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let mut hops = 0;
    if !push_front(&mut pending, target) {
        return Resolution::Outside;
    }
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if at.pop().is_none() {
                return Resolution::Outside;
            }
            continue;
        }
        at.push(part);
        let here: PathBuf = root.join(at.iter().collect::<PathBuf>());
        if let Ok(next) = fs::read_link(&here) {
            hops += 1;
            if hops > MAX_HOPS {
                return Resolution::Loop;
            }
            at.pop();
            if !push_front(&mut pending, &next) {
                return Resolution::Outside;
            }
        }
    }
    Resolution::Inside
}

/// Queues the components of `path` before the rest; false for an absolute path.
fn push_front(pending: &mut VecDeque<OsString>, path: &Path) -> bool {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    for part in parts.into_iter().rev() {
        pending.push_front(part);
    }
    true
}

pub(crate) fn make_dir(path: &Path) -> Result<(), UnpackError> {
    DirBuilder::new()
        .mode(DIR_MODE)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)))
        .map_err(|e| UnpackError::io("cannot create directory", path, e))
}
