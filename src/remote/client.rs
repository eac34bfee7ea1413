//! A blocking client of a Remote Execution API v2 endpoint: each call runs on a
//! small tokio runtime of its own and is bounded in time, so a remote that does
//! not answer costs seconds, never a hung build.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Streaming};
use tonic_prost::ProstCodec;

use super::proto::{self, Digest, SHA256};
use crate::hash::{hex, uuid_v4};

/// How long connecting may take, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest transfer rate accepted, in bytes per second, for sizing the
/// timeout of a call that moves a blob.
const MIN_RATE: u64 = 1 << 20;
/// Bytes per ByteStream message, well under gRPC's default 4 MiB limit.
const CHUNK: usize = 1 << 20;
/// What a batch request may carry when the server names no lower limit.
const BATCH_LIMIT: u64 = 3 << 20;

/// Why a call failed, by what it means for the build.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The remote cannot be used (down, slow, refusing us): bake goes on without it.
    #[error("{0}")]
    Unreachable(String),
    #[error("not found")]
    NotFound,
    /// What the remote sent is wrong (a digest that does not match, a malformed
    /// tree): refused, and the instance built here.
    #[error("{0}")]
    Refused(String),
    /// No worker took an action within the time given: it runs here.
    #[error("no worker took it within {}s", .0.as_secs())]
    NotTaken(Duration),
}

impl RemoteError {
    fn from_status(s: tonic::Status) -> RemoteError {
        match s.code() {
            Code::NotFound => RemoteError::NotFound,
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::DataLoss => RemoteError::Refused(format!("{:?}: {}", s.code(), s.message())),
            code => RemoteError::Unreachable(format!("{code:?}: {}", s.message())),
        }
    }

    fn io(what: &str, path: &Path, e: std::io::Error) -> RemoteError {
        RemoteError::Refused(format!("{what} {}: {e}", path.display()))
    }
}

/// A blob to upload: bytes at hand, or a file's contents.
#[derive(Clone, Debug)]
pub enum Blob {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest {
        hash: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

/// The digest of a file's contents.
pub fn digest_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0i64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as i64;
    }
    Ok(Digest {
        hash: hex(&h.finalize()),
        size_bytes: size,
    })
}

/// What the server said about itself.
pub struct Capabilities {
    /// What one batch request may carry.
    pub batch_limit: u64,
    pub cache_update: bool,
}

pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    pub instance: String,
    /// The header carrying the token, and its value.
    auth: Option<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
    /// How long one call may take, besides what its bytes need.
    timeout: Duration,
}

