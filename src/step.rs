//! Realising one instance: a source fetched, a toolchain checked, a build run in
//! the sandbox, a sysext image packed, a release directory written.

use std::fs;
use std::path::{Path, PathBuf};

use crate::build::{build_key, snapshot, Options, Realised};
use crate::eval::{BuildSpec, Evaluation, Instance, Role, SourceSpec, Spec, ToolchainSpec};
use crate::fetch::unpack::{copy_file, unpack_archive, UnpackError};
use crate::fetch::{Fetcher, SourceSpec as FetchSpec, SourceStore, SourceUrl};
use crate::hash::{BuildKey, OutputHash};
use crate::progress::Progress;
use crate::store::{Store, TmpDir};

/// SOURCE_DATE_EPOCH of every step: fixed, so time never leaks into an output.
/// 1980-01-01, the earliest time zip archives can hold.
pub const SOURCE_DATE_EPOCH: i64 = 315_532_800;

/// A step's failure, as the user should read it.
pub type StepError = String;

pub fn realise(
    eval: &Evaluation,
    inst: &Instance,
    store: &Store,
    options: &Options,
    progress: &Progress,
    realised: &dyn Fn(usize) -> Option<Realised>,
) -> Result<Realised, StepError> {
    let key = BuildKey(inst.key.0);
    match &inst.spec {
        Spec::Source(s) => {
            let sources = SourceStore::new(store.sources_dir());
            let had = sources.get(&s.hash).is_some();
            if !had {
                progress.started(&inst.id.0);
            }
            let spec = source_spec(inst, s)?;
            let path = Fetcher::new(sources, options.fetch.clone())
                .fetch(&spec)
                .map_err(|e| format!("{}: {e}", inst.id))?;
            Ok(Realised {
                key,
                path: Some(path),
                output: None,
                built: !had,
            })
        }
        Spec::Toolchain(t) => {
            check_toolchain(inst, t)?;
            Ok(Realised {
                key,
                path: None,
                output: None,
                built: false,
            })
        }
        Spec::Build(_) | Spec::Sysext(_) | Spec::Release(_) => {
            let output_of = |d: usize| realised(d).and_then(|r| r.output);
            let key = build_key(eval, inst, output_of)
                .ok_or_else(|| format!("{}: a dependency has no output", inst.id))?;
            if let Some(found) = cached(store, &key) {
                return Ok(found);
            }
            let lock = store
                .lock_key(&key)
                .map_err(|e| format!("{}: cannot lock the store: {e}", inst.id))?;
            // Another bake may have built it while we waited for the lock.
            if let Some(found) = cached(store, &key) {
                return Ok(found);
            }
            progress.started(&inst.id.0);
            let output = run(eval, inst, store, &key, options, realised)?;
            let record = snapshot(eval, inst, output_of);
            store
                .save_instance(&inst.id.0, &key, &output, &record)
                .map_err(|e| format!("{}: cannot record the build: {e}", inst.id))?;
            drop(lock);
            Ok(Realised {
                key,
                path: Some(store.object_path(&output)),
                output: Some(output),
                built: true,
            })
        }
    }
}

