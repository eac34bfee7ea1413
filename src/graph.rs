//! Graphs: ordering declared nodes (with the path of a cycle), and the DAG of
//! instances that the later stages walk.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Orders nodes so that each comes after everything it depends on, ties broken by
/// index (definition order), so the order is stable. `deps[n]` lists what `n`
/// depends on, each with a label (where the reference was written). On a cycle,
/// returns it as `(node, label of its edge to the next node)`, closing back on the
/// first.
pub fn order<L: Copy>(deps: &[Vec<(usize, L)>]) -> Result<Vec<usize>, Vec<(usize, L)>> {
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

/// A DAG that owns its nodes and their edges. A node is added after everything it
/// depends on, so index order is a dependency order and no cycle can be made.
#[derive(Clone, Debug)]
pub struct Dag<N, E> {
    nodes: Vec<N>,
    deps: Vec<Vec<(usize, E)>>,
    dependents: Vec<Vec<usize>>,
}

impl<N, E> Default for Dag<N, E> {
    fn default() -> Self {
        Dag {
            nodes: Vec::new(),
            deps: Vec::new(),
            dependents: Vec::new(),
        }
    }
}

impl<N, E> Dag<N, E> {
    /// Adds `node` depending on `deps`, each an index of a node already added.
    pub fn push(&mut self, node: N, deps: Vec<(usize, E)>) -> usize {
        let index = self.nodes.len();
        for (d, _) in &deps {
            debug_assert!(*d < index, "a dependency is added before its dependents");
            self.dependents[*d].push(index);
        }
        self.nodes.push(node);
        self.deps.push(deps);
        self.dependents.push(Vec::new());
        index
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &N {
        &self.nodes[i]
    }

    /// Every node with its index, dependencies first.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &N)> {
        self.nodes.iter().enumerate()
    }

    /// What node `i` depends on, with the edge's label.
    pub fn deps(&self, i: usize) -> &[(usize, E)] {
        &self.deps[i]
    }

    /// The nodes that depend on node `i` directly.
    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// The nodes `targets` need, themselves included.
    pub fn closure(&self, targets: &[usize]) -> Selection {
        let mut wanted = vec![false; self.nodes.len()];
        let mut stack = targets.to_vec();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut wanted[i], true) {
                stack.extend(self.deps[i].iter().map(|(d, _)| *d));
            }
        }
        Selection(wanted)
    }

    /// Every node.
    pub fn all(&self) -> Selection {
        Selection(vec![true; self.nodes.len()])
    }
}

/// A DAG is kept as its nodes and their edges; the dependents are derived again,
/// and an edge that does not point back to an earlier node is refused.
impl<N: serde::Serialize, E: serde::Serialize> serde::Serialize for Dag<N, E> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.nodes, &self.deps).serialize(s)
    }
}

impl<'de, N: serde::Deserialize<'de>, E: serde::Deserialize<'de>> serde::Deserialize<'de>
    for Dag<N, E>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (nodes, deps): (Vec<N>, Vec<Vec<(usize, E)>>) = serde::Deserialize::deserialize(d)?;
        if nodes.len() != deps.len() {
            return Err(D::Error::custom("as many edge lists as nodes"));
        }
        let mut dag = Dag {
            nodes: Vec::with_capacity(nodes.len()),
            deps: Vec::with_capacity(nodes.len()),
            dependents: Vec::with_capacity(nodes.len()),
        };
        for (node, ds) in nodes.into_iter().zip(deps) {
            if ds.iter().any(|(d, _)| *d >= dag.len()) {
                return Err(D::Error::custom("an edge to a later node"));
            }
            dag.push(node, ds);
        }
        Ok(dag)
    }
}

/// A set of the nodes of one graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection(Vec<bool>);

impl Selection {
    /// The selection of `len` nodes holding those `member` says.
    pub fn from_fn(len: usize, member: impl FnMut(usize) -> bool) -> Selection {
        Selection((0..len).map(member).collect())
    }

    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i).copied().unwrap_or(false)
    }

    pub fn remove(&mut self, i: usize) {
        if let Some(m) = self.0.get_mut(i) {
            *m = false;
        }
    }

    /// The members, in index order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(i, _)| i)
    }

    pub fn count(&self) -> usize {
        self.0.iter().filter(|m| **m).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first_and_stably() {
        // 0 depends on 2, 1 on nothing, 2 on 1.
        let deps = vec![vec![(2, ())], vec![], vec![(1, ())]];
        assert_eq!(order(&deps).unwrap(), vec![1, 2, 0]);
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
        let cycle = order(&deps).unwrap_err();
        assert_eq!(cycle, vec![(0, 'a'), (1, 'b'), (2, 'c')]);
    }

    #[test]
    fn dag_knows_dependents_and_closures() {
        let mut g: Dag<&str, ()> = Dag::default();
        let a = g.push("a", vec![]);
        let b = g.push("b", vec![(a, ())]);
        let c = g.push("c", vec![(b, ())]);
        let d = g.push("d", vec![]);
        assert_eq!(g.dependents(a), &[b]);
        assert_eq!(g.closure(&[c]).iter().collect::<Vec<_>>(), vec![a, b, c]);
        assert!(!g.closure(&[c]).contains(d));
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let deps = vec![vec![], vec![(1, 'x')]];
        assert_eq!(order(&deps).unwrap_err(), vec![(1, 'x')]);
    }
}
