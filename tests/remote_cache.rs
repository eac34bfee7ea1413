//! The remote cache against a real BuildGrid on 127.0.0.1: a second machine
//! (an empty store) builds nothing itself, leaves a remote hit's inputs and
//! sources in the remote, and takes sources from it rather than upstream; a
//! tampered blob is refused and rebuilt; a server that stops, or was never
//! there, or never answers, costs a warning and not the build; two stores
//! pushing at once leave a consistent cache.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::buildgrid::{build_args, free_port, jwt, object_hash, sha256_hex, BuildGrid};
use common::{ids, Project};

/// Three steps: a tree with an executable, a symlink and a subdirectory; one
/// output over the batch limit (streamed by ByteStream); one joining both.
const RECIPE: &str = r##"
build "a" {
    script #"""
        echo a > $out/a
        mkdir $out/d
        printf '#!/bin/sh\necho x\n' > $out/d/x
        chmod +x $out/d/x
        ln -s a $out/l
        : > $out/empty
        """#
}
build "b" {
    input "a"
    script #"""
        { echo b; cat $a/a; } > $out/b
        head -c 5000000 /dev/urandom > $out/big
        """#
}
build "c" {
    input "a" "b"
    script "cat $a/a $b/b > $out/c"
}
"##;

fn project() -> Project {
    let p = Project::new();
    p.write("r.kdl", RECIPE);
    p
}

/// `bake build r.kdl --json` with the remote, and its stderr.
fn build(p: &Project, url: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    build_with(p, url, extra, &[])
}

/// [`build`] with these environment variables set.
fn build_with(
    p: &Project,
    url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (i32, serde_json::Value, String) {
    let out = p
        .bake_cmd(&build_args(url, extra))
        .env_remove("CI")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// The output hash of each instance, from where bake linked it.
fn hashes(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = json["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, p)| {
            (
                id.clone(),
                object_hash(std::path::Path::new(p.as_str().unwrap())),
            )
        })
        .collect();
    v.sort();
    v
}

fn warnings(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.starts_with("warning:")).count()
}

#[test]
fn a_second_machine_builds_nothing_itself() {
    let bg = BuildGrid::cache();
    let first = project();
    let (code, built, stderr) = build(&first, &bg.url(), &["--remote-upload"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&built["built"]), ["a", "b", "c"], "{stderr}");
    assert!(
        stderr.contains("remote: 0 fetched (0 B), 3 uploaded"),
        "{stderr}"
    );

    // Another machine: an empty store, the same recipe elsewhere.
    let second = project();
    let plan = second
        .bake_cmd(&["plan", "r.kdl", "--json", "--remote", &bg.url()])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(ids(&plan["remote"]), ["a", "b", "c"], "{plan}");
    assert!(plan["build"].as_array().unwrap().is_empty(), "{plan}");
    // Only c is asked for (the graph's end): a and b key it and stay there.
    assert_eq!(ids(&plan["unneeded"]), ["a", "b"], "{plan}");

    // All three asked for: all three come down.
    let (code, fetched, stderr) = build(&second, &bg.url(), &["a", "b", "c"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(fetched["built"].as_array().unwrap().is_empty(), "{fetched}");
    assert_eq!(ids(&fetched["remote"]), ["a", "b", "c"], "{fetched}");
    assert_eq!(hashes(&fetched), hashes(&built));
    for id in ["a", "b", "c"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("remote") && l.contains(&format!(" {id} "))),
            "no progress line for {id}: {stderr}"
        );
    }
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    // What came down is the tree as built: modes, links, empty files.
    let output = |id: &str| std::path::PathBuf::from(fetched["outputs"][id].as_str().unwrap());
    assert!(std::fs::symlink_metadata(output("a").join("l"))
        .unwrap()
        .file_type()
        .is_symlink());
    let x = std::process::Command::new(output("a").join("d/x"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&x.stdout), "x\n");
    assert_eq!(
        std::fs::metadata(output("a").join("empty")).unwrap().len(),
        0
    );
    assert_eq!(
        std::fs::metadata(output("b").join("big")).unwrap().len(),
        5_000_000
    );
    assert!(ids(&fetched["unneeded"]).is_empty(), "{fetched}");
    let verify = second.bake(&["verify"]);
    assert!(verify.status.success(), "{verify:?}");

    // The store has it now, like any build.
    let (_, again, _) = build(&second, &bg.url(), &["a", "b", "c"]);
    assert_eq!(ids(&again["cached"]), ["a", "b", "c"], "{again}");
}

#[test]
fn a_tampered_blob_is_refused_and_rebuilt() {
    let bg = BuildGrid::cache_on_disk();
    let first = project();
    let (code, built, stderr) = build(&first, &bg.url(), &["--remote-upload"]);
    assert_eq!(code, 0, "{stderr}");

    // a's file `a` holds "a\n": the CAS now serves other bytes under its digest.
    let blob = bg.blob_path(&sha256_hex(b"a\n"));
    assert!(blob.exists(), "no blob at {}", blob.display());
    std::fs::write(&blob, b"b\n").unwrap();

    let second = project();
    let (code, rebuilt, stderr) = build(&second, &bg.url(), &["a", "b", "c"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("refused what remote") && stderr.contains("does not match its digest"),
        "{stderr}"
    );
    // a is built here, to the same bytes, so b and c still come from the remote.
    assert_eq!(ids(&rebuilt["built"]), ["a"], "{rebuilt}");
    assert_eq!(ids(&rebuilt["remote"]), ["b", "c"], "{rebuilt}");
    assert_eq!(hashes(&rebuilt), hashes(&built));
    let a = std::fs::read_to_string(format!("{}/a", rebuilt["outputs"]["a"].as_str().unwrap()));
    assert_eq!(a.unwrap(), "a\n");

    // c's file tampered too, and only c asked for: c is refused, so its inputs
    // are needed after all (b fetched, a refused again and built), then c built.
    let blob = bg.blob_path(&sha256_hex(b"a\nb\na\n"));
    assert!(blob.exists(), "no blob at {}", blob.display());
    std::fs::write(&blob, b"x\nx\nx\n").unwrap();
    let third = project();
    let (code, json, stderr) = build(&third, &bg.url(), &["c"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&json["built"]), ["a", "c"], "{stderr}");
    assert_eq!(ids(&json["remote"]), ["b"], "{stderr}");
    assert_eq!(warnings(&stderr), 2, "{stderr}");
    assert_eq!(hashes(&json), hashes(&built));
}

#[test]
fn a_server_stopped_mid_run_costs_a_warning() {
    let mut bg = BuildGrid::cache();
    let p = Project::new();
    // b runs long enough for the test to stop the server under it.
    p.write("r.kdl", &RECIPE.replace("{ echo b;", "sleep 3; { echo b;"));
    let url = bg.url();
    let mut child = p
        .bake_cmd(&build_args(&url, &["--remote-upload"]))
        .env_remove("CI")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let started = Instant::now();
    for line in stderr.lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("started  b") {
            bg.stop();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{seen}");
    }
    let out = child.wait_with_output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{seen}");
    assert_eq!(ids(&json["built"]), ["a", "b", "c"], "{seen}");
    assert_eq!(warnings(&seen), 1, "{seen}");
    assert!(seen.contains("cannot be used"), "{seen}");
    assert!(
        seen.contains("1 uploaded"),
        "a's upload went through: {seen}"
    );
}

#[test]
fn a_remote_never_there_or_never_answering_costs_a_warning() {
    // Nothing listens: refused at once.
    let p = project();
    let url = format!("grpc://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let (code, json, stderr) = build(&p, &url, &["--remote-upload"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&json["built"]), ["a", "b", "c"]);
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");

    // Accepts connections and never says a word: bounded by --remote-timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("grpc://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end && open.len() < 16 {
            match silent.accept() {
                Ok((s, _)) => open.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let p = project();
    let started = Instant::now();
    let (code, json, stderr) = build(&p, &url, &["--remote-timeout", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&json["built"]), ["a", "b", "c"]);
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    // The call's limit or the connection's (as long), whichever fires first.
    assert!(
        stderr.contains("no answer within 2s") || stderr.contains("cannot connect"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");
    drop(held);
}

#[test]
fn two_stores_pushing_at_once_stay_consistent() {
    let bg = BuildGrid::cache();
    // Deterministic outputs, so both pushes name the same trees.
    let recipe = RECIPE.replace("/dev/urandom", "/dev/zero");
    let (p1, p2) = (Project::new(), Project::new());
    p1.write("r.kdl", &recipe);
    p2.write("r.kdl", &recipe);
    let url = bg.url();
    let spawn = |p: &Project| {
        p.bake_cmd(&build_args(&url, &["--remote-upload"]))
            .env_remove("CI")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c1, c2) = (spawn(&p1), spawn(&p2));
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let j1: serde_json::Value = serde_json::from_slice(&o1.stdout).unwrap();
    let j2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(hashes(&j1), hashes(&j2));

    let third = Project::new();
    third.write("r.kdl", &recipe);
    let (code, j3, stderr) = build(&third, &bg.url(), &["a", "b", "c"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&j3["remote"]), ["a", "b", "c"], "{stderr}");
    assert_eq!(hashes(&j3), hashes(&j1));
    assert_eq!(warnings(&stderr), 0, "{stderr}");
}

#[test]
fn remote_exec_without_an_execution_service_builds_here_and_still_caches() {
    let bg = BuildGrid::cache();
    let p = project();
    let (code, json, stderr) = build(&p, &bg.url(), &["--remote-exec", "--remote-upload"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&json["built"]), ["a", "b", "c"], "{stderr}");
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    assert!(stderr.contains("cannot run steps"), "{stderr}");
    assert!(stderr.contains("3 uploaded"), "{stderr}");
    assert!(stderr.contains("0 run on workers"), "{stderr}");
}

/// A source and two steps on it; `url` is where the source is fetched from,
/// which is not part of any key.
fn source_recipe(url: &str, sha: &str, lib_script: &str) -> String {
    format!(
        r##"
source "pkg" {{
    url "{url}"
    hash "sha256:{sha}"
}}
build "lib" {{
    source "pkg"
    script "{lib_script}"
}}
build "app" {{
    input "lib"
    script "cat $lib/greeting > $out/app"
}}
"##
    )
}

const LIB: &str = "cp greeting $out/";

/// A first machine builds (and uploads) the source recipe from a tarball of
/// its own; returns it and the tarball's sha256.
fn first_machine(bg: &BuildGrid) -> (Project, String, serde_json::Value) {
    let first = Project::new();
    let (tarball, sha) = first.tarball("pkg", &[("greeting", "hello\n")]);
    let url = format!("file://{}", tarball.display());
    first.write("r.kdl", &source_recipe(&url, &sha, LIB));
    let (code, built, stderr) = build(&first, &bg.url(), &["--remote-upload", "lib", "app"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        ids(&built["built"]),
        ["app", "lib", "source:pkg"],
        "{stderr}"
    );
    // Two results and the source.
    assert!(stderr.contains("3 uploaded"), "{stderr}");
    (first, sha, built)
}

/// A URL nothing answers at: a fetch from upstream would fail the build.
fn unreachable_url() -> String {
    format!("http://127.0.0.1:{}/pkg.tar", free_port())
}

/// The entries of a store directory (`objects`, `sources`), none if absent.
fn entries(p: &Project, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p.store().join(dir))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_remote_hit_leaves_its_inputs_and_sources_in_the_remote() {
    let bg = BuildGrid::cache();
    let (_first, sha, built) = first_machine(&bg);

    // Another machine, which cannot reach the source's URL.
    let second = Project::new();
    second.write("r.kdl", &source_recipe(&unreachable_url(), &sha, LIB));
    let plan = second
        .bake_cmd(&["plan", "r.kdl", "--json", "--remote", &bg.url()])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert!(plan["build"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(ids(&plan["remote"]), ["app", "lib"], "{plan}");
    assert_eq!(ids(&plan["unneeded"]), ["lib", "source:pkg"], "{plan}");

    let (code, json, stderr) = build(&second, &bg.url(), &["app"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(json["built"].as_array().unwrap().is_empty(), "{json}");
    assert_eq!(ids(&json["remote"]), ["app", "lib"], "{json}");
    assert_eq!(ids(&json["unneeded"]), ["lib", "source:pkg"], "{json}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    // One tree came down (app's file and its Tree message), nothing else.
    assert!(stderr.contains("remote: 1 fetched ("), "{stderr}");
    let app = json["outputs"]["app"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{app}/app")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        json["outputs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["app"]
    );
    // The store holds app's tree only: not lib's, not the source.
    let lib = object_hash(std::path::Path::new(
        built["outputs"]["lib"].as_str().unwrap(),
    ));
    assert_eq!(
        entries(&second, "objects"),
        [object_hash(std::path::Path::new(app))]
    );
    assert!(!entries(&second, "objects").contains(&lib));
    assert!(entries(&second, "sources").is_empty());
    let verify = second.bake(&["verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn a_fresh_store_takes_sources_from_the_remote_not_upstream() {
    let bg = BuildGrid::cache_on_disk();
    let (first, sha, _) = first_machine(&bg);

    // lib changed: it builds here, from the source the remote serves (its URL
    // answers nothing), and app after it.
    let second = Project::new();
    let changed = "cp greeting $out/ && echo again >> $out/greeting";
    second.write("r.kdl", &source_recipe(&unreachable_url(), &sha, changed));
    let (code, json, stderr) = build(&second, &bg.url(), &["app"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&json["built"]), ["app", "lib"], "{stderr}");
    assert_eq!(ids(&json["remote"]), ["source:pkg"], "{stderr}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    assert_eq!(entries(&second, "sources"), [format!("sha256-{sha}")]);
    let app = json["outputs"]["app"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{app}/app")).unwrap(),
        "hello\nagain\n"
    );

    // bake fetch takes it from there too.
    let third = Project::new();
    third.write("r.kdl", &source_recipe(&unreachable_url(), &sha, LIB));
    let out = third
        .bake_cmd(&["fetch", "r.kdl", "--remote", &bg.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("remote: 1 fetched"), "{stderr}");
    assert_eq!(entries(&third, "sources"), [format!("sha256-{sha}")]);

    // The CAS serves other bytes (as many) for the tarball: refused, and
    // fetched from its URL (reachable again) instead.
    let blob = bg.blob_path(&sha);
    let len = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
    assert!(len > 0, "no blob at {}", blob.display());
    std::fs::write(&blob, vec![b'x'; len as usize]).unwrap();
    let fourth = Project::new();
    let url = format!("file://{}", first.path("pkg.tar").display());
    fourth.write("r.kdl", &source_recipe(&url, &sha, changed));
    let (code, json, stderr) = build(&fourth, &bg.url(), &["app"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("refused what remote") && stderr.contains("does not match its digest"),
        "{stderr}"
    );
    assert_eq!(
        ids(&json["built"]),
        ["app", "lib", "source:pkg"],
        "{stderr}"
    );
}

#[test]
fn a_server_that_wants_a_token_takes_a_valid_one_and_costs_a_warning_without() {
    let bg = BuildGrid::cache_with_jwt("the cache's secret");
    let token = jwt("the cache's secret");
    let with_token = ["--remote-token-env", "BAKE_TEST_TOKEN"];
    let first = project();
    let upload = [&with_token[..], &["--remote-upload"]].concat();
    let (code, built, stderr) =
        build_with(&first, &bg.url(), &upload, &[("BAKE_TEST_TOKEN", &token)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    assert!(stderr.contains("3 uploaded"), "{stderr}");

    // With the token: everything from the cache.
    let second = project();
    let (code, fetched, stderr) = build_with(
        &second,
        &bg.url(),
        &with_token,
        &[("BAKE_TEST_TOKEN", &token)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&fetched["remote"]), ["a", "b", "c"], "{stderr}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    let c = |json: &serde_json::Value| json["outputs"]["c"].as_str().map(str::to_string);
    assert_eq!(
        c(&fetched).map(|p| object_hash(p.as_ref())),
        c(&built).map(|p| object_hash(p.as_ref()))
    );

    // Without one, or with one signed by another secret: refused, one warning
    // saying so, and everything built here.
    let others = jwt("another secret");
    for (extra, env, says) in [
        (&[][..], &[][..], "it wants a token"),
        (
            &with_token[..],
            &[("BAKE_TEST_TOKEN", others.as_str())][..],
            "was not accepted",
        ),
    ] {
        let p = project();
        let (code, json, stderr) = build_with(&p, &bg.url(), extra, env);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(ids(&json["built"]), ["a", "b", "c"], "{stderr}");
        assert_eq!(warnings(&stderr), 1, "{stderr}");
        assert!(
            stderr.contains("the server refused authentication") && stderr.contains(says),
            "{stderr}"
        );
    }
}
