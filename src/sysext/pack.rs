//! Packing an image tree into a byte-reproducible file system image.

use std::path::Path;
use std::process::{Command, Stdio};

use super::SysextError;
use crate::recipe::ImageFormat;
use crate::variation::Variation;

/// Packs `tree` into `image`. squashfs: `mksquashfs -all-root -noappend
/// -no-xattrs` with SOURCE_DATE_EPOCH; erofs: `mkfs.erofs --all-root -T EPOCH`
/// with a fixed UUID; for a DDI, the file system of its root partition (erofs,
/// lz4hc). Each gives the same bytes for the same tree and epoch.
pub fn pack(
    tree: &Path,
    image: &Path,
    format: ImageFormat,
    epoch: i64,
    variation: Option<&Variation>,
) -> Result<(), SysextError> {
    let (program, package) = match format {
        ImageFormat::Squashfs => ("mksquashfs", "squashfs-tools"),
        ImageFormat::Erofs | ImageFormat::Ddi => ("mkfs.erofs", "erofs-utils"),
    };
    let mut cmd = Command::new(program);
    match format {
        ImageFormat::Squashfs => {
            cmd.arg(tree)
                .arg(image)
                .args([
                    "-all-root",
                    "-noappend",
                    "-no-xattrs",
                    "-no-progress",
                    "-quiet",
                ])
                .args(["-comp", "gzip", "-b", "131072"])
                .env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        ImageFormat::Erofs | ImageFormat::Ddi => {
            cmd.arg("--all-root")
                .arg(format!("-T{epoch}"))
                .arg("-U00000000-0000-0000-0000-000000000000")
                .arg("-x-1")
                .arg("--quiet");
            if format == ImageFormat::Ddi {
                // The DDI's root partition: compressed (lz4hc halves a tree of
                // text and binaries; the kernel's erofs reads it).
                cmd.arg("-zlz4hc");
            }
            cmd.arg(image)
                .arg(tree)
                .env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
    }
    if let Some(v) = variation {
        v.apply(&mut cmd);
    }
    run_tool(&mut cmd, program, package).map(drop)
}

/// Runs an image tool; its stdout, or an error that names a missing package.
pub(super) fn run_tool(
    cmd: &mut Command,
    program: &str,
    package: &str,
) -> Result<String, SysextError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SysextError::Tool(format!(
                "{program} is not installed: apt-get install {package} (./setup does)"
            ))
        } else {
            SysextError::Tool(format!("cannot run {program}: {e}"))
        }
    })?;
    if !out.status.success() {
        return Err(SysextError::Tool(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
