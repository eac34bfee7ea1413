//! Independent rebuilds of a release: `bake release` writes manifest.json, and
//! `bake rebuild-check` rebuilds from the recipe in an empty store, from a
//! directory or over HTTP (python's http.server on loopback), and names a
//! tampered image or the first instance a changed recipe builds differently.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{json_of, Project};

const RECIPE: &str = r##"
matrix {
    arch "x86-64" "arm64"
}
build "app" {
    script #"""
        printf '#include <stdio.h>\nint main(void) { puts("app"); return 0; }\n' > app.c
        gcc -static -O2 -o app app.c
        mkdir -p $out/usr/bin
        cp app $out/usr/bin/app
        """#
}
build "conf" {
    script "mkdir -p $out/usr/lib/app && echo 'level 1' > $out/usr/lib/app/app.conf"
}
sysext "app" {
    input "app"
    input "conf"
    version "1.0"
    arch "{arch}"
}
release "app" {
    sysext "app"
    base-url "http://127.0.0.1:8080/ext/app/"
}
"##;

fn project() -> Project {
    let p = Project::new();
    p.write("r.kdl", RECIPE);
    // The recipe's repository, so the manifest names it from there.
    fs::create_dir_all(p.path(".git")).unwrap();
    let out = p.bake(&["release", "r.kdl", "--out", "pub", "-j", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// `bake rebuild-check ARGS... --json` with the store `store`: (exit status, JSON).
fn rebuild_check(p: &Project, store: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["rebuild-check"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "-j", "2"]);
    let out = p.bake_cmd(&all).env("BAKE_CACHE", store).output().unwrap();
    (out.status.code().unwrap_or(-1), json_of(&out))
}

fn results(json: &serde_json::Value) -> Vec<(String, String)> {
    json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["file"].as_str().unwrap().to_string(),
                i["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// python3's http.server on an ephemeral loopback port; killed when dropped.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn serve(dir: &Path) -> HttpServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let line = rx.recv_timeout(Duration::from_secs(20));
        let port = line.ok().and_then(|l| {
            l.split(" port ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        let mut server = HttpServer { child, port: 0 };
        server.port = port.expect("http.server did not say its port within 20 s");
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_manifest_names_each_image_and_its_closure_by_key() {
    let p = project();
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(p.path("pub/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "bake-release-manifest-v1");
    assert_eq!(manifest["bake"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["release"], "release:app");
    assert_eq!(manifest["recipe"], "r.kdl");
    let sums = fs::read_to_string(p.path("pub/SHA256SUMS")).unwrap();
    let images = manifest["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        let file = image["file"].as_str().unwrap();
        let sha = image["sha256"].as_str().unwrap();
        assert!(
            sums.contains(&format!("{sha}  {file}")),
            "{file} {sha} not in {sums}"
        );
        assert!(image["id"].as_str().unwrap().starts_with("sysext:app@"));
        for field in ["build_key", "output"] {
            assert_eq!(image[field].as_str().unwrap().len(), 64, "{image}");
        }
        let closure: Vec<&str> = image["closure"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        // The builds do not vary by arch, so both images share them.
        assert_eq!(closure, ["app", "conf"]);
        for b in image["closure"].as_array().unwrap() {
            assert_eq!(b["build_key"].as_str().unwrap().len(), 64, "{b}");
        }
    }
}

#[test]
fn a_new_version_keeps_the_entries_of_the_images_still_published() {
    let p = project();
    p.write(
        "r.kdl",
        &RECIPE.replace("version \"1.0\"", "version \"2.0\""),
    );
    let out = p.bake(&["release", "r.kdl", "--out", "pub", "-j", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(p.path("pub/manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "app-v1.0-arm64.raw",
            "app-v1.0-x86-64.raw",
            "app-v2.0-arm64.raw",
            "app-v2.0-x86-64.raw"
        ]
    );
}

#[test]
fn a_release_rebuilt_from_an_empty_store_is_identical_from_a_directory_and_over_http() {
    let p = project();
    let fresh = p.path("fresh-store");
    let (code, json) = rebuild_check(&p, &fresh, &["pub"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        (json["identical"].as_u64(), json["total"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(
        fs::read_dir(fresh.join("keys")).unwrap().count() >= 4,
        "the empty store built the closure itself"
    );
    let server = HttpServer::serve(&p.path("pub"));
    let url = format!("http://127.0.0.1:{}/", server.port);
    let (code, json) = rebuild_check(&p, &fresh, &[&url, "--recipe", "r.kdl"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["identical"], 2, "{json}");
}

#[test]
fn a_tampered_image_and_a_changed_recipe_are_named() {
    let p = project();
    // One byte of the published x86-64 image changed.
    let image = p.path("pub/app-v1.0-x86-64.raw");
    let mut bytes = fs::read(&image).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&image, &bytes).unwrap();
    let (code, json) = rebuild_check(&p, &p.store(), &["pub"]);
    assert_eq!(code, 1, "{json}");
    let mut got = results(&json);
    got.sort();
    assert_eq!(
        got,
        [
            ("app-v1.0-arm64.raw".to_string(), "identical".to_string()),
            ("app-v1.0-x86-64.raw".to_string(), "tampered".to_string())
        ]
    );
    assert_eq!(json["tampered"], 1);
    bytes[middle] ^= 0xff;
    fs::write(&image, &bytes).unwrap();

    // The recipe no longer builds what was published: conf's output changed.
    p.write("r.kdl", &RECIPE.replace("level 1", "level 2"));
    let (code, json) = rebuild_check(&p, &p.store(), &["pub"]);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["different"], 2, "{json}");
    for image in json["images"].as_array().unwrap() {
        let first = image["first_difference"].as_str().unwrap();
        assert!(first.starts_with("conf: build key"), "{first}");
        assert_ne!(image["rebuilt_sha256"], image["sha256"]);
    }
}

#[test]
fn without_a_manifest_or_recipe_it_says_what_is_missing() {
    let p = project();
    fs::create_dir_all(p.path("empty")).unwrap();
    let out = p.bake(&["rebuild-check", "empty"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no release manifest"), "{err}");
    fs::rename(p.path("r.kdl"), p.path("moved.kdl")).unwrap();
    let out = p.bake(&["rebuild-check", "pub"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --recipe FILE"), "{err}");
    let out = p.bake(&["rebuild-check", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    // A manifest naming a path outside the release is refused before anything is read.
    fs::rename(p.path("moved.kdl"), p.path("r.kdl")).unwrap();
    let manifest = fs::read_to_string(p.path("pub/manifest.json")).unwrap();
    fs::write(
        p.path("pub/manifest.json"),
        manifest.replace("\"app-v1.0-arm64.raw\"", "\"../../etc/passwd\""),
    )
    .unwrap();
    let out = p.bake(&["rebuild-check", "pub"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not the file name of an image"), "{err}");
}
