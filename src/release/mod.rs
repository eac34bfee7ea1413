//! The publishable directory: images, SHA256SUMS, the systemd-sysupdate transfer
//! files, and per image a Butane snippet and the Ignition config it stands for,
//! its SBOM (SPDX) and provenance (in-toto, SLSA), plus an index. A signed
//! release adds `SHA256SUMS.gpg`, the public key and a signature per SBOM and
//! provenance. Every file is derived from the images present, so publishing a new
//! version into an existing directory keeps and lists the old ones.

mod bill;
mod ignition;
mod manifest;
mod provenance;
mod sbom;
mod sign;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fetch::hash_file;
use crate::hash::HashAlgo;
use crate::store::write_atomic;
use crate::sysext::{roothash_name, sign_ddi, ARCHITECTURES};

pub use bill::{Bill, Component, ComponentKind, Use, UseKind};
pub use ignition::{Snippet, PUBRING};
pub use manifest::{write as write_manifest, Built, ImageEntry, Manifest, MANIFEST};
pub use provenance::statement;
pub use sbom::spdx;
pub use sign::{verify, SignKey, Signer};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReleaseError {
    #[error("{0}")]
    #[diagnostic(code(bake::release::io))]
    Io(#[from] io::Error),
    #[error("{0}")]
    #[diagnostic(code(bake::release::sign))]
    Sign(String),
}

/// One published image, as found in the directory.
#[derive(Clone, Debug, Serialize)]
pub struct Image {
    pub file: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
    pub size: u64,
    pub butane: String,
    pub ignition: String,
    /// The SPDX document and the in-toto statement, where the directory has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// A DDI's dm-verity root hash (hex), also published as `NAME-vV-A.roothash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roothash: Option<String>,
}

/// How to write a release directory.
pub struct Publish<'a> {
    pub name: &'a str,
    pub base_url: &'a str,
    /// Signs SHA256SUMS, the SBOMs and the provenance; `None`: an unsigned
    /// release (`Verify=false`).
    pub signer: Option<&'a Signer>,
    /// Signs the dm-verity root hash of every DDI in the directory.
    pub verity: Option<&'a VerityKey>,
    /// What the images built in this run were made from, by image file name.
    pub bills: &'a [Bill],
}

