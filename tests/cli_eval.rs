//! `bake eval` and `bake graph` as a user runs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bake(args: &[&str]) -> std::process::Output {
    let store = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_bake"))
        .args(args)
        .arg("--cache")
        .arg(store.path())
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn eval_json_matches_the_golden_file() {
    let out = bake(&["eval", "tests/recipes/small.kdl", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden: PathBuf = root().join("tests/golden/small.json");
    if std::env::var_os("BAKE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out.stdout).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    // The contract's shape, field by field.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &doc["derivations"][0];
    let fields: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["id", "name", "kind", "axes", "key", "inputs"]);
}

#[test]
fn eval_lists_one_instance_per_combination_of_used_axes() {
    let out = bake(&["eval", "tests/recipes/small.kdl"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(ids.iter().filter(|i| i.starts_with("lib@")).count(), 2);
    assert_eq!(ids.iter().filter(|i| i.starts_with("hello@")).count(), 4);
    assert!(ids.contains(&"hello@1.0/arm64"));
}

#[test]
fn a_recipe_error_exits_2_and_names_file_line_and_column() {
    let out = bake(&["eval", "tests/bad/03-unknown-field.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tests/bad/03-unknown-field.kdl:3:5"), "{err}");
    assert!(err.contains("unknown field of `build` `scrpt`"), "{err}");
    assert!(err.contains("did you mean `script`?"), "{err}");
}

#[test]
fn a_missing_recipe_exits_2() {
    let out = bake(&["eval", "tests/no-such-recipe.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read recipe"));
}

#[test]
fn graph_dot_renders_with_graphviz() {
    let out = bake(&["graph", "tests/recipes/small.kdl", "--dot"]);
    assert!(out.status.success());
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(
        dot.contains("\"lib@arm64\" -> \"hello@1.0/arm64\";"),
        "{dot}"
    );
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graphviz's `dot` is installed by ./setup");
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let svg = child.wait_with_output().unwrap();
    assert!(
        svg.status.success(),
        "{}",
        String::from_utf8_lossy(&svg.stderr)
    );
    let svg = String::from_utf8_lossy(&svg.stdout);
    assert!(
        svg.contains("<svg") && svg.contains("hello@1.1/x86&#45;64"),
        "{svg}"
    );
}
