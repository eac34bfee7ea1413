//! `debian:` URLs, resolved against the Debian archive that apt is configured with.
//!
//! The archive's host is read from the machine's apt sources at run time, never
//! written down: one-line `.list` files and deb822 `.sources` files, in the order
//! apt reads them.

use std::fs;
use std::path::{Path, PathBuf};

/// One archive entry of the apt configuration.
#[derive(Debug, PartialEq, Eq)]
struct AptEntry {
    uri: String,
    suites: Vec<String>,
}

impl AptEntry {
    fn is_security(&self) -> bool {
        self.uri.ends_with("-security") || self.suites.iter().any(|s| s.ends_with("-security"))
    }

    fn looks_like_debian(&self) -> bool {
        self.uri.rsplit('/').next() == Some("debian")
    }
}

/// The base URI of the main Debian archive configured under `apt_root`
/// (normally `/`): the first entry whose path ends in `/debian`, else the first
/// entry at all, leaving out security archives and non-http/file URIs.
pub(crate) fn debian_archive(apt_root: &Path) -> Result<String, String> {
    let mut entries = Vec::new();
    for file in apt_source_files(apt_root) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|e| e == "sources") {
            entries.extend(parse_deb822(&text));
        } else {
            entries.extend(parse_one_line(&text));
        }
    }
    entries.retain(|e| !e.is_security());
    entries
        .iter()
        .find(|e| e.looks_like_debian())
        .or_else(|| entries.first())
        .map(|e| e.uri.clone())
        .ok_or_else(|| {
            format!(
                "no Debian archive in {}/etc/apt/sources.list or sources.list.d/",
                apt_root.display()
            )
        })
}

/// `sources.list`, then `sources.list.d/*.list` and `*.sources` sorted by name;
/// apt ignores any other suffix (`.disabled`, `.save`, ...), and so do we.
fn apt_source_files(apt_root: &Path) -> Vec<PathBuf> {
    let etc = apt_root.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    let mut parts: Vec<PathBuf> = fs::read_dir(etc.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
        .collect();
    parts.sort();
    files.extend(parts);
    files
}

fn usable_uri(uri: &str) -> Option<String> {
    let scheme_ok = ["http://", "https://", "file:/"]
        .iter()
        .any(|s| uri.starts_with(s));
    scheme_ok.then(|| uri.trim_end_matches('/').to_string())
}

/// `deb [ option=value ... ] URI SUITE [COMPONENT...]`
fn parse_one_line(text: &str) -> Vec<AptEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("deb" | "deb-src")) {
            continue;
        }
        let mut word = words.next();
        if word.is_some_and(|w| w.starts_with('[')) {
            while let Some(w) = word {
                word = words.next();
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (word.and_then(usable_uri), words.next()) else {
            continue;
        };
        entries.push(AptEntry {
            uri,
            suites: vec![suite.to_string()],
        });
    }
    entries
}

/// Stanzas of `Field: value` lines separated by blank lines; continuation lines
/// start with whitespace.
fn parse_deb822(text: &str) -> Vec<AptEntry> {
    let mut entries = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let lines = text.lines().chain(std::iter::once(""));
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            entries.extend(deb822_entries(&stanza));
            stanza.clear();
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            stanza.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    entries
}

fn deb822_entries(stanza: &[(String, String)]) -> Vec<AptEntry> {
    let field = |name: &str| {
        stanza
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let has_deb = field("types")
        .split_whitespace()
        .any(|t| t == "deb" || t == "deb-src");
    let enabled = !field("enabled").eq_ignore_ascii_case("no");
    if !has_deb || !enabled {
        return Vec::new();
    }
    let suites: Vec<String> = field("suites")
        .split_whitespace()
        .map(String::from)
        .collect();
    field("uris")
        .split_whitespace()
        .filter_map(usable_uri)
        .map(|uri| AptEntry {
            uri,
            suites: suites.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_format_with_options_and_comments() {
        let entries = parse_one_line(
            "# deb http://old/debian sid main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://a/debian-security bookworm-security main\n\
             deb-src http://b/debian/ bookworm main # trailing\n\
             deb cdrom:[x]/ bookworm main\n",
        );
        assert_eq!(
            entries,
            vec![
                AptEntry {
                    uri: "http://a/debian-security".into(),
                    suites: vec!["bookworm-security".into()]
                },
                AptEntry {
                    uri: "http://b/debian".into(),
                    suites: vec!["bookworm".into()]
                },
            ]
        );
    }

    #[test]
    fn deb822_format_with_disabled_stanza_and_continuations() {
        let entries = parse_deb822(
            "Types: deb\n# comment\nURIs: http://x/debian\nSuites: bookworm\nEnabled: no\n\n\
             Types: deb deb-src\nURIs: http://y/debian\n  http://z/debian\nSuites: bookworm bookworm-updates\n",
        );
        let uris: Vec<&str> = entries.iter().map(|e| e.uri.as_str()).collect();
        assert_eq!(uris, ["http://y/debian", "http://z/debian"]);
        assert_eq!(entries[0].suites, ["bookworm", "bookworm-updates"]);
    }
}
