//! Realising an evaluation: the settle pass decides what the store already has
//! (and the remote cache, and what is needed at all); remote hits are fetched
//! first, then the rest is produced on the scheduler, each instance by its
//! kind, with one shared fetcher, and committed to the store.

mod check;
mod settle;
mod trace;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

pub use check::Checked;
pub use settle::{build_key, dep_keys, settle, settle_with_remote, State};
pub use trace::{chrome_trace, critical_path, Span};

use crate::derivation::{
    snapshot, DepKey, Description, Identity, Input, Lookup, Produced, Realised, Reason, Spec, Step,
    StepError,
};
use crate::eval::Evaluation;
use crate::fetch::{FetchError, FetchOptions, Fetcher};
use crate::graph::Selection;
use crate::hash::{BuildKey, OutputHash};
use crate::names::InstanceId;
use crate::progress::Progress;
use crate::remote::Remote;
use crate::schedule::{self, Outcome};
use crate::store::hash_tree;
use crate::store::{KeyLock, Store};

/// How to build, beyond what the recipe says.
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    pub fetch: FetchOptions,
    /// A shared cache to look in before building, and to fill after.
    pub remote: Option<Remote>,
}

/// The end of a build, per instance.
pub struct Report {
    pub built: Vec<usize>,
    pub cached: Vec<usize>,
    /// Taken from the remote cache, not built here: fetched, or (when only
    /// their dependents' keys needed them) known by their recorded output hash.
    pub remote: Vec<usize>,
    /// Left where they are: remote hits nothing here reads, and the sources
    /// and toolchains only such instances use.
    pub unneeded: Vec<usize>,
    pub failed: Vec<(usize, StepError)>,
    /// Stopped while running: bake was interrupted.
    pub interrupted: Vec<usize>,
    /// How long each step that ran here took.
    pub durations: BTreeMap<usize, std::time::Duration>,
    /// Not run: a dependency failed, or the build stopped.
    pub skipped: Vec<usize>,
    /// What each instance resolved to; a remote hit left there has no path.
    pub realised: BTreeMap<usize, Realised>,
    /// Every step the scheduler ran, with when and where.
    pub spans: Vec<Span>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.interrupted.is_empty()
    }
}

/// An evaluation, its store and one fetcher for every source.
pub struct Realiser<'a> {
    eval: &'a Evaluation,
    store: &'a Store,
    fetcher: Fetcher,
    jobs: usize,
    keep_going: bool,
    /// Objects known to hash to their names in this run (checked, or just built).
    intact: Mutex<HashSet<OutputHash>>,
    /// Instances produced again even if the store has them.
    force: Selection,
    /// The instances whose outputs the caller reads; None: every one it wants.
    roots: Option<Selection>,
    remote: Option<Remote>,
    /// Instances this run took from the remote.
    from_remote: Mutex<HashSet<usize>>,
}

/// Where each instance of a build stands, shared by the scheduler's steps.
type Known = Mutex<Vec<Option<Realised>>>;

impl<'a> Realiser<'a> {
    pub fn new(eval: &'a Evaluation, store: &'a Store, options: Options) -> Self {
        Realiser {
            eval,
            store,
            fetcher: Fetcher::new(store.sources(), options.fetch),
            jobs: options.jobs,
            keep_going: options.keep_going,
            intact: Mutex::new(HashSet::new()),
            force: Selection::from_fn(0, |_| false),
            roots: None,
            remote: options.remote,
            from_remote: Mutex::new(HashSet::new()),
        }
    }

