//! Mirrors: places tried before a source's own URLs, by hash and by file name.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::error::FetchError;
use crate::hash::SourceHash;

/// The environment variable holding a mirror list.
pub const MIRRORS_ENV: &str = "BAKE_MIRRORS";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mirror {
    /// A local directory (also written `file:///...`); usable offline.
    Dir(PathBuf),
    /// An `http(s)://` base URL, without a trailing slash.
    Remote(String),
}

/// A place one candidate copy of a source is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    Local(PathBuf),
    Remote(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Remote(url) => f.write_str(url),
        }
    }
}

impl Mirror {
    /// `MIRROR/<algo>/<hex>` and then `MIRROR/<name>` for each file name.
    pub(crate) fn locations(&self, hash: &SourceHash, file_names: &[&str]) -> Vec<Location> {
        let by_hash = format!("{}/{}", hash.algo.name(), hash.hex);
        std::iter::once(by_hash.as_str())
            .chain(file_names.iter().copied())
            .map(|rel| match self {
                Mirror::Dir(dir) => Location::Local(dir.join(rel)),
                Mirror::Remote(base) => Location::Remote(format!("{base}/{rel}")),
            })
            .collect()
    }

    pub(crate) fn is_local(&self) -> bool {
        matches!(self, Mirror::Dir(_))
    }
}

impl FromStr for Mirror {
    type Err = FetchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| FetchError::BadMirror {
            mirror: s.to_string(),
            reason: reason.to_string(),
        };
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Mirror::Remote(s.trim_end_matches('/').to_string()));
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.contains("://") {
            return Err(bad("unknown scheme"));
        }
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        Ok(Mirror::Dir(PathBuf::from(path)))
    }
}

/// Parses a list separated by commas and/or whitespace, as `--mirror` and
/// `BAKE_MIRRORS` take it.
pub fn parse_mirrors(list: &str) -> Result<Vec<Mirror>, FetchError> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_builds_locations() {
        let mirrors = parse_mirrors(" /srv/m, http://127.0.0.1:8/m/ \n file:///x ").unwrap();
        assert_eq!(
            mirrors,
            vec![
                Mirror::Dir("/srv/m".into()),
                Mirror::Remote("http://127.0.0.1:8/m".into()),
                Mirror::Dir("/x".into()),
            ]
        );
        let hash: SourceHash = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(
            mirrors[1].locations(&hash, &["a.tar.gz"]),
            vec![
                Location::Remote(format!("http://127.0.0.1:8/m/sha256/{}", "ab".repeat(32))),
                Location::Remote("http://127.0.0.1:8/m/a.tar.gz".into()),
            ]
        );
        assert!(parse_mirrors("ftp://x").is_err());
        assert!(parse_mirrors("").unwrap().is_empty());
    }
}
