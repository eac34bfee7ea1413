//! The scheduler: a ready queue over the DAG, steps run on a rayon pool of `-j N`
//! threads. A failure fails its dependents only; by default nothing new starts
//! after it (running steps finish), with `keep_going` everything independent of it
//! still runs.
//!
//! The worker that finishes a step takes the next ready one itself: along a
//! chain of short steps, handing each over to another thread (and back) cost
//! two wake-ups a step.

use std::sync::Mutex;

use crate::graph::{Dag, Selection};

/// How one step of the schedule ended.
#[derive(Debug)]
pub enum Outcome<T, E> {
    Done(T),
    Failed(E),
    /// Not run: a dependency failed.
    DependencyFailed,
    /// Not run: the schedule stopped after a failure elsewhere.
    NotStarted,
}

/// What every worker reads: the graph's dependents, the limits, the step.
struct Plan<'a, F> {
    dependents: Vec<Vec<usize>>,
    jobs: usize,
    keep_going: bool,
    step: &'a F,
}

/// What the workers change, under one lock.
struct Queue<T, E> {
    waiting: Vec<usize>,
    results: Vec<Option<Outcome<T, E>>>,
    /// Highest index first, so `pop` gives the lowest: the evaluation order,
    /// so runs are alike from one to the next.
    ready: Vec<usize>,
    running: usize,
    stopped: bool,
}

impl<T, E> Queue<T, E> {
    /// The ready steps that may start now, lowest index first; counted as running.
    fn start(&mut self, jobs: usize) -> Vec<usize> {
        let mut started = Vec::new();
        while !self.stopped && self.running < jobs {
            let Some(node) = self.ready.pop() else { break };
            self.running += 1;
            started.push(node);
        }
        started
    }

    fn finish<F>(&mut self, node: usize, result: Result<T, E>, plan: &Plan<'_, F>) {
        self.running -= 1;
        match result {
            Ok(value) => {
                self.results[node] = Some(Outcome::Done(value));
                for &d in &plan.dependents[node] {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 && self.results[d].is_none() {
                        self.ready.push(d);
                    }
                }
                self.ready.sort_unstable_by(|a, b| b.cmp(a));
            }
            Err(e) => {
                self.results[node] = Some(Outcome::Failed(e));
                fail_dependents(node, &plan.dependents, &mut self.results);
                let results = &self.results;
                self.ready.retain(|r| results[*r].is_none());
                self.stopped |= !plan.keep_going;
            }
        }
    }
}

/// Runs `step` for every node of `graph` in `wanted`, each after those of its
/// dependencies that are wanted too succeeded (the others are taken as done).
/// Results are indexed like the graph's nodes; nodes not wanted are `None`.
/// `step` is told the results of nothing: it reads what it needs from shared
/// state its closure owns.
pub fn run<N, L, T, E, F>(
    graph: &Dag<N, L>,
    wanted: &Selection,
    jobs: usize,
    keep_going: bool,
    step: F,
) -> Result<Vec<Option<Outcome<T, E>>>, rayon::ThreadPoolBuildError>
where
    T: Send,
    E: Send,
    F: Fn(usize) -> Result<T, E> + Sync,
{
    let n = graph.len();
    let dependents: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let of = graph.dependents(i).iter().copied();
            of.filter(|d| wanted.contains(*d)).collect()
        })
        .collect();
    let waiting_on = |i: usize| {
        graph
            .deps(i)
            .iter()
            .filter(|(d, _)| wanted.contains(*d))
            .count()
    };
    let waiting: Vec<usize> = (0..n).map(waiting_on).collect();
    let mut ready: Vec<usize> = wanted.iter().filter(|&i| waiting[i] == 0).collect();
    ready.reverse();
    let plan = Plan {
        dependents,
        jobs: jobs.max(1),
        keep_going,
        step: &step,
    };
    let queue = Mutex::new(Queue {
        waiting,
        results: (0..n).map(|_| None).collect(),
        ready,
        running: 0,
        stopped: false,
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.jobs)
        .build()?;
    pool.in_place_scope(|scope| {
        let first = lock(&queue).start(plan.jobs);
        for node in first {
            let (plan, queue) = (&plan, &queue);
            scope.spawn(move |scope| work(scope, node, plan, queue));
        }
    });
    let mut results = queue
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .results;
    for (i, r) in results.iter_mut().enumerate() {
        if wanted.contains(i) && r.is_none() {
            *r = Some(Outcome::NotStarted);
        }
    }
    Ok(results)
}

