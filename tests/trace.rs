//! `bake build --trace FILE` and `--critical-path`.

mod common;

use common::Project;

const RECIPE: &str = r#"
build "a" {
    script "sleep 0.3; echo a > $out/a"
}
build "b" {
    input "a"
    script "sleep 0.3; cp $a/a $out/b"
}
build "c" {
    script "echo c > $out/c"
}
"#;

/// The slices (`ph` X) of a trace, by name.
fn slices(trace: &serde_json::Value) -> Vec<&serde_json::Value> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "eval")
        .collect()
}

fn slice<'a>(trace: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    slices(trace)
        .into_iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no slice {name} in {trace}"))
}

#[test]
fn trace_has_a_slice_per_step_and_marks_cached() {
    let p = Project::new();
    p.write("r.kdl", RECIPE);
    let out = p.bake(&["build", "r.kdl", "-j", "2", "--trace", "t.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("t.json")).unwrap()).unwrap();
    assert_eq!(slices(&trace).len(), 3, "{trace}");
    let (a, b) = (slice(&trace, "a"), slice(&trace, "b"));
    for s in [a, b, slice(&trace, "c")] {
        assert_eq!(s["cat"], "built");
        assert!(s["tid"].as_u64().unwrap() >= 2, "a worker lane: {s}");
    }
    let end_a = a["ts"].as_f64().unwrap() + a["dur"].as_f64().unwrap();
    assert!(b["ts"].as_f64().unwrap() >= end_a, "b after a: {a} {b}");
    assert!(a["dur"].as_f64().unwrap() >= 300_000.0, "in µs: {a}");
    // The critical path is the chain a -> b, printed at the end.
    assert!(
        stderr.contains("critical path:") && stderr.contains(": a (") && stderr.contains("-> b ("),
        "{stderr}"
    );

    // A second build runs nothing: every instance is marked cached.
    let out = p.bake(&["build", "r.kdl", "--trace", "t2.json"]);
    assert!(out.status.success());
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("t2.json")).unwrap()).unwrap();
    assert!(slices(&trace).is_empty(), "{trace}");
    let mut cached: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cat"] == "cached")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    cached.sort();
    assert_eq!(cached, ["a", "b", "c"]);
}

#[test]
fn critical_path_alone() {
    let p = Project::new();
    p.write("r.kdl", RECIPE);
    let out = p.bake(&["build", "r.kdl", "-j", "1", "--critical-path"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("critical path:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("2 step(s): a (") && line.contains("-> b ("),
        "{line}"
    );
    assert!(!line.contains("c ("), "{line}");
}

#[test]
fn a_long_critical_path_is_shown_by_its_ends_and_longest_steps() {
    let p = Project::new();
    let mut recipe = String::new();
    for i in 0..20 {
        let input = if i > 0 {
            format!("input \"s{}\"", i - 1)
        } else {
            String::new()
        };
        // s9 is the one slow step, in the middle of the chain.
        let nap = if i == 9 { "sleep 0.4; " } else { "" };
        recipe.push_str(&format!(
            "build \"s{i}\" {{\n    {input}\n    script \"{nap}echo {i} > $out/s\"\n}}\n"
        ));
    }
    p.write("r.kdl", &recipe);
    let out = p.bake(&["build", "r.kdl", "--critical-path"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let at = stderr
        .find("critical path:")
        .unwrap_or_else(|| panic!("{stderr}"));
    let mut lines = stderr[at..].lines();
    let path = lines.next().unwrap();
    assert!(path.contains("20 step(s): s0 ("), "{path}");
    assert!(path.contains("s3 (") && !path.contains("s4 ("), "{path}");
    assert!(
        path.contains("-> [12 more, ") && path.contains("-> s16 ("),
        "{path}"
    );
    assert!(path.contains("-> s19 ("), "{path}");
    let longest = lines.next().unwrap();
    assert!(longest.starts_with("  longest on it: s9 ("), "{longest}");
    assert_eq!(longest.split(", ").count(), 5, "{longest}");
}
