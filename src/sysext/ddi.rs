//! Discoverable Disk Images for system extensions, as systemd's DDI
//! specification lays them out: a GPT disk with the file system in a root
//! partition for the image's architecture, its dm-verity hash tree in the
//! matching root-verity partition, and, once signed, a root-verity-sig partition
//! holding the root hash and a PKCS#7 signature of it.
//!
//! systemd-repart 252 (Debian 12) cannot make verity partitions (`Verity=` came
//! in 253, `--make-ddi` in 255), so the pieces are made with `mkfs.erofs` (lz4hc),
//! `veritysetup format` and `sfdisk`. Every id is derived from the contents (the
//! partition UUIDs from the root hash, as the specification says, the salt from
//! the file system's sha256), so the same tree gives the same bytes.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use sha2::Digest as _;

use super::pack::run_tool;
use super::SysextError;
use crate::hash::{hex, uuid, uuid_v4};
use crate::variation::Variation;

const SECTOR: u64 = 512;
/// Partitions start on MiB boundaries, as sfdisk and systemd-repart align them.
const ALIGN: u64 = 1 << 20;

/// The GPT partition types of the DPS for one architecture: root, root-verity,
/// root-verity-sig (from `systemd-id128 show`).
fn partition_types(arch: &str) -> Option<[&'static str; 3]> {
    Some(match arch {
        "x86-64" => [
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
            "41092b05-9fc8-4523-994f-2def0408b176",
        ],
        "x86" => [
            "44479540-f297-41b2-9af7-d131d5f0458a",
            "d13c5d3b-b5d1-422a-b29f-9454fdc89d76",
            "5996fc05-109c-48de-808b-23fa0830b676",
        ],
        "arm64" => [
            "b921b045-1df0-41c3-af44-4c6f280d3fae",
            "df3300ce-d69f-4c92-978c-9bfb0f38d820",
            "6db69de6-29f4-4758-a7a5-962190f00ce3",
        ],
        "arm" => [
            "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
            "7386cdf2-203c-47a9-a498-f2ecce45a2d6",
            "42b0455f-eb11-491d-98d3-56145ba9d037",
        ],
        "riscv64" => [
            "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
            "b6ed5582-440b-4209-b8da-5ff7c419ea3d",
            "efe0f087-ea8d-4469-821a-4c2a96a8386a",
        ],
        "ppc64-le" => [
            "c31c45e6-3f39-412e-80fb-4809c4980599",
            "906bd944-4589-4aae-a4e4-dd983917446a",
            "d4a236e7-e873-4c07-bf1d-bf6cf7f1c3c6",
        ],
        "s390x" => [
            "5eead9a9-fe09-4a1e-a1d7-520d00531306",
            "b325bfbe-c7be-4ab8-8357-139e652d2f6b",
            "c80187a5-73a3-491a-901a-017c3fa953e9",
        ],
        "loongarch64" => [
            "77055800-792c-4f94-b39a-98c91b762bb6",
            "f3393b22-e9af-4613-a948-9d3bfbd0c535",
            "5afb67eb-ecc8-4f85-ae8e-ac1e7c50e7d0",
        ],
        _ => return None,
    })
}

/// The architectures `format "ddi"` has partition types for.
pub const DDI_ARCHITECTURES: &[&str] = &[
    "x86-64",
    "x86",
    "arm64",
    "arm",
    "riscv64",
    "ppc64-le",
    "s390x",
    "loongarch64",
];

/// The name of the root hash file beside an image (`NAME-vV-A.roothash`).
pub fn roothash_name(image: &str) -> String {
    format!("{}.roothash", image.trim_end_matches(".raw"))
}

/// A UUID derived from `what` and `seed` (sha256, marked as version 4).
fn derived_uuid(what: &str, seed: &[u8]) -> String {
    let mut d = sha2::Sha256::new();
    d.update(what.as_bytes());
    d.update(seed);
    uuid_v4(&d.finalize())
}

