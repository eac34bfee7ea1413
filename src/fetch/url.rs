//! The URLs a recipe's `source` may list.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::error::FetchError;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SourceUrl {
    /// `http://...` or `https://...`, kept as written.
    Http(String),
    /// `file:///absolute/path`.
    File(PathBuf),
    /// `debian:pool/...`: a path in the Debian archive that apt is configured with.
    Debian(String),
}

impl SourceUrl {
    /// The last path segment, which mirrors are searched by.
    pub fn file_name(&self) -> Option<&str> {
        let name = match self {
            SourceUrl::Http(url) => {
                let end = url.find(['?', '#']).unwrap_or(url.len());
                let path = url[..end].split_once("://").map_or("", |(_, rest)| rest);
                path.split_once('/')
                    .map_or("", |(_, p)| p)
                    .rsplit('/')
                    .next()
            }
            SourceUrl::File(path) => path.file_name().and_then(|n| n.to_str()),
            SourceUrl::Debian(path) => path.rsplit('/').next(),
        };
        name.filter(|n| !n.is_empty() && *n != "." && *n != "..")
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceUrl::Http(url) => f.write_str(url),
            SourceUrl::File(path) => write!(f, "file://{}", path.display()),
            SourceUrl::Debian(path) => write!(f, "debian:{path}"),
        }
    }
}

impl FromStr for SourceUrl {
    type Err = FetchError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| FetchError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(bad("no host"));
            }
            return Ok(SourceUrl::Http(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("file://") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(bad("a file:// URL needs an absolute path (file:///...)"));
            }
            return Ok(SourceUrl::File(path.to_path_buf()));
        }
        if let Some(path) = url.strip_prefix("debian:") {
            let relative = Path::new(path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if path.is_empty() || !relative {
                return Err(bad(
                    "expected a relative path in the archive, e.g. debian:pool/main/...",
                ));
            }
            return Ok(SourceUrl::Debian(path.to_string()));
        }
        Err(bad("unknown scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_and_names_files() {
        let http: SourceUrl = "https://example.org/dl/k-2.3.4.tar.gz?x=1".parse().unwrap();
        assert_eq!(http.file_name(), Some("k-2.3.4.tar.gz"));
        let file: SourceUrl = "file:///srv/k.tar.gz".parse().unwrap();
        assert_eq!(file, SourceUrl::File("/srv/k.tar.gz".into()));
        assert_eq!(file.file_name(), Some("k.tar.gz"));
        let deb: SourceUrl = "debian:pool/main/k/keepalived/k_1.orig.tar.gz"
            .parse()
            .unwrap();
        assert_eq!(deb.file_name(), Some("k_1.orig.tar.gz"));
        assert_eq!(
            deb.to_string(),
            "debian:pool/main/k/keepalived/k_1.orig.tar.gz"
        );
        assert_eq!(
            "http://host".parse::<SourceUrl>().unwrap().file_name(),
            None
        );
    }

    #[test]
    fn rejects_what_it_cannot_fetch() {
        for bad in [
            "ftp://x/y",
            "file://relative",
            "debian:../etc/passwd",
            "debian:/abs",
            "http://",
        ] {
            assert!(bad.parse::<SourceUrl>().is_err(), "{bad}");
        }
    }
}
