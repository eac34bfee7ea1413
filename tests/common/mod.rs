//! Helpers shared by the integration tests: a temporary project with its own
//! store, and bake run as a real process.
#![allow(dead_code)]

pub mod buildgrid;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `NAME.tar` holding the directory `pkg/` with `files` (name, text), and
    /// its sha256 in hex.
    pub fn tarball(&self, name: &str, files: &[(&str, &str)]) -> (PathBuf, String) {
        use sha2::Digest as _;
        let staged = self.path(&format!("{name}.staged"));
        std::fs::create_dir_all(staged.join("pkg")).unwrap();
        for (file, text) in files {
            std::fs::write(staged.join("pkg").join(file), text).unwrap();
        }
        let tarball = self.path(&format!("{name}.tar"));
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&staged)
            .arg("-cf")
            .arg(&tarball)
            .arg("pkg")
            .status()
            .unwrap();
        assert!(tar.success());
        let sha = format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(&tarball).unwrap())
        );
        (tarball, sha)
    }

    /// Runs bake with `--cache` pointing at this project's store.
    pub fn bake(&self, args: &[&str]) -> Output {
        self.bake_cmd(args).output().unwrap()
    }

    pub fn bake_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bake"));
        c.args(args)
            .env("BAKE_CACHE", self.store())
            .env_remove("BAKE_MIRRORS")
            .current_dir(self.dir.path());
        c
    }

    /// `bake build FILE ARGS... --json`, parsed; panics on a usage error.
    pub fn build(&self, recipe: &str, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["build", recipe, "--json", "--out-link", "out"];
        all.extend_from_slice(args);
        let out = self.bake(&all);
        let code = out.status.code().unwrap_or(-1);
        assert_ne!(
            code,
            2,
            "usage error: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, json)
    }
}

