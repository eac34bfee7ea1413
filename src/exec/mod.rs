//! Running one build step: `sh -eu` in a sandbox of its own, within its limits,
//! output to a log.

mod cgroup;
mod lane;
mod process;
mod sandbox;
mod template;
mod vfork;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::units::{show_duration, show_size};
use crate::variation::Variation;

pub use lane::{
    close_all as close_lanes, enable as enable_lanes, serve as serve_lane, LAUNCHER_ARG,
};
pub use sandbox::Confinement;
pub use watch::kill_all;

/// The fixed path every step sees its build directory at.
pub const BUILD_DIR: &str = "/build";

/// The variables the sandbox sets for every step; a recipe may set none of them.
pub const SANDBOX_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "SOURCE_DATE_EPOCH",
    "TZ",
    "LC_ALL",
    "JOBS",
    "HOST",
    "out",
    "files",
];

/// What follows a toolchain's directories on a step's PATH.
pub const SYSTEM_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// What a step may use up before it is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Wall-clock time.
    pub time: Duration,
    /// Memory of the step's processes together, in bytes.
    pub memory: u64,
    /// Size of its output tree, and of any one file it writes, in bytes.
    pub output: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(4 * 3600),
            memory: 16 << 30,
            output: 16 << 30,
        }
    }
}

/// What a step runs, and with what.
pub struct Step {
    pub script: String,
    /// Declared variables: the toolchain's, then the step's own.
    pub env: BTreeMap<String, String>,
    /// Directories put first on PATH.
    pub path: Vec<PathBuf>,
    /// Input name -> its output tree, seen read-only.
    pub inputs: Vec<(String, PathBuf)>,
    /// Repository files and directories copied into `$files` under their names.
    pub files: Vec<PathBuf>,
    /// The toolchain's files, seen read-only at their own paths.
    pub mounts: Vec<PathBuf>,
    /// A persistent cache the step may write: the variable that names it, and
    /// where it is on the host.
    pub cache: Option<(String, PathBuf)>,
    pub jobs: usize,
    pub source_date_epoch: i64,
    pub limits: Limits,
    pub confinement: Confinement,
    /// What a `bake check` rebuild changes; none for a build.
    pub variation: Option<Variation>,
    /// Where the sandbox keeps what every step shares: the directory the step's
    /// root is mounted on, its `passwd` and `group` files.
    pub shared: PathBuf,
}

#[derive(Debug, miette::Diagnostic)]
pub enum ExecError {
    #[diagnostic(code(bake::exec::io))]
    Io { what: String, source: io::Error },
    #[diagnostic(
        code(bake::exec::no_space),
        help("free space on the file system holding the store, or move the store with --cache")
    )]
    NoSpace { path: PathBuf },
    #[diagnostic(code(bake::exec::failed))]
    Failed {
        status: String,
        log: PathBuf,
        tail: Vec<String>,
    },
    #[diagnostic(
        code(bake::exec::timed_out),
        help("raise it in the recipe: limits time=\"...\"")
    )]
    TimedOut {
        after: Duration,
        log: PathBuf,
        tail: Vec<String>,
    },
    #[diagnostic(
        code(bake::exec::out_of_memory),
        help("raise it in the recipe: limits memory=\"...\"")
    )]
    OutOfMemory {
        limit: u64,
        log: PathBuf,
        tail: Vec<String>,
    },
    #[diagnostic(
        code(bake::exec::output_too_large),
        help("raise it in the recipe: limits output=\"...\"")
    )]
    OutputTooLarge { size: u64, limit: u64 },
    #[diagnostic(code(bake::exec::interrupted))]
    Interrupted,
}

impl std::error::Error for ExecError {}

