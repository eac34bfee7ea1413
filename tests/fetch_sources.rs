//! Fetching against a real HTTP server on 127.0.0.1 started by each test.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bake::fetch::{
    import_file, parse_mirrors, FetchError, FetchOptions, Fetcher, ProgressMode, RetryPolicy,
    SourceSpec, SourceStore,
};
use bake::hash::SourceHash;
use sha2::Digest as _;

/// What the test server answers to one request.
#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    Status(u16),
    Redirect(String),
    /// Announces `declared` bytes, sends `body`, closes.
    Truncated {
        declared: usize,
        body: Vec<u8>,
    },
    /// Accepts and never answers (until the server is dropped, at most 10 s).
    Stall,
    /// Waits, then answers, so that concurrent clients overlap.
    Slow(Duration, Vec<u8>),
    /// A body without a length that never ends (until the client goes away).
    Endless,
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// A threaded HTTP/1.1 server on an ephemeral loopback port that counts requests.
struct Server {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (hits, stop) = (hits.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (hits, stop, handler) = (hits.clone(), stop.clone(), handler.clone());
                    thread::spawn(move || serve(stream, &hits, &stop, &*handler));
                }
            })
        };
        Server {
            addr,
            hits,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so its thread can see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    hits: &Mutex<HashMap<String, usize>>,
    stop: &AtomicBool,
    handler: &Handler,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let Some(path) = head.split_whitespace().nth(1).map(str::to_string) else {
        return;
    };
    let hit = {
        let mut hits = hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let ok = |body: &[u8]| {
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        reply.extend_from_slice(body);
        reply
    };
    let reply = match handler(&path, hit) {
        Reply::Body(body) => ok(&body),
        Reply::Status(code) => {
            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .into_bytes()
        }
        Reply::Redirect(to) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        Reply::Truncated { declared, body } => {
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            reply
        }
        Reply::Stall => {
            let until = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        Reply::Slow(delay, body) => {
            thread::sleep(delay);
            ok(&body)
        }
        Reply::Endless => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            while !stop.load(Ordering::SeqCst) && stream.write_all(&chunk).is_ok() {}
            return;
        }
    };
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}

/// Fetches one source with a fetcher of its own.
fn fetch_source(
    store: &SourceStore,
    source: &SourceSpec,
    options: &FetchOptions,
) -> Result<std::path::PathBuf, FetchError> {
    Fetcher::new(store.clone(), options.clone()).fetch(source)
}

fn sha256_of(bytes: &[u8]) -> SourceHash {
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}").parse().unwrap()
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn spec(name: &str, urls: &[String], hash: &SourceHash) -> SourceSpec {
    SourceSpec {
        name: name.to_string(),
        urls: urls.iter().map(|u| u.parse().unwrap()).collect(),
        hash: hash.clone(),
        size: None,
        max_size: bake::fetch::DEFAULT_DOWNLOAD_LIMIT,
    }
}

/// Short waits so failures come quickly; no live display in test logs.
fn quick_options() -> FetchOptions {
    FetchOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            retries: 1,
            backoff: Duration::from_millis(10),
        },
        progress: ProgressMode::Lines,
        ..FetchOptions::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: SourceStore,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store = SourceStore::new(root.join("cache/sources"));
    Setup {
        _dir: dir,
        root,
        store,
    }
}

/// Entries of the store other than its lock and temp directories, and the temp
/// directory's contents: both must stay empty when a fetch fails.
fn store_entries(store: &SourceStore) -> (Vec<String>, Vec<String>) {
    let list = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let entries = list(store.dir())
        .into_iter()
        .filter(|n| n != ".locks" && n != ".tmp")
        .collect();
    (entries, list(&store.dir().join(".tmp")))
}

fn assert_store_empty(store: &SourceStore) {
    assert_eq!(store_entries(store), (vec![], vec![]));
}

#[test]
fn fetch_stores_the_file_by_hash_and_reuses_it() {
    let body = payload(300_000, 1);
    let served = body.clone();
    let server = Server::start(move |_, _| Reply::Body(served.clone()));
    let s = setup();
    let hash = sha256_of(&body);
    let source = spec("demo", &[server.url("/demo-1.0.tar.gz")], &hash);

    let path = fetch_source(&s.store, &source, &quick_options()).unwrap();
    assert_eq!(path, s.store.dir().join(format!("sha256-{}", hash.hex)));
    assert_eq!(fs::read(&path).unwrap(), body);
    assert!(fs::metadata(&path).unwrap().permissions().readonly());

    let again = fetch_source(&s.store, &source, &quick_options()).unwrap();
    assert_eq!(again, path);
    assert_eq!(
        server.hits("/demo-1.0.tar.gz"),
        1,
        "second fetch must come from the store"
    );
    assert_eq!(store_entries(&s.store).1, Vec::<String>::new());
}

