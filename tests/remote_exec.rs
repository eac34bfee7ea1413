//! Remote execution against a real BuildGrid (Execution and Bots services over
//! a private PostgreSQL) with two `bake worker` processes: every step of a
//! 4-step recipe, one of them with a toolchain, runs on a worker and gives the
//! output hashes a local build gives. A worker whose toolchain changed under it
//! refuses the lease, and a step no worker takes runs here after a time.

mod common;

use common::buildgrid::{build_args, object_hash, BuildGrid, Worker};
use common::{ids, Project};

/// A diamond: `b` uses the toolchain (its wrapper on PATH, its variables).
const RECIPE: &str = r##"
toolchain "tc" {
    target "x86_64-linux-musl"
    path "tc/bin"
    identity "tc/bin"
    env GREETING="hello"
}
build "a" {
    script "echo a > $out/a"
}
build "b" {
    toolchain "tc"
    input "a"
    script "{ greet; echo $GREETING $HOST; cat $a/a; } > $out/b"
}
build "c" {
    input "a"
    script #"""
        mkdir $out/sub
        { echo c; cat $a/a; } > $out/sub/c
        ln -s sub/c $out/link
        """#
}
build "d" {
    input "b" "c"
    script "cat $b/b $c/sub/c > $out/d"
}
"##;

fn project() -> Project {
    let p = Project::new();
    p.write("r.kdl", RECIPE);
    let greet = p.write("tc/bin/greet", "#!/bin/sh\necho greetings from tc\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(greet, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

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

#[test]
fn every_step_runs_on_a_worker_with_the_hashes_of_a_local_build() {
    let bg = BuildGrid::execution();
    let p = project();
    let recipe = p.path("r.kdl");
    let workers = [
        Worker::start(&recipe, &bg.url(), "w1"),
        Worker::start(&recipe, &bg.url(), "w2"),
    ];
    workers.iter().for_each(Worker::wait_joined);

    let url = bg.url();
    let out = p
        .bake_cmd(&build_args(&url, &["--remote-exec"]))
        .env_remove("CI")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs = || {
        format!(
            "{stderr}\nw1:\n{}\nw2:\n{}",
            workers[0].output(),
            workers[1].output()
        )
    };
    assert!(out.status.success(), "{}", logs());
    let remote: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&remote["built"]), ["a", "b", "c", "d"], "{}", logs());
    // Every step ran on one of the workers; none here.
    let executed = remote["executed"].as_object().unwrap();
    let mut ran: Vec<&str> = executed.keys().map(String::as_str).collect();
    ran.sort();
    assert_eq!(ran, ["a", "b", "c", "d"], "{remote}\n{}", logs());
    for w in executed.values() {
        assert!(w == "w1" || w == "w2", "{remote}");
    }
    assert!(stderr.contains("4 run on workers"), "{}", logs());
    assert!(!stderr.contains("warning:"), "{}", logs());
    let done: usize = workers
        .iter()
        .map(|w| w.output().matches(": exit 0 in").count())
        .sum();
    assert_eq!(done, 4, "{}", logs());
    // The toolchain the worker ran b with is its own copy of tc.
    let b = std::fs::read_to_string(format!("{}/b", remote["outputs"]["b"].as_str().unwrap()));
    assert_eq!(
        b.unwrap(),
        "greetings from tc\nhello x86_64-linux-musl\na\n"
    );
    let c = std::path::Path::new(remote["outputs"]["c"].as_str().unwrap()).join("link");
    assert!(std::fs::symlink_metadata(&c)
        .unwrap()
        .file_type()
        .is_symlink());

    // The same recipe built here, without the remote: the same outputs.
    let local = project();
    let (code, here) = local.build("r.kdl", &[]);
    assert_eq!(code, 0, "{here}");
    assert_eq!(ids(&here["built"]), ["a", "b", "c", "d"]);
    assert_eq!(hashes(&here), hashes(&remote));
}

#[test]
fn a_failing_step_fails_as_it_would_here_with_its_log() {
    let bg = BuildGrid::execution();
    let p = Project::new();
    p.write(
        "r.kdl",
        r#"build "bad" {
    script "echo on the worker; exit 3"
}"#,
    );
    let worker = Worker::start(&p.path("r.kdl"), &bg.url(), "w1");
    worker.wait_joined();
    let out = p
        .bake_cmd(&[
            "build",
            "r.kdl",
            "--json",
            "--remote",
            &bg.url(),
            "--remote-exec",
        ])
        .env_remove("CI")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}\n{}", worker.output());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&json["failed"]), ["bad"], "{json}");
    assert!(stderr.contains("failed on worker w1"), "{stderr}");
    assert!(stderr.contains("| on the worker"), "{stderr}");
}

#[test]
fn a_lease_whose_toolchain_changed_is_refused_and_a_step_no_worker_takes_runs_here() {
    let bg = BuildGrid::execution();
    let worker_side = project();
    let worker = Worker::start(&worker_side.path("r.kdl"), &bg.url(), "w1");
    worker.wait_joined();
    // The worker's machine gets another tc after it joined: it still
    // advertises the identity it joined with, so BuildGrid hands it b.
    worker_side.write(
        "tc/bin/greet",
        "#!/bin/sh\necho greetings from a newer tc\n",
    );

    let url = bg.url();
    let build = |p: &Project, extra: &[&str]| {
        let args = build_args(&url, &[&["--remote-exec"][..], extra].concat());
        let started = std::time::Instant::now();
        let out = p.bake_cmd(&args).env_remove("CI").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let logs = format!("{stderr}\nw1:\n{}", worker.output());
        assert!(out.status.success(), "{logs}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (json, stderr, logs, started.elapsed())
    };
    let executed = |json: &serde_json::Value| {
        let mut v: Vec<String> = json["executed"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    };

    let p = project();
    let (json, stderr, logs, _) = build(&p, &[]);
    assert_eq!(ids(&json["built"]), ["a", "b", "c", "d"], "{logs}");
    assert_eq!(executed(&json), ["a", "c", "d"], "{logs}");
    assert!(worker.output().contains("refused lease"), "{logs}");
    assert!(
        worker.output().contains("changed since this worker joined"),
        "{logs}"
    );
    assert_eq!(stderr.matches("warning:").count(), 1, "{logs}");
    assert!(
        stderr.contains("cannot run b") && stderr.contains("building it here"),
        "{logs}"
    );
    // b was built here, with this machine's tc.
    let b = std::fs::read_to_string(format!("{}/b", json["outputs"]["b"].as_str().unwrap()));
    assert_eq!(
        b.unwrap(),
        "greetings from tc\nhello x86_64-linux-musl\na\n"
    );
    // The worker joined again with the tc it has now.
    assert!(
        common::wait_for(30, || worker.output().contains("joined again")),
        "{logs}"
    );

    // Now no worker has the tc b needs: it waits for one 5 s, then runs here.
    let q = project();
    let (json, stderr, logs, took) = build(&q, &["--remote-queue-timeout", "5"]);
    assert_eq!(ids(&json["built"]), ["a", "b", "c", "d"], "{logs}");
    assert!(!executed(&json).contains(&"b".to_string()), "{logs}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{logs}");
    assert!(stderr.contains("no worker took it within 5s"), "{logs}");
    assert!(took < std::time::Duration::from_secs(120), "{logs}");
}
