//! Fixed-output sources: fetched from mirrors, `debian:` or the declared URLs,
//! checked against their hash while streaming, kept in the store by hash.

mod debian;
mod http;
mod unpack;
mod verify;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hash::{HashAlgo, SourceHash};

pub use unpack::{unpack, unpack_or_copy, UnpackError};
pub use verify::hash_file;

/// Where else a source may come from, tried before its own URLs.
#[derive(Clone, Debug)]
pub enum Mirror {
    Url(String),
    Dir(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mirrors: Vec<Mirror>,
    /// Only the store and local mirrors.
    pub offline: bool,
    pub connect_timeout: Duration,
    /// Longest wait for a response's headers.
    pub read_timeout: Duration,
    /// Longest time a whole body may take.
    pub body_timeout: Duration,
    /// Attempts per URL on transient failures (connection errors, 5xx).
    pub attempts: u32,
    /// The apt configuration `debian:` URLs are resolved against.
    pub apt_root: PathBuf,
}

impl Options {
    /// Mirrors are base URLs (`scheme://`) or local directories.
    pub fn new(mirrors: &[String], offline: bool) -> Options {
        let mirrors = mirrors
            .iter()
            .flat_map(|m| m.split_whitespace())
            .filter(|m| !m.is_empty())
            .map(|m| {
                if m.contains("://") && !m.starts_with("file://") {
                    Mirror::Url(m.trim_end_matches('/').to_string())
                } else {
                    Mirror::Dir(PathBuf::from(m.trim_start_matches("file://")))
                }
            })
            .collect();
        Options {
            mirrors,
            offline,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30 * 60),
            attempts: 3,
            apt_root: PathBuf::from("/etc/apt"),
        }
    }
}

/// Every way a source could not be had, one per place tried.
#[derive(Debug)]
pub struct FetchError {
    pub attempts: Vec<(String, String)>,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts.is_empty() {
            return write!(
                f,
                "no place to fetch from (offline, and no local mirror has it)"
            );
        }
        write!(
            f,
            "could not fetch from any of {} places:",
            self.attempts.len()
        )?;
        for (place, why) in &self.attempts {
            write!(f, "\n  {place}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FetchError {}

/// The file name a source has in the store: `sha256-HEX`.
pub fn stored_name(hash: &SourceHash) -> String {
    format!("{}-{}", hash.algo.name(), hash.hex)
}

pub fn stored(dir: &Path, hash: &SourceHash) -> bool {
    dir.join(stored_name(hash)).is_file()
}

/// The last path segment of a URL: the file name mirrors are asked for.
fn basename(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Places to try, in order: mirrors (by file name, then by hash), then the URLs.
fn candidates(urls: &[String], hash: &SourceHash, options: &Options) -> Vec<String> {
    let by_hash = format!("{}/{}", hash.algo.name(), hash.hex);
    let mut out = Vec::new();
    for m in &options.mirrors {
        let base = match m {
            Mirror::Url(u) if !options.offline => u.clone(),
            Mirror::Url(_) => continue,
            Mirror::Dir(d) => format!("file://{}", d.display()),
        };
        for u in urls {
            out.push(format!("{base}/{}", basename(u)));
        }
        out.push(format!("{base}/{by_hash}"));
    }
    for u in urls {
        let resolved = match u.strip_prefix("debian:") {
            Some(path) => match debian::archive_uri(&options.apt_root) {
                Some(archive) => format!("{archive}/{}", path.trim_start_matches('/')),
                None => continue,
            },
            None => u.clone(),
        };
        if options.offline && !resolved.starts_with("file://") {
            continue;
        }
        out.push(resolved);
    }
    out.dedup();
    out
}

/// Makes sure the source with `hash` is in `dir`, fetching it if needed, and
/// returns its path. Concurrent callers (threads or processes) download it once.
pub fn fetch_source(
    dir: &Path,
    urls: &[String],
    hash: &SourceHash,
    options: &Options,
) -> Result<PathBuf, FetchError> {
    let io_err = |e: io::Error| FetchError {
        attempts: vec![(dir.display().to_string(), e.to_string())],
    };
    let target = dir.join(stored_name(hash));
    if target.is_file() {
        return Ok(target);
    }
    fs::create_dir_all(dir).map_err(io_err)?;
    let lock = fs::File::create(dir.join(format!("{}.lock", stored_name(hash)))).map_err(io_err)?;
    lock.lock().map_err(io_err)?;
    if target.is_file() {
        return Ok(target);
    }
    let mut attempts = Vec::new();
    for place in candidates(urls, hash, options) {
        let tmp = dir.join(format!(
            ".{}.{}.part",
            stored_name(hash),
            std::process::id()
        ));
        match fetch_one(&place, &tmp, hash, options) {
            Ok(()) => {
                fs::rename(&tmp, &target).map_err(io_err)?;
                return Ok(target);
            }
            Err(why) => {
                let _ = fs::remove_file(&tmp);
                attempts.push((place, why));
            }
        }
    }
    Err(FetchError { attempts })
}

/// Copies one place into `tmp`, checking the hash; the error says why not.
fn fetch_one(place: &str, tmp: &Path, hash: &SourceHash, options: &Options) -> Result<(), String> {
    let mut file = fs::File::create(tmp).map_err(|e| e.to_string())?;
    let mut hasher = verify::Hasher::new(hash.algo);
    {
        let mut sink = HashingWriter {
            file: &mut file,
            hasher: &mut hasher,
        };
        if let Some(path) = place.strip_prefix("file://") {
            let mut src = fs::File::open(path).map_err(|e| e.to_string())?;
            io::copy(&mut src, &mut sink).map_err(|e| e.to_string())?;
        } else {
            http::download(place, &mut sink, options)?;
        }
    }
    file.sync_all().map_err(|e| e.to_string())?;
    let actual = hasher.finish();
    if actual != *hash {
        return Err(format!("hash mismatch: expected {hash}, got {actual}"));
    }
    Ok(())
}

struct HashingWriter<'a> {
    file: &'a mut fs::File,
    hasher: &'a mut verify::Hasher,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Adds a local file to the store under its hash (`bake import`). With `expected`,
/// only a file matching one of them is taken: its hash names it.
pub fn import_file(
    dir: &Path,
    path: &Path,
    expected: Option<&[SourceHash]>,
) -> io::Result<Option<SourceHash>> {
    let algos: Vec<HashAlgo> = match expected {
        Some(list) => {
            let mut a: Vec<HashAlgo> = list.iter().map(|h| h.algo).collect();
            a.sort();
            a.dedup();
            a
        }
        None => vec![HashAlgo::Sha256],
    };
    for algo in algos {
        let actual = hash_file(path, algo)?;
        if expected.is_some_and(|list| !list.contains(&actual)) {
            continue;
        }
        fs::create_dir_all(dir)?;
        let target = dir.join(stored_name(&actual));
        if !target.is_file() {
            let tmp = dir.join(format!(
                ".{}.{}.part",
                stored_name(&actual),
                std::process::id()
            ));
            fs::copy(path, &tmp)?;
            fs::rename(&tmp, &target)?;
        }
        return Ok(Some(actual));
    }
    Ok(None)
}