#[test]
fn not_found_moves_on_to_the_next_url_without_retrying() {
    let body = payload(1000, 2);
    let served = body.clone();
    let server = Server::start(move |path, _| match path {
        "/good/x.tar.gz" => Reply::Body(served.clone()),
        _ => Reply::Status(404),
    });
    let s = setup();
    let urls = [server.url("/gone/x.tar.gz"), server.url("/good/x.tar.gz")];
    let path = fetch_source(
        &s.store,
        &spec("x", &urls, &sha256_of(&body)),
        &quick_options(),
    )
    .unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
    assert_eq!(server.hits("/gone/x.tar.gz"), 1);
    assert_eq!(server.hits("/good/x.tar.gz"), 1);
}

#[test]
fn server_errors_are_retried() {
    let body = payload(1000, 3);
    let served = body.clone();
    let server = Server::start(move |_, hit| match hit {
        0 => Reply::Status(503),
        _ => Reply::Body(served.clone()),
    });
    let s = setup();
    let urls = [server.url("/flaky.tar.gz")];
    fetch_source(
        &s.store,
        &spec("flaky", &urls, &sha256_of(&body)),
        &quick_options(),
    )
    .unwrap();
    assert_eq!(server.hits("/flaky.tar.gz"), 2);
}

#[test]
fn redirects_are_followed() {
    let body = payload(5000, 4);
    let served = body.clone();
    let server = Server::start(move |path, _| match path {
        "/old.tar.gz" => Reply::Redirect("/new/real.tar.gz".into()),
        "/new/real.tar.gz" => Reply::Body(served.clone()),
        _ => Reply::Status(404),
    });
    let s = setup();
    let urls = [server.url("/old.tar.gz")];
    let path = fetch_source(
        &s.store,
        &spec("moved", &urls, &sha256_of(&body)),
        &quick_options(),
    )
    .unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
    assert_eq!(server.hits("/new/real.tar.gz"), 1);
}

#[test]
fn truncated_body_fails_and_stores_nothing() {
    let body = payload(10_000, 5);
    let partial = body[..4000].to_vec();
    let server = Server::start(move |_, _| Reply::Truncated {
        declared: 10_000,
        body: partial.clone(),
    });
    let s = setup();
    let urls = [server.url("/cut.tar.gz")];
    let err = fetch_source(
        &s.store,
        &spec("cut", &urls, &sha256_of(&body)),
        &quick_options(),
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("/cut.tar.gz"), "{err}");
    assert_eq!(
        server.hits("/cut.tar.gz"),
        2,
        "a cut-off body is transient: one retry"
    );
    assert_store_empty(&s.store);
}

#[test]
fn wrong_hash_names_url_expected_and_actual() {
    let body = payload(2000, 6);
    let served = body.clone();
    let server = Server::start(move |_, _| Reply::Body(served.clone()));
    let s = setup();
    let declared = sha256_of(b"something else");
    let url = server.url("/evil.tar.gz");
    let err = fetch_source(
        &s.store,
        &spec("evil", std::slice::from_ref(&url), &declared),
        &quick_options(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains(&declared.to_string()), "{text}");
    assert!(text.contains(&sha256_of(&body).to_string()), "{text}");
    assert_eq!(server.hits("/evil.tar.gz"), 1, "a mismatch is not retried");
    assert_store_empty(&s.store);
}

#[test]
fn stalled_server_times_out() {
    let server = Server::start(|_, _| Reply::Stall);
    let s = setup();
    let options = FetchOptions {
        read_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            retries: 0,
            backoff: Duration::ZERO,
        },
        ..quick_options()
    };
    let started = Instant::now();
    let urls = [server.url("/stall.tar.gz")];
    let err =
        fetch_source(&s.store, &spec("stall", &urls, &sha256_of(b"x")), &options).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_store_empty(&s.store);
}

#[test]
fn local_mirror_serves_by_file_name_and_by_hash() {
    let server = Server::start(|_, _| Reply::Status(500));
    let s = setup();
    let mirror = s.root.join("mirror");
    fs::create_dir_all(mirror.join("sha256")).unwrap();

    let by_name = payload(3000, 7);
    fs::write(mirror.join("named-1.0.tar.gz"), &by_name).unwrap();
    let by_hash = payload(3000, 8);
    let hash_b = sha256_of(&by_hash);
    fs::write(mirror.join("sha256").join(&hash_b.hex), &by_hash).unwrap();

    let options = FetchOptions {
        mirrors: parse_mirrors(mirror.to_str().unwrap()).unwrap(),
        ..quick_options()
    };
    let named = spec(
        "named",
        &[server.url("/dl/named-1.0.tar.gz")],
        &sha256_of(&by_name),
    );
    let path = fetch_source(&s.store, &named, &options).unwrap();
    assert_eq!(fs::read(path).unwrap(), by_name);
    let hashed = spec("hashed", &[server.url("/dl/other-name.tar.gz")], &hash_b);
    let path = fetch_source(&s.store, &hashed, &options).unwrap();
    assert_eq!(fs::read(path).unwrap(), by_hash);
    assert_eq!(
        server.total_hits(),
        0,
        "mirrors come before the source's URLs"
    );
}

