//! `bake check` under variation: a step whose output depends on its environment
//! is reported different, with the file named; one that does not is the same.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::*;
use serde_json::Value;

/// A step per variation, each writing what that variation changes, and one
/// that depends on nothing.
const RECIPE: &str = r#"
source "pkg" {
    url "file://TARBALL"
    hash "sha256:SHA"
}
build "steady" {
    source "pkg"
    script "cat $(ls | sort) > $out/all; echo $JOBS >/dev/null; date >/dev/null"
}
build "host" {
    script "hostname > $out/name"
}
build "domain" {
    script "domainname > $out/name"
}
build "year" {
    script "date +%Y > $out/year"
}
build "kernel" {
    script "uname -r > $out/release"
}
build "jobs" {
    script "echo $JOBS > $out/jobs"
}
build "order" {
    source "pkg"
    script "find . -type f > $out/listing"
}
build "uid" {
    script "id -u > $out/uid"
}
build "cpus" {
    script "nproc > $out/cpus"
}
build "aslr" {
    script "grep -m1 '\\[heap\\]' /proc/self/maps | cut -d- -f1 > $out/heap"
}
"#;

/// Which file each variation-dependent step writes, and the variation.
const DEPENDENT: &[(&str, &str, &str)] = &[
    ("host", "name", "hostname"),
    ("domain", "name", "hostname"),
    ("year", "year", "time"),
    ("kernel", "release", "kernel"),
    ("jobs", "jobs", "jobs"),
    ("order", "listing", "dirorder"),
    ("uid", "uid", "uid"),
    ("cpus", "cpus", "cpus"),
    ("aslr", "heap", "aslr"),
];

fn project() -> Project {
    let p = Project::new();
    let files: Vec<(&str, String)> = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
        .iter()
        .map(|n| (*n, format!("{n}\n")))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let (tarball, sha) = p.tarball("pkg", &files);
    p.write(
        "r.kdl",
        &RECIPE
            .replace("TARBALL", tarball.to_str().unwrap())
            .replace("SHA", &sha),
    );
    p
}

fn check(p: &Project, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["check", "r.kdl", "--json"];
    all.extend_from_slice(args);
    let out = p.bake(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{err}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), json, err)
}

fn instance<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not checked: {json}"))
}

