//! Matrix expansion: one instance per combination of the axes a node uses, each
//! with its placeholders filled in, its dependencies wired and its eval key.

use std::collections::{BTreeMap, HashMap};

use super::resolve::Resolved;
use super::{Dep, Instance};
use crate::derivation::{key, DepKey, Expand, Spec};
use crate::fingerprint::StatCache;
use crate::graph::Dag;
use crate::hash::EvalKey;
use crate::names::{AxisName, AxisValue, InstanceId};
use crate::recipe::limits::MAX_INSTANCES;
use crate::recipe::{Axis, Files, Kind, Node, RecipeError, Role};

pub fn expand(
    axes: &[Axis],
    nodes: &[Node],
    resolved: &Resolved,
    files: &Files,
    cache: &mut StatCache,
) -> Result<Dag<Instance, Dep>, RecipeError> {
    let mut graph: Dag<Instance, Dep> = Dag::default();
    // (node, value index per axis the node uses) -> instance
    let mut table: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
    let mut of_node: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    check_instance_count(axes, nodes, resolved)?;
    for &n in &resolved.order {
        let node = &nodes[n];
        let node_axes = &resolved.axes[n];
        for combo in combinations(node_axes.iter().map(|&a| axes[a].values.len())) {
            let values: Vec<(AxisName, AxisValue)> = node_axes
                .iter()
                .zip(&combo)
                .map(|(&a, &v)| {
                    (
                        AxisName::new(&axes[a].name.value),
                        AxisValue::new(&axes[a].values[v].value),
                    )
                })
                .collect();
            let mut deps = Vec::new();
            for d in &resolved.deps[n] {
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
                deps.extend(targets.into_iter().map(|instance| {
                    let dep = Dep {
                        role: d.role,
                        name: d.name.clone(),
                    };
                    (instance, dep)
                }));
            }
            let id = instance_id(node, &values);
            let rendered: BTreeMap<String, String> = values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let file = &files.get(node.loc.file).path;
            let spec = Spec::expand(
                &node.body,
                &mut Expand::new(&id, node, &rendered, file, cache),
            )?;
            let dep_keys: Vec<DepKey> = deps
                .iter()
                .map(|(d, dep): &(usize, Dep)| {
                    let inst = graph.node(*d);
                    DepKey::new(
                        dep.role,
                        &dep.name,
                        &inst.id,
                        inst.key.digest(),
                        inst.spec.shown(),
                    )
                })
                .collect();
            let key = EvalKey::new(key(&spec.describe(&node.name.value), &dep_keys));
            let index = graph.push(
                Instance {
                    id,
                    name: node.name.value.clone(),
                    axes: values,
                    key,
                    spec,
                },
                deps,
            );
            table.insert((n, combo), index);
            of_node[n].push(index);
        }
    }
    Ok(graph)
}

/// Refuses a matrix that would expand to more than [`MAX_INSTANCES`], before
/// anything is allocated for it.
fn check_instance_count(
    axes: &[Axis],
    nodes: &[Node],
    resolved: &Resolved,
) -> Result<(), RecipeError> {
    let mut total: u64 = 0;
    for (n, node_axes) in resolved.axes.iter().enumerate() {
        let count = node_axes
            .iter()
            .try_fold(1u64, |acc, &a| acc.checked_mul(axes[a].values.len() as u64));
        total = count.and_then(|c| total.checked_add(c)).unwrap_or(u64::MAX);
        if total > MAX_INSTANCES {
            let node = &nodes[n];
            let names: Vec<&str> = node_axes
                .iter()
                .map(|&a| axes[a].name.value.as_str())
                .collect();
            return Err(RecipeError::at(
                node.name.loc,
                format!("the matrix expands to more than {MAX_INSTANCES} instances"),
                format!(
                    "{} `{}` varies over {}",
                    node.kind(),
                    node.name.value,
                    names.join(", ")
                ),
            )
            .help("use fewer axes or axis values"));
        }
    }
    Ok(())
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
fn instance_id(node: &Node, values: &[(AxisName, AxisValue)]) -> InstanceId {
    let mut id = match node.kind() {
        Kind::Build => node.name.value.to_string(),
        kind => format!("{kind}:{}", node.name.value),
    };
    if !values.is_empty() {
        let v: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
        id = format!("{id}@{}", v.join("/"));
    }
    InstanceId::new(id)
}
