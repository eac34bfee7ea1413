//! `bake worker`: a bot of a Remote Workers API (v1test2 Bots) server such as
//! BuildGrid. It takes one lease at a time, runs the step it names in bake's
//! own sandbox with its own copy of the toolchain whose identity the action
//! requires (refusing a lease whose toolchain it does not have), uploads the
//! output tree and log, and hands back the ActionResult.

use std::time::{Duration, Instant};

use prost::Message;

use super::client::{digest_of, Blob, RemoteError};
use super::exec::{isa, Manifest, ARGUMENTS, MANIFEST, NO_TOOLCHAIN, TOOLCHAIN_PROPERTY};
use super::proto::{self, ActionResult, BotSession, Device, DeviceProperty, Lease, Status};
use super::{tree, Remote, OUTPUT_DIR};
use crate::derivation::{sandbox_step, ScriptStep, ToolchainSpec};
use crate::exec::{Confinement, Limits};
use crate::names::{InstanceId, NodeName};
use crate::store::Store;

/// A toolchain this worker can run steps with.
pub struct Toolchain {
    pub name: NodeName,
    pub id: InstanceId,
    pub spec: ToolchainSpec,
}

/// How long one UpdateBotSession may wait for work (the server answers at
/// 80% of it); also the longest a stop request waits.
const POLL: Duration = Duration::from_secs(10);
/// How long a worker that lost its session waits before joining again.
const REJOIN: Duration = Duration::from_secs(5);
/// How often a worker says it is alive while a lease runs.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// google.rpc codes a lease ends with.
const OK: i32 = 0;
const FAILED_PRECONDITION: i32 = 9;
const INTERNAL: i32 = 13;

const ACTION_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Action";
const DIGEST_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Digest";
const RESULT_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";

/// What a worker finds its toolchains to be now, evaluated again.
pub type CurrentToolchains<'a> = dyn Fn() -> Result<Vec<Toolchain>, String> + Sync + 'a;

/// The device a worker with `toolchains` advertises: OSFamily, ISA and one
/// `bake-toolchain` per toolchain (and `none`, for steps without one).
fn device(name: &str, toolchains: &[Toolchain]) -> Device {
    let mut properties = vec![
        ("OSFamily", "linux".to_string()),
        ("ISA", isa()),
        (TOOLCHAIN_PROPERTY, NO_TOOLCHAIN.to_string()),
    ];
    properties.extend(
        toolchains
            .iter()
            .map(|t| (TOOLCHAIN_PROPERTY, t.spec.identity.to_hex())),
    );
    Device {
        handle: name.to_string(),
        properties: properties
            .into_iter()
            .map(|(key, value)| DeviceProperty {
                key: key.to_string(),
                value,
            })
            .collect(),
    }
}

/// The identities of `toolchains`, sorted.
fn identities(toolchains: &[Toolchain]) -> Vec<String> {
    let mut ids: Vec<String> = toolchains
        .iter()
        .map(|t| t.spec.identity.to_hex())
        .collect();
    ids.sort();
    ids
}

/// Serves leases as bot `name` until bake is interrupted, advertising
/// `toolchains` (and, once `current` finds them changed, what it finds); an
/// error when the server cannot be reached at the start.
pub fn serve(
    remote: &Remote,
    store: &Store,
    toolchains: Vec<Toolchain>,
    current: &CurrentToolchains<'_>,
    name: &str,
    jobs: usize,
) -> Result<(), String> {
    let client = &remote.client;
    let caps = client.capabilities().map_err(|e| e.to_string())?;
    let mut advertised = toolchains;
    let join = |toolchains: &[Toolchain]| {
        client.create_bot_session(
            BotSession {
                bot_id: name.to_string(),
                status: proto::BOT_OK,
                worker: Some(proto::Worker {
                    devices: vec![device(name, toolchains)],
                }),
                ..Default::default()
            },
            POLL,
        )
    };
    // A server that is not there at the start is an error; one lost later is
    // joined again, every few seconds, until bake is stopped.
    let mut session = join(&advertised).map_err(|e| format!("cannot join the worker pool: {e}"))?;
    crate::progress::note(&format!(
        "worker {name} joined {} with {} toolchain(s)",
        remote.url,
        advertised.len()
    ));
    loop {
        if crate::interrupt::requested().is_some() {
            session.status = proto::BOT_TERMINATING;
            let _ = client.update_bot_session(session, KEEPALIVE);
            return Ok(());
        }
        let new = session
            .leases
            .iter()
            .position(|l| l.state == proto::LEASE_ACTIVE || l.state == proto::LEASE_PENDING);
        let mut refused = false;
        if let Some(n) = new {
            let lease = session.leases[n].clone();
            let machine = Machine {
                remote,
                store,
                toolchains: &advertised,
                current,
                name,
                jobs,
                batch_limit: caps.batch_limit,
            };
            session.leases[n] = std::thread::scope(|scope| {
                let run = scope.spawn(|| run_lease(&machine, &lease));
                // Kept alive while the step runs, with the lease active.
                let mut alive = session.clone();
                alive.leases[n].state = proto::LEASE_ACTIVE;
                let mut last = Instant::now();
                while !run.is_finished() {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= KEEPALIVE {
                        if let Ok(s) = client.update_bot_session(alive.clone(), KEEPALIVE) {
                            alive.version = s.version;
                        }
                        last = Instant::now();
                    }
                }
                run.join().unwrap_or_else(|_| Lease {
                    state: proto::LEASE_COMPLETED,
                    status: Some(Status {
                        code: INTERNAL,
                        message: "the worker's step panicked".into(),
                    }),
                    ..lease.clone()
                })
            });
            refused = session.leases[n]
                .status
                .as_ref()
                .is_some_and(|s| s.code == FAILED_PRECONDITION);
        }
        match client.update_bot_session(session.clone(), POLL) {
            Ok(s) => session = s,
            Err(e) => {
                crate::progress::warn(&format!(
                    "worker {name} lost its session ({e}); joining again in {}s",
                    REJOIN.as_secs()
                ));
                let until = Instant::now() + REJOIN;
                while Instant::now() < until && crate::interrupt::requested().is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if let Ok(s) = join(&advertised) {
                    session = s;
                }
            }
        }
        // A refusal because the toolchains changed here: from now on the
        // worker advertises what it has, so it is given only leases it can run.
        if let (true, Ok(now)) = (refused, current()) {
            if identities(&now) != identities(&advertised) {
                if let Ok(s) = join(&now) {
                    crate::progress::note(&format!(
                        "worker {name} joined again with {} toolchain(s): its toolchains changed",
                        now.len()
                    ));
                    session = s;
                    advertised = now;
                }
            }
        }
        session.leases.retain(|l| l.state != proto::LEASE_CANCELLED);
    }
}

