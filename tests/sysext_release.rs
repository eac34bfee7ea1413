//! sysext images and release directories from a small recipe: real images listed
//! with unsquashfs, merged by systemd-sysext, checked with sha256sum.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::Project;

/// A static program built with the host's gcc, packed per version and arch.
fn project(versions: &[&str], format: &str) -> Project {
    let p = Project::new();
    write_recipe(&p, versions, format);
    p.write(
        "files/app/usr/lib/systemd/system/app.service",
        "[Service]\nExecStart=/usr/bin/app\n",
    );
    p
}

fn write_recipe(p: &Project, versions: &[&str], format: &str) {
    let versions: Vec<String> = versions.iter().map(|v| format!("\"{v}\"")).collect();
    p.write(
        "r.kdl",
        &format!(
            r##"
matrix {{
    version {versions}
    arch "x86-64" "arm64"
}}
build "app" {{
    script #"""
        printf '#include <stdio.h>\nint main(void) {{{{ puts("app {{version}}"); return 0; }}}}\n' > app.c
        gcc -static -O2 -o app app.c
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
    base-url "http://127.0.0.1:8080/ext/app/"
}}
"##,
            versions = versions.join(" ")
        ),
    );
}

fn release(p: &Project, dir: &str) {
    let out = p.bake(&["release", "r.kdl", "--out", dir, "-j", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn image_tree_and_extension_release_are_exact() {
    let p = project(&["1.0"], "squashfs");
    release(&p, "pub");
    let image = p.path("pub/app-v1.0-x86-64.raw");
    let listing = run(Command::new("unsquashfs")
        .arg("-l")
        .arg("-d")
        .arg("")
        .arg(&image));
    let mut lines: Vec<&str> = listing.lines().filter(|l| !l.is_empty()).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "/usr",
            "/usr/bin",
            "/usr/bin/app",
            "/usr/lib",
            "/usr/lib/extension-release.d",
            "/usr/lib/extension-release.d/extension-release.app",
            "/usr/lib/systemd",
            "/usr/lib/systemd/system",
            "/usr/lib/systemd/system/app.service",
        ]
    );
    let release = run(Command::new("unsquashfs")
        .args(["-cat"])
        .arg(&image)
        .arg("usr/lib/extension-release.d/extension-release.app"));
    assert_eq!(
        release,
        "ID=_any\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n"
    );
    let arm = run(Command::new("unsquashfs")
        .args(["-cat"])
        .arg(p.path("pub/app-v1.0-arm64.raw"))
        .arg("usr/lib/extension-release.d/extension-release.app"));
    assert!(arm.contains("ARCHITECTURE=arm64\n"));
    // Everything root-owned, modes normalised.
    let long = run(Command::new("unsquashfs").arg("-ll").arg(&image));
    for line in long.lines().filter(|l| l.contains("squashfs-root/")) {
        assert!(line.contains("root/root"), "{line}");
        assert!(
            line.starts_with("drwxr-xr-x")
                || line.starts_with("-rwxr-xr-x")
                || line.starts_with("-rw-r--r--"),
            "{line}"
        );
    }
}

#[test]
fn systemd_sysext_merges_the_host_arch_and_refuses_the_other() {
    let p = project(&["1.0"], "squashfs");
    release(&p, "pub");
    let image = |f: &str| p.path("pub").join(f);
    let (ran, log) = common::merge_and_run(
        &image("app-v1.0-x86-64.raw"),
        "app",
        p.dir.path(),
        "usr/bin/app",
    );
    assert_eq!(ran, "app 1.0", "{log}");
    let (ran, log) = common::merge_and_run(
        &image("app-v1.0-arm64.raw"),
        "app",
        p.dir.path(),
        "usr/bin/app",
    );
    assert_eq!(ran, "refused", "{log}");
}

#[test]
fn release_directory_is_complete_and_consistent() {
    let p = project(&["1.0"], "squashfs");
    release(&p, "pub");
    let dir = p.path("pub");
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dir));
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2);
    let conf = fs::read_to_string(dir.join("app.conf")).unwrap();
    assert_eq!(conf, fs::read_to_string(dir.join("app.transfer")).unwrap());
    assert!(
        conf.contains("Path=http://127.0.0.1:8080/ext/app/\n"),
        "{conf}"
    );
    assert!(conf.starts_with("[Transfer]\nVerify=false\n"), "{conf}");
    // sysupdate.d(5): MatchPattern= is mandatory in [Source] and in [Target].
    for section in ["[Source]", "[Target]"] {
        let body = conf
            .split(section)
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        assert!(
            body.contains("\nMatchPattern=app-@v-%a.raw\n"),
            "{section}: {conf}"
        );
    }
    assert!(conf.contains("CurrentSymlink=/etc/extensions/app.raw\n"));
    let noop = fs::read_to_string(dir.join("noop.conf")).unwrap();
    assert_eq!(
        noop.matches("MatchPattern=invalid@v.raw\n").count(),
        2,
        "{noop}"
    );
    assert!(fs::read_to_string(dir.join("index.md"))
        .unwrap()
        .contains("**Unsigned.**"));
    assert!(!dir.join("SHA256SUMS.gpg").exists());

    let sha = sums
        .lines()
        .find(|l| l.ends_with("app-v1.0-x86-64.raw"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let url = "http://127.0.0.1:8080/ext/app/app-v1.0-x86-64.raw";
    let bu: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(dir.join("app-v1.0-x86-64.bu")).unwrap()).unwrap();
    assert_eq!(bu["variant"], "flatcar");
    assert_eq!(bu["version"], "1.0.0");
    let files = bu["storage"]["files"].as_sequence().unwrap();
    assert_eq!(files[0]["path"], "/opt/extensions/app/app-v1.0-x86-64.raw");
    assert_eq!(files[0]["contents"]["source"], url);
    assert_eq!(
        files[0]["contents"]["verification"]["hash"],
        format!("sha256-{sha}").as_str()
    );
    assert_eq!(files[1]["path"], "/etc/sysupdate.app.d/app.conf");
    assert_eq!(
        files[1]["contents"]["source"],
        "http://127.0.0.1:8080/ext/app/app.conf"
    );
    assert_eq!(
        files[2]["contents"]["source"],
        "http://127.0.0.1:8080/ext/app/noop.conf"
    );
    // Each file has exactly one source: the bakery's snippet has none on one, two on another.
    for f in files {
        assert_eq!(
            f["contents"]
                .as_mapping()
                .unwrap()
                .keys()
                .filter(|k| *k == "source")
                .count(),
            1
        );
    }
    assert_eq!(bu["storage"]["links"][0]["path"], "/etc/extensions/app.raw");
    let dropin = bu["systemd"]["units"][1]["dropins"][0]["contents"]
        .as_str()
        .unwrap();
    assert!(
        dropin.contains("systemd-sysupdate -C app update"),
        "{dropin}"
    );

    let ign: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("app-v1.0-x86-64.ign")).unwrap())
            .unwrap();
    // Butane flatcar 1.0.0 translates to Ignition spec 3.3.0.
    assert_eq!(ign["ignition"]["version"], "3.3.0");
    assert_eq!(ign["storage"]["files"][0]["mode"], 420);
    assert_eq!(ign["storage"]["files"][0]["contents"]["source"], url);
    assert_eq!(
        ign["storage"]["files"][0]["contents"]["verification"]["hash"],
        format!("sha256-{sha}")
    );
    assert_eq!(
        ign["storage"]["links"][0]["target"],
        "/opt/extensions/app/app-v1.0-x86-64.raw"
    );
    assert_eq!(
        ign["systemd"]["units"][1]["dropins"][0]["contents"]
            .as_str()
            .unwrap(),
        dropin
    );

    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 2);
    assert!(fs::read_to_string(dir.join("index.md"))
        .unwrap()
        .contains("| 1.0 | arm64 |"));
}

