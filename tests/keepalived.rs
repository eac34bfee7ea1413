//! The main job: static keepalived 2.3.4 and 2.3.3 for x86-64 and arm64 from
//! recipes/keepalived.kdl, its images and release, real keepalived processes.
//! Slow (minutes from a cold store): every test is named slow_* so
//! `cargo test -- --skip slow_` (or `BAKE_SKIP_SLOW=1 ./test`) leaves them out.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{bake_repo, elf_facts, ids, json_of, root, same_ids, shared_store};

const IDS: [(&str, &str, &str); 4] = [
    ("keepalived@2.3.4/x86-64", "2.3.4", "x86-64"),
    ("keepalived@2.3.4/arm64", "2.3.4", "arm64"),
    ("keepalived@2.3.3/x86-64", "2.3.3", "x86-64"),
    ("keepalived@2.3.3/arm64", "2.3.3", "arm64"),
];

/// Every test here needs the matrix built; the first to get here builds it.
fn build_matrix() -> serde_json::Value {
    static BUILT: Mutex<Option<serde_json::Value>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(json) = built.as_ref() {
        return json.clone();
    }
    let out = bake_repo(&[
        "build",
        "recipes/keepalived.kdl",
        "--json",
        "--out-link",
        "target/test-out",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = json_of(&out);
    *built = Some(json.clone());
    json
}

fn keepalived(json: &serde_json::Value, id: &str) -> PathBuf {
    Path::new(
        json["outputs"][id]
            .as_str()
            .unwrap_or_else(|| panic!("no output for {id}")),
    )
    .join("usr/bin/keepalived")
}

/// Runs `keepalived ARGS` (under qemu for arm64) in a fresh network namespace
/// holding a veth named bake0, which the sample configuration uses.
fn run_keepalived(bin: &Path, arch: &str, args: &str) -> std::process::Output {
    let runner = if arch == "arm64" {
        "qemu-aarch64-static "
    } else {
        ""
    };
    let script = format!(
        "ip link add bake0 type veth peer name bake1 && ip link set bake0 up && {runner}{} {args}",
        bin.display()
    );
    Command::new("timeout")
        .args(["60", "unshare", "-n", "sh", "-c", &script])
        .output()
        .unwrap()
}

#[test]
fn slow_keepalived_matrix_is_static_and_passes_its_checks() {
    let json = build_matrix();
    let sample = root().join("tests/samples/keepalived.conf");
    let broken = std::env::temp_dir().join(format!("bake-broken-{}.conf", std::process::id()));
    fs::write(
        &broken,
        fs::read_to_string(&sample)
            .unwrap()
            .replace("lb_algo rr", "lb_algo no-such-algo"),
    )
    .unwrap();
    for (id, version, arch) in IDS {
        let bin = keepalived(&json, id);
        let out_dir = bin.parent().unwrap().parent().unwrap();
        assert!(!out_dir.join("sbin").exists(), "{id} ships usr/sbin");
        let (machine, interp, needed) = elf_facts(&bin);
        let expected = if arch == "arm64" {
            "AArch64"
        } else {
            "Advanced Micro Devices X86-64"
        };
        assert_eq!(machine, expected, "{id}");
        assert!(!interp && !needed, "{id} is not static");
        let v = run_keepalived(&bin, arch, "--version");
        let text =
            String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
        assert!(
            text.contains(&format!("Keepalived v{version} ")),
            "{id}: {text}"
        );
        for feature in ["VRRP_AUTH", "LVS", "BFD", "JSON", "REGEX", "LIBNL3"] {
            assert!(text.contains(feature), "{id} lacks {feature}: {text}");
        }
        let t = run_keepalived(&bin, arch, &format!("-t -f {}", sample.display()));
        assert!(
            t.status.success(),
            "{id} -t: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        let bad = run_keepalived(&bin, arch, &format!("-t -f {}", broken.display()));
        assert!(
            !bad.status.success(),
            "{id} accepted a broken configuration"
        );
    }
    let _ = fs::remove_file(&broken);
    // OpenSSL is built once per arch and shared by both versions.
    let eval = json_of(&bake_repo(&["eval", "recipes/keepalived.kdl", "--json"]));
    let inputs = |id: &str| -> Vec<String> {
        eval["derivations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(inputs("keepalived@2.3.4/arm64").contains(&"openssl@arm64".to_string()));
    assert!(inputs("keepalived@2.3.3/arm64").contains(&"openssl@arm64".to_string()));
    assert_ne!(
        json["outputs"]["openssl@x86-64"],
        json["outputs"]["openssl@arm64"]
    );
    // A second build builds nothing.
    let again = json_of(&bake_repo(&["build", "recipes/keepalived.kdl", "--json"]));
    assert!(ids(&again["built"]).is_empty(), "{again}");
}

/// A copy of the recipes and toolchains (zig from the checkout's .venv) to edit.
fn edited_copy(edit: impl Fn(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["recipes", "toolchains"] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(root().join(sub))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::os::unix::fs::symlink(root().join(".venv"), dir.path().join(".venv")).unwrap();
    // A repository of its own: files a recipe uses must be inside one.
    fs::create_dir(dir.path().join(".git")).unwrap();
    edit(dir.path());
    dir
}

fn planned(dir: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_bake"))
        .args(["plan", "recipes/keepalived.kdl", "--json"])
        .env("BAKE_CACHE", shared_store())
        .current_dir(dir)
        .output()
        .unwrap();
    let json = json_of(&out);
    let mut v: Vec<String> = json["build"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn slow_keepalived_changes_rebuild_only_what_they_reach() {
    build_matrix();
    assert!(
        planned(edited_copy(|_| {}).path()).is_empty(),
        "an unchanged copy plans nothing"
    );
    // Flags for the arm64 toolchain only.
    let arm = edited_copy(|d| {
        edit(
            &d.join("toolchains/musl.kdl"),
            "    cache ",
            "    cflags \"-fno-plt\" arch=\"arm64\"\n    cache ",
        );
    });
    let plan = planned(arm.path());
    assert!(!plan.is_empty());
    for id in &plan {
        assert!(
            id.ends_with("arm64") || id == "release:keepalived",
            "{id} rebuilt for an arm64 change"
        );
    }
    for id in [
        "openssl@arm64",
        "libnl@arm64",
        "pcre2@arm64",
        "keepalived@2.3.4/arm64",
        "keepalived@2.3.3/arm64",
    ] {
        assert!(plan.contains(&id.to_string()), "{id} not rebuilt: {plan:?}");
    }
    // A script of its own for 2.3.3: the old one stays 2.3.4's, word for word.
    let v233 = edited_copy(|d| {
        let path = d.join("recipes/keepalived.kdl");
        let text = fs::read_to_string(&path).unwrap();
        let start = text.find("build \"keepalived\"").unwrap();
        let open = start + text[start..].find("    script #\"\"\"").unwrap();
        let close = open + text[open..].find("\"\"\"#\n").unwrap() + 5;
        let script = &text[open..close];
        let old = script.replacen(
            "    script #\"\"\"",
            "    script version=\"2.3.4\" #\"\"\"",
            1,
        );
        let new = script
            .replacen(
                "    script #\"\"\"",
                "    script version=\"2.3.3\" #\"\"\"",
                1,
            )
            .replacen("make -j\"$JOBS\"", "make -j\"$JOBS\" V=1", 1);
        fs::write(
            &path,
            format!("{}{old}{new}{}", &text[..open], &text[close..]),
        )
        .unwrap();
    });
    let plan = planned(v233.path());
    assert_eq!(
        plan,
        [
            "keepalived@2.3.3/arm64",
            "keepalived@2.3.3/x86-64",
            "release:keepalived",
            "sysext:keepalived@2.3.3/arm64",
            "sysext:keepalived@2.3.3/x86-64",
        ]
    );
}

#[test]
fn slow_keepalived_images_merge_and_publish() {
    build_matrix();
    let dir = tempfile::tempdir().unwrap();
    let pub_dir = dir.path().join("pub");
    let out = bake_repo(&[
        "release",
        "recipes/keepalived.kdl",
        "--out",
        pub_dir.to_str().unwrap(),
        "--base-url",
        "http://127.0.0.1:8080/extensions/keepalived",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&pub_dir)
        .output()
        .unwrap();
    assert!(check.status.success());
    assert_eq!(String::from_utf8_lossy(&check.stdout).lines().count(), 4);
    let image = pub_dir.join("keepalived-v2.3.4-x86-64.raw");
    let listing = Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(&image)
        .output()
        .unwrap();
    let mut files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "/usr",
            "/usr/bin",
            "/usr/bin/keepalived",
            "/usr/lib",
            "/usr/lib/extension-release.d",
            "/usr/lib/extension-release.d/extension-release.keepalived",
            "/usr/lib/systemd",
            "/usr/lib/systemd/system",
            "/usr/lib/systemd/system/keepalived.service",
            "/usr/lib/systemd/system/multi-user.target.d",
            "/usr/lib/systemd/system/multi-user.target.d/10-keepalived.conf",
        ]
    );
    let ign: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(pub_dir.join("keepalived-v2.3.4-x86-64.ign")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ign["storage"]["files"][0]["contents"]["source"],
        "http://127.0.0.1:8080/extensions/keepalived/keepalived-v2.3.4-x86-64.raw"
    );
    // Merged on this (x86-64) host: keepalived is there and runs; arm64 is refused.
    let merge = |file: &str| {
        common::merge_and_run(
            &pub_dir.join(file),
            "keepalived",
            dir.path(),
            "usr/bin/keepalived --version",
        )
    };
    let (ran, log) = merge("keepalived-v2.3.4-x86-64.raw");
    assert!(ran.starts_with("Keepalived v2.3.4"), "{log}");
    let (ran, log) = merge("keepalived-v2.3.4-arm64.raw");
    assert_eq!(ran, "refused", "{log}");
}

#[test]
fn slow_keepalived_tests_pass_on_both_arches_and_are_not_rerun() {
    build_matrix();
    let junit = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keepalived-junit.xml");
    let out = bake_repo(&[
        "test",
        "recipes/keepalived.kdl",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let json = json_of(&out);
    let ran: Vec<String> = ids(&json["passed"])
        .into_iter()
        .chain(ids(&json["cached"]))
        .collect();
    assert_eq!(
        ran.len(),
        10,
        "failover and samples for each version and arch, and the two systemd hosts: {json}"
    );
    assert!(ids(&json["failed"]).is_empty());
    let xml = fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 10, "{xml}");
    // The same images again: nothing runs.
    let again = bake_repo(&["test", "recipes/keepalived.kdl", "--json"]);
    let json = json_of(&again);
    assert_eq!(ids(&json["cached"]).len(), 10, "{json}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("passed=0 failed=0 cached=10"));
}

#[test]
fn slow_keepalived_samples_test_catches_the_unpatched_2_3_3_loop() {
    build_matrix();
    let copy = edited_copy(|d| {
        edit(
            &d.join("recipes/keepalived.kdl"),
            "    patch \"patches/keepalived-2.3.3-smtp-check-loop.patch\" version=\"2.3.3\"\n",
            "",
        )
    });
    let out = Command::new(env!("CARGO_BIN_EXE_bake"))
        .args([
            "test",
            "recipes/keepalived.kdl",
            "test:samples@2.3.3/x86-64",
        ])
        .env("BAKE_CACHE", shared_store())
        .current_dir(copy.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("DIFFERS  keepalived.conf.SMTP_CHECK: hang"),
        "the hang is named: {err}"
    );
    assert!(err.contains("passed=0 failed=1 cached=0"), "{err}");
}

#[test]
fn slow_keepalived_matrix_and_images_rebuild_bit_for_bit_under_every_variation() {
    build_matrix();
    let out = bake_repo(&["check", "recipes/keepalived.kdl", "--json"]);
    let json = json_of(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{json}\n{err}");
    assert_eq!(
        json["variations"].as_array().map(Vec::len),
        Some(8),
        "every variation applied: {json}"
    );
    let same = same_ids(&json);
    assert_eq!(json["same"], json["total"], "{json}");
    for (id, version, arch) in IDS {
        assert!(same.contains(&id.to_string()), "{id}: {json}");
        let image = format!("sysext:keepalived@{version}/{arch}");
        assert!(same.contains(&image), "{image}: {json}");
    }
    for id in [
        "openssl@x86-64",
        "openssl@arm64",
        "libnl@arm64",
        "pcre2@x86-64",
    ] {
        assert!(same.contains(&id.to_string()), "{id}: {json}");
    }
    eprintln!(
        "{}",
        err.lines()
            .rev()
            .find(|l| l.starts_with("same="))
            .unwrap_or("")
    );
}
