//! Sources in the store: fetch and import.

use super::*;

pub(super) fn cmd_fetch(
    recipe: &RecipeArgs,
    fetch: &FetchArgs,
    jobs: usize,
) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let fetcher = Fetcher::new(SourceStore::new(store.sources_dir()), fetch.options()?);
    let sources: Vec<crate::fetch::SourceSpec> = eval
        .instances
        .iter()
        .filter_map(|i| match &i.spec {
            crate::eval::Spec::Source(s) => Some(step::source_spec(i, s)),
            _ => None,
        })
        .collect::<Result<_, _>>()
        .map_err(Failure::usage)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Failure::usage(format!("cannot start threads: {e}")))?;
    let results: Vec<_> = pool.install(|| {
        use rayon::prelude::*;
        sources.par_iter().map(|s| fetcher.fetch(s)).collect()
    });
    let mut failed = 0;
    for (s, r) in sources.iter().zip(results) {
        match r {
            Ok(path) => println!("{}  {}", s.hash, path.display()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", s.name);
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: Some(format!(
                "{failed} of {} sources could not be fetched",
                sources.len()
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
        expected.extend(eval.instances.iter().filter_map(|i| match &i.spec {
            crate::eval::Spec::Source(s) => Some(s.hash.clone()),
            _ => None,
        }));
    }
    let store = store.open(recipes.first().map_or(Path::new("."), PathBuf::as_path))?;
    let sources = SourceStore::new(store.sources_dir());
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
            Ok(Some(hash)) => println!("{hash}  {}", p.display()),
            Ok(None) => {
                refused += 1;
                eprintln!(
                    "error: {}: its hash matches no source of the given recipes",
                    p.display()
                );
            }
            Err(e) => {
                refused += 1;
                eprintln!("error: {}: {e}", p.display());
            }
        }
    }
    if refused == 0 {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: None,
        })
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
