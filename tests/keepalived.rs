//! The main job: static keepalived 2.3.4 and 2.3.3 for x86-64 and arm64 from
//! recipes/keepalived.kdl, its images and release, real keepalived processes.
//! Slow (minutes from a cold store): every test is named slow_* so
//! `cargo test -- --skip slow_` (or `BAKE_SKIP_SLOW=1 ./test`) leaves them out.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use common::{bake_repo, elf_facts, ids, json_of, root, shared_store, wait_for};

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

/// Two network namespaces joined by a veth pair, each running keepalived; removed,
/// with the processes, when dropped (also when an assertion fails).
struct Pair {
    ns: [String; 2],
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Each keepalived leads a process group with its VRRP child: end them all.
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vip_on(ns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "-4", "addr", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("10.200.0.100/"))
        .unwrap_or(false)
}

#[test]
fn slow_keepalived_vrrp_fails_over_between_network_namespaces() {
    let json = build_matrix();
    let bin = keepalived(&json, "keepalived@2.3.4/x86-64");
    let tag = std::process::id();
    let mut pair = Pair {
        ns: [format!("bake-a-{tag}"), format!("bake-b-{tag}")],
        children: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let [a, b] = pair.ns.clone();
    ip(&["netns", "add", &a]);
    ip(&["netns", "add", &b]);
    ip(&[
        "link", "add", "bka", "netns", &a, "type", "veth", "peer", "name", "bkb", "netns", &b,
    ]);
    for (ns, dev, addr) in [(&a, "bka", "10.200.0.1/24"), (&b, "bkb", "10.200.0.2/24")] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    for (ns, dev, state, priority) in [(&a, "bka", "MASTER", 150), (&b, "bkb", "BACKUP", 100)] {
        let d = pair.dir.path().join(ns);
        fs::create_dir_all(&d).unwrap();
        let conf = d.join("keepalived.conf");
        fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id {ns}\n}}\nvrrp_instance VI_1 {{\n  state {state}\n  interface {dev}\n  \
                 virtual_router_id 51\n  priority {priority}\n  advert_int 1\n  authentication {{\n    auth_type PASS\n    \
                 auth_pass bakepass\n  }}\n  virtual_ipaddress {{\n    10.200.0.100/24\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let log = fs::File::create(d.join("log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&bin)
            .args(["--dont-fork", "--log-console", "--vrrp", "-f"])
            .arg(&conf)
            .arg(format!("--pid={}", d.join("k.pid").display()))
            .arg(format!("--vrrp_pid={}", d.join("v.pid").display()))
            .arg(format!("--checkers_pid={}", d.join("c.pid").display()))
            .arg(format!("--bfd_pid={}", d.join("b.pid").display()))
            .process_group(0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        pair.children.push(child);
    }
    let logs = |p: &Pair| {
        p.ns.iter()
            .map(|ns| fs::read_to_string(p.dir.path().join(ns).join("log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        wait_for(20, || vip_on(&a, "bka")),
        "the master never took the VIP:\n{}",
        logs(&pair)
    );
    assert!(!vip_on(&b, "bkb"), "both hold the VIP");
    // SIGTERM the master: it gives up the VIP and the backup takes it.
    let master = &mut pair.children[0];
    let _ = Command::new("kill")
        .args(["-TERM", &master.id().to_string()])
        .status();
    assert!(
        wait_for(10, || vip_on(&b, "bkb")),
        "the backup never took the VIP:\n{}",
        logs(&pair)
    );
    assert!(!vip_on(&a, "bka"));
}

#[test]
fn slow_keepalived_rebuilds_bit_for_bit() {
    build_matrix();
    let out = bake_repo(&["check", "recipes/keepalived.kdl", "keepalived", "--json"]);
    let json = json_of(&out);
    assert!(
        out.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same = ids(&json["reproducible"]);
    for (id, _, _) in IDS {
        assert!(same.contains(&id.to_string()), "{id}: {json}");
    }
    for id in [
        "openssl@x86-64",
        "openssl@arm64",
        "libnl@arm64",
        "pcre2@x86-64",
    ] {
        assert!(same.contains(&id.to_string()), "{id}: {json}");
    }
}
