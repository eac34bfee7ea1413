//! A real BuildGrid server (PyPI `buildgrid`, installed by ./setup into
//! .venv-buildgrid) on 127.0.0.1, started by a test and stopped when dropped,
//! also when the test fails.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BuildGrid {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `bgd` of the repository's BuildGrid environment.
pub fn bgd() -> PathBuf {
    let bgd = super::root().join(".venv-buildgrid/bin/bgd");
    assert!(
        bgd.exists(),
        "{} is missing: run ./setup (it installs PyPI buildgrid with Python 3.13)",
        bgd.display()
    );
    bgd
}

impl BuildGrid {
    /// A cache-only server: CAS, ByteStream and ActionCache, all in memory.
    pub fn cache() -> BuildGrid {
        BuildGrid::start("!lru-storage &cas\n    size: 1GB")
    }

    /// A cache-only server whose CAS is a directory (`disk/cas/objects/`), so a
    /// test can tamper with a blob.
    pub fn cache_on_disk() -> BuildGrid {
        BuildGrid::start("!disk-storage &cas\n    path: {dir}/disk")
    }

    /// Starts `bgd server start` with `storage` as its CAS.
    pub fn start(storage: &str) -> BuildGrid {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = storage.replace("{dir}", &dir.path().display().to_string());
        let config = format!(
            r#"server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
storages:
  - {storage}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"#
        );
        let path = dir.path().join("buildgrid.yml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("buildgrid.log")).unwrap();
        let child = Command::new(bgd())
            .args(["server", "start"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut bg = BuildGrid {
            child: Some(child),
            port,
            dir,
        };
        bg.wait_ready();
        bg
    }

    fn wait_ready(&mut self) {
        // Python's imports take up to 10 s on a loaded 2-core machine.
        let end = Instant::now() + Duration::from_secs(90);
        while Instant::now() < end {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("BuildGrid exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("BuildGrid did not listen within 90 s:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("buildgrid.log")).unwrap_or_default()
    }

    /// Where the disk CAS keeps the blob with this sha256.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .path()
            .join("disk/cas/objects")
            .join(&sha256[..2])
            .join(&sha256[2..])
    }

    /// Kills the server and everything it started.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group the server leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.stop();
    }
}

/// sha256 of `bytes`, as the CAS names blobs.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// The object path in a store that bake printed as an output.
pub fn object_hash(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
