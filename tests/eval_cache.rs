//! The evaluation cache and the list of known keys never serve a stale answer:
//! each test first shows the cache is used (its entry is not rewritten), then
//! changes a file it was made from so that size and mtime stay the same (an
//! edit within the same second), and sees the change.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::Project;

/// The evaluation cache's entries in the project's store.
fn entries(p: &Project) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(p.store().join("evals")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none())
        .collect();
    out.sort();
    out
}

/// The inode of the one cache entry: a rewrite (a miss) gives a new one.
fn entry_ino(p: &Project) -> u64 {
    let e = entries(p);
    assert_eq!(e.len(), 1, "one cache entry: {e:?}");
    std::fs::metadata(&e[0]).unwrap().ino()
}

/// Dates `path` ten seconds back and waits out the timestamp tick, so an
/// evaluation reading it may be kept.
fn age(path: &Path) -> SystemTime {
    let t = SystemTime::now() - Duration::from_secs(10);
    set_mtime(path, t);
    std::thread::sleep(Duration::from_millis(250));
    t
}

fn set_mtime(path: &Path, t: SystemTime) {
    // Read-only opens work for directories too; the owner may set the times.
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// Rewrites `path` with `text` of the same length and puts its mtime back.
fn edit_same_size(path: &Path, text: &str, mtime: SystemTime) {
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64, "same size");
    std::fs::write(path, text).unwrap();
    set_mtime(path, mtime);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
}

/// The eval key of `id`, from `bake eval --json`.
fn key(p: &Project, recipe: &str, id: &str) -> String {
    let out = p.bake(&["eval", recipe, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {json}"))["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Evaluates twice (the second from the cache), edits with `edit`, and
/// returns the keys of `id` before and after.
fn across_edit(p: &Project, id: &str, edit: impl FnOnce()) -> (String, String) {
    let first = key(p, "r.kdl", id);
    let ino = entry_ino(p);
    assert_eq!(key(p, "r.kdl", id), first);
    assert_eq!(
        entry_ino(p),
        ino,
        "the second evaluation came from the cache"
    );
    edit();
    let after = key(p, "r.kdl", id);
    // Evaluated afresh, and what is kept now is the new evaluation.
    assert_eq!(key(p, "r.kdl", id), after);
    (first, after)
}

#[test]
fn recipe_edited_within_the_same_second() {
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        "build \"a\" {\n    script \"echo 1 > $out/x\"\n}\n",
    );
    let t = age(&r);
    let (before, after) = across_edit(&p, "a", || {
        edit_same_size(&r, "build \"a\" {\n    script \"echo 2 > $out/x\"\n}\n", t)
    });
    assert_ne!(before, after);
}

#[test]
fn imported_file_edited_within_the_same_second() {
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        "import \"lib/b.kdl\"\nbuild \"a\" {\n    input \"b\"\n    script \"cp $b/x $out/x\"\n}\n",
    );
    let lib = p.write(
        "lib/b.kdl",
        "build \"b\" {\n    script \"echo 1 > $out/x\"\n}\n",
    );
    age(&r);
    let t = age(&lib);
    let (before, after) = across_edit(&p, "a", || {
        edit_same_size(
            &lib,
            "build \"b\" {\n    script \"echo 2 > $out/x\"\n}\n",
            t,
        )
    });
    assert_ne!(before, after, "a's key follows its input's recipe");
}

#[test]
fn patch_edited_within_the_same_second() {
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        "build \"a\" {\n    patch \"fix.patch\"\n    script \"true\"\n}\n",
    );
    let patch = p.write("fix.patch", "one\n");
    age(&r);
    let t = age(&patch);
    let (before, after) = across_edit(&p, "a", || edit_same_size(&patch, "two\n", t));
    assert_ne!(before, after);
}

#[test]
fn file_added_to_a_files_directory() {
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        r#"build "app" {
    script "mkdir -p $out/usr/bin && echo app > $out/usr/bin/app"
}
sysext "app" {
    input "app"
    files "files"
    version "1"
    arch "x86-64"
}
"#,
    );
    let kept = p.write("files/usr/share/app/a", "a\n");
    age(&r);
    age(&kept);
    for d in [
        "files",
        "files/usr",
        "files/usr/share",
        "files/usr/share/app",
    ] {
        age(&p.path(d));
    }
    let (before, after) = across_edit(&p, "sysext:app", || {
        p.write("files/usr/share/app/b", "b\n");
    });
    assert_ne!(before, after);
}

#[test]
fn recipe_replaced_by_another_file() {
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        "build \"a\" {\n    script \"echo 1 > $out/x\"\n}\n",
    );
    let t = age(&r);
    let (before, after) = across_edit(&p, "a", || {
        let new = p.write(
            "new.kdl",
            "build \"a\" {\n    script \"echo 2 > $out/x\"\n}\n",
        );
        set_mtime(&new, t);
        std::fs::rename(&new, &r).unwrap();
    });
    assert_ne!(before, after);
}

#[test]
fn fresh_recipe_is_not_kept() {
    // Written just now: a later edit could carry the same times, so the
    // evaluation is not kept and each run evaluates.
    let p = Project::new();
    p.write(
        "r.kdl",
        "build \"a\" {\n    script \"echo 1 > $out/x\"\n}\n",
    );
    key(&p, "r.kdl", "a");
    assert!(entries(&p).is_empty(), "{:?}", entries(&p));
}

#[test]
fn no_op_build_sees_a_removed_output() {
    // The list of known keys is used on a no-op run; an output gone from the
    // store is built again all the same.
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        "build \"a\" {\n    script \"echo 1 > $out/x\"\n}\n",
    );
    age(&r);
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(common::ids(&json["built"]), ["a"]);
    std::thread::sleep(Duration::from_millis(250));
    let (_, json) = p.build("r.kdl", &[]);
    assert_eq!(common::ids(&json["cached"]), ["a"]);
    let known: Vec<PathBuf> = std::fs::read_dir(p.store().join("evals"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "keys"))
        .collect();
    assert_eq!(known.len(), 1, "the known keys are kept");
    let objects = p.store().join("objects");
    for o in std::fs::read_dir(&objects).unwrap() {
        let o = o.unwrap().path();
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(&o)
            .status();
        std::fs::remove_dir_all(&o).unwrap();
    }
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(common::ids(&json["built"]), ["a"]);
}

#[test]
fn dependent_rebuilds_when_an_input_rebuilds_differently() {
    // Build keys are remembered by eval key and the inputs' outputs: an input
    // rebuilt to other bytes (same eval key) must give its dependent a new key.
    let p = Project::new();
    let r = p.write(
        "r.kdl",
        "build \"a\" {\n    script \"head -c 16 /dev/urandom > $out/x\"\n}\n\
         build \"b\" {\n    input \"a\"\n    script \"cp $a/x $out/x\"\n}\n",
    );
    age(&r);
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    let a = PathBuf::from(json["outputs"]["a"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(250));
    // Two no-op runs: the second with the build keys remembered by the first.
    for _ in 0..2 {
        let (_, json) = p.build("r.kdl", &[]);
        assert_eq!(common::ids(&json["cached"]), ["a", "b"]);
    }
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&a)
        .status();
    std::fs::remove_dir_all(&a).unwrap();
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(common::ids(&json["built"]), ["a", "b"]);
}
