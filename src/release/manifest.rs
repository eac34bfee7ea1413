//! `manifest.json`: what each published image was built from, by key, so that
//! anyone holding the recipe can rebuild it and compare (`bake rebuild-check`)
//! without trusting the publisher's machine.
//!
//! Per image: its file, sha256, sysext instance id, build key and output hash,
//! then the same for every instance of its closure, dependencies first. Images
//! published earlier into the same directory keep their entries.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hash::{BuildKey, OutputHash};
use crate::names::InstanceId;
use crate::recipe::Kind;
use crate::store::write_atomic;

/// Names this layout, for readers to refuse one they do not know.
pub const FORMAT: &str = "bake-release-manifest-v1";
pub const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The bake that wrote it (`bake --version`).
    pub bake: String,
    /// The release instance, e.g. `release:keepalived`.
    pub release: InstanceId,
    /// The recipe's path from the root of its repository.
    pub recipe: String,
    pub images: Vec<ImageEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageEntry {
    pub file: String,
    pub sha256: String,
    #[serde(flatten)]
    pub instance: Built,
    /// Every instance the image was built from, dependencies first.
    pub closure: Vec<Built>,
}

/// One instance as the publisher realised it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    pub id: InstanceId,
    pub kind: String,
    pub build_key: BuildKey,
    /// None for what has no tree in the store (a toolchain on the host).
    pub output: Option<OutputHash>,
}

impl Built {
    pub fn new(id: &InstanceId, kind: Kind, key: BuildKey, output: Option<OutputHash>) -> Built {
        Built {
            id: id.clone(),
            kind: kind.to_string(),
            build_key: key,
            output,
        }
    }
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| format!("not a manifest: {e}"))?;
        if m.format != FORMAT {
            return Err(format!(
                "manifest format `{}` is not {FORMAT}, the one this bake reads",
                m.format
            ));
        }
        // File names come from whoever published: a path would read or write
        // outside the release.
        if let Some(bad) = m
            .images
            .iter()
            .find(|i| i.file.is_empty() || i.file.contains('/') || i.file.starts_with('.'))
        {
            return Err(format!("`{}` is not the file name of an image", bad.file));
        }
        Ok(m)
    }
}

/// Writes `dir/manifest.json` for `release`: `fresh` entries (the images
/// published now), plus the earlier manifest's entries for images still in
/// `dir` that were not published again.
pub fn write(
    dir: &Path,
    release: &InstanceId,
    recipe: &str,
    fresh: Vec<ImageEntry>,
) -> io::Result<()> {
    let path = dir.join(MANIFEST);
    let earlier = match fs::read_to_string(&path) {
        Ok(text) => Manifest::parse(&text).map(|m| m.images).unwrap_or_default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut images = fresh;
    for old in earlier {
        if !images.iter().any(|i| i.file == old.file) && dir.join(&old.file).is_file() {
            images.push(old);
        }
    }
    images.sort_by(|a, b| a.file.cmp(&b.file));
    let manifest = Manifest {
        format: FORMAT.into(),
        bake: env!("CARGO_PKG_VERSION").into(),
        release: release.clone(),
        recipe: recipe.into(),
        images,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
    write_atomic(&path, format!("{text}\n").as_bytes())
}
