//! The realise core seen from outside: plan and build decide alike, `why` names
//! every kind of edit, step errors keep their help, an unprivileged user can use
//! a store, and bake's own output survives a closed pipe.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{ids, json_of, Project};

/// A toolchain (a fake compiler), a library, an app built with both, and its image.
fn recipe(p: &Project, edit: &Edit) {
    let Edit {
        lib,
        app,
        cflags,
        tc_cflags,
        os,
        reload,
    } = edit;
    p.write(
        "r.kdl",
        &format!(
            r##"
toolchain "tc" {{
    target "x86_64-linux-musl"
    path "tc/bin"
    identity "tc/bin"
    env CFLAGS="{tc_cflags}"
}}
build "lib" {{
    script "echo {lib} > $out/lib.txt"
}}
build "app" {{
    toolchain "tc"
    input "lib"
    env EXTRA="{cflags}"
    script #"""
        mkdir -p $out/usr/bin
        printf '%s %s %s\n' "{app}" "$CFLAGS $EXTRA" "$(cat $lib/lib.txt)" > $out/usr/bin/app
        """#
}}
sysext "img" {{
    input "app"
    version "1.0"
    arch "x86-64"
    {os}
    reload-manager {reload}
}}
"##
        ),
    );
}

#[derive(Clone)]
struct Edit {
    lib: &'static str,
    app: &'static str,
    cflags: &'static str,
    tc_cflags: &'static str,
    os: &'static str,
    reload: &'static str,
}

/// One edit of the recipe, the target `why` is asked about, what it must say, and
/// what must rebuild.
struct Case {
    what: &'static str,
    change: fn(&mut Edit),
    target: &'static str,
    expect: &'static str,
    rebuilt: &'static [&'static str],
}

fn planned(p: &Project) -> Vec<String> {
    let plan = json_of(&p.bake(&["plan", "r.kdl", "--json"]));
    let mut out: Vec<String> = plan["build"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn why(p: &Project, target: &str) -> String {
    String::from_utf8_lossy(&p.bake(&["why", "r.kdl", target]).stdout).into_owned()
}

#[test]
fn plan_lists_exactly_what_build_builds_and_why_names_each_edit() {
    let p = Project::new();
    let cc = p.write("tc/bin/cc", "#!/bin/sh\n");
    fs::set_permissions(&cc, fs::Permissions::from_mode(0o755)).unwrap();
    let mut e = Edit {
        lib: "one",
        app: "v1",
        cflags: "-g",
        tc_cflags: "-O2",
        os: r#"os "_any""#,
        reload: "#true",
    };
    recipe(&p, &e);
    let first = planned(&p);
    let (code, built) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{built}");
    assert_eq!(ids(&built["built"]), first);
    assert_eq!(first, ["app", "lib", "sysext:img"]);
    // Each edit: what plan lists is what build then builds, and why names it.
    let edits = [
        Case {
            what: "script",
            change: |e| e.app = "v2",
            target: "app",
            expect: "script changed:",
            rebuilt: &["app", "sysext:img"],
        },
        Case {
            what: "env",
            change: |e| e.cflags = "-g3",
            target: "app",
            expect: "variable EXTRA changed: \"-g\" -> \"-g3\"",
            rebuilt: &["app", "sysext:img"],
        },
        Case {
            what: "input output",
            change: |e| e.lib = "two",
            target: "app",
            expect: "input lib will be built first",
            rebuilt: &["app", "lib", "sysext:img"],
        },
        Case {
            what: "sysext field",
            change: |e| e.reload = "#false",
            target: "img",
            expect: "reload-manager changed: \"true\" -> \"false\"",
            rebuilt: &["sysext:img"],
        },
        Case {
            what: "sysext level",
            change: |e| e.os = r#"os "flatcar" sysext-level="1.0""#,
            target: "img",
            expect: "sysext-level changed: (none) -> \"1.0\"",
            rebuilt: &["sysext:img"],
        },
        Case {
            what: "toolchain flag",
            change: |e| e.tc_cflags = "-O3",
            target: "app",
            expect: "toolchain changed:",
            rebuilt: &["app", "sysext:img"],
        },
    ];
    for Case {
        what,
        change,
        target,
        expect,
        rebuilt,
    } in edits
    {
        change(&mut e);
        recipe(&p, &e);
        let plan = planned(&p);
        assert_eq!(plan, rebuilt, "{what}: plan");
        let w = why(&p, target);
        assert!(w.contains(expect), "{what}: why {target} said\n{w}");
        let (code, built) = p.build("r.kdl", &[]);
        assert_eq!(code, 0, "{what}: {built}");
        assert_eq!(ids(&built["built"]), plan, "{what}: build");
        assert!(planned(&p).is_empty(), "{what}: nothing left to build");
        assert!(why(&p, target).contains("up to date"), "{what}");
    }
    // The input's own change is named on the input.
    let w = why(&p, "lib");
    assert!(w.contains("up to date"), "{w}");
}

#[test]
fn a_failing_fetch_shows_the_help_of_its_diagnostic() {
    let p = Project::new();
    p.write(
        "r.kdl",
        r#"
source "gone" {
    url "file:///nonexistent/gone.tar.gz"
    hash "sha256:6afd95ddb7d3e0d3b8b8e5b3a489144131b61a01b06d29e883d0c44acc8a36bf"
}
build "app" {
    source "gone"
    script "true"
}
"#,
    );
    let out = p.bake(&["build", "r.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not fetch source `gone`"), "{err}");
    assert!(err.contains("/nonexistent/gone.tar.gz: not found"), "{err}");
    assert!(
        err.contains("add a mirror that holds the file") && err.contains("bake import FILE"),
        "the help line is shown: {err}"
    );
}

#[test]
fn an_unprivileged_user_builds_rebuilds_and_verifies() {
    let p = Project::new();
    // A directory the user `nobody` owns, reachable through the test's own.
    fs::set_permissions(p.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = p.path("nobody");
    fs::create_dir_all(&home).unwrap();
    let chown = Command::new("chown")
        .args(["nobody:nogroup", home.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let r = home.join("r.kdl");
    let write = |text: &str| {
        fs::write(&r, text).unwrap();
        fs::set_permissions(&r, fs::Permissions::from_mode(0o644)).unwrap();
    };
    write("build \"a\" {\n    script \"mkdir $out/d; echo one > $out/d/f\"\n}\nbuild \"b\" {\n    input \"a\"\n    script \"cat $a/d/f > $out/g\"\n}\n");
    let bake = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_bake"))
            .args(args)
            .arg("--cache")
            .arg(home.join("store"))
            .current_dir(&home)
            .env_remove("BAKE_CACHE")
            .output()
            .unwrap()
    };
    let first = bake(&["build", "r.kdl", "--json"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(ids(&json_of(&first)["built"]), ["a", "b"]);
    let again = bake(&["build", "r.kdl", "--json"]);
    assert_eq!(ids(&json_of(&again)["cached"]), ["a", "b"]);
    write("build \"a\" {\n    script \"mkdir $out/d; echo two > $out/d/f\"\n}\nbuild \"b\" {\n    input \"a\"\n    script \"cat $a/d/f > $out/g\"\n}\n");
    let edited = bake(&["build", "r.kdl", "--json"]);
    assert_eq!(ids(&json_of(&edited)["built"]), ["a", "b"]);
    let verify = bake(&["verify"]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("4 objects checked, 0 corrupt"), "{text}");
    let gc = bake(&["gc", "r.kdl"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(String::from_utf8_lossy(&gc.stdout).contains("2 objects"));
}

#[test]
fn a_closed_pipe_ends_bake_quietly() {
    let p = Project::new();
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!(
            "build \"n{i}\" {{\n    script \"echo {i} > $out/v\"\n}}\n"
        ));
    }
    p.write("big.kdl", &text);
    for args in [
        "eval big.kdl",
        "eval big.kdl --json",
        "graph big.kdl --dot",
        "plan big.kdl",
    ] {
        let script =
            format!("\"$BAKE\" {args} | head -n 1 >/dev/null; echo \"status=${{PIPESTATUS[0]}}\"");
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("BAKE", env!("CARGO_BIN_EXE_bake"))
            .env("BAKE_CACHE", p.store())
            .current_dir(p.dir.path())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("status=0"),
            "{args}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line() {
    let p = Project::new();
    let bash = Command::new("bash")
        .args([
            "-c",
            "source <(\"$BAKE\" completions bash) && complete -p bake",
        ])
        .env("BAKE", env!("CARGO_BIN_EXE_bake"))
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = p.bake(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("bake") && text.contains("plan"), "{shell}");
    }
    let man = p.bake(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH bake"),
        "{page}"
    );
    for command in ["eval", "build", "why", "gc"] {
        assert!(page.contains(command), "{command} in the page");
    }
    let out = p.bake(&["man", "--dir", "man"]);
    assert!(out.status.success());
    for name in ["bake.1", "bake-build.1", "bake-why.1", "bake-completions.1"] {
        let text = fs::read_to_string(p.path("man").join(name)).unwrap();
        assert!(text.contains(".TH"), "{name}");
    }
}
