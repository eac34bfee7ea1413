//! What both benchmarks need: the release binaries, and timing whole processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds bake and the recipe generator in release mode; returns (bake, gen_recipe).
pub fn binaries() -> (PathBuf, PathBuf) {
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
        .current_dir(root())
        .status()
        .expect("cargo build");
    assert!(status.success());
    (
        root().join("target/release/bake"),
        root().join("target/release/examples/gen_recipe"),
    )
}

/// Writes the generated recipe of `nodes` build nodes to `path`.
pub fn generate(gen: &Path, nodes: usize, path: &Path) {
    let out = Command::new(gen)
        .arg(nodes.to_string())
        .output()
        .expect("generate");
    std::fs::write(path, out.stdout).expect("write recipe");
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One run of `bin ARGS`, which must succeed.
pub fn run(bin: &Path, args: &[&str]) -> Duration {
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

/// The median of `runs` runs.
pub fn time(bin: &Path, args: &[&str], runs: usize) -> Duration {
    median((0..runs).map(|_| run(bin, args)).collect())
}