#[test]
fn remote_mirror_is_tried_by_hash_first() {
    let body = payload(4000, 9);
    let hash = sha256_of(&body);
    let by_hash_path = format!("/m/sha256/{}", hash.hex);
    let served = body.clone();
    let expected_path = by_hash_path.clone();
    let server = Server::start(move |path, _| {
        if path == expected_path {
            Reply::Body(served.clone())
        } else {
            Reply::Status(404)
        }
    });
    let s = setup();
    let options = FetchOptions {
        mirrors: parse_mirrors(&format!(
            "{} , {}",
            s.root.join("empty").display(),
            server.url("/m/")
        ))
        .unwrap(),
        ..quick_options()
    };
    let source = spec("m", &[server.url("/upstream/m.tar.gz")], &hash);
    fetch_source(&s.store, &source, &options).unwrap();
    assert_eq!(server.hits(&by_hash_path), 1);
    assert_eq!(server.hits("/upstream/m.tar.gz"), 0);
}

#[test]
fn offline_refuses_http_but_uses_store_and_local_mirror() {
    let body = payload(2500, 10);
    let served = body.clone();
    let server = Server::start(move |_, _| Reply::Body(served.clone()));
    let s = setup();
    let hash = sha256_of(&body);
    let source = spec("off", &[server.url("/off-1.tar.gz")], &hash);
    let offline = FetchOptions {
        offline: true,
        mirrors: parse_mirrors(&server.url("/m")).unwrap(),
        ..quick_options()
    };

    let err = fetch_source(&s.store, &source, &offline).unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Unavailable {
                skipped_remote: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("offline"), "{err}");
    assert_eq!(server.total_hits(), 0);

    let mirror = s.root.join("mirror");
    fs::create_dir_all(&mirror).unwrap();
    fs::write(mirror.join("off-1.tar.gz"), &body).unwrap();
    let with_mirror = FetchOptions {
        mirrors: parse_mirrors(mirror.to_str().unwrap()).unwrap(),
        ..offline.clone()
    };
    let path = fetch_source(&s.store, &source, &with_mirror).unwrap();
    fs::remove_dir_all(&mirror).unwrap();

    assert_eq!(fetch_source(&s.store, &source, &offline).unwrap(), path);
    assert_eq!(server.total_hits(), 0);
}

fn write_file(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn debian_urls_resolve_from_one_line_apt_sources() {
    let body = payload(6000, 11);
    let served = body.clone();
    let server = Server::start(move |path, _| match path {
        "/debian/pool/main/k/kd/kd_1.0.orig.tar.gz" => Reply::Body(served.clone()),
        _ => Reply::Status(404),
    });
    let s = setup();
    let apt = s.root.join("apt-root");
    write_file(
        &apt.join("etc/apt/sources.list"),
        &format!(
            "# comment\ndeb {} bookworm-security main\ndeb [arch=amd64] {} bookworm main\n",
            server.url("/debian-security"),
            server.url("/debian"),
        ),
    );
    let options = FetchOptions {
        apt_root: apt,
        ..quick_options()
    };
    let source = spec(
        "kd",
        &["debian:pool/main/k/kd/kd_1.0.orig.tar.gz".to_string()],
        &sha256_of(&body),
    );
    fetch_source(&s.store, &source, &options).unwrap();
    assert_eq!(server.total_hits(), 1);
}

#[test]
fn debian_urls_resolve_from_deb822_sources_skipping_disabled_files() {
    let body = payload(6000, 12);
    let served = body.clone();
    let server = Server::start(move |path, _| match path {
        "/archive/debian/pool/main/libn/libx/libx_2.orig.tar.xz" => Reply::Body(served.clone()),
        _ => Reply::Status(404),
    });
    let s = setup();
    let apt = s.root.join("apt-root");
    let wrong = server.url("/wrong/debian");
    write_file(
        &apt.join("etc/apt/sources.list.d/a-first.sources.disabled-by-farm"),
        &format!("Types: deb\nURIs: {wrong}\nSuites: bookworm\n"),
    );
    write_file(
        &apt.join("etc/apt/sources.list.d/b-first.list.disabled"),
        &format!("deb {wrong} bookworm main\n"),
    );
    write_file(
        &apt.join("etc/apt/sources.list.d/debian.sources"),
        &format!(
            "Types: deb\nURIs: {}\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\n# a comment\nURIs: {}/\nSuites: bookworm bookworm-updates\nComponents: main\n",
            server.url("/archive/debian-security"),
            server.url("/archive/debian"),
        ),
    );
    let options = FetchOptions {
        apt_root: apt.clone(),
        ..quick_options()
    };
    let url = "debian:pool/main/libn/libx/libx_2.orig.tar.xz".to_string();
    fetch_source(
        &s.store,
        &spec("libx", std::slice::from_ref(&url), &sha256_of(&body)),
        &options,
    )
    .unwrap();
    assert_eq!(server.total_hits(), 1);

    let empty = s.root.join("no-apt");
    let options = FetchOptions {
        apt_root: empty,
        ..quick_options()
    };
    let err = fetch_source(&s.store, &spec("y", &[url], &sha256_of(b"y")), &options).unwrap_err();
    assert!(err.to_string().contains("no Debian archive"), "{err}");
}

#[test]
fn concurrent_fetches_of_one_source_download_once() {
    let body = payload(200_000, 13);
    let served = body.clone();
    let server = Server::start(move |_, _| Reply::Slow(Duration::from_millis(300), served.clone()));
    let s = setup();
    let source = spec("busy", &[server.url("/busy.tar.gz")], &sha256_of(&body));
    let shared = Arc::new(Fetcher::new(s.store.clone(), quick_options()));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (shared, source, store) = (shared.clone(), source.clone(), s.store.clone());
            thread::spawn(move || {
                if i % 2 == 0 {
                    shared.fetch(&source).unwrap()
                } else {
                    // A separate fetcher stands in for another bake process.
                    fetch_source(&store, &source, &quick_options()).unwrap()
                }
            })
        })
        .collect();
    let paths: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(fs::read(&paths[0]).unwrap(), body);
    assert_eq!(server.hits("/busy.tar.gz"), 1);
}

