//! `test` nodes and `bake test`: run after what they need, cached when they pass,
//! run again when what they test changes or when asked, reported as JUnit.

mod common;

use std::process::Command;

use common::{json_of, Project};

fn recipe(p: &Project, lib: &str) {
    p.write(
        "r.kdl",
        &format!(
            r#"
build "lib" {{
    script "echo {lib} > $out/v"
}}
test "good" {{
    input "lib"
    script "grep -q . $lib/v && echo checked > $out/result"
}}
test "bad" {{
    input "lib"
    script "echo 'the answer is wrong <&>'; exit 3"
}}
"#
        ),
    );
}

/// `bake test` with `--json` and a JUnit file: (exit status, JSON, summary line, JUnit XML).
fn test(p: &Project, args: &[&str]) -> (i32, serde_json::Value, String, String) {
    let mut all = vec!["test", "r.kdl", "--json", "--junit", "junit.xml"];
    all.extend_from_slice(args);
    let out = p.bake(&all);
    let summary = String::from_utf8_lossy(&out.stderr)
        .lines()
        .rfind(|l| l.starts_with("passed="))
        .unwrap_or_default()
        .to_string();
    let junit = std::fs::read_to_string(p.path("junit.xml")).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        json_of(&out),
        summary,
        junit,
    )
}

#[test]
fn tests_run_after_their_inputs_and_passes_are_cached() {
    let p = Project::new();
    recipe(&p, "one");
    let (code, json, summary, _) = test(&p, &[]);
    assert_eq!(code, 1, "a failing test fails the run");
    assert_eq!(summary, "passed=1 failed=1 cached=0");
    assert_eq!(json["passed"], serde_json::json!(["test:good"]));
    assert_eq!(json["failed"], serde_json::json!(["test:bad"]));
    // A pass is kept; a failure is not, so it runs again.
    let (_, json, summary, _) = test(&p, &[]);
    assert_eq!(summary, "passed=0 failed=1 cached=1");
    assert_eq!(json["cached"], serde_json::json!(["test:good"]));
    // Asked, it runs again anyway.
    let (_, _, summary, _) = test(&p, &["good", "--rerun"]);
    assert_eq!(summary, "passed=1 failed=0 cached=0");
    // What it tests changed: it runs again.
    recipe(&p, "two");
    let (_, json, _, _) = test(&p, &["good"]);
    assert_eq!(json["passed"], serde_json::json!(["test:good"]));
}

#[test]
fn build_does_not_run_tests_unless_named() {
    let p = Project::new();
    recipe(&p, "one");
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(common::ids(&json["built"]), ["lib"]);
    let plan = json_of(&p.bake(&["plan", "r.kdl", "--json"]));
    assert!(plan["build"].as_array().unwrap().is_empty(), "{plan}");
    let (code, json) = p.build("r.kdl", &["good"]);
    assert_eq!(code, 0);
    assert_eq!(common::ids(&json["built"]), ["test:good"]);
}

#[test]
fn junit_has_a_testcase_per_test_with_the_failure_log() {
    let p = Project::new();
    recipe(&p, "one");
    test(&p, &[]);
    let (_, _, _, junit) = test(&p, &[]);
    // Read back by a real XML parser, as CI systems read it.
    let check = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root.find("testsuite")
cases = {c.get("name"): c for c in suite.findall("testcase")}
assert set(cases) == {"test:good", "test:bad"}, cases
assert suite.get("tests") == "2" and suite.get("failures") == "1"
failure = cases["test:bad"].find("failure")
assert "the answer is wrong <&>" in failure.text, failure.text
assert "exited with status 3" in failure.get("message"), failure.get("message")
assert cases["test:good"].find("failure") is None
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", check, p.path("junit.xml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{junit}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_test_of_nothing_is_a_usage_error() {
    let p = Project::new();
    p.write("r.kdl", "build \"a\" {\n    script \"true\"\n}\n");
    let out = p.bake(&["test", "r.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("declares no test"));
    let out = p.bake(&["test", "r.kdl", "a"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_recipe_names_what_build_builds_by_default() {
    let p = Project::new();
    p.write(
        "r.kdl",
        "default \"a\"\nbuild \"a\" {\n    script \"echo a > $out/a\"\n}\nbuild \"b\" {\n    script \"echo b > $out/b\"\n}\n",
    );
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(common::ids(&json["built"]), ["a"]);
    let (_, json) = p.build("r.kdl", &["b"]);
    assert_eq!(common::ids(&json["built"]), ["b"]);
}
