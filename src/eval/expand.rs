//! Matrix expansion: one instance per combination of the axes a node uses, each
//! with its placeholders filled in, its dependencies wired and its eval key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::key::derivation_key;
use super::resolve::{Resolved, Role};
use super::*;
use crate::fingerprint::{fingerprint, StatCache};
use crate::recipe::{Axis, Body, Files, Kind, Node, RecipeError, Selected, Spanned};

pub fn expand(
    axes: &[Axis],
    nodes: &[Node],
    resolved: &Resolved,
    files: &Files,
    cache: &mut StatCache,
) -> Result<Vec<Instance>, RecipeError> {
    let mut instances: Vec<Instance> = Vec::new();
    // (node, value index per axis the node uses) -> instance
    let mut table: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
    let mut of_node: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &n in &resolved.order {
        let node = &nodes[n];
        let node_axes = &resolved.axes[n];
        for combo in combinations(node_axes.iter().map(|&a| axes[a].values.len())) {
            let values: Vec<(String, String)> = node_axes
                .iter()
                .zip(&combo)
                .map(|(&a, &v)| (axes[a].name.value.clone(), axes[a].values[v].value.clone()))
                .collect();
            let mut deps = Vec::new();
            for d in &resolved.deps[n] {
                let name = nodes[d.node].name.value.0.clone();
                let targets: Vec<usize> = if d.role == Role::Gather {
                    of_node[d.node].clone()
                } else {
                    let restricted: Vec<usize> = resolved.axes[d.node]
                        .iter()
                        .filter_map(|a| node_axes.iter().position(|x| x == a).map(|p| combo[p]))
                        .collect();
                    table
                        .get(&(d.node, restricted))
                        .copied()
                        .into_iter()
                        .collect()
                };
                deps.extend(targets.into_iter().map(|instance| Dep {
                    instance,
                    role: d.role,
                    name: name.clone(),
                }));
            }
            let id = instance_id(node, &values);
            let rendered: BTreeMap<String, String> = values.iter().cloned().collect();
            let spec = spec(node, &id, &rendered, files, cache)?;
            let key = derivation_key(&node.name.value.0, &spec, &deps, |d| {
                instances[d.instance].key.0
            });
            let index = instances.len();
            table.insert((n, combo), index);
            of_node[n].push(index);
            instances.push(Instance {
                id,
                node: n,
                name: node.name.value.clone(),
                kind: node.kind(),
                axes: values,
                deps,
                key: EvalKey(key),
                spec,
            });
        }
    }
    Ok(instances)
}

/// Every combination of value indices, the last axis varying fastest; one empty
/// combination when there are no axes.
fn combinations(sizes: impl Iterator<Item = usize>) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for size in sizes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..size).map(move |v| {
                    let mut c = prefix.clone();
                    c.push(v);
                    c
                })
            })
            .collect();
    }
    out
}

/// `NAME@v1/v2` for builds; other kinds have names of their own, so their ids
/// carry the kind: `source:keepalived@2.3.4`, `toolchain:musl@arm64`.
fn instance_id(node: &Node, values: &[(String, String)]) -> InstanceId {
    let mut id = match node.kind() {
        Kind::Build => node.name.value.0.clone(),
        kind => format!("{kind}:{}", node.name.value),
    };
    if !values.is_empty() {
        let v: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
        id = format!("{id}@{}", v.join("/"));
    }
    InstanceId(id)
}

