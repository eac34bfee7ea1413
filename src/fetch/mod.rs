//! Sources: fixed-output fetching into the store, mirrors, offline import and
//! safe unpacking.
//!
//! A source is identified by its declared hash alone. [`Fetcher::fetch`] looks in
//! the store, then in each mirror (by hash, then by file name), then at the
//! source's own URLs in order; bytes are hashed while they stream into a
//! temporary file, and only a file with the declared hash is renamed into the
//! store.

mod debian;
mod error;
mod hashing;
mod http;
mod mirror;
mod progress;
mod store;
pub mod unpack;
mod url;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use error::{Attempt, AttemptFailure, FetchError};
pub use hashing::hash_file;
pub use mirror::{parse_mirrors, Mirror, MIRRORS_ENV};
pub use progress::ProgressMode;
pub use store::SourceStore;
pub use url::SourceUrl;

use crate::hash::{HashAlgo, SourceHash};
use hashing::SourceHasher;
use http::{failure_of_io, Download, Http};
use mirror::Location;
use progress::Progress;

/// A recipe's `source` node, expanded for one instance.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    /// Tried in order, after the mirrors.
    pub urls: Vec<SourceUrl>,
    pub hash: SourceHash,
    /// The exact size, when declared; else at most `max_size` bytes are taken.
    pub size: Option<u64>,
    pub max_size: u64,
}

/// How much a source without a declared size may download: enough for any
/// source tarball, not for a stream that never ends.
pub const DEFAULT_DOWNLOAD_LIMIT: u64 = 8 << 30;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Extra attempts per URL after a transient failure (5xx, reset, timeout).
    pub retries: u32,
    /// Pause before the first retry; doubled for each further one.
    pub backoff: Duration,
}

#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub mirrors: Vec<Mirror>,
    /// Only the store, local-directory mirrors and `file://` URLs.
    pub offline: bool,
    /// Root under which `etc/apt/` names the Debian archive for `debian:` URLs.
    pub apt_root: PathBuf,
    pub connect_timeout: Duration,
    /// Longest wait for any single read.
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
    pub progress: ProgressMode,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirrors: Vec::new(),
            offline: false,
            apt_root: PathBuf::from("/"),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy {
                retries: 3,
                backoff: Duration::from_secs(1),
            },
            progress: ProgressMode::Auto,
        }
    }
}

/// Fetches sources into one store; share one across threads to fetch in parallel.
pub struct Fetcher {
    store: SourceStore,
    options: FetchOptions,
    http: Http,
    progress: Progress,
    debian_archive: OnceLock<Result<String, String>>,
}

impl Fetcher {
    pub fn new(store: SourceStore, options: FetchOptions) -> Self {
        Fetcher {
            http: Http::new(options.connect_timeout, options.read_timeout),
            progress: Progress::new(options.progress),
            store,
            options,
            debian_archive: OnceLock::new(),
        }
    }

    /// The store path of `source`, downloading it first unless the store has it.
    pub fn fetch(&self, source: &SourceSpec) -> Result<PathBuf, FetchError> {
        if let Some(path) = self.store.get(&source.hash) {
            return Ok(path);
        }
        let _lock = self.store.lock(&source.hash)?;
        // Another thread or process may have fetched it while we waited.
        if let Some(path) = self.store.get(&source.hash) {
            return Ok(path);
        }
        let mut attempts = Vec::new();
        let mut skipped_remote = 0;
        for location in self.locations(source, &mut attempts, &mut skipped_remote) {
            match self.try_location(source, &location)? {
                Ok(path) => return Ok(path),
                Err(failure) => attempts.push(Attempt {
                    location: location.to_string(),
                    failure,
                }),
            }
        }
        Err(FetchError::Unavailable {
            name: source.name.clone(),
            hash: source.hash.clone(),
            attempts,
            skipped_remote,
        })
    }

    /// Mirrors first, then the source's URLs; remote ones left out when offline.
    fn locations(
        &self,
        source: &SourceSpec,
        attempts: &mut Vec<Attempt>,
        skipped_remote: &mut usize,
    ) -> Vec<Location> {
        let mut names: Vec<&str> = Vec::new();
        for name in source.urls.iter().filter_map(SourceUrl::file_name) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut locations = Vec::new();
        for mirror in &self.options.mirrors {
            if self.options.offline && !mirror.is_local() {
                *skipped_remote += 1;
            } else {
                locations.extend(mirror.locations(&source.hash, &names));
            }
        }
        for url in &source.urls {
            let location = match url {
                SourceUrl::Http(url) => Location::Remote(url.clone()),
                SourceUrl::File(path) => Location::Local(path.clone()),
                SourceUrl::Debian(path) => match self.debian_location(path) {
                    Ok(location) => location,
                    Err(failure) => {
                        attempts.push(Attempt {
                            location: url.to_string(),
                            failure,
                        });
                        continue;
                    }
                },
            };
            if self.options.offline && matches!(location, Location::Remote(_)) {
                *skipped_remote += 1;
            } else {
                locations.push(location);
            }
        }
        locations
    }

    fn debian_location(&self, path: &str) -> Result<Location, AttemptFailure> {
        let base = self
            .debian_archive
            .get_or_init(|| debian::debian_archive(&self.options.apt_root))
            .as_ref()
            .map_err(|reason| AttemptFailure::NoDebianArchive(reason.clone()))?;
        Ok(match base.strip_prefix("file:") {
            Some(dir) => Location::Local(Path::new(dir.trim_start_matches("//")).join(path)),
            None => Location::Remote(format!("{base}/{path}")),
        })
    }

