//! The publishable directory: images, SHA256SUMS, the systemd-sysupdate transfer
//! files, and per image a Butane snippet and the Ignition config it stands for,
//! plus an index. Every file is derived from the images present, so publishing a
//! new version into an existing directory keeps and lists the old ones.

mod ignition;
mod manifest;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fetch::hash_file;
use crate::hash::HashAlgo;
use crate::store::write_atomic;
use crate::sysext::ARCHITECTURES;

pub use ignition::{butane, ignition};
pub use manifest::{write as write_manifest, Built, ImageEntry, Manifest, MANIFEST};

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
pub fn transfer(name: &str, base_url: &str) -> String {
    format!(
        "[Transfer]\nVerify=false\n\n[Source]\nType=url-file\nPath={}/\nMatchPattern={name}-@v-%a.raw\n\n\
         [Target]\nInstancesMax=3\nType=regular-file\nPath=/opt/extensions/{name}\nCurrentSymlink=/etc/extensions/{name}.raw\n",
        base_url.trim_end_matches('/')
    )
}

/// `/etc/sysupdate.d/noop.conf`: keeps the stock systemd-sysupdate.service from
/// failing with "No transfer definitions found".
pub const NOOP: &str = "[Source]\nType=regular-file\nPath=/\nMatchPattern=invalid@v.raw\n\n[Target]\nType=regular-file\nPath=/\n";

/// Copies `images` (files, or directories holding `.raw` files) into `dir` and
/// writes every derived file for all of NAME's images now in `dir`.
pub fn write(name: &str, images: &[PathBuf], base_url: &str, dir: &Path) -> io::Result<Vec<Image>> {
    fs::create_dir_all(dir)?;
    for source in images {
        let files: Vec<PathBuf> = if source.is_dir() {
            fs::read_dir(source)?
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "raw"))
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
    let mut sums = String::new();
    for file in &names {
        if !file.ends_with(".raw") {
            continue;
        }
        let path = dir.join(file);
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
            });
        }
    }
    write_atomic(&dir.join("SHA256SUMS"), sums.as_bytes())?;
    let conf = transfer(name, base_url);
    write_atomic(&dir.join(format!("{name}.conf")), conf.as_bytes())?;
    write_atomic(&dir.join(format!("{name}.transfer")), conf.as_bytes())?;
    write_atomic(&dir.join("noop.conf"), NOOP.as_bytes())?;
    for image in &found {
        let url = join(base_url, &image.file);
        let bu = butane(name, &image.file, &url, &image.sha256, base_url);
        write_atomic(&dir.join(&image.butane), bu.as_bytes())?;
        let ign = ignition(name, &image.file, &url, &image.sha256, base_url);
        write_atomic(&dir.join(&image.ignition), format!("{ign:#}\n").as_bytes())?;
    }
    write_atomic(
        &dir.join("index.json"),
        index_json(name, base_url, &found).as_bytes(),
    )?;
    write_atomic(
        &dir.join("index.md"),
        index_md(name, base_url, &found).as_bytes(),
    )?;
    Ok(found)
}

fn index_json(name: &str, base_url: &str, images: &[Image]) -> String {
    let doc = serde_json::json!({
        "name": name,
        "base_url": base_url,
        "transfer": format!("{name}.conf"),
        "images": images,
    });
    format!("{doc:#}\n")
}

fn index_md(name: &str, base_url: &str, images: &[Image]) -> String {
    let mut s = format!(
        "# {name}\n\nsystemd-sysext images of {name}, published at {base_url}.\n\
         Install one with its Butane snippet (`.bu`) or Ignition config (`.ign`); \
         systemd-sysupdate keeps it current with `{name}.conf`.\n\n\
         | version | arch | image | sha256 | size | Butane | Ignition |\n|---|---|---|---|---|---|---|\n"
    );
    for i in images {
        let _ = writeln!(
            s,
            "| {} | {} | [{}]({}) | `{}` | {} | [{}]({}) | [{}]({}) |",
            i.version,
            i.arch,
            i.file,
            i.file,
            i.sha256,
            i.size,
            i.butane,
            i.butane,
            i.ignition,
            i.ignition
        );
    }
    s
}