fn spec(
    node: &Node,
    id: &InstanceId,
    values: &BTreeMap<String, String>,
    files: &Files,
    cache: &mut StatCache,
) -> Result<Spec, RecipeError> {
    let dir = files
        .get(node.loc.file)
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let env = |vars: &[crate::recipe::EnvVar]| -> Vec<(String, String)> {
        vars.iter()
            .map(|v| (v.name.value.clone(), v.value.render(values)))
            .collect()
    };
    Ok(match &node.body {
        Body::Source(s) => Spec::Source(SourceSpec {
            urls: s.urls.iter().map(|u| u.render(values)).collect(),
            hash: select(&s.hashes, values, node, id, "hash", "\"sha256:HEX\"")?.clone(),
            unpack: s.unpack,
        }),
        Body::Toolchain(t) => {
            let print = fingerprint(&labelled(&dir, &t.identity), cache)
                .map_err(|e| fingerprint_error(&t.identity, e))?;
            let mut vars = env(&t.env);
            let cflags: Vec<&Selected<String>> =
                t.cflags.iter().filter(|c| applies(c, values)).collect();
            if let [extra, ..] = cflags[..] {
                match vars.iter_mut().find(|(k, _)| k == "CFLAGS") {
                    Some((_, v)) => *v = format!("{v} {}", extra.value.value),
                    None => vars.push(("CFLAGS".into(), extra.value.value.clone())),
                }
            }
            Spec::Toolchain(ToolchainSpec {
                target: select(&t.targets, values, node, id, "target", "\"TRIPLE\"")?.clone(),
                paths: local_paths(&dir, &t.paths),
                env: vars,
                cache: t.cache.as_ref().map(|c| c.value.clone()),
                identity: print.digest,
                missing: print.missing,
                version: t.version.clone(),
                install: t.install.clone(),
            })
        }
        Body::Build(b) => Spec::Build(BuildSpec {
            script: select(&b.scripts, values, node, id, "script", "\"...\"")?.render(values),
            env: env(&b.env),
        }),
        Body::Sysext(s) => {
            let print = fingerprint(&labelled(&dir, &s.files), cache)
                .map_err(|e| fingerprint_error(&s.files, e))?;
            if let Some(missing) = print.missing.first() {
                let at = s.files.iter().find(|f| dir.join(&f.value) == *missing);
                let mut err =
                    RecipeError::new(format!("sysext files `{}` not found", missing.display()));
                if let Some(f) = at {
                    err = err.label(f.loc, "no such file or directory");
                }
                return Err(err.help("`files` paths are relative to the recipe's directory"));
            }
            Spec::Sysext(SysextSpec {
                files: local_paths(&dir, &s.files),
                files_digest: print.digest,
                version: s.version.render(values),
                arch: s.arch.render(values),
                os: s.os.value.clone(),
                sysext_level: s.sysext_level.as_ref().map(|l| l.value.clone()),
                reload_manager: s.reload_manager,
                format: s.format,
            })
        }
        Body::Release(r) => Spec::Release(ReleaseSpec {
            base_url: r.base_url.as_ref().map(|u| u.value.clone()),
        }),
    })
}

fn local_paths(dir: &Path, paths: &[Spanned<String>]) -> Vec<PathBuf> {
    paths.iter().map(|p| dir.join(&p.value)).collect()
}

fn labelled<'a>(dir: &Path, paths: &'a [Spanned<String>]) -> Vec<(&'a str, PathBuf)> {
    paths
        .iter()
        .map(|p| (p.value.as_str(), dir.join(&p.value)))
        .collect()
}

fn fingerprint_error(paths: &[Spanned<String>], e: std::io::Error) -> RecipeError {
    let mut err = RecipeError::new(format!("cannot read local files: {e}"));
    if let Some(p) = paths.first() {
        err = err.label(p.loc, "while reading these");
    }
    err
}

fn applies<T>(o: &Selected<T>, values: &BTreeMap<String, String>) -> bool {
    o.when
        .iter()
        .all(|(k, v)| values.get(&k.value) == Some(&v.value))
}

/// The one value whose conditions hold for these axis values.
fn select<'a, T>(
    options: &'a [Selected<T>],
    values: &BTreeMap<String, String>,
    node: &Node,
    id: &InstanceId,
    field: &str,
    example: &str,
) -> Result<&'a T, RecipeError> {
    let matching: Vec<&Selected<T>> = options.iter().filter(|o| applies(o, values)).collect();
    match matching[..] {
        [one] => Ok(&one.value.value),
        [] => {
            let when: Vec<String> = values.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            Err(RecipeError::at(
                node.name.loc,
                format!("no `{field}` applies to {id}"),
                format!("{id} needs a {field}"),
            )
            .help(format!("add: {field} {example} {}", when.join(" "))))
        }
        [first, second, ..] => Err(RecipeError::at(
            second.value.loc,
            format!("two `{field}` values apply to {id}"),
            "this one applies",
        )
        .label(first.value.loc, "and so does this one")
        .help(format!(
            "add conditions such as version=\"...\" so one {field} applies to each instance"
        ))),
    }
}
