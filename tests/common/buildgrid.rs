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
    /// The scheduler's database, for a server that executes.
    _postgres: Option<Postgres>,
}

/// A private PostgreSQL cluster on 127.0.0.1 (Debian's postgresql 15), run as
/// the `postgres` user when the test runs as root; stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    as_root: bool,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            let st = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "cannot chown the cluster's directory");
        }
        let pg = Postgres {
            port: free_port(),
            dir,
            as_root,
        };
        let data = pg.dir.path().join("data");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "bgd", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let out = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-h 127.0.0.1 -p {} -k {} -F",
                pg.port,
                pg.dir.path().display()
            ))
            .arg("-l")
            .arg(pg.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {out:?}");
        pg
    }

    fn command(&self, tool: &str) -> Command {
        let bin = format!("{PG_BIN}/{tool}");
        let mut c = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            Command::new(bin)
        };
        c.stdin(Stdio::null());
        c
    }

    pub fn url(&self) -> String {
        format!("postgresql://bgd@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
    }
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

    /// A server that also executes: an in-memory CAS and action cache, the
    /// Execution and Bots services over an SQL scheduler in a private
    /// PostgreSQL. Actions are matched to workers by `bake-toolchain` (besides
    /// OSFamily and ISA).
    pub fn execution() -> BuildGrid {
        let pg = Postgres::start();
        let out = Command::new(bgd())
            .args(["migrate", "apply", &pg.url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "bgd migrate: {out:?}");
        let extra = format!(
            r#"connections:
  - !sql-connection &sql
    connection-string: {}
schedulers:
  - !sql-scheduler &scheduler
    storage: *cas
    sql: *sql
    action-cache: *ac
    bot-session-keepalive-timeout: 60
    property-set: !dynamic-property-set
      match-property-keys: [bake-toolchain]
"#,
            pg.url()
        );
        let services = "      - !execution\n        scheduler: *scheduler\n      - !bots\n        scheduler: *scheduler\n";
        let mut bg = BuildGrid::configure("!lru-storage &cas\n    size: 1GB", &extra, services);
        bg._postgres = Some(pg);
        bg
    }

    /// A cache-only server in memory that takes only requests carrying a JWT
    /// (`authorization: Bearer TOKEN`) signed with HS256 and `secret`, with an
    /// expiry, also from 127.0.0.1.
    pub fn cache_with_jwt(secret: &str) -> BuildGrid {
        let auth = "method: jwt\n  algorithm: hs256\n  secret: {dir}/jwt-secret\n  allow-localhost-requests: false";
        BuildGrid::launch("!lru-storage &cas\n    size: 1GB", "", "", auth, |dir| {
            std::fs::write(dir.join("jwt-secret"), secret).unwrap()
        })
    }

    /// Starts `bgd server start` with `storage` as its CAS.
    pub fn start(storage: &str) -> BuildGrid {
        BuildGrid::configure(storage, "", "")
    }

    fn configure(storage: &str, extra: &str, services: &str) -> BuildGrid {
        BuildGrid::launch(storage, extra, services, "method: none", |_| {})
    }

    /// Writes the config (`{dir}` in it is the server's directory, which
    /// `prepare` fills first) and starts the server.
    fn launch(
        storage: &str,
        extra: &str,
        services: &str,
        auth: &str,
        prepare: impl FnOnce(&Path),
    ) -> BuildGrid {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let port = free_port();
        let storage = storage.replace("{dir}", &dir.path().display().to_string());
        let auth = auth.replace("{dir}", &dir.path().display().to_string());
        let config = format!(
            r#"server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  {auth}
storages:
  - {storage}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
{extra}instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
{services}"#
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
            _postgres: None,
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

/// `bake build r.kdl --json --out-link out --remote URL` and `extra`.
pub fn build_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
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
    args
}

/// A JWT signed with HS256 and `secret` (by PyJWT, which BuildGrid uses to
/// check it), for subject `ci`, expiring in ten minutes.
pub fn jwt(secret: &str) -> String {
    let python = super::root().join(".venv-buildgrid/bin/python");
    let out = Command::new(python)
        .args([
            "-c",
            "import jwt, sys, time; print(jwt.encode({'sub': 'ci', 'exp': int(time.time()) + 600}, sys.argv[1], algorithm='HS256'))",
            secret,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "cannot sign a JWT: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

/// A `bake worker` process, stopped (with what it runs) when dropped.
pub struct Worker {
    child: Option<Child>,
    pub log: PathBuf,
    _store: tempfile::TempDir,
}

impl Worker {
    /// `bake worker RECIPE --server URL --name NAME` with a store of its own.
    pub fn start(recipe: &Path, url: &str, name: &str) -> Worker {
        let store = tempfile::tempdir().unwrap();
        let log = store.path().join("worker.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bake"))
            .arg("worker")
            .arg(recipe)
            .arg("--cache")
            .arg(store.path().join("store"))
            .args(["--server", url, "--name", name])
            .env_remove("BAKE_CACHE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        Worker {
            child: Some(child),
            log,
            _store: store,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the worker has joined the server's pool.
    pub fn wait_joined(&self) {
        let end = Instant::now() + Duration::from_secs(60);
        while !self.output().contains("joined") {
            assert!(
                Instant::now() < end,
                "the worker did not join within 60 s:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group the worker leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}
