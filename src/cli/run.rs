//! Commands that build: build, check, release.

use super::*;
use crate::derivation::Spec;

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
fn report_failures(eval: &Evaluation, report: &realise::Report) {
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
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let (selected, wanted) = select(&eval, targets)?;
    stop_on_signals();
    let realiser = Realiser::new(&eval, &store, run.options()?);
    let report = realiser.build(&wanted);
    report_failures(&eval, &report);
    report_remote(&realiser);
    // Link the outputs of what was asked for: the named targets, or the graph's ends.
    let links: Vec<(&crate::names::InstanceId, PathBuf)> = selected
        .iter()
        .filter(|&&i| !targets.is_empty() || eval.graph.dependents(i).is_empty())
        .filter_map(|&i| {
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

pub(super) fn cmd_check(
    recipe: &RecipeArgs,
    targets: &[String],
    run: &RunArgs,
    json: bool,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let (_, wanted) = select(&eval, targets)?;
    stop_on_signals();
    let realiser = Realiser::new(&eval, &store, run.options()?);
    let built = realiser.build(&wanted);
    report_failures(&eval, &built);
    interrupted()?;
    let id = |i: usize| eval.instance(i).id.to_string();
    let mut failed: Vec<String> = built.failed.iter().map(|(i, _)| id(*i)).collect();
    let mut reproducible = Vec::new();
    let mut differs = Vec::new();
    for (i, result) in realiser.check(&wanted, &built) {
        match result {
            Ok(c) if c.reproducible() => {
                errln!("same     {} {}", id(i), c.stored);
                reproducible.push(id(i));
            }
            Ok(c) => {
                errln!(
                    "DIFFERS  {}: {} then {}; files: {}",
                    id(i),
                    c.stored,
                    c.rebuilt,
                    c.differing.join(", ")
                );
                differs.push(json!({"id": id(i), "files": c.differing}));
            }
            Err(e) => {
                errln!("error: {} could not be rebuilt", id(i));
                print_diagnostic(&e);
                failed.push(id(i));
            }
        }
    }
    if json {
        outln!(
            "{:#}",
            json!({"reproducible": reproducible, "differs": differs, "failed": failed})
        );
    } else {
        errln!(
            "{} reproducible, {} differ, {} failed",
            reproducible.len(),
            differs.len(),
            failed.len()
        );
    }
    if differs.is_empty() && failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed())
    }
}

pub(super) fn cmd_release(
    recipe: &RecipeArgs,
    targets: &[String],
    out: &Path,
    base_url: Option<&str>,
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
    // The images, built as usual; the directory itself is written here, not in the store.
    let images: Vec<usize> = releases
        .iter()
        .flat_map(|&r| eval.graph.deps(r).iter().map(|(d, _)| *d))
        .collect();
    stop_on_signals();
    let realiser = Realiser::new(&eval, &store, run.options()?);
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
    for r in releases {
        let inst = eval.instance(r);
        let url = match (base_url, &inst.spec) {
            (Some(u), _) => u.to_string(),
            (None, Spec::Release(spec)) => spec.base_url.clone().ok_or_else(|| {
                Failure::usage(format!("{} has no base-url: pass --base-url URL", inst.id))
            })?,
            (None, _) => continue,
        };
        let paths: Vec<PathBuf> = eval
            .graph
            .deps(r)
            .iter()
            .filter_map(|(d, _)| report.realised.get(d)?.path.clone())
            .collect();
        let written = crate::release::write(inst.name.as_str(), &paths, &url, out)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", out.display())))?;
        for image in &written {
            outln!("{}  {}", image.sha256, out.join(&image.file).display());
        }
        errln!("{}: {} images in {}", inst.id, written.len(), out.display());
    }
    Ok(())
}