/// One partition: its bytes come from `file`.
struct Part<'a> {
    type_uuid: &'a str,
    uuid: String,
    label: String,
    file: &'a Path,
    read_only: bool,
}

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Writes a GPT disk image holding `parts` in order, each at a MiB boundary.
fn assemble(parts: &[Part<'_>], disk_uuid: &str, image: &Path) -> Result<(), SysextError> {
    let mut script = format!("label: gpt\nlabel-id: {disk_uuid}\nunit: sectors\nfirst-lba: 2048\n");
    let mut offset = ALIGN;
    let mut placed = Vec::new();
    for p in parts {
        let size = fs::metadata(p.file)?.len().div_ceil(SECTOR) * SECTOR;
        let attrs = if p.read_only {
            ", attrs=\"GUID:60\""
        } else {
            ""
        };
        script.push_str(&format!(
            "start={}, size={}, type={}, uuid={}, name=\"{}\"{attrs}\n",
            offset / SECTOR,
            size / SECTOR,
            p.type_uuid,
            p.uuid,
            p.label
        ));
        placed.push((offset, p.file));
        offset = align(offset + size);
    }
    // Room for the backup GPT (33 sectors) after the last partition.
    let total = offset + ALIGN;
    let tmp = image.with_extension("raw.tmp");
    {
        let f = fs::File::create(&tmp)?;
        f.set_len(total)?;
    }
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .args([
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            "--wipe",
            "always",
        ])
        .arg(&tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = sfdisk.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SysextError::Tool(
                "sfdisk is not installed: apt-get install fdisk (./setup does)".into(),
            )
        } else {
            SysextError::Tool(format!("cannot run sfdisk: {e}"))
        }
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(SysextError::Tool(format!(
            "sfdisk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut disk = fs::OpenOptions::new().write(true).open(&tmp)?;
    for (offset, file) in placed {
        disk.seek(SeekFrom::Start(offset))?;
        std::io::copy(&mut fs::File::open(file)?, &mut disk)?;
    }
    disk.sync_all()?;
    fs::rename(&tmp, image)?;
    Ok(())
}

/// Makes the DDI `image` of `tree` for `arch` (an erofs root partition and its
/// dm-verity hash tree) in `work`, and writes the root hash beside it.
pub fn make_ddi(
    tree: &Path,
    image: &Path,
    arch: &str,
    work: &Path,
    epoch: i64,
    variation: Option<&Variation>,
) -> Result<String, SysextError> {
    let types = partition_types(arch).ok_or_else(|| {
        SysextError::Tool(format!(
            "format \"ddi\" needs an architecture with DPS partition types ({}), not `{arch}`",
            DDI_ARCHITECTURES.join(", ")
        ))
    })?;
    let data = work.join("root.erofs");
    let hash = work.join("root.verity");
    super::pack(
        tree,
        &data,
        crate::recipe::ImageFormat::Ddi,
        epoch,
        variation,
    )?;
    let digest = sha2::Sha256::digest(fs::read(&data)?);
    let out = run_tool(
        Command::new("veritysetup")
            .args(["format", "--data-block-size=4096", "--hash-block-size=4096"])
            .arg(format!("--salt={}", hex(&digest)))
            .arg(format!("--uuid={}", derived_uuid("verity", &digest)))
            .arg(&data)
            .arg(&hash),
        "veritysetup",
        "cryptsetup-bin",
    )?;
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| SysextError::Tool(format!("veritysetup printed no root hash: {out}")))?;
    let root = decode_hex(&root_hash);
    let parts = [
        Part {
            type_uuid: types[0],
            uuid: uuid(&root[..16]),
            label: format!("root-{arch}"),
            file: &data,
            read_only: true,
        },
        Part {
            type_uuid: types[1],
            uuid: uuid(&root[16..]),
            label: format!("root-{arch}-verity"),
            file: &hash,
            read_only: true,
        },
    ];
    assemble(&parts, &derived_uuid("disk", &root), image)?;
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::write(
        image.with_file_name(roothash_name(&name)),
        format!("{root_hash}\n"),
    )?;
    fs::remove_file(&data)?;
    fs::remove_file(&hash)?;
    Ok(root_hash)
}

fn decode_hex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// One partition of an existing image, as sfdisk lists it.
#[derive(serde::Deserialize)]
struct Listed {
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    type_uuid: String,
    uuid: String,
    name: Option<String>,
}

#[derive(serde::Deserialize)]
struct Table {
    partitiontable: TableBody,
}

#[derive(serde::Deserialize)]
struct TableBody {
    id: String,
    partitions: Vec<Listed>,
}

/// Adds the root-verity-sig partition to the DDI `image` for `arch`: the root
/// hash and a PKCS#7 signature of it (detached, DER, no signed attributes, so
/// the same key gives the same bytes) by `key` and `cert` (PEM), as JSON
/// padded with NULs to a multiple of 4096 bytes. An image already signed is
/// signed anew.
pub fn sign_ddi(
    image: &Path,
    arch: &str,
    root_hash: &str,
    key: &Path,
    cert: &Path,
    work: &Path,
) -> Result<(), SysextError> {
    let types = partition_types(arch)
        .ok_or_else(|| SysextError::Tool(format!("no DDI partition types for `{arch}`")))?;
    let listing = run_tool(
        Command::new("sfdisk").arg("--json").arg(image),
        "sfdisk",
        "fdisk",
    )?;
    let table: Table = serde_json::from_str(&listing).map_err(|e| {
        SysextError::Tool(format!(
            "cannot read the partition table of {}: {e}",
            image.display()
        ))
    })?;
    let kept: Vec<&Listed> = table
        .partitiontable
        .partitions
        .iter()
        .filter(|p| !p.type_uuid.eq_ignore_ascii_case(types[2]))
        .collect();
    if kept.len() != 2 {
        return Err(SysextError::Tool(format!(
            "{} is not a DDI of bake's (expected a root and a root-verity partition)",
            image.display()
        )));
    }
    let hash_file = work.join("roothash");
    fs::write(&hash_file, root_hash)?;
    let p7s = work.join("roothash.p7s");
    run_tool(
        Command::new("openssl")
            .args(["smime", "-sign", "-binary", "-noattr", "-outform", "DER"])
            .arg("-in")
            .arg(&hash_file)
            .arg("-inkey")
            .arg(key)
            .arg("-signer")
            .arg(cert)
            .arg("-out")
            .arg(&p7s),
        "openssl",
        "openssl",
    )?;
    let signature = base64::engine::general_purpose::STANDARD.encode(fs::read(&p7s)?);
    let mut json = serde_json::to_vec(&serde_json::json!({
        "rootHash": root_hash,
        "signature": signature,
    }))
    .map_err(|e| SysextError::Tool(e.to_string()))?;
    json.resize(json.len().div_ceil(4096) * 4096, 0);
    let sig_file = work.join("root.verity-sig");
    fs::write(&sig_file, &json)?;
    // The kept partitions' bytes, out of the image, to lay them out again.
    let mut files = Vec::new();
    let mut src = fs::File::open(image)?;
    for (n, p) in kept.iter().enumerate() {
        let f = work.join(format!("part{n}"));
        src.seek(SeekFrom::Start(p.start * SECTOR))?;
        let mut bytes = vec![0u8; (p.size * SECTOR) as usize];
        src.read_exact(&mut bytes)?;
        fs::write(&f, bytes)?;
        files.push(f);
    }
    let mut parts: Vec<Part<'_>> = kept
        .iter()
        .zip(&files)
        .map(|(p, f)| Part {
            type_uuid: if p.type_uuid.eq_ignore_ascii_case(types[0]) {
                types[0]
            } else {
                types[1]
            },
            uuid: p.uuid.to_lowercase(),
            label: p.name.clone().unwrap_or_default(),
            file: f,
            read_only: true,
        })
        .collect();
    parts.push(Part {
        type_uuid: types[2],
        uuid: derived_uuid("verity-sig", &json),
        label: format!("root-{arch}-verity-sig"),
        file: &sig_file,
        read_only: true,
    });
    assemble(&parts, &table.partitiontable.id.to_lowercase(), image)?;
    Ok(())
}
