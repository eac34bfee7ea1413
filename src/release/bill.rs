//! What an image was made from, as the build graph says: the sources, the
//! toolchains and the builds in its closure, how they depend on each other, and
//! the files the image holds. The SBOM and the provenance are both written from
//! this, so they cannot disagree.

use crate::hash::{Digest, SourceHash};
use crate::sysext::FileEntry;

/// One thing an image was built from.
#[derive(Clone, Debug)]
pub struct Component {
    /// The instance id, unique in the graph (`source:keepalived@2.3.4`).
    pub id: String,
    pub kind: ComponentKind,
    /// The node's name (`keepalived`).
    pub name: String,
    pub version: Option<String>,
    /// Where a source is downloaded from (its first http, https or file URL).
    pub url: Option<String>,
    /// The file name a source is published under.
    pub file_name: Option<String>,
    /// A source's declared hash.
    pub hash: Option<SourceHash>,
    /// The SPDX license expression a source declares.
    pub license: Option<String>,
    /// A build's output tree hash or a toolchain's identity (blake3).
    pub digest: Option<Digest>,
    /// A toolchain's target triple.
    pub target: Option<String>,
    /// What it was made with: indices into [`Bill::components`].
    pub uses: Vec<Use>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentKind {
    Source,
    Toolchain,
    Build,
}

/// How a build used another component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    pub component: usize,
    pub how: UseKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UseKind {
    /// Unpacked as its working directory.
    Source,
    /// Compiled it.
    Toolchain,
    /// Its output was an input.
    Input,
}

/// An image and everything it was built from.
#[derive(Clone, Debug)]
pub struct Bill {
    /// The image's file name in the release.
    pub image: String,
    /// The sysext's node name and version.
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The sysext instance id and its build key.
    pub instance: String,
    pub build_key: String,
    /// The recipe file as given to bake.
    pub recipe: String,
    pub components: Vec<Component>,
    /// The image's own inputs: indices into `components`.
    pub inputs: Vec<usize>,
    pub files: Vec<FileEntry>,
}
