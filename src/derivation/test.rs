//! `test`: a step that passes or fails, over builds, images and sources. It is
//! declared and run as a build is; a pass is cached by its build key like any
//! output, so an unchanged image is not tested again. A failure is not kept.

use super::*;
use crate::recipe::Build;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TestSpec {
    pub step: BuildSpec,
}

impl Derivation for TestSpec {
    type Body = Build;
    const KIND: Kind = Kind::Test;
    const IDENTITY: Identity = Identity::Output;

    fn references(body: &Build) -> Vec<Ref<'_>> {
        BuildSpec::step_references(
            body,
            &[Kind::Build, Kind::Sysext, Kind::Release, Kind::Source],
        )
    }

    fn axes<'a>(body: &'a Build, uses: &mut AxisUses<'a>) {
        BuildSpec::step_axes(body, uses)
    }

    fn expand(body: &Build, cx: &mut Expand<'_>) -> Result<Self, RecipeError> {
        Ok(TestSpec {
            step: BuildSpec::expand_step(body, cx)?,
        })
    }

    fn privileged(&self) -> bool {
        self.step.privileged()
    }

    fn describe(&self, _: &NodeName, d: &mut Description) {
        self.step.describe_step(d)
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        self.step.run(cx)
    }
}
