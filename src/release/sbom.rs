//! The SBOM of an image: an SPDX 2.3 JSON document with the image, its files,
//! and every source, toolchain and build of its closure, with the
//! relationships between them, all from the [`Bill`].

use serde_json::{json, Value};
use sha1::Digest as _;

use super::bill::{Bill, ComponentKind, UseKind};
use crate::hash::hex;
use crate::hash::HashAlgo;

const NOASSERTION: &str = "NOASSERTION";

/// `SPDXRef-` ids allow letters, digits, `.` and `-`; the index keeps two
/// instance ids that differ only in other characters apart.
fn spdx_id(kind: &str, n: usize, id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{n}-{clean}")
}

fn spdx_algorithm(algo: HashAlgo) -> &'static str {
    match algo {
        HashAlgo::Sha256 => "SHA256",
        HashAlgo::Sha512 => "SHA512",
        HashAlgo::Blake3 => "BLAKE3",
    }
}

/// `url` when it has the form SPDX requires of a download location: an http(s) or
/// ftp URL naming a host by its DNS name (SPDX's validator wants a name ending in
/// an alphabetic top-level label). An address (`http://127.0.0.1:8000/`), a
/// single-label host or a `file://` path is not one; the caller then writes
/// NOASSERTION and names the URL in a comment.
fn download_location(url: &str) -> Option<&str> {
    let rest = ["https://", "http://", "ftp://"]
        .iter()
        .find_map(|s| url.strip_prefix(s))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    let labels: Vec<&str> = host.split('.').collect();
    let named = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
    named.then_some(url)
}

/// The package verification code (SPDX 2.3, 7.9): SHA-1 over the sorted SHA-1s
/// of the package's files.
fn verification_code(bill: &Bill) -> String {
    let mut sums: Vec<&str> = bill.files.iter().map(|f| f.sha1.as_str()).collect();
    sums.sort_unstable();
    hex(&sha1::Sha1::digest(sums.concat().as_bytes()))
}

/// The SPDX document for the image `bill` describes, published as `url` with
/// `sha256`; `created` is an RFC 3339 UTC time (`2024-01-01T00:00:00Z`).
pub fn spdx(bill: &Bill, sha256: &str, url: &str, created: &str) -> Value {
    let image_id = "SPDXRef-Image";
    let ids: Vec<String> = bill
        .components
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let kind = match c.kind {
                ComponentKind::Source => "Source",
                ComponentKind::Toolchain => "Toolchain",
                ComponentKind::Build => "Build",
            };
            spdx_id(kind, n, &c.id)
        })
        .collect();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": bill.name,
        "versionInfo": bill.version,
        "packageFileName": bill.image,
        "downloadLocation": download_location(url).unwrap_or(NOASSERTION),
        "primaryPackagePurpose": "INSTALL",
        "filesAnalyzed": true,
        "packageVerificationCode": { "packageVerificationCodeValue": verification_code(bill) },
        "checksums": [ { "algorithm": "SHA256", "checksumValue": sha256 } ],
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "comment": format!(
            "systemd-sysext image {} for {}, built by bake as {} (build key {}), published at {url}",
            bill.image, bill.arch, bill.instance, bill.build_key
        ),
    })];
    for (c, id) in bill.components.iter().zip(&ids) {
        // A URL SPDX does not take as a download location is named in the comment.
        let mut p = json!({
            "SPDXID": id,
            "name": c.name,
            "downloadLocation": c.url.as_deref().and_then(download_location).unwrap_or(NOASSERTION),
            "filesAnalyzed": false,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": c.license.as_deref().unwrap_or(NOASSERTION),
            "copyrightText": NOASSERTION,
        });
        if let Some(v) = &c.version {
            p["versionInfo"] = json!(v);
        }
        match c.kind {
            ComponentKind::Source => {
                p["primaryPackagePurpose"] = json!("SOURCE");
                if let Some(f) = &c.file_name {
                    p["packageFileName"] = json!(f);
                }
                if let Some(h) = &c.hash {
                    p["checksums"] = json!([{
                        "algorithm": spdx_algorithm(h.algo),
                        "checksumValue": h.hex,
                    }]);
                }
                p["comment"] = json!(match &c.url {
                    Some(u) => format!("bake source {}, fetched from {u}", c.id),
                    None => format!("bake source {}", c.id),
                });
            }
            ComponentKind::Toolchain => {
                p["primaryPackagePurpose"] = json!("APPLICATION");
                p["comment"] = json!(format!(
                    "bake toolchain {} for {}; identity (blake3 over its identity files) {}",
                    c.id,
                    c.target.as_deref().unwrap_or("?"),
                    c.digest.map(|d| d.to_hex()).unwrap_or_default()
                ));
            }
            ComponentKind::Build => {
                p["comment"] = json!(format!(
                    "bake build {}; output tree blake3:{}",
                    c.id,
                    c.digest.map(|d| d.to_hex()).unwrap_or_default()
                ));
            }
        }
        packages.push(p);
    }
    let files: Vec<Value> = bill
        .files
        .iter()
        .enumerate()
        .map(|(n, f)| {
            json!({
                "SPDXID": spdx_id("File", n, &f.path),
                "fileName": format!("./{}", f.path),
                "checksums": [
                    { "algorithm": "SHA1", "checksumValue": f.sha1 },
                    { "algorithm": "SHA256", "checksumValue": f.sha256 },
                ],
                "licenseConcluded": NOASSERTION,
                "copyrightText": NOASSERTION,
            })
        })
        .collect();
    let relation = |a: &str, kind: &str, b: &str| json!({ "spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b });
    let mut relationships = vec![relation("SPDXRef-DOCUMENT", "DESCRIBES", image_id)];
    for f in &files {
        relationships.push(relation(
            image_id,
            "CONTAINS",
            f["SPDXID"].as_str().unwrap_or(""),
        ));
    }
    for &i in &bill.inputs {
        relationships.push(relation(image_id, "GENERATED_FROM", &ids[i]));
    }
    for (c, id) in bill.components.iter().zip(&ids) {
        for u in &c.uses {
            let other = &ids[u.component];
            relationships.push(match u.how {
                UseKind::Source => relation(id, "GENERATED_FROM", other),
                UseKind::Toolchain => relation(other, "BUILD_TOOL_OF", id),
                UseKind::Input => relation(other, "BUILD_DEPENDENCY_OF", id),
            });
        }
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": bill.image,
        "documentNamespace": format!("{url}.spdx.json/{sha256}"),
        "creationInfo": {
            "created": created,
            "creators": [ format!("Tool: bake-{}", env!("CARGO_PKG_VERSION")) ],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::download_location;

    #[test]
    fn download_locations_are_urls_with_a_host_name() {
        for ok in [
            "https://updates.example.org/ext/app/app-v1-x86-64.raw",
            "http://user@mirror.example.com:8080/a.tar.gz",
            "ftp://ftp.gnu.org/gnu/hello.tar.gz",
        ] {
            assert_eq!(download_location(ok), Some(ok));
        }
        for no in [
            "http://127.0.0.1:8000/app.raw",
            "http://localhost/app.raw",
            "file:///srv/app.tar.gz",
            "https://a..b.org/",
            "https://example.o/",
            "debian:pool/main/k/keepalived.tar.gz",
        ] {
            assert_eq!(download_location(no), None, "{no}");
        }
    }
}
