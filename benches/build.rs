//! `cargo bench --bench build`: no-op `bake build` of a 10-node and of the
//! 10,000-node generated recipe (whole process), and the scheduler's overhead per
//! step. The 10,000-node store is kept under target/ (its first build runs 10,000
//! sandboxed steps: minutes), so later runs measure the no-op right away.

use std::time::Instant;

mod common;

fn main() {
    let (bin, gen) = common::binaries();
    let dir = common::root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    for n in [10usize, 10_000] {
        let recipe = dir.join(format!("gen-{n}.kdl"));
        common::generate(&gen, n, &recipe);
        let store = dir.join(format!("store-{n}"));
        let links = dir.join(format!("out-{n}"));
        let args = [
            "build",
            recipe.to_str().expect("utf-8"),
            "--cache",
            store.to_str().expect("utf-8"),
            "--out-link",
            links.to_str().expect("utf-8"),
        ];
        let first = common::run(&bin, &args);
        println!(
            "build of {n} nodes, first run in this store: {:.1} s",
            first.as_secs_f64()
        );
        let runs = if n == 10 { 21 } else { 5 };
        let t = common::time(&bin, &args, runs);
        println!(
            "no-op build of {n} nodes (whole process): median {:.1} ms",
            t.as_secs_f64() * 1e3
        );
    }
    // The scheduler alone: the 10,000-node DAG with steps that do nothing.
    let eval = bake::eval::evaluate(&dir.join("gen-10000.kdl"), &bake::eval::Options::default())
        .unwrap_or_else(|e| panic!("{}", e.message()));
    let wanted = eval.graph.all();
    let t = common::median(
        (0..5)
            .map(|_| {
                let start = Instant::now();
                bake::schedule::run(&eval.graph, &wanted, 2, false, |_| Ok::<(), ()>(()))
                    .expect("pool");
                start.elapsed()
            })
            .collect(),
    );
    println!(
        "scheduler overhead per step (10,000 steps, -j 2): median {:.1} µs",
        t.as_secs_f64() * 1e6 / eval.graph.len() as f64
    );
}
