//! Commands that build: build, release.

use std::collections::BTreeMap;

use std::time::Instant;

use super::*;
use crate::derivation::Spec;
use crate::recipe::Role;
use crate::release;

/// From here on, SIGINT and SIGTERM stop the running steps (and a second one
/// stops bake at once); the command then ends as [`interrupted`] says.
pub(super) fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if crate::interrupt::requested().is_some() {
                std::process::exit(128 + signal);
            }
            crate::interrupt::request(signal);
            errln!("interrupted: stopping the running steps (once more to stop at once)");
            crate::exec::kill_all();
        }
    });
}

/// Prints each failed step's diagnostic, and what an interrupt stopped.
pub(super) fn report_failures(eval: &Evaluation, report: &realise::Report) {
    for (i, e) in &report.failed {
        errln!("error: {} failed", eval.instance(*i).id);
        print_diagnostic(e);
    }
    if !report.interrupted.is_empty() {
        let ids: Vec<&str> = report
            .interrupted
            .iter()
            .map(|i| eval.instance(*i).id.as_str())
            .collect();
        errln!(
            "interrupted: {} (the store holds only what finished)",
            ids.join(", ")
        );
    }
}

/// What the remote cache gave and took, when one is used.
pub(super) fn report_remote(realiser: &Realiser) {
    if let Some(remote) = realiser.remote() {
        let s = remote.stats();
        let executed = match remote.executes() {
            true => format!(", {} run on workers", s.executed),
            false => String::new(),
        };
        errln!(
            "remote: {} fetched ({}), {} uploaded ({}){executed}",
            s.fetched,
            crate::units::show_size(s.bytes_down),
            s.pushed,
            crate::units::show_size(s.bytes_up)
        );
    }
}

/// The exit status of an interrupted command: 128 + the signal (130, 143).
pub(super) fn interrupted() -> Result<(), Failure> {
    match crate::interrupt::requested() {
        Some(signal) => Err(Failure {
            status: 128 + signal,
            message: None,
        }),
        None => Ok(()),
    }
}

pub(super) fn cmd_build(
    recipe: &RecipeArgs,
    targets: &[String],
    run: &RunArgs,
    json: bool,
    out_link: Option<PathBuf>,
    trace: &TraceArgs,
) -> Result<(), Failure> {
    let origin = Instant::now();
    let eval = recipe.evaluate()?;
    let evaluated = Instant::now();
    let store = recipe.open_store()?;
    let (selected, wanted) = select(&eval, targets)?;
    crate::interrupt::listen_once_work_begins(stop_on_signals);
    let asked = asked_for(&eval, &selected, targets);
    let realiser = Realiser::new(&eval, &store, run.options()?).wanting(asked.clone());
    let report = realiser.build(&wanted);
    report_failures(&eval, &report);
    report_remote(&realiser);
    if let Some(file) = &trace.trace {
        let doc = realise::chrome_trace(&eval, &report, origin, evaluated);
        if let Err(e) = std::fs::write(file, format!("{doc}\n")) {
            errln!("warning: cannot write the trace {}: {e}", file.display());
        }
    }
    if trace.critical_path || trace.trace.is_some() {
        let path = realise::critical_path(&eval, &report);
        errln!("{}", path.describe(&eval, origin.elapsed()));
    }
    // Link the outputs of what was asked for.
    let links: Vec<(&crate::names::InstanceId, PathBuf)> = asked
        .iter()
        .filter_map(|i| {
            let r = report.realised.get(&i)?;
            r.output?;
            Some((&eval.instance(i).id, r.path.clone()?))
        })
        .collect();
    let link_dir = out_link.unwrap_or_else(|| recipe.store_dir().with_file_name("out"));
    if let Err(e) = link_outputs(&link_dir, &links) {
        errln!(
            "warning: cannot link outputs into {}: {e}",
            link_dir.display()
        );
    }
    let id = |i: &usize| eval.instance(*i).id.as_str();
    if json {
        let failed: Vec<&str> = report.failed.iter().map(|(i, _)| id(i)).collect();
        let outputs: serde_json::Map<String, serde_json::Value> = report
            .realised
            .iter()
            .filter(|(_, r)| r.output.is_some())
            .filter_map(|(i, r)| {
                Some((
                    id(i).to_string(),
                    json!(r.path.as_ref()?.display().to_string()),
                ))
            })
            .collect();
        let mut doc = json!({
            "built": report.built.iter().map(id).collect::<Vec<_>>(),
            "cached": report.cached.iter().map(id).collect::<Vec<_>>(),
            "remote": report.remote.iter().map(id).collect::<Vec<_>>(),
            "unneeded": report.unneeded.iter().map(id).collect::<Vec<_>>(),
            "failed": failed,
            "outputs": outputs,
        });
        if let Some(remote) = realiser.remote().filter(|r| r.executes()) {
            let executed: serde_json::Map<String, serde_json::Value> = remote
                .executed()
                .into_iter()
                .map(|(id, worker)| (id.to_string(), worker.into()))
                .collect();
            doc["executed"] = executed.into();
        }
        outln!("{doc:#}");
    } else {
        let remote = match realiser.remote() {
            Some(_) => format!("{} from the remote, ", report.remote.len()),
            None => String::new(),
        };
        errln!(
            "{} built, {remote}{} cached, {} failed, {} not run",
            report.built.len(),
            report.cached.len(),
            report.failed.len(),
            report.skipped.len() + report.interrupted.len()
        );
    }
    interrupted()?;
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::failed())
    }
}

