//! Beyond one machine: a shared cache (and, with `--remote-exec`, builds) over
//! the Bazel Remote Execution API v2, as BuildGrid, Buildbarn, BuildBuddy and
//! NativeLink serve it.
//!
//! Each instance is one REAPI action whose digest follows from its build key
//! alone (see [`cache_action`]); its ActionResult holds the output tree and the
//! output hash bake recorded. What comes from a remote is checked twice: every
//! blob against its digest, the tree against that output hash. Whatever goes
//! wrong with a remote costs a warning and a local build, never the build.

mod client;
mod exec;
mod proto;
mod tree;
mod worker;

pub use worker::{serve, Toolchain as WorkerToolchain};

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use prost::Message;

use crate::hash::{BuildKey, OutputHash, SourceHash};
use crate::names::InstanceId;
use crate::store::hash_tree;

use client::{digest_of, Blob, Capabilities, Client, RemoteError};
use proto::{ActionResult, Digest};

/// The ActionResult's file holding the output hash bake recorded (hex).
const OUTPUT_HASH_FILE: &str = "bake-output-hash";
/// The ActionResult's directory holding the output tree.
const OUTPUT_DIR: &str = "out";
/// The ActionResult's file holding a source, as fetched.
const SOURCE_FILE: &str = "source";
/// Part of every action bake makes: change it when the mapping changes.
const SALT: &[u8] = b"bake-remote-v1";

/// How to reach a remote, as the command line says.
pub struct Options {
    /// `grpc://HOST:PORT[/INSTANCE]` or `grpcs://HOST[:PORT][/INSTANCE]`.
    pub url: String,
    /// The environment variable holding a token, if any.
    pub token_env: Option<String>,
    /// The header the token goes in as it is; None: `authorization: Bearer TOKEN`.
    pub token_header: Option<String>,
    /// Upload what is built here.
    pub upload: bool,
    /// Send script steps to the Execution service.
    pub exec: bool,
    /// How long one call may take (besides what its bytes need).
    pub timeout: std::time::Duration,
    /// How long a step sent to the Execution service may wait for a worker.
    pub queue_timeout: std::time::Duration,
}

/// A remote cache, as one run of bake uses it.
pub struct Remote {
    url: String,
    client: Client,
    upload: bool,
    exec: bool,
    /// How long a step sent away may wait for a worker before it runs here.
    queue_timeout: std::time::Duration,
    /// The instances run on a worker this run, and where.
    executed: Mutex<Vec<(InstanceId, String)>>,
    /// What the server said of itself; None once it could not be asked.
    caps: OnceLock<Option<Capabilities>>,
    /// Set after the remote failed: the rest of the run goes without it.
    down: AtomicBool,
    /// Set after its Execution service failed: steps run here from then on.
    exec_down: AtomicBool,
    /// Actions the cache said it lacks this run: asked once, not again when
    /// the settle pass and then the build come to the same key.
    missing: Mutex<HashSet<String>>,
    stats: Mutex<Stats>,
}

/// What one run moved.
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub fetched: usize,
    pub bytes_down: u64,
    pub pushed: usize,
    pub bytes_up: u64,
    /// Steps run on a remote worker.
    pub executed: usize,
}

/// The endpoint tonic connects to, whether it is TLS, and the instance name.
fn parse_url(url: &str) -> Result<(String, bool, String), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("grpcs://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("grpc://") {
        (false, r)
    } else {
        return Err(format!(
            "`{url}`: a remote is grpc://HOST:PORT[/INSTANCE] or grpcs://HOST[:PORT][/INSTANCE]"
        ));
    };
    let (authority, instance) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let authority = match (has_port, tls) {
        (true, _) => authority.to_string(),
        (false, true) => format!("{authority}:443"),
        (false, false) => return Err(format!("`{url}` names no port: grpc://HOST:PORT")),
    };
    let scheme = if tls { "https" } else { "http" };
    Ok((
        format!("{scheme}://{authority}"),
        tls,
        instance.trim_end_matches('/').to_string(),
    ))
}

