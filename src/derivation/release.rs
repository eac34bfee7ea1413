//! `release`: a publishable directory gathering every instance of its images.

use super::*;
use crate::recipe::Release;
use crate::release::ReleaseError;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReleaseSpec {
    pub base_url: Option<String>,
}

impl Derivation for ReleaseSpec {
    type Body = Release;
    const KIND: Kind = Kind::Release;
    const IDENTITY: Identity = Identity::Output;

    fn references(body: &Release) -> Vec<Ref<'_>> {
        body.sysexts
            .iter()
            .map(|s| Ref {
                to: s,
                role: Role::Gather,
                kinds: &[Kind::Sysext],
            })
            .collect()
    }

    fn axes<'a>(_: &'a Release, _: &mut AxisUses<'a>) {}

    fn expand(body: &Release, _: &mut Expand<'_>) -> Result<Self, RecipeError> {
        Ok(ReleaseSpec {
            base_url: body.base_url.as_ref().map(|u| u.value.clone()),
        })
    }

    fn describe(&self, name: &NodeName, d: &mut Description) {
        d.text("name", name.as_str())
            .optional("base-url", self.base_url.as_deref());
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        let base_url = self.base_url.as_deref().ok_or_else(|| StepError::Invalid {
            message: format!("{} has no base-url", cx.id),
            help: "add base-url \"https://...\" to the release, or use bake release --base-url"
                .into(),
        })?;
        let images: Vec<PathBuf> = cx
            .inputs(Role::Gather)
            .filter_map(|i| i.realised.path.clone())
            .collect();
        let publish = crate::release::Publish {
            name: cx.name.as_str(),
            base_url,
            signer: None,
            verity: None,
            bills: &[],
        };
        crate::release::write(&publish, &images, &cx.out()?).map_err(|e| match e {
            ReleaseError::Io(e) => StepError::io("cannot write the release", e),
            other => StepError::Invalid {
                message: format!("cannot write the release: {other}"),
                help: String::new(),
            },
        })?;
        Ok(Produced::Tree)
    }
}