/// The fetcher's view of a source instance.
pub fn source_spec(inst: &Instance, s: &SourceSpec) -> Result<FetchSpec, StepError> {
    let urls = s
        .urls
        .iter()
        .map(|u| u.parse::<SourceUrl>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", inst.id))?;
    Ok(FetchSpec {
        name: inst.name.0.clone(),
        urls,
        hash: s.hash.clone(),
    })
}

/// Unpacks the source into the build's working directory, or copies it there
/// under its URL's file name when it is not an archive.
fn place_source(source: &Instance, file: &Path, src: &Path) -> Result<(), UnpackError> {
    let epoch = SOURCE_DATE_EPOCH as u64;
    match &source.spec {
        Spec::Source(s) if !s.unpack => {
            let name = s
                .urls
                .first()
                .and_then(|u| u.rsplit('/').next())
                .filter(|n| !n.is_empty())
                .unwrap_or(source.name.0.as_str());
            copy_file(file, src, name, epoch).map(|_| ())
        }
        _ => unpack_archive(file, src, epoch),
    }
}

/// The instance as the store already has it: a fetched source, an installed
/// toolchain, an output under its build key. None when it needs work.
pub fn already_there(
    eval: &Evaluation,
    inst: &Instance,
    store: &Store,
    output_of: impl Fn(usize) -> Option<OutputHash>,
) -> Option<Realised> {
    let key = BuildKey(inst.key.0);
    match &inst.spec {
        Spec::Source(s) => SourceStore::new(store.sources_dir())
            .get(&s.hash)
            .map(|path| Realised {
                key,
                path: Some(path),
                output: None,
                built: false,
            }),
        Spec::Toolchain(t) => t.missing.is_empty().then_some(Realised {
            key,
            path: None,
            output: None,
            built: false,
        }),
        Spec::Build(_) | Spec::Sysext(_) | Spec::Release(_) => {
            cached(store, &build_key(eval, inst, output_of)?)
        }
    }
}

fn cached(store: &Store, key: &BuildKey) -> Option<Realised> {
    store.lookup(key).map(|record| Realised {
        key: *key,
        path: Some(store.object_path(&record.output)),
        output: Some(record.output),
        built: false,
    })
}

fn check_toolchain(inst: &Instance, t: &ToolchainSpec) -> Result<(), StepError> {
    if t.missing.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = t.missing.iter().map(|p| p.display().to_string()).collect();
    let mut msg = format!(
        "toolchain {} is not installed: missing {}",
        inst.id,
        missing.join(", ")
    );
    if let Some(install) = &t.install {
        msg.push_str(&format!("\n  to install it: {install}"));
    }
    Err(msg)
}

fn run(
    eval: &Evaluation,
    inst: &Instance,
    store: &Store,
    key: &BuildKey,
    options: &Options,
    realised: &dyn Fn(usize) -> Option<Realised>,
) -> Result<OutputHash, StepError> {
    let (work, out) = produce(eval, inst, store, key, options, realised)?;
    store
        .commit(key, work, &out)
        .map_err(|e| format!("{}: cannot store the output: {e}", inst.id))
}

/// Runs the step into a scratch directory of the store; returns it and the output
/// tree inside it, not yet committed (`bake check` compares instead).
pub fn produce(
    eval: &Evaluation,
    inst: &Instance,
    store: &Store,
    key: &BuildKey,
    options: &Options,
    realised: &dyn Fn(usize) -> Option<Realised>,
) -> Result<(TmpDir, PathBuf), StepError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", inst.id);
    let work = store
        .tmp_dir()
        .map_err(|e| fail("cannot make a build directory", &e))?;
    let out = work.path().join("out");
    let dep_path = |role: Role| -> Vec<(String, PathBuf)> {
        inst.deps
            .iter()
            .filter(|d| d.role == role)
            .filter_map(|d| {
                realised(d.instance)
                    .and_then(|r| r.path)
                    .map(|p| (d.name.clone(), p))
            })
            .collect()
    };
    match &inst.spec {
        Spec::Build(b) => {
            let src = work.path().join("src");
            match inst.deps.iter().find(|d| d.role == Role::Source) {
                Some(d) => {
                    let file = realised(d.instance)
                        .and_then(|r| r.path)
                        .ok_or_else(|| fail("source missing", &"not fetched"))?;
                    place_source(&eval.instances[d.instance], &file, &src)
                        .map_err(|e| fail("cannot unpack the source", &e))?;
                }
                None => fs::create_dir_all(&src)
                    .map_err(|e| fail("cannot make the build directory", &e))?,
            }
            let toolchain = inst
                .deps
                .iter()
                .find(|d| d.role == Role::Toolchain)
                .map(|d| &eval.instances[d.instance]);
            let step = exec_step(b, toolchain, store, options, dep_path(Role::Input));
            let log = store.log_path(key);
            // zig's cache has shown a race when two links for one target first need
            // the same new artifact at once ("C compiler cannot create executables"):
            // steps sharing a toolchain cache run one at a time per target.
            let _cache_lock = match toolchain {
                Some(t) if matches!(&t.spec, Spec::Toolchain(spec) if spec.cache.is_some()) => {
                    Some(
                        store
                            .lock_toolchain(&t.id.0)
                            .map_err(|e| fail("cannot lock the toolchain cache", &e))?,
                    )
                }
                _ => None,
            };
            crate::exec::run(&step, work.path(), &log).map_err(|e| format!("{}: {e}", inst.id))?;
        }
        Spec::Sysext(x) => {
            let inputs: Vec<PathBuf> = dep_path(Role::Input).into_iter().map(|(_, p)| p).collect();
            crate::sysext::make_image(
                &inst.name.0,
                x,
                &inputs,
                work.path(),
                &out,
                SOURCE_DATE_EPOCH,
            )
            .map_err(|e| format!("{}: {e}", inst.id))?;
        }
        Spec::Release(r) => {
            let images: Vec<PathBuf> = dep_path(Role::Gather).into_iter().map(|(_, p)| p).collect();
            let base_url = r.base_url.as_deref().ok_or_else(|| {
                format!(
                    "{}: a release needs `base-url` in the recipe (or use bake release --base-url)",
                    inst.id
                )
            })?;
            crate::release::write(&inst.name.0, &images, base_url, &out)
                .map_err(|e| fail("cannot write the release", &e))?;
        }
        Spec::Source(_) | Spec::Toolchain(_) => {}
    }
    Ok((work, out))
}

fn exec_step(
    b: &BuildSpec,
    toolchain: Option<&Instance>,
    store: &Store,
    options: &Options,
    inputs: Vec<(String, PathBuf)>,
) -> crate::exec::Step {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut path: Vec<PathBuf> = Vec::new();
    if let Some(Spec::Toolchain(t)) = toolchain.map(|t| &t.spec) {
        env.push(("HOST".into(), t.target.clone()));
        env.extend(t.env.iter().cloned());
        if let Some(var) = &t.cache {
            let dir = store.toolchain_cache(&toolchain.map_or(String::new(), |t| t.name.0.clone()));
            env.push((var.clone(), dir.display().to_string()));
        }
        path.extend(t.paths.iter().cloned());
    }
    env.extend(b.env.iter().cloned());
    crate::exec::Step {
        script: b.script.clone(),
        env: env.into_iter().collect(),
        path,
        inputs,
        jobs: options.jobs,
        source_date_epoch: SOURCE_DATE_EPOCH,
    }
}

/// Where the final outputs are linked, like Nix's `result`. A link already
/// pointing at its target is left alone.
pub fn link_outputs(dir: &Path, links: &[(String, PathBuf)]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (id, target) in links {
        let name = id.replace('/', "-");
        let link = dir.join(&name);
        if fs::read_link(&link).is_ok_and(|t| t == *target) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        fs::rename(&tmp, &link)?;
    }
    Ok(())
}
