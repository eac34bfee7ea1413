//! Remote execution (`--remote-exec`): a script step sent to the Execution
//! service as one action, its output taken from the ActionResult.
//!
//! The action's input root holds `step.json` (the [`Manifest`]), `src/` and
//! `patches/` as the step's build directory has them, `inputs/NAME/` (each
//! input's output tree) and `files/NAME` (the repository files it uses). Its
//! platform names `OSFamily=linux`, `ISA` (this machine's arch) and
//! `bake-toolchain` (the toolchain's identity, or `none`): a worker takes it
//! only with a toolchain of that identity, which it runs from its own copy.

use std::path::Path;
use std::sync::atomic::Ordering;

use prost::Message;
use serde::{Deserialize, Serialize};

use super::client::{digest_of, Blob, RemoteError};
use super::proto::{self, Digest, Platform, Property};
use super::{tree, Remote};
use crate::derivation::{Executor, ScriptStep, StepError};
use crate::exec::ExecError;

/// The input root's file describing the step.
pub const MANIFEST: &str = "step.json";
/// The platform property naming the toolchain's identity.
pub const TOOLCHAIN_PROPERTY: &str = "bake-toolchain";
/// `bake-toolchain` of a step without a toolchain.
pub const NO_TOOLCHAIN: &str = "none";
/// The command a bake worker runs: nothing else is taken.
pub const ARGUMENTS: [&str; 3] = ["bake", "step", MANIFEST];

/// A script step as a worker rebuilds its sandbox from it.
#[derive(Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub script: String,
    /// The step's own variables; the toolchain's come from the worker's copy.
    pub env: Vec<(String, String)>,
    pub toolchain: Option<String>,
    /// In `inputs/NAME` of the input root, in order.
    pub inputs: Vec<String>,
    /// In `files/NAME`.
    pub files: Vec<String>,
    pub jobs: usize,
    pub time_secs: u64,
    pub memory: u64,
    pub output: u64,
}

/// This machine's arch as REAPI's `ISA` names it (`x86-64`, `aarch64`).
pub fn isa() -> String {
    std::env::consts::ARCH.replace('_', "-")
}

/// The properties an action of a step with this toolchain requires.
pub fn platform(toolchain: Option<&str>) -> Platform {
    let mut properties = vec![
        Property {
            name: "ISA".into(),
            value: isa(),
        },
        Property {
            name: "OSFamily".into(),
            value: "linux".into(),
        },
        Property {
            name: TOOLCHAIN_PROPERTY.into(),
            value: toolchain.unwrap_or(NO_TOOLCHAIN).into(),
        },
    ];
    properties.sort_by(|a, b| a.name.cmp(&b.name));
    Platform { properties }
}

/// Where sending a step away failed.
enum Failure {
    /// Moving its inputs or outputs.
    Cas(RemoteError),
    /// Running it.
    Execution(RemoteError),
}

impl From<RemoteError> for Failure {
    fn from(e: RemoteError) -> Failure {
        Failure::Cas(e)
    }
}

/// How a step sent away ended.
enum Ran {
    /// Its output is in `work/out`; it ran on this worker.
    Done(String),
    /// The script failed there: that is the step's failure, as it would be here.
    Failed(ExecError),
}

impl Executor for Remote {
    fn execute(&self, step: &ScriptStep<'_>, work: &Path, log: &Path) -> Result<bool, StepError> {
        if !self.exec || self.exec_down.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(caps) = self.caps() else {
            return Ok(false);
        };
        match self.run_remotely(step, work, log, caps.batch_limit) {
            Ok(Ran::Done(worker)) => {
                let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.executed += 1;
                drop(s);
                self.executed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((step.id.clone(), worker));
                Ok(true)
            }
            Ok(Ran::Failed(e)) => Err(StepError::Exec(e)),
            Err(e) => {
                // Whatever came down of its output goes: the step runs here from scratch.
                let out = work.join("out");
                if out.exists() {
                    std::fs::remove_dir_all(&out)
                        .map_err(|e| StepError::io("cannot clear the build directory", e))?;
                }
                match e {
                    // Its Execution service (not its cache) is missing or down.
                    Failure::Execution(RemoteError::Unreachable(why)) => {
                        if !self.exec_down.swap(true, Ordering::Relaxed) {
                            crate::progress::warn(&format!(
                                "remote {} cannot run steps ({why}); running them here",
                                self.url
                            ));
                        }
                    }
                    Failure::Cas(e @ RemoteError::Unreachable(_)) => self.give_up(&e),
                    Failure::Execution(e) | Failure::Cas(e) => crate::progress::warn(&format!(
                        "remote {} cannot run {}: {e}; building it here",
                        self.url, step.id
                    )),
                }
                Ok(false)
            }
        }
    }
}