/// What a worker runs leases with.
struct Machine<'a> {
    remote: &'a Remote,
    store: &'a Store,
    /// The toolchains advertised.
    toolchains: &'a [Toolchain],
    current: &'a CurrentToolchains<'a>,
    name: &'a str,
    jobs: usize,
    batch_limit: u64,
}

/// Runs one lease; the lease returned is completed, with its status and result.
fn run_lease(machine: &Machine<'_>, lease: &Lease) -> Lease {
    let started = Instant::now();
    let (code, message, result) = match run_action(machine, lease) {
        Ok((result, id)) => {
            crate::progress::note(&format!(
                "{id}: exit {} in {:.1}s",
                result.exit_code,
                started.elapsed().as_secs_f64()
            ));
            (OK, String::new(), Some(result))
        }
        Err(Refusal::NoToolchain(why)) => {
            crate::progress::warn(&format!("refused lease {}: {why}", lease.id));
            (FAILED_PRECONDITION, why, None)
        }
        Err(Refusal::Failed(why)) => {
            crate::progress::warn(&format!("lease {} failed: {why}", lease.id));
            (INTERNAL, why, None)
        }
    };
    Lease {
        state: proto::LEASE_COMPLETED,
        status: Some(Status { code, message }),
        result: result.map(|r| prost_types::Any {
            type_url: RESULT_TYPE.into(),
            value: r.encode_to_vec(),
        }),
        ..lease.clone()
    }
}

enum Refusal {
    /// Not a step this worker can run.
    NoToolchain(String),
    /// The server, the CAS or this machine failed it (not the script).
    Failed(String),
}

impl From<RemoteError> for Refusal {
    fn from(e: RemoteError) -> Refusal {
        Refusal::Failed(e.to_string())
    }
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> Refusal + '_ {
    move |e| Refusal::Failed(format!("{what}: {e}"))
}

