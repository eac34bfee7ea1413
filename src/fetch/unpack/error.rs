//! Why an archive was not unpacked.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum UnpackError {
    #[error("refusing to unpack {}: entry `{entry}` {reason}", archive.display())]
    #[diagnostic(
        code(bake::unpack::refused),
        help("the archive would write outside its directory or create special files; check where it came from")
    )]
    Refused {
        archive: PathBuf,
        entry: String,
        reason: Refusal,
    },

    #[error("{} is not an archive bake can unpack (tar, tar.gz, tar.xz, tar.bz2, tar.zst or zip)", path.display())]
    #[diagnostic(
        code(bake::unpack::not_an_archive),
        help("for a file that is not an archive, write `unpack #false` in its source")
    )]
    NotAnArchive { path: PathBuf },

    #[error("refusing to unpack {}: it unpacks to more than {}", archive.display(), crate::units::show_size(*limit))]
    #[diagnostic(
        code(bake::unpack::too_large),
        help("if the archive is what it should be, raise the source's limit: limits unpacked=\"32G\" ratio=1000")
    )]
    TooLarge { archive: PathBuf, limit: u64 },

    #[error("cannot unpack into {}: it exists and is not an empty directory", dest.display())]
    #[diagnostic(code(bake::unpack::dest_not_empty))]
    DestNotEmpty { dest: PathBuf },

    #[error("`{name}` is not a plain file name")]
    #[diagnostic(code(bake::unpack::bad_file_name))]
    BadFileName { name: String },

    #[error("cannot read {}{}: {source}", archive.display(), entry.as_ref().map(|e| format!(" (entry `{e}`)")).unwrap_or_default())]
    #[diagnostic(
        code(bake::unpack::corrupt),
        help("the archive may be damaged or truncated")
    )]
    Corrupt {
        archive: PathBuf,
        entry: Option<String>,
        source: io::Error,
    },

    #[error("{what} {}: {source}", path.display())]
    #[diagnostic(code(bake::unpack::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl UnpackError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        UnpackError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// What makes an entry unsafe to unpack.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("has an absolute path")]
    AbsolutePath,
    #[error("has a `..` component")]
    ParentDir,
    #[error("is a symlink to `{target}`, which points outside the tree")]
    SymlinkEscapes { target: String },
    #[error("is a symlink to `{target}`, which loops")]
    SymlinkLoops { target: String },
    #[error("is a hard link to `{target}`, which is outside the tree")]
    HardLinkEscapes { target: String },
    #[error("is a hard link to `{target}`, which is not a file unpacked before it")]
    HardLinkMissing { target: String },
    #[error("lies under `{link}`, which is a symlink")]
    ThroughSymlink { link: String },
    #[error("collides with an earlier entry")]
    Collision,
    #[error("is a device node")]
    Device,
    #[error("is a fifo")]
    Fifo,
    #[error("is of a type bake does not unpack ({kind})")]
    Unsupported { kind: String },
}
