//! `build`: a script run in the sandbox on its source, with its toolchain and
//! inputs, writing `$out`.

use std::collections::BTreeMap;

use super::*;
use crate::exec::{input_var, Confinement, Limits, SANDBOX_VARS};
use crate::hash::Digest;
use crate::recipe::{Build, Spanned, StepLimits};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BuildSpec {
    pub script: String,
    pub env: Vec<(String, String)>,
    /// Patch files applied to the source before the script, in order.
    pub patches: Vec<PathBuf>,
    pub patches_digest: Option<Digest>,
    /// Repository files the script uses.
    pub files: Vec<PathBuf>,
    pub files_digest: Option<Digest>,
    pub limits: Limits,
    pub confinement: Confinement,
}

impl Derivation for BuildSpec {
    type Body = Build;
    const KIND: Kind = Kind::Build;
    const IDENTITY: Identity = Identity::Output;

    fn references(body: &Build) -> Vec<Ref<'_>> {
        Self::step_references(body, &[Kind::Build, Kind::Source])
    }

    fn axes<'a>(body: &'a Build, uses: &mut AxisUses<'a>) {
        Self::step_axes(body, uses)
    }

    fn expand(body: &Build, cx: &mut Expand<'_>) -> Result<Self, RecipeError> {
        Self::expand_step(body, cx)
    }

    fn privileged(&self) -> bool {
        self.confinement == Confinement::Privileged
    }

    fn describe(&self, _: &NodeName, d: &mut Description) {
        self.describe_step(d)
    }

    fn produce(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        self.run(cx)
    }
}

/// A step's parts, shared by the kinds whose declaration is a build's (`test`).
impl BuildSpec {
    /// `source`, `toolchain`, and `input`s of the given kinds.
    pub(super) fn step_references<'a>(body: &'a Build, inputs: &'static [Kind]) -> Vec<Ref<'a>> {
        let mut refs = Vec::new();
        if let Some(s) = &body.source {
            refs.push(Ref {
                to: s,
                role: Role::Source,
                kinds: &[Kind::Source],
            });
        }
        if let Some(t) = &body.toolchain {
            refs.push(Ref {
                to: t,
                role: Role::Toolchain,
                kinds: &[Kind::Toolchain],
            });
        }
        refs.extend(body.inputs.iter().map(|i| Ref {
            to: i,
            role: Role::Input,
            kinds: inputs,
        }));
        refs
    }

