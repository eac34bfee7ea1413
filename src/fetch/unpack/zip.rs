//! Zip entries, each checked before anything is written; file types come from
//! the Unix mode that Unix zip tools record.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::{Refusal, UnpackError};
use super::tree::Tree;

const TYPE_MASK: u32 = 0o170_000;
const FIFO: u32 = 0o010_000;
const CHAR_DEVICE: u32 = 0o020_000;
const BLOCK_DEVICE: u32 = 0o060_000;
const SYMLINK: u32 = 0o120_000;
const SOCKET: u32 = 0o140_000;

pub(crate) fn unpack(tree: &Tree, file: File) -> Result<(), UnpackError> {
    let corrupt = |entry: Option<&str>, source: io::Error| UnpackError::Corrupt {
        archive: tree.archive.to_path_buf(),
        entry: entry.map(str::to_string),
        source,
    };
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| corrupt(None, io::Error::other(e)))?;
    for index in 0..archive.len() {
        let mut item = archive
            .by_index(index)
            .map_err(|e| corrupt(None, io::Error::other(e)))?;
        let name = item
            .name()
            .map_err(|e| corrupt(None, io::Error::other(e)))?
            .into_owned();
        let mode = item.unix_mode();
        match mode.map(|m| m & TYPE_MASK) {
            Some(CHAR_DEVICE | BLOCK_DEVICE) => return Err(tree.refuse(&name, Refusal::Device)),
            Some(FIFO) => return Err(tree.refuse(&name, Refusal::Fifo)),
            Some(SOCKET) => {
                return Err(tree.refuse(
                    &name,
                    Refusal::Unsupported {
                        kind: "socket".into(),
                    },
                ))
            }
            _ => {}
        }
        let Some(rel) = tree.relative(&name, Path::new(&name))? else {
            continue;
        };
        if item.is_dir() {
            tree.dir(&name, &rel)?;
        } else if mode.is_some_and(|m| m & TYPE_MASK == SYMLINK) {
            let mut target = Vec::new();
            item.read_to_end(&mut target)
                .map_err(|e| corrupt(Some(&name), e))?;
            tree.symlink(&name, &rel, Path::new(OsStr::from_bytes(&target)))?;
        } else {
            tree.file(&name, &rel, &mut item, mode.unwrap_or(0o644))?;
        }
    }
    Ok(())
}
