//! Output trees as the Remote Execution API holds them: a `Tree` message of
//! `Directory` messages whose files are CAS blobs, made from a directory here
//! and put back into one, every blob and directory checked against its digest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prost::Message;

use super::client::{digest_file, digest_of, Blob, Client, RemoteError};
use super::proto::{Digest, Directory, DirectoryNode, FileNode, SymlinkNode, TreeBytes};

/// Deeper trees than this are refused, on the way in and out.
const MAX_DEPTH: usize = 256;

/// A directory, packed: its Tree message, its root's digest, and every blob it
/// names (file contents; with `directories`, each Directory message too, as an
/// input root needs them).
pub struct Packed {
    pub tree: Vec<u8>,
    pub blobs: BTreeMap<Digest, Blob>,
}

/// Packs the tree at `dir`.
pub fn pack(dir: &Path, directories: bool) -> io::Result<Packed> {
    let mut packer = Packer {
        blobs: BTreeMap::new(),
        children: Vec::new(),
        seen: HashSet::new(),
        directories,
    };
    let (root_bytes, root) = packer.directory(dir, 0)?;
    if directories {
        packer
            .blobs
            .insert(root.clone(), Blob::Bytes(root_bytes.clone()));
    }
    let tree = TreeBytes {
        root: root_bytes,
        children: packer.children,
    }
    .encode_to_vec();
    Ok(Packed {
        tree,
        blobs: packer.blobs,
    })
}

struct Packer {
    blobs: BTreeMap<Digest, Blob>,
    /// Every directory below the root, once each.
    children: Vec<Vec<u8>>,
    seen: HashSet<Digest>,
    directories: bool,
}

impl Packer {
    /// The encoded Directory message of `path` and its digest.
    fn directory(&mut self, path: &Path, depth: usize) -> io::Result<(Vec<u8>, Digest)> {
        if depth > MAX_DEPTH {
            return Err(invalid(path, "is nested too deeply"));
        }
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for e in fs::read_dir(path)? {
            let e = e?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|_| invalid(&e.path(), "has a name that is not UTF-8"))?;
            names.push((name, e.path()));
        }
        // Canonical form: each list sorted by name, by UTF-8 bytes.
        names.sort();
        let mut d = Directory::default();
        for (name, p) in names {
            self.node(&mut d, name, &p, depth)?;
        }
        Ok(self.seal(&d))
    }

    /// Adds the file, directory or symlink at `p` to `d` as `name`.
    fn node(&mut self, d: &mut Directory, name: String, p: &Path, depth: usize) -> io::Result<()> {
        let meta = fs::symlink_metadata(p)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(p)?
                .into_os_string()
                .into_string()
                .map_err(|_| invalid(p, "links to a path that is not UTF-8"))?;
            d.symlinks.push(SymlinkNode { name, target });
        } else if ft.is_dir() {
            let (bytes, digest) = self.directory(p, depth + 1)?;
            self.subdirectory(d, name, bytes, digest);
        } else if ft.is_file() {
            let digest = digest_file(p)?;
            self.blobs
                .entry(digest.clone())
                .or_insert(Blob::File(p.to_path_buf()));
            d.files.push(FileNode {
                name,
                digest: Some(digest),
                is_executable: meta.permissions().mode() & 0o111 != 0,
            });
        } else {
            return Err(invalid(p, "is not a file, directory or symlink"));
        }
        Ok(())
    }

    fn subdirectory(&mut self, d: &mut Directory, name: String, bytes: Vec<u8>, digest: Digest) {
        if self.seen.insert(digest.clone()) {
            if self.directories {
                self.blobs
                    .insert(digest.clone(), Blob::Bytes(bytes.clone()));
            }
            self.children.push(bytes);
        }
        d.directories.push(DirectoryNode {
            name,
            digest: Some(digest),
        });
    }

    /// The encoded Directory message and its digest.
    fn seal(&self, d: &Directory) -> (Vec<u8>, Digest) {
        let bytes = d.encode_to_vec();
        let digest = digest_of(&bytes);
        (bytes, digest)
    }

    /// A directory made of `entries`, in canonical order.
    fn entries(
        &mut self,
        mut entries: Vec<(String, Entry)>,
        depth: usize,
    ) -> io::Result<(Vec<u8>, Digest)> {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut d = Directory::default();
        for (name, e) in entries {
            match e {
                Entry::Path(p) => self.node(&mut d, name, &p, depth)?,
                Entry::Bytes(b) => {
                    let digest = digest_of(&b);
                    self.blobs.insert(digest.clone(), Blob::Bytes(b));
                    d.files.push(FileNode {
                        name,
                        digest: Some(digest),
                        is_executable: false,
                    });
                }
                Entry::Dir(sub) => {
                    let (bytes, digest) = self.entries(sub, depth + 1)?;
                    self.subdirectory(&mut d, name, bytes, digest);
                }
            }
        }
        Ok(self.seal(&d))
    }
}

