//! `bake check`: build again and compare bit for bit with the stored output.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use rayon::prelude::*;

use super::{Realiser, Report};
use crate::derivation::{Identity, Produced, StepError};
use crate::graph::Selection;
use crate::hash::OutputHash;
use crate::recipe::Kind;
use crate::store::hash_tree;

/// One instance built a second time.
pub struct Checked {
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

impl Realiser<'_> {
    /// Rebuilds every wanted build and sysext instance that `built` realised, from
    /// the same inputs, and compares. Errors are per instance.
    pub fn check(
        &self,
        wanted: &Selection,
        built: &Report,
    ) -> Vec<(usize, Result<Checked, StepError>)> {
        let candidates: Vec<usize> = wanted
            .iter()
            .filter(|&i| {
                let inst = self.eval.instance(i);
                inst.spec.identity() == Identity::Output
                    && matches!(inst.kind(), Kind::Build | Kind::Sysext)
            })
            .filter(|i| built.realised.get(i).is_some_and(|r| r.output.is_some()))
            .collect();
        let realised = |d: usize| built.realised.get(&d).cloned();
        let run = |i: usize| -> Result<Checked, StepError> {
            let first = &built.realised[&i];
            let stored = first.output.ok_or_else(|| StepError::Invalid {
                message: format!("{} has no stored output", self.eval.instance(i).id),
                help: "build it first".into(),
            })?;
            let inputs = self.inputs(i, &realised)?;
            let step = self.step(i, first.key, &inputs);
            if !matches!(self.eval.instance(i).spec.produce(&step)?, Produced::Tree) {
                return Err(StepError::Invalid {
                    message: format!("{} produced no tree", self.eval.instance(i).id),
                    help: "only builds and images can be checked".into(),
                });
            }
            let out = step.out()?;
            let rebuilt =
                hash_tree(&out).map_err(|e| StepError::io("cannot hash the rebuild", e))?;
            let mut differing = Vec::new();
            if rebuilt != stored {
                diff(
                    &self.store.object_path(&stored),
                    &out,
                    Path::new(""),
                    &mut differing,
                );
            }
            Ok(Checked {
                stored,
                rebuilt,
                differing,
            })
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.jobs.max(1))
            .build();
        let results: Vec<Result<Checked, StepError>> = match pool {
            Ok(pool) => pool.install(|| candidates.par_iter().map(|&i| run(i)).collect()),
            Err(_) => candidates.iter().map(|&i| run(i)).collect(),
        };
        candidates.into_iter().zip(results).collect()
    }
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
