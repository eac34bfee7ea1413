//! Derivations, one file per kind: what a declaration refers to and which axes it
//! uses, what one instance of it is (expanded from the recipe), its description
//! (the one ordered field list behind its keys and `bake why`), how the store is
//! asked for it, and how it is produced. The stages (`eval`, `realise`) are
//! generic; `kinds!` at the bottom registers each kind, one line each.

mod describe;
mod expand;

use std::cell::OnceCell;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use build::sandbox_step;
pub use describe::{explain, key, snapshot, Change, DepKey, Description, Snapshot};
pub use expand::{AxisUses, Expand};
pub use toolchain::check_toolchains;

use crate::exec::ExecError;
use crate::fetch::unpack::UnpackError;
use crate::fetch::{FetchError, Fetcher};
use crate::hash::{BuildKey, OutputHash};
use crate::names::{InstanceId, NodeName};
use crate::recipe::{Body, Kind, RecipeError, Reference, Role};
use crate::store::{KnownKeys, Store, TmpDir};
use crate::sysext::SysextError;
use crate::variation::Variation;

/// SOURCE_DATE_EPOCH of every step: fixed, so time never leaks into an output.
/// 1980-01-01, the earliest time zip archives can hold.
pub const SOURCE_DATE_EPOCH: i64 = 315_532_800;

/// How dependents key an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// By what it declares (sources by their hash, toolchains by their files):
    /// its eval key is its build key, and the store does not index it.
    Declared,
    /// By the output it produced: identical bytes stop a rebuild from spreading.
    Output,
}

/// A reference a declaration makes to another node.
pub struct Ref<'a> {
    pub to: &'a Reference,
    pub role: Role,
    /// The kinds it may name, the first being the one a help text suggests.
    pub kinds: &'static [Kind],
}

/// What an instance resolved to.
#[derive(Clone, Debug)]
pub struct Realised {
    pub key: BuildKey,
    /// The output tree (builds, sysexts, releases) or file (sources).
    pub path: Option<PathBuf>,
    pub output: Option<OutputHash>,
    /// Whether this run did the work (built, or fetched).
    pub built: bool,
}

impl Realised {
    /// An output the store holds under `key`, from an earlier run.
    pub fn stored(store: &Store, key: BuildKey, output: OutputHash) -> Realised {
        Realised {
            key,
            path: Some(store.object_path(&output)),
            output: Some(output),
            built: false,
        }
    }
}

/// Why an instance must be built (or fetched): the decision and its explanation
/// in one.
#[derive(Clone, Debug)]
pub enum Reason {
    NotFetched,
    NotInstalled {
        missing: PathBuf,
    },
    NeverBuilt,
    /// Differences from its last build, most telling first.
    Changed(Vec<Change>),
    /// Described as at its last build, yet not in the store (collected, or built
    /// with another store).
    NotInStore(BuildKey),
    /// `bake test --rerun` asked for it.
    Rerun,
    /// The remote's copy did not check out.
    Refused,
    /// An input must be built before the key is known; `then`, what differs
    /// from the last build so far (the input shown as not built yet).
    InputFirst {
        input: InstanceId,
        then: Box<Reason>,
    },
}

impl Reason {
    /// Everything `bake why` says beyond the first line.
    pub fn details(&self) -> Vec<String> {
        match self {
            Reason::Changed(c) => c.iter().map(ToString::to_string).collect(),
            Reason::InputFirst { then, .. } => match then.as_ref() {
                Reason::NeverBuilt => vec!["never built".into()],
                other => other.details(),
            },
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotFetched => f.write_str("not fetched yet"),
            Reason::NotInstalled { missing } => {
                write!(f, "not installed: {} is missing", missing.display())
            }
            Reason::NeverBuilt => f.write_str("never built"),
            Reason::Changed(changes) => {
                let first = changes.first().map(ToString::to_string).unwrap_or_default();
                f.write_str(first.lines().next().unwrap_or_default())?;
                if changes.len() > 1 {
                    write!(f, " (and {} more changes)", changes.len() - 1)?;
                }
                Ok(())
            }
            Reason::NotInStore(key) => write!(
                f,
                "output of build {} is not in the store",
                &key.to_string()[..12]
            ),
            Reason::InputFirst { input, .. } => write!(f, "input {input} will be built first"),
            Reason::Rerun => f.write_str("asked to run again"),
            Reason::Refused => f.write_str("the remote's copy was refused"),
        }
    }
}

