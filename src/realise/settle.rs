//! The settle pass: for every wanted instance, in dependency order, what the store
//! already has and what must be built, with the reason; then, from the
//! instances asked for down, which of the others are needed at all. `build`,
//! `plan`, `check` and `why` all decide here, so they cannot disagree.

use crate::derivation::{key, DepKey, Description, Identity, Lookup, Realised, Reason, Spec};
use crate::eval::Evaluation;
use crate::graph::Selection;
use crate::hash::{BuildKey, Digest, OutputHash};
use crate::remote::Remote;
use crate::store::{KnownKeys, Store};

/// Where one wanted instance stands.
#[derive(Clone, Debug)]
pub enum State {
    Ready(Realised),
    Todo(Reason),
    /// Not here, but the remote cache has it under `key`: with the output hash
    /// recorded there, or (a source, keyed by its declared hash) as a file.
    Remote {
        key: BuildKey,
        output: Option<OutputHash>,
    },
}

/// The state of every wanted instance.
pub struct Settlement {
    states: Vec<Option<State>>,
    /// Whether this run must bring the instance into the store: asked for, or
    /// an input of one produced here. A remote hit's inputs are not: their
    /// recorded output hashes key it.
    needed: Vec<bool>,
}

impl Settlement {
    pub fn state(&self, i: usize) -> Option<&State> {
        self.states.get(i).and_then(Option::as_ref)
    }

    /// The instances to build, in dependency order, with their reasons.
    pub fn todo(&self) -> impl Iterator<Item = (usize, &Reason)> {
        self.states.iter().enumerate().filter_map(|(i, s)| match s {
            Some(State::Todo(r)) if self.needed[i] => Some((i, r)),
            _ => None,
        })
    }

    /// The instances already there.
    pub fn ready(&self) -> impl Iterator<Item = (usize, &Realised)> {
        self.states.iter().enumerate().filter_map(|(i, s)| match s {
            Some(State::Ready(r)) => Some((i, r)),
            _ => None,
        })
    }

    /// Makes a settled instance one to build anyway, here.
    pub fn force(&mut self, i: usize) {
        if let Some(state @ Some(State::Ready(_) | State::Remote { .. })) = self.states.get_mut(i) {
            *state = Some(State::Todo(Reason::Rerun));
        }
    }

    /// Makes a remote hit whose copy was refused one to build here.
    pub fn refuse(&mut self, i: usize) {
        if let Some(state @ Some(State::Remote { .. })) = self.states.get_mut(i) {
            *state = Some(State::Todo(Reason::Refused));
        }
    }

    /// The instances the remote cache has: whose results come from it,
    /// fetched or (when only their dependents' keys need them) not.
    pub fn remote(&self) -> impl Iterator<Item = usize> + '_ {
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| matches!(s, Some(State::Remote { .. })).then_some(i))
    }

    /// The remote hits to fetch: needed ones.
    pub fn to_fetch(&self) -> Selection {
        Selection::from_fn(self.states.len(), |i| {
            self.needed[i] && matches!(self.state(i), Some(State::Remote { .. }))
        })
    }

    /// The instances to build here, in dependency order: needed ones.
    pub fn pending(&self) -> Selection {
        Selection::from_fn(self.states.len(), |i| {
            self.needed[i] && matches!(self.state(i), Some(State::Todo(_)))
        })
    }

    /// What this run leaves where it is: remote hits only their dependents'
    /// keys need, and the sources and toolchains only such instances use.
    pub fn unneeded(&self) -> impl Iterator<Item = usize> + '_ {
        self.states.iter().enumerate().filter_map(|(i, s)| {
            let elsewhere = matches!(s, Some(State::Todo(_) | State::Remote { .. }));
            (elsewhere && !self.needed[i]).then_some(i)
        })
    }

    /// Decides, from `roots` (the instances asked for) down, what is needed:
    /// a root, or an input of an instance to build here. A needed source that
    /// the store lacks is looked up in the remote, which then serves it.
    pub fn mark_needed(&mut self, eval: &Evaluation, roots: &Selection, remote: Option<&Remote>) {
        // Dependents come after their inputs in the graph's order.
        for i in (0..self.states.len()).rev() {
            if self.states[i].is_none() {
                continue;
            }
            let builds_here =
                |j: &usize| self.needed[*j] && matches!(self.states[*j], Some(State::Todo(_)));
            self.needed[i] = roots.contains(i) || eval.graph.dependents(i).iter().any(builds_here);
            let (Some(remote), true) = (remote, self.needed[i]) else {
                continue;
            };
            let inst = eval.instance(i);
            if let (Some(State::Todo(Reason::NotFetched)), Spec::Source(s)) =
                (&self.states[i], &inst.spec)
            {
                if remote.has_source(&inst.id, &s.hash) {
                    self.states[i] = Some(State::Remote {
                        key: inst.key.as_build_key(),
                        output: None,
                    });
                }
            }
        }
    }
}

