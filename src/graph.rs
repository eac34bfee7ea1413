//! The dependency DAG: ordering, cycle paths, and Graphviz output.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::eval::Evaluation;

/// Orders nodes so that each comes after everything it depends on, ties broken by
/// index (definition order), so the order is stable. `deps[n]` lists what `n`
/// depends on, each with a label (where the reference was written). On a cycle,
/// returns it as `(node, label of its edge to the next node)`, closing back on the
/// first.
pub fn order_nodes<L: Copy>(deps: &[Vec<(usize, L)>]) -> Result<Vec<usize>, Vec<(usize, L)>> {
    let mut g: DiGraph<usize, L> = DiGraph::with_capacity(deps.len(), deps.len());
    let ids: Vec<NodeIndex> = (0..deps.len()).map(|i| g.add_node(i)).collect();
    for (n, ds) in deps.iter().enumerate() {
        for &(d, label) in ds {
            g.add_edge(ids[n], ids[d], label);
        }
    }
    // Kahn's algorithm over "depends on" edges reversed: a node is ready once all
    // its dependencies are placed.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = waiting
        .iter()
        .enumerate()
        .filter(|(_, w)| **w == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(Reverse(n)) = ready.pop() {
        order.push(n);
        for e in g.edges_directed(ids[n], Direction::Incoming) {
            let dependent = g[e.source()];
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.push(Reverse(dependent));
            }
        }
    }
    if order.len() == deps.len() {
        Ok(order)
    } else {
        Err(find_cycle(&g))
    }
}

/// A cycle through the first strongly connected component that has one.
fn find_cycle<L: Copy>(g: &DiGraph<usize, L>) -> Vec<(usize, L)> {
    let mut sccs = tarjan_scc(g);
    sccs.iter_mut().for_each(|c| c.sort_by_key(|n| g[*n]));
    sccs.sort_by_key(|c| c.first().map(|n| g[*n]));
    let Some(scc) = sccs
        .into_iter()
        .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
    else {
        return Vec::new();
    };
    // Depth-first from the smallest node, staying in the component, until it closes.
    let start = scc[0];
    let mut path: Vec<(NodeIndex, L)> = Vec::new();
    let mut seen = vec![start];
    let mut at = start;
    loop {
        let next = g
            .edges(at)
            .filter(|e| scc.contains(&e.target()))
            .min_by_key(|e| (e.target() != start, g[e.target()]))
            .map(|e| (e.target(), *e.weight()));
        let Some((to, label)) = next else { break };
        path.push((at, label));
        if to == start || seen.contains(&to) {
            // Trim a lasso down to the loop it ends in.
            let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
            path.drain(..from);
            break;
        }
        seen.push(to);
        at = to;
    }
    path.into_iter().map(|(n, l)| (g[n], l)).collect()
}

/// The evaluated instances as a Graphviz digraph, an edge from each dependency to
/// its dependent.
pub fn to_dot(eval: &Evaluation) -> String {
    let mut out = String::from("digraph bake {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n");
    for inst in &eval.instances {
        let shape = match inst.kind {
            crate::recipe::Kind::Source => "note",
            crate::recipe::Kind::Toolchain => "component",
            crate::recipe::Kind::Build => "box",
            crate::recipe::Kind::Sysext => "box3d",
            crate::recipe::Kind::Release => "folder",
        };
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}];",
            dot_id(&inst.id.0),
            dot_id(&format!("{}\n{}", inst.id, &inst.key.to_string()[..12]))
        );
    }
    for inst in &eval.instances {
        for dep in &inst.deps {
            let _ = writeln!(
                out,
                "  {} -> {};",
                dot_id(&eval.instances[dep.instance].id.0),
                dot_id(&inst.id.0)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn dot_id(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first_and_stably() {
        // 0 depends on 2, 1 on nothing, 2 on 1.
        let deps = vec![vec![(2, ())], vec![], vec![(1, ())]];
        assert_eq!(order_nodes(&deps).unwrap(), vec![1, 2, 0]);
    }

    #[test]
    fn reports_the_whole_cycle_path() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 0 hanging off it.
        let deps = vec![
            vec![(1, 'a')],
            vec![(2, 'b')],
            vec![(0, 'c')],
            vec![(0, 'd')],
        ];
        let cycle = order_nodes(&deps).unwrap_err();
        assert_eq!(cycle, vec![(0, 'a'), (1, 'b'), (2, 'c')]);
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let deps = vec![vec![], vec![(1, 'x')]];
        assert_eq!(order_nodes(&deps).unwrap_err(), vec![(1, 'x')]);
    }
}
