//! The remote cache against a real BuildGrid on 127.0.0.1: a second machine
//! (an empty store) builds nothing itself; a tampered blob is refused and
//! rebuilt; a server that stops, or was never there, or never answers, costs a
//! warning and not the build; two stores pushing at once leave a consistent cache.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::buildgrid::{free_port, object_hash, sha256_hex, BuildGrid};
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
    let mut args = vec![
        "build",
        "r.kdl",
        "--json",
        "--out-link",
        "out",
        "--remote",
        url,
    ];
    args.extend_from_slice(extra);
    let out = p.bake_cmd(&args).env_remove("CI").output().unwrap();
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

    let (code, fetched, stderr) = build(&second, &bg.url(), &[]);
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
    let verify = second.bake(&["verify"]);
    assert!(verify.status.success(), "{verify:?}");

    // The store has it now, like any build.
    let (_, again, _) = build(&second, &bg.url(), &[]);
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
    let (code, rebuilt, stderr) = build(&second, &bg.url(), &[]);
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
}

#[test]
fn a_server_stopped_mid_run_costs_a_warning() {
    let mut bg = BuildGrid::cache();
    let p = Project::new();
    // b runs long enough for the test to stop the server under it.
    p.write("r.kdl", &RECIPE.replace("{ echo b;", "sleep 3; { echo b;"));
    let mut child = p
        .bake_cmd(&[
            "build",
            "r.kdl",
            "--json",
            "--out-link",
            "out",
            "--remote",
            &bg.url(),
            "--remote-upload",
        ])
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
    let spawn = |p: &Project| {
        p.bake_cmd(&[
            "build",
            "r.kdl",
            "--json",
            "--out-link",
            "out",
            "--remote",
            &bg.url(),
            "--remote-upload",
        ])
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
    let (code, j3, stderr) = build(&third, &bg.url(), &[]);
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