/// Why a step failed, as the user should read it; the diagnostics of fetching,
/// unpacking and the rest pass through with their help texts.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StepError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sysext(#[from] SysextError),
    #[error("toolchain {id} is not installed: missing {missing}")]
    #[diagnostic(code(bake::toolchain::missing), help("to install it: {install}"))]
    NotInstalled {
        id: InstanceId,
        missing: String,
        install: String,
    },
    #[error("{what}: {source}")]
    #[diagnostic(code(bake::step::io))]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{message}")]
    #[diagnostic(code(bake::step::invalid), help("{help}"))]
    Invalid { message: String, help: String },
    /// Something in the store no longer has the hash it is filed under; it was
    /// removed so the next run makes it anew.
    #[error("{what} is corrupt: expected {expected}, found {actual}")]
    #[diagnostic(
        code(bake::store::corrupt),
        help("it was removed from the store; run bake again to fetch or build it anew")
    )]
    Corrupt {
        what: String,
        expected: String,
        actual: String,
    },
    /// Not started: bake was asked to stop.
    #[error("not started: interrupted")]
    #[diagnostic(code(bake::step::cancelled))]
    Cancelled,
}

impl StepError {
    /// Stopped while it ran, because bake was asked to stop.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            StepError::Exec(ExecError::Interrupted) | StepError::Fetch(FetchError::Interrupted)
        )
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> StepError {
        StepError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What a production yielded.
pub enum Produced {
    /// A tree at [`Step::out`], to be committed to the store.
    Tree,
    /// A file that is now in the store (a fetched source).
    File(PathBuf),
    /// Nothing to keep: the instance is what this machine has (a toolchain).
    Present,
}

/// A dependency of the instance at hand, as its kind sees it.
pub struct Input<'a> {
    pub role: Role,
    /// Its node's name: the variable an input is exported as.
    pub name: &'a NodeName,
    pub id: &'a InstanceId,
    pub spec: &'a Spec,
    pub realised: &'a Realised,
}

/// Asking the store for an instance whose key is known.
pub struct Lookup<'a> {
    pub id: &'a InstanceId,
    pub key: BuildKey,
    pub store: &'a Store,
    desc: &'a Description,
    deps: &'a [DepKey],
    known: Option<&'a KnownKeys>,
}

impl<'a> Lookup<'a> {
    pub fn new(
        id: &'a InstanceId,
        key: BuildKey,
        store: &'a Store,
        desc: &'a Description,
        deps: &'a [DepKey],
    ) -> Self {
        Lookup {
            id,
            key,
            store,
            desc,
            deps,
            known: None,
        }
    }

    /// Asks `known` before the key records.
    pub fn with_known(mut self, known: &'a KnownKeys) -> Self {
        self.known = Some(known);
        self
    }

    /// The output stored under the build key; else what changed since the last build.
    pub fn stored(&self) -> Result<Realised, Reason> {
        let output = match self.known {
            Some(known) => known.lookup(self.store, &self.key),
            None => self.store.lookup(&self.key).map(|r| r.output),
        };
        match output {
            Some(output) => Ok(Realised::stored(self.store, self.key, output)),
            None => Err(self.why_not()),
        }
    }

