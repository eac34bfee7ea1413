//! Store and machine upkeep: gc, verify, toolchain check.

use super::*;

pub(super) fn cmd_gc(
    recipes: &[PathBuf],
    dry_run: bool,
    store_args: &StoreArgs,
) -> Result<(), Failure> {
    let store = store_args.open(recipes.first().map_or(Path::new("."), PathBuf::as_path))?;
    let mut live = std::collections::HashSet::new();
    let mut sources = std::collections::HashSet::new();
    let store_sources = SourceStore::new(store.sources_dir());
    for r in recipes {
        let eval = eval::evaluate(r, &eval::Options::default())?;
        let all = vec![true; eval.instances.len()];
        let p = plan::plan(&eval, &store, &all);
        for (i, inst) in eval.instances.iter().enumerate() {
            if let crate::eval::Spec::Source(s) = &inst.spec {
                if let Some(name) = store_sources.path_of(&s.hash).file_name() {
                    sources.insert(name.to_string_lossy().into_owned());
                }
            }
            if let Some(key) = build::build_key(&eval, inst, |d| p.outputs[d]) {
                if p.outputs[i].is_some() {
                    live.insert(key);
                }
            }
        }
    }
    let report = store
        .gc(&live, &sources, dry_run)
        .map_err(|e| Failure::usage(format!("gc failed: {e}")))?;
    let verb = if dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {:.1} MiB: {} keys, {} objects, {} logs, {} sources",
        report.bytes as f64 / (1 << 20) as f64,
        report.keys,
        report.objects,
        report.logs,
        report.sources
    );
    Ok(())
}

pub(super) fn cmd_verify(store_args: &StoreArgs) -> Result<(), Failure> {
    let store = store_args.open(Path::new("."))?;
    let report = store
        .verify()
        .map_err(|e| Failure::usage(format!("verify failed: {e}")))?;
    for o in &report.corrupt {
        println!("corrupt object {o}: dropped, it will rebuild");
    }
    println!(
        "{} objects checked, {} corrupt, {} keys dropped",
        report.checked,
        report.corrupt.len(),
        report.keys_dropped
    );
    if report.corrupt.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: None,
        })
    }
}

pub(super) fn cmd_toolchain_check(files: &[PathBuf]) -> Result<(), Failure> {
    let files: Vec<PathBuf> = if files.is_empty() {
        let dir = default_store(Path::new(".")).with_file_name("recipes");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| {
                Failure::usage(format!("cannot list {}: {e}; name a recipe", dir.display()))
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
            .collect();
        found.sort();
        found
    } else {
        files.to_vec()
    };
    let mut seen = std::collections::HashSet::new();
    let mut missing = 0;
    for f in &files {
        let eval = eval::evaluate(f, &eval::Options::default())?;
        for t in crate::toolchain::check(&eval) {
            if !seen.insert(t.id.clone()) {
                continue;
            }
            let identity = &t.identity.to_string()[..16];
            match (&t.missing[..], &t.version) {
                ([], Some(Ok(v))) => {
                    println!("ok       {:<28} {:<20} {identity}  {v}", t.id, t.target)
                }
                ([], None) => println!("ok       {:<28} {:<20} {identity}", t.id, t.target),
                ([], Some(Err(e))) => println!("BROKEN   {:<28} {:<20} {e}", t.id, t.target),
                (m, _) => println!(
                    "MISSING  {:<28} {:<20} not found: {}",
                    t.id,
                    t.target,
                    m.join(", ")
                ),
            }
            if !t.ok() {
                missing += 1;
                if let Some(hint) = &t.install {
                    println!("         to install: {hint}");
                }
            }
        }
    }
    if missing == 0 {
        Ok(())
    } else {
        Err(Failure {
            status: EXIT_FAILURE,
            message: Some(format!("{missing} toolchain instances are not usable")),
        })
    }
}