#[test]
fn snippets_pass_butanes_schema_and_ignitions_validator() {
    let p = project(&["1.0"], "squashfs");
    release(&p, "pub");
    assert_eq!(common::check_snippets(&p.path("pub")), 2);
    // The checks can fail: an unknown key, and the spec the .ign used to declare.
    let bu = p.path("pub/app-v1.0-x86-64.bu");
    let text = fs::read_to_string(&bu).unwrap();
    fs::write(
        &bu,
        text.replace("hard: false", "hard: false\n      hardlink: false"),
    )
    .unwrap();
    let (ok, out) = common::outcome(
        Command::new(common::venv_bin("check-jsonschema"))
            .args(["--default-filetype", "yaml", "--schemafile"])
            .arg(common::root().join("tests/schemas/butane-flatcar-1.0.0.json"))
            .arg(&bu),
    );
    assert!(!ok && out.contains("hardlink"), "{out}");
    let ign = p.path("pub/app-v1.0-x86-64.ign");
    let text = fs::read_to_string(&ign).unwrap();
    fs::write(&ign, text.replace("\"3.3.0\"", "\"3.4.0\"")).unwrap();
    let (ok, out) = common::outcome(Command::new("ignition-validate").arg(&ign));
    assert!(!ok, "ignition-validate 2.14 accepted spec 3.4.0: {out}");
}

