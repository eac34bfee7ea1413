//! Realising an evaluation: each wanted instance looked up in the store by its
//! build key, or fetched, unpacked and run in the sandbox, on the scheduler.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use crate::eval::{derivation_key, Dep, Evaluation, Instance, Role, Spec};
use crate::hash::{BuildKey, Digest, OutputHash};
use crate::progress::Progress;
use crate::recipe::Kind;
use crate::schedule::{self, Outcome};
use crate::store::Store;
use crate::why::Snapshot;

/// How to build, beyond what the recipe says.
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    pub fetch: crate::fetch::FetchOptions,
}

/// What an instance resolved to.
#[derive(Clone, Debug)]
pub struct Realised {
    pub key: BuildKey,
    /// The output tree (builds, sysexts, releases) or file (sources).
    pub path: Option<PathBuf>,
    pub output: Option<OutputHash>,
    /// Whether this run did the work (built, or fetched).
    pub built: bool,
}

/// The end of a build, per instance.
pub struct Report {
    pub built: Vec<usize>,
    pub cached: Vec<usize>,
    pub failed: Vec<(usize, String)>,
    /// Not run: a dependency failed, or the build stopped.
    pub skipped: Vec<usize>,
    pub realised: BTreeMap<usize, Realised>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// The instances `targets` need, themselves included, as a mask over the evaluation.
pub fn closure(eval: &Evaluation, targets: &[usize]) -> Vec<bool> {
    let mut wanted = vec![false; eval.instances.len()];
    let mut stack = targets.to_vec();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut wanted[i], true) {
            stack.extend(eval.instances[i].deps.iter().map(|d| d.instance));
        }
    }
    wanted
}

/// The build key of `inst` given the realised state of its dependencies: builds
/// count by their output hash (so identical bytes stop a rebuild from spreading),
/// sources and toolchains by their eval key (their declared identity).
pub fn build_key(
    eval: &Evaluation,
    inst: &Instance,
    output_of: impl Fn(usize) -> Option<OutputHash>,
) -> Option<BuildKey> {
    let mut missing = false;
    let key = derivation_key(&inst.name.0, &inst.spec, &inst.deps, |d: &Dep| {
        let dep = &eval.instances[d.instance];
        match dep.kind {
            Kind::Source | Kind::Toolchain => dep.key.0,
            Kind::Build | Kind::Sysext | Kind::Release => match output_of(d.instance) {
                Some(o) => o.0,
                None => {
                    missing = true;
                    Digest([0; 32])
                }
            },
        }
    });
    (!missing).then_some(BuildKey(key))
}

/// What `why` compares: the instance as it is now, given its dependencies' outputs.
pub fn snapshot(
    eval: &Evaluation,
    inst: &Instance,
    output_of: impl Fn(usize) -> Option<OutputHash>,
) -> Snapshot {
    let mut s = Snapshot::default();
    for d in &inst.deps {
        let dep = &eval.instances[d.instance];
        match d.role {
            Role::Source => s.source = source_hash(dep),
            Role::Toolchain => s.toolchain = Some(dep.key.to_string()),
            Role::Input | Role::Gather => {
                let name = if d.role == Role::Gather {
                    dep.id.0.clone()
                } else {
                    d.name.clone()
                };
                let value = match dep.kind {
                    Kind::Source | Kind::Toolchain => Some(dep.key.to_string()),
                    _ => output_of(d.instance).map(|o| o.to_string()),
                };
                s.inputs
                    .insert(name, value.unwrap_or_else(|| "(not built yet)".to_string()));
            }
        }
    }
    match &inst.spec {
        Spec::Build(b) => {
            s.script = b.script.clone();
            s.env = b.env.iter().cloned().collect();
        }
        Spec::Sysext(x) => {
            s.other.insert("files".into(), x.files_digest.to_string());
            s.other.insert("version".into(), x.version.clone());
            s.other.insert("arch".into(), x.arch.clone());
            s.other.insert("os".into(), x.os.clone());
            s.other.insert("format".into(), x.format.name().into());
        }
        Spec::Release(r) => {
            s.other
                .insert("base-url".into(), r.base_url.clone().unwrap_or_default());
        }
        Spec::Source(_) | Spec::Toolchain(_) => {}
    }
    s
}

fn source_hash(dep: &Instance) -> Option<String> {
    match &dep.spec {
        Spec::Source(s) => Some(s.hash.to_string()),
        _ => None,
    }
}

/// Builds every instance `wanted` marks (closed under dependencies).
pub fn build(eval: &Evaluation, store: &Store, wanted: &[bool], options: &Options) -> Report {
    // What the store already has is settled in one pass, in dependency order, so
    // a no-op build never touches the scheduler.
    let mut settled: Vec<Option<Realised>> = vec![None; eval.instances.len()];
    let mut pending = wanted.to_vec();
    for (i, inst) in eval.instances.iter().enumerate() {
        if wanted[i] {
            let known = |d: usize| settled[d].as_ref().and_then(|r: &Realised| r.output);
            if let Some(r) = crate::step::already_there(eval, inst, store, known) {
                settled[i] = Some(r);
                pending[i] = false;
            }
        }
    }
    let deps: Vec<Vec<usize>> = eval
        .instances
        .iter()
        .map(|i| {
            i.deps
                .iter()
                .map(|d| d.instance)
                .filter(|d| pending[*d])
                .collect()
        })
        .collect();
    let state: Mutex<Vec<Option<Realised>>> = Mutex::new(settled);
    let total = pending.iter().filter(|w| **w).count();
    let progress = Progress::new(total);
    let results = schedule::run(&deps, &pending, options.jobs, options.keep_going, |i| {
        let inst = &eval.instances[i];
        let realised = |d: usize| {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(d)
                .cloned()
                .flatten()
        };
        let started = Instant::now();
        let result = crate::step::realise(eval, inst, store, options, &progress, &realised);
        let what = match &result {
            Ok(r) if r.built => "built",
            Ok(_) => "cached",
            Err(_) => "failed",
        };
        if what != "cached" {
            progress.finished(&inst.id.0, what, started.elapsed());
        }
        if let Ok(r) = &result {
            state.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r.clone());
        }
        result
    });
    progress.finish();
    let mut report = Report {
        built: Vec::new(),
        cached: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        realised: BTreeMap::new(),
    };
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            report
                .failed
                .push((0, format!("cannot start the worker pool: {e}")));
            return report;
        }
    };
    let settled = state.into_inner().unwrap_or_else(|e| e.into_inner());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            None if wanted[i] => {
                if let Some(r) = settled[i].clone() {
                    report.cached.push(i);
                    report.realised.insert(i, r);
                }
            }
            None => {}
            Some(Outcome::Done(r)) => {
                if r.built {
                    report.built.push(i);
                } else {
                    report.cached.push(i);
                }
                report.realised.insert(i, r);
            }
            Some(Outcome::Failed(e)) => report.failed.push((i, e)),
            Some(Outcome::DependencyFailed | Outcome::NotStarted) => report.skipped.push(i),
        }
    }
    report
}
