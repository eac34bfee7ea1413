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
    let store_sources = store.sources();
    for r in recipes {
        let eval = eval::evaluate(r, &eval::Options::default())?;
        for (_, inst) in eval.graph.nodes() {
            if let crate::derivation::Spec::Source(s) = &inst.spec {
                if let Some(name) = store_sources.path_of(&s.hash).file_name() {
                    sources.insert(name.to_string_lossy().into_owned());
                }
            }
        }
        let settled = realise::settle(&eval, &store, &eval.graph.all());
        live.extend(
            settled
                .ready()
                .filter(|(_, r)| r.output.is_some())
                .map(|(_, r)| r.key),
        );
    }
    let report = store
        .gc(&live, &sources, dry_run)
        .map_err(|e| Failure::usage(format!("gc failed: {e}")))?;
    let verb = if dry_run { "would free" } else { "freed" };
    outln!(
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
        outln!("corrupt object {o}: dropped, it will rebuild");
    }
    for s in &report.corrupt_sources {
        outln!("corrupt source {s}: removed, it will be fetched again");
    }
    outln!(
        "{} objects checked, {} corrupt, {} keys dropped; {} sources checked, {} corrupt; {} leftover temporary files removed",
        report.checked,
        report.corrupt.len(),
        report.keys_dropped,
        report.sources_checked,
        report.corrupt_sources.len(),
        report.leftovers
    );
    if report.corrupt.is_empty() && report.corrupt_sources.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed())
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
        let instances = eval.graph.nodes().map(|(_, i)| (&i.id, &i.spec));
        for t in crate::derivation::check_toolchains(instances) {
            if !seen.insert(t.id.clone()) {
                continue;
            }
            let spec = t.spec;
            let identity = &spec.identity.to_string()[..16];
            let (id, target) = (t.id.as_str(), &spec.target);
            match (&spec.missing[..], &t.version) {
                ([], Some(Ok(v))) => outln!("ok       {id:<28} {target:<20} {identity}  {v}"),
                ([], None) => outln!("ok       {id:<28} {target:<20} {identity}"),
                ([], Some(Err(e))) => outln!("BROKEN   {id:<28} {target:<20} {e}"),
                (m, _) => {
                    let m: Vec<String> = m.iter().map(|p| p.display().to_string()).collect();
                    outln!("MISSING  {id:<28} {target:<20} not found: {}", m.join(", "))
                }
            }
            if !t.ok() {
                missing += 1;
                if let Some(hint) = &spec.install {
                    outln!("         to install: {hint}");
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
