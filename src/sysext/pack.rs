//! Packing an image tree into a byte-reproducible file system image.

use std::path::Path;
use std::process::Command;

use super::SysextError;
use crate::recipe::ImageFormat;

/// Packs `tree` into `image`. squashfs: `mksquashfs -all-root -noappend
/// -no-xattrs` with SOURCE_DATE_EPOCH; erofs: `mkfs.erofs --all-root -T EPOCH`
/// with a fixed UUID. Both give the same bytes for the same tree and epoch.
pub fn pack(tree: &Path, image: &Path, format: ImageFormat, epoch: i64) -> Result<(), SysextError> {
    let (program, package) = match format {
        ImageFormat::Squashfs => ("mksquashfs", "squashfs-tools"),
        ImageFormat::Erofs => ("mkfs.erofs", "erofs-utils"),
        ImageFormat::Ddi => {
            return Err(SysextError::Tool(
                "a DDI is a disk image, not a file system: make it with make_ddi".into(),
            ))
        }
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
                .arg("--quiet")
                .arg(image)
                .arg(tree)
                .env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
    }
    let out = cmd.output().map_err(|e| {
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
    Ok(())
}
