//! `toolchain`: a C compiler per target, identified by the bytes of its files.

use std::process::Command;

use super::*;
use crate::exec::SYSTEM_PATH;
use crate::hash::Digest;
use crate::recipe::{Selected, Toolchain};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ToolchainSpec {
    /// The GNU triple, exported as `HOST`.
    pub target: String,
    pub paths: Vec<PathBuf>,
    /// What steps see of it besides `paths`, read-only at the same places.
    pub mounts: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    /// The variable bake points at a persistent cache in the store.
    pub cache: Option<String>,
    /// Fingerprint of the identity files.
    pub identity: Digest,
    /// Identity files that do not exist: the toolchain is not installed.
    pub missing: Vec<PathBuf>,
    pub version: Option<String>,
    pub install: Option<String>,
}

impl Derivation for ToolchainSpec {
    type Body = Toolchain;
    const KIND: Kind = Kind::Toolchain;
    const IDENTITY: Identity = Identity::Declared;

    fn references(_: &Toolchain) -> Vec<Ref<'_>> {
        Vec::new()
    }

    fn axes<'a>(body: &'a Toolchain, uses: &mut AxisUses<'a>) {
        body.env.iter().for_each(|e| uses.template(&e.value));
        for s in body.targets.iter().chain(&body.cflags) {
            uses.conditions(s);
        }
    }

    fn expand(body: &Toolchain, cx: &mut Expand<'_>) -> Result<Self, RecipeError> {
        let print = cx.fingerprint(&body.identity)?;
        let mut env: Vec<(String, String)> = body
            .env
            .iter()
            .map(|v| (v.name.value.clone(), cx.render(&v.value)))
            .collect();
        let cflags: Vec<&Selected<String>> = body.cflags.iter().filter(|c| cx.applies(c)).collect();
        if let [extra, ..] = cflags[..] {
            match env.iter_mut().find(|(k, _)| k == "CFLAGS") {
                Some((_, v)) => *v = format!("{v} {}", extra.value.value),
                None => env.push(("CFLAGS".into(), extra.value.value.clone())),
            }
        }
        Ok(ToolchainSpec {
            target: cx
                .select(&body.targets, "target", "\"TRIPLE\"")?
                .value
                .clone(),
            paths: cx.local_paths(&body.paths),
            mounts: cx.local_paths(&body.mounts),
            env,
            cache: body.cache.as_ref().map(|c| c.value.clone()),
            identity: print.digest,
            missing: print.missing,
            version: body.version.clone(),
            install: body.install.clone(),
        })
    }

    fn describe(&self, _: &NodeName, d: &mut Description) {
        d.text("target", &self.target)
            .digest("identity", self.identity)
            .vars("env", &self.env)
            .optional("cache", self.cache.as_deref());
    }

    fn lookup(&self, cx: &Lookup<'_>) -> Result<Realised, Reason> {
        if let Some(missing) = self.missing.first() {
            return Err(Reason::NotInstalled {
                missing: missing.clone(),
            });
        }
        Ok(Realised {
            key: cx.key,
            path: None,
            output: None,
            built: false,
        })
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        if self.missing.is_empty() {
            return Ok(Produced::Present);
        }
        let missing: Vec<String> = self
            .missing
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Err(StepError::NotInstalled {
            id: cx.id.clone(),
            missing: missing.join(", "),
            install: self
                .install
                .clone()
                .unwrap_or_else(|| "see the toolchain's recipe".into()),
        })
    }
}

/// One toolchain instance as resolved on this machine, for `bake toolchain check`.
pub struct ToolchainStatus<'a> {
    pub id: &'a InstanceId,
    pub spec: &'a ToolchainSpec,
    /// What the toolchain's `version` command printed first, or why it failed.
    pub version: Option<Result<String, String>>,
}

impl ToolchainStatus<'_> {
    pub fn ok(&self) -> bool {
        self.spec.missing.is_empty() && !matches!(self.version, Some(Err(_)))
    }
}

/// Every toolchain instance among `instances`, asked its version where present.
pub fn check_toolchains<'a>(
    instances: impl Iterator<Item = (&'a InstanceId, &'a Spec)>,
) -> Vec<ToolchainStatus<'a>> {
    instances
        .filter_map(|(id, spec)| match spec {
            Spec::Toolchain(t) => Some(ToolchainStatus {
                id,
                spec: t,
                version: t
                    .version
                    .as_ref()
                    .filter(|_| t.missing.is_empty())
                    .map(|cmd| version(t, cmd)),
            }),
            _ => None,
        })
        .collect()
}

fn version(t: &ToolchainSpec, cmd: &str) -> Result<String, String> {
    let path: Vec<String> = t
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .chain(SYSTEM_PATH.iter().map(|p| p.to_string()))
        .collect();
    let out = Command::new("/bin/sh")
        .args(["-c", cmd])
        .env_clear()
        .env("PATH", path.join(":"))
        .env("HOST", &t.target)
        .env("HOME", std::env::temp_dir())
        .envs(t.env.iter().map(|(k, v)| (k, v)))
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
        Ok(o) => Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{cmd}`: {e}")),
    }
}
