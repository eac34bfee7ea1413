//! bake build, plan, why, gc and verify on small recipes whose steps are shell
//! commands: real processes, a real store, the real sandbox.

mod common;

use std::fs;
use std::process::Stdio;

use common::{ids, wait_for, Project};

/// a <- b <- c, and d alone.
fn chain(p: &Project, a_script: &str) -> String {
    p.write(
        "r.kdl",
        &format!(
            r#"
build "a" {{
    script "{a_script}"
}}
build "b" {{
    input "a"
    script "cat $a/a.txt > $out/b.txt"
}}
build "c" {{
    input "b"
    script "cat $b/b.txt > $out/c.txt"
}}
build "d" {{
    script "echo d > $out/d.txt"
}}
"#
        ),
    );
    "r.kdl".to_string()
}

#[test]
fn second_build_builds_nothing() {
    let p = Project::new();
    let r = chain(&p, "echo one > $out/a.txt");
    let (code, first) = p.build(&r, &[]);
    assert_eq!(code, 0);
    assert_eq!(ids(&first["built"]), ["a", "b", "c", "d"]);
    let (code, second) = p.build(&r, &[]);
    assert_eq!(code, 0);
    assert!(ids(&second["built"]).is_empty());
    assert_eq!(ids(&second["cached"]), ["a", "b", "c", "d"]);
    // The output links point at the store's objects.
    let c = fs::read_to_string(p.path("out/c/c.txt")).unwrap();
    assert_eq!(c, "one\n");
}

#[test]
fn script_change_rebuilds_the_instance_and_its_dependents_only() {
    let p = Project::new();
    let r = chain(&p, "echo one > $out/a.txt");
    p.build(&r, &[]);
    chain(&p, "echo two > $out/a.txt");
    let (_, plan) = {
        let out = p.bake(&["plan", &r, "--json"]);
        (
            0,
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        )
    };
    let planned: Vec<&str> = plan["build"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["a", "b", "c"]);
    let (_, second) = p.build(&r, &[]);
    assert_eq!(ids(&second["built"]), ["a", "b", "c"]);
    assert_eq!(ids(&second["cached"]), ["d"]);
    assert_eq!(fs::read_to_string(p.path("out/c/c.txt")).unwrap(), "two\n");
}

#[test]
fn identical_output_stops_the_rebuild_early() {
    let p = Project::new();
    let r = chain(&p, "echo one > $out/a.txt");
    p.build(&r, &[]);
    // A different script writing the very same bytes.
    chain(&p, "printf 'one\\n' > $out/a.txt");
    let (_, second) = p.build(&r, &[]);
    assert_eq!(ids(&second["built"]), ["a"]);
    assert_eq!(ids(&second["cached"]), ["b", "c", "d"]);
}

