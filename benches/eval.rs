//! `cargo bench --bench eval`: medians of `bake eval` on the keepalived recipe
//! (whole process) and on a generated recipe of 10,000 build nodes.

mod common;

fn main() {
    let (bake, gen) = common::binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let store = store.to_str().expect("utf-8 path");

    let keepalived = common::root().join("recipes/keepalived.kdl");
    let keepalived = keepalived.to_str().expect("utf-8 path");
    // One run to warm the stat cache of toolchain fingerprints, as any second run is.
    common::run(&bake, &["eval", keepalived, "--cache", store]);
    let t = common::time(&bake, &["eval", keepalived, "--cache", store], 21);
    println!(
        "eval recipes/keepalived.kdl (whole process): median {:.2} ms",
        t.as_secs_f64() * 1e3
    );

    let big = dir.path().join("big.kdl");
    common::generate(&gen, 10_000, &big);
    let big = big.to_str().expect("utf-8 path");
    let t = common::time(&bake, &["eval", big, "--cache", store], 7);
    println!(
        "eval of 10,000 build nodes (whole process): median {:.1} ms",
        t.as_secs_f64() * 1e3
    );
}
