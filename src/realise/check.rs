//! `bake check`: build again, under variation, and compare file by file with
//! the stored output.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::{Realiser, Report};
use crate::compare::{self, FileDiff};
use crate::derivation::{Identity, Produced, StepError};
use crate::graph::Selection;
use crate::hash::OutputHash;
use crate::recipe::Kind;
use crate::variation::Variations;

/// One instance built a second time.
pub struct Checked {
    pub stored: OutputHash,
    pub rebuilt: OutputHash,
    /// Both trees, in the store until gc.
    pub stored_path: PathBuf,
    pub rebuilt_path: PathBuf,
    /// Paths (relative to the output) whose type or bytes differ, or that only one side has.
    pub differing: Vec<FileDiff>,
}

impl Checked {
    pub fn reproducible(&self) -> bool {
        self.stored == self.rebuilt
    }
}

/// What the two sides of a check are called.
pub const SIDES: compare::Names = ("the build", "the rebuild");

impl Realiser<'_> {
    /// Rebuilds every wanted build and image instance that `built` realised,
    /// from the same inputs, under `variations`, and compares. Errors are per
    /// instance.
    pub fn check(
        &self,
        wanted: &Selection,
        built: &Report,
        variations: &Variations,
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
        let started = AtomicUsize::new(0);
        let progress = crate::progress::Progress::new(candidates.len());
        let run = |i: usize| -> Result<Checked, StepError> {
            let id = &self.eval.instance(i).id;
            let first = &built.realised[&i];
            let stored = first.output.ok_or_else(|| StepError::Invalid {
                message: format!("{id} has no stored output"),
                help: "build it first".into(),
            })?;
            let inputs = self.inputs(i, &realised)?;
            let n = started.fetch_add(1, Ordering::Relaxed);
            let step = self
                .step(i, first.key, &inputs)
                .rebuilding(variations.any().then(|| variations.rebuild(n)));
            progress.started(id.as_str());
            let began = std::time::Instant::now();
            if !matches!(self.eval.instance(i).spec.produce(&step)?, Produced::Tree) {
                return Err(StepError::Invalid {
                    message: format!("{id} produced no tree"),
                    help: "only builds and images can be checked".into(),
                });
            }
            let rebuilt = self
                .store
                .keep(&step.out()?)
                .map_err(|e| StepError::io("cannot keep the rebuild", e))?;
            let (stored_path, rebuilt_path) = (
                self.store.object_path(&stored),
                self.store.object_path(&rebuilt),
            );
            let differing = if rebuilt == stored {
                Vec::new()
            } else {
                compare::trees(&stored_path, &rebuilt_path, SIDES)
            };
            let what = if rebuilt == stored { "same" } else { "differs" };
            progress.finished(id.as_str(), what, began.elapsed());
            Ok(Checked {
                stored,
                rebuilt,
                stored_path,
                rebuilt_path,
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
        progress.finish();
        candidates.into_iter().zip(results).collect()
    }
}