/// Fetches the action, runs its step, uploads what it made.
fn run_action(machine: &Machine<'_>, lease: &Lease) -> Result<(ActionResult, String), Refusal> {
    let Machine {
        remote,
        store,
        toolchains,
        current,
        name,
        jobs,
        batch_limit,
    } = *machine;
    let client = &remote.client;
    let payload = lease.payload.clone().unwrap_or_default();
    let action_bytes = match payload.type_url.as_str() {
        ACTION_TYPE => payload.value,
        DIGEST_TYPE => {
            let digest = proto::Digest::decode(payload.value.as_slice())
                .map_err(|e| Refusal::Failed(format!("the lease's digest does not decode: {e}")))?;
            client.read_blob(&digest)?
        }
        other => {
            return Err(Refusal::NoToolchain(format!(
                "a lease of {other}, not an action"
            )))
        }
    };
    let action = proto::Action::decode(action_bytes.as_slice())
        .map_err(|e| Refusal::Failed(format!("the action does not decode: {e}")))?;
    let command = client.read_blob(&action.command_digest.unwrap_or_default())?;
    let command = proto::Command::decode(command.as_slice())
        .map_err(|e| Refusal::Failed(format!("the command does not decode: {e}")))?;
    if command.arguments != ARGUMENTS {
        return Err(Refusal::NoToolchain(format!(
            "the command {:?} is not a bake step",
            command.arguments
        )));
    }
    let wanted = action
        .platform
        .iter()
        .chain(&command.platform)
        .flat_map(|p| &p.properties)
        .find(|p| p.name == TOOLCHAIN_PROPERTY)
        .map_or(NO_TOOLCHAIN.to_string(), |p| p.value.clone());
    let toolchain = match wanted.as_str() {
        NO_TOOLCHAIN => None,
        identity => Some(
            toolchains
                .iter()
                .find(|t| t.spec.identity.to_hex() == identity)
                .ok_or_else(|| {
                    Refusal::NoToolchain(format!("no toolchain with identity {identity} here"))
                })?,
        ),
    };
    // What was advertised may be stale: the toolchain's files may have changed
    // since the worker joined. Its identity now decides, as it would here.
    if let Some(t) = toolchain {
        let now = current().map_err(Refusal::NoToolchain)?;
        match now.iter().find(|n| n.id == t.id) {
            Some(n) if n.spec.identity == t.spec.identity => {}
            Some(n) => {
                return Err(Refusal::NoToolchain(format!(
                    "{} changed since this worker joined: identity {} is now {}",
                    t.id,
                    t.spec.identity.to_hex(),
                    n.spec.identity.to_hex()
                )))
            }
            None => {
                return Err(Refusal::NoToolchain(format!(
                    "{} is no longer installed here",
                    t.id
                )))
            }
        }
    }
    let root = store.tmp_dir().map_err(failed("cannot make a directory"))?;
    let work = store.tmp_dir().map_err(failed("cannot make a directory"))?;
    let dir = root.path().join("root");
    tree::unpack_root(
        client,
        &action.input_root_digest.unwrap_or_default(),
        &dir,
        batch_limit,
    )?;
    let manifest: Manifest = std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Refusal::Failed(format!("the input root has no usable {MANIFEST}")))?;
    if manifest.toolchain.as_deref().unwrap_or(NO_TOOLCHAIN) != wanted {
        return Err(Refusal::Failed(
            "the step names another toolchain than its platform".into(),
        ));
    }
    for part in ["src", "patches"] {
        if dir.join(part).exists() {
            std::fs::rename(dir.join(part), work.path().join(part))
                .map_err(failed("cannot lay out the build directory"))?;
        }
    }
    let id = InstanceId::new(manifest.id.clone());
    let inputs: Vec<_> = manifest
        .inputs
        .iter()
        .map(|n| (n.clone(), dir.join("inputs").join(n)))
        .collect();
    let files: Vec<_> = manifest
        .files
        .iter()
        .map(|n| dir.join("files").join(n))
        .collect();
    let step = sandbox_step(
        ScriptStep {
            id: &id,
            script: &manifest.script,
            env: &manifest.env,
            toolchain: toolchain.map(|t| &t.spec),
            inputs: &inputs,
            files: &files,
            jobs: manifest.jobs.min(jobs).max(1),
            limits: Limits {
                time: Duration::from_secs(manifest.time_secs),
                memory: manifest.memory,
                output: manifest.output,
            },
        },
        toolchain.map(|t| &t.name),
        Confinement::Confined,
        store,
    );
    let _cache_lock = match toolchain {
        Some(t) if t.spec.cache.is_some() => Some(
            store
                .lock_toolchain(&t.id)
                .map_err(failed("cannot lock the toolchain cache"))?,
        ),
        _ => None,
    };
    let log = root.path().join("log");
    let ran = crate::exec::run(&step, work.path(), &log);
    let mut blobs = std::collections::BTreeMap::new();
    let log_bytes = std::fs::read(&log).unwrap_or_default();
    let log_digest = digest_of(&log_bytes);
    blobs.insert(log_digest.clone(), Blob::Bytes(log_bytes));
    let mut result = ActionResult {
        stdout_digest: Some(log_digest),
        execution_metadata: Some(proto::ExecutedActionMetadata {
            worker: name.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    match ran {
        Ok(()) => {
            let packed = tree::pack(&work.path().join(OUTPUT_DIR), false)
                .map_err(failed("cannot read the output"))?;
            let tree_digest = digest_of(&packed.tree);
            blobs.extend(packed.blobs);
            blobs.insert(tree_digest.clone(), Blob::Bytes(packed.tree));
            result.output_directories.push(proto::OutputDirectory {
                path: OUTPUT_DIR.into(),
                tree_digest: Some(tree_digest),
            });
        }
        Err(crate::exec::ExecError::Interrupted) => {
            return Err(Refusal::Failed("the worker was stopped".into()))
        }
        Err(e) => {
            result.exit_code = 1;
            result.stderr_raw = e.to_string().into_bytes();
        }
    }
    client.upload(&blobs, batch_limit)?;
    Ok((result, id.to_string()))
}
