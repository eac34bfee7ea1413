//! `source`: a fixed-output download, identified by its declared hash alone.

use std::path::Path;

use super::*;
use crate::fetch::unpack::{copy_file, unpack_archive, UnpackLimits};
use crate::fetch::{hash_file, SourceSpec as Request, SourceUrl, DEFAULT_DOWNLOAD_LIMIT};
use crate::hash::SourceHash;
use crate::recipe::Source;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SourceSpec {
    /// Tried in order, after the mirrors; where the bytes come from is not part
    /// of the identity.
    pub urls: Vec<SourceUrl>,
    pub hash: SourceHash,
    pub unpack: bool,
    pub size: Option<u64>,
    pub download_limit: u64,
    pub unpack_limits: UnpackLimits,
    /// What the SBOM says of it; neither is part of its identity.
    pub version: Option<String>,
    pub license: Option<String>,
}

impl SourceSpec {
    /// Unpacks the fetched `file` into `dir` (top directory stripped), or copies
    /// it there under its URL's file name when it is not an archive. The file is
    /// hashed again first: a store's copy that no longer has its hash is removed,
    /// so the next run fetches it anew, and never reaches a step.
    pub fn place(&self, name: &NodeName, file: &Path, dir: &Path) -> Result<(), StepError> {
        let actual = hash_file(file, self.hash.algo)
            .map_err(|e| StepError::io(format!("cannot read {}", file.display()), e))?;
        if actual != self.hash {
            let _ = std::fs::remove_file(file);
            return Err(StepError::Corrupt {
                what: format!("source {name} in the store ({})", file.display()),
                expected: self.hash.to_string(),
                actual: actual.to_string(),
            });
        }
        let epoch = SOURCE_DATE_EPOCH as u64;
        if self.unpack {
            return Ok(unpack_archive(file, dir, epoch, &self.unpack_limits)?);
        }
        let file_name = self
            .urls
            .iter()
            .find_map(SourceUrl::file_name)
            .unwrap_or(name.as_str());
        copy_file(file, dir, file_name, epoch)?;
        Ok(())
    }
}

impl Derivation for SourceSpec {
    type Body = Source;
    const KIND: Kind = Kind::Source;
    const IDENTITY: Identity = Identity::Declared;

    fn references(_: &Source) -> Vec<Ref<'_>> {
        Vec::new()
    }

    fn axes<'a>(body: &'a Source, uses: &mut AxisUses<'a>) {
        body.urls.iter().for_each(|u| uses.template(u));
        body.version.iter().for_each(|v| uses.template(v));
        body.hashes.iter().for_each(|h| uses.conditions(h));
    }

    fn expand(body: &Source, cx: &mut Expand<'_>) -> Result<Self, RecipeError> {
        let urls = body
            .urls
            .iter()
            .map(|t| {
                cx.render(t).parse::<SourceUrl>().map_err(|e| {
                    RecipeError::at(t.loc, e.to_string(), "cannot fetch from this")
                        .help("use http://, https://, file:///ABSOLUTE/PATH or debian:pool/...")
                })
            })
            .collect::<Result<_, _>>()?;
        let defaults = UnpackLimits::default();
        Ok(SourceSpec {
            urls,
            hash: cx
                .select(&body.hashes, "hash", "\"sha256:HEX\"")?
                .value
                .clone(),
            unpack: body.unpack,
            size: body.size,
            download_limit: body.limits.download.unwrap_or(DEFAULT_DOWNLOAD_LIMIT),
            unpack_limits: UnpackLimits {
                bytes: body.limits.unpacked.unwrap_or(defaults.bytes),
                ratio: body.limits.ratio.unwrap_or(defaults.ratio),
            },
            version: body.version.as_ref().map(|v| cx.render(v)),
            license: body.license.as_ref().map(|l| l.value.clone()),
        })
    }

    fn describe(&self, _: &NodeName, d: &mut Description) {
        d.text("hash", &self.hash.to_string())
            .flag("unpack", self.unpack);
    }

    fn shown(&self) -> Option<String> {
        Some(self.hash.to_string())
    }

    fn lookup(&self, cx: &Lookup<'_>) -> Result<Realised, Reason> {
        let path = cx
            .store
            .sources()
            .get(&self.hash)
            .ok_or(Reason::NotFetched)?;
        Ok(Realised {
            key: cx.key,
            path: Some(path),
            output: None,
            built: false,
        })
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        let request = Request {
            name: cx.name.to_string(),
            urls: self.urls.clone(),
            hash: self.hash.clone(),
            size: self.size,
            max_size: self.download_limit,
        };
        Ok(Produced::File(cx.fetcher.fetch(&request)?))
    }
}
