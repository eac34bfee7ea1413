//! What can go wrong while getting a source's bytes into the store.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::hash::SourceHash;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FetchError {
    #[error("could not fetch source `{name}` ({hash}); tried:{}{}", AttemptList(attempts), offline_note(*skipped_remote))]
    #[diagnostic(
        code(bake::fetch::unavailable),
        help("add a mirror that holds the file (--mirror / BAKE_MIRRORS), or put it into the store with `bake import FILE`")
    )]
    Unavailable {
        name: String,
        hash: SourceHash,
        attempts: Vec<Attempt>,
        /// Remote locations left out because fetching was offline.
        skipped_remote: usize,
    },

    #[error("`{url}` is not a source URL: {reason}")]
    #[diagnostic(
        code(bake::fetch::bad_url),
        help("use http://, https://, file:///ABSOLUTE/PATH or debian:pool/...")
    )]
    BadUrl { url: String, reason: String },

    #[error("`{mirror}` is not a mirror: {reason}")]
    #[diagnostic(
        code(bake::fetch::bad_mirror),
        help("a mirror is an http(s):// base URL or a local directory")
    )]
    BadMirror { mirror: String, reason: String },

    #[error("{} has {actual}, not the expected {expected}", path.display())]
    #[diagnostic(code(bake::fetch::import_mismatch))]
    ImportMismatch {
        path: PathBuf,
        expected: SourceHash,
        actual: SourceHash,
    },

    #[error("interrupted while fetching")]
    #[diagnostic(code(bake::fetch::interrupted))]
    Interrupted,

    #[error("{what} {}: {source}", path.display())]
    #[diagnostic(code(bake::fetch::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl FetchError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FetchError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// One place a source was looked for and why it did not deliver.
#[derive(Debug)]
pub struct Attempt {
    pub location: String,
    pub failure: AttemptFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptFailure {
    #[error("not found")]
    NotFound,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        expected: SourceHash,
        actual: SourceHash,
    },
    #[error("body ended after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("{got} bytes, but the recipe declares size {expected}")]
    WrongSize { expected: u64, got: u64 },
    #[error("more bytes than the recipe's declared size {declared}")]
    LongerThanDeclared { declared: u64 },
    #[error("larger than the download limit of {} (declare its size, or raise limits download=...)", crate::units::show_size(*limit))]
    TooLarge { limit: u64 },
    #[error("timed out ({0})")]
    Timeout(String),
    #[error("{0}")]
    Transport(String),
    #[error("no Debian archive: {0}")]
    NoDebianArchive(String),
    #[error("{0}")]
    Io(io::Error),
}

impl AttemptFailure {
    /// Worth asking the same server again after a pause.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            AttemptFailure::Status(code) => *code >= 500 || *code == 408 || *code == 429,
            AttemptFailure::Truncated { .. }
            | AttemptFailure::Timeout(_)
            | AttemptFailure::Transport(_) => true,
            AttemptFailure::NotFound
            | AttemptFailure::WrongSize { .. }
            | AttemptFailure::LongerThanDeclared { .. }
            | AttemptFailure::TooLarge { .. }
            | AttemptFailure::HashMismatch { .. }
            | AttemptFailure::NoDebianArchive(_)
            | AttemptFailure::Io(_) => false,
        }
    }
}

struct AttemptList<'a>(&'a [Attempt]);

impl fmt::Display for AttemptList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(" nothing");
        }
        for attempt in self.0 {
            write!(f, "\n  {}: {}", attempt.location, attempt.failure)?;
        }
        Ok(())
    }
}

fn offline_note(skipped_remote: usize) -> String {
    match skipped_remote {
        0 => String::new(),
        n => format!("\n  ({n} remote location(s) skipped: offline)"),
    }
}