    pub(super) fn step_axes<'a>(body: &'a Build, uses: &mut AxisUses<'a>) {
        for s in &body.scripts {
            uses.template(&s.value.value);
            uses.conditions(s);
        }
        body.patches.iter().for_each(|p| uses.conditions(p));
        body.env.iter().for_each(|e| uses.template(&e.value));
    }

    pub(super) fn expand_step(body: &Build, cx: &mut Expand<'_>) -> Result<Self, RecipeError> {
        check_input_names(body)?;
        let patches: Vec<Spanned<String>> = body
            .patches
            .iter()
            .filter(|p| cx.applies(p))
            .map(|p| p.value.clone())
            .collect();
        cx.inside_repository(&patches)?;
        let print = cx.fingerprint(&patches)?;
        let paths = cx.local_paths(&patches);
        if let Some(missing) = print.missing.first() {
            let at = patches.iter().zip(&paths).find(|(_, p)| *p == missing);
            let mut err = RecipeError::new(format!("patch `{}` not found", missing.display()));
            if let Some((p, _)) = at {
                err = err.label(p.loc, "no such file");
            }
            return Err(err.help("patch paths are relative to the recipe's directory"));
        }
        cx.inside_repository(&body.files)?;
        let files = cx.fingerprint(&body.files)?;
        if let Some(missing) = files.missing.first() {
            let mut err = RecipeError::new(format!("files `{}` not found", missing.display()));
            if let Some(f) = body.files.first() {
                err = err.label(f.loc, "in these");
            }
            return Err(err.help("`files` paths are relative to the recipe's directory"));
        }
        Ok(BuildSpec {
            script: cx.render(&cx.select(&body.scripts, "script", "\"...\"")?.value),
            env: body
                .env
                .iter()
                .map(|v| (v.name.value.clone(), cx.render(&v.value)))
                .collect(),
            patches_digest: (!paths.is_empty()).then_some(print.digest),
            patches: paths,
            files_digest: (!body.files.is_empty()).then_some(files.digest),
            files: cx.local_paths(&body.files),
            limits: limits(&body.limits),
            confinement: if body.privileged {
                Confinement::Privileged
            } else {
                Confinement::Confined
            },
        })
    }

    pub(super) fn describe_step(&self, d: &mut Description) {
        // Limits say when to give up, not what is built: not part of the key.
        d.text("script", &self.script).vars("env", &self.env);
        if let Some(digest) = self.patches_digest {
            d.digest("patches", digest);
        }
        if let Some(digest) = self.files_digest {
            d.digest("files", digest);
        }
        d.flag("privileged", self.confinement == Confinement::Privileged);
    }

    /// Runs the step: source placed, patches applied, script run in the sandbox.
    pub(super) fn run(&self, cx: &Step<'_>) -> Result<Produced, StepError> {
        let work = cx.work()?;
        let src = work.join("src");
        match cx.inputs(Role::Source).next() {
            Some(Input {
                spec: Spec::Source(s),
                realised,
                name,
                ..
            }) => {
                let file = realised.path.as_deref().ok_or_else(|| StepError::Invalid {
                    message: format!("source {name} was not fetched"),
                    help: "fetch it first: bake fetch FILE".into(),
                })?;
                s.place(name, file, &src)?;
            }
            _ => std::fs::create_dir_all(&src)
                .map_err(|e| StepError::io("cannot make the build directory", e))?,
        }
        let toolchain = cx.inputs(Role::Toolchain).find_map(|i| match i.spec {
            Spec::Toolchain(t) => Some((i.name, i.id, t)),
            _ => None,
        });
        let script = self.apply_patches(work)? + &self.script;
        let inputs: Vec<(String, PathBuf)> = cx
            .inputs(Role::Input)
            .filter_map(|i| Some((i.name.to_string(), i.realised.path.clone()?)))
            .collect();
        let log = cx.log_path();
        let sent = ScriptStep {
            id: cx.id,
            script: &script,
            env: &self.env,
            toolchain: toolchain.map(|(_, _, t)| t),
            inputs: &inputs,
            files: &self.files,
            jobs: cx.jobs,
            limits: self.limits,
        };
        // A privileged step needs this machine, and a check's rebuild its
        // variation: neither is sent elsewhere.
        if let (Some(executor), Confinement::Confined, None) =
            (cx.executor, self.confinement, &cx.rebuild)
        {
            if executor.execute(&sent, work, &log)? {
                return Ok(Produced::Tree);
            }
        }
        let mut step = sandbox_step(
            sent,
            toolchain.map(|(name, _, _)| name),
            self.confinement,
            cx.store,
        );
        if let Some(v) = cx.variation() {
            // A varied rebuild starts from empty toolchain caches of its own.
            if let (Some((var, _)), Some((name, _, _))) = (&step.cache, toolchain) {
                if let Some(dir) = v.cache(name) {
                    step.cache = Some((var.clone(), dir));
                }
            }
            step.variation = Some(v.clone());
        }
        // zig's cache has shown a race when two links for one target first need
        // the same new artifact at once ("C compiler cannot create executables"):
        // steps sharing a toolchain cache run one at a time per target.
        let _cache_lock = match toolchain {
            Some((_, id, t)) if t.cache.is_some() => Some(
                cx.store
                    .lock_toolchain(id)
                    .map_err(|e| StepError::io("cannot lock the toolchain cache", e))?,
            ),
            _ => None,
        };
        crate::exec::run(&step, work, &log)?;
        Ok(Produced::Tree)
    }
}

