//! A release's `manifest.json`, and `bake rebuild-check`: rebuild a published
//! release from the recipe and compare it, image by image, with what was
//! published; name the first instance whose build differs.

use std::fs;
use std::io;
use std::time::Instant;

use super::*;
use crate::derivation::Realised;
use crate::fetch::{download, hash_file};
use crate::release::{self, Built, ImageEntry, Manifest, MANIFEST};
use crate::units::show_duration;

/// The manifest entries of the images `written` for release `r`: each image's
/// sysext instance and its closure, as this build realised them.
pub(super) fn manifest_entries(
    eval: &Evaluation,
    report: &realise::Report,
    r: usize,
    written: &[release::Image],
) -> Vec<ImageEntry> {
    let built = |i: usize| {
        let inst = eval.instance(i);
        report
            .realised
            .get(&i)
            .map(|x| Built::new(&inst.id, inst.kind(), x.key, x.output))
    };
    let mut entries = Vec::new();
    for &(sysext, _) in eval.graph.deps(r) {
        let (Some(instance), Some(path)) = (
            built(sysext),
            report.realised.get(&sysext).and_then(|x| x.path.as_ref()),
        ) else {
            continue;
        };
        let closure: Vec<Built> = eval
            .graph
            .closure(&[sysext])
            .iter()
            .filter(|&i| i != sysext)
            .filter_map(built)
            .collect();
        for image in written.iter().filter(|w| path.join(&w.file).is_file()) {
            entries.push(ImageEntry {
                file: image.file.clone(),
                sha256: image.sha256.clone(),
                instance: instance.clone(),
                closure: closure.clone(),
            });
        }
    }
    entries
}

/// Signs `manifest.json` beside SHA256SUMS, with the release's key; an unsigned
/// release leaves no stale signature.
pub(super) fn sign_manifest(
    out: &Path,
    name: &str,
    signer: Option<&release::Signer>,
) -> Result<(), release::ReleaseError> {
    let manifest = out.join(MANIFEST);
    let signature = out.join(format!("{MANIFEST}.sig"));
    match signer {
        Some(s) => {
            s.sign(&manifest, &signature)?;
            release::verify(&out.join(format!("{name}.gpg")), &signature, &manifest)
        }
        None => match fs::remove_file(&signature) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    }
}

/// The recipe's path from the root of its repository, as the manifest records it.
pub(super) fn recipe_in_repository(recipe: &Path) -> String {
    let full = recipe
        .canonicalize()
        .unwrap_or_else(|_| recipe.to_path_buf());
    repository_root(recipe)
        .and_then(|root| full.strip_prefix(root).ok().map(Path::to_path_buf))
        .unwrap_or(full)
        .display()
        .to_string()
}

pub(super) struct RebuildArgs<'a> {
    pub release: &'a str,
    pub recipe: Option<&'a Path>,
    pub cache: Option<&'a Path>,
    pub run: &'a RunArgs,
    pub json: bool,
}

/// Where the published files are: a directory, or a base URL.
enum Published {
    Dir(PathBuf),
    Url(String),
}

impl Published {
    fn parse(s: &str) -> Result<Published, Failure> {
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Published::Url(s.trim_end_matches('/').to_string()))
        } else if Path::new(s).is_dir() {
            Ok(Published::Dir(PathBuf::from(s)))
        } else {
            Err(Failure::usage(format!(
                "{s} is neither a directory nor an http(s) URL of a release"
            )))
        }
    }

    /// Downloads or reads the published `file` into `to`.
    fn read(&self, file: &str, to: &mut dyn io::Write, fetch: &FetchOptions) -> Result<(), String> {
        match self {
            Published::Dir(d) => {
                let path = d.join(file);
                let mut f =
                    fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                io::copy(&mut f, to).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Published::Url(base) => {
                let url = format!("{base}/{file}");
                let bytes = download(&url, to, fetch).map_err(|e| format!("{url}: {e}"))?;
                errln!("fetched  {url} ({bytes} bytes)");
            }
        }
        Ok(())
    }

    /// The published `file` as a local path: in place, or downloaded into `scratch`.
    fn get(&self, file: &str, scratch: &Path, fetch: &FetchOptions) -> Result<PathBuf, String> {
        if let Published::Dir(d) = self {
            return Ok(d.join(file));
        }
        let to = scratch.join(file);
        let mut f = fs::File::create(&to).map_err(|e| format!("{}: {e}", to.display()))?;
        self.read(file, &mut f, fetch)?;
        Ok(to)
    }
}