/// The PEM key and X.509 certificate a DDI's root hash is signed with.
pub struct VerityKey {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// The base URL with exactly one `/` before file names.
fn join(base: &str, file: &str) -> String {
    format!("{}/{file}", base.trim_end_matches('/'))
}

/// `NAME-vVERSION-ARCH.raw` -> (VERSION, ARCH), for a known architecture.
pub fn parse_image_name(name: &str, file: &str) -> Option<(String, String)> {
    let rest = file
        .strip_prefix(&format!("{name}-v"))?
        .strip_suffix(".raw")?;
    ARCHITECTURES
        .iter()
        .filter_map(|arch| {
            let version = rest.strip_suffix(&format!("-{arch}"))?;
            (!version.is_empty()).then(|| (version.to_string(), arch.to_string()))
        })
        .max_by_key(|(_, arch)| arch.len())
}

/// `[Transfer]`/`[Source]`/`[Target]` for `/etc/sysupdate.NAME.d/NAME.conf`.
/// `verify`: systemd-sysupdate checks SHA256SUMS.gpg against the host's
/// `/etc/systemd/import-pubring.gpg` before it trusts SHA256SUMS.
pub fn transfer(name: &str, base_url: &str, verify: bool) -> String {
    format!(
        "[Transfer]\nVerify={verify}\n\n[Source]\nType=url-file\nPath={}/\nMatchPattern={name}-@v-%a.raw\n\n\
         [Target]\nInstancesMax=3\nType=regular-file\nPath=/opt/extensions/{name}\nMatchPattern={name}-@v-%a.raw\n\
         CurrentSymlink=/etc/extensions/{name}.raw\n",
        base_url.trim_end_matches('/')
    )
}

/// `/etc/sysupdate.d/noop.conf`: keeps the stock systemd-sysupdate.service from
/// failing with "No transfer definitions found".
pub const NOOP: &str = "[Source]\nType=regular-file\nPath=/\nMatchPattern=invalid@v.raw\n\n\
                        [Target]\nType=regular-file\nPath=/\nMatchPattern=invalid@v.raw\n";

/// The names of an image's documents and their signatures.
fn sbom_name(image: &str) -> String {
    format!("{}.spdx.json", image.trim_end_matches(".raw"))
}

fn provenance_name(image: &str) -> String {
    format!("{}.intoto.json", image.trim_end_matches(".raw"))
}

fn signature_name(file: &str) -> String {
    format!("{file}.sig")
}

/// Copies `images` (files, or directories holding `.raw` files) into `dir` and
/// writes every derived file for all of the release's images now in `dir`.
pub fn write(
    publish: &Publish<'_>,
    images: &[PathBuf],
    dir: &Path,
) -> Result<Vec<Image>, ReleaseError> {
    let Publish {
        name,
        base_url,
        signer,
        ..
    } = *publish;
    fs::create_dir_all(dir)?;
    for source in images {
        let files: Vec<PathBuf> = if source.is_dir() {
            fs::read_dir(source)?
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "raw" || x == "roothash"))
                .collect()
        } else {
            vec![source.clone()]
        };
        for f in files {
            let Some(file_name) = f.file_name() else {
                continue;
            };
            let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
            fs::copy(&f, &tmp)?;
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            fs::rename(&tmp, dir.join(file_name))?;
        }
    }
    let mut found: Vec<Image> = Vec::new();
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    if let Some(v) = publish.verity {
        let work = tempfile::tempdir()?;
        for file in names.iter().filter(|f| f.ends_with(".raw")) {
            let Some(root_hash) = read_roothash(&dir.join(roothash_name(file)))? else {
                continue;
            };
            let (_, arch) = parse_image_name(name, file).unwrap_or_default();
            sign_ddi(
                &dir.join(file),
                &arch,
                &root_hash,
                &v.key,
                &v.cert,
                work.path(),
            )
            .map_err(|e| {
                ReleaseError::Sign(format!("cannot sign the verity root hash of {file}: {e}"))
            })?;
        }
    }
    let mut sums = String::new();
    for file in &names {
        if !file.ends_with(".raw") {
            continue;
        }
        let path = dir.join(file);
        let roothash = read_roothash(&dir.join(roothash_name(file)))?;
        let sha256 = hash_file(&path, HashAlgo::Sha256)?.hex;
        let _ = writeln!(sums, "{sha256}  {file}");
        if let Some((version, arch)) = parse_image_name(name, file) {
            let stem = file.trim_end_matches(".raw");
            found.push(Image {
                file: file.clone(),
                version,
                arch,
                sha256,
                size: fs::metadata(&path)?.len(),
                butane: format!("{stem}.bu"),
                ignition: format!("{stem}.ign"),
                sbom: None,
                provenance: None,
                roothash,
            });
        }
    }
    write_atomic(&dir.join("SHA256SUMS"), sums.as_bytes())?;
    let conf = transfer(name, base_url, signer.is_some());
    write_atomic(&dir.join(format!("{name}.conf")), conf.as_bytes())?;
    write_atomic(&dir.join(format!("{name}.transfer")), conf.as_bytes())?;
    write_atomic(&dir.join("noop.conf"), NOOP.as_bytes())?;
    let keyring = dir.join(format!("{name}.gpg"));
    let pubkey = match signer {
        Some(s) => {
            let binary = s.export(false)?;
            write_atomic(&keyring, &binary)?;
            write_atomic(&dir.join(format!("{name}.asc")), &s.export(true)?)?;
            Some(binary)
        }
        None => {
            // An unsigned release leaves nothing that claims otherwise.
            for stale in [
                "SHA256SUMS.gpg".to_string(),
                format!("{name}.gpg"),
                format!("{name}.asc"),
            ] {
                remove_if_present(&dir.join(stale))?;
            }
            None
        }
    };
    let created = rfc3339_now();
    let bills: BTreeMap<&str, &Bill> = publish
        .bills
        .iter()
        .map(|b| (b.image.as_str(), b))
        .collect();
    for image in &mut found {
        let snippet = Snippet {
            name,
            file: &image.file,
            sha256: &image.sha256,
            base_url,
            pubkey: pubkey.as_deref(),
        };
        write_atomic(&dir.join(&image.butane), snippet.butane().as_bytes())?;
        write_atomic(
            &dir.join(&image.ignition),
            format!("{:#}\n", snippet.ignition()).as_bytes(),
        )?;
        let (sbom, prov) = (sbom_name(&image.file), provenance_name(&image.file));
        if let Some(bill) = bills.get(image.file.as_str()) {
            let url = join(base_url, &image.file);
            let doc = spdx(bill, &image.sha256, &url, &created);
            write_atomic(&dir.join(&sbom), format!("{doc:#}\n").as_bytes())?;
            let st = statement(bill, &image.sha256);
            write_atomic(&dir.join(&prov), format!("{st:#}\n").as_bytes())?;
            for doc in [&sbom, &prov] {
                remove_if_present(&dir.join(signature_name(doc)))?;
            }
        }
        image.sbom = dir.join(&sbom).exists().then_some(sbom);
        image.provenance = dir.join(&prov).exists().then_some(prov);
    }
    if let Some(s) = signer {
        let sign = |file: &str, signature: &str| -> Result<(), ReleaseError> {
            s.sign(&dir.join(file), &dir.join(signature))?;
            verify(&keyring, &dir.join(signature), &dir.join(file))
        };
        sign("SHA256SUMS", "SHA256SUMS.gpg")?;
        for image in &found {
            for doc in image.sbom.iter().chain(&image.provenance) {
                sign(doc, &signature_name(doc))?;
            }
        }
    }
    write_atomic(
        &dir.join("index.json"),
        index_json(publish, &found).as_bytes(),
    )?;
    write_atomic(&dir.join("index.md"), index_md(publish, &found).as_bytes())?;
    Ok(found)
}

