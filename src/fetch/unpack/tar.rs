//! Tar entries, each checked before anything is written.

use std::io::{self, Read};

use tar::EntryType;

use super::error::{Refusal, UnpackError};
use super::tree::Tree;

pub(crate) fn unpack(tree: &Tree, stream: Box<dyn Read>) -> Result<(), UnpackError> {
    let corrupt = |entry: Option<&str>, source: io::Error| UnpackError::Corrupt {
        archive: tree.archive.to_path_buf(),
        entry: entry.map(str::to_string),
        source,
    };
    let mut archive = tar::Archive::new(stream);
    for item in archive.entries().map_err(|e| corrupt(None, e))? {
        let mut entry = item.map_err(|e| corrupt(None, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        match kind {
            // Metadata for other entries, already applied by the tar crate.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            EntryType::Char | EntryType::Block => return Err(tree.refuse(&name, Refusal::Device)),
            EntryType::Fifo => return Err(tree.refuse(&name, Refusal::Fifo)),
            _ => {}
        }
        let path = entry
            .path()
            .map_err(|e| corrupt(Some(&name), e))?
            .into_owned();
        let Some(rel) = tree.relative(&name, &path)? else {
            continue;
        };
        let link_target = || match entry.link_name() {
            Ok(Some(target)) => Ok(target.into_owned()),
            Ok(None) => Err(corrupt(
                Some(&name),
                io::Error::other("link without a target"),
            )),
            Err(e) => Err(corrupt(Some(&name), e)),
        };
        match kind {
            EntryType::Directory => tree.dir(&name, &rel)?,
            // Pre-POSIX archives mark directories only by a trailing slash.
            EntryType::Regular if name.ends_with('/') => tree.dir(&name, &rel)?,
            EntryType::Symlink => tree.symlink(&name, &rel, &link_target()?)?,
            EntryType::Link => tree.hard_link(&name, &rel, &link_target()?)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mode = entry.header().mode().map_err(|e| corrupt(Some(&name), e))?;
                tree.file(&name, &rel, &mut entry, mode)?
            }
            other => {
                return Err(tree.refuse(
                    &name,
                    Refusal::Unsupported {
                        kind: format!("{other:?}"),
                    },
                ))
            }
        }
    }
    Ok(())
}
