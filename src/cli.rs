//! The `bake` command line: a thin layer over the library.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use miette::{GraphicalReportHandler, GraphicalTheme};
use serde_json::json;

use crate::eval::{self, Evaluation};
use crate::graph;
use crate::recipe::Report;

/// Exit status for a usage or recipe error.
const EXIT_USAGE: i32 = 2;

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
    fn evaluate(&self) -> Result<Evaluation, Box<Report>> {
        let store = self
            .cache
            .clone()
            .unwrap_or_else(|| default_store(&self.file));
        eval::evaluate(
            &self.file,
            &eval::Options {
                stat_cache: Some(store.join("fingerprints")),
            },
        )
    }
}

/// `cache/` at the root of the repository holding the recipe: the nearest ancestor
/// with a `cache` directory or a `.git`; else `./cache`.
fn default_store(recipe: &Path) -> PathBuf {
    let start = recipe
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
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
        Command::Eval { recipe, json } => recipe.evaluate().map(|e| print_eval(&e, json)),
        Command::Graph { recipe, dot } => recipe.evaluate().map(|e| print_graph(&e, dot)),
    };
    match result {
        Ok(()) => 0,
        Err(report) => {
            print_report(&report);
            EXIT_USAGE
        }
    }
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
