//! Names, references and axes: which node depends on which, and which matrix
//! axes each node varies over.

use std::collections::HashMap;

use crate::derivation::{AxisUses, Spec};
use crate::graph;
use crate::recipe::{
    did_you_mean, Axis, Kind, Loc, Node, NodeName, RecipeError, Reference, Role, Spanned,
};

#[derive(Clone, Debug)]
pub struct NodeDep {
    pub node: usize,
    pub role: Role,
    /// The reference as written (`openssl`, `sysext:keepalived`): what an input
    /// is exported as.
    pub name: NodeName,
    pub loc: Loc,
}

pub struct Resolved {
    pub deps: Vec<Vec<NodeDep>>,
    /// Node indices, dependencies first.
    pub order: Vec<usize>,
    /// Per node, the axes it varies over, as indices into the matrix, in matrix order.
    pub axes: Vec<Vec<usize>>,
}

pub fn resolve(axes: &[Axis], nodes: &[Node]) -> Result<Resolved, RecipeError> {
    check_axes(axes)?;
    let by_name = name_table(nodes)?;
    let deps = nodes
        .iter()
        .map(|n| references(n, nodes, &by_name))
        .collect::<Result<Vec<_>, _>>()?;
    let edges: Vec<Vec<(usize, Loc)>> = deps
        .iter()
        .map(|d| d.iter().map(|d| (d.node, d.loc)).collect())
        .collect();
    let order = graph::order(&edges).map_err(|cycle| cycle_error(&cycle, nodes))?;
    let mut node_axes: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| own_axes(n, axes))
        .collect::<Result<_, _>>()?;
    for &n in &order {
        let mut set = node_axes[n].clone();
        for d in deps[n].iter().filter(|d| d.role != Role::Gather) {
            set.extend(node_axes[d.node].iter().copied());
        }
        set.sort_unstable();
        set.dedup();
        node_axes[n] = set;
    }
    Ok(Resolved {
        deps,
        order,
        axes: node_axes,
    })
}

fn check_axes(axes: &[Axis]) -> Result<(), RecipeError> {
    for (i, a) in axes.iter().enumerate() {
        if let Some(first) = axes[..i].iter().find(|b| b.name.value == a.name.value) {
            return Err(RecipeError::at(
                a.name.loc,
                format!("axis `{}` declared twice", a.name.value),
                "declared again here",
            )
            .label(first.name.loc, "first declared here"));
        }
    }
    Ok(())
}

/// Each kind has its own names: `source "keepalived"` and `build "keepalived"` coexist.
fn name_table(nodes: &[Node]) -> Result<HashMap<(Kind, &NodeName), usize>, RecipeError> {
    let mut by_name: HashMap<(Kind, &NodeName), usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(&first) = by_name.get(&(n.kind(), &n.name.value)) {
            let first = &nodes[first];
            return Err(RecipeError::at(
                n.name.loc,
                format!("`{}` is defined twice", n.name.value),
                format!("{} `{}` defined again here", n.kind(), n.name.value),
            )
            .label(
                first.name.loc,
                format!("{} `{}` first defined here", first.kind(), first.name.value),
            )
            .help(format!(
                "each {} needs its own name, across every imported file: rename one",
                n.kind()
            )));
        }
        by_name.insert((n.kind(), &n.name.value), i);
    }
    Ok(by_name)
}

fn references(
    node: &Node,
    nodes: &[Node],
    by_name: &HashMap<(Kind, &NodeName), usize>,
) -> Result<Vec<NodeDep>, RecipeError> {
    Spec::references(&node.body)
        .into_iter()
        .map(|r| {
            Ok(NodeDep {
                node: lookup(r.to, r.kinds, nodes, by_name)?,
                role: r.role,
                name: r.to.value.clone(),
                loc: r.to.loc,
            })
        })
        .collect()
}

