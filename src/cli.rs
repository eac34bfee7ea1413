//! The `bake` command line: a thin layer over the library.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use miette::{GraphicalReportHandler, GraphicalTheme};
use serde_json::json;

use crate::eval::{self, Evaluation};
use crate::fetch::{parse_mirrors, FetchOptions, Fetcher, SourceStore};
use crate::hash::HashAlgo;
use crate::recipe::{did_you_mean, FileId, Kind, Report};
use crate::store::Store;
use crate::{build, graph, plan, step};

/// Exit status for a usage or recipe error.
const EXIT_USAGE: i32 = 2;
/// Exit status for a build or check failure.
const EXIT_FAILURE: i32 = 1;

#[derive(Parser)]
#[command(
    name = "bake",
    version,
    about = "Evaluate KDL recipes into a content-addressed build graph and build from it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every derivation: id, kind, axes, eval key and inputs
    Eval {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Print {"derivations":[{"id","name","kind","axes","key","inputs"}]}
        #[arg(long)]
        json: bool,
    },
    /// Show the dependency graph
    Graph {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Print it as Graphviz (render with `dot -Tsvg`)
        #[arg(long)]
        dot: bool,
    },
    /// Show what a build would do, and why
    Plan {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Names (every instance) or instance ids; all when none
        targets: Vec<String>,
        /// Print {"build":[{"id","reason"}],"cached":[ids]}
        #[arg(long)]
        json: bool,
    },
    /// Build the targets and what they need; only what changed runs
    Build {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Names (every instance) or instance ids; all when none
        targets: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        /// End with {"built":[ids],"cached":[ids],"failed":[ids],"outputs":{id:path}}
        #[arg(long)]
        json: bool,
        /// Where to link the targets' outputs [default: out/ beside the store]
        #[arg(long, value_name = "DIR")]
        out_link: Option<PathBuf>,
    },
    /// Say why an instance rebuilt, or would: what changed since its last build
    Why {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// A name (every instance) or an instance id
        target: String,
    },
    /// Toolchains: what is installed, its version and identity
    Toolchain {
        #[command(subcommand)]
        command: ToolchainCommand,
    },
    /// Build, then build again and compare bit for bit (reproducibility)
    Check {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Names (every instance) or instance ids; all when none
        targets: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        /// Print {"reproducible":[ids],"differs":[{"id","files"}],"failed":[ids]}
        #[arg(long)]
        json: bool,
    },
    /// Build the sysext images and write a publishable directory
    Release {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Release names or ids; all when none
        targets: Vec<String>,
        /// The directory to write (images already there are kept and listed)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Where the directory will be served from [default: the recipe's base-url]
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Fetch every source the recipe needs into the store
    Fetch {
        #[command(flatten)]
        recipe: RecipeArgs,
        #[command(flatten)]
        fetch: FetchArgs,
        /// Downloads at once [default: 4]
        #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 4)]
        jobs: usize,
    },
    /// Add local files to the store by hash
    Import {
        /// Files to add
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Take only files whose hash a source of this recipe declares
        #[arg(long = "recipe", value_name = "FILE")]
        recipes: Vec<PathBuf>,
        /// Take any file, named by its sha256
        #[arg(long, conflicts_with = "recipes")]
        any: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete what the given recipes do not reach (and no line of ROOT/roots names)
    Gc {
        /// Recipes whose current outputs and sources are kept
        recipes: Vec<PathBuf>,
        /// Report what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rehash every object; report and drop corrupt ones so they rebuild
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum ToolchainCommand {
    /// Resolve every toolchain the recipes use; say what to install for missing ones
    Check {
        /// Recipes [default: every recipe in recipes/ at the repository root]
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct StoreArgs {
    /// The store directory [default: cache/ at the repository root]
    #[arg(long = "cache", env = "BAKE_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
}

impl StoreArgs {
    /// The store: as given, or `cache/` at the root of the repository around `near`.
    fn open(&self, near: &Path) -> Result<Store, Failure> {
        let dir = self.cache.clone().unwrap_or_else(|| default_store(near));
        Store::open(&dir)
            .map_err(|e| Failure::usage(format!("cannot open the store {}: {e}", dir.display())))
    }
}

#[derive(Args)]
struct RunArgs {
    /// Steps to run at once [default: the number of cores]
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// After a failure, go on building everything that does not depend on it
    #[arg(long)]
    keep_going: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

#[derive(Args)]
struct FetchArgs {
    /// Mirrors tried before a source's URLs: base URLs or local directories
    #[arg(
        long = "mirror",
        env = "BAKE_MIRRORS",
        value_delimiter = ',',
        value_name = "URL|DIR"
    )]
    mirrors: Vec<String>,
    /// Use only the store and local mirrors
    #[arg(long)]
    offline: bool,
}

impl FetchArgs {
    fn options(&self) -> Result<FetchOptions, Failure> {
        let mirrors = parse_mirrors(&self.mirrors.join(","))
            .map_err(|e| Failure::usage(format!("--mirror: {e}")))?;
        Ok(FetchOptions {
            mirrors,
            offline: self.offline,
            ..FetchOptions::default()
        })
    }
}

impl RunArgs {
    fn options(&self) -> Result<build::Options, Failure> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(build::Options {
            jobs: self.jobs.unwrap_or(cores).max(1),
            keep_going: self.keep_going,
            fetch: self.fetch.options()?,
        })
    }
}

#[derive(Args)]
struct RecipeArgs {
    /// The recipe file
    file: PathBuf,
    /// The store directory [default: cache/ at the repository root]
    #[arg(long = "cache", env = "BAKE_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
}

impl RecipeArgs {
    fn store_dir(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| default_store(&self.file))
    }

    fn evaluate(&self) -> Result<Evaluation, Box<Report>> {
        eval::evaluate(
            &self.file,
            &eval::Options {
                stat_cache: Some(self.store_dir().join("fingerprints")),
            },
        )
    }

    fn open_store(&self) -> Result<Store, Failure> {
        let dir = self.store_dir();
        Store::open(&dir)
            .map_err(|e| Failure::usage(format!("cannot open the store {}: {e}", dir.display())))
    }
}

/// Why a command failed, and with which exit status.
struct Failure {
    status: i32,
    message: Option<String>,
}

impl Failure {
    fn usage(message: String) -> Failure {
        Failure {
            status: EXIT_USAGE,
            message: Some(message),
        }
    }
}

impl From<Box<Report>> for Failure {
    fn from(report: Box<Report>) -> Failure {
        print_report(&report);
        Failure {
            status: EXIT_USAGE,
            message: None,
        }
    }
}

/// The instances TARGETS name: a build name (every instance of it), another
/// kind's name when no build has it, or an instance id. None means all.
fn select(eval: &Evaluation, targets: &[String]) -> Result<Vec<usize>, Failure> {
    if targets.is_empty() {
        return Ok((0..eval.instances.len()).collect());
    }
    let mut out = Vec::new();
    for t in targets {
        let by_id: Vec<usize> = eval.find(t).into_iter().collect();
        let of_kind = |builds: bool| -> Vec<usize> {
            eval.instances
                .iter()
                .enumerate()
                .filter(|(_, i)| i.name.0 == *t && (i.kind == Kind::Build) == builds)
                .map(|(n, _)| n)
                .collect()
        };
        match [by_id, of_kind(true), of_kind(false)]
            .into_iter()
            .find(|v| !v.is_empty())
        {
            Some(v) => out.extend(v),
            None => {
                let names = eval.instances.iter().map(|i| i.id.0.as_str());
                let hint = did_you_mean(t, names)
                    .map_or(String::new(), |n| format!("; did you mean `{n}`?"));
                let file = &eval.files.get(FileId(0)).display;
                return Err(Failure::usage(format!("no target `{t}` in {file}{hint}")));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `cache/` at the root of the repository holding the recipe: the nearest ancestor
/// with a `cache` directory or a `.git`; else `./cache`.
fn default_store(recipe: &Path) -> PathBuf {
    let start = recipe.canonicalize().ok().and_then(|p| {
        if p.is_dir() {
            Some(p)
        } else {
            p.parent().map(Path::to_path_buf)
        }
    });
    let mut dir = start.as_deref();
    while let Some(d) = dir {
        if d.join("cache").is_dir() || d.join(".git").exists() {
            return d.join("cache");
        }
        dir = d.parent();
    }
    PathBuf::from("cache")
}

/// Runs bake with the process arguments and returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval { recipe, json } => recipe
            .evaluate()
            .map(|e| print_eval(&e, json))
            .map_err(Failure::from),
        Command::Graph { recipe, dot } => recipe
            .evaluate()
            .map(|e| print_graph(&e, dot))
            .map_err(Failure::from),
        Command::Plan {
            recipe,
            targets,
            json,
        } => cmd_plan(&recipe, &targets, json),
        Command::Build {
            recipe,
            targets,
            run,
            json,
            out_link,
        } => cmd_build(&recipe, &targets, &run, json, out_link),
        Command::Why { recipe, target } => cmd_why(&recipe, &target),
        Command::Fetch {
            recipe,
            fetch,
            jobs,
        } => cmd_fetch(&recipe, &fetch, jobs),
        Command::Toolchain {
            command: ToolchainCommand::Check { files },
        } => cmd_toolchain_check(&files),
        Command::Check {
            recipe,
            targets,
            run,
            json,
        } => cmd_check(&recipe, &targets, &run, json),
        Command::Release {
            recipe,
            targets,
            out,
            base_url,
            run,
        } => cmd_release(&recipe, &targets, &out, base_url.as_deref(), &run),
        Command::Import {
            paths,
            recipes,
            any,
            store,
        } => cmd_import(&paths, &recipes, any, &store),
        Command::Gc {
            recipes,
            dry_run,
            store,
        } => cmd_gc(&recipes, dry_run, &store),
        Command::Verify { store } => cmd_verify(&store),
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            if let Some(m) = f.message {
                eprintln!("error: {m}");
            }
            f.status
        }
    }
}

fn cmd_plan(recipe: &RecipeArgs, targets: &[String], json: bool) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let wanted = build::closure(&eval, &select(&eval, targets)?);
    let p = plan::plan(&eval, &store, &wanted);
    let id = |i: usize| eval.instances[i].id.0.as_str();
    let mut stdout = std::io::stdout().lock();
    if json {
        let build: Vec<_> = p
            .build
            .iter()
            .map(|s| json!({"id": id(s.instance), "reason": s.reason}))
            .collect();
        let cached: Vec<&str> = p.cached.iter().map(|&i| id(i)).collect();
        let _ = writeln!(stdout, "{:#}", json!({"build": build, "cached": cached}));
    } else {
        let width = p
            .build
            .iter()
            .map(|s| id(s.instance).len())
            .max()
            .unwrap_or(0);
        for s in &p.build {
            let _ = writeln!(stdout, "build  {:<width$}  {}", id(s.instance), s.reason);
        }
        let _ = writeln!(
            stdout,
            "{} to build, {} cached",
            p.build.len(),
            p.cached.len()
        );
    }
    Ok(())
}

fn cmd_build(
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

fn cmd_why(recipe: &RecipeArgs, target: &str) -> Result<(), Failure> {
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let selected = select(&eval, &[target.to_string()])?;
    let wanted = build::closure(&eval, &selected);
    let p = plan::plan(&eval, &store, &wanted);
    let mut stdout = std::io::stdout().lock();
    for i in selected {
        let inst = &eval.instances[i];
        let _ = match p.build.iter().find(|s| s.instance == i) {
            None => writeln!(stdout, "{}: up to date", inst.id),
            Some(s) => {
                let changes = plan::changes(&eval, &store, i, &p.outputs);
                let _ = writeln!(stdout, "{}: would build: {}", inst.id, s.reason);
                for c in changes {
                    let _ = writeln!(stdout, "  {c}");
                }
                Ok(())
            }
        };
    }
    Ok(())
}

fn print_report(report: &Report) {
    let theme = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme);
    if handler.render_report(&mut out, report).is_err() {
        out = format!("error: {report}\n");
    }
    eprint!("{out}");
}

fn print_eval(e: &Evaluation, as_json: bool) {
    let mut stdout = std::io::stdout().lock();
    if as_json {
        let derivations: Vec<_> = e
            .instances
            .iter()
            .map(|i| {
                let axes: serde_json::Map<String, serde_json::Value> =
                    i.axes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                let inputs: Vec<&str> = i
                    .deps
                    .iter()
                    .map(|d| e.instances[d.instance].id.0.as_str())
                    .collect();
                json!({
                    "id": i.id.0,
                    "name": i.name.0,
                    "kind": i.kind.name(),
                    "axes": axes,
                    "key": i.key.to_string(),
                    "inputs": inputs,
                })
            })
            .collect();
        let doc = json!({ "derivations": derivations });
        let _ = writeln!(stdout, "{doc:#}");
        return;
    }
    let width = e.instances.iter().map(|i| i.id.0.len()).max().unwrap_or(0);
    for i in &e.instances {
        let inputs: Vec<&str> = i
            .deps
            .iter()
            .map(|d| e.instances[d.instance].id.0.as_str())
            .collect();
        let arrow = if inputs.is_empty() {
            String::new()
        } else {
            format!("  <- {}", inputs.join(", "))
        };
        let id = if arrow.is_empty() {
            i.id.0.clone()
        } else {
            format!("{:<width$}", i.id.0)
        };
        let _ = writeln!(
            stdout,
            "{}  {:<9} {id}{arrow}",
            &i.key.to_string()[..16],
            i.kind.name()
        );
    }
}

fn print_graph(e: &Evaluation, dot: bool) {
    let mut stdout = std::io::stdout().lock();
    if dot {
        let _ = stdout.write_all(graph::to_dot(e).as_bytes());
        return;
    }
    for i in &e.instances {
        let _ = writeln!(stdout, "{}", i.id);
        for d in &i.deps {
            let _ = writeln!(stdout, "  <- {}", e.instances[d.instance].id);
        }
    }
}

fn cmd_fetch(recipe: &RecipeArgs, fetch: &FetchArgs, jobs: usize) -> Result<(), Failure> {
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

fn cmd_import(
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

fn cmd_gc(recipes: &[PathBuf], dry_run: bool, store_args: &StoreArgs) -> Result<(), Failure> {
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

fn cmd_verify(store_args: &StoreArgs) -> Result<(), Failure> {
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

fn cmd_release(
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

fn cmd_check(
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

fn cmd_toolchain_check(files: &[PathBuf]) -> Result<(), Failure> {
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
