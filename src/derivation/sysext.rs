//! `sysext`: a systemd-sysext image of build outputs and repository files.

use super::*;
use crate::hash::Digest;
use crate::recipe::Sysext;
use crate::recipe::ImageFormat;
use crate::sysext::{make_image, Metadata, ARCHITECTURES, DDI_ARCHITECTURES};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SysextSpec {
    pub meta: Metadata,
    /// Directories of the repository copied into the image tree.
    pub files: Vec<PathBuf>,
    pub files_digest: Digest,
}

impl Derivation for SysextSpec {
    type Body = Sysext;
    const KIND: Kind = Kind::Sysext;
    const IDENTITY: Identity = Identity::Output;

    fn references(body: &Sysext) -> Vec<Ref<'_>> {
        body.inputs
            .iter()
            .map(|i| Ref {
                to: i,
                role: Role::Input,
                kinds: &[Kind::Build],
            })
            .collect()
    }

    fn axes<'a>(body: &'a Sysext, uses: &mut AxisUses<'a>) {
        uses.template(&body.version);
        uses.template(&body.arch);
    }

    fn expand(body: &Sysext, cx: &mut Expand<'_>) -> Result<Self, RecipeError> {
        cx.inside_repository(&body.files)?;
        let print = cx.fingerprint(&body.files)?;
        let files = cx.local_paths(&body.files);
        if let Some(missing) = print.missing.first() {
            let mut err =
                RecipeError::new(format!("sysext files `{}` not found", missing.display()));
            if let Some((f, _)) = body.files.iter().zip(&files).find(|(_, p)| *p == missing) {
                err = err.label(f.loc, "no such file or directory");
            }
            return Err(err.help("`files` paths are relative to the recipe's directory"));
        }
        let arch = cx.render(&body.arch);
        if arch != "_any" && !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(RecipeError::at(
                body.arch.loc,
                format!("`{arch}` is not a systemd architecture name"),
                "unknown architecture",
            )
            .help("use systemd's names: x86-64, arm64, riscv64, ppc64-le, s390x, ... or _any"));
        }
        if body.format == ImageFormat::Ddi && !DDI_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(RecipeError::at(
                body.arch.loc,
                format!("format \"ddi\" has no partition types for `{arch}`"),
                "no DDI partition types",
            )
            .help(format!(
                "a DDI's root partition is typed by architecture: use one of {}",
                DDI_ARCHITECTURES.join(", ")
            )));
        }
        Ok(SysextSpec {
            meta: Metadata {
                version: cx.render(&body.version),
                arch,
                os: body.os.value.clone(),
                sysext_level: body.sysext_level.as_ref().map(|l| l.value.clone()),
                reload_manager: body.reload_manager,
                format: body.format,
            },
            files,
            files_digest: print.digest,
        })
    }

    fn describe(&self, name: &NodeName, d: &mut Description) {
        let m = &self.meta;
        // The image's file name and extension-release file carry the node's name.
        d.text("name", name.as_str())
            .digest("files", self.files_digest)
            .text("version", &m.version)
            .text("arch", &m.arch)
            .text("os", &m.os)
            .optional("sysext-level", m.sysext_level.as_deref())
            .flag("reload-manager", m.reload_manager)
            .text("format", m.format.name())
            // The output holds the image's file list too (for its SBOM).
            .flag("files-list", true);
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        let sources: Vec<PathBuf> = cx
            .inputs(Role::Input)
            .filter_map(|i| i.realised.path.clone())
            .chain(self.files.iter().cloned())
            .collect();
        make_image(
            cx.name.as_str(),
            &self.meta,
            &sources,
            cx.work()?,
            &cx.out()?,
            SOURCE_DATE_EPOCH,
            cx.variation(),
        )?;
        Ok(Produced::Tree)
    }
}
