//! The sandbox and the store under attack: hostile recipes (tests/hostile/) try
//! every way out of a step, steps go past their limits, bake is interrupted and
//! killed, the store is corrupted, filled up and made read-only.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ids, json_of, wait_for, Project};

/// A hostile recipe from tests/hostile with its `@NAME@` places filled in.
fn hostile(p: &Project, name: &str, places: &[(&str, String)]) -> String {
    let mut text = fs::read_to_string(common::root().join("tests/hostile").join(name)).unwrap();
    for (k, v) in places {
        text = text.replace(&format!("@{k}@"), v);
    }
    p.write(name, &text);
    name.to_string()
}

/// The text of `file` in instance `id`'s output, from `bake build --json`.
fn output_file(out: &serde_json::Value, id: &str, file: &str) -> String {
    let dir = PathBuf::from(out["outputs"][id].as_str().unwrap());
    fs::read_to_string(dir.join(file)).unwrap()
}

/// The `NAME blocked|ESCAPED` lines a hostile step wrote.
fn report(out: &serde_json::Value, id: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(out["outputs"][id].as_str().unwrap());
    fs::read_to_string(dir.join("report"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn assert_all_blocked(lines: &[(String, String)], expected: usize) {
    assert_eq!(lines.len(), expected, "{lines:?}");
    let escaped: Vec<&String> = lines
        .iter()
        .filter(|(_, r)| r != "blocked")
        .map(|(n, _)| n)
        .collect();
    assert!(escaped.is_empty(), "escaped: {escaped:?}");
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(String::from)
        .collect()
}

/// A name no other test run uses, for markers in process lists and /tmp.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bake-test-{tag}-{}-{nanos}", std::process::id())
}

#[test]
fn a_step_cannot_rewrite_the_store() {
    let p = Project::new();
    p.write(
        "victim.kdl",
        "build \"victim\" {\n    script \"echo good > $out/v\"\n}\n",
    );
    let (code, victim) = p.build("victim.kdl", &[]);
    assert_eq!(code, 0, "{victim}");
    let output = PathBuf::from(victim["outputs"]["victim"].as_str().unwrap());
    let keys: Vec<PathBuf> = fs::read_dir(p.store().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1);
    let record = fs::read(&keys[0]).unwrap();
    let r = hostile(
        &p,
        "store.kdl",
        &[
            ("STORE", p.store().display().to_string()),
            (
                "VICTIM_KEY",
                keys[0].file_name().unwrap().to_string_lossy().into(),
            ),
            (
                "VICTIM_OUTPUT",
                output.file_name().unwrap().to_string_lossy().into(),
            ),
            ("ATTACK", "e".repeat(64)),
        ],
    );
    let (code, attack) = p.build(&r, &[]);
    assert_eq!(code, 0, "{attack}");
    assert_all_blocked(&report(&attack, "attack"), 6);
    assert_eq!(
        fs::read(&keys[0]).unwrap(),
        record,
        "the key record is as it was"
    );
    let (_, again) = p.build("victim.kdl", &[]);
    assert_eq!(ids(&again["cached"]), ["victim"]);
    assert_eq!(fs::read_to_string(output.join("v")).unwrap(), "good\n");
    let verify = p.bake(&["verify"]);
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains(" 0 corrupt"));
}

#[test]
fn a_step_cannot_reach_the_host() {
    let p = Project::new();
    let marker = Path::new("/tmp").join(unique("marker"));
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("host.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    let host_tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let r = hostile(
        &p,
        "host.kdl",
        &[
            ("MARKER", marker.display().to_string()),
            ("HOST_TMP", host_tmp.path().display().to_string()),
            ("REPO", p.dir.path().display().to_string()),
            ("SOCKET", socket.display().to_string()),
            ("PID", victim.id().to_string()),
            ("PORT", tcp.local_addr().unwrap().port().to_string()),
        ],
    );
    let (code, out) = p.build(&r, &[]);
    let alive = victim.try_wait().unwrap().is_none();
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_eq!(code, 0, "{out}");
    assert_all_blocked(&report(&out, "attack"), 19);
    assert!(!marker.exists(), "wrote the host's /tmp");
    assert!(!p.path("escaped").exists(), "wrote the repository");
    assert!(!Path::new("/usr/bake-escape").exists());
    assert!(alive, "the host process survived");
    assert!(
        listener.accept().is_err(),
        "no connection reached the socket"
    );
    assert!(
        tcp.accept().is_err(),
        "no connection reached the host's loopback"
    );
}

#[test]
fn nothing_a_step_started_outlives_it() {
    let p = Project::new();
    let marker = unique("linger");
    let r = hostile(&p, "linger.kdl", &[("MARKER", marker.clone())]);
    let (code, out) = p.build(&r, &[]);
    assert_eq!(code, 0, "the step saw its processes start: {out}");
    assert!(
        wait_for(5, || processes_with(&marker).is_empty()),
        "left running: {:?}",
        processes_with(&marker)
    );
}

#[test]
fn steps_past_their_limits_are_stopped_and_named() {
    let p = Project::new();
    let marker = unique("limits");
    let r = hostile(&p, "limits.kdl", &[("MARKER", marker.clone())]);
    let started = Instant::now();
    let out = p.bake(&["build", &r, "--keep-going", "-j", "3"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the step ran out of time after 2s"), "{err}");
    assert!(
        err.contains("the step ran out of memory (limit 64 MiB)"),
        "{err}"
    );
    assert!(
        err.contains("the step's output is 3 MiB, over its limit of 1 MiB"),
        "{err}"
    );
    assert!(
        err.contains("limits time="),
        "the help says how to raise it: {err}"
    );
    assert!(
        took < Duration::from_secs(50),
        "the slow step was stopped: {took:?}"
    );
    assert!(wait_for(5, || processes_with(&marker).is_empty()));
}

#[test]
fn a_privileged_step_is_declared_shown_and_still_contained() {
    let p = Project::new();
    let marker = unique("privileged");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    // Its own /run, but the host's /run/lock, where the host's locks are.
    let host_run = Path::new("/run").join(&marker);
    let host_lock = Path::new("/run/lock").join(&marker);
    fs::create_dir_all("/run/lock").unwrap();
    fs::write(&host_run, "").unwrap();
    fs::write(&host_lock, "").unwrap();
    p.write(
        "r.kdl",
        &format!(
            r##"
build "netns" {{
    privileged #true
    script #"""
        ip netns add bake-test-$$ && ip netns del bake-test-$$ && echo yes > $out/netns
        test -e /root && echo yes > $out/host-fs
        test -e /run/{marker} && echo host > $out/run || echo own > $out/run
        test -e /run/lock/{marker} && echo host > $out/lock || echo own > $out/lock
        sh -c 'sleep 1000; :' {marker} &
        python3 -c 'import socket; socket.create_connection(("127.0.0.1", {port}), 2)' 2>/dev/null \
            && echo ESCAPED > $out/tcp || echo blocked > $out/tcp
        """#
}}
"##,
            port = tcp.local_addr().unwrap().port()
        ),
    );
    let eval = p.bake(&["eval", "r.kdl"]);
    assert!(String::from_utf8_lossy(&eval.stdout).contains("[privileged]"));
    let json = json_of(&p.bake(&["eval", "r.kdl", "--json"]));
    assert_eq!(json["derivations"][0]["privileged"], true);
    let out = p.bake(&["build", "r.kdl", "--json"]);
    let _ = fs::remove_file(&host_run);
    let _ = fs::remove_file(&host_lock);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("note: privileged steps"), "{err}");
    let json = json_of(&out);
    let dir = PathBuf::from(json["outputs"]["netns"].as_str().unwrap());
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(read("netns"), "yes\n", "{err}");
    assert_eq!(read("host-fs"), "yes\n");
    assert_eq!(read("run"), "own\n", "a /run of its own");
    assert_eq!(read("lock"), "host\n", "the host's /run/lock");
    assert_eq!(read("tcp"), "blocked\n", "still only loopback of its own");
    assert!(wait_for(5, || processes_with(&marker).is_empty()));
}

/// The memory cgroups (lanes' or steps') of the bake with process id `pid`.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let unified = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
    let base = if unified {
        "/sys/fs/cgroup/bake"
    } else {
        "/sys/fs/cgroup/memory/bake"
    };
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pid}-")))
        })
        .collect()
}

#[test]
fn lanes_keep_each_steps_limit_and_go_with_bake() {
    // One lane (-j1) runs, in this order: a step using more than 64 MiB under
    // the default limit, one killed at its 64 MiB, one using more than that
    // again; the lane's cgroup takes each step's limit in turn.
    let p = Project::new();
    let fill =
        |mib: u32| format!("python3 -c 'a = bytearray({mib} * 2**20); print(len(a))' > $out/f");
    p.write(
        "r.kdl",
        &format!(
            "build \"before\" {{\n    script \"{}\"\n}}\nbuild \"greedy\" {{\n    limits memory=\"64M\"\n    script \"{}\"\n}}\nbuild \"after\" {{\n    script \"{}\"\n}}\n",
            fill(200),
            fill(512),
            fill(300)
        ),
    );
    let child = p
        .bake_cmd(&["build", "r.kdl", "-j1", "--keep-going"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("built    before"), "{err}");
    assert!(err.contains("built    after"), "{err}");
    assert!(
        err.contains("the step ran out of memory (limit 64 MiB)"),
        "{err}"
    );
    assert_eq!(cgroups_of(pid), Vec::<PathBuf>::new(), "cgroups left");

    // Killed mid-step: its launchers stop the steps and exit; the next bake
    // removes the cgroups left.
    let killed = Project::new();
    let marker = unique("lane");
    let mut child = long_build(&killed, &marker);
    let pid = child.id();
    assert!(!cgroups_of(pid).is_empty(), "the lane has a cgroup");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_for(5, || processes_with(&marker).is_empty()),
        "a step outlived bake"
    );
    let populated = || {
        cgroups_of(pid).iter().any(|c| {
            !fs::read_to_string(c.join("cgroup.procs"))
                .unwrap_or_default()
                .is_empty()
        })
    };
    assert!(wait_for(5, || !populated()), "a launcher outlived bake");
    let (code, out) = p.build("r.kdl", &["--keep-going"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(cgroups_of(pid), Vec::<PathBuf>::new(), "not swept");
}

/// A recipe of `n` steps `{prefix}0`.. in a chain, each running `script` (lines
/// indented by 8 spaces, a raw KDL string's body).
fn chain(prefix: &str, n: usize, script: &str) -> String {
    (0..n)
        .map(|i| {
            let input = match i {
                0 => String::new(),
                _ => format!("    input \"{prefix}{}\"\n", i - 1),
            };
            format!(
                "build \"{prefix}{i}\" {{\n{input}    script #\"\"\"{script}        \"\"\"#\n}}\n"
            )
        })
        .collect()
}

#[test]
fn a_steps_scratch_serves_a_later_step_clean() {
    // Six steps in a chain on one lane: each checks that its build directory
    // is as new, then leaves a mess in it: files everywhere, directories made
    // unreadable, one replaced by a link, the script given a second name.
    let p = Project::new();
    let recipe = chain(
        "s",
        6,
        r#"
        ls -A /build > $out/top
        ls -A /build/home /build/tmp /build/src > $out/seen
        stat -c %i /build > $out/inode
        sleep 0.3
        echo left > $HOME/f; echo left > $TMPDIR/f; echo left > f; mkdir -p deep/er; echo > deep/er/f
        chmod 000 $HOME deep
        ln /build/script.sh /build/again
        mkdir /build/extra
        rm -f /build/tmp/f; rmdir /build/tmp; ln -s /nonexistent /build/tmp
"#,
    );
    p.write("r.kdl", &recipe);
    let (code, out) = p.build("r.kdl", &["-j1"]);
    assert_eq!(code, 0, "{out}");
    let read = |id: String, file: &str| output_file(&out, &id, file);
    let mut inodes = Vec::new();
    for i in 0..6 {
        let id = format!("s{i}");
        assert_eq!(
            read(id.clone(), "top"),
            "home\ninputs\nout\nscript.sh\nsrc\ntmp\n",
            "{id}"
        );
        assert_eq!(
            read(id.clone(), "seen"),
            "/build/home:\n\n/build/src:\n\n/build/tmp:\n",
            "{id}"
        );
        inodes.push(read(id, "inode"));
    }
    let distinct: std::collections::BTreeSet<_> = inodes.iter().collect();
    assert!(
        distinct.len() < inodes.len(),
        "no directory was reused: {inodes:?}"
    );
}

#[test]
fn steps_sharing_a_lane_share_no_writable_file_system() {
    // Four steps in a chain on one lane, whose launcher mounts their common
    // root once (a template each copies): each finds /tmp and /dev/shm empty,
    // leaves files there, and can write nowhere else of its root.
    let p = Project::new();
    let recipe = chain(
        "t",
        4,
        r#"
        ls -A /tmp /dev/shm > $out/seen
        touch /tmp/left /dev/shm/left
        for d in / /dev /etc /usr /proc/sys; do touch $d/left 2>/dev/null && echo $d; done > $out/wrote || true
        readlink /proc/self/ns/mnt > $out/ns
"#,
    );
    p.write("r.kdl", &recipe);
    let (code, out) = p.build("r.kdl", &["-j1"]);
    assert_eq!(code, 0, "{out}");
    let read = |i: usize, file: &str| output_file(&out, &format!("t{i}"), file);
    let host = fs::read_link("/proc/self/ns/mnt").unwrap();
    for i in 0..4 {
        assert_eq!(read(i, "seen"), "/dev/shm:\n\n/tmp:\n", "t{i}");
        assert_eq!(read(i, "wrote"), "", "t{i} wrote to its root");
        assert_ne!(read(i, "ns").trim(), host.to_string_lossy(), "t{i}");
    }
}

#[test]
fn every_step_has_a_network_of_its_own() {
    // Four steps in a chain on one lane (whose launcher hands a step's network
    // namespace on only when it holds no socket): each starts with no TCP
    // socket and leaves one in TIME_WAIT on a fixed port.
    let p = Project::new();
    let recipe = chain(
        "n",
        4,
        r#"
        readlink /proc/self/ns/net > $out/net
        tail -n +2 /proc/net/tcp > $out/sockets
        python3 -c '
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 8080)); s.listen()
        c = socket.create_connection(("127.0.0.1", 8080)); a, _ = s.accept()
        c.close(); a.close(); s.close()'
"#,
    );
    p.write("r.kdl", &recipe);
    let (code, out) = p.build("r.kdl", &["-j1"]);
    assert_eq!(code, 0, "{out}");
    let read = |i: usize, file: &str| output_file(&out, &format!("n{i}"), file);
    // A namespace's inode number is reused once it is gone: the sockets tell
    // whether a step found another's namespace.
    let host = fs::read_link("/proc/self/ns/net").unwrap();
    for i in 0..4 {
        assert_eq!(read(i, "sockets"), "", "n{i} found another step's sockets");
        let net = read(i, "net");
        assert_ne!(net.trim(), host.to_string_lossy(), "n{i} is in the host's");
    }
}

#[test]
fn a_network_left_clean_serves_the_next_step_and_no_other() {
    // A privileged step (root in its network namespace) adds an address; four
    // confined steps after it, on the same lane, open no socket.
    let p = Project::new();
    let confined = chain(
        "c",
        4,
        r#"
        readlink /proc/self/ns/net > $out/net
        /usr/sbin/ip -o addr show dev lo > $out/addr
"#,
    )
    .replacen("build \"c0\" {\n", "build \"c0\" {\n    input \"p\"\n", 1);
    p.write(
        "r.kdl",
        &format!(
            "build \"p\" {{\n    privileged #true\n    script \"/usr/sbin/ip addr add 10.200.0.9/32 dev lo; readlink /proc/self/ns/net > $out/net\"\n}}\n{confined}"
        ),
    );
    let (code, out) = p.build("r.kdl", &["-j1"]);
    assert_eq!(code, 0, "{out}");
    let read = |id: &str, file: &str| output_file(&out, id, file);
    let privileged = read("p", "net");
    for i in 0..4 {
        let id = format!("c{i}");
        let addr = read(&id, "addr");
        assert!(addr.contains("127.0.0.1"), "{id}: lo is not up: {addr}");
        assert!(
            !addr.contains("10.200.0.9"),
            "{id} got the privileged step's network"
        );
        assert_ne!(read(&id, "net"), privileged, "{id}");
        // Each was made while the one before ran, or is the one before.
        assert_eq!(
            read(&id, "net"),
            read("c0", "net"),
            "{id} got a new network"
        );
    }
}

/// Starts a build whose step runs until stopped, and waits until it runs.
fn long_build(p: &Project, marker: &str) -> Child {
    p.write(
        "r.kdl",
        &format!(
            "build \"long\" {{\n    script \"sh -c 'sleep 1000; :' {marker} & touch $out/x; wait\"\n}}\nbuild \"after\" {{\n    input \"long\"\n    script \"true\"\n}}\n"
        ),
    );
    let child = p
        .bake_cmd(&["build", "r.kdl"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(30, || !processes_with(marker).is_empty()),
        "the step never started"
    );
    child
}

#[test]
fn sigint_and_sigterm_stop_the_steps_and_leave_the_store_consistent() {
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let p = Project::new();
        let marker = unique("interrupt");
        let mut child = long_build(&p, &marker);
        let sent = Instant::now();
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let code = child.wait().unwrap().code();
        assert_eq!(code, Some(status), "{stderr}");
        assert!(sent.elapsed() < Duration::from_secs(10));
        assert!(stderr.contains("interrupted: long"), "{stderr}");
        assert!(
            wait_for(5, || processes_with(&marker).is_empty()),
            "left running"
        );
        let scratch: Vec<String> = fs::read_dir(p.store().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(scratch.is_empty(), "scratch left: {scratch:?}");
        assert_eq!(fs::read_dir(p.store().join("keys")).unwrap().count(), 0);
        let verify = p.bake(&["verify"]);
        assert!(verify.status.success());
    }
}

#[test]
fn a_second_interrupt_ends_bake_at_once() {
    let p = Project::new();
    let marker = unique("twice");
    let mut child = long_build(&p, &marker);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        wait_for(5, || processes_with(&marker).is_empty()),
        "the step died with bake"
    );
}

#[test]
fn corruption_is_caught_when_an_object_or_a_source_is_used() {
    let p = Project::new();
    let (tarball, sha) = p.tarball("src", &[("hello.txt", "hello\n")]);
    let recipe = |dep_script: &str| {
        format!(
            r#"
source "pkg" {{
    url "file://{}"
    hash "sha256:{sha}"
}}
build "dep" {{
    source "pkg"
    script "{dep_script}"
}}
build "app" {{
    input "dep"
    script "cat $dep/hello.txt > $out/app"
}}
"#,
            tarball.display()
        )
    };
    p.write("r.kdl", &recipe("cp hello.txt $out/"));
    let (code, first) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{first}");
    // One flipped byte in the dependency's object: its dependent refuses it.
    let object = PathBuf::from(first["outputs"]["dep"].as_str().unwrap());
    flip(&object.join("hello.txt"));
    p.write(
        "r.kdl",
        &recipe("cp hello.txt $out/").replace("> $out/app", "> $out/app2"),
    );
    let out = p.bake(&["build", "r.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the output of dep") && err.contains("is corrupt"),
        "{err}"
    );
    assert!(!object.exists(), "the corrupt object was removed");
    let (code, rebuilt) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{rebuilt}");
    assert_eq!(ids(&rebuilt["built"]), ["app", "dep"]);
    // One flipped byte in the stored source: the step never sees it.
    let source = fs::read_dir(p.store().join("sources"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sha256-")
        })
        .unwrap();
    flip(&source);
    p.write(
        "r.kdl",
        &recipe("cp hello.txt $out/; echo 2 >> $out/hello.txt"),
    );
    let out = p.bake(&["build", "r.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("source pkg in the store") && err.contains("is corrupt"),
        "{err}"
    );
    let (code, again) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "fetched anew: {again}");
}

#[test]
fn verify_rehashes_sources_and_removes_leftovers() {
    let p = Project::new();
    let file = p.write("data.txt", "data\n");
    let sha = sha256(&file);
    p.write(
        "r.kdl",
        &format!(
            "source \"data\" {{\n    url \"file://{}\"\n    hash \"sha256:{sha}\"\n    unpack #false\n}}\nbuild \"b\" {{\n    source \"data\"\n    script \"cp data.txt $out/\"\n}}\n",
            file.display()
        ),
    );
    assert_eq!(p.build("r.kdl", &[]).0, 0);
    // What killed processes leave: half-written records and a partial download.
    fs::write(p.store().join("keys/.abc.123.0.tmp"), "{").unwrap();
    fs::write(p.store().join("instances/.b.json.123.0.tmp"), "{").unwrap();
    fs::create_dir_all(p.store().join("sources/.tmp")).unwrap();
    fs::write(p.store().join("sources/.tmp/123-0.part"), "da").unwrap();
    let stored = p.store().join(format!("sources/sha256-{sha}"));
    flip(&stored);
    let out = p.bake(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("corrupt source sha256-{sha}")),
        "{text}"
    );
    assert!(
        text.contains("1 sources checked, 1 corrupt; 3 leftover"),
        "{text}"
    );
    assert!(!stored.exists());
    assert!(!p.store().join("keys/.abc.123.0.tmp").exists());
    assert!(!p.store().join("sources/.tmp/123-0.part").exists());
}

#[test]
fn a_full_disk_names_the_cause() {
    let p = Project::new();
    p.write(
        "r.kdl",
        "build \"fill\" {\n    script \"head -c 4194304 /dev/zero > $out/big\"\n}\n",
    );
    let store = p.path("small");
    fs::create_dir_all(&store).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {s} && \"$BAKE\" build r.kdl --cache {s}",
        s = store.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("BAKE", env!("CARGO_BIN_EXE_bake"))
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no space left on device while writing"),
        "{err}"
    );
}

#[test]
fn a_read_only_store_still_serves_what_only_reads() {
    let p = Project::new();
    p.write(
        "r.kdl",
        "build \"a\" {\n    script \"echo a > $out/a\"\n}\n",
    );
    assert_eq!(p.build("r.kdl", &[]).0, 0);
    let bake = env!("CARGO_BIN_EXE_bake");
    let script = format!(
        "mount --bind -o ro {s} {s} && mount -o remount,bind,ro {s} && \
         \"$BAKE\" eval r.kdl >/dev/null && \"$BAKE\" plan r.kdl && \
         \"$BAKE\" build r.kdl --json --out-link {links} && \"$BAKE\" gc r.kdl --dry-run && \
         echo 'build \"b\" {{\n    script \"true\"\n}}' >> r.kdl && ! \"$BAKE\" build r.kdl 2> {err}",
        s = p.store().display(),
        links = p.path("links").display(),
        err = p.path("err").display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("BAKE", bake)
        .env("BAKE_CACHE", p.store())
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 to build, 1 cached"), "{text}");
    assert!(text.contains("\"cached\": [\n    \"a\""), "{text}");
    assert!(text.contains("would free"), "{text}");
    let err = fs::read_to_string(p.path("err")).unwrap();
    assert!(err.contains("read-only"), "{err}");
}

#[test]
fn slow_sigkill_at_random_moments_leaves_a_consistent_store() {
    let p = Project::new();
    let marker = unique("stress");
    // Six steps in two chains and two loose ones, each writing several files
    // slowly and leaving a background process.
    let mut recipe = String::new();
    for (name, input) in [
        ("a1", None),
        ("a2", Some("a1")),
        ("a3", Some("a2")),
        ("b1", None),
        ("b2", Some("b1")),
        ("c", None),
    ] {
        let copy = input.map_or(String::new(), |i| format!("cat ${i}/v >> $out/v; "));
        recipe.push_str(&format!(
            "build \"{name}\" {{\n{}    script \"sh -c 'sleep 30; :' {marker} & {copy}for i in 1 2 3 4 5; do echo {name}$i >> $out/v; sleep 0.03; done\"\n}}\n",
            input.map_or(String::new(), |i| format!("    input \"{i}\"\n"))
        ));
    }
    p.write("r.kdl", &recipe);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut finished = 0;
    for _ in 0..100 {
        let mut child = p
            .bake_cmd(&["build", "r.kdl", "-j", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(next() % 700));
        if child.try_wait().unwrap().is_some() {
            finished += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        assert!(
            wait_for(5, || processes_with(&marker).is_empty()),
            "a step outlived bake: {:?}",
            processes_with(&marker)
        );
        assert!(started.elapsed() < Duration::from_secs(600), "bounded");
    }
    let verify = p.bake(&["verify"]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains(" 0 corrupt"), "{text}");
    let (code, last) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{last}");
    let read = |id: &str| output_file(&last, id, "v");
    let lines = |name: &str| -> String { (1..=5).map(|i| format!("{name}{i}\n")).collect() };
    assert_eq!(read("a3"), lines("a1") + &lines("a2") + &lines("a3"));
    assert_eq!(read("b2"), lines("b1") + &lines("b2"));
    assert_eq!(read("c"), lines("c"));
    assert!(
        processes_with(&marker).is_empty(),
        "{finished} of 100 runs finished before their kill"
    );
}

fn flip(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap();
    let dir_mode = fs::metadata(dir).unwrap().permissions().mode();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 1;
    fs::write(path, bytes).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode)).unwrap();
}

fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn a_toolchain_under_tmp_is_the_one_a_step_runs() {
    // Tests, CI clones and users' checkouts live under /tmp too: the step's own
    // /tmp must not hide the toolchain's files mounted there.
    let p = Project::new();
    assert!(
        p.dir.path().starts_with("/tmp"),
        "{}",
        p.dir.path().display()
    );
    let cc = p.write("tc/bin/cc", "#!/bin/sh\necho the toolchain cc\n");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&cc, fs::Permissions::from_mode(0o755)).unwrap();
    p.write(
        "r.kdl",
        r#"
toolchain "tc" {
    target "x86_64-linux-musl"
    path "tc/bin"
    identity "tc/bin"
}
build "which" {
    toolchain "tc"
    script "cc > $out/which"
}
"#,
    );
    let (code, json) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{json}");
    let out = PathBuf::from(json["outputs"]["which"].as_str().unwrap());
    assert_eq!(
        fs::read_to_string(out.join("which")).unwrap(),
        "the toolchain cc\n"
    );
}

#[test]
fn a_step_starts_with_the_default_signals_and_huge_pages() {
    let p = Project::new();
    p.write(
        "r.kdl",
        "build \"sig\" {\n    script \"grep -E '^(SigIgn|SigBlk|THP_enabled)' /proc/self/status > $out/status; (yes | head -n 1) > $out/yes 2> $out/err\"\n}\n",
    );
    let (code, out) = p.build("r.kdl", &[]);
    assert_eq!(code, 0, "{out}");
    let status = output_file(&out, "sig", "status");
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name));
        let value = line.and_then(|l| l.split_whitespace().nth(1));
        value
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .to_string()
    };
    let ignored = u64::from_str_radix(&field("SigIgn:"), 16).unwrap();
    // Bake ignores SIGPIPE (Rust's runtime) and its launchers SIGINT; bake
    // handles SIGINT and SIGTERM: a step gets each at its default.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
        assert_eq!(
            ignored & (1 << (sig - 1)),
            0,
            "signal {sig} ignored: {status}"
        );
    }
    assert_eq!(
        u64::from_str_radix(&field("SigBlk:"), 16).unwrap(),
        0,
        "{status}"
    );
    assert_eq!(field("THP_enabled:"), "1", "{status}");
    // With SIGPIPE at its default, `yes` ends quietly when `head` stops reading.
    assert_eq!(output_file(&out, "sig", "yes"), "y\n");
    assert_eq!(output_file(&out, "sig", "err"), "", "yes saw a broken pipe");
}