/// The root hash a DDI's `.roothash` file holds, if it has one.
fn read_roothash(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Now, or SOURCE_DATE_EPOCH where the environment sets it (reproducible
/// documents), as `YYYY-MM-DDThh:mm:ssZ`.
fn rfc3339_now() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    rfc3339(secs)
}

/// Seconds since 1970 as an RFC 3339 UTC time (days to civil dates as in
/// Howard Hinnant's `civil_from_days`).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn index_json(publish: &Publish<'_>, images: &[Image]) -> String {
    let name = publish.name;
    let signing = publish.signer.map(|s| {
        serde_json::json!({
            "fingerprint": s.fingerprint(),
            "keyring": format!("{name}.gpg"),
            "armored": format!("{name}.asc"),
            "sha256sums_signature": "SHA256SUMS.gpg",
            "installed_as": PUBRING,
        })
    });
    let doc = serde_json::json!({
        "name": name,
        "base_url": publish.base_url,
        "transfer": format!("{name}.conf"),
        "verify": publish.signer.is_some(),
        "signing": signing,
        "images": images,
    });
    format!("{doc:#}\n")
}

fn index_md(publish: &Publish<'_>, images: &[Image]) -> String {
    let (name, base_url) = (publish.name, publish.base_url);
    let trust = match publish.signer {
        Some(s) => format!(
            "**Signed.** `SHA256SUMS.gpg` is a detached signature of `SHA256SUMS` by the key \
             `{fp}`, published here as `{name}.gpg` (binary, what hosts install as `{PUBRING}`) \
             and `{name}.asc` (armored). The transfer files set `Verify=true`: systemd-sysupdate \
             installs nothing whose SHA256SUMS that key did not sign. Every SBOM (`.spdx.json`) \
             and provenance statement (`.intoto.json`) has its detached signature beside it \
             (`.sig`). Check one with `gpgv --keyring ./{name}.gpg SHA256SUMS.gpg SHA256SUMS`.\n",
            fp = s.fingerprint()
        ),
        None => "**Unsigned.** There is no `SHA256SUMS.gpg`, and the transfer files set \
                 `Verify=false`: a host trusts whoever can change this directory or the traffic \
                 to it. Publish with `bake release --sign-key KEY` to sign.\n"
            .to_string(),
    };
    let mut s = format!(
        "# {name}\n\nsystemd-sysext images of {name}, published at {base_url}.\n\
         Install one with its Butane snippet (`.bu`) or Ignition config (`.ign`); \
         systemd-sysupdate keeps it current with `{name}.conf`.\n\n{trust}\n\
         | version | arch | image | sha256 | size | Butane | Ignition | SBOM | provenance |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let link = |f: &Option<String>| {
        f.as_ref()
            .map_or_else(|| "-".to_string(), |f| format!("[{f}]({f})"))
    };
    for i in images {
        let _ = writeln!(
            s,
            "| {} | {} | [{}]({}) | `{}` | {} | [{}]({}) | [{}]({}) | {} | {} |",
            i.version,
            i.arch,
            i.file,
            i.file,
            i.sha256,
            i.size,
            i.butane,
            i.butane,
            i.ignition,
            i.ignition,
            link(&i.sbom),
            link(&i.provenance),
        );
    }
    s
}
