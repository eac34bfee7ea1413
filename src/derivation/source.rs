//! `source`: a fixed-output download, identified by its declared hash alone.

use std::path::Path;

use super::*;
use crate::fetch::unpack::{copy_file, unpack_archive};
use crate::fetch::{SourceSpec as Request, SourceUrl};
use crate::hash::SourceHash;
use crate::recipe::Source;

#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Tried in order, after the mirrors; where the bytes come from is not part
    /// of the identity.
    pub urls: Vec<SourceUrl>,
    pub hash: SourceHash,
    pub unpack: bool,
}

impl SourceSpec {
    /// Unpacks the fetched `file` into `dir` (top directory stripped), or copies
    /// it there under its URL's file name when it is not an archive.
    pub fn place(&self, name: &NodeName, file: &Path, dir: &Path) -> Result<(), UnpackError> {
        let epoch = SOURCE_DATE_EPOCH as u64;
        if self.unpack {
            return unpack_archive(file, dir, epoch);
        }
        let file_name = self
            .urls
            .iter()
            .find_map(SourceUrl::file_name)
            .unwrap_or(name.as_str());
        copy_file(file, dir, file_name, epoch).map(|_| ())
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
        Ok(SourceSpec {
            urls,
            hash: cx
                .select(&body.hashes, "hash", "\"sha256:HEX\"")?
                .value
                .clone(),
            unpack: body.unpack,
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
        };
        Ok(Produced::File(cx.fetcher.fetch(&request)?))
    }
}
