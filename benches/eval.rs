//! `cargo bench --bench eval`: medians of `bake eval` on the keepalived recipe
//! (whole process) and on a generated recipe of 10,000 build nodes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_process(bake: &Path, args: &[&str], runs: usize) -> Duration {
    let samples = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(bake)
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run bake");
            assert!(status.success(), "bake {args:?} failed");
            start.elapsed()
        })
        .collect();
    median(samples)
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
    let bake = root.join("target/release/bake");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let store = store.to_str().expect("utf-8 path");

    let keepalived = root.join("recipes/keepalived.kdl");
    let keepalived = keepalived.to_str().expect("utf-8 path");
    // One run to warm the stat cache of toolchain fingerprints, as any second run is.
    time_process(&bake, &["eval", keepalived, "--cache", store], 1);
    let t = time_process(&bake, &["eval", keepalived, "--cache", store], 21);
    println!(
        "eval recipes/keepalived.kdl (whole process): median {:.2} ms",
        t.as_secs_f64() * 1e3
    );

    let big = dir.path().join("big.kdl");
    let out = Command::new(root.join("target/release/examples/gen_recipe"))
        .arg("10000")
        .output()
        .expect("generate");
    std::fs::write(&big, out.stdout).expect("write recipe");
    let big = big.to_str().expect("utf-8 path");
    let t = time_process(&bake, &["eval", big, "--cache", store], 7);
    println!(
        "eval of 10,000 build nodes (whole process): median {:.1} ms",
        t.as_secs_f64() * 1e3
    );
}