/// Where the final outputs are linked, like Nix's `result`: at the instance id as
/// a path (`out/keepalived@2.3.4/arm64`), so no two ids share a link. A link
/// already pointing at its target is left alone.
fn link_outputs(dir: &Path, links: &[(&crate::names::InstanceId, PathBuf)]) -> std::io::Result<()> {
    for (id, target) in links {
        let link = dir.join(id.as_path());
        if std::fs::read_link(&link).is_ok_and(|t| t == *target) {
            continue;
        }
        let parent = link.parent().unwrap_or(dir);
        // A recipe that gained an axis: the old link stands where a directory goes.
        if std::fs::symlink_metadata(parent).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(parent)?;
        }
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{}.tmp", id.file_name()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&link)?;
        }
        std::fs::rename(&tmp, &link)?;
    }
    Ok(())
}

pub(super) fn cmd_release(
    recipe: &RecipeArgs,
    targets: &[String],
    out: &Path,
    base_url: Option<&str>,
    signing: &SigningArgs,
    run: &RunArgs,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let releases: Vec<usize> = eval
        .select(targets)
        .map_err(|e| Failure::usage(format!("{}: {e}", eval.top_file())))?
        .into_iter()
        .filter(|&i| eval.instance(i).kind() == Kind::Release)
        .collect();
    if releases.is_empty() {
        return Err(Failure::usage(format!(
            "{} declares no release: add release \"NAME\" {{ sysext \"NAME\" }}",
            recipe.file.display()
        )));
    }
    // The key is found before anything builds: a wrong key id fails at once.
    let signer = signing
        .sign_key
        .as_deref()
        .map(|k| {
            release::Signer::new(
                &release::SignKey::parse(k),
                signing.passphrase_file.as_deref(),
            )
        })
        .transpose()
        .map_err(|e| {
            print_diagnostic(&e);
            Failure::usage("no release written: the signing key is not usable".into())
        })?;
    let verity = match (&signing.verity_key, &signing.verity_cert) {
        (Some(key), Some(cert)) => Some(release::VerityKey {
            key: key.clone(),
            cert: cert.clone(),
        }),
        _ => None,
    };
    // The images, built as usual; the directory itself is written here, not in the store.
    let images: Vec<usize> = releases
        .iter()
        .flat_map(|&r| eval.graph.deps(r).iter().map(|(d, _)| *d))
        .collect();
    stop_on_signals();
    let read = Selection::from_fn(eval.graph.len(), |i| images.contains(&i));
    let realiser = Realiser::new(&eval, &store, run.options()?).wanting(read);
    let report = realiser.build(&eval.graph.closure(&images));
    report_failures(&eval, &report);
    interrupted()?;
    if !report.ok() {
        return Err(Failure {
            status: EXIT_FAILURE,
            message: Some("no release written: the images did not all build".into()),
        });
    }
    // The images are checked before they are published, as any input is.
    for (i, r) in &report.realised {
        realiser
            .check_intact(&eval.instance(*i).id, r)
            .map_err(|e| {
                print_diagnostic(&e);
                Failure::failed()
            })?;
    }
    let versions = toolchain_versions(&eval, &report);
    for r in releases {
        let inst = eval.instance(r);
        let url = match (base_url, &inst.spec) {
            (Some(u), _) => u.to_string(),
            (None, Spec::Release(spec)) => spec.base_url.clone().ok_or_else(|| {
                Failure::usage(format!("{} has no base-url: pass --base-url URL", inst.id))
            })?,
            (None, _) => continue,
        };
        let deps: Vec<usize> = eval.graph.deps(r).iter().map(|(d, _)| *d).collect();
        let paths: Vec<PathBuf> = deps
            .iter()
            .filter_map(|d| report.realised.get(d)?.path.clone())
            .collect();
        let bills = deps
            .iter()
            .map(|&d| bill(&eval, &report, &versions, &recipe.file, d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::usage(format!("cannot read an image's file list: {e}")))?;
        let publish = release::Publish {
            name: inst.name.as_str(),
            base_url: &url,
            signer: signer.as_ref(),
            verity: verity.as_ref(),
            bills: &bills.into_iter().flatten().collect::<Vec<_>>(),
        };
        let written = release::write(&publish, &paths, out).map_err(|e| {
            print_diagnostic(&e);
            Failure::failed()
        })?;
        let entries = manifest_entries(&eval, &report, r, &written);
        crate::release::write_manifest(out, &inst.id, &recipe_in_repository(&recipe.file), entries)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", out.display())))?;
        sign_manifest(out, inst.name.as_str(), signer.as_ref()).map_err(|e| {
            print_diagnostic(&e);
            Failure::failed()
        })?;
        for image in &written {
            outln!("{}  {}", image.sha256, out.join(&image.file).display());
        }
        let signed = match &signer {
            Some(s) => format!("signed by {}", s.fingerprint()),
            None => "unsigned (Verify=false)".to_string(),
        };
        errln!(
            "{}: {} images in {}, {signed}",
            inst.id,
            written.len(),
            out.display()
        );
    }
    Ok(())
}

/// What each toolchain in the build says its version is, by instance.
fn toolchain_versions(eval: &Evaluation, report: &realise::Report) -> BTreeMap<usize, String> {
    let used: Vec<usize> = report.realised.keys().copied().collect();
    let statuses = crate::derivation::check_toolchains(
        used.iter()
            .map(|&i| (&eval.instance(i).id, &eval.instance(i).spec)),
    );
    statuses
        .into_iter()
        .filter_map(|s| {
            let i = eval.find(s.id.as_str())?;
            Some((i, s.version?.ok()?))
        })
        .collect()
}

/// What the image of sysext instance `sysext` was made from, from the graph:
/// every source, toolchain and build in its closure and how each used the others.
fn bill(
    eval: &Evaluation,
    report: &realise::Report,
    versions: &BTreeMap<usize, String>,
    recipe: &Path,
    sysext: usize,
) -> std::io::Result<Option<release::Bill>> {
    let inst = eval.instance(sysext);
    let (Spec::Sysext(spec), Some(realised)) = (&inst.spec, report.realised.get(&sysext)) else {
        return Ok(None);
    };
    let image = crate::sysext::image_name(inst.name.as_str(), &spec.meta.version, &spec.meta.arch);
    let files = match &realised.path {
        Some(p) => crate::sysext::read_files_list(&p.join(crate::sysext::files_list_name(&image)))?,
        None => Vec::new(),
    };
    let closure: Vec<usize> = eval
        .graph
        .closure(&[sysext])
        .iter()
        .filter(|&i| i != sysext)
        .collect();
    let index: BTreeMap<usize, usize> = closure.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    let components = closure
        .iter()
        .map(|&i| {
            let of = eval.instance(i);
            let mut c = release::Component {
                id: of.id.to_string(),
                kind: release::ComponentKind::Build,
                name: of.name.to_string(),
                version: None,
                url: None,
                file_name: None,
                hash: None,
                license: None,
                digest: None,
                target: None,
                uses: Vec::new(),
            };
            match &of.spec {
                Spec::Source(s) => {
                    c.kind = release::ComponentKind::Source;
                    c.version = s.version.clone();
                    c.license = s.license.clone();
                    c.hash = Some(s.hash.clone());
                    let url = s
                        .urls
                        .iter()
                        .find(|u| !matches!(u, crate::fetch::SourceUrl::Debian(_)));
                    c.url = url.map(ToString::to_string);
                    c.file_name = s
                        .urls
                        .iter()
                        .find_map(|u| u.file_name())
                        .map(str::to_string);
                }
                Spec::Toolchain(t) => {
                    c.kind = release::ComponentKind::Toolchain;
                    c.version = versions.get(&i).cloned();
                    c.digest = Some(t.identity);
                    c.target = Some(t.target.clone());
                }
                _ => {
                    c.digest = report
                        .realised
                        .get(&i)
                        .and_then(|r| r.output)
                        .map(|o| o.digest());
                }
            }
            c.uses = eval
                .graph
                .deps(i)
                .iter()
                .filter_map(|(d, dep)| {
                    Some(release::Use {
                        component: *index.get(d)?,
                        how: match dep.role {
                            Role::Source => release::UseKind::Source,
                            Role::Toolchain => release::UseKind::Toolchain,
                            Role::Input | Role::Gather => release::UseKind::Input,
                        },
                    })
                })
                .collect();
            c
        })
        .collect();
    Ok(Some(release::Bill {
        image,
        name: inst.name.to_string(),
        version: spec.meta.version.clone(),
        arch: spec.meta.arch.clone(),
        instance: inst.id.to_string(),
        build_key: realised.key.to_string(),
        recipe: recipe.display().to_string(),
        components,
        inputs: eval
            .graph
            .deps(sysext)
            .iter()
            .filter_map(|(d, _)| index.get(d).copied())
            .collect(),
        files,
    }))
}
