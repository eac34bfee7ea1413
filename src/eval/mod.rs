//! Stage 2: imports, names and axes, matrix expansion and eval keys. The result
//! is the DAG of every derivation instance, known without building anything.

mod cache;
mod expand;
mod load;
mod resolve;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::derivation::Spec;
use crate::fingerprint::StatCache;
use crate::graph::Dag;
use crate::hash::EvalKey;
use crate::names::{AxisName, AxisValue, InstanceId, NodeName};
use crate::recipe::{did_you_mean, Files, Kind, RecipeError, Report, Role};

/// One derivation: a node instantiated for one combination of its axes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub name: NodeName,
    /// The axes this instance varies over, in matrix order, with their values.
    pub axes: Vec<(AxisName, AxisValue)>,
    pub key: EvalKey,
    pub spec: Spec,
}

impl Instance {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
}

/// How an instance uses one of its dependencies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dep {
    pub role: Role,
    /// The dependency's node name (for inputs, the variable it is exported as).
    pub name: NodeName,
}

/// A whole evaluated recipe.
pub struct Evaluation {
    /// The recipe file the evaluation started from, as the user named it.
    top_file: String,
    /// Every instance, each after all of its dependencies.
    pub graph: Dag<Instance, Dep>,
    /// What to build when no target is named (the recipe's `default`).
    pub defaults: Vec<String>,
    /// Taken from the evaluation cache rather than evaluated.
    pub cached: bool,
    /// Where what the store holds for these instances is remembered.
    known_keys: Option<PathBuf>,
}

impl Evaluation {
    pub fn instance(&self, i: usize) -> &Instance {
        self.graph.node(i)
    }

    /// The recipe file the evaluation started from, as the user named it.
    pub fn top_file(&self) -> &str {
        &self.top_file
    }

    /// The file of [`crate::store::KnownKeys`] for this recipe, if it has one.
    pub fn known_keys(&self) -> Option<&Path> {
        self.known_keys.as_deref()
    }

    pub fn find(&self, id: &str) -> Option<usize> {
        self.graph
            .nodes()
            .find(|(_, inst)| inst.id == *id)
            .map(|(i, _)| i)
    }

    /// The instances TARGETS name: a build name (every instance of it), another
    /// kind's name when no build has it, or an instance id. None means all.
    pub fn select(&self, targets: &[String]) -> Result<Vec<usize>, String> {
        if targets.is_empty() {
            return Ok((0..self.graph.len()).collect());
        }
        let mut out = Vec::new();
        for t in targets {
            let of_kind = |builds: bool| -> Vec<usize> {
                self.graph
                    .nodes()
                    .filter(|(_, i)| i.name == *t.as_str() && (i.kind() == Kind::Build) == builds)
                    .map(|(n, _)| n)
                    .collect()
            };
            let by_id: Vec<usize> = self.find(t).into_iter().collect();
            match [by_id, of_kind(true), of_kind(false)]
                .into_iter()
                .find(|v| !v.is_empty())
            {
                Some(v) => out.extend(v),
                None => {
                    let names = self.graph.nodes().map(|(_, i)| i.id.as_str());
                    let hint = did_you_mean(t, names)
                        .map_or(String::new(), |n| format!("; did you mean `{n}`?"));
                    return Err(format!("no target `{t}`{hint}"));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// Settings that do not change what a recipe means.
#[derive(Default)]
pub struct Options {
    /// Where to keep the stat cache of fingerprinted files (the store), if anywhere.
    pub stat_cache: Option<PathBuf>,
    /// Where to keep evaluated graphs (the store), if anywhere.
    pub eval_cache: Option<PathBuf>,
}

/// Loads, checks and expands the recipe at `path`, or takes its evaluation from
/// the evaluation cache when nothing it was made from has changed.
pub fn evaluate(path: &Path, options: &Options) -> Result<Evaluation, Box<Report>> {
    let started = SystemTime::now();
    let display = path.display().to_string();
    let cached = options.eval_cache.as_deref().zip(path.canonicalize().ok());
    if let Some((dir, canonical)) = &cached {
        if let Some(eval) = cache::load(dir, canonical, &display) {
            return Ok(eval);
        }
    }
    let mut cache = options
        .stat_cache
        .clone()
        .map(StatCache::load)
        .unwrap_or_default();
    let mut files = Files::default();
    let loaded = match load::load(path, &mut files, &mut cache) {
        Ok(l) => l,
        Err(e) => return Err(Box::new(e.render(&files))),
    };
    let result = resolve::resolve(&loaded.axes, &loaded.nodes)
        .and_then(|r| expand::expand(&loaded.axes, &loaded.nodes, &r, &files, &mut cache));
    let graph = match result {
        Ok(g) => g,
        Err(e) => return Err(Box::new(e.render(&files))),
    };
    // The cache only saves work; a store that cannot be written to costs a rehash.
    let _ = cache.save();
    let mut eval = Evaluation {
        top_file: display,
        graph,
        defaults: Vec::new(),
        cached: false,
        known_keys: cached
            .as_ref()
            .map(|(dir, canonical)| cache::known_keys(dir, canonical)),
    };
    for d in &loaded.defaults {
        if let Err(why) = eval.select(std::slice::from_ref(&d.value)) {
            let err = RecipeError::at(d.loc, why, "not a target of this recipe");
            return Err(Box::new(err.render(&files)));
        }
        eval.defaults.push(d.value.clone());
    }
    if let (Some((dir, canonical)), Some(seen)) = (&cached, cache.seen()) {
        cache::save(dir, canonical, &eval, seen, started);
    }
    Ok(eval)
}
