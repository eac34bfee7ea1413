//! The typed recipe: what a file declares, before imports and the matrix are applied.

use std::fmt;

use super::source::{Loc, Spanned};
use super::template::Template;
use crate::hash::SourceHash;
pub use crate::names::NodeName;

/// Everything one recipe file declares.
#[derive(Debug, Default)]
pub struct RecipeFile {
    pub imports: Vec<Spanned<String>>,
    pub axes: Vec<Axis>,
    pub nodes: Vec<Node>,
    /// `default "release:keepalived"`: what `bake build FILE` builds with no targets.
    pub defaults: Vec<Spanned<String>>,
}

/// A matrix axis: `version "2.3.4" "2.3.3"`.
#[derive(Debug)]
pub struct Axis {
    pub name: Spanned<String>,
    pub values: Vec<Spanned<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Source,
    Toolchain,
    Build,
    Sysext,
    Release,
    Test,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Toolchain => "toolchain",
            Kind::Build => "build",
            Kind::Sysext => "sysext",
            Kind::Release => "release",
            Kind::Test => "test",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a node uses one of its dependencies.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// A build's `source`: unpacked as its working directory.
    Source,
    /// A build's `toolchain`.
    Toolchain,
    /// A build's or sysext's `input`: its output, by name.
    Input,
    /// A release's `sysext`: every instance, not one.
    Gather,
}

impl Role {
    /// The role's name in key encodings: fixed, whatever the variants are called.
    pub fn tag(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Toolchain => "toolchain",
            Role::Input => "input",
            Role::Gather => "gather",
        }
    }
}

/// A declared node.
#[derive(Debug)]
pub struct Node {
    pub name: Spanned<NodeName>,
    /// The whole node, for "defined here" labels.
    pub loc: Loc,
    pub body: Body,
}

impl Node {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Source(_) => Kind::Source,
            Body::Toolchain(_) => Kind::Toolchain,
            Body::Build(_) => Kind::Build,
            Body::Sysext(_) => Kind::Sysext,
            Body::Release(_) => Kind::Release,
            Body::Test(_) => Kind::Test,
        }
    }
}

#[derive(Debug)]
pub enum Body {
    Source(Source),
    Toolchain(Toolchain),
    Build(Build),
    Sysext(Sysext),
    Release(Release),
    /// A step that passes or fails; its declaration is a build's.
    Test(Build),
}

/// A value that applies only where the axes have the given values
/// (`hash "sha256:..." version="2.3.4"`); no conditions means everywhere.
#[derive(Clone, Debug)]
pub struct Selected<T> {
    pub value: Spanned<T>,
    pub when: Vec<(Spanned<String>, Spanned<String>)>,
}

/// A reference to another node by name, where it was written.
pub type Reference = Spanned<NodeName>;

/// `NAME="value"` environment for a step.
#[derive(Clone, Debug)]
pub struct EnvVar {
    pub name: Spanned<String>,
    pub value: Template,
}

/// A fixed-output download: identified by its hash alone.
#[derive(Debug)]
pub struct Source {
    pub urls: Vec<Template>,
    pub hashes: Vec<Selected<SourceHash>>,
    pub unpack: bool,
    /// The exact size in bytes, where upstream publishes it.
    pub size: Option<u64>,
    pub limits: SourceLimits,
    /// What the SBOM calls its version (`version "{version}"`).
    pub version: Option<Template>,
    /// The SPDX license expression the source is under, as upstream declares it.
    pub license: Option<Spanned<String>>,
}

/// `limits download="1G" unpacked="16G" ratio=200`: how large a source may be,
/// downloaded and unpacked; unset ones take bake's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceLimits {
    pub download: Option<u64>,
    pub unpacked: Option<u64>,
    pub ratio: Option<u64>,
}

/// A C toolchain per target architecture.
#[derive(Debug)]
pub struct Toolchain {
    pub description: Option<String>,
    /// The GNU triple per axis value; exported to steps as `HOST`.
    pub targets: Vec<Selected<String>>,
    /// Directories, relative to the declaring file, put first on PATH.
    pub paths: Vec<Spanned<String>>,
    /// Files and directories, relative to the declaring file, whose bytes are the identity.
    pub identity: Vec<Spanned<String>>,
    pub env: Vec<EnvVar>,
    /// Extra C flags for some instances (`cflags "-mcpu=..." arch="arm64"`), added to CFLAGS.
    pub cflags: Vec<Selected<String>>,
    /// A variable bake points at a persistent, writable directory in the store.
    pub cache: Option<Spanned<String>>,
    /// Files and directories, relative to the declaring file, that steps see
    /// read-only at their own paths (besides `path`).
    pub mounts: Vec<Spanned<String>>,
    /// A shell command that prints the version.
    pub version: Option<String>,
    /// What to run or install when the toolchain is missing.
    pub install: Option<String>,
}

/// A build step: a script run in a sandbox, writing `$out`.
#[derive(Debug)]
pub struct Build {
    pub source: Option<Reference>,
    pub toolchain: Option<Reference>,
    pub inputs: Vec<Reference>,
    pub env: Vec<EnvVar>,
    /// The script; several, with axis conditions, give instances scripts of their own.
    pub scripts: Vec<Selected<Template>>,
    /// Patch files, relative to the declaring file, applied to the source in order
    /// before the script (`patch "fix.patch" version="2.3.3"`).
    pub patches: Vec<Selected<String>>,
    /// Files and directories of the repository the script uses, in `$files`.
    pub files: Vec<Spanned<String>>,
    pub limits: StepLimits,
    /// Runs as root with the host's file system (for steps that make
    /// namespaces, mounts or containers).
    pub privileged: bool,
}

/// `limits time="2h" memory="8G" output="10G"`: what a step may use; unset ones
/// take bake's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepLimits {
    pub time: Option<std::time::Duration>,
    pub memory: Option<u64>,
    pub output: Option<u64>,
}

/// The file system type of a sysext image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImageFormat {
    Squashfs,
    Erofs,
    /// A Discoverable Disk Image: a GPT disk with an erofs root partition and its
    /// dm-verity hash tree (and a signature partition once signed).
    Ddi,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "erofs",
            ImageFormat::Ddi => "ddi",
        }
    }
}

/// A systemd-sysext image built from build outputs and files in the repository.
#[derive(Debug)]
pub struct Sysext {
    pub inputs: Vec<Reference>,
    /// Directories, relative to the declaring file, copied into the image tree.
    pub files: Vec<Spanned<String>>,
    pub version: Template,
    pub arch: Template,
    /// `ID=`: `_any`, or an OS id together with `sysext_level`.
    pub os: Spanned<String>,
    pub sysext_level: Option<Spanned<String>>,
    pub reload_manager: bool,
    pub format: ImageFormat,
}

/// A publishable directory gathering every instance of the named sysext images.
#[derive(Debug)]
pub struct Release {
    pub sysexts: Vec<Reference>,
    pub base_url: Option<Spanned<String>>,
}
