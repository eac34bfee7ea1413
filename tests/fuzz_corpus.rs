//! Replays the fuzzing corpora (fuzz/corpus/) and every crash the fuzzers found
//! (fuzz/regressions/) through what the fuzz targets call: campaigns run by hand
//! (`cargo +nightly fuzz run parse_eval`), CI keeps what they learned.

use std::fs;
use std::path::{Path, PathBuf};

use bake::fetch::unpack::{unpack_archive, UnpackLimits};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|d| fs::read_dir(root.join(d).join(target)).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_recipe_input_evaluates_or_fails_cleanly() {
    let files = inputs("parse_eval");
    assert!(files.len() >= 50, "the corpus has {} inputs", files.len());
    for f in files {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipe.kdl");
        fs::copy(&f, &path).unwrap();
        let _ = bake::eval::evaluate(&path, &bake::eval::Options::default());
    }
}

#[test]
fn every_archive_input_unpacks_inside_or_fails_cleanly() {
    let files = inputs("unpack");
    assert!(files.len() >= 8, "the corpus has {} inputs", files.len());
    let limits = UnpackLimits {
        bytes: 64 << 20,
        ratio: 1000,
    };
    for f in files {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("inside/dest");
        let _ = unpack_archive(&f, &dest, 0, &limits);
        let stray: Vec<_> = fs::read_dir(dir.path().join("inside"))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            stray.iter().all(|n| n == "dest"),
            "{}: wrote outside: {stray:?}",
            f.display()
        );
    }
}
