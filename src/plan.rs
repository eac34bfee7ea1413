//! What a build would do and why, known from the store without building.

use crate::build::{build_key, snapshot};
use crate::eval::{Evaluation, Spec};
use crate::hash::{BuildKey, OutputHash};
use crate::store::Store;
use crate::why::{explain, Change};

/// One instance that must be built (or fetched), and the first reason.
pub struct Step {
    pub instance: usize,
    pub reason: String,
}

pub struct Plan {
    pub build: Vec<Step>,
    pub cached: Vec<usize>,
    /// Per instance, its output where the store already has it.
    pub outputs: Vec<Option<OutputHash>>,
}

pub fn plan(eval: &Evaluation, store: &Store, wanted: &[bool]) -> Plan {
    let mut plan = Plan {
        build: Vec::new(),
        cached: Vec::new(),
        outputs: vec![None; eval.instances.len()],
    };
    for (i, inst) in eval.instances.iter().enumerate() {
        if !wanted[i] {
            continue;
        }
        let reason = match &inst.spec {
            Spec::Source(s) => crate::fetch::SourceStore::new(store.sources_dir())
                .get(&s.hash)
                .is_none()
                .then(|| "not fetched yet".to_string()),
            Spec::Toolchain(t) => t
                .missing
                .first()
                .map(|m| format!("not installed: {} is missing", m.display())),
            Spec::Build(_) | Spec::Sysext(_) | Spec::Release(_) => {
                match build_key(eval, inst, |d| plan.outputs[d]) {
                    Some(key) => match store.lookup(&key) {
                        Some(record) => {
                            plan.outputs[i] = Some(record.output);
                            None
                        }
                        None => Some(why_rebuild(eval, store, i, &key, &plan.outputs)),
                    },
                    None => {
                        let dep = inst
                            .deps
                            .iter()
                            .find(|d| {
                                plan.outputs[d.instance].is_none()
                                    && plan.build.iter().any(|s| s.instance == d.instance)
                                    && !matches!(
                                        eval.instances[d.instance].spec,
                                        Spec::Source(_) | Spec::Toolchain(_)
                                    )
                            })
                            .map(|d| eval.instances[d.instance].id.0.clone())
                            .unwrap_or_default();
                        Some(format!("input {dep} will be built first"))
                    }
                }
            }
        };
        match reason {
            Some(reason) => plan.build.push(Step {
                instance: i,
                reason,
            }),
            None => plan.cached.push(i),
        }
    }
    plan
}

/// The changes since the last build of instance `i`, known to need a rebuild.
pub fn changes(
    eval: &Evaluation,
    store: &Store,
    i: usize,
    outputs: &[Option<OutputHash>],
) -> Vec<Change> {
    let inst = &eval.instances[i];
    let now = snapshot(eval, inst, |d| outputs[d]);
    let last = store.load_instance(&inst.id.0);
    explain(last.as_ref().map(|r| &r.snapshot), &now)
}

fn why_rebuild(
    eval: &Evaluation,
    store: &Store,
    i: usize,
    key: &BuildKey,
    outputs: &[Option<OutputHash>],
) -> String {
    let changes = changes(eval, store, i, outputs);
    match changes.first() {
        Some(c) => {
            let first = c.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            if changes.len() > 1 {
                format!("{first} (and {} more changes)", changes.len() - 1)
            } else {
                first
            }
        }
        None => format!(
            "output of build {} is not in the store",
            &key.to_string()[..12]
        ),
    }
}