/// What the rebuild of one published image found.
enum Verdict {
    Identical,
    /// The published bytes are not those the manifest lists.
    Tampered {
        published: String,
    },
    /// Rebuilt, but not to the published bytes; the first instance that differs.
    Different {
        local: String,
        first: String,
    },
    /// Could not be compared: the recipe lacks it, or it did not build.
    Failed(String),
}

impl Verdict {
    fn name(&self) -> &'static str {
        match self {
            Verdict::Identical => "identical",
            Verdict::Tampered { .. } => "tampered",
            Verdict::Different { .. } => "different",
            Verdict::Failed(_) => "failed",
        }
    }
}

pub(super) fn cmd_rebuild_check(args: RebuildArgs<'_>) -> Result<(), Failure> {
    let began = Instant::now();
    let published = Published::parse(args.release)?;
    let fetch = args.run.fetch.options()?;
    let mut text = Vec::new();
    published
        .read(MANIFEST, &mut text, &fetch)
        .map_err(|e| Failure::usage(format!("no release manifest: {e}")))?;
    let manifest = Manifest::parse(&String::from_utf8_lossy(&text))
        .map_err(|e| Failure::usage(format!("{}/{MANIFEST}: {e}", args.release)))?;
    let recipe_file = match args.recipe {
        Some(r) => r.to_path_buf(),
        None => {
            let here = std::env::current_dir()
                .map_err(|e| Failure::usage(format!("cannot read the current directory: {e}")))?;
            let path = repository_root(&here)
                .unwrap_or(here)
                .join(&manifest.recipe);
            if !path.is_file() {
                return Err(Failure::usage(format!(
                    "the release was built from {}, which is not at {}: pass --recipe FILE",
                    manifest.recipe,
                    path.display()
                )));
            }
            path
        }
    };
    let recipe = RecipeArgs {
        file: recipe_file,
        cache: args.cache.map(Path::to_path_buf),
    };
    let eval = recipe.evaluate()?;
    let store = recipe.open_store()?;
    let scratch = store
        .tmp_dir()
        .map_err(|e| Failure::usage(format!("cannot make a download directory: {e}")))?;
    errln!(
        "{}: {} images published by bake {}; rebuilding from {}",
        manifest.release,
        manifest.images.len(),
        manifest.bake,
        recipe.file.display()
    );
    let wanted: Vec<usize> = manifest
        .images
        .iter()
        .filter_map(|i| eval.find(i.instance.id.as_str()))
        .collect();
    stop_on_signals();
    let realiser = Realiser::new(&eval, &store, args.run.options()?);
    let report = realiser.build(&eval.graph.closure(&wanted));
    report_failures(&eval, &report);
    interrupted()?;
    let mut results = Vec::new();
    for image in &manifest.images {
        let verdict = judge(image, &eval, &report, &realiser, || {
            published.get(&image.file, scratch.path(), &fetch)
        });
        match &verdict {
            Verdict::Identical => errln!("identical  {}  {}", image.file, image.sha256),
            Verdict::Tampered { published } => errln!(
                "TAMPERED   {}: the published file has sha256 {published}, the manifest says {}",
                image.file,
                image.sha256
            ),
            Verdict::Different { local, first } => errln!(
                "DIFFERENT  {}: published {}, rebuilt {local}\n           first difference: {first}",
                image.file,
                image.sha256
            ),
            Verdict::Failed(why) => errln!("FAILED     {}: {why}", image.file),
        }
        results.push((image, verdict));
    }
    let count = |name: &str| results.iter().filter(|(_, v)| v.name() == name).count();
    let identical = count("identical");
    let total = results.len();
    errln!(
        "identical={identical} different={} tampered={} failed={} total={total} (in {})",
        count("different"),
        count("tampered"),
        count("failed"),
        show_duration(began.elapsed())
    );
    if args.json {
        let images: Vec<serde_json::Value> = results
            .iter()
            .map(|(image, v)| {
                let mut j = json!({"file": image.file, "id": image.instance.id.as_str(),
                                   "result": v.name(), "sha256": image.sha256});
                match v {
                    Verdict::Identical => {}
                    Verdict::Tampered { published } => j["published_sha256"] = json!(published),
                    Verdict::Different { local, first } => {
                        j["rebuilt_sha256"] = json!(local);
                        j["first_difference"] = json!(first);
                    }
                    Verdict::Failed(why) => j["error"] = json!(why),
                }
                j
            })
            .collect();
        outln!(
            "{:#}",
            json!({
                "release": manifest.release.as_str(),
                "identical": identical,
                "different": count("different"),
                "tampered": count("tampered"),
                "failed": count("failed"),
                "total": total,
                "images": images,
            })
        );
    }
    if identical == total {
        Ok(())
    } else {
        Err(Failure::failed())
    }
}

