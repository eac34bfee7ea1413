//! Running one build step: `sh -eu` in a clean sandbox, output to a log.

mod sandbox;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
];

/// What follows a toolchain's directories on a step's PATH.
pub const SYSTEM_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// What a step runs, and with what.
pub struct Step {
    pub script: String,
    /// Declared variables: the toolchain's, then the step's own.
    pub env: BTreeMap<String, String>,
    /// Directories put first on PATH.
    pub path: Vec<PathBuf>,
    /// Input name -> its output tree.
    pub inputs: Vec<(String, PathBuf)>,
    pub jobs: usize,
    pub source_date_epoch: i64,
}

#[derive(Debug, miette::Diagnostic)]
pub enum ExecError {
    #[diagnostic(code(bake::exec::io))]
    Io(io::Error),
    #[diagnostic(code(bake::exec::failed))]
    Failed {
        status: String,
        log: PathBuf,
        tail: Vec<String>,
    },
}

impl std::error::Error for ExecError {}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Io(e) => write!(f, "cannot run the step: {e}"),
            ExecError::Failed { status, log, tail } => {
                writeln!(f, "the script {status}; last lines of its log:")?;
                for line in tail {
                    writeln!(f, "  | {line}")?;
                }
                write!(f, "full log: {}", log.display())
            }
        }
    }
}

impl From<io::Error> for ExecError {
    fn from(e: io::Error) -> Self {
        ExecError::Io(e)
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
    for dir in ["src", "out", "home", "tmp", "inputs"] {
        fs::create_dir_all(work.join(dir))?;
    }
    fs::write(work.join("script.sh"), &step.script)?;
    let sandbox = sandbox::Sandbox::new(work, &step.inputs)?;
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
    env.insert("JOBS".into(), step.jobs.to_string());
    for (name, _) in &step.inputs {
        env.insert(input_var(name), sandbox.input_path(name));
    }
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let log_file = fs::File::create(log)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-eu")
        .arg(format!("{root}/script.sh"))
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    sandbox.apply(&mut cmd)?;
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        let status = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        Err(ExecError::Failed {
            status,
            log: log.to_path_buf(),
            tail: tail(log, 20),
        })
    }
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
