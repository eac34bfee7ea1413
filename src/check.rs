//! `bake check`: build again and compare bit for bit with the stored output.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use rayon::prelude::*;

use crate::build::{Options, Report};
use crate::eval::Evaluation;
use crate::hash::OutputHash;
use crate::recipe::Kind;
use crate::step::produce;
use crate::store::{hash_tree, Store};

/// One instance built a second time.
pub struct Checked {
    pub instance: usize,
    pub stored: OutputHash,
    pub rebuilt: OutputHash,
    /// Paths (relative to the output) whose type or bytes differ, or that only one side has.
    pub differing: Vec<String>,
}

impl Checked {
    pub fn reproducible(&self) -> bool {
        self.stored == self.rebuilt
    }
}

/// Rebuilds every wanted build and sysext instance that `built` realised, from the
/// same inputs, and compares. Errors are per instance.
pub fn check(
    eval: &Evaluation,
    store: &Store,
    wanted: &[bool],
    built: &Report,
    options: &Options,
) -> Vec<(usize, Result<Checked, String>)> {
    let candidates: Vec<usize> = (0..eval.instances.len())
        .filter(|&i| wanted[i] && matches!(eval.instances[i].kind, Kind::Build | Kind::Sysext))
        .filter(|i| built.realised.get(i).is_some_and(|r| r.output.is_some()))
        .collect();
    let realised = |d: usize| built.realised.get(&d).cloned();
    let run = |i: usize| -> Result<Checked, String> {
        let inst = &eval.instances[i];
        let first = &built.realised[&i];
        let stored = first.output.ok_or("no stored output")?;
        let (_work, out) = produce(eval, inst, store, &first.key, options, &realised)?;
        let rebuilt = hash_tree(&out).map_err(|e| format!("{}: {e}", inst.id))?;
        let differing = if rebuilt == stored {
            Vec::new()
        } else {
            let mut d = Vec::new();
            diff(&store.object_path(&stored), &out, Path::new(""), &mut d);
            d
        };
        Ok(Checked {
            instance: i,
            stored,
            rebuilt,
            differing,
        })
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build();
    let results: Vec<Result<Checked, String>> = match pool {
        Ok(pool) => pool.install(|| candidates.par_iter().map(|&i| run(i)).collect()),
        Err(_) => candidates.iter().map(|&i| run(i)).collect(),
    };
    candidates.into_iter().zip(results).collect()
}

/// Collects the paths under `rel` where trees `a` and `b` differ.
fn diff(a: &Path, b: &Path, rel: &Path, out: &mut Vec<String>) {
    let names = |p: &Path| -> BTreeSet<std::ffi::OsString> {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let all: BTreeSet<_> = names(&a.join(rel))
        .union(&names(&b.join(rel)))
        .cloned()
        .collect();
    for name in all {
        let r = rel.join(&name);
        let (pa, pb) = (a.join(&r), b.join(&r));
        let (ma, mb) = (fs::symlink_metadata(&pa), fs::symlink_metadata(&pb));
        match (ma, mb) {
            (Ok(ma), Ok(mb)) if ma.is_dir() && mb.is_dir() => diff(a, b, &r, out),
            (Ok(ma), Ok(mb)) if ma.file_type() == mb.file_type() => {
                let same = if ma.file_type().is_symlink() {
                    fs::read_link(&pa).ok() == fs::read_link(&pb).ok()
                } else {
                    fs::read(&pa).ok() == fs::read(&pb).ok()
                };
                if !same {
                    out.push(r.display().to_string());
                }
            }
            _ => out.push(r.display().to_string()),
        }
    }
}