impl ExecError {
    fn io(what: impl Into<String>, path: &Path, source: io::Error) -> ExecError {
        if source.kind() == io::ErrorKind::StorageFull {
            return ExecError::NoSpace {
                path: path.to_path_buf(),
            };
        }
        ExecError::Io {
            what: format!("{} {}", what.into(), path.display()),
            source,
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_tail = |f: &mut fmt::Formatter<'_>, tail: &[String], log: &Path| {
            if tail.is_empty() {
                return write!(f, "; its log is empty: {}", log.display());
            }
            writeln!(f, "; last lines of its log:")?;
            for line in tail {
                writeln!(f, "  | {line}")?;
            }
            write!(f, "full log: {}", log.display())
        };
        match self {
            ExecError::Io { what, source } => write!(f, "cannot run the step: {what}: {source}"),
            ExecError::NoSpace { path } => {
                write!(
                    f,
                    "no space left on device while writing {}",
                    path.display()
                )
            }
            ExecError::Failed { status, log, tail } => {
                write!(f, "the script {status}")?;
                with_tail(f, tail, log)
            }
            ExecError::TimedOut { after, log, tail } => {
                write!(
                    f,
                    "the step ran out of time after {}",
                    show_duration(*after)
                )?;
                with_tail(f, tail, log)
            }
            ExecError::OutOfMemory { limit, log, tail } => {
                write!(
                    f,
                    "the step ran out of memory (limit {})",
                    show_size(*limit)
                )?;
                with_tail(f, tail, log)
            }
            ExecError::OutputTooLarge { size, limit } => write!(
                f,
                "the step's output is {}, over its limit of {}",
                show_size(*size),
                show_size(*limit)
            ),
            ExecError::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// Variable name an input is exported as: characters other than letters, digits
/// and `_` become `_`.
pub fn input_var(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs `step` with `work` as its build directory (`src/` there is the working
/// directory); what it writes to `$out` ends up in `work/out`.
pub fn run(step: &Step, work: &Path, log: &Path) -> Result<(), ExecError> {
    if crate::interrupt::requested().is_some() {
        return Err(ExecError::Interrupted);
    }
    for dir in ["src", "out", "home", "tmp", "inputs"] {
        let d = work.join(dir);
        fs::create_dir_all(&d).map_err(|e| ExecError::io("cannot create", &d, e))?;
    }
    let script = work.join("script.sh");
    fs::write(&script, &step.script).map_err(|e| ExecError::io("cannot write", &script, e))?;
    let files = work.join("files");
    for f in &step.files {
        let to = files.join(f.file_name().unwrap_or_default());
        copy_into(f, &to).map_err(|e| ExecError::io("cannot copy", f, e))?;
    }
    let mut sandbox = sandbox::Sandbox::new(step, work)?;
    let root = sandbox.build_dir();
    let mut env: BTreeMap<String, String> = step.env.clone();
    let path: Vec<String> = step
        .path
        .iter()
        .map(|p| p.display().to_string())
        .chain(SYSTEM_PATH.iter().map(|p| p.to_string()))
        .collect();
    env.insert("PATH".into(), path.join(":"));
    env.insert("HOME".into(), format!("{root}/home"));
    env.insert("TMPDIR".into(), format!("{root}/tmp"));
    env.insert("out".into(), format!("{root}/out"));
    env.insert(
        "SOURCE_DATE_EPOCH".into(),
        step.source_date_epoch.to_string(),
    );
    env.insert("TZ".into(), "UTC".into());
    env.insert("LC_ALL".into(), "C".into());
    let jobs = step
        .variation
        .as_ref()
        .map_or(step.jobs, |v| v.jobs(step.jobs));
    env.insert("JOBS".into(), jobs.to_string());
    if let Some(v) = &step.variation {
        v.env(&mut env);
    }
    for (name, _) in &step.inputs {
        env.insert(input_var(name), sandbox.input_path(name));
    }
    if !step.files.is_empty() {
        env.insert("files".into(), format!("{root}/files"));
    }
    if let Some((var, _)) = &step.cache {
        env.insert(var.clone(), sandbox.cache_path());
    }
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(|e| ExecError::io("cannot create", dir, e))?;
    }
    let launch = lane::Launch {
        program: "/bin/sh".into(),
        args: vec!["-eu".into(), format!("{root}/script.sh")],
        env: env.into_iter().collect(),
        log: log.to_path_buf(),
        entry: sandbox.entry()?,
    };
    // Last, once the sandbox has handed the tree to the builder.
    let src = work.join("src");
    let mut aside = work.as_os_str().to_owned();
    aside.push(".src");
    let _reordered = match &step.variation {
        Some(v) => v
            .reorder(&src, Path::new(&aside))
            .map_err(|e| ExecError::io("cannot reorder the entries of", &src, e))?,
        None => None,
    };
    let (ran, ended) = lane::run(launch, step.limits.memory, step.limits.time)?;
    let status = ran.status;
    let tail = || tail(log, 20);
    match ended {
        watch::Ended::Interrupted => return Err(ExecError::Interrupted),
        watch::Ended::TimedOut => {
            return Err(ExecError::TimedOut {
                after: step.limits.time,
                log: log.to_path_buf(),
                tail: tail(),
            })
        }
        watch::Ended::Normally => {}
    }
    if ran.oom_killed {
        return Err(ExecError::OutOfMemory {
            limit: step.limits.memory,
            log: log.to_path_buf(),
            tail: tail(),
        });
    }
    if !status.success() {
        // A step that could not write its log on a full disk has nothing to show.
        if tail().is_empty() && no_space_left(log) {
            return Err(ExecError::NoSpace {
                path: log.to_path_buf(),
            });
        }
        let status = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "was killed".to_string(),
        };
        return Err(ExecError::Failed {
            status,
            log: log.to_path_buf(),
            tail: tail(),
        });
    }
    let size = crate::store::tree_size(&work.join("out"));
    if size > step.limits.output {
        return Err(ExecError::OutputTooLarge {
            size,
            limit: step.limits.output,
        });
    }
    Ok(())
}

/// Copies a file or a tree (symlinks as links), keeping exec bits.
fn copy_into(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_dir() {
        fs::create_dir_all(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_into(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from, to).map(|_| ())
    }
}

/// Whether the file system holding `path` has no space (or no inodes) left.
fn no_space_left(path: &Path) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statvfs writes into the struct it is given; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_bavail == 0 || st.f_favail == 0
}

/// The last `n` lines of a log.
fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    // Logs can be large; the last 64 KiB hold the lines that matter.
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let lines: Vec<String> = io::BufReader::new(f)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