/// Settles every instance in `wanted` (closed under dependencies) against the store.
pub fn settle(eval: &Evaluation, store: &Store, wanted: &Selection) -> Settlement {
    settle_with_remote(eval, store, wanted, None)
}

/// Settles against the store, then the remote cache: what the remote has
/// counts, for its dependents' keys, as built with the output hash recorded there.
pub fn settle_with_remote(
    eval: &Evaluation,
    store: &Store,
    wanted: &Selection,
    remote: Option<&Remote>,
) -> Settlement {
    let known = KnownKeys::open(store, eval.known_keys());
    let mut states: Vec<Option<State>> = vec![None; eval.graph.len()];
    for i in wanted.iter() {
        let output_of = |d: usize| match &states[d] {
            Some(State::Ready(r)) => r.output,
            Some(State::Remote { output, .. }) => *output,
            _ => None,
        };
        let inst = eval.instance(i);
        // An unchanged instance of a no-op run: its build key as last made, and
        // the output stored under it, without describing it again.
        let digests = (inst.spec.identity() == Identity::Output)
            .then(|| dep_digests(eval, i, output_of))
            .flatten();
        if let Some(digests) = &digests {
            let stored = known
                .build_key(&inst.key, digests)
                .and_then(|key| Some((key, known.lookup(store, &key)?)));
            if let Some((key, output)) = stored {
                states[i] = Some(State::Ready(Realised::stored(store, key, output)));
                continue;
            }
        }
        let (deps, pending) = dep_keys(eval, i, output_of);
        let (desc, key) = build_key(eval, i, &deps);
        if let Some(digests) = digests {
            known.learn(inst.key, digests, key);
        }
        let lookup = Lookup::new(&inst.id, key, store, &desc, &deps).with_known(&known);
        let state = match pending {
            Some(input) => State::Todo(Reason::InputFirst {
                input: eval.instance(input).id.clone(),
                then: Box::new(lookup.why_not()),
            }),
            None => match inst.spec.lookup(&lookup) {
                Ok(r) => State::Ready(r),
                Err(reason) => match remote.filter(|_| inst.spec.identity() == Identity::Output) {
                    Some(remote) => remote.recorded(&inst.id, inst.kind().name(), &key).map_or(
                        State::Todo(reason),
                        |output| State::Remote {
                            key,
                            output: Some(output),
                        },
                    ),
                    None => State::Todo(reason),
                },
            },
        };
        states[i] = Some(state);
    }
    known.save(store);
    let needed = vec![true; states.len()];
    Settlement { states, needed }
}

/// The keys of instance `i`'s dependencies: declared ones by their eval keys,
/// the others by their outputs. A dependency with no output yet is shown as not
/// built, and the first such is returned too: then the key is not the build key.
pub fn dep_keys(
    eval: &Evaluation,
    i: usize,
    output_of: impl Fn(usize) -> Option<OutputHash>,
) -> (Vec<DepKey>, Option<usize>) {
    let mut pending = None;
    let deps = eval
        .graph
        .deps(i)
        .iter()
        .map(|(d, dep)| {
            let inst = eval.instance(*d);
            let (digest, shown) = match (inst.spec.identity(), output_of(*d)) {
                (Identity::Declared, _) => (inst.key.digest(), inst.spec.shown()),
                (Identity::Output, Some(o)) => (o.digest(), None),
                (Identity::Output, None) => {
                    pending.get_or_insert(*d);
                    (Digest::of(b""), Some("(not built yet)".to_string()))
                }
            };
            DepKey::new(dep.role, &dep.name, &inst.id, digest, shown)
        })
        .collect();
    (deps, pending)
}

/// The digests [`dep_keys`] counts for instance `i`'s dependencies, if each has one.
fn dep_digests(
    eval: &Evaluation,
    i: usize,
    output_of: impl Fn(usize) -> Option<OutputHash>,
) -> Option<Vec<Digest>> {
    eval.graph
        .deps(i)
        .iter()
        .map(|(d, _)| {
            let inst = eval.instance(*d);
            match inst.spec.identity() {
                Identity::Declared => Some(inst.key.digest()),
                Identity::Output => output_of(*d).map(|o| o.digest()),
            }
        })
        .collect()
}

/// The description of instance `i` and its build key, given its dependencies' keys.
pub fn build_key(eval: &Evaluation, i: usize, deps: &[DepKey]) -> (Description, BuildKey) {
    let inst = eval.instance(i);
    let desc = inst.spec.describe(&inst.name);
    let key = match inst.spec.identity() {
        Identity::Declared => inst.key.as_build_key(),
        Identity::Output => BuildKey::new(key(&desc, deps)),
    };
    (desc, key)
}