#[test]
fn every_variation_is_caught_and_a_steady_step_is_the_same() {
    let p = project();
    let (code, json, err) = check(&p, &[]);
    assert_eq!(code, 1, "{err}");
    let used: Vec<&str> = json["variations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        used,
        ["time", "hostname", "kernel", "jobs", "dirorder", "aslr", "uid", "cpus"],
        "every variation applies here (root, FUSE, faketime, two CPUs): {json}"
    );
    assert_eq!(instance(&json, "steady")["result"], "same", "{json}");
    for (id, file, _) in DEPENDENT {
        let i = instance(&json, id);
        assert_eq!(i["result"], "different", "{id}: {i}");
        assert_eq!(i["files"][0]["path"], *file, "{id}: {i}");
        let sizes = &i["files"][0]["sizes"];
        assert!(sizes[0].is_u64() && sizes[1].is_u64(), "{id}: {i}");
        assert!(!i["files"][0]["first"].as_str().unwrap().is_empty());
    }
    assert_eq!(json["same"], 1);
    assert_eq!(json["different"], DEPENDENT.len());
    assert_eq!(json["failed"], 0);
    assert_eq!(json["total"], DEPENDENT.len() + 1);
    // What each saw, as the report shows it.
    let first = |id: &str| {
        instance(&json, id)["files"][0]["first"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        first("host").contains("`localhost` and `bake-variant`"),
        "{}",
        first("host")
    );
    assert!(
        first("domain").contains("`(none)` and `variant.invalid`"),
        "{}",
        first("domain")
    );
    assert!(first("year").contains("and `2041`"), "{}", first("year"));
    assert!(first("kernel").contains("and `2.6."), "{}", first("kernel"));
    assert!(
        first("uid").contains("`30000` and `30001`"),
        "{}",
        first("uid")
    );
    assert!(
        err.contains("same=1 different=9 failed=0 total=10"),
        "{err}"
    );
    assert!(err.contains("varying  dirorder"), "{err}");
}

#[test]
fn each_variation_alone_changes_only_what_depends_on_it() {
    let p = project();
    for (_, _, variation) in DEPENDENT {
        let (code, json, err) = check(&p, &["--variations", variation, "--no-diffoscope"]);
        assert_eq!(code, 1, "{variation}: {err}");
        assert_eq!(json["variations"], serde_json::json!([variation]));
        for (id, _, v) in DEPENDENT {
            let expected = if v == variation { "different" } else { "same" };
            // Without the aslr variation, ASLR is on in both builds: the heap moves.
            if *id == "aslr" && expected == "same" {
                continue;
            }
            assert_eq!(
                instance(&json, id)["result"],
                expected,
                "{id} under {variation}: {json}"
            );
        }
    }
}

#[test]
fn no_variation_is_a_plain_rebuild_and_a_clean_recipe_passes() {
    let p = project();
    let (code, json, err) = check(&p, &["--variations", "none", "steady", "host", "uid"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["variations"], serde_json::json!([]));
    assert_eq!(json["same"], 3, "{json}");
    assert!(err.contains("same=3 different=0 failed=0 total=3"), "{err}");
    let (code, _, err) = check(&p, &["steady"]);
    assert_eq!(code, 0, "steady is the same under every variation: {err}");
}

#[test]
fn an_unknown_variation_is_a_usage_error() {
    let p = project();
    let out = p.bake(&["check", "r.kdl", "--variations", "time,moon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no variation `moon`") && err.contains("dirorder"),
        "{err}"
    );
}

#[test]
fn both_trees_and_the_diffoscope_report_stay_until_gc() {
    let p = project();
    let (_, json, err) = check(&p, &["year"]);
    let year = instance(&json, "year");
    let (build, rebuild) = (
        Path::new(year["build"].as_str().unwrap()).to_path_buf(),
        Path::new(year["rebuild"].as_str().unwrap()).to_path_buf(),
    );
    assert_eq!(fs::read_to_string(rebuild.join("year")).unwrap(), "2041\n");
    assert_ne!(fs::read_to_string(build.join("year")).unwrap(), "2041\n");
    let report = Path::new(
        year["diffoscope"]
            .as_str()
            .expect("diffoscope is installed here"),
    )
    .to_path_buf();
    let html = fs::read_to_string(&report).unwrap();
    assert!(html.contains("<html") && html.contains("year"), "{err}");
    assert!(
        err.contains(&format!("diffoscope:  {}", report.display())),
        "{err}"
    );
    // The rebuild's log is kept apart from the build's.
    let logs: Vec<String> = fs::read_dir(p.store().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(logs.iter().any(|l| l.ends_with(".rebuild.log")), "{logs:?}");
    let gc = p.bake(&["gc", "r.kdl"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(!rebuild.exists() && !report.exists(), "gc removes them");
    assert!(build.exists(), "the build itself is live");
}

#[test]
fn an_image_is_checked_under_every_variation() {
    let p = project();
    fs::create_dir_all(p.path("files/usr/lib/app")).unwrap();
    fs::write(p.path("files/usr/lib/app/conf"), "x=1\n").unwrap();
    let recipe = fs::read_to_string(p.path("r.kdl")).unwrap()
        + r#"
build "tree" {
    source "pkg"
    script "mkdir -p $out/usr/lib/app; cp $(ls | sort) $out/usr/lib/app/"
}
sysext "app" {
    input "tree"
    files "files"
    version "1"
    arch "x86-64"
}
"#;
    p.write("r.kdl", &recipe);
    let (code, json, err) = check(&p, &["sysext:app"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(instance(&json, "sysext:app")["result"], "same");
    assert_eq!(instance(&json, "tree")["result"], "same");
    assert_eq!(json["total"], 2);
}

/// The mount points below `dir`, from this process's mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| Path::new(m).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Detaches what a failed test left mounted, so that its directory goes.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for m in mounts_under(&self.0) {
            let _ = std::process::Command::new("umount")
                .args(["-l", &m])
                .status();
        }
    }
}

#[test]
fn a_check_killed_with_its_disorderfs_leaves_a_store_the_next_bake_opens() {
    let p = project();
    let recipe = fs::read_to_string(p.path("r.kdl")).unwrap()
        + r#"
build "stuck" {
    source "pkg"
    script "if grep -q disorderfs /proc/self/mountinfo; then sleep 60; fi; ls > $out/listing"
}
"#;
    p.write("r.kdl", &recipe);
    let _unmount = Unmount(p.store());
    // Its own process group, so that the kill takes disorderfs with it, as a
    // CI runner's timeout or a closed session does: nothing unmounts.
    let mut child = p
        .bake_cmd(&["check", "r.kdl", "stuck", "--variations", "dirorder"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let store = p.store();
    let mounted = wait_for(60, || {
        store.join("tmp").is_dir() && !mounts_under(&store).is_empty()
    });
    // SAFETY: killpg with the child's own group.
    unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(mounted, "the rebuild never mounted its disorderfs");
    let left = mounts_under(&store);
    assert!(!left.is_empty(), "the kill was meant to leave the mount");
    assert!(
        fs::read_dir(&left[0]).is_err(),
        "a dead FUSE mount fails every look"
    );
    let (code, json) = p.build("r.kdl", &["steady"]);
    assert_eq!(code, 0, "the store opens and builds: {json}");
    assert_eq!(mounts_under(&store), Vec::<String>::new());
    assert_eq!(
        fs::read_dir(store.join("tmp")).unwrap().count(),
        0,
        "the killed check's scratch is gone"
    );
}