/// One entry of an input root put together from several places.
pub enum Entry {
    /// A file, directory or symlink on disk.
    Path(PathBuf),
    /// A file with these contents.
    Bytes(Vec<u8>),
    Dir(Vec<(String, Entry)>),
}

/// Packs an input root made of `entries`: its digest, and every blob it names
/// (the Directory messages included).
pub fn pack_root(entries: Vec<(String, Entry)>) -> io::Result<(Digest, BTreeMap<Digest, Blob>)> {
    let mut packer = Packer {
        blobs: BTreeMap::new(),
        children: Vec::new(),
        seen: HashSet::new(),
        directories: true,
    };
    let (bytes, root) = packer.entries(entries, 0)?;
    packer.blobs.insert(root.clone(), Blob::Bytes(bytes));
    Ok((root, packer.blobs))
}

/// Writes the input root `root` into `dest`, which must not exist: each
/// Directory message read from the CAS by its digest, then every file.
/// Returns the bytes fetched.
pub fn unpack_root(
    client: &Client,
    root: &Digest,
    dest: &Path,
    batch_limit: u64,
) -> Result<u64, RemoteError> {
    let mut files = Vec::new();
    let mut fetched = 0u64;
    let mut queue = vec![(root.clone(), dest.to_path_buf(), 0usize)];
    while let Some((digest, at, depth)) = queue.pop() {
        let bytes = client.read_blob(&digest)?;
        fetched += bytes.len() as u64;
        let d = decode_dir(&bytes)?;
        for (sub, path) in lay_out_one(&d, &at, depth, &mut files)? {
            queue.push((sub, path, depth + 1));
        }
    }
    Ok(fetched + fetch_files(client, &files, batch_limit)?)
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} {what}", path.display()),
    )
}

/// A file the tree names, to be fetched.
struct Wanted {
    path: PathBuf,
    digest: Digest,
    executable: bool,
}

/// Writes the tree encoded in `tree` (checked against `digest` by the caller)
/// into `dest`, which must not exist, fetching each file from the CAS.
/// Returns the bytes fetched.
pub fn unpack(
    client: &Client,
    tree: &[u8],
    dest: &Path,
    batch_limit: u64,
) -> Result<u64, RemoteError> {
    let tree = TreeBytes::decode(tree)
        .map_err(|e| RemoteError::Refused(format!("the output tree does not decode: {e}")))?;
    let children: HashMap<Digest, &[u8]> = tree
        .children
        .iter()
        .map(|c| (digest_of(c), c.as_slice()))
        .collect();
    let mut files = Vec::new();
    lay_out(&tree.root, &children, dest, 0, &mut files)?;
    fetch_files(client, &files, batch_limit)
}

fn decode_dir(bytes: &[u8]) -> Result<Directory, RemoteError> {
    Directory::decode(bytes)
        .map_err(|e| RemoteError::Refused(format!("a directory does not decode: {e}")))
}

fn lay_out(
    bytes: &[u8],
    children: &HashMap<Digest, &[u8]>,
    at: &Path,
    depth: usize,
    files: &mut Vec<Wanted>,
) -> Result<(), RemoteError> {
    let d = decode_dir(bytes)?;
    for (digest, sub) in lay_out_one(&d, at, depth, files)? {
        let child = children.get(&digest).ok_or_else(|| {
            RemoteError::Refused(format!("the output tree lacks directory {}", digest.hash))
        })?;
        lay_out(child, children, &sub, depth + 1, files)?;
    }
    Ok(())
}

