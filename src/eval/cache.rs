//! The evaluation cache: an evaluated graph kept in the store in a compact
//! binary form (postcard), so an unchanged recipe is not parsed at all.
//!
//! An entry holds, before the graph, what it was made from: bake's version and
//! the identity of its executable (a rebuilt bake may evaluate differently), and
//! every path the evaluation looked at (each recipe and imported file, every
//! toolchain identity, `files` and `patch` path it fingerprinted, every `.git`
//! it probed for) with its device, inode, mode, size, mtime and ctime. It is
//! used only when each of those paths still looks exactly so; a change to any,
//! within the same second too, evaluates afresh. Paths changed less than a
//! timestamp tick before the evaluation began are not trusted to show a later
//! change, so such an evaluation is not kept (git's racily clean index entries).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Dep, Evaluation, Instance};
use crate::fingerprint::{running_exe, FileState, Seen};
use crate::graph::Dag;

/// Change whenever what an entry holds changes.
const FORMAT: &str = "bake-eval-cache-v1";

/// What an entry was made from; read and checked before the graph is.
#[derive(Serialize, Deserialize, PartialEq)]
struct Header {
    format: String,
    version: String,
    exe: Option<FileState>,
    seen: Vec<Seen>,
}

#[derive(Serialize)]
struct Body<'a> {
    graph: &'a Dag<Instance, Dep>,
    defaults: &'a [String],
}

#[derive(Deserialize)]
struct OwnedBody {
    graph: Dag<Instance, Dep>,
    defaults: Vec<String>,
}

/// Where evaluations of the recipe at `canonical` are kept in `dir`.
fn entry(dir: &Path, canonical: &Path) -> PathBuf {
    let name = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
    dir.join(&name[..32])
}

/// Where what the store holds for the recipe's instances is remembered.
pub fn known_keys(dir: &Path, canonical: &Path) -> PathBuf {
    entry(dir, canonical).with_extension("keys")
}

/// The evaluation of the recipe at `canonical` (shown as `display`), if one is
/// kept and nothing it was made from has changed.
pub fn load(dir: &Path, canonical: &Path, display: &str) -> Option<Evaluation> {
    let bytes = std::fs::read(entry(dir, canonical)).ok()?;
    let (header, rest) = postcard::take_from_bytes::<Header>(&bytes).ok()?;
    let current = header.format == FORMAT
        && header.version == env!("CARGO_PKG_VERSION")
        && header.exe.is_some()
        && header.exe == running_exe()
        && header.seen.iter().all(Seen::unchanged);
    if !current {
        return None;
    }
    let body: OwnedBody = postcard::from_bytes(rest).ok()?;
    Some(Evaluation {
        top_file: display.to_string(),
        graph: body.graph,
        defaults: body.defaults,
        cached: true,
        known_keys: Some(known_keys(dir, canonical)),
    })
}

/// Keeps `eval`, made from what `seen` lists, unless something in it changed
/// too shortly before `started` to tell a later change by its times. Failing
/// to keep it only costs the next run an evaluation.
pub fn save(dir: &Path, canonical: &Path, eval: &Evaluation, seen: &[Seen], started: SystemTime) {
    let path = entry(dir, canonical);
    if seen
        .iter()
        .any(|s| s.state.is_some_and(|st| st.racy(started)))
    {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let header = Header {
        format: FORMAT.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        exe: running_exe(),
        seen: seen.to_vec(),
    };
    let body = Body {
        graph: &eval.graph,
        defaults: &eval.defaults,
    };
    let Ok(bytes) = postcard::to_stdvec(&header).and_then(|h| postcard::to_extend(&body, h)) else {
        return;
    };
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = crate::store::write_atomic(&path, &bytes);
    }
}