    /// The outer error is fatal (the store cannot be written); the inner one
    /// sends us on to the next location.
    fn try_location(
        &self,
        source: &SourceSpec,
        location: &Location,
    ) -> Result<Result<PathBuf, AttemptFailure>, FetchError> {
        match location {
            Location::Local(path) => {
                let download = match open_local(path) {
                    Ok(download) => download,
                    Err(failure) => return Ok(Err(failure)),
                };
                self.receive(source, location, download, AttemptFailure::Io)
            }
            Location::Remote(url) => {
                let retry = &self.options.retry;
                let mut attempt = 0;
                loop {
                    let result = match self.http.open(url) {
                        Ok(download) => self.receive(source, location, download, failure_of_io)?,
                        Err(failure) => Err(failure),
                    };
                    match result {
                        Err(failure) if failure.is_transient() && attempt < retry.retries => {
                            std::thread::sleep(retry.backoff.saturating_mul(1 << attempt.min(16)));
                            attempt += 1;
                        }
                        other => return Ok(other),
                    }
                }
            }
        }
    }

    /// Streams one candidate into a temporary file and commits it if it is whole
    /// and has the declared hash.
    fn receive(
        &self,
        source: &SourceSpec,
        location: &Location,
        mut download: Download,
        read_failure: fn(io::Error) -> AttemptFailure,
    ) -> Result<Result<PathBuf, AttemptFailure>, FetchError> {
        let limit = source.size.unwrap_or(source.max_size);
        match (download.length, source.size) {
            (Some(len), Some(size)) if len != size => {
                return Ok(Err(AttemptFailure::WrongSize {
                    expected: size,
                    got: len,
                }))
            }
            (Some(len), None) if len > limit => {
                return Ok(Err(AttemptFailure::TooLarge { limit }));
            }
            _ => {}
        }
        let mut temp = self.store.temp_file()?;
        let mut hasher = SourceHasher::new(source.hash.algo);
        let transfer = self
            .progress
            .start(&source.name, &location.to_string(), download.length);
        let read = temp.fill_from(&mut download.body, &mut hasher, limit, |n| {
            transfer.advance(n)
        })?;
        let outcome = read
            .map_err(|e| match (e.kind(), source.size) {
                (io::ErrorKind::FileTooLarge, Some(declared)) => {
                    AttemptFailure::LongerThanDeclared { declared }
                }
                (io::ErrorKind::FileTooLarge, None) => AttemptFailure::TooLarge { limit },
                _ => read_failure(e),
            })
            .and_then(|got| match (download.length, source.size) {
                (Some(expected), _) if got != expected => {
                    Err(AttemptFailure::Truncated { expected, got })
                }
                (None, Some(expected)) if got != expected => {
                    Err(AttemptFailure::WrongSize { expected, got })
                }
                _ => Ok(got),
            });
        let outcome = outcome.and_then(|got| {
            let actual = hasher.finish();
            if actual == source.hash {
                Ok(got)
            } else {
                Err(AttemptFailure::HashMismatch {
                    expected: source.hash.clone(),
                    actual,
                })
            }
        });
        transfer.finish(outcome.as_ref().copied());
        match outcome {
            Ok(_) => Ok(Ok(self.store.commit(temp, &source.hash)?)),
            Err(failure) => Ok(Err(failure)),
        }
    }
}

fn open_local(path: &Path) -> Result<Download, AttemptFailure> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => AttemptFailure::NotFound,
        _ => AttemptFailure::Io(e),
    })?;
    let length = file.metadata().ok().map(|m| m.len());
    Ok(Download {
        length,
        body: Box::new(file),
    })
}

/// Adds a local file to the store (`bake import`). Without `expected` it is
/// filed under its sha256; with it, under that hash if the bytes match.
pub fn import_file(
    store: &SourceStore,
    path: &Path,
    expected: Option<&SourceHash>,
) -> Result<SourceHash, FetchError> {
    let mut input = File::open(path).map_err(|e| FetchError::io("cannot open", path, e))?;
    let mut temp = store.temp_file()?;
    let mut hasher = SourceHasher::new(expected.map_or(HashAlgo::Sha256, |h| h.algo));
    temp.fill_from(&mut input as &mut dyn Read, &mut hasher, u64::MAX, |_| {})?
        .map_err(|e| FetchError::io("cannot read", path, e))?;
    let actual = hasher.finish();
    if let Some(expected) = expected.filter(|e| **e != actual) {
        return Err(FetchError::ImportMismatch {
            path: path.to_path_buf(),
            expected: expected.clone(),
            actual,
        });
    }
    if store.get(&actual).is_none() {
        store.commit(temp, &actual)?;
    }
    Ok(actual)
}

/// Downloads `url` into `to` (not into the store: `bake rebuild-check` fetches
/// a publisher's files to compare them), with the options' timeouts.
pub fn download(
    url: &str,
    to: &mut dyn io::Write,
    options: &FetchOptions,
) -> Result<u64, AttemptFailure> {
    let http = Http::new(options.connect_timeout, options.read_timeout);
    let mut download = http.open(url)?;
    io::copy(&mut download.body, to).map_err(failure_of_io)
}