#[test]
fn a_new_version_keeps_the_old_images_listed() {
    let p = project(&["1.0"], "squashfs");
    release(&p, "pub");
    write_recipe(&p, &["1.1"], "squashfs");
    release(&p, "pub");
    let sums = fs::read_to_string(p.path("pub/SHA256SUMS")).unwrap();
    let files: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "app-v1.0-arm64.raw",
            "app-v1.0-x86-64.raw",
            "app-v1.1-arm64.raw",
            "app-v1.1-x86-64.raw"
        ]
    );
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(p.path("pub/index.json")).unwrap()).unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 4);
    assert!(
        p.path("pub/app-v1.0-x86-64.bu").exists() && p.path("pub/app-v1.1-x86-64.ign").exists()
    );
}

fn image_bytes(format: &str) -> (Vec<u8>, Vec<u8>) {
    let build = || {
        let p = project(&["1.0"], format);
        release(&p, "pub");
        fs::read(p.path("pub/app-v1.0-x86-64.raw")).unwrap()
    };
    (build(), build())
}

#[test]
fn squashfs_images_rebuild_byte_identical() {
    let (a, b) = image_bytes("squashfs");
    assert!(a == b, "squashfs images differ");
}

#[test]
fn erofs_images_rebuild_byte_identical() {
    let (a, b) = image_bytes("erofs");
    assert!(a == b, "erofs images differ");
    assert_eq!(
        &a[1024..1028],
        &[0xe2, 0xe1, 0xf5, 0xe0],
        "not an erofs image"
    );
}

/// A sysext whose repository files hold `bad`, set up by `make`; building it must
/// fail naming `path`.
fn refused(bad: &str, make: impl Fn(&Path), expect: &str) {
    let p = Project::new();
    p.write(
        "r.kdl",
        r#"
build "app" {
    script "mkdir -p $out/usr/bin && echo x > $out/usr/bin/app"
}
sysext "app" {
    input "app"
    files "files"
    version "1"
    arch "x86-64"
}
"#,
    );
    fs::create_dir_all(p.path("files/usr")).unwrap();
    make(&p.path("files"));
    let out = p.bake(&["build", "r.kdl", "sysext:app"]);
    assert_eq!(out.status.code(), Some(1), "{bad}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("refusing to pack `{bad}`")), "{err}");
    assert!(err.contains(expect), "{err}");
}

#[test]
fn trees_an_image_may_not_carry_are_refused() {
    refused(
        "etc",
        |f| fs::create_dir_all(f.join("etc")).unwrap(),
        "only usr/ and opt/",
    );
    refused(
        "usr/sbin",
        |f| fs::create_dir_all(f.join("usr/sbin")).unwrap(),
        "shadows",
    );
    refused(
        "usr/lib/os-release",
        |f| {
            fs::create_dir_all(f.join("usr/lib")).unwrap();
            fs::write(f.join("usr/lib/os-release"), "ID=x\n").unwrap();
        },
        "os-release",
    );
    let with_mode = |mode: u32| {
        move |f: &Path| {
            fs::write(f.join("usr/tool"), "x").unwrap();
            fs::set_permissions(f.join("usr/tool"), fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    refused("usr/tool", with_mode(0o4755), "setuid");
    refused("usr/tool", with_mode(0o2755), "setgid");
    refused(
        "usr/fifo",
        |f| {
            assert!(Command::new("mkfifo")
                .arg(f.join("usr/fifo"))
                .status()
                .unwrap()
                .success());
        },
        "fifos",
    );
    refused(
        "usr/null",
        |f| {
            assert!(Command::new("mknod")
                .arg(f.join("usr/null"))
                .args(["c", "1", "3"])
                .status()
                .unwrap()
                .success());
        },
        "device nodes",
    );
}