impl Remote {
    /// Checks the URL and the token; nothing connects before the first call.
    pub fn new(options: Options) -> Result<Remote, String> {
        let (endpoint, tls, instance) = parse_url(&options.url)?;
        let token = match &options.token_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Some(t),
                _ => {
                    return Err(format!(
                        "--remote-token-env: the variable {var} is not set or empty"
                    ))
                }
            },
        };
        let header = match (token, &options.token_header) {
            (None, _) => None,
            (Some(t), None) => Some(("authorization".to_string(), format!("Bearer {t}"))),
            (Some(t), Some(h)) => Some((h.to_ascii_lowercase(), t)),
        };
        let client = Client::new(&endpoint, tls, instance, header, options.timeout)?;
        Ok(Remote {
            url: options.url,
            client,
            upload: options.upload,
            exec: options.exec,
            queue_timeout: options.queue_timeout,
            executed: Mutex::new(Vec::new()),
            caps: OnceLock::new(),
            down: AtomicBool::new(false),
            exec_down: AtomicBool::new(false),
            missing: Mutex::new(HashSet::new()),
            stats: Mutex::new(Stats::default()),
        })
    }

    /// Whether script steps go to the Execution service.
    pub fn executes(&self) -> bool {
        self.exec
    }

    /// The instances run on a worker, and which.
    pub fn executed(&self) -> Vec<(InstanceId, String)> {
        self.executed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's capabilities, asked once; None while the remote is down.
    fn caps(&self) -> Option<&Capabilities> {
        if self.down.load(Ordering::Relaxed) {
            return None;
        }
        let caps = self
            .caps
            .get_or_init(|| match self.client.capabilities() {
                Ok(c) => Some(c),
                Err(e) => {
                    self.give_up(&e);
                    None
                }
            })
            .as_ref();
        caps.filter(|_| !self.down.load(Ordering::Relaxed))
    }

    /// Stops using the remote for the rest of the run, saying so once.
    fn give_up(&self, e: &RemoteError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            crate::progress::warn(&format!(
                "remote {} cannot be used ({e}); building without it",
                self.url
            ));
        }
    }

    /// What a failed call means: a remote that is down is left alone from now
    /// on; a refused answer is said, and that instance is built here.
    fn failed(&self, id: &InstanceId, e: RemoteError) {
        match e {
            RemoteError::NotFound => {}
            RemoteError::Unreachable(_) => self.give_up(&e),
            RemoteError::Refused(why) => self.refused(id, &why),
            RemoteError::NotTaken(_) => self.refused(id, &e.to_string()),
        }
    }

    /// Says that what the remote has for `id` is refused, and why.
    pub fn refused(&self, id: &InstanceId, why: &str) {
        crate::progress::warn(&format!(
            "refused what remote {} has for {id}: {why}; building it here",
            self.url
        ));
    }

    /// The cache's result for `action`, remembering a miss for the rest of the run.
    fn action_result(&self, action: &Digest, inline: &[&str]) -> Result<ActionResult, RemoteError> {
        let missing = || self.missing.lock().unwrap_or_else(|e| e.into_inner());
        if missing().contains(&action.hash) {
            return Err(RemoteError::NotFound);
        }
        let found = self.client.get_action_result(action, inline);
        if let Err(RemoteError::NotFound) = found {
            missing().insert(action.hash.clone());
        }
        found
    }

    /// The output hash the remote has recorded for `key`, without fetching
    /// anything (for `bake plan`, and the keys of its dependents).
    pub fn recorded(&self, id: &InstanceId, kind: &str, key: &BuildKey) -> Option<OutputHash> {
        self.caps()?;
        let (action, _) = cache_action(kind, key);
        let found = self
            .action_result(&action, &[OUTPUT_HASH_FILE])
            .and_then(|r| self.parse(&r));
        match found {
            Ok((output, _)) => Some(output),
            Err(e) => {
                self.failed(id, e);
                None
            }
        }
    }

    /// Fetches the output of `key` into `dest` (which must not exist) if the
    /// remote has it, and returns its output hash once the tree there has it.
    pub fn fetch(
        &self,
        id: &InstanceId,
        kind: &str,
        key: &BuildKey,
        dest: &Path,
    ) -> Option<OutputHash> {
        let caps = self.caps()?;
        let (action, _) = cache_action(kind, key);
        let fetched = (|| {
            let result = self.action_result(&action, &[OUTPUT_HASH_FILE])?;
            let (output, tree) = self.parse(&result)?;
            let tree = self.client.read_blob(&tree)?;
            let bytes = tree::unpack(&self.client, &tree, dest, caps.batch_limit)?;
            let actual = hash_tree(dest)
                .map_err(|e| RemoteError::Refused(format!("cannot hash the fetched tree: {e}")))?;
            if actual != output {
                return Err(RemoteError::Refused(format!(
                    "its tree hashes to {actual}, not to {output} as recorded"
                )));
            }
            Ok((output, bytes + tree.len() as u64))
        })();
        match fetched {
            Ok((output, bytes)) => {
                let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.fetched += 1;
                s.bytes_down += bytes;
                Some(output)
            }
            Err(e) => {
                self.failed(id, e);
                None
            }
        }
    }

    /// The digest of the file the remote holds for the source with `hash`.
    fn source_blob(&self, hash: &SourceHash) -> Result<Digest, RemoteError> {
        let (action, _) = source_action(hash);
        let result = self.action_result(&action, &[])?;
        result
            .output_files
            .iter()
            .find(|f| f.path == SOURCE_FILE)
            .and_then(|f| f.digest.clone())
            .ok_or_else(|| RemoteError::Refused(format!("the result has no {SOURCE_FILE}")))
    }

    /// Whether the remote holds the source with `hash` (for the plan).
    pub fn has_source(&self, id: &InstanceId, hash: &SourceHash) -> bool {
        if self.caps().is_none() {
            return false;
        }
        match self.source_blob(hash) {
            Ok(_) => true,
            Err(e) => {
                self.failed(id, e);
                false
            }
        }
    }

    /// Downloads the source with `hash` into the file `dest`, checked against
    /// its CAS digest; the caller checks it against `hash` before storing it.
    pub fn fetch_source(&self, id: &InstanceId, hash: &SourceHash, dest: &Path) -> bool {
        if self.caps().is_none() {
            return false;
        }
        let fetched = self.source_blob(hash).and_then(|digest| {
            self.client.read_to_file(&digest, dest)?;
            Ok(digest.size_bytes.max(0) as u64)
        });
        match fetched {
            Ok(bytes) => {
                let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.fetched += 1;
                s.bytes_down += bytes;
                true
            }
            Err(e) => {
                self.failed(id, e);
                false
            }
        }
    }

    /// Uploads the source file at `path` (checked to have `hash`): the blob
    /// first, then the ActionResult naming it.
    pub fn push_source(&self, id: &InstanceId, hash: &SourceHash, path: &Path) {
        let (action, action_blobs) = source_action(hash);
        self.push_result(id, action, action_blobs, |blobs| {
            let digest = client::digest_file(path).map_err(|e| {
                RemoteError::Refused(format!("cannot read {}: {e}", path.display()))
            })?;
            blobs.insert(digest.clone(), Blob::File(path.to_path_buf()));
            Ok(ActionResult {
                output_files: vec![proto::OutputFile {
                    path: SOURCE_FILE.into(),
                    digest: Some(digest),
                    ..Default::default()
                }],
                ..Default::default()
            })
        });
    }

    /// The recorded output hash and the tree's digest in an ActionResult bake wrote.
    fn parse(&self, r: &ActionResult) -> Result<(OutputHash, Digest), RemoteError> {
        if r.exit_code != 0 {
            return Err(RemoteError::NotFound);
        }
        let file = r
            .output_files
            .iter()
            .find(|f| f.path == OUTPUT_HASH_FILE)
            .ok_or_else(|| RemoteError::Refused(format!("the result has no {OUTPUT_HASH_FILE}")))?;
        let digest = file.digest.clone().unwrap_or_default();
        let text = if file.contents.is_empty() {
            self.client.read_blob(&digest)?
        } else {
            client::check(&digest, &file.contents)?;
            file.contents.clone()
        };
        let output = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<OutputHash>().ok())
            .ok_or_else(|| RemoteError::Refused(format!("{OUTPUT_HASH_FILE} is not a hash")))?;
        let tree = r
            .output_directories
            .iter()
            .find(|d| d.path == OUTPUT_DIR)
            .and_then(|d| d.tree_digest.clone())
            .ok_or_else(|| RemoteError::Refused(format!("the result has no {OUTPUT_DIR}/")))?;
        Ok((output, tree))
    }

    /// Uploads the tree at `tree` (hashing to `output`) as the output of `key`:
    /// every blob first, the ActionResult last, so no result ever names a blob
    /// the CAS lacks.
    pub fn push(
        &self,
        id: &InstanceId,
        kind: &str,
        key: &BuildKey,
        tree: &Path,
        output: &OutputHash,
    ) {
        let (action, action_blobs) = cache_action(kind, key);
        self.push_result(id, action, action_blobs, |blobs| {
            let packed = tree::pack(tree, false)
                .map_err(|e| RemoteError::Refused(format!("cannot read the output: {e}")))?;
            let hash_blob = output.to_string().into_bytes();
            let hash_digest = digest_of(&hash_blob);
            let tree_digest = digest_of(&packed.tree);
            blobs.extend(packed.blobs);
            blobs.insert(hash_digest.clone(), Blob::Bytes(hash_blob));
            blobs.insert(tree_digest.clone(), Blob::Bytes(packed.tree));
            Ok(ActionResult {
                output_files: vec![proto::OutputFile {
                    path: OUTPUT_HASH_FILE.into(),
                    digest: Some(hash_digest),
                    ..Default::default()
                }],
                output_directories: vec![proto::OutputDirectory {
                    path: OUTPUT_DIR.into(),
                    tree_digest: Some(tree_digest),
                }],
                ..Default::default()
            })
        });
    }

    /// Uploads the blobs `describe` gathers (with the action's own), then the
    /// ActionResult it returns under `action`, if uploads are on.
    fn push_result(
        &self,
        id: &InstanceId,
        action: Digest,
        action_blobs: Vec<(Digest, Vec<u8>)>,
        describe: impl FnOnce(&mut BTreeMap<Digest, Blob>) -> Result<ActionResult, RemoteError>,
    ) {
        if !self.upload {
            return;
        }
        let Some(caps) = self.caps() else {
            return;
        };
        if !caps.cache_update {
            self.give_up(&RemoteError::Unreachable(
                "its action cache takes no uploads".into(),
            ));
            return;
        }
        let pushed = (|| {
            let mut blobs = BTreeMap::new();
            let mut result = describe(&mut blobs)?;
            for (d, b) in action_blobs {
                blobs.insert(d, Blob::Bytes(b));
            }
            let sent = self.client.upload(&blobs, caps.batch_limit)?;
            result.execution_metadata = Some(proto::ExecutedActionMetadata {
                worker: format!("bake {}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            });
            self.client.update_action_result(&action, result)?;
            self.missing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&action.hash);
            Ok(sent)
        })();
        match pushed {
            Ok(sent) => {
                let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.pushed += 1;
                s.bytes_up += sent;
            }
            Err(RemoteError::Refused(why)) => {
                crate::progress::warn(&format!("cannot upload {id} to remote {}: {why}", self.url))
            }
            Err(e) => self.give_up(&e),
        }
    }
}

/// The action an instance is cached under, and the blobs it names (its Command,
/// and itself). From the build key alone, so every machine that would build
/// the same thing asks for the same digest:
///
/// - Command: `arguments ["bake", "realise", KIND, BUILD_KEY]`, `output_paths
///   ["bake-output-hash", "out"]`;
/// - Action: that command's digest, the empty input root, salt `bake-remote-v1`.
///
/// The build key already covers the script, the variables, the toolchain's
/// identity and the inputs' output hashes.
pub fn cache_action(kind: &str, key: &BuildKey) -> (Digest, Vec<(Digest, Vec<u8>)>) {
    action(
        vec![
            "bake".into(),
            "realise".into(),
            kind.into(),
            key.to_string(),
        ],
        vec![OUTPUT_HASH_FILE.into(), OUTPUT_DIR.into()],
    )
}

/// The action a source is cached under: from its declared hash alone (as its
/// dependents key it), so a URL or a mirror changes nothing:
///
/// - Command: `arguments ["bake", "source", "ALGO:HEX"]`, `output_paths ["source"]`;
/// - Action: that command's digest, the empty input root, salt `bake-remote-v1`;
/// - ActionResult: the output file `source`, the file as fetched.
pub fn source_action(hash: &SourceHash) -> (Digest, Vec<(Digest, Vec<u8>)>) {
    action(
        vec!["bake".into(), "source".into(), hash.to_string()],
        vec![SOURCE_FILE.into()],
    )
}

/// The action of a Command with these arguments and output paths, and its blobs.
fn action(arguments: Vec<String>, output_paths: Vec<String>) -> (Digest, Vec<(Digest, Vec<u8>)>) {
    let command = proto::Command {
        arguments,
        output_paths,
        ..Default::default()
    }
    .encode_to_vec();
    let command_digest = digest_of(&command);
    let action = proto::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(digest_of(b"")),
        salt: SALT.to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let action_digest = digest_of(&action);
    (
        action_digest.clone(),
        vec![(command_digest, command), (action_digest, action)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            parse_url("grpc://127.0.0.1:50051").unwrap(),
            ("http://127.0.0.1:50051".into(), false, String::new())
        );
        assert_eq!(
            parse_url("grpcs://cache.example.org/ci/main/").unwrap(),
            (
                "https://cache.example.org:443".into(),
                true,
                "ci/main".into()
            )
        );
        assert!(parse_url("http://x:1").is_err());
        assert!(parse_url("grpc://x").is_err());
        assert!(parse_url("grpc:///main").is_err());
    }

    #[test]
    fn the_action_follows_from_the_key_alone() {
        let k1: BuildKey = crate::hash::Digest::of(b"a").to_hex().parse().unwrap();
        let k2: BuildKey = crate::hash::Digest::of(b"b").to_hex().parse().unwrap();
        assert_eq!(cache_action("build", &k1).0, cache_action("build", &k1).0);
        assert_ne!(cache_action("build", &k1).0, cache_action("build", &k2).0);
        assert_ne!(cache_action("build", &k1).0, cache_action("sysext", &k1).0);
        assert_eq!(cache_action("build", &k1).0.hash.len(), 64);
    }

    #[test]
    fn a_source_is_cached_under_its_declared_hash_alone() {
        let hash = |c: char| -> SourceHash {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .unwrap()
        };
        assert_eq!(source_action(&hash('a')).0, source_action(&hash('a')).0);
        assert_ne!(source_action(&hash('a')).0, source_action(&hash('b')).0);
        let key: BuildKey = crate::hash::Digest::of(b"a").to_hex().parse().unwrap();
        assert_ne!(source_action(&hash('a')).0, cache_action("source", &key).0);
    }
}