/// The sandbox's view of a script step: the toolchain's target, variables and
/// paths, then the step's own; the same here and on a remote worker.
pub fn sandbox_step(
    s: ScriptStep<'_>,
    toolchain_name: Option<&NodeName>,
    confinement: Confinement,
    store: &Store,
) -> crate::exec::Step {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut path = Vec::new();
    let mut mounts = Vec::new();
    let mut cache = None;
    if let Some(t) = s.toolchain {
        env.insert("HOST".into(), t.target.clone());
        env.extend(t.env.iter().cloned());
        if let (Some(var), Some(name)) = (&t.cache, toolchain_name) {
            cache = Some((var.clone(), store.toolchain_cache(name)));
        }
        path.extend(t.paths.iter().cloned());
        mounts.extend(t.paths.iter().chain(&t.mounts).cloned());
    }
    env.extend(s.env.iter().cloned());
    crate::exec::Step {
        script: s.script.to_string(),
        env,
        path,
        inputs: s.inputs.to_vec(),
        files: s.files.to_vec(),
        mounts,
        cache,
        jobs: s.jobs,
        source_date_epoch: SOURCE_DATE_EPOCH,
        limits: s.limits,
        confinement,
        variation: None,
        shared: store.sandbox_dir(),
    }
}

impl BuildSpec {
    /// Copies the patches into the build directory and returns the lines that
    /// apply them, which run before the script (their output is in its log).
    fn apply_patches(&self, work: &Path) -> Result<String, StepError> {
        let mut lines = String::new();
        if self.patches.is_empty() {
            return Ok(lines);
        }
        let dir = work.join("patches");
        std::fs::create_dir_all(&dir).map_err(|e| StepError::io("cannot make the patch directory", e))?;
        for (n, patch) in self.patches.iter().enumerate() {
            let name = format!(
                "{n:02}-{}",
                patch.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            );
            std::fs::copy(patch, dir.join(&name)).map_err(|e| {
                StepError::io(format!("cannot copy the patch {}", patch.display()), e)
            })?;
            lines.push_str(&format!(
                "patch -p1 --forward --batch --no-backup-if-mismatch -i \"$(dirname \"$PWD\")/patches/{name}\"\n"
            ));
        }
        Ok(lines)
    }
}

/// The recipe's limits over bake's defaults.
fn limits(declared: &StepLimits) -> Limits {
    let default = Limits::default();
    Limits {
        time: declared.time.unwrap_or(default.time),
        memory: declared.memory.unwrap_or(default.memory),
        output: declared.output.unwrap_or(default.output),
    }
}

/// Each input is exported as a variable: none may replace one the sandbox sets,
/// and no two may map to the same name (`a-b` and `a_b` are both `$a_b`).
fn check_input_names(body: &Build) -> Result<(), RecipeError> {
    let mut seen: Vec<(String, &Reference)> = Vec::new();
    for input in &body.inputs {
        let var = input_var(input.value.as_str());
        if SANDBOX_VARS.contains(&var.as_str()) {
            return Err(RecipeError::at(
                input.loc,
                format!(
                    "input `{}` would replace ${var}, which bake sets",
                    input.value
                ),
                "shadows a sandbox variable",
            )
            .help(format!(
                "bake sets {} for every step; rename the input's node",
                SANDBOX_VARS.join(", ")
            )));
        }
        if let Some((_, first)) = seen.iter().find(|(v, _)| *v == var) {
            return Err(RecipeError::at(
                input.loc,
                format!(
                    "inputs `{}` and `{}` are both exported as ${var}",
                    first.value, input.value
                ),
                "same variable",
            )
            .label(first.loc, "first exported here")
            .help(
                "rename one of the nodes: characters other than letters, digits and `_` become `_`",
            ));
        }
        seen.push((var, input));
    }
    Ok(())
}