fn lookup(
    r: &Reference,
    kinds: &[Kind],
    nodes: &[Node],
    by_name: &HashMap<(Kind, &NodeName), usize>,
) -> Result<usize, RecipeError> {
    let wanted = kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(" or ");
    // `KIND:NAME` picks one kind where several have the name (`sysext:keepalived`).
    if let Some((kind, name)) = r.value.as_str().split_once(':') {
        let name = NodeName::new(name);
        return match kinds.iter().find(|k| k.name() == kind) {
            Some(k) => by_name.get(&(*k, &name)).copied().ok_or_else(|| {
                RecipeError::at(r.loc, format!("no {kind} named `{name}`"), "unknown name")
            }),
            None => Err(RecipeError::at(
                r.loc,
                format!("a {kind} cannot be used here"),
                format!("expected a {wanted}"),
            )),
        };
    }
    if let Some(&i) = kinds.iter().find_map(|k| by_name.get(&(*k, &r.value))) {
        return Ok(i);
    }
    if let Some(other) = nodes.iter().find(|n| n.name.value == r.value) {
        return Err(RecipeError::at(
            r.loc,
            format!("`{}` is a {}, not a {wanted}", r.value, other.kind()),
            format!("expected a {wanted}"),
        )
        .label(
            other.name.loc,
            format!("{} `{}` defined here", other.kind(), r.value),
        ));
    }
    let candidates = nodes
        .iter()
        .filter(|n| kinds.contains(&n.kind()))
        .map(|n| n.name.value.as_str());
    let err = RecipeError::at(
        r.loc,
        format!("no {wanted} named `{}`", r.value),
        "unknown name",
    );
    Err(match did_you_mean(r.value.as_str(), candidates) {
        Some(near) => err.help(format!("did you mean `{near}`?")),
        None => err.help(format!("define it: {} \"{}\" {{ ... }}", kinds[0], r.value)),
    })
}

fn cycle_error(cycle: &[(usize, Loc)], nodes: &[Node]) -> RecipeError {
    let names: Vec<&str> = cycle
        .iter()
        .map(|(n, _)| nodes[*n].name.value.as_str())
        .chain(cycle.first().map(|(n, _)| nodes[*n].name.value.as_str()))
        .collect();
    let mut err = RecipeError::new(format!("dependency cycle: {}", names.join(" -> ")));
    for (i, (_, loc)) in cycle.iter().enumerate() {
        err = err.label(*loc, format!("{} needs {}", names[i], names[i + 1]));
    }
    err.help("a node cannot depend on itself, directly or through others: remove one of these references")
}

/// The axes a node names itself: its placeholders and its `AXIS="value"` conditions.
fn own_axes(node: &Node, axes: &[Axis]) -> Result<Vec<usize>, RecipeError> {
    let mut uses = AxisUses::default();
    Spec::axes(&node.body, &mut uses);
    let mut used = Vec::new();
    for name in uses.placeholders {
        used.push(axis_index(name, axes)?);
    }
    for (name, value) in uses.conditions {
        let i = axis_index(name, axes)?;
        check_value(&axes[i], name, value)?;
        used.push(i);
    }
    used.sort_unstable();
    used.dedup();
    Ok(used)
}

fn axis_index(name: &Spanned<String>, axes: &[Axis]) -> Result<usize, RecipeError> {
    axes.iter()
        .position(|a| a.name.value == name.value)
        .ok_or_else(|| {
            let err = RecipeError::at(
                name.loc,
                format!("unknown axis `{}`", name.value),
                "no such matrix axis",
            );
            let names = axes.iter().map(|a| a.name.value.as_str());
            match did_you_mean(&name.value, names) {
                Some(near) => err.help(format!("did you mean `{near}`?")),
                None if axes.is_empty() => err.help(
                    "declare it in a matrix { ... } block, or write {{ and }} for literal braces",
                ),
                None => err.help(format!(
                    "axes are: {}; write {{{{ and }}}} for literal braces",
                    axes.iter()
                        .map(|a| a.name.value.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        })
}

fn check_value(
    axis: &Axis,
    name: &Spanned<String>,
    value: &Spanned<String>,
) -> Result<(), RecipeError> {
    if axis.values.iter().any(|v| v.value == value.value) {
        return Ok(());
    }
    let values = axis.values.iter().map(|v| v.value.as_str());
    let err = RecipeError::at(
        value.loc,
        format!("axis `{}` has no value `{}`", name.value, value.value),
        "not in the matrix",
    )
    .label(axis.name.loc, "axis declared here");
    Err(match did_you_mean(&value.value, values) {
        Some(near) => err.help(format!("did you mean `{near}`?")),
        None => err,
    })
}
