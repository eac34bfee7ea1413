//! The catalogue of bad recipes in tests/bad: each file's first line says the
//! message it must produce and the file:line:column it must point at.

use std::path::{Path, PathBuf};

use bake::eval::{evaluate, Options};

struct Case {
    recipe: PathBuf,
    location: String,
    message: String,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|p| {
            let recipe = if p.is_dir() { p.join("main.kdl") } else { p };
            let text = std::fs::read_to_string(&recipe).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("// expect: "))
                .unwrap_or_else(|| panic!("{} has no `// expect:` line", recipe.display()));
            let (location, message) = expect.split_once(' ').unwrap();
            Case {
                recipe,
                location: location.to_string(),
                message: message.to_string(),
            }
        })
        .collect()
}

#[test]
fn every_bad_recipe_is_reported_at_its_place() {
    let cases = cases();
    assert!(cases.len() >= 25, "the catalogue has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let report = match evaluate(&case.recipe, &Options::default()) {
            Ok(_) => {
                failures.push(format!(
                    "{}: evaluated without error",
                    case.recipe.display()
                ));
                continue;
            }
            Err(r) => r,
        };
        let loc = report
            .location()
            .expect("every recipe error has a location");
        let file = Path::new(&loc.file).file_name().unwrap().to_string_lossy();
        let got = format!("{file}:{}:{}", loc.line, loc.col);
        if got != case.location || !report.message().contains(&case.message) {
            failures.push(format!(
                "{}:\n  expected {} {}\n  got      {got} {}",
                case.recipe.display(),
                case.location,
                case.message,
                report.message()
            ));
        }
        assert!(
            report.label_texts().next().is_some(),
            "{}: no label",
            case.recipe.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn near_names_get_a_did_you_mean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    for (file, suggestion) in [
        ("02-unknown-node.kdl", "did you mean `build`?"),
        ("03-unknown-field.kdl", "did you mean `script`?"),
        ("10-unknown-input.kdl", "did you mean `openssl`?"),
        ("15-unknown-axis.kdl", "did you mean `version`?"),
    ] {
        let report = evaluate(&dir.join(file), &Options::default())
            .err()
            .unwrap();
        assert_eq!(report.help_text(), Some(suggestion), "{file}");
    }
}

#[test]
fn a_duplicate_across_files_shows_both_places() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad/36-duplicate-across-imports");
    let report = evaluate(&dir.join("main.kdl"), &Options::default())
        .err()
        .unwrap();
    let labels: Vec<&str> = report.label_texts().collect();
    assert_eq!(
        labels,
        vec![
            "toolchain `musl` defined again here",
            "toolchain `musl` first defined here"
        ]
    );
}

#[test]
fn a_dependency_cycle_labels_every_step() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let report = evaluate(&dir.join("20-dependency-cycle.kdl"), &Options::default())
        .err()
        .unwrap();
    let labels: Vec<&str> = report.label_texts().collect();
    assert_eq!(labels, vec!["a needs b", "b needs c", "c needs a"]);
}

#[test]
fn a_recipe_nested_past_the_parsers_stack_is_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.kdl");
    // 1,281 levels in about 5 KB overflowed the KDL parser's stack (SIGABRT).
    std::fs::write(&path, "a{".repeat(1281) + &"}".repeat(1281)).unwrap();
    let report = match evaluate(&path, &Options::default()) {
        Ok(_) => panic!("evaluated without error"),
        Err(r) => r,
    };
    assert!(report.message().contains("nested deeper than 64"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bake"))
        .args(["eval", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
