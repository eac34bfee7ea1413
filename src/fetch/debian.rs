//! `debian:PATH` URLs: resolved against the Debian archive that this machine's apt
//! configuration names, so recipes carry no mirror host.

use std::fs;
use std::path::Path;

/// The first Debian archive URI in the apt sources under `apt_root` (normally
/// `/etc/apt`), one-line (`*.list`) and deb822 (`*.sources`) formats alike. The
/// security archive is skipped: it does not carry the pool's orig tarballs.
pub fn archive_uri(apt_root: &Path) -> Option<String> {
    let mut files = vec![apt_root.join("sources.list")];
    if let Ok(dir) = fs::read_dir(apt_root.join("sources.list.d")) {
        let mut more: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|f| {
        let text = fs::read_to_string(f).ok()?;
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822(&text),
            Some("list") => one_line(&text),
            _ if f.file_name().is_some_and(|n| n == "sources.list") => one_line(&text),
            _ => None,
        }
    })
}

fn is_security(uri: &str, suite: &str) -> bool {
    uri.contains("security") || suite.ends_with("-security") || suite.ends_with("/updates")
}

fn one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            // Options: `deb [arch=amd64 signed-by=...] URI suite ...`
            if !uri.ends_with(']') {
                words.find(|w| w.ends_with(']'))?;
            }
            uri = words.next()?;
        }
        let suite = words.next().unwrap_or("");
        (!is_security(uri, suite)).then(|| uri.trim_end_matches('/').to_string())
    })
}

fn deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let types = field("Types")?;
        if !types.split_whitespace().any(|t| t == "deb") {
            return None;
        }
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            return None;
        }
        let uri = field("URIs")?.split_whitespace().next()?.to_string();
        let suites = field("Suites").unwrap_or_default();
        let suite = suites.split_whitespace().next().unwrap_or("");
        (!is_security(&uri, suite)).then(|| uri.trim_end_matches('/').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_skips_security() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sources.list.d")).unwrap();
        fs::write(
            d.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n\
             Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            archive_uri(d.path()).as_deref(),
            Some("http://mirror.example/debian")
        );
        fs::write(
            d.path().join("sources.list"),
            "# comment\ndeb [arch=amd64] http://one.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            archive_uri(d.path()).as_deref(),
            Some("http://one.example/debian")
        );
        assert_eq!(archive_uri(&d.path().join("nothing")), None);
    }
}