    /// What differs from the last build of the instance.
    pub fn why_not(&self) -> Reason {
        let Some(last) = self.store.load_instance::<Snapshot>(self.id) else {
            return Reason::NeverBuilt;
        };
        let changes = explain(&last.snapshot, &snapshot(self.desc, self.deps));
        if changes.is_empty() {
            Reason::NotInStore(self.key)
        } else {
            Reason::Changed(changes)
        }
    }
}

/// Producing one instance: its inputs, realised, and a scratch directory made
/// on first use.
pub struct Step<'a> {
    pub id: &'a InstanceId,
    pub name: &'a NodeName,
    pub key: BuildKey,
    pub inputs: Vec<Input<'a>>,
    pub store: &'a Store,
    pub fetcher: &'a Fetcher,
    pub jobs: usize,
    /// Whether this is `bake check`'s rebuild, and what it changes.
    pub rebuild: Option<Option<Variation>>,
    /// Where scripts run when not here (remote execution).
    pub executor: Option<&'a dyn Executor>,
    work: OnceCell<TmpDir>,
}

/// A script step as it can be sent elsewhere: the parts a sandbox is made of
/// there, the toolchain by its identity (the other side has its own copy).
#[derive(Clone, Copy)]
pub struct ScriptStep<'a> {
    pub id: &'a InstanceId,
    pub script: &'a str,
    /// The step's own variables, without the toolchain's.
    pub env: &'a [(String, String)],
    pub toolchain: Option<&'a ToolchainSpec>,
    pub inputs: &'a [(String, PathBuf)],
    pub files: &'a [PathBuf],
    pub jobs: usize,
    pub limits: crate::exec::Limits,
}

/// Runs script steps somewhere else than this machine's sandbox.
pub trait Executor: Sync {
    /// Runs `step` with `work` as its build directory (`src/` and `patches/`
    /// placed), leaving its output in `work/out` and its log at `log`, as
    /// `exec::run` does; Ok(false) when it cannot, and the step runs here.
    fn execute(&self, step: &ScriptStep<'_>, work: &Path, log: &Path) -> Result<bool, StepError>;
}

impl<'a> Step<'a> {
    pub fn new(
        id: &'a InstanceId,
        name: &'a NodeName,
        key: BuildKey,
        inputs: Vec<Input<'a>>,
        store: &'a Store,
        fetcher: &'a Fetcher,
        jobs: usize,
    ) -> Self {
        Step {
            id,
            name,
            key,
            inputs,
            store,
            fetcher,
            jobs,
            rebuild: None,
            executor: None,
            work: OnceCell::new(),
        }
    }

    /// The same step, as `bake check`'s rebuild, under `variation` if any.
    pub fn rebuilding(mut self, variation: Option<Variation>) -> Self {
        self.rebuild = Some(variation);
        self
    }

    /// What the rebuild changes; none for a build.
    pub fn variation(&self) -> Option<&Variation> {
        self.rebuild.as_ref().and_then(Option::as_ref)
    }

    /// Where the step's log goes: a rebuild's beside the build's.
    pub fn log_path(&self) -> PathBuf {
        match self.rebuild {
            Some(_) => self.store.rebuild_log_path(&self.key),
            None => self.store.log_path(&self.key),
        }
    }

    /// Sends the step's script to `executor` instead of running it here.
    pub fn with_executor(mut self, executor: Option<&'a dyn Executor>) -> Self {
        self.executor = executor;
        self
    }

    /// The step's scratch directory in the store, made on first use.
    pub fn work(&self) -> Result<&Path, StepError> {
        if let Some(w) = self.work.get() {
            return Ok(w.path());
        }
        let dir = self
            .store
            .step_dir()
            .map_err(|e| StepError::io("cannot make a build directory", e))?;
        Ok(self.work.get_or_init(|| dir).path())
    }

    /// Where a tree-producing kind writes its output: `out/` in the scratch directory.
    pub fn out(&self) -> Result<PathBuf, StepError> {
        Ok(self.work()?.join("out"))
    }

