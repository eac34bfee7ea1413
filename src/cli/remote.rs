//! `bake worker`: a bot of a Remote Workers API server.

use super::*;
use crate::derivation::Spec;
use crate::remote::{Remote, WorkerToolchain};

pub(super) fn cmd_worker(
    recipe: &RecipeArgs,
    server: &str,
    (token_env, token_header): (Option<String>, Option<String>),
    name: Option<String>,
    jobs: Option<usize>,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    // The recipe's toolchains that are installed here, evaluated again for
    // each lease: a toolchain whose files changed since the worker joined has
    // another identity, and a lease naming the old one is refused.
    let toolchains = || match recipe.evaluate() {
        Ok(eval) => Ok(installed_toolchains(&eval)),
        Err(e) => Err(format!("cannot evaluate {}: {e}", recipe.file.display())),
    };
    let joined_with = installed_toolchains(&eval);
    let remote = Remote::new(crate::remote::Options {
        url: server.to_string(),
        token_env,
        token_header,
        upload: true,
        exec: false,
        timeout: std::time::Duration::from_secs(30),
        // A worker sends nothing to the Execution service.
        queue_timeout: std::time::Duration::ZERO,
    })
    .map_err(|e| Failure::usage(format!("--server: {e}")))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let name = name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    stop_on_signals();
    crate::remote::serve(
        &remote,
        &store,
        joined_with,
        &toolchains,
        &name,
        jobs.unwrap_or(cores).max(1),
    )
    .map_err(|e| Failure::usage(format!("worker {name}: {e}")))?;
    interrupted()
}

/// The toolchains of `eval` that are installed here: a lease needing another
/// identity is refused (and the server gives it to a worker that has it).
fn installed_toolchains(eval: &Evaluation) -> Vec<WorkerToolchain> {
    (0..eval.graph.len())
        .map(|i| eval.instance(i))
        .filter_map(|inst| match &inst.spec {
            Spec::Toolchain(t) if t.missing.is_empty() => Some(WorkerToolchain {
                name: inst.name.clone(),
                id: inst.id.clone(),
                spec: t.clone(),
            }),
            _ => None,
        })
        .collect()
}
