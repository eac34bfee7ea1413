//! A release hosts can trust: signatures checked with gpgv as systemd-pull
//! checks them, SBOMs validated by SPDX's own tools, provenance matched against
//! the image, and dm-verity disk images read by systemd-dissect, veritysetup and
//! systemd-sysext.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{loop_locked, outcome, Project};
use sha2::Digest as _;

/// A program built from a source tarball (file://, with its version and
/// license) with a toolchain of the project's, packed per version and arch.
fn project(format: &str) -> Project {
    let p = Project::new();
    p.write(
        "upstream/app-1.0/app.c",
        "#include <stdio.h>\nint main(void) { puts(\"app 1.0\"); return 0; }\n",
    );
    let tarball = p.path("app-1.0.tar.gz");
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "-czf",
        ])
        .arg(&tarball)
        .arg("-C")
        .arg(p.path("upstream"))
        .arg("app-1.0")
        .status()
        .unwrap();
    assert!(status.success());
    let sha = hex(&sha2::Sha256::digest(fs::read(&tarball).unwrap()));
    p.write("tc/bin/cc", "#!/bin/sh\nexec gcc \"$@\"\n");
    fs::set_permissions(
        p.path("tc/bin/cc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    p.write(
        "files/app/usr/lib/systemd/system/app.service",
        "[Service]\nExecStart=/usr/bin/app\n",
    );
    p.write(
        "r.kdl",
        &format!(
            r##"
matrix {{
    version "1.0"
    arch "x86-64" "arm64"
}}
source "app" {{
    url "file://{tarball}"
    hash "sha256:{sha}"
    version "{{version}}"
    license "MIT"
}}
toolchain "host" {{
    target "x86_64-linux-gnu" arch="x86-64"
    target "aarch64-linux-gnu" arch="arm64"
    path "tc/bin"
    identity "tc/bin"
    version "gcc -dumpversion"
}}
build "app" {{
    source "app"
    toolchain "host"
    script #"""
        cc -static -O2 -o app app.c
        mkdir -p $out/usr/bin
        cp app $out/usr/bin/app
        """#
}}
sysext "app" {{
    input "app"
    files "files/app"
    version "{{version}}"
    arch "{{arch}}"
    format "{format}"
}}
release "app" {{
    sysext "app"
    base-url "https://updates.example.org/ext/app/"
}}
"##,
            tarball = tarball.display(),
        ),
    );
    p
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn release(p: &Project, extra: &[&str]) -> PathBuf {
    let mut args = vec!["release", "r.kdl", "--out", "pub", "-j", "2"];
    args.extend_from_slice(extra);
    let out = p.bake(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.path("pub")
}

/// A GnuPG home with one signing key; its agent is stopped when dropped.
struct Gnupg {
    home: tempfile::TempDir,
    fingerprint: String,
}

impl Gnupg {
    fn new(passphrase: &str) -> Gnupg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        let mut g = Gnupg {
            home,
            fingerprint: String::new(),
        };
        let (ok, text) = outcome(g.gpg().args([
            "--passphrase",
            passphrase,
            "--pinentry-mode",
            "loopback",
            "--quick-gen-key",
            "bake test <release@bake.invalid>",
            "ed25519",
            "sign",
            "never",
        ]));
        assert!(ok, "{text}");
        let (ok, listing) = outcome(g.gpg().args(["--with-colons", "--list-secret-keys"]));
        assert!(ok, "{listing}");
        g.fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        g
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--quiet"]);
        c
    }

    /// The secret key, armored, as a file.
    fn export_secret(&self, passphrase: &str, to: &Path) {
        let out = self
            .gpg()
            .args([
                "--passphrase",
                passphrase,
                "--pinentry-mode",
                "loopback",
                "--armor",
            ])
            .args(["--export-secret-keys", &self.fingerprint])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty());
        fs::write(to, out.stdout).unwrap();
    }
}

impl Drop for Gnupg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .status();
    }
}

fn gpgv(keyring: &Path, signature: &Path, file: &Path) -> (bool, String) {
    outcome(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(keyring)
            .arg(signature)
            .arg(file),
    )
}

#[test]
fn signed_release_verifies_with_the_published_key_and_rejects_tampering() {
    let p = project("squashfs");
    let g = Gnupg::new("correct horse");
    let key = p.path("secret.asc");
    g.export_secret("correct horse", &key);
    p.write("passphrase", "correct horse\n");
    let dir = release(
        &p,
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--passphrase-file",
            "passphrase",
        ],
    );
    let keyring = dir.join("app.gpg");
    // Binary, as systemd-pull's gpg --keyring needs it ("invalid packet (ctb=2d)"
    // is what an armored file gives); the armored copy is beside it.
    let bytes = fs::read(&keyring).unwrap();
    assert!(bytes[0] & 0x80 != 0, "not a binary OpenPGP packet");
    assert!(fs::read_to_string(dir.join("app.asc"))
        .unwrap()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let (ok, text) = gpgv(
        &keyring,
        &dir.join("SHA256SUMS.gpg"),
        &dir.join("SHA256SUMS"),
    );
    assert!(ok, "{text}");
    assert!(text.contains("Good signature"), "{text}");
    for doc in [
        "app-v1.0-x86-64.spdx.json",
        "app-v1.0-x86-64.intoto.json",
        "app-v1.0-arm64.spdx.json",
        "app-v1.0-arm64.intoto.json",
        "manifest.json",
    ] {
        let (ok, text) = gpgv(&keyring, &dir.join(format!("{doc}.sig")), &dir.join(doc));
        assert!(ok, "{doc}: {text}");
    }
    for conf in ["app.conf", "app.transfer"] {
        let text = fs::read_to_string(dir.join(conf)).unwrap();
        assert!(text.starts_with("[Transfer]\nVerify=true\n"), "{text}");
    }
    // The snippets install the binary key where systemd-sysupdate reads it.
    let ign: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("app-v1.0-x86-64.ign")).unwrap())
            .unwrap();
    let file = ign["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/systemd/import-pubring.gpg")
        .expect("the snippet installs the keyring");
    let source = file["contents"]["source"].as_str().unwrap();
    let b64 = source.strip_prefix("data:;base64,").unwrap();
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(b64.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.stdout, bytes);
    assert_eq!(common::check_snippets(&dir), 2);
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["verify"], true);
    assert_eq!(index["signing"]["fingerprint"], g.fingerprint.as_str());
    assert!(fs::read_to_string(dir.join("index.md"))
        .unwrap()
        .contains("**Signed.**"));

    // A changed SHA256SUMS fails the signature.
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let first = sums.chars().next().unwrap();
    let swapped = if first == '0' { '1' } else { '0' };
    fs::write(dir.join("SHA256SUMS"), format!("{swapped}{}", &sums[1..])).unwrap();
    let (ok, text) = gpgv(
        &keyring,
        &dir.join("SHA256SUMS.gpg"),
        &dir.join("SHA256SUMS"),
    );
    assert!(!ok && text.contains("BAD signature"), "{text}");
    fs::write(dir.join("SHA256SUMS"), &sums).unwrap();
    // A changed image keeps the signature good but fails its signed checksum.
    let image = dir.join("app-v1.0-x86-64.raw");
    let mut bytes = fs::read(&image).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&image, bytes).unwrap();
    assert!(
        gpgv(
            &keyring,
            &dir.join("SHA256SUMS.gpg"),
            &dir.join("SHA256SUMS")
        )
        .0
    );
    let (ok, text) = outcome(
        Command::new("sha256sum")
            .args(["--check", "SHA256SUMS"])
            .current_dir(&dir),
    );
    assert!(
        !ok && text.contains("app-v1.0-x86-64.raw: FAILED"),
        "{text}"
    );
}

#[test]
fn a_key_from_the_users_keyring_signs_and_unsigned_releases_say_so() {
    let p = project("squashfs");
    let g = Gnupg::new("");
    let out = p
        .bake_cmd(&[
            "release",
            "r.kdl",
            "--out",
            "pub",
            "--sign-key",
            &g.fingerprint,
        ])
        .env("GNUPGHOME", g.home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = p.path("pub");
    assert!(
        gpgv(
            &dir.join("app.gpg"),
            &dir.join("SHA256SUMS.gpg"),
            &dir.join("SHA256SUMS")
        )
        .0
    );
    // Published again unsigned, nothing claims a signature any more.
    release(&p, &[]);
    for gone in [
        "SHA256SUMS.gpg",
        "app.gpg",
        "app.asc",
        "app-v1.0-x86-64.spdx.json.sig",
        "manifest.json.sig",
    ] {
        assert!(!dir.join(gone).exists(), "{gone} left behind");
    }
    assert!(fs::read_to_string(dir.join("app.conf"))
        .unwrap()
        .contains("Verify=false"));
    let bu = fs::read_to_string(dir.join("app-v1.0-x86-64.bu")).unwrap();
    assert!(!bu.contains("import-pubring"), "{bu}");
    // A key that is not there stops the release before anything builds.
    let out = p
        .bake_cmd(&[
            "release",
            "r.kdl",
            "--out",
            "other",
            "--sign-key",
            "nobody@bake.invalid",
        ])
        .env("GNUPGHOME", g.home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody@bake.invalid"), "{err}");
    assert!(!p.path("other").exists());
}

#[test]
fn sbom_is_valid_spdx_and_lists_what_the_graph_says() {
    let p = project("squashfs");
    let dir = release(&p, &[]);
    let path = dir.join("app-v1.0-x86-64.spdx.json");
    let (ok, text) = outcome(
        Command::new(common::venv_bin("pyspdxtools"))
            .arg("-i")
            .arg(&path),
    );
    assert!(ok, "pyspdxtools: {text}");
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let packages = doc["packages"].as_array().unwrap();
    let by_name = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name && p["SPDXID"].as_str().unwrap().contains("Source"))
            .cloned()
    };
    let source = by_name("app").expect("the source is listed");
    let sha = fs::read_to_string(p.path("r.kdl")).unwrap();
    let declared = sha
        .split("sha256:")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(source["checksums"][0]["checksumValue"], declared);
    assert_eq!(source["licenseDeclared"], "MIT");
    assert_eq!(source["versionInfo"], "1.0");
    // SPDX download locations are network URLs: a file:// source says where it
    // came from in its comment instead.
    assert_eq!(source["downloadLocation"], "NOASSERTION");
    assert!(source["comment"]
        .as_str()
        .unwrap()
        .contains("app-1.0.tar.gz"));
    assert_eq!(source["packageFileName"], "app-1.0.tar.gz");
    let image = &packages[0];
    let image_sha = hex(&sha2::Sha256::digest(
        fs::read(dir.join("app-v1.0-x86-64.raw")).unwrap(),
    ));
    assert_eq!(image["checksums"][0]["checksumValue"], image_sha.as_str());
    let toolchain = packages
        .iter()
        .find(|p| p["SPDXID"].as_str().unwrap().contains("Toolchain"))
        .expect("the toolchain is listed");
    assert!(toolchain["comment"]
        .as_str()
        .unwrap()
        .contains("x86_64-linux-gnu"));
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fileName"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "./usr/bin/app",
            "./usr/lib/extension-release.d/extension-release.app",
            "./usr/lib/systemd/system/app.service"
        ]
    );
    let id = |p: &serde_json::Value| p["SPDXID"].as_str().unwrap().to_string();
    let rel: Vec<(String, String, String)> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap().to_string(),
                r["relationshipType"].as_str().unwrap().to_string(),
                r["relatedSpdxElement"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let build = packages
        .iter()
        .find(|p| p["SPDXID"].as_str().unwrap().contains("Build"))
        .unwrap();
    for expected in [
        (id(image), "GENERATED_FROM".to_string(), id(build)),
        (id(build), "GENERATED_FROM".to_string(), id(&source)),
        (id(toolchain), "BUILD_TOOL_OF".to_string(), id(build)),
    ] {
        assert!(rel.contains(&expected), "{expected:?} not in {rel:?}");
    }
    // Published at an address (a test server, a LAN mirror), the image's URL is
    // no SPDX download location: the document still validates and names it.
    let out = p.bake(&[
        "release",
        "r.kdl",
        "--out",
        "lan",
        "--base-url",
        "http://127.0.0.1:8000/app/",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lan = p.path("lan/app-v1.0-x86-64.spdx.json");
    let (ok, text) = outcome(
        Command::new(common::venv_bin("pyspdxtools"))
            .arg("-i")
            .arg(&lan),
    );
    assert!(ok, "pyspdxtools: {text}");
    let lan: serde_json::Value = serde_json::from_str(&fs::read_to_string(&lan).unwrap()).unwrap();
    assert_eq!(lan["packages"][0]["downloadLocation"], "NOASSERTION");
    assert!(lan["packages"][0]["comment"]
        .as_str()
        .unwrap()
        .contains("http://127.0.0.1:8000/app/app-v1.0-x86-64.raw"));
    // The validator can fail: a document without its required creation info.
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("creationInfo");
    let bad = p.path("broken.spdx.json");
    fs::write(&bad, broken.to_string()).unwrap();
    let (ok, _) = outcome(
        Command::new(common::venv_bin("pyspdxtools"))
            .arg("-i")
            .arg(&bad),
    );
    assert!(!ok, "pyspdxtools accepted a document without creationInfo");
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["images"][1]["sbom"], "app-v1.0-x86-64.spdx.json");
    assert_eq!(
        index["images"][1]["provenance"],
        "app-v1.0-x86-64.intoto.json"
    );
}

#[test]
fn provenance_subject_is_the_image() {
    let p = project("squashfs");
    let dir = release(&p, &[]);
    for arch in ["x86-64", "arm64"] {
        let st: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dir.join(format!("app-v1.0-{arch}.intoto.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
        let image = format!("app-v1.0-{arch}.raw");
        let sha = hex(&sha2::Sha256::digest(fs::read(dir.join(&image)).unwrap()));
        assert_eq!(st["subject"][0]["name"], image.as_str());
        assert_eq!(st["subject"][0]["digest"]["sha256"], sha.as_str());
        let def = &st["predicate"]["buildDefinition"];
        assert_eq!(
            def["externalParameters"]["target"],
            format!("sysext:app@1.0/{arch}").as_str()
        );
        let key = def["internalParameters"]["buildKey"].as_str().unwrap();
        assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()));
        let deps = def["resolvedDependencies"].as_array().unwrap();
        let source = deps.iter().find(|d| d["name"] == "source:app@1.0").unwrap();
        let recipe = fs::read_to_string(p.path("r.kdl")).unwrap();
        let declared = recipe
            .split("sha256:")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(source["digest"]["sha256"], declared);
        assert!(deps
            .iter()
            .any(|d| d["name"] == format!("toolchain:host@{arch}").as_str()
                && d["digest"]["blake3"]
                    .as_str()
                    .is_some_and(|h| h.len() == 64)));
        assert_eq!(
            st["predicate"]["runDetails"]["builder"]["version"]["bake"],
            env!("CARGO_PKG_VERSION")
        );
    }
}

/// The partitions of a GPT image: (type, uuid, start byte, size in bytes).
fn partitions(image: &Path) -> Vec<(String, String, u64, u64)> {
    let (ok, text) = outcome(Command::new("sfdisk").arg("--json").arg(image));
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap().to_lowercase(),
                p["uuid"].as_str().unwrap().to_lowercase(),
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
            )
        })
        .collect()
}

fn extract(image: &Path, start: u64, size: u64, to: &Path) {
    let bytes = fs::read(image).unwrap();
    fs::write(to, &bytes[start as usize..(start + size) as usize]).unwrap();
}

const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
const VERITY_X86_64: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
const VERITY_SIG_X86_64: &str = "41092b05-9fc8-4523-994f-2def0408b176";

#[test]
fn ddi_images_carry_verity_that_catches_one_flipped_byte() {
    let p = project("ddi");
    let dir = release(&p, &[]);
    let image = dir.join("app-v1.0-x86-64.raw");
    let root_hash = fs::read_to_string(dir.join("app-v1.0-x86-64.roothash"))
        .unwrap()
        .trim()
        .to_string();
    // Named as a host installs it, so its extension-release file matches.
    let installed = p.path("app.raw");
    fs::copy(&image, &installed).unwrap();
    let (ok, text) = outcome(
        loop_locked("systemd-dissect")
            .args(["--json=short"])
            .arg(&installed),
    );
    assert!(ok, "{text}");
    let dissected: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dissected["useSystemExtension"], true, "{text}");
    let mounts: Vec<&serde_json::Value> = dissected["mounts"].as_array().unwrap().iter().collect();
    let root = mounts
        .iter()
        .find(|m| m["designator"] == "root")
        .expect("a root partition");
    assert_eq!(root["fstype"], "erofs", "{text}");
    assert_eq!(root["architecture"], "x86-64", "{text}");
    assert!(
        mounts.iter().any(|m| m["designator"] == "root-verity"),
        "no verity partition: {text}"
    );
    let parts = partitions(&image);
    assert_eq!(parts.len(), 2);
    let (ty, data_uuid, start, size) = &parts[0];
    assert_eq!(ty, ROOT_X86_64);
    assert_eq!(parts[1].0, VERITY_X86_64);
    // The partition UUIDs are the root hash's halves, as the DDI specification says.
    assert_eq!(data_uuid.replace('-', ""), root_hash[..32]);
    assert_eq!(parts[1].1.replace('-', ""), root_hash[32..]);
    let data = p.path("data.img");
    let hash = p.path("hash.img");
    extract(&image, *start, *size, &data);
    extract(&image, parts[1].2, parts[1].3, &hash);
    let verify = |data: &Path| {
        outcome(
            Command::new("veritysetup")
                .arg("verify")
                .arg(data)
                .arg(&hash)
                .arg(&root_hash),
        )
    };
    let (ok, text) = verify(&data);
    assert!(ok, "veritysetup verify: {text}");
    let mut bytes = fs::read(&data).unwrap();
    bytes[1024] ^= 0x01;
    fs::write(&data, bytes).unwrap();
    let (ok, text) = verify(&data);
    assert!(!ok, "a flipped byte passed verification: {text}");

    let (ran, log) = common::merge_and_run(&image, "app", p.dir.path(), "usr/bin/app");
    assert_eq!(ran, "app 1.0", "{log}");
    assert!(common::check_snippets(&dir) == 2);
}

#[test]
fn ddi_images_rebuild_byte_identical() {
    let build = || {
        let p = project("ddi");
        fs::read(release(&p, &[]).join("app-v1.0-x86-64.raw")).unwrap()
    };
    assert!(build() == build(), "DDI images differ");
}

#[test]
fn a_verity_key_adds_the_signature_partition() {
    let p = project("ddi");
    let (key, cert) = (p.path("verity.key"), p.path("verity.crt"));
    let (ok, text) = outcome(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=bake test verity"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    assert!(ok, "{text}");
    let dir = release(
        &p,
        &[
            "--verity-key",
            key.to_str().unwrap(),
            "--verity-cert",
            cert.to_str().unwrap(),
        ],
    );
    let image = dir.join("app-v1.0-x86-64.raw");
    let root_hash = fs::read_to_string(dir.join("app-v1.0-x86-64.roothash"))
        .unwrap()
        .trim()
        .to_string();
    let parts = partitions(&image);
    assert_eq!(
        parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        [ROOT_X86_64, VERITY_X86_64, VERITY_SIG_X86_64]
    );
    let sig = p.path("sig.json");
    extract(&image, parts[2].2, parts[2].3, &sig);
    let raw = fs::read(&sig).unwrap();
    assert_eq!(raw.len() % 4096, 0);
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let json: serde_json::Value = serde_json::from_slice(&raw[..end]).unwrap();
    assert_eq!(json["rootHash"], root_hash.as_str());
    let der = p.path("sig.der");
    let decoded = Command::new("base64")
        .arg("-d")
        .arg("-i")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin
                .take()
                .unwrap()
                .write_all(json["signature"].as_str().unwrap().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    fs::write(&der, decoded.stdout).unwrap();
    let content = p.path("roothash.txt");
    let check = |content_text: &str| {
        fs::write(&content, content_text).unwrap();
        outcome(
            Command::new("openssl")
                .args([
                    "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
                ])
                .arg("-in")
                .arg(&der)
                .arg("-content")
                .arg(&content)
                .arg("-CAfile")
                .arg(&cert)
                .arg("-out")
                .arg("/dev/null"),
        )
    };
    let (ok, text) = check(&root_hash);
    assert!(ok, "the root hash signature does not verify: {text}");
    let other = format!("{}0", &root_hash[..63]);
    assert!(
        !check(&other).0,
        "a signature of another root hash verified"
    );
    // The signature has no signing time in it: signing again gives the same image.
    let again = p.bake(&[
        "release",
        "r.kdl",
        "--out",
        "again",
        "--verity-key",
        key.to_str().unwrap(),
        "--verity-cert",
        cert.to_str().unwrap(),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        fs::read(&image).unwrap() == fs::read(p.path("again/app-v1.0-x86-64.raw")).unwrap(),
        "a second signature changed the image"
    );
    // The SBOM and provenance name the signed image.
    let sha = hex(&sha2::Sha256::digest(fs::read(&image).unwrap()));
    let st: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("app-v1.0-x86-64.intoto.json")).unwrap())
            .unwrap();
    assert_eq!(st["subject"][0]["digest"]["sha256"], sha.as_str());
    let (ok, text) = outcome(
        loop_locked("systemd-dissect")
            .args(["--json=short"])
            .arg(&image),
    );
    assert!(ok, "{text}");
    assert!(text.contains("root-verity-sig"), "{text}");
}