impl Client {
    /// A client of `endpoint` (`http://` or `https://` as tonic names them);
    /// nothing connects before the first call.
    pub fn new(
        endpoint: &str,
        tls: bool,
        instance: String,
        auth: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bake-remote")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the remote client: {e}"))?;
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("not a usable address: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .tcp_nodelay(true);
        if tls {
            ep = ep
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| format!("cannot set up TLS: {e}"))?;
        }
        let channel = {
            let _guard = rt.enter();
            ep.connect_lazy()
        };
        let auth = auth
            .map(|(name, value)| {
                let name = MetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                let value = value
                    .parse()
                    .map_err(|_| "the token is not a valid header value".to_string())?;
                Ok::<_, String>((name, value))
            })
            .transpose()?;
        Ok(Client {
            rt,
            channel,
            instance,
            auth,
            timeout,
        })
    }

    /// What a failed call's status means. A server that refuses the
    /// credentials cannot be used this run: said so, with whether a token went.
    fn status(&self, s: tonic::Status) -> RemoteError {
        let token = match &self.auth {
            Some((name, _)) => format!("the token sent in `{name}` was not accepted"),
            None => "it wants a token: --remote-token-env VAR".to_string(),
        };
        match s.code() {
            Code::Unauthenticated => RemoteError::Unreachable(format!(
                "the server refused authentication: {}; {token}",
                s.message()
            )),
            Code::PermissionDenied => RemoteError::Unreachable(format!(
                "the server refused access: {}; {token}",
                s.message()
            )),
            _ => RemoteError::from_status(s),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some((name, value)) = &self.auth {
            r.metadata_mut().insert(name.clone(), value.clone());
        }
        r
    }

    /// Runs `fut` on the runtime, giving up after `timeout`.
    fn block<T>(
        &self,
        timeout: Duration,
        fut: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        self.rt.block_on(async {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(RemoteError::Unreachable(format!(
                    "no answer within {}s",
                    timeout.as_secs()
                ))),
            }
        })
    }

    async fn grpc(&self) -> Result<tonic::client::Grpc<Channel>, RemoteError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| RemoteError::Unreachable(format!("cannot connect: {e}")))?;
        Ok(grpc)
    }

    /// One unary call.
    pub fn unary<Req, Resp>(
        &self,
        path: &'static str,
        message: Req,
        timeout: Duration,
    ) -> Result<Resp, RemoteError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut request = self.request(message);
        // The server learns the deadline too: a long poll ends before it.
        request.set_timeout(timeout);
        self.block(timeout, async {
            let mut grpc = self.grpc().await?;
            grpc.unary(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match s.code() {
                // tonic's own end of the deadline the request carries.
                Code::Cancelled | Code::DeadlineExceeded => {
                    RemoteError::Unreachable(format!("no answer within {}s", timeout.as_secs()))
                }
                _ => self.status(s),
            })
        })
    }

    pub fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        let caps: proto::ServerCapabilities = self.unary(
            "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
            proto::GetCapabilitiesRequest {
                instance_name: self.instance.clone(),
            },
            self.timeout,
        )?;
        let cache = caps.cache_capabilities.unwrap_or_default();
        if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&SHA256) {
            return Err(RemoteError::Unreachable(
                "the server does not support SHA-256 digests".into(),
            ));
        }
        let limit = u64::try_from(cache.max_batch_total_size_bytes).unwrap_or(0);
        Ok(Capabilities {
            batch_limit: if limit == 0 {
                BATCH_LIMIT
            } else {
                // Room for the request's own framing.
                limit
                    .min(BATCH_LIMIT)
                    .saturating_sub(64 * 1024)
                    .max(64 * 1024)
            },
            cache_update: cache
                .action_cache_update_capabilities
                .is_some_and(|c| c.update_enabled),
        })
    }

    pub fn get_action_result(
        &self,
        action: &Digest,
        inline: &[&str],
    ) -> Result<proto::ActionResult, RemoteError> {
        self.unary(
            "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
            proto::GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action.clone()),
                inline_output_files: inline.iter().map(|s| s.to_string()).collect(),
                digest_function: SHA256,
            },
            self.timeout,
        )
    }

    pub fn update_action_result(
        &self,
        action: &Digest,
        result: proto::ActionResult,
    ) -> Result<(), RemoteError> {
        let _: proto::ActionResult = self.unary(
            "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
            proto::UpdateActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action.clone()),
                action_result: Some(result),
                digest_function: SHA256,
            },
            self.timeout,
        )?;
        Ok(())
    }

    /// Runs `action` on the Execution service: waits at most `queue` for a
    /// worker to take it, then at most `run` for its result. An action no
    /// worker took in time is cancelled (as far as the server lets us).
    pub fn execute(
        &self,
        action: &Digest,
        queue: Duration,
        run: Duration,
    ) -> Result<proto::ExecuteResponse, RemoteError> {
        let request = self.request(proto::ExecuteRequest {
            instance_name: self.instance.clone(),
            skip_cache_lookup: false,
            action_digest: Some(action.clone()),
            digest_function: SHA256,
        });
        let mut name = String::new();
        let outcome = self.block(queue + run, async {
            let mut grpc = self.grpc().await?;
            let mut stream: Streaming<proto::Operation> = grpc
                .server_streaming(
                    request,
                    PathAndQuery::from_static("/build.bazel.remote.execution.v2.Execution/Execute"),
                    ProstCodec::<proto::ExecuteRequest, proto::Operation>::default(),
                )
                .await
                .map_err(|s| self.status(s))?
                .into_inner();
            let queued_until = tokio::time::Instant::now() + queue;
            let mut taken = false;
            loop {
                let next = stream.message();
                let message = match taken {
                    true => next.await,
                    false => tokio::time::timeout_at(queued_until, next)
                        .await
                        .map_err(|_| RemoteError::NotTaken(queue))?,
                };
                let Some(op) = message.map_err(|s| self.status(s))? else {
                    break;
                };
                name.clone_from(&op.name);
                let stage = op
                    .metadata
                    .as_ref()
                    .and_then(|m| proto::ExecuteOperationMetadata::decode(m.value.as_slice()).ok());
                taken |= stage.is_some_and(|m| m.stage >= proto::STAGE_EXECUTING);
                if !op.done {
                    continue;
                }
                if let Some(e) = op.error.filter(|e| e.code != 0) {
                    // A worker's refusal (FAILED_PRECONDITION) is this action's
                    // alone; an Execution service that fails is the run's.
                    return Err(self.status(tonic::Status::new(Code::from(e.code), e.message)));
                }
                let any = op.response.unwrap_or_default();
                return proto::ExecuteResponse::decode(any.value.as_slice()).map_err(|e| {
                    RemoteError::Refused(format!("the execution's response does not decode: {e}"))
                });
            }
            Err(RemoteError::Unreachable(
                "the execution ended without a result".into(),
            ))
        });
        if let (Err(RemoteError::NotTaken(_)), false) = (&outcome, name.is_empty()) {
            // Best effort: a server that cannot cancel runs it later for nobody.
            let _: Result<proto::Empty, _> = self.unary(
                "/google.longrunning.Operations/CancelOperation",
                proto::CancelOperationRequest { name },
                self.timeout,
            );
        }
        outcome
    }

    /// Opens a session; like an update, it may wait for work up to `wait`.
    pub fn create_bot_session(
        &self,
        session: proto::BotSession,
        wait: Duration,
    ) -> Result<proto::BotSession, RemoteError> {
        self.unary(
            "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession",
            proto::CreateBotSessionRequest {
                parent: self.instance.clone(),
                bot_session: Some(session),
            },
            wait,
        )
    }

    /// Reports the session's leases; the server may hold the call until it
    /// has work (a long poll), hence `wait`.
    pub fn update_bot_session(
        &self,
        session: proto::BotSession,
        wait: Duration,
    ) -> Result<proto::BotSession, RemoteError> {
        self.unary(
            "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession",
            proto::UpdateBotSessionRequest {
                name: session.name.clone(),
                bot_session: Some(session),
            },
            wait,
        )
    }

    /// Which of `digests` the CAS lacks.
    pub fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, RemoteError> {
        let mut missing = Vec::new();
        for chunk in digests.chunks(10_000) {
            let r: proto::FindMissingBlobsResponse = self.unary(
                "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
                proto::FindMissingBlobsRequest {
                    instance_name: self.instance.clone(),
                    blob_digests: chunk.to_vec(),
                    digest_function: SHA256,
                },
                self.timeout,
            )?;
            missing.extend(r.missing_blob_digests);
        }
        Ok(missing)
    }

    /// Uploads the blobs the CAS lacks: small ones in batches, large ones by
    /// ByteStream. Fails unless every one was stored.
    pub fn upload(
        &self,
        blobs: &BTreeMap<Digest, Blob>,
        batch_limit: u64,
    ) -> Result<u64, RemoteError> {
        let wanted: Vec<Digest> = blobs.keys().filter(|d| d.size_bytes > 0).cloned().collect();
        let missing = self.find_missing(&wanted)?;
        let mut sent = 0u64;
        let mut batch: Vec<proto::UpdateBlob> = Vec::new();
        let mut batch_size = 0u64;
        for d in &missing {
            let Some(blob) = blobs.get(d) else {
                continue;
            };
            let size = d.size_bytes as u64;
            if size + 1024 > batch_limit {
                self.write(d, blob)?;
                sent += size;
                continue;
            }
            if batch_size + size + 1024 > batch_limit {
                self.batch_update(std::mem::take(&mut batch))?;
                batch_size = 0;
            }
            let data = match blob {
                Blob::Bytes(b) => b.clone(),
                Blob::File(p) => fs::read(p).map_err(|e| RemoteError::io("cannot read", p, e))?,
            };
            batch_size += size + 1024;
            sent += size;
            batch.push(proto::UpdateBlob {
                digest: Some(d.clone()),
                data,
            });
        }
        if !batch.is_empty() {
            self.batch_update(batch)?;
        }
        Ok(sent)
    }

    fn batch_update(&self, requests: Vec<proto::UpdateBlob>) -> Result<(), RemoteError> {
        let bytes: u64 = requests.iter().map(|r| r.data.len() as u64).sum();
        let r: proto::BatchUpdateBlobsResponse = self.unary(
            "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
            proto::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                digest_function: SHA256,
            },
            self.transfer_timeout(bytes),
        )?;
        for resp in r.responses {
            if let Some(s) = resp.status.filter(|s| s.code != 0) {
                let hash = resp.digest.map(|d| d.hash).unwrap_or_default();
                return Err(RemoteError::Unreachable(format!(
                    "the CAS did not store blob {hash}: {}",
                    s.message
                )));
            }
        }
        Ok(())
    }

    /// Streams one blob to the CAS.
    fn write(&self, digest: &Digest, blob: &Blob) -> Result<(), RemoteError> {
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            self.prefix(),
            uuid(),
            digest.hash,
            digest.size_bytes
        );
        let mut source: Box<dyn Read + Send> = match blob {
            Blob::Bytes(b) => Box::new(std::io::Cursor::new(b.clone())),
            Blob::File(p) => {
                Box::new(fs::File::open(p).map_err(|e| RemoteError::io("cannot read", p, e))?)
            }
        };
        let total = digest.size_bytes;
        let mut offset = 0i64;
        let mut failed = None;
        let chunks = std::iter::from_fn(move || {
            if offset >= total || failed.is_some() {
                return None;
            }
            let mut buf = vec![0u8; CHUNK.min((total - offset) as usize)];
            if let Err(e) = source.read_exact(&mut buf) {
                // A file that shrank: the stream ends short, so the server refuses it.
                failed = Some(e);
                return None;
            }
            let request = proto::WriteRequest {
                resource_name: if offset == 0 {
                    resource.clone()
                } else {
                    String::new()
                },
                write_offset: offset,
                finish_write: offset + buf.len() as i64 >= total,
                data: buf,
            };
            offset += request.data.len() as i64;
            Some(request)
        });
        let request = self.request(tokio_stream::iter(chunks));
        let response: proto::WriteResponse =
            self.block(self.transfer_timeout(total as u64), async {
                let mut grpc = self.grpc().await?;
                grpc.client_streaming(
                    request,
                    PathAndQuery::from_static("/google.bytestream.ByteStream/Write"),
                    ProstCodec::<proto::WriteRequest, proto::WriteResponse>::default(),
                )
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| self.status(s))
            })?;
        if response.committed_size != total {
            return Err(RemoteError::Unreachable(format!(
                "the CAS stored {} of {total} bytes of blob {}",
                response.committed_size, digest.hash
            )));
        }
        Ok(())
    }

    /// Reads small blobs in one call; each is checked against its digest.
    pub fn batch_read(&self, digests: &[Digest]) -> Result<Vec<(Digest, Vec<u8>)>, RemoteError> {
        let bytes: u64 = digests.iter().map(|d| d.size_bytes as u64).sum();
        let r: proto::BatchReadBlobsResponse = self.unary(
            "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
            proto::BatchReadBlobsRequest {
                instance_name: self.instance.clone(),
                digests: digests.to_vec(),
                digest_function: SHA256,
            },
            self.transfer_timeout(bytes),
        )?;
        let mut out = Vec::with_capacity(digests.len());
        for resp in r.responses {
            let d = resp.digest.unwrap_or_default();
            match resp.status {
                Some(s) if s.code == Code::NotFound as i32 => {
                    return Err(RemoteError::Refused(format!(
                        "blob {} is not in the CAS",
                        d.hash
                    )))
                }
                Some(s) if s.code != 0 => {
                    return Err(RemoteError::Unreachable(format!(
                        "cannot read blob {}: {}",
                        d.hash, s.message
                    )))
                }
                _ => {}
            }
            check(&d, &resp.data)?;
            out.push((d, resp.data));
        }
        if out.len() != digests.len() {
            return Err(RemoteError::Refused(
                "the CAS answered for fewer blobs than asked".into(),
            ));
        }
        Ok(out)
    }

    /// Reads one blob into memory, checked against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, RemoteError> {
        let mut data = Vec::with_capacity(digest.size_bytes.max(0) as usize);
        self.read_stream(digest, &mut data)?;
        check(digest, &data)?;
        Ok(data)
    }

    /// Streams one blob into the file `to`, checked against its digest.
    pub fn read_to_file(&self, digest: &Digest, to: &Path) -> Result<(), RemoteError> {
        let file = fs::File::create(to).map_err(|e| RemoteError::io("cannot create", to, e))?;
        let mut out = Hashing {
            inner: std::io::BufWriter::new(file),
            hash: Sha256::new(),
            size: 0,
        };
        self.read_stream(digest, &mut out)?;
        out.inner
            .flush()
            .map_err(|e| RemoteError::io("cannot write", to, e))?;
        let got = Digest {
            hash: hex(&out.hash.finalize()),
            size_bytes: out.size,
        };
        if got != *digest {
            return Err(mismatch(digest, &got));
        }
        Ok(())
    }

    fn read_stream(&self, digest: &Digest, out: &mut dyn Write) -> Result<(), RemoteError> {
        let resource = format!(
            "{}blobs/{}/{}",
            self.prefix(),
            digest.hash,
            digest.size_bytes
        );
        let request = self.request(proto::ReadRequest {
            resource_name: resource,
            read_offset: 0,
            read_limit: 0,
        });
        let limit = digest.size_bytes;
        self.block(self.transfer_timeout(digest.size_bytes as u64), async {
            let mut grpc = self.grpc().await?;
            let mut stream: Streaming<proto::ReadResponse> = grpc
                .server_streaming(
                    request,
                    PathAndQuery::from_static("/google.bytestream.ByteStream/Read"),
                    ProstCodec::<proto::ReadRequest, proto::ReadResponse>::default(),
                )
                .await
                .map_err(|s| self.status(s))?
                .into_inner();
            let mut got = 0i64;
            while let Some(chunk) = stream.message().await.map_err(|s| self.status(s))? {
                got += chunk.data.len() as i64;
                // More than the digest says: refused without reading on.
                if got > limit {
                    return Err(RemoteError::Refused(format!(
                        "blob {} is longer than its digest says",
                        digest.hash
                    )));
                }
                out.write_all(&chunk.data)
                    .map_err(|e| RemoteError::Refused(format!("cannot write: {e}")))?;
            }
            Ok(())
        })
    }

    /// A call's time limit: the base, plus what its bytes need at the slowest
    /// rate accepted.
    fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / MIN_RATE)
    }

    /// `INSTANCE/` before a ByteStream resource name, or nothing.
    fn prefix(&self) -> String {
        if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        }
    }
}

/// Refuses `data` unless it is what `digest` names.
pub fn check(digest: &Digest, data: &[u8]) -> Result<(), RemoteError> {
    let got = digest_of(data);
    if got != *digest {
        return Err(mismatch(digest, &got));
    }
    Ok(())
}

fn mismatch(want: &Digest, got: &Digest) -> RemoteError {
    RemoteError::Refused(format!(
        "blob {}/{} does not match its digest (got {}/{})",
        want.hash, want.size_bytes, got.hash, got.size_bytes
    ))
}

/// A version 4 UUID, as ByteStream upload names want.
fn uuid() -> String {
    let mut b = [0u8; 16];
    let random = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if random.is_err() {
        // Only uniqueness matters: fall back on time and process.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        b.copy_from_slice(&Sha256::digest(seed.as_bytes())[..16]);
    }
    uuid_v4(&b)
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: i64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as i64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