impl Remote {
    fn run_remotely(
        &self,
        s: &ScriptStep<'_>,
        work: &Path,
        log: &Path,
        batch_limit: u64,
    ) -> Result<Ran, Failure> {
        let name_of = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
        let toolchain = s.toolchain.map(|t| t.identity.to_hex());
        let manifest = Manifest {
            id: s.id.to_string(),
            script: s.script.to_string(),
            env: s.env.to_vec(),
            toolchain: toolchain.clone(),
            inputs: s.inputs.iter().map(|(n, _)| n.clone()).collect(),
            files: s.files.iter().filter_map(|f| name_of(f)).collect(),
            jobs: s.jobs,
            time_secs: s.limits.time.as_secs(),
            memory: s.limits.memory,
            output: s.limits.output,
        };
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| RemoteError::Refused(format!("cannot describe the step: {e}")))?;
        let mut entries = vec![
            (MANIFEST.to_string(), tree::Entry::Bytes(manifest)),
            ("src".into(), tree::Entry::Path(work.join("src"))),
            (
                "inputs".into(),
                tree::Entry::Dir(
                    s.inputs
                        .iter()
                        .map(|(n, p)| (n.clone(), tree::Entry::Path(p.clone())))
                        .collect(),
                ),
            ),
            (
                "files".into(),
                tree::Entry::Dir(
                    s.files
                        .iter()
                        .filter_map(|f| Some((name_of(f)?, tree::Entry::Path(f.clone()))))
                        .collect(),
                ),
            ),
        ];
        if work.join("patches").is_dir() {
            entries.push(("patches".into(), tree::Entry::Path(work.join("patches"))));
        }
        let (root, mut blobs) = tree::pack_root(entries)
            .map_err(|e| RemoteError::Refused(format!("cannot read the step's inputs: {e}")))?;
        let platform = platform(toolchain.as_deref());
        let command = proto::Command {
            arguments: ARGUMENTS.iter().map(|a| a.to_string()).collect(),
            output_paths: vec![super::OUTPUT_DIR.into()],
            platform: Some(platform.clone()),
            ..Default::default()
        }
        .encode_to_vec();
        let command_digest = digest_of(&command);
        blobs.insert(command_digest.clone(), Blob::Bytes(command));
        let action = proto::Action {
            command_digest: Some(command_digest),
            input_root_digest: Some(root),
            // No timeout: servers cap it (BuildGrid at 2 h), and the worker's
            // sandbox holds the step to its own limit, as here.
            platform: Some(platform),
            ..Default::default()
        }
        .encode_to_vec();
        let action_digest = digest_of(&action);
        blobs.insert(action_digest.clone(), Blob::Bytes(action));
        let sent = self.client.upload(&blobs, batch_limit)?;
        // Bounded by the time to wait for a worker, then by the step's own limit.
        let response = self
            .client
            .execute(
                &action_digest,
                self.queue_timeout,
                s.limits.time + RESULT_SLACK,
            )
            .map_err(Failure::Execution)?;
        if let Some(status) = response.status.filter(|st| st.code != 0) {
            return Err(Failure::Execution(RemoteError::Refused(format!(
                "the execution failed: {}",
                status.message
            ))));
        }
        let result = response.result.unwrap_or_default();
        let worker = result
            .execution_metadata
            .as_ref()
            .map(|m| m.worker.clone())
            .unwrap_or_default();
        let mut got = 0u64;
        if let Some(d) = &result.stdout_digest {
            got += self.fetch_log(d, log)?;
        }
        if result.exit_code != 0 {
            let tail = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .map(str::to_string)
                .collect();
            let why = String::from_utf8_lossy(&result.stderr_raw).into_owned();
            return Ok(Ran::Failed(ExecError::Failed {
                status: format!("failed on worker {worker}: {why}"),
                log: log.to_path_buf(),
                tail,
            }));
        }
        let tree_digest = result
            .output_directories
            .iter()
            .find(|d| d.path == super::OUTPUT_DIR)
            .and_then(|d| d.tree_digest.clone())
            .ok_or_else(|| RemoteError::Refused("the result has no out/".into()))?;
        let tree = self.client.read_blob(&tree_digest)?;
        got +=
            tree.len() as u64 + tree::unpack(&self.client, &tree, &work.join("out"), batch_limit)?;
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.bytes_up += sent;
        st.bytes_down += got;
        Ok(Ran::Done(worker))
    }

    /// The step's log, as the worker kept it, at `log`.
    fn fetch_log(&self, digest: &Digest, log: &Path) -> Result<u64, RemoteError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RemoteError::Refused(format!("cannot write the log: {e}")))?;
        }
        self.client.read_to_file(digest, log)?;
        Ok(digest.size_bytes.max(0) as u64)
    }
}

/// How long a result may take beyond the step's own time limit once a worker
/// runs it: moving its inputs and outputs.
const RESULT_SLACK: std::time::Duration = std::time::Duration::from_secs(600);