#[test]
fn import_adds_local_files_by_hash() {
    let s = setup();
    let file = s.root.join("local.tar.gz");
    let body = payload(7000, 14);
    fs::write(&file, &body).unwrap();

    let hash = import_file(&s.store, &file, None).unwrap();
    assert_eq!(hash, sha256_of(&body));
    assert_eq!(fs::read(s.store.path_of(&hash)).unwrap(), body);

    let blake: SourceHash = format!("blake3:{}", blake3::hash(&body).to_hex())
        .parse()
        .unwrap();
    assert_eq!(import_file(&s.store, &file, Some(&blake)).unwrap(), blake);
    assert!(s.store.get(&blake).is_some());

    let wrong = sha256_of(b"not it");
    let err = import_file(&s.store, &file, Some(&wrong)).unwrap_err();
    assert!(matches!(err, FetchError::ImportMismatch { .. }), "{err}");
    assert!(s.store.get(&wrong).is_none());

    // What was imported is then found offline.
    let offline = FetchOptions {
        offline: true,
        ..quick_options()
    };
    let source = spec(
        "local",
        &["https://unreachable.invalid/local.tar.gz".into()],
        &hash,
    );
    assert_eq!(
        fetch_source(&s.store, &source, &offline).unwrap(),
        s.store.path_of(&hash)
    );
    assert_eq!(store_entries(&s.store).1, Vec::<String>::new());
}

#[test]
fn fetcher_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Fetcher>();
    assert_send_sync::<FetchError>();
    assert_send_sync::<SourceSpec>();
}

#[test]
fn an_endless_download_stops_at_its_limit() {
    let s = setup();
    let server = Server::start(|_, _| Reply::Endless);
    let hash = sha256_of(b"anything");
    let mut capped = spec("endless", &[server.url("/endless")], &hash);
    capped.max_size = 1 << 20;
    let err = fetch_source(&s.store, &capped, &quick_options()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("larger than the download limit of 1 MiB"),
        "{text}"
    );
    assert_store_empty(&s.store);
    // A declared size stops it there, and says so.
    let mut sized = spec("endless", &[server.url("/endless")], &hash);
    sized.size = Some(100_000);
    let err = fetch_source(&s.store, &sized, &quick_options()).unwrap_err();
    assert!(
        err.to_string()
            .contains("more bytes than the recipe's declared size 100000"),
        "{err}"
    );
    assert_store_empty(&s.store);
}

#[test]
fn a_declared_size_refuses_a_file_of_another_size() {
    let s = setup();
    let body = payload(5000, 3);
    let hash = sha256_of(&body);
    let server = Server::start(move |_, _| Reply::Body(body.clone()));
    let mut sized = spec("sized", &[server.url("/f")], &hash);
    sized.size = Some(4000);
    let err = fetch_source(&s.store, &sized, &quick_options()).unwrap_err();
    assert!(
        err.to_string()
            .contains("5000 bytes, but the recipe declares size 4000"),
        "{err}"
    );
    sized.size = Some(5000);
    fetch_source(&s.store, &sized, &quick_options()).unwrap();
}