    /// The scratch directory, once the step is over (to commit or compare its output).
    pub fn into_work(self) -> Option<TmpDir> {
        self.work.into_inner()
    }

    /// The inputs in one role.
    pub fn inputs(&self, role: Role) -> impl Iterator<Item = &Input<'a>> {
        self.inputs.iter().filter(move |i| i.role == role)
    }
}

/// What each kind provides; `kinds!` registers an implementation.
trait Derivation: Sized {
    /// The recipe's declaration of this kind.
    type Body;
    const KIND: Kind;
    const IDENTITY: Identity;

    /// The nodes the declaration refers to.
    fn references(body: &Self::Body) -> Vec<Ref<'_>>;

    /// The axes the declaration names itself: placeholders and conditions.
    fn axes<'a>(body: &'a Self::Body, uses: &mut AxisUses<'a>);

    /// One instance, for the axis values in `cx`.
    fn expand(body: &Self::Body, cx: &mut Expand<'_>) -> Result<Self, RecipeError>;

    /// The fields that make the instance what it is, in a fixed order. `name` is
    /// the node's name, for kinds whose output carries it.
    fn describe(&self, name: &NodeName, d: &mut Description);

    /// How `why` shows it as a dependency that changed; its key by default.
    fn shown(&self) -> Option<String> {
        None
    }

    /// Whether its step runs with root and the host's file system, as declared.
    fn privileged(&self) -> bool {
        false
    }

    /// The instance as the store (or the machine) already has it.
    fn lookup(&self, cx: &Lookup<'_>) -> Result<Realised, Reason> {
        cx.stored()
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError>;
}

macro_rules! kinds {
    ($($kind:ident($spec:ident in $module:ident)),* $(,)?) => {
        $(mod $module;)*
        $(pub use $module::$spec;)*

        /// What one instance is, with every placeholder filled in.
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
        pub enum Spec {
            $($kind($spec),)*
        }

        impl Spec {
            pub fn references(body: &Body) -> Vec<Ref<'_>> {
                match body {
                    $(Body::$kind(b) => $spec::references(b),)*
                }
            }

            pub fn axes<'a>(body: &'a Body, uses: &mut AxisUses<'a>) {
                match body {
                    $(Body::$kind(b) => $spec::axes(b, uses),)*
                }
            }

            pub fn expand(body: &Body, cx: &mut Expand<'_>) -> Result<Spec, RecipeError> {
                match body {
                    $(Body::$kind(b) => $spec::expand(b, cx).map(Spec::$kind),)*
                }
            }

            pub fn kind(&self) -> Kind {
                match self {
                    $(Spec::$kind(_) => $spec::KIND,)*
                }
            }

            pub fn identity(&self) -> Identity {
                match self {
                    $(Spec::$kind(_) => $spec::IDENTITY,)*
                }
            }

            pub fn describe(&self, name: &NodeName) -> Description {
                let mut d = Description::new(self.kind().name());
                match self {
                    $(Spec::$kind(s) => s.describe(name, &mut d),)*
                }
                d
            }

            pub fn shown(&self) -> Option<String> {
                match self {
                    $(Spec::$kind(s) => s.shown(),)*
                }
            }

            pub fn privileged(&self) -> bool {
                match self {
                    $(Spec::$kind(s) => s.privileged(),)*
                }
            }

            pub fn lookup(&self, cx: &Lookup<'_>) -> Result<Realised, Reason> {
                match self {
                    $(Spec::$kind(s) => s.lookup(cx),)*
                }
            }

            pub fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
                match self {
                    $(Spec::$kind(s) => s.produce(cx),)*
                }
            }
        }
    };
}

kinds! {
    Source(SourceSpec in source),
    Toolchain(ToolchainSpec in toolchain),
    Build(BuildSpec in build),
    Sysext(SysextSpec in sysext),
    Release(ReleaseSpec in release),
    Test(TestSpec in test),
}