/// Compares one published image with the local build of its instance.
fn judge(
    image: &ImageEntry,
    eval: &Evaluation,
    report: &realise::Report,
    realiser: &Realiser<'_>,
    published: impl FnOnce() -> Result<PathBuf, String>,
) -> Verdict {
    let id = &image.instance.id;
    let Some(i) = eval.find(id.as_str()) else {
        return Verdict::Failed(format!("the recipe has no instance {id}"));
    };
    let Some(local) = report.realised.get(&i) else {
        return Verdict::Failed(format!("{id} did not build here"));
    };
    let path = match published() {
        Ok(p) => p,
        Err(e) => return Verdict::Failed(format!("cannot fetch the published image: {e}")),
    };
    let published_sha = match hash_file(&path, HashAlgo::Sha256) {
        Ok(h) => h.hex,
        Err(e) => return Verdict::Failed(format!("cannot read {}: {e}", path.display())),
    };
    if published_sha != image.sha256 {
        return Verdict::Tampered {
            published: published_sha,
        };
    }
    if let Err(e) = realiser.check_intact(id, local) {
        return Verdict::Failed(e.to_string());
    }
    let local_sha = match local
        .path
        .as_ref()
        .map(|p| hash_file(&p.join(&image.file), HashAlgo::Sha256))
    {
        Some(Ok(h)) => h.hex,
        Some(Err(e)) => return Verdict::Failed(format!("{id} has no {}: {e}", image.file)),
        None => return Verdict::Failed(format!("{id} has no output here")),
    };
    if local_sha == image.sha256 {
        return Verdict::Identical;
    }
    let first = image
        .closure
        .iter()
        .chain(std::iter::once(&image.instance))
        .find_map(|b| first_difference(b, eval, report))
        .unwrap_or_else(|| {
            format!("{id}: every key and output matches, but the image bytes do not")
        });
    Verdict::Different {
        local: local_sha,
        first,
    }
}

/// How the local build of `b`'s instance differs from the published one, if it does.
fn first_difference(b: &Built, eval: &Evaluation, report: &realise::Report) -> Option<String> {
    let local: Option<&Realised> = eval
        .find(b.id.as_str())
        .and_then(|i| report.realised.get(&i));
    let Some(local) = local else {
        return Some(format!("{}: the recipe has no such instance", b.id));
    };
    if local.key != b.build_key {
        return Some(format!(
            "{}: build key {} published, {} here: its description or an input's output differs \
             (bake why shows what it was built from here)",
            b.id, b.build_key, local.key
        ));
    }
    (local.output != b.output).then(|| {
        let show = |o: Option<crate::hash::OutputHash>| o.map_or("none".into(), |o| o.to_string());
        format!(
            "{}: same build key, output {} published, {} here: the step is not reproducible \
             (bake check {} shows which files differ)",
            b.id,
            show(b.output),
            show(local.output),
            b.id
        )
    })
}
