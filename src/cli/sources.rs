//! Sources in the store: fetch and import.

use super::*;

pub(super) fn cmd_fetch(
    recipe: &RecipeArgs,
    fetch: &FetchArgs,
    jobs: usize,
    remote: &RemoteArgs,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    // Fetching is realising the source instances, the same way a build does.
    let sources = Selection::from_fn(eval.graph.len(), |i| {
        eval.instance(i).kind() == Kind::Source
    });
    let options = realise::Options {
        jobs: jobs.max(1),
        keep_going: true,
        fetch: fetch.options()?,
        remote: remote.open()?,
    };
    stop_on_signals();
    let realiser = Realiser::new(&eval, &store, options);
    let report = realiser.build(&sources);
    report_remote(&realiser);
    for i in sources.iter() {
        let inst = eval.instance(i);
        let hash = match &inst.spec {
            crate::derivation::Spec::Source(s) => s.hash.to_string(),
            _ => continue,
        };
        if let Some(path) = report.realised.get(&i).and_then(|r| r.path.as_ref()) {
            outln!("{hash}  {}", path.display());
        }
    }
    for (i, e) in &report.failed {
        errln!("error: {}", eval.instance(*i).id);
        print_diagnostic(e);
    }
    interrupted()?;
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: Some(format!(
                "{} of {} sources could not be fetched",
                report.failed.len(),
                sources.count()
            )),
        })
    }
}

pub(super) fn cmd_import(
    paths: &[PathBuf],
    recipes: &[PathBuf],
    any: bool,
    store: &StoreArgs,
) -> Result<(), Failure> {
    if recipes.is_empty() && !any {
        return Err(Failure::usage(
            "say which sources to match: --recipe FILE (a source it declares) or --any".into(),
        ));
    }
    let mut expected = Vec::new();
    for r in recipes {
        let eval = eval::evaluate(r, &eval::Options::default())?;
        expected.extend(eval.graph.nodes().filter_map(|(_, i)| match &i.spec {
            crate::derivation::Spec::Source(s) => Some(s.hash.clone()),
            _ => None,
        }));
    }
    let store = store.open(recipes.first().map_or(Path::new("."), PathBuf::as_path))?;
    let sources = store.sources();
    let mut algos: Vec<HashAlgo> = expected.iter().map(|h| h.algo).collect();
    algos.sort();
    algos.dedup();
    let mut refused = 0;
    for p in paths {
        let result = if any {
            crate::fetch::import_file(&sources, p, None)
                .map(Some)
                .map_err(|e| e.to_string())
        } else {
            match matching_hash(p, &algos, &expected) {
                Err(e) => Err(e.to_string()),
                Ok(None) => Ok(None),
                Ok(Some(hash)) => crate::fetch::import_file(&sources, p, Some(&hash))
                    .map(Some)
                    .map_err(|e| e.to_string()),
            }
        };
        match result {
            Ok(Some(hash)) => outln!("{hash}  {}", p.display()),
            Ok(None) => {
                refused += 1;
                errln!(
                    "error: {}: its hash matches no source of the given recipes",
                    p.display()
                );
            }
            Err(e) => {
                refused += 1;
                errln!("error: {}: {e}", p.display());
            }
        }
    }
    if refused == 0 {
        Ok(())
    } else {
        Err(Failure::failed())
    }
}

/// The hash, in one of the algorithms the recipes use, by which `path` is one of
/// their sources.
fn matching_hash(
    path: &Path,
    algos: &[HashAlgo],
    expected: &[crate::hash::SourceHash],
) -> std::io::Result<Option<crate::hash::SourceHash>> {
    for algo in algos {
        let h = crate::fetch::hash_file(path, *algo)?;
        if expected.contains(&h) {
            return Ok(Some(h));
        }
    }
    Ok(None)
}