/// The ids in a JSON list, sorted.
pub fn ids(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Polls `cond` every 20 ms for at most `secs` seconds.
/// The ids `bake check --json` found the same, sorted.
pub fn same_ids(check: &serde_json::Value) -> Vec<String> {
    let mut same: Vec<String> = check["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["result"] == "same")
                .filter_map(|i| i["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    same.sort();
    same
}

pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A store shared by the tests that build with real toolchains, kept under
/// cargo's target directory: zig warms its cache once per store (a minute per
/// target), and the keepalived build is minutes, so they pay it once per checkout.
pub fn shared_store() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("bake-store")
}

/// Runs the repository's bake on a repository recipe with the shared store.
pub fn bake_repo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bake"))
        .args(args)
        .env("BAKE_CACHE", shared_store())
        .env_remove("BAKE_MIRRORS")
        .current_dir(root())
        .output()
        .unwrap()
}

/// The parsed JSON a bake command printed; panics with its stderr on a usage error.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// readelf's view of a binary: (machine, has PT_INTERP, has DT_NEEDED).
pub fn elf_facts(path: &Path) -> (String, bool, bool) {
    let run = |flag: &str| {
        let out = Command::new("readelf")
            .arg(flag)
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "readelf {flag} {}", path.display());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let header = run("-h");
    let machine = header
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine:"))
        .unwrap_or("")
        .trim()
        .to_string();
    let interp = run("-l").contains("INTERP");
    let needed = run("-d").contains("(NEEDED)");
    (machine, interp, needed)
}

/// Merges `image` (as extension NAME) with systemd-sysext into a fresh root under
/// `work`, inside a private mount namespace in which that root is a shared mount
/// (so the overlay systemd-sysext mounts from its own namespace shows there, and
/// nowhere on the host), then runs the merged `bin ARGS`. Returns the last line of
/// output (what `bin` printed, or `refused` when the image was not merged) and
/// the whole output.
pub fn merge_and_run(image: &Path, name: &str, work: &Path, bin: &str) -> (String, String) {
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("var/lib/extensions")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::copy("/etc/os-release", root.join("usr/lib/os-release")).unwrap();
    std::fs::copy(
        image,
        root.join("var/lib/extensions").join(format!("{name}.raw")),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /run && mount --bind {r} {r} && mount --make-rshared {r} && \
         systemd-sysext --root={r} merge 2>&1; \
         if [ -x {r}/{exe} ]; then {r}/{bin} 2>&1 | head -n 1; else echo refused; fi; \
         systemd-sysext --root={r} unmerge >/dev/null 2>&1; true",
        r = root.display(),
        exe = bin.split_whitespace().next().unwrap_or(bin),
    );
    let out = loop_locked("timeout")
        .args([
            "60",
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or("").trim().to_string();
    (last, text)
}

/// `program`, run holding the host's loop devices: the lock that
/// `recipes/tests/systemd-host/host-test.sh` holds while a container's
/// systemd-sysext takes or gives back one, so the two never race for a free one.
pub fn loop_locked(program: &str) -> Command {
    let mut cmd = Command::new("flock");
    cmd.args(["-w", "300", "/run/lock/bake-loop-devices.lock", program]);
    cmd
}

/// A program of the project's `.venv` (check-jsonschema, pyspdxtools; ./setup installs them).
pub fn venv_bin(name: &str) -> PathBuf {
    root().join(".venv/bin").join(name)
}

/// Runs `cmd`, returning (success, stdout and stderr together).
pub fn outcome(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Butane's key names are Ignition's in snake case.
fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// What Butane makes of the parts of a config these snippets use: keys in
/// camel case, `mode` written in octal (go-yaml reads `0644` as octal; serde_yaml
/// reads YAML 1.2, where it is decimal), `variant`/`version` replaced by the
/// Ignition spec they stand for.
fn translate(v: &serde_yaml::Value, key: &str) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        serde_yaml::Value::Mapping(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let k = k.as_str().expect("string keys");
                    (camel(k), translate(v, k))
                })
                .collect(),
        ),
        serde_yaml::Value::Sequence(s) => J::Array(s.iter().map(|v| translate(v, key)).collect()),
        serde_yaml::Value::Number(n) if key == "mode" => {
            J::from(u64::from_str_radix(&n.to_string(), 8).expect("an octal mode"))
        }
        serde_yaml::Value::String(s) if key == "mode" => {
            J::from(u64::from_str_radix(s, 8).expect("an octal mode"))
        }
        other => serde_json::to_value(other).unwrap(),
    }
}

/// Checks every `.bu` in `dir` against Butane's schema for flatcar 1.0.0
/// (`tests/schemas/butane-flatcar-1.0.0.json`, closed objects: an unknown key
/// fails, as it does in Butane) with check-jsonschema, every `.ign` with
/// Ignition's own validator (`ignition-validate`, Debian's ignition 2.14, which
/// knows specs up to 3.3.0), quiet meaning no warning either, and that each
/// `.ign` is what Butane translates its `.bu` to. Returns how many pairs.
pub fn check_snippets(dir: &Path) -> usize {
    let schema = root().join("tests/schemas/butane-flatcar-1.0.0.json");
    let mut pairs = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bu"))
        .collect();
    names.sort();
    for bu in names {
        let ign = bu.with_extension("ign");
        let (ok, text) = outcome(
            Command::new(venv_bin("check-jsonschema"))
                .args(["--default-filetype", "yaml", "--schemafile"])
                .arg(&schema)
                .arg(&bu),
        );
        assert!(ok, "{} against Butane's schema: {text}", bu.display());
        let (ok, text) = outcome(Command::new("ignition-validate").arg(&ign));
        assert!(
            ok && text.trim().is_empty(),
            "ignition-validate {}: {text}",
            ign.display()
        );
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&bu).unwrap()).unwrap();
        assert_eq!(yaml["variant"], "flatcar");
        assert_eq!(yaml["version"], "1.0.0");
        let mut expected = translate(&yaml, "");
        let obj = expected.as_object_mut().unwrap();
        obj.remove("variant");
        obj.remove("version");
        obj.insert("ignition".into(), serde_json::json!({ "version": "3.3.0" }));
        let actual: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ign).unwrap()).unwrap();
        assert_eq!(
            actual,
            expected,
            "{} is not what {} translates to",
            ign.display(),
            bu.display()
        );
        pairs += 1;
    }
    pairs
}