#[test]
fn independent_steps_overlap() {
    let p = Project::new();
    let sync = p.path("sync");
    fs::create_dir_all(&sync).unwrap();
    // Each step announces itself, then waits (at most 20 s) for the other: only
    // steps that run at the same time both finish. Privileged, to share a
    // directory of the host's.
    let step = |me: &str, other: &str| {
        format!(
            r#"build "{me}" {{
    privileged #true
    env SYNC="{}"
    script "touch $SYNC/{me}; i=0; while [ ! -e $SYNC/{other} ]; do i=$((i+1)); [ $i -lt 400 ] || exit 1; sleep 0.05; done; echo ok > $out/ok"
}}
"#,
            sync.display()
        )
    };
    p.write("r.kdl", &(step("x", "y") + &step("y", "x")));
    let (code, json) = p.build("r.kdl", &["-j", "2"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(ids(&json["built"]), ["x", "y"]);
}

fn failing(p: &Project) {
    p.write(
        "r.kdl",
        r#"
build "bad" {
    script "echo about to fail; exit 3"
}
build "after-bad" {
    input "bad"
    script "true"
}
build "fine" {
    script "echo fine > $out/f"
}
"#,
    );
}

#[test]
fn a_failure_stops_new_steps_and_fails_its_dependents() {
    let p = Project::new();
    failing(&p);
    let out = p.bake(&["build", "r.kdl", "-j", "1", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&json["failed"]), ["bad"]);
    assert!(ids(&json["built"]).is_empty(), "{json}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("| about to fail"), "{err}");
    assert!(err.contains("full log: "), "{err}");
}

#[test]
fn keep_going_builds_everything_not_depending_on_the_failure() {
    let p = Project::new();
    failing(&p);
    let (code, json) = p.build("r.kdl", &["-j", "1", "--keep-going"]);
    assert_eq!(code, 1);
    assert_eq!(ids(&json["failed"]), ["bad"]);
    assert_eq!(ids(&json["built"]), ["fine"]);
}

#[test]
fn sigkill_mid_build_leaves_a_consistent_store() {
    let p = Project::new();
    let marker = p.path("started");
    let once = p.path("killed-once");
    p.write(
        "r.kdl",
        &format!(
            r#"
build "quick" {{
    script "echo q > $out/q"
}}
build "slow" {{
    input "quick"
    privileged #true
    script "echo partial > $out/partial; if [ ! -e {once} ]; then touch {marker}; sleep 60; fi; echo done > $out/s"
}}
"#,
            once = once.display(),
            marker = marker.display()
        ),
    );
    let mut child = p
        .bake_cmd(&["build", "r.kdl", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(30, || marker.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(started, "the slow step never started");
    // Debris of the killed run is in tmp/; no key for the unfinished step.
    let tmp = p.store().join("tmp");
    assert!(fs::read_dir(&tmp).unwrap().count() > 0);
    fs::write(&once, "").unwrap();
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0);
    assert_eq!(ids(&json["cached"]), ["quick"]);
    assert_eq!(ids(&json["built"]), ["slow"]);
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "debris left in tmp/"
    );
    let verify = p.bake(&["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn two_concurrent_bakes_share_a_store_and_build_each_key_once() {
    let p = Project::new();
    let log = p.path("runs.log");
    p.write(
        "r.kdl",
        &format!(
            r#"
build "one" {{
    privileged #true
    script "echo one >> {log}; sleep 1; echo 1 > $out/x"
}}
build "two" {{
    input "one"
    privileged #true
    script "echo two >> {log}; echo 2 > $out/y"
}}
"#,
            log = log.display()
        ),
    );
    let spawn = || {
        p.bake_cmd(&["build", "r.kdl", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        fs::read_to_string(&log).unwrap().lines().count(),
        2,
        "each key built once"
    );
    let built = |o: &std::process::Output| {
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        ids(&j["built"]).len()
    };
    assert_eq!(built(&a) + built(&b), 2);
}

#[test]
fn verify_finds_a_corrupt_object_which_then_rebuilds() {
    let p = Project::new();
    let r = chain(&p, "echo one > $out/a.txt");
    let (_, json) = p.build(&r, &[]);
    let a = json["outputs"]["a"].as_str().unwrap().to_string();
    let file = std::path::Path::new(&a).join("a.txt");
    let mut perms = fs::metadata(&file).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&file, perms).unwrap();
    fs::write(&file, "tampered\n").unwrap();
    let out = p.bake(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 corrupt"), "{text}");
    let (_, again) = p.build(&r, &[]);
    assert_eq!(ids(&again["built"]), ["a"]);
    assert_eq!(fs::read_to_string(p.path("out/c/c.txt")).unwrap(), "one\n");
}

#[test]
fn gc_keeps_what_the_recipe_reaches_and_removes_the_rest() {
    let p = Project::new();
    let r = chain(&p, "echo one > $out/a.txt");
    let (_, first) = p.build(&r, &[]);
    let old_a = first["outputs"]["a"].as_str().unwrap().to_string();
    chain(&p, "echo two > $out/a.txt");
    let (_, second) = p.build(&r, &[]);
    let live: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| second["outputs"][k].as_str().unwrap().to_string())
        .collect();
    let dry = p.bake(&["gc", &r, "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("3 objects"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert!(
        std::path::Path::new(&old_a).exists(),
        "dry run removed something"
    );
    let gc = p.bake(&["gc", &r]);
    assert!(gc.status.success());
    assert!(!std::path::Path::new(&old_a).exists());
    for o in &live {
        assert!(std::path::Path::new(o).exists(), "{o} removed");
    }
    let (_, third) = p.build(&r, &[]);
    assert!(ids(&third["built"]).is_empty());
}

#[test]
fn why_names_each_kind_of_change() {
    let p = Project::new();
    let tc = p.write("tc/bin/cc", "#!/bin/sh\necho v1\n");
    let recipe = |script: &str, cflags: &str| {
        format!(
            r#"
toolchain "tc" {{
    target "x86_64-linux-musl"
    path "tc/bin"
    identity "tc/bin"
}}
build "lib" {{
    script "{script}"
}}
build "app" {{
    toolchain "tc"
    input "lib"
    env CFLAGS="{cflags}"
    script """
        echo start
        cat $lib/v > $out/v
        echo end
        """
}}
"#
        )
    };
    p.write("r.kdl", &recipe("echo 1 > $out/v", "-O2"));
    let why = |target: &str| {
        String::from_utf8_lossy(&p.bake(&["why", "r.kdl", target]).stdout).into_owned()
    };
    assert!(why("app").contains("never built"), "{}", why("app"));
    p.build("r.kdl", &[]);
    assert!(why("app").contains("up to date"));
    // An environment variable.
    p.write("r.kdl", &recipe("echo 1 > $out/v", "-O3"));
    let w = why("app");
    assert!(
        w.contains("variable CFLAGS changed: \"-O2\" -> \"-O3\""),
        "{w}"
    );
    p.build("r.kdl", &[]);
    // An input's output.
    p.write("r.kdl", &recipe("echo 2 > $out/v", "-O3"));
    p.build("r.kdl", &["lib"]);
    let w = why("app");
    assert!(w.contains("input `lib` changed"), "{w}");
    p.build("r.kdl", &[]);
    // The toolchain.
    fs::write(&tc, "#!/bin/sh\necho v2\n").unwrap();
    let w = why("app");
    assert!(w.contains("toolchain changed"), "{w}");
    p.build("r.kdl", &[]);
    // The script, with the changed lines.
    let text = fs::read_to_string(p.path("r.kdl"))
        .unwrap()
        .replace("echo end", "echo finish");
    p.write("r.kdl", &text);
    let w = why("app");
    assert!(w.contains("script changed:"), "{w}");
    assert!(
        w.contains("-   3 | echo end") && w.contains("+   3 | echo finish"),
        "{w}"
    );
}

#[test]
fn check_rebuilds_and_names_what_differs() {
    let p = Project::new();
    p.write(
        "r.kdl",
        r#"
build "stable" {
    script "echo same > $out/s"
}
build "unstable" {
    script "echo same > $out/s; head -c 16 /dev/urandom > $out/noise"
}
"#,
    );
    let out = p.bake(&["check", "r.kdl", "--json", "--variations", "none"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["instances"][0]["id"], "stable");
    assert_eq!(json["instances"][0]["result"], "same");
    assert_eq!(json["instances"][1]["id"], "unstable");
    assert_eq!(json["instances"][1]["result"], "different");
    assert_eq!(json["instances"][1]["files"][0]["path"], "noise");
    assert_eq!(
        json["instances"][1]["files"][0]["sizes"],
        serde_json::json!([16, 16])
    );
    let out = p.bake(&["check", "r.kdl", "stable"]);
    assert!(out.status.success());
}

#[test]
fn steps_see_a_fixed_path_a_clean_environment_and_only_loopback() {
    let p = Project::new();
    p.write(
        "r.kdl",
        r##"
build "dep" {
    script "echo dep > $out/d"
}
build "probe" {
    input "dep"
    env GREETING="hi"
    script #"""
        pwd > $out/pwd
        env | cut -d= -f1 | sort | tr '\n' ' ' > $out/env
        ip -o link show | cut -d: -f2 | tr -d ' \n' > $out/net
        ip -4 addr show dev lo | grep -c 'inet 127.0.0.1' > $out/loopback
        touch "$dep/x" 2>/dev/null && echo writable > $out/input || echo read-only > $out/input
        umask > $out/umask
        echo "$dep" > $out/dep-path
        """#
}
"##,
    );
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    let out = std::path::PathBuf::from(json["outputs"]["probe"].as_str().unwrap());
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap().trim().to_string();
    assert_eq!(read("pwd"), "/build/src");
    assert_eq!(
        read("env"),
        "GREETING HOME JOBS LC_ALL PATH PWD SOURCE_DATE_EPOCH TMPDIR TZ dep out"
    );
    assert_eq!(read("net"), "lo");
    assert_eq!(read("loopback"), "1");
    assert_eq!(read("input"), "read-only");
    assert_eq!(read("umask"), "0022");
    assert_eq!(read("dep-path"), "/build/inputs/dep");
}

#[test]
fn a_recipe_cannot_set_what_the_sandbox_sets() {
    let p = Project::new();
    p.write(
        "r.kdl",
        "build \"a\" {\n    env HOME=\"/root\"\n    script \"true\"\n}\n",
    );
    let out = p.bake(&["build", "r.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`HOME` is set by bake for every step"));
}

#[test]
fn gc_and_verify_refuse_while_another_bake_uses_the_store() {
    let p = Project::new();
    let marker = p.path("started");
    p.write(
        "r.kdl",
        &format!(
            "build \"slow\" {{\n    privileged #true\n    script \"touch {}; sleep 30; echo > $out/x\"\n}}\n",
            marker.display()
        ),
    );
    let mut child = p
        .bake_cmd(&["build", "r.kdl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(30, || marker.exists());
    let gc = p.bake(&["gc", "r.kdl"]);
    let verify = p.bake(&["verify"]);
    let dry = p.bake(&["gc", "r.kdl", "--dry-run"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(started, "the build never started");
    for out in [&gc, &verify] {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("another bake is using this store"), "{err}");
    }
    assert!(dry.status.success(), "a dry run only reads");
    assert!(
        p.bake(&["verify"]).status.success(),
        "free again once the build is gone"
    );
}
