//! The `bake` command line: a thin layer over the library.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};
use serde_json::json;

use crate::eval::{self, Evaluation};
use crate::fetch::{parse_mirrors, FetchOptions};
use crate::graph::Selection;
use crate::hash::HashAlgo;
use crate::realise::{self, Realiser};
use crate::recipe::{Kind, Report};
use crate::store::Store;

/// Writes a line to stdout. A closed pipe (`bake eval big.kdl | head -1`) ends
/// bake quietly, as it ends `cat`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes a line to stderr; a closed stderr is no reason to panic.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod check;
mod docs;
mod inspect;
mod rebuild;
mod remote;
mod run;
mod sources;
mod test;
mod upkeep;

use check::*;
use docs::*;
use inspect::*;
use rebuild::*;
use remote::*;
use run::*;
use sources::*;
use test::*;
use upkeep::*;

fn write_out(args: std::fmt::Arguments) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

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
        /// Print {"build":[{"id","reason"}],"cached":[ids],"remote":[ids]}
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Build the targets and what they need; only what changed runs
    Build {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Names (every instance) or instance ids; all when none
        targets: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        /// End with {"built":[ids],"cached":[ids],"remote":[ids],"failed":[ids],"outputs":{id:path}}
        #[arg(long)]
        json: bool,
        /// Where to link the targets' outputs [default: out/ beside the store]
        #[arg(long, value_name = "DIR")]
        out_link: Option<PathBuf>,
        #[command(flatten)]
        trace: TraceArgs,
    },
    /// Say why an instance rebuilt, or would: what changed since its last build
    Why {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// A name (every instance) or an instance id
        target: String,
    },
    /// Build what the tests need, then run them; a test that passed before is not run again
    Test {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Test names (every instance) or instance ids; all tests when none
        targets: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        /// Run the selected tests even if they passed before
        #[arg(long)]
        rerun: bool,
        /// Print {"passed":[ids],"failed":[ids],"cached":[ids]}
        #[arg(long)]
        json: bool,
        /// Also write a JUnit XML report (one testcase per test instance)
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Toolchains: what is installed, its version and identity
    Toolchain {
        #[command(subcommand)]
        command: ToolchainCommand,
    },
    /// Build, then rebuild each build and image under a changed environment
    /// and compare file by file (reproducibility)
    Check {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Names (every instance) or instance ids; the recipe's default when none
        targets: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        /// What the rebuild changes: a comma-separated list of time, hostname,
        /// kernel, jobs, dirorder, aslr, uid, cpus; `all`, or `none` for the
        /// same environment [default: every one this machine can apply]
        #[arg(long, value_name = "LIST")]
        variations: Option<String>,
        /// Do not write diffoscope reports on what differs
        #[arg(long)]
        no_diffoscope: bool,
        /// Print {"same","different","failed","total","variations",
        /// "instances":[{"id","result","files"}]}
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
        signing: SigningArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Rebuild a published release from its recipe and compare each image with
    /// the published bytes, naming the first instance that differs
    RebuildCheck {
        /// The release: a directory, or the http(s) URL it is served from
        #[arg(value_name = "DIR|URL")]
        release: String,
        /// The recipe [default: the one the manifest names, from the root of
        /// the repository around the current directory]
        #[arg(long, value_name = "FILE")]
        recipe: Option<PathBuf>,
        /// The store directory [default: cache/ at the recipe's repository root]
        #[arg(long = "cache", env = "BAKE_CACHE", value_name = "DIR")]
        cache: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
        /// Print {"release","identical","different","tampered","failed","total",
        /// "images":[{"file","id","result","sha256"}]}
        #[arg(long)]
        json: bool,
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
        #[command(flatten)]
        remote: RemoteArgs,
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
    /// Join a Remote Workers API server's pool (BuildGrid) and run the steps
    /// it leases, with the toolchains the recipe declares that are installed here
    Worker {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// The server: grpc://HOST:PORT[/INSTANCE] or grpcs://HOST[:PORT][/INSTANCE]
        #[arg(long, value_name = "URL")]
        server: String,
        /// The environment variable holding a token for the server (`authorization: Bearer`)
        #[arg(long, value_name = "VAR")]
        remote_token_env: Option<String>,
        /// Send the token as it is in this header instead
        #[arg(long, value_name = "NAME", requires = "remote_token_env")]
        remote_token_header: Option<String>,
        /// The bot's name [default: HOSTNAME-PID]
        #[arg(long)]
        name: Option<String>,
        /// Parallel jobs a step may use [default: the number of cores]
        #[arg(short = 'j', long)]
        jobs: Option<usize>,
    },
    /// Print a shell completion script: bake completions bash > /etc/bash_completion.d/bake
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): bake man | man -l -
    Man {
        /// Write bake.1 and one bake-COMMAND.1 per command into DIR instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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

/// How `bake release` signs what it publishes.
#[derive(Args)]
struct SigningArgs {
    /// Sign SHA256SUMS, the SBOMs and the provenance with this GnuPG key: a key
    /// id or fingerprint in your keyring, or a file holding an exported secret
    /// key. The transfer files then set Verify=true and the snippets install the
    /// public key as /etc/systemd/import-pubring.gpg
    #[arg(long, value_name = "KEYID|FILE")]
    sign_key: Option<String>,
    /// A file holding the signing key's passphrase (never give it as an argument);
    /// without it gpg-agent asks
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    passphrase_file: Option<PathBuf>,
    /// Sign the dm-verity root hash of each DDI image (format "ddi") with this
    /// PEM private key, adding the root-verity-sig partition
    #[arg(long, value_name = "FILE", requires = "verity_cert")]
    verity_key: Option<PathBuf>,
    /// The PEM X.509 certificate of --verity-key
    #[arg(long, value_name = "FILE", requires = "verity_key")]
    verity_cert: Option<PathBuf>,
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
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct RemoteArgs {
    /// A Remote Execution API v2 cache (BuildGrid, Buildbarn, BuildBuddy, ...):
    /// grpc://HOST:PORT[/INSTANCE] or grpcs://HOST[:PORT][/INSTANCE]
    #[arg(long = "remote", env = "BAKE_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// The environment variable holding a token for the remote, sent as
    /// `authorization: Bearer TOKEN`
    #[arg(long, value_name = "VAR")]
    remote_token_env: Option<String>,
    /// Send the token as it is in this header instead (BuildBuddy: x-buildbuddy-api-key)
    #[arg(long, value_name = "NAME", requires = "remote_token_env")]
    remote_token_header: Option<String>,
    /// Upload what is built here to the remote [default: when CI is set]
    #[arg(long, overrides_with = "no_remote_upload")]
    remote_upload: bool,
    /// Do not upload to the remote, even in CI
    #[arg(long, overrides_with = "remote_upload")]
    no_remote_upload: bool,
    /// Run script steps on the remote's workers (its Execution service)
    #[arg(long, requires = "remote")]
    remote_exec: bool,
    /// Seconds one call to the remote may take (plus 1 s per MiB it moves)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    remote_timeout: u64,
    /// Seconds a step sent to the remote's workers may wait for one to take
    /// it; then it runs here
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        requires = "remote_exec"
    )]
    remote_queue_timeout: u64,
}

impl RemoteArgs {
    fn open(&self) -> Result<Option<crate::remote::Remote>, Failure> {
        // An empty BAKE_REMOTE (a CI secret that is not set) is no remote.
        let Some(url) = self.remote.as_ref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        // CI runners fill the cache that the next runner and every developer read.
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        let upload = self.remote_upload || (ci && !self.no_remote_upload);
        crate::remote::Remote::new(crate::remote::Options {
            url: url.clone(),
            token_env: self.remote_token_env.clone(),
            token_header: self.remote_token_header.clone(),
            upload,
            exec: self.remote_exec,
            timeout: std::time::Duration::from_secs(self.remote_timeout.max(1)),
            queue_timeout: std::time::Duration::from_secs(self.remote_queue_timeout.max(1)),
        })
        .map(Some)
        .map_err(|e| Failure::usage(format!("--remote: {e}")))
    }
}

#[derive(Args)]
struct TraceArgs {
    /// Write the build as Chrome trace-event JSON (Perfetto, chrome://tracing):
    /// a slice per step on its worker's lane, cached instances marked
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Print the longest chain of dependent steps at the end (also with --trace)
    #[arg(long)]
    critical_path: bool,
}

#[derive(Args)]
struct FetchArgs {
    /// Mirrors tried before a source's URLs: base URLs or local directories
    #[arg(
        long = "mirror",
        env = crate::fetch::MIRRORS_ENV,
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
    fn options(&self) -> Result<realise::Options, Failure> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(realise::Options {
            jobs: self.jobs.unwrap_or(cores).max(1),
            keep_going: self.keep_going,
            fetch: self.fetch.options()?,
            remote: self.remote.open()?,
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
                eval_cache: Some(self.store_dir().join("evals")),
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

    /// A build or check failure, already reported.
    fn failed() -> Failure {
        Failure {
            status: EXIT_FAILURE,
            message: None,
        }
    }
}

impl From<Box<Report>> for Failure {
    fn from(report: Box<Report>) -> Failure {
        print_diagnostic(report.as_ref());
        Failure {
            status: EXIT_USAGE,
            message: None,
        }
    }
}

/// The instances TARGETS name, with everything they need; with no targets, the
/// recipe's `default` ones, else everything but the tests (`bake test` runs those).
fn select(eval: &Evaluation, targets: &[String]) -> Result<(Vec<usize>, Selection), Failure> {
    let named = if targets.is_empty() {
        &eval.defaults
    } else {
        targets
    };
    let mut selected = eval
        .select(named)
        .map_err(|e| Failure::usage(format!("{}: {e}", eval.top_file())))?;
    if named.is_empty() {
        selected.retain(|&i| eval.instance(i).kind() != Kind::Test);
    }
    let wanted = eval.graph.closure(&selected);
    Ok((selected, wanted))
}

/// What a command was asked for, whose outputs it reads: the named targets,
/// or the ends of what it selected (what nothing else selected uses). The
/// rest of the closure is needed only as far as producing these here needs it.
fn asked_for(eval: &Evaluation, selected: &[usize], targets: &[String]) -> Selection {
    let chosen: HashSet<usize> = selected.iter().copied().collect();
    let end = |i: usize| !eval.graph.dependents(i).iter().any(|d| chosen.contains(d));
    Selection::from_fn(eval.graph.len(), |i| {
        chosen.contains(&i) && (!targets.is_empty() || end(i))
    })
}

/// `cache/` at the root of the repository holding the recipe; else `./cache`.
fn default_store(recipe: &Path) -> PathBuf {
    repository_root(recipe).map_or_else(|| PathBuf::from("cache"), |r| r.join("cache"))
}

/// The root of the repository holding `path`: the nearest ancestor with a
/// `cache` directory or a `.git`.
fn repository_root(path: &Path) -> Option<PathBuf> {
    let start = path.canonicalize().ok().and_then(|p| {
        if p.is_dir() {
            Some(p)
        } else {
            p.parent().map(Path::to_path_buf)
        }
    })?;
    start
        .ancestors()
        .find(|d| d.join("cache").is_dir() || d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// Runs bake with the process arguments and returns the exit status.
pub fn main() -> i32 {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == crate::exec::LAUNCHER_ARG)
    {
        return crate::exec::serve_lane();
    }
    // This executable is bake: it can be its own launcher.
    crate::exec::enable_lanes();
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
            remote,
        } => cmd_plan(&recipe, &targets, json, &remote),
        Command::Build {
            recipe,
            targets,
            run,
            json,
            out_link,
            trace,
        } => cmd_build(&recipe, &targets, &run, json, out_link, &trace),
        Command::Why { recipe, target } => cmd_why(&recipe, &target),
        Command::Test {
            recipe,
            targets,
            run,
            rerun,
            json,
            junit,
        } => cmd_test(&recipe, &targets, &run, rerun, json, junit.as_deref()),
        Command::Fetch {
            recipe,
            fetch,
            jobs,
            remote,
        } => cmd_fetch(&recipe, &fetch, jobs, &remote),
        Command::Toolchain {
            command: ToolchainCommand::Check { files },
        } => cmd_toolchain_check(&files),
        Command::Check {
            recipe,
            targets,
            run,
            variations,
            no_diffoscope,
            json,
        } => cmd_check(CheckArgs {
            recipe: &recipe,
            targets: &targets,
            run: &run,
            variations: variations.as_deref(),
            diffoscope: !no_diffoscope,
            json,
        }),
        Command::Release {
            recipe,
            targets,
            out,
            base_url,
            signing,
            run,
        } => cmd_release(&recipe, &targets, &out, base_url.as_deref(), &signing, &run),
        Command::RebuildCheck {
            release,
            recipe,
            cache,
            run,
            json,
        } => cmd_rebuild_check(RebuildArgs {
            release: &release,
            recipe: recipe.as_deref(),
            cache: cache.as_deref(),
            run: &run,
            json,
        }),
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
        Command::Worker {
            recipe,
            server,
            remote_token_env,
            remote_token_header,
            name,
            jobs,
        } => cmd_worker(
            &recipe,
            &server,
            (remote_token_env, remote_token_header),
            name,
            jobs,
        ),
        Command::Completions { shell } => {
            print_completions(shell, &mut Cli::command());
            Ok(())
        }
        Command::Man { dir } => man(&Cli::command(), dir.as_deref()),
    };
    crate::exec::close_lanes();
    match result {
        Ok(()) => 0,
        Err(f) => {
            if let Some(m) = f.message {
                errln!("error: {m}");
            }
            f.status
        }
    }
}

/// Prints a diagnostic with its source snippet, labels and help, as miette draws it.
fn print_diagnostic(d: &dyn Diagnostic) {
    let theme = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme);
    if handler.render_report(&mut out, d).is_err() {
        out = format!("error: {d}\n");
    }
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(out.as_bytes());
}
