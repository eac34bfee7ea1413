//! Commands that build: build, check, release.

use super::*;

pub(super) fn cmd_build(
    recipe: &RecipeArgs,
    targets: &[String],
    run: &RunArgs,
    json: bool,
    out_link: Option<PathBuf>,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let selected = select(&eval, targets)?;
    let wanted = build::closure(&eval, &selected);
    let report = build::build(&eval, &store, &wanted, &run.options()?);
    let id = |i: usize| eval.instances[i].id.0.clone();
    for (i, e) in &report.failed {
        eprintln!("error: {} failed\n{e}", id(*i));
    }
    // Link the outputs of what was asked for: the named targets, or the graph's ends.
    let is_dependency: Vec<bool> = {
        let mut v = vec![false; eval.instances.len()];
        for &i in &selected {
            for d in &eval.instances[i].deps {
                v[d.instance] = true;
            }
        }
        v
    };
    let links: Vec<(String, PathBuf)> = selected
        .iter()
        .filter(|&&i| !targets.is_empty() || !is_dependency[i])
        .filter_map(|&i| {
            let r = report.realised.get(&i)?;
            r.output?;
            Some((id(i), r.path.clone()?))
        })
        .collect();
    let link_dir = out_link.unwrap_or_else(|| recipe.store_dir().with_file_name("out"));
    if let Err(e) = step::link_outputs(&link_dir, &links) {
        eprintln!(
            "warning: cannot link outputs into {}: {e}",
            link_dir.display()
        );
    }
    if json {
        let ids = |v: &[usize]| v.iter().map(|&i| id(i)).collect::<Vec<_>>();
        let failed: Vec<String> = report.failed.iter().map(|(i, _)| id(*i)).collect();
        let outputs: serde_json::Map<String, serde_json::Value> = report
            .realised
            .iter()
            .filter(|(_, r)| r.output.is_some())
            .filter_map(|(i, r)| Some((id(*i), json!(r.path.as_ref()?.display().to_string()))))
            .collect();
        let doc = json!({
            "built": ids(&report.built),
            "cached": ids(&report.cached),
            "failed": failed,
            "outputs": outputs,
        });
        println!("{doc:#}");
    } else {
        eprintln!(
            "{} built, {} cached, {} failed, {} not run",
            report.built.len(),
            report.cached.len(),
            report.failed.len(),
            report.skipped.len()
        );
    }
    if report.ok() {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: None,
        })
    }
}

pub(super) fn cmd_check(
    recipe: &RecipeArgs,
    targets: &[String],
    run: &RunArgs,
    json: bool,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let wanted = build::closure(&eval, &select(&eval, targets)?);
    let options = run.options()?;
    let built = build::build(&eval, &store, &wanted, &options);
    let id = |i: usize| eval.instances[i].id.0.clone();
    let mut failed: Vec<String> = built.failed.iter().map(|(i, _)| id(*i)).collect();
    for (i, e) in &built.failed {
        eprintln!("error: {} failed\n{e}", id(*i));
    }
    let mut reproducible = Vec::new();
    let mut differs = Vec::new();
    for (i, result) in crate::check::check(&eval, &store, &wanted, &built, &options) {
        match result {
            Ok(c) if c.reproducible() => {
                eprintln!("same     {} {}", id(i), c.stored);
                reproducible.push(id(i));
            }
            Ok(c) => {
                eprintln!(
                    "DIFFERS  {}: {} then {}; files: {}",
                    id(i),
                    c.stored,
                    c.rebuilt,
                    c.differing.join(", ")
                );
                differs.push(json!({"id": id(i), "files": c.differing}));
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed.push(id(i));
            }
        }
    }
    if json {
        println!(
            "{:#}",
            json!({"reproducible": reproducible, "differs": differs, "failed": failed})
        );
    } else {
        eprintln!(
            "{} reproducible, {} differ, {} failed",
            reproducible.len(),
            differs.len(),
            failed.len()
        );
    }
    if differs.is_empty() && failed.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: None,
        })
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
    let releases: Vec<usize> = select(&eval, targets)?
        .into_iter()
        .filter(|&i| eval.instances[i].kind == Kind::Release)
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
        .flat_map(|&r| eval.instances[r].deps.iter().map(|d| d.instance))
        .collect();
    let report = build::build(
        &eval,
        &store,
        &build::closure(&eval, &images),
        &run.options()?,
    );
    for (i, e) in &report.failed {
        eprintln!("error: {} failed\n{e}", eval.instances[*i].id);
    }
    if !report.ok() {
        return Err(Failure {
            status: EXIT_FAILURE,
            message: Some("no release written: the images did not all build".into()),
        });
    }
    for r in releases {
        let inst = &eval.instances[r];
        let url = match (base_url, &inst.spec) {
            (Some(u), _) => u.to_string(),
            (None, crate::eval::Spec::Release(spec)) => spec.base_url.clone().ok_or_else(|| {
                Failure::usage(format!("{} has no base-url: pass --base-url URL", inst.id))
            })?,
            (None, _) => continue,
        };
        let paths: Vec<PathBuf> = inst
            .deps
            .iter()
            .filter_map(|d| report.realised.get(&d.instance)?.path.clone())
            .collect();
        let written = crate::release::write(&inst.name.0, &paths, &url, out)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", out.display())))?;
        for image in &written {
            println!("{}  {}", image.sha256, out.join(&image.file).display());
        }
        eprintln!("{}: {} images in {}", inst.id, written.len(), out.display());
    }
    Ok(())
}
