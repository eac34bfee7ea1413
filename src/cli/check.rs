//! `bake check`: build what is missing, rebuild under variation, compare, report.

use std::time::{Duration, Instant};

use super::*;
use crate::realise::Checked;
use crate::units::show_duration;
use crate::variation::{self, Variations, Vary};

/// How long one diffoscope report may take.
const DIFFOSCOPE_LIMIT: Duration = Duration::from_secs(600);

pub(super) struct CheckArgs<'a> {
    pub recipe: &'a RecipeArgs,
    pub targets: &'a [String],
    pub run: &'a RunArgs,
    pub variations: Option<&'a str>,
    pub diffoscope: bool,
    pub json: bool,
}

pub(super) fn cmd_check(args: CheckArgs<'_>) -> Result<(), Failure> {
    let began = Instant::now();
    // Named variations must all apply; the default is every one that can.
    let (wanted, strict) = match args.variations {
        Some(list) => (
            variation::parse_list(list)
                .map_err(|e| Failure::usage(format!("--variations: {e}")))?,
            true,
        ),
        None => (Vary::ALL.into_iter().collect(), false),
    };
    let eval = args.recipe.evaluate()?;
    let store = args.recipe.open_store()?;
    let (_, wanted_ids) = select(&eval, args.targets)?;
    let variations = Variations::prepare(&wanted, strict, &store).map_err(Failure::usage)?;
    let used: Vec<Vary> = variations.used().collect();
    if !args.json || !used.is_empty() {
        if used.is_empty() {
            errln!("varying nothing: the rebuild runs as the build did");
        }
        for v in &used {
            errln!("varying  {:<9} {}", v.name(), v.what());
        }
        for (v, why) in variations.skipped() {
            errln!("not varying {}: {why}", v.name());
        }
    }
    stop_on_signals();
    let realiser = Realiser::new(&eval, &store, args.run.options()?);
    let built = realiser.build(&wanted_ids);
    report_failures(&eval, &built);
    interrupted()?;
    let id = |i: usize| eval.instance(i).id.to_string();
    let mut instances = Vec::new();
    let (mut same, mut different, mut failed) = (0, 0, 0);
    for (i, why) in built.failed.iter().map(|(i, e)| (*i, e.to_string())).chain(
        built
            .skipped
            .iter()
            .map(|i| (*i, "not built: a dependency failed".into())),
    ) {
        failed += 1;
        instances.push(json!({"id": id(i), "result": "failed", "files": [], "error": why}));
    }
    let checked = realiser.check(&wanted_ids, &built, &variations);
    interrupted()?;
    for (i, result) in checked {
        match result {
            Ok(c) if c.reproducible() => {
                same += 1;
                errln!("same       {} {}", id(i), c.stored);
                instances.push(json!({
                    "id": id(i), "result": "same", "files": [], "output": c.stored.to_string(),
                }));
            }
            Ok(c) => {
                different += 1;
                let report = args
                    .diffoscope
                    .then(|| diffoscope(&store, &eval, i, &c))
                    .flatten();
                show_difference(&id(i), &c, report.as_deref());
                instances.push(json!({
                    "id": id(i),
                    "result": "different",
                    "files": c.differing.iter().map(|f| json!({
                        "path": f.path, "sizes": [f.sizes.0, f.sizes.1], "first": f.first,
                    })).collect::<Vec<_>>(),
                    "build": c.stored_path,
                    "rebuild": c.rebuilt_path,
                    "diffoscope": report,
                }));
            }
            Err(e) => {
                failed += 1;
                errln!("failed     {}: the rebuild failed", id(i));
                print_diagnostic(&e);
                instances.push(json!({
                    "id": id(i), "result": "failed", "files": [], "error": e.to_string(),
                }));
            }
        }
    }
    let total = same + different + failed;
    let took = began.elapsed();
    errln!(
        "same={same} different={different} failed={failed} total={total} (in {})",
        show_duration(took)
    );
    if args.json {
        outln!(
            "{:#}",
            json!({
                "same": same,
                "different": different,
                "failed": failed,
                "total": total,
                "variations": used.iter().map(|v| v.name()).collect::<Vec<_>>(),
                "not_varied": variations.skipped().iter()
                    .map(|(v, why)| json!({"variation": v.name(), "why": why}))
                    .collect::<Vec<_>>(),
                "seconds": took.as_secs_f64(),
                "instances": instances,
            })
        );
    }
    if different == 0 && failed == 0 {
        Ok(())
    } else {
        Err(Failure::failed())
    }
}

fn show_difference(id: &str, c: &Checked, report: Option<&Path>) {
    errln!("DIFFERENT  {id}: {} then {}", c.stored, c.rebuilt);
    for f in &c.differing {
        let size = |s: Option<u64>| s.map_or_else(|| "-".into(), |n| n.to_string());
        errln!(
            "    {}: {} and {} bytes; {}",
            f.path,
            size(f.sizes.0),
            size(f.sizes.1),
            f.first
        );
    }
    errln!("    the build:   {}", c.stored_path.display());
    errln!(
        "    the rebuild: {} (until bake gc)",
        c.rebuilt_path.display()
    );
    if let Some(r) = report {
        errln!("    diffoscope:  {}", r.display());
    }
}

/// diffoscope's HTML report on the two trees, when it is installed.
fn diffoscope(store: &Store, eval: &Evaluation, i: usize, c: &Checked) -> Option<PathBuf> {
    let id = &eval.instance(i).id;
    let html = match store.check_report_path(id) {
        Ok(p) => p,
        Err(e) => {
            errln!("warning: no diffoscope report for {id}: {e}");
            return None;
        }
    };
    match crate::compare::diffoscope(&c.stored_path, &c.rebuilt_path, &html, DIFFOSCOPE_LIMIT)? {
        Ok(()) => Some(html),
        Err(e) => {
            errln!("warning: no diffoscope report for {id}: {e}");
            None
        }
    }
}