/// Makes directory `at` with its symlinks, notes its files, and returns its
/// subdirectories to lay out.
fn lay_out_one(
    d: &Directory,
    at: &Path,
    depth: usize,
    files: &mut Vec<Wanted>,
) -> Result<Vec<(Digest, PathBuf)>, RemoteError> {
    if depth > MAX_DEPTH {
        return Err(RemoteError::Refused("the tree is nested too deeply".into()));
    }
    fs::create_dir(at)
        .map_err(|e| RemoteError::Refused(format!("cannot create {}: {e}", at.display())))?;
    let mut subs = Vec::new();
    for f in &d.files {
        files.push(Wanted {
            path: at.join(safe_name(&f.name)?),
            digest: f.digest.clone().unwrap_or_default(),
            executable: f.is_executable,
        });
    }
    for s in &d.symlinks {
        let path = at.join(safe_name(&s.name)?);
        std::os::unix::fs::symlink(&s.target, &path)
            .map_err(|e| RemoteError::Refused(format!("cannot create {}: {e}", path.display())))?;
    }
    for sub in &d.directories {
        subs.push((
            sub.digest.clone().unwrap_or_default(),
            at.join(safe_name(&sub.name)?),
        ));
    }
    Ok(subs)
}

/// A name must be one path component: a tree cannot write outside itself.
fn safe_name(name: &str) -> Result<&str, RemoteError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(RemoteError::Refused(format!(
            "the tree names an entry {name:?}"
        )));
    }
    Ok(name)
}

/// Fetches every file: small ones in batches, large ones streamed; each blob
/// once however many files share it.
fn fetch_files(client: &Client, files: &[Wanted], batch_limit: u64) -> Result<u64, RemoteError> {
    let mut by_digest: BTreeMap<&Digest, Vec<&Wanted>> = BTreeMap::new();
    for f in files {
        by_digest.entry(&f.digest).or_default().push(f);
    }
    let mut fetched = 0u64;
    let mut batch: Vec<Digest> = Vec::new();
    let mut batch_size = 0u64;
    let write_all = |data: &[u8], to: &[&Wanted]| -> Result<(), RemoteError> {
        for w in to {
            fs::write(&w.path, data).map_err(|e| {
                RemoteError::Refused(format!("cannot write {}: {e}", w.path.display()))
            })?;
        }
        Ok(())
    };
    let flush = |batch: &mut Vec<Digest>| -> Result<(), RemoteError> {
        for (d, data) in client.batch_read(batch)? {
            write_all(&data, &by_digest[&d])?;
        }
        batch.clear();
        Ok(())
    };
    for (digest, to) in &by_digest {
        let size = u64::try_from(digest.size_bytes)
            .map_err(|_| RemoteError::Refused("a negative blob size".into()))?;
        if size == 0 {
            write_all(&[], to)?;
            continue;
        }
        fetched += size;
        if size + 1024 > batch_limit {
            client.read_to_file(digest, &to[0].path)?;
            for w in &to[1..] {
                fs::copy(&to[0].path, &w.path).map_err(|e| {
                    RemoteError::Refused(format!("cannot write {}: {e}", w.path.display()))
                })?;
            }
            continue;
        }
        if batch_size + size + 1024 > batch_limit {
            flush(&mut batch)?;
            batch_size = 0;
        }
        batch.push((*digest).clone());
        batch_size += size + 1024;
    }
    if !batch.is_empty() {
        flush(&mut batch)?;
    }
    for f in files {
        let mode = if f.executable { 0o755 } else { 0o644 };
        fs::set_permissions(&f.path, fs::Permissions::from_mode(mode)).map_err(|e| {
            RemoteError::Refused(format!("cannot set the mode of {}: {e}", f.path.display()))
        })?;
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root Directory of a packed tree, and its digest.
    fn root_of(packed: &Packed) -> Digest {
        let tree = TreeBytes::decode(packed.tree.as_slice()).unwrap();
        digest_of(&tree.root)
    }

    #[test]
    fn an_input_root_put_together_is_the_directory_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("src")).unwrap();
        fs::write(d.join("src/main.c"), "int main;\n").unwrap();
        fs::write(d.join("step.json"), "{}").unwrap();
        std::os::unix::fs::symlink("main.c", d.join("src/link")).unwrap();
        fs::create_dir(d.join("inputs")).unwrap();
        let whole = pack(d, true).unwrap();
        // Given out of order, from the same files and bytes.
        let (root, blobs) = pack_root(vec![
            ("step.json".into(), Entry::Bytes(b"{}".to_vec())),
            ("inputs".into(), Entry::Dir(Vec::new())),
            ("src".into(), Entry::Path(d.join("src"))),
        ])
        .unwrap();
        assert_eq!(root, root_of(&whole));
        // The same blobs: the files, and every Directory (the root's included).
        assert_eq!(
            blobs.keys().collect::<Vec<_>>(),
            whole.blobs.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn names_that_leave_the_tree_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_name("a.b").is_ok());
    }
}