    /// The remote this realiser uses, if any.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    fn took_from_remote(&self, i: usize) -> bool {
        self.from_remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&i)
    }

    /// Produces the instances in `force` again, whatever the store has.
    pub fn rerun(mut self, force: Selection) -> Self {
        self.force = force;
        self
    }

    /// Brings into the store only `roots` and what producing instances here
    /// needs: the inputs of a remote hit stay in the remote.
    pub fn wanting(mut self, roots: Selection) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Builds every instance in `wanted` (closed under dependencies).
    pub fn build(&self, wanted: &Selection) -> Report {
        let remote = self.remote.as_ref();
        // What the store (and the remote) already has is settled in one pass,
        // so a no-op build never touches the scheduler.
        let mut settled = settle_with_remote(self.eval, self.store, wanted, remote);
        for i in self.force.iter() {
            settled.force(i);
        }
        let roots = self.roots.as_ref().unwrap_or(wanted);
        settled.mark_needed(self.eval, roots, remote);
        let privileged: Vec<&str> = settled
            .pending()
            .iter()
            .map(|i| self.eval.instance(i))
            .filter(|inst| inst.spec.privileged())
            .map(|inst| inst.id.as_str())
            .collect();
        if !privileged.is_empty() {
            crate::progress::note(&format!(
                "privileged steps (root, the host's file system), as the recipe declares: {}",
                privileged.join(", ")
            ));
        }
        let mut report = Report {
            built: Vec::new(),
            cached: settled.ready().map(|(i, _)| i).collect(),
            remote: Vec::new(),
            unneeded: Vec::new(),
            failed: Vec::new(),
            interrupted: Vec::new(),
            durations: BTreeMap::new(),
            skipped: Vec::new(),
            realised: settled.ready().map(|(i, r)| (i, r.clone())).collect(),
            spans: Vec::new(),
        };
        let mut known: Vec<Option<Realised>> = vec![None; self.eval.graph.len()];
        for (i, r) in &report.realised {
            known[*i] = Some(r.clone());
        }
        // A remote hit counts for its dependents' keys by its recorded output.
        for i in settled.remote() {
            if let Some(State::Remote {
                key,
                output: Some(output),
            }) = settled.state(i)
            {
                known[i] = Some(Realised {
                    key: *key,
                    path: None,
                    output: Some(*output),
                    built: false,
                });
            }
        }
        let state = Mutex::new(known);
        let fetched = |state: &Known, i: usize| {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            state[i].as_ref().is_some_and(|r| r.path.is_some())
        };
        let progress = Progress::new(settled.to_fetch().count() + settled.pending().count());
        // The remote hits needed here first: a copy refused is built here,
        // and its inputs are needed then, so the pass repeats until none is.
        loop {
            let to_fetch = settled.to_fetch();
            let to_fetch = Selection::from_fn(self.eval.graph.len(), |i| {
                to_fetch.contains(i) && !fetched(&state, i)
            });
            if to_fetch.count() == 0 {
                break;
            }
            let refused = self.schedule(&to_fetch, &state, &progress, &mut report, |i, known| {
                self.take(i, known, &progress)
            });
            if refused.is_empty() {
                break;
            }
            for i in refused {
                settled.refuse(i);
            }
            settled.mark_needed(self.eval, roots, remote);
        }
        for i in settled.remote().filter(|&i| !fetched(&state, i)) {
            report.remote.push(i);
            if let Some(r) = state.lock().unwrap_or_else(|e| e.into_inner())[i].clone() {
                report.realised.insert(i, r);
            }
        }
        report.unneeded = settled.unneeded().collect();
        let pending = settled.pending();
        if !report.failed.is_empty() && !self.keep_going {
            // A fetch that failed (not one refused) stops the build as a step would.
            report.skipped.extend(pending.iter());
        } else if pending.count() > 0 {
            self.schedule(&pending, &state, &progress, &mut report, |i, known| {
                // A forced rerun (bake check, test --rerun) runs here whatever
                // the remote has; a refused copy is not asked for again.
                let ask = !self.force.contains(i)
                    && !matches!(settled.state(i), Some(State::Todo(Reason::Refused)));
                self.realise(i, known, &progress, ask).map(Some)
            });
        }
        progress.finish();
        report.cached.sort_unstable();
        report.remote.sort_unstable();
        report
    }

    /// Runs `step` for every instance in `pending` on the scheduler, each after
    /// its inputs, and records what it produced in `state` and `report`. The
    /// instances `step` declined (a remote copy refused) are returned.
    fn schedule(
        &self,
        pending: &Selection,
        state: &Known,
        progress: &Progress,
        report: &mut Report,
        step: impl Fn(usize, &dyn Fn(usize) -> Option<Realised>) -> Result<Option<Realised>, StepError>
            + Sync,
    ) -> Vec<usize> {
        let durations = Mutex::new(BTreeMap::new());
        let spans = Mutex::new(Vec::new());
        crate::interrupt::work_begins();
        let results = schedule::run(&self.eval.graph, pending, self.jobs, self.keep_going, |i| {
            let inst = self.eval.instance(i);
            let realised = |d: usize| {
                let state = state.lock().unwrap_or_else(|e| e.into_inner());
                state.get(d).cloned().flatten()
            };
            if crate::interrupt::requested().is_some() {
                return Err(StepError::Cancelled);
            }
            let started = Instant::now();
            let result = step(i, &realised);
            let what = match &result {
                Ok(None) => "refused",
                Ok(Some(_)) if self.took_from_remote(i) => "remote",
                Ok(Some(r)) if r.built => "built",
                Ok(Some(_)) => "cached",
                Err(e) if e.is_interrupted() => "stopped",
                Err(_) => "failed",
            };
            let end = Instant::now();
            if what != "cached" {
                progress.finished(inst.id.as_str(), what, end - started);
                durations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i, end - started);
            }
            spans.lock().unwrap_or_else(|e| e.into_inner()).push(Span {
                instance: i,
                lane: rayon::current_thread_index().unwrap_or(0),
                start: started,
                end,
                outcome: what,
            });
            if let Ok(Some(r)) = &result {
                state.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r.clone());
            }
            result
        });
        report
            .durations
            .extend(durations.into_inner().unwrap_or_else(|e| e.into_inner()));
        report
            .spans
            .extend(spans.into_inner().unwrap_or_else(|e| e.into_inner()));
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                let e = StepError::io("cannot start the worker pool", std::io::Error::other(e));
                report.failed.push((0, e));
                return Vec::new();
            }
        };
        let mut declined = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                None => {}
                Some(Outcome::Done(None)) => declined.push(i),
                Some(Outcome::Done(Some(r))) => {
                    if self.took_from_remote(i) {
                        report.remote.push(i);
                    } else if r.built {
                        report.built.push(i);
                    } else {
                        report.cached.push(i);
                    }
                    report.realised.insert(i, r);
                }
                Some(Outcome::Failed(StepError::Cancelled)) => report.skipped.push(i),
                Some(Outcome::Failed(e)) if e.is_interrupted() => report.interrupted.push(i),
                Some(Outcome::Failed(e)) => report.failed.push((i, e)),
                Some(Outcome::DependencyFailed | Outcome::NotStarted) => report.skipped.push(i),
            }
        }
        declined
    }

    /// Instance `i`'s description, its inputs' keys and its build key, once
    /// its inputs' outputs are known.
    fn keyed(
        &self,
        i: usize,
        realised: &dyn Fn(usize) -> Option<Realised>,
    ) -> Result<(Description, Vec<DepKey>, BuildKey), StepError> {
        let (deps, pending) = dep_keys(self.eval, i, |d| realised(d).and_then(|r| r.output));
        if let Some(d) = pending {
            return Err(self.missing_input(d));
        }
        let (desc, key) = build_key(self.eval, i, &deps);
        Ok((desc, deps, key))
    }

    /// What the store has for `lookup` (a rebuilt input may have given the
    /// same bytes); else the lock to produce it under, asked again once held,
    /// since another bake may have produced it while we waited.
    fn stored_or_lock(
        &self,
        i: usize,
        lookup: &Lookup<'_>,
        forced: bool,
    ) -> Result<Result<Realised, Option<KeyLock>>, StepError> {
        let inst = self.eval.instance(i);
        if let (false, Ok(found)) = (forced, inst.spec.lookup(lookup)) {
            return Ok(Ok(found));
        }
        let lock = match inst.spec.identity() {
            Identity::Output => Some(
                self.store
                    .lock_key(&lookup.key)
                    .map_err(|e| StepError::io("cannot lock the store", e))?,
            ),
            // The fetcher locks what it fetches.
            Identity::Declared => None,
        };
        if let (false, Ok(found)) = (forced, inst.spec.lookup(lookup)) {
            return Ok(Ok(found));
        }
        Ok(Err(lock))
    }

    /// Takes a remote hit from the remote: its tree, or a source's file. None
    /// when what the remote has is refused (or it is down): then it is built here.
    fn take(
        &self,
        i: usize,
        realised: &dyn Fn(usize) -> Option<Realised>,
        progress: &Progress,
    ) -> Result<Option<Realised>, StepError> {
        let inst = self.eval.instance(i);
        let (desc, deps, key) = self.keyed(i, realised)?;
        let lookup = Lookup::new(&inst.id, key, self.store, &desc, &deps);
        let _lock = match self.stored_or_lock(i, &lookup, false)? {
            Ok(found) => return Ok(Some(found)),
            Err(lock) => lock,
        };
        progress.started(inst.id.as_str());
        match &inst.spec {
            Spec::Source(s) => self.fetch_remote_source(i, key, &s.hash),
            _ => self.fetch_remote(i, key, &desc, &deps),
        }
    }

    /// Realises instance `i` once its inputs are: found in the store under
    /// its build key, taken from the remote (if `ask`), or produced.
    fn realise(
        &self,
        i: usize,
        realised: &dyn Fn(usize) -> Option<Realised>,
        progress: &Progress,
        ask: bool,
    ) -> Result<Realised, StepError> {
        let inst = self.eval.instance(i);
        let (desc, deps, key) = self.keyed(i, realised)?;
        let lookup = Lookup::new(&inst.id, key, self.store, &desc, &deps);
        let _lock = match self.stored_or_lock(i, &lookup, self.force.contains(i))? {
            Ok(found) => return Ok(found),
            Err(lock) => lock,
        };
        progress.started(inst.id.as_str());
        // Its key may be known only now (an input was built first).
        if ask {
            if let Some(found) = self.fetch_remote(i, key, &desc, &deps)? {
                return Ok(found);
            }
        }
        let inputs = self.inputs(i, realised)?;
        let step = self.step(i, key, &inputs);
        match inst.spec.produce(&step)? {
            Produced::File(path) => {
                if let (Some(remote), Spec::Source(s)) = (&self.remote, &inst.spec) {
                    remote.push_source(&inst.id, &s.hash, &path);
                }
                Ok(Realised {
                    key,
                    path: Some(path),
                    output: None,
                    built: true,
                })
            }
            Produced::Present => Ok(Realised {
                key,
                path: None,
                output: None,
                built: false,
            }),
            Produced::Tree => {
                let out = step.out()?;
                let work = step.into_work().ok_or_else(|| {
                    StepError::io("no output", std::io::ErrorKind::NotFound.into())
                })?;
                let output = self
                    .store
                    .commit(&key, work, &out)
                    .map_err(|e| StepError::io("cannot store the output", e))?;
                self.store
                    .save_instance(&inst.id, &key, &output, &snapshot(&desc, &deps))
                    .map_err(|e| StepError::io("cannot record the build", e))?;
                self.intact
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(output);
                let path = self.store.object_path(&output);
                if let Some(remote) = &self.remote {
                    remote.push(&inst.id, inst.kind().name(), &key, &path, &output);
                }
                Ok(Realised {
                    key,
                    path: Some(path),
                    output: Some(output),
                    built: true,
                })
            }
        }
    }

    /// A scratch directory in the store for what comes down from the remote.
    fn download_dir(&self) -> Result<crate::store::TmpDir, StepError> {
        self.store
            .tmp_dir()
            .map_err(|e| StepError::io("cannot make a download directory", e))
    }

    /// Records that instance `i` came from the remote this run.
    fn came_from_remote(&self, i: usize) {
        self.from_remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i);
    }

    /// A source's file from the remote, into the store once it has the
    /// declared hash (its CAS digest is checked on the way in).
    fn fetch_remote_source(
        &self,
        i: usize,
        key: BuildKey,
        hash: &crate::hash::SourceHash,
    ) -> Result<Option<Realised>, StepError> {
        let inst = self.eval.instance(i);
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let work = self.download_dir()?;
        let file = work.path().join("source");
        if !remote.fetch_source(&inst.id, hash, &file) {
            return Ok(None);
        }
        let path = match crate::fetch::import_file(&self.store.sources(), &file, Some(hash)) {
            Ok(_) => self.store.sources().path_of(hash),
            Err(FetchError::ImportMismatch { actual, .. }) => {
                remote.refused(
                    &inst.id,
                    &format!("the file hashes to {actual}, not to {hash} as declared"),
                );
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        self.came_from_remote(i);
        Ok(Some(Realised {
            key,
            path: Some(path),
            output: None,
            built: true,
        }))
    }

    /// Instance `i`'s output from the remote cache, committed to the store as
    /// a build here would be, once its tree has the output hash recorded with it.
    fn fetch_remote(
        &self,
        i: usize,
        key: BuildKey,
        desc: &Description,
        deps: &[DepKey],
    ) -> Result<Option<Realised>, StepError> {
        let inst = self.eval.instance(i);
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        if inst.spec.identity() != Identity::Output {
            return Ok(None);
        }
        let work = self.download_dir()?;
        let out = work.path().join("out");
        if remote
            .fetch(&inst.id, inst.kind().name(), &key, &out)
            .is_none()
        {
            return Ok(None);
        }
        // Checked against the recorded hash already: commit hashes what it moves.
        let output = self
            .store
            .commit(&key, work, &out)
            .map_err(|e| StepError::io("cannot store the fetched output", e))?;
        self.store
            .save_instance(&inst.id, &key, &output, &snapshot(desc, deps))
            .map_err(|e| StepError::io("cannot record the build", e))?;
        self.intact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(output);
        self.came_from_remote(i);
        Ok(Some(Realised {
            key,
            path: Some(self.store.object_path(&output)),
            output: Some(output),
            built: true,
        }))
    }

    /// The realised dependencies of instance `i`, in the graph's order, each
    /// output checked to be intact.
    fn inputs(
        &self,
        i: usize,
        realised: &dyn Fn(usize) -> Option<Realised>,
    ) -> Result<Vec<Realised>, StepError> {
        self.eval
            .graph
            .deps(i)
            .iter()
            .map(|(d, _)| {
                // A remote hit left in the remote has an output but no path.
                let r = realised(*d)
                    .filter(|r| r.output.is_none() || r.path.is_some())
                    .ok_or_else(|| self.missing_input(*d))?;
                self.check_intact(&self.eval.instance(*d).id, &r)?;
                Ok(r)
            })
            .collect()
    }

    /// Checks, once per run, that an output still hashes to the name it is
    /// stored under before anything uses it: a step cannot rewrite the store,
    /// but a disk or a person can. A corrupt object is removed, so it rebuilds.
    pub fn check_intact(&self, id: &InstanceId, r: &Realised) -> Result<(), StepError> {
        let (Some(output), Some(path)) = (r.output, &r.path) else {
            return Ok(());
        };
        let known = |set: &HashSet<OutputHash>| set.contains(&output);
        if known(&self.intact.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        let actual = hash_tree(path)
            .map_err(|e| StepError::io(format!("cannot read {}", path.display()), e))?;
        if actual != output {
            self.store.drop_object(&output);
            return Err(StepError::Corrupt {
                what: format!("the output of {id} ({})", path.display()),
                expected: output.to_string(),
                actual: actual.to_string(),
            });
        }
        self.intact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(output);
        Ok(())
    }

    /// The step that produces instance `i` under `key` from its realised inputs.
    fn step<'s>(&'s self, i: usize, key: BuildKey, inputs: &'s [Realised]) -> Step<'s> {
        let inst = self.eval.instance(i);
        let views = self
            .eval
            .graph
            .deps(i)
            .iter()
            .zip(inputs)
            .map(|((d, dep), realised)| {
                let of = self.eval.instance(*d);
                Input {
                    role: dep.role,
                    name: &dep.name,
                    id: &of.id,
                    spec: &of.spec,
                    realised,
                }
            })
            .collect();
        Step::new(
            &inst.id,
            &inst.name,
            key,
            views,
            self.store,
            &self.fetcher,
            self.jobs,
        )
        .with_executor(
            self.remote
                .as_ref()
                .filter(|r| r.executes())
                .map(|r| r as &dyn crate::derivation::Executor),
        )
    }

    fn missing_input(&self, d: usize) -> StepError {
        StepError::Invalid {
            message: format!("input {} has no output", self.eval.instance(d).id),
            help: "build it first".into(),
        }
    }
}
