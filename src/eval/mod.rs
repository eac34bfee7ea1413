//! Stage 2: imports, matrix expansion and eval keys. The result is every
//! derivation instance in dependency order, known without building anything.

mod expand;
mod key;
mod load;
mod resolve;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::fingerprint::StatCache;
use crate::hash::{Digest, EvalKey, SourceHash};
use crate::recipe::{Files, ImageFormat, Kind, Node, NodeName, Report};

pub use key::derivation_key;
pub use resolve::Role;

/// `NAME` or `NAME@v1/v2`: one instance of a node for one combination of its axes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One dependency of an instance.
#[derive(Clone, Debug)]
pub struct Dep {
    /// Index into [`Evaluation::instances`].
    pub instance: usize,
    pub role: Role,
    /// The dependency's node name (for inputs, the variable it is exported as).
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub urls: Vec<String>,
    pub hash: SourceHash,
    pub unpack: bool,
}

#[derive(Clone, Debug)]
pub struct ToolchainSpec {
    /// The GNU triple, exported as `HOST`.
    pub target: String,
    pub paths: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub cache: Option<String>,
    /// Fingerprint of the identity files.
    pub identity: Digest,
    /// Identity files that do not exist: the toolchain is not installed.
    pub missing: Vec<PathBuf>,
    pub version: Option<String>,
    pub install: Option<String>,
}

#[derive(Clone, Debug)]
pub struct BuildSpec {
    pub script: String,
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct SysextSpec {
    pub files: Vec<PathBuf>,
    pub files_digest: Digest,
    pub version: String,
    pub arch: String,
    pub os: String,
    pub sysext_level: Option<String>,
    pub reload_manager: bool,
    pub format: ImageFormat,
}

#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    pub base_url: Option<String>,
}

/// What an instance is, with every placeholder filled in.
#[derive(Clone, Debug)]
pub enum Spec {
    Source(SourceSpec),
    Toolchain(ToolchainSpec),
    Build(BuildSpec),
    Sysext(SysextSpec),
    Release(ReleaseSpec),
}

/// One derivation: a node instantiated for one combination of its axes.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: InstanceId,
    /// Index into [`Evaluation::nodes`].
    pub node: usize,
    pub name: NodeName,
    pub kind: Kind,
    /// The axes this instance varies over, in matrix order, with their values.
    pub axes: Vec<(String, String)>,
    pub deps: Vec<Dep>,
    pub key: EvalKey,
    pub spec: Spec,
}

/// A whole evaluated recipe.
pub struct Evaluation {
    pub files: Files,
    pub nodes: Vec<Node>,
    /// The matrix: axis names and values, in declaration order.
    pub axes: Vec<(String, Vec<String>)>,
    /// Every instance, each after all of its dependencies.
    pub instances: Vec<Instance>,
}

impl Evaluation {
    pub fn find(&self, id: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.id.0 == id)
    }
}

/// Settings that do not change what a recipe means.
#[derive(Default)]
pub struct Options {
    /// Where to keep the stat cache of fingerprinted files (the store), if anywhere.
    pub stat_cache: Option<PathBuf>,
}

/// Loads, checks and expands the recipe at `path`.
pub fn evaluate(path: &Path, options: &Options) -> Result<Evaluation, Box<Report>> {
    let mut files = Files::default();
    let loaded = match load::load(path, &mut files) {
        Ok(l) => l,
        Err(e) => return Err(Box::new(e.render(&files))),
    };
    let mut cache = options
        .stat_cache
        .clone()
        .map(StatCache::load)
        .unwrap_or_default();
    let result = resolve::resolve(&loaded.axes, &loaded.nodes)
        .and_then(|r| expand::expand(&loaded.axes, &loaded.nodes, &r, &files, &mut cache));
    let instances = match result {
        Ok(i) => i,
        Err(e) => return Err(Box::new(e.render(&files))),
    };
    // The cache only saves work; a store that cannot be written to costs a rehash.
    let _ = cache.save();
    let axes = loaded
        .axes
        .iter()
        .map(|a| {
            (
                a.name.value.clone(),
                a.values.iter().map(|v| v.value.clone()).collect(),
            )
        })
        .collect();
    Ok(Evaluation {
        files,
        nodes: loaded.nodes,
        axes,
        instances,
    })
}
