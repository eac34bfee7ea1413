//! `cargo bench --bench build`: no-op `bake build` of a 10-node and of the
//! 10,000-node generated recipe (whole process), and the scheduler's overhead per
//! step. The 10,000-node store is kept under target/ (its first build runs 10,000
//! sandboxed steps: minutes), so later runs measure the no-op right away.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bake(bin: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run bake");
    assert!(status.success(), "bake {args:?} failed");
    start.elapsed()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "bake",
            "--example",
            "gen_recipe",
        ])
        .current_dir(root)
        .status()
        .expect("cargo build");
    assert!(status.success());
    let bin = root.join("target/release/bake");
    let gen = root.join("target/release/examples/gen_recipe");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    for n in [10usize, 10_000] {
        let recipe = dir.join(format!("gen-{n}.kdl"));
        let out = Command::new(&gen)
            .arg(n.to_string())
            .output()
            .expect("generate");
        std::fs::write(&recipe, out.stdout).expect("write recipe");
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
        let first = bake(&bin, &args);
        println!(
            "build of {n} nodes, first run in this store: {:.1} s",
            first.as_secs_f64()
        );
        let runs = if n == 10 { 21 } else { 5 };
        let t = median((0..runs).map(|_| bake(&bin, &args)).collect());
        println!(
            "no-op build of {n} nodes (whole process): median {:.1} ms",
            t.as_secs_f64() * 1e3
        );
    }
    // The scheduler alone: the 10,000-node DAG with steps that do nothing.
    let eval = bake::eval::evaluate(&dir.join("gen-10000.kdl"), &bake::eval::Options::default())
        .unwrap_or_else(|e| panic!("{}", e.message()));
    let deps: Vec<Vec<usize>> = eval
        .instances
        .iter()
        .map(|i| i.deps.iter().map(|d| d.instance).collect())
        .collect();
    let wanted = vec![true; deps.len()];
    let t = median(
        (0..5)
            .map(|_| {
                let start = Instant::now();
                bake::schedule::run(&deps, &wanted, 2, false, |_| Ok::<(), ()>(())).expect("pool");
                start.elapsed()
            })
            .collect(),
    );
    println!(
        "scheduler overhead per step (10,000 steps, -j 2): median {:.1} µs",
        t.as_secs_f64() * 1e6 / deps.len() as f64
    );
}
