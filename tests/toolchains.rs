//! Both toolchains build a C program against a static library of its own, for
//! x86-64 and arm64: static per readelf, of the right machine, and running (arm64
//! under qemu-aarch64-static).

mod common;

use std::path::Path;
use std::process::Command;

use common::{bake_repo, elf_facts, json_of, same_ids, Project};

const GREETING: &str = "hello from a static library, IFNAMSIZ=16\n";

#[test]
fn both_toolchains_build_static_programs_for_both_arches() {
    let out = bake_repo(&[
        "build",
        "recipes/toolchains.kdl",
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
    for (id, machine, runner) in [
        ("greet-zig@x86-64", "Advanced Micro Devices X86-64", None),
        ("greet-zig@arm64", "AArch64", Some("qemu-aarch64-static")),
        ("greet-debian@x86-64", "Advanced Micro Devices X86-64", None),
        ("greet-debian@arm64", "AArch64", Some("qemu-aarch64-static")),
    ] {
        let dir = json["outputs"][id]
            .as_str()
            .unwrap_or_else(|| panic!("no output for {id}: {json}"));
        let bin = Path::new(dir).join("bin/greet");
        let (m, interp, needed) = elf_facts(&bin);
        assert_eq!(m, machine, "{id}");
        assert!(!interp, "{id} has a PT_INTERP: not static");
        assert!(!needed, "{id} needs shared libraries");
        assert!(Path::new(dir).join("lib/libgreet.a").is_file());
        let run = match runner {
            Some(qemu) => Command::new(qemu).arg(&bin).output().unwrap(),
            None => Command::new(&bin).output().unwrap(),
        };
        assert!(run.status.success(), "{id}");
        assert_eq!(String::from_utf8_lossy(&run.stdout), GREETING, "{id}");
    }
    // A rebuild from the same inputs gives the same output hash.
    let check = bake_repo(&["check", "recipes/toolchains.kdl", "--json"]);
    let json = json_of(&check);
    assert!(check.status.success(), "{json}");
    assert_eq!(
        same_ids(&json),
        [
            "greet-debian@arm64",
            "greet-debian@x86-64",
            "greet-zig@arm64",
            "greet-zig@x86-64"
        ]
    );
}

#[test]
fn toolchain_check_resolves_the_repository_toolchains() {
    let out = bake_repo(&["toolchain", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok       toolchain:musl@arm64"), "{text}");
    assert!(text.contains("0.17.1"), "zig's version: {text}");
    assert!(text.contains("toolchain:debian-musl@x86-64"), "{text}");
}

#[test]
fn a_missing_toolchain_says_what_to_install() {
    let p = Project::new();
    p.write(
        "r.kdl",
        r#"
matrix {
    arch "x86-64"
}
toolchain "ghost" {
    target "x86_64-linux-musl" arch="x86-64"
    identity "/nonexistent/bake/zig"
    version "zig version"
    install "apt-get install ghost-cc"
}
build "app" {
    toolchain "ghost"
    script "true"
}
"#,
    );
    let out = p.bake(&["toolchain", "check", "r.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MISSING  toolchain:ghost@x86-64"), "{text}");
    assert!(text.contains("not found: /nonexistent/bake/zig"), "{text}");
    assert!(
        text.contains("to install: apt-get install ghost-cc"),
        "{text}"
    );
    let out = p.bake(&["build", "r.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("toolchain toolchain:ghost@x86-64 is not installed"),
        "{err}"
    );
    assert!(
        err.contains("to install it: apt-get install ghost-cc"),
        "{err}"
    );
}

#[test]
fn toolchain_bytes_and_flags_are_in_the_keys_of_what_uses_them() {
    let p = Project::new();
    let cc = p.write("tc/bin/cc", "#!/bin/sh\n");
    let recipe = |cflags: &str| {
        format!(
            r#"
matrix {{
    arch "x86-64" "arm64"
}}
toolchain "tc" {{
    target "x86_64-linux-musl" arch="x86-64"
    target "aarch64-linux-musl" arch="arm64"
    path "tc/bin"
    identity "tc/bin"
    env CFLAGS="-O2"
    {cflags}
}}
build "with" {{
    toolchain "tc"
    script "true"
}}
build "without" {{
    script "echo {{arch}}"
}}
"#
        )
    };
    let keys = |p: &Project| -> std::collections::BTreeMap<String, String> {
        let json = json_of(&p.bake(&["eval", "r.kdl", "--json"]));
        json["derivations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap().to_string(),
                    d["key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    p.write("r.kdl", &recipe(""));
    let before = keys(&p);
    std::fs::write(&cc, "#!/bin/sh\n# upgraded\n").unwrap();
    let upgraded = keys(&p);
    let changed = |a: &std::collections::BTreeMap<String, String>,
                   b: &std::collections::BTreeMap<String, String>| {
        a.iter()
            .filter(|(k, v)| b[*k] != **v)
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        changed(&before, &upgraded),
        [
            "toolchain:tc@arm64",
            "toolchain:tc@x86-64",
            "with@arm64",
            "with@x86-64"
        ]
    );
    p.write(
        "r.kdl",
        &recipe("cflags \"-mcpu=cortex-a72\" arch=\"arm64\""),
    );
    assert_eq!(
        changed(&upgraded, &keys(&p)),
        ["toolchain:tc@arm64", "with@arm64"]
    );
}
