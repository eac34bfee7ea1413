//! Toolchains as resolved on this machine: present or missing, and their version,
//! for `bake toolchain check`.

use std::process::Command;

use crate::eval::{Evaluation, Spec};
use crate::hash::Digest;

/// One toolchain instance, resolved.
pub struct Status {
    pub id: String,
    pub target: String,
    pub identity: Digest,
    /// Identity files not on this machine: the toolchain is not installed.
    pub missing: Vec<String>,
    /// What the toolchain's `version` command printed first, or why it failed.
    pub version: Option<Result<String, String>>,
    pub install: Option<String>,
}

impl Status {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && !matches!(self.version, Some(Err(_)))
    }
}

/// Every toolchain instance of `eval`, resolved and, when present, asked its version.
pub fn check(eval: &Evaluation) -> Vec<Status> {
    eval.instances
        .iter()
        .filter_map(|inst| {
            let Spec::Toolchain(t) = &inst.spec else {
                return None;
            };
            let missing: Vec<String> = t.missing.iter().map(|p| p.display().to_string()).collect();
            let version = t
                .version
                .as_ref()
                .filter(|_| missing.is_empty())
                .map(|cmd| {
                    let path: Vec<String> = t
                        .paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .chain(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from))
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
                });
            Some(Status {
                id: inst.id.0.clone(),
                target: t.target.clone(),
                identity: t.identity,
                missing,
                version,
                install: t.install.clone(),
            })
        })
        .collect()
}