/// Runs `node`, then the next ready step for as long as there is one; what
/// else became ready starts on workers of its own.
fn work<'s, T, E, F>(
    scope: &rayon::Scope<'s>,
    node: usize,
    plan: &'s Plan<'s, F>,
    queue: &'s Mutex<Queue<T, E>>,
) where
    T: Send,
    E: Send,
    F: Fn(usize) -> Result<T, E> + Sync,
{
    let mut node = Some(node);
    while let Some(this) = node {
        let result = (plan.step)(this);
        let mut q = lock(queue);
        q.finish(this, result, plan);
        let mut started = q.start(plan.jobs).into_iter();
        drop(q);
        node = started.next();
        for other in started {
            scope.spawn(move |scope| work(scope, other, plan, queue));
        }
    }
}

fn lock<T, E>(queue: &Mutex<Queue<T, E>>) -> std::sync::MutexGuard<'_, Queue<T, E>> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

fn fail_dependents<T, E>(
    node: usize,
    dependents: &[Vec<usize>],
    results: &mut [Option<Outcome<T, E>>],
) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        for &d in &dependents[n] {
            if results[d].is_none() {
                results[d] = Some(Outcome::DependencyFailed);
                stack.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn dag(deps: &[&[usize]]) -> Dag<(), ()> {
        let mut g = Dag::default();
        for ds in deps {
            g.push((), ds.iter().map(|d| (*d, ())).collect());
        }
        g
    }

    #[test]
    fn runs_dependencies_first() {
        // 0 <- 1 <- 2, and 3 alone
        let g = dag(&[&[], &[0], &[1], &[]]);
        let log = Mutex::new(Vec::new());
        let r = run(&g, &g.all(), 2, false, |n| {
            log.lock().unwrap().push(n);
            Ok::<_, ()>(n)
        })
        .unwrap();
        let log = log.into_inner().unwrap();
        let pos = |x| log.iter().position(|&y| y == x).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
        assert!(r.iter().all(|o| matches!(o, Some(Outcome::Done(_)))));
    }

    #[test]
    fn failure_fails_dependents_only_with_keep_going() {
        // 0 fails; 1 depends on 0; 2..6 are independent.
        let g = dag(&[&[], &[0], &[], &[], &[], &[]]);
        let ran = AtomicUsize::new(0);
        let r = run(&g, &g.all(), 1, true, |n| {
            ran.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                Err("boom")
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert!(matches!(r[0], Some(Outcome::Failed("boom"))));
        assert!(matches!(r[1], Some(Outcome::DependencyFailed)));
        assert!(r[2..].iter().all(|o| matches!(o, Some(Outcome::Done(())))));
        assert_eq!(ran.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn failure_stops_new_steps_by_default() {
        let g = dag(&[&[], &[0], &[], &[]]);
        let r = run(&g, &g.all(), 1, false, |n| {
            if n == 0 {
                Err(())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert!(matches!(r[0], Some(Outcome::Failed(()))));
        assert!(matches!(r[1], Some(Outcome::DependencyFailed)));
        assert!(matches!(r[2], Some(Outcome::NotStarted)));
        assert!(matches!(r[3], Some(Outcome::NotStarted)));
    }

    #[test]
    fn unwanted_nodes_do_not_run() {
        let g = dag(&[&[], &[0]]);
        let only_first = Selection::from_fn(2, |i| i == 0);
        let r = run(&g, &only_first, 2, false, |_| Ok::<_, ()>(())).unwrap();
        assert!(matches!(r[0], Some(Outcome::Done(()))));
        assert!(r[1].is_none());
    }
}
