//! The sandbox a step runs in, set up between fork and exec.
//!
//! A confined step gets its own mount, PID, network (loopback only), IPC and UTS
//! namespaces and a root file system of its own: the system's `/usr`, `/etc` and
//! their links read-only, its toolchain's files read-only at their own paths,
//! `/build` (its source, `$out`, inputs read-only), a private `/tmp`, a minimal
//! `/dev` and its own `/proc`; nothing else of the host. When bake is root the
//! step runs as the unprivileged [`BUILD_UID`]; otherwise as root of a user
//! namespace mapped to the invoking user. A privileged step (declared so in the
//! recipe) keeps root and the host's file system, but still gets the namespaces,
//! so everything it starts dies with it and it sees no network but loopback.
//!
//! The step's shell is PID 1 of its namespaces, started straight into them by
//! its launcher (or bake) without a fork's copy of its memory (see `vfork`):
//! when it ends, the kernel kills whatever it left behind, and a SIGKILL of it
//! (a timeout, an interrupt, bake's own death) is a SIGKILL of the whole step.
//! A confined step's end is told as soon as PID 1 is gone, its mounts torn
//! down after (see `process`); a privileged step's once they are.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::process::Process;
use super::vfork::Exec;
use super::{ExecError, Step, BUILD_DIR};
use crate::variation::StepSettings;

/// The uid and gid confined steps run as when bake is root.
pub const BUILD_UID: u32 = 30000;

/// Where a confined step sees its toolchain's cache.
const CACHE_DIR: &str = "/toolchain-cache";

/// What of the host's root a confined step sees (read-only), where it exists.
const HOST_ENTRIES: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
];

/// The host's lock files, which a privileged step shares (FHS: locks on
/// devices and other resources shared between programs).
const HOST_LOCKS: &str = "/run/lock";

/// Device nodes a confined step gets.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What of [`HOST_ENTRIES`] and [`DEVICES`] the host has: looked at once per
/// process, not for every step (a score of system calls each).
struct Host {
    entries: Vec<(&'static str, HostEntry)>,
    devices: Vec<&'static str>,
}

enum HostEntry {
    Link(PathBuf),
    Dir,
}

impl Host {
    fn get() -> Result<&'static Host, ExecError> {
        static HOST: OnceLock<Host> = OnceLock::new();
        if let Some(host) = HOST.get() {
            return Ok(host);
        }
        let mut entries = Vec::new();
        for entry in HOST_ENTRIES {
            let path = Path::new("/").join(entry);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target =
                        fs::read_link(&path).map_err(|e| ExecError::io("cannot read", &path, e))?;
                    entries.push((*entry, HostEntry::Link(target)));
                }
                Ok(m) if m.is_dir() => entries.push((*entry, HostEntry::Dir)),
                _ => {}
            }
        }
        let devices = DEVICES
            .iter()
            .copied()
            .filter(|dev| Path::new("/dev").join(dev).exists())
            .collect();
        Ok(HOST.get_or_init(|| Host { entries, devices }))
    }
}

/// How much of the host a step may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Confinement {
    /// Its own root file system, no privilege.
    #[default]
    Confined,
    /// Root, and the host's file system: for steps that make namespaces, mounts
    /// or containers. Declared in the recipe.
    Privileged,
}

/// What this process can do, probed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Root: namespaces, then the unprivileged build uid.
    Root,
    /// Not root: a user namespace first.
    User { uid: u32, gid: u32 },
    /// Neither works: steps run in place, unconfined.
    InPlace,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        // SAFETY: getuid, geteuid and getgid have no preconditions.
        let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
        let wanted = if euid == 0 {
            Mode::Root
        } else {
            Mode::User { uid, gid }
        };
        let flags = namespace_flags(wanted);
        let mut probe = Command::new("/bin/true");
        // SAFETY: unshare is async-signal-safe.
        unsafe {
            probe.pre_exec(move || check(libc::unshare(flags)));
        }
        if probe.status().is_ok_and(|s| s.success()) {
            return wanted;
        }
        crate::progress::warn(
            "cannot make namespaces here (needs root or user namespaces); steps run in place, \
             unconfined, and their build paths vary, so outputs may not be reproducible",
        );
        Mode::InPlace
    })
}

fn namespace_flags(mode: Mode) -> libc::c_int {
    let base = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    match mode {
        Mode::User { .. } => base | libc::CLONE_NEWUSER,
        _ => base,
    }
}

/// One thing done to the new root between fork and exec.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Op {
    Mkdir(CString),
    Symlink(CString, CString),
    Touch(CString),
    /// Bind `src` at `dst`; read-only ones also lose setuid.
    Bind {
        src: CString,
        dst: CString,
        read_only: bool,
    },
    Tmpfs(CString, CString),
    Proc(CString),
    /// Fails unless the path exists (after the mounts above it).
    Exists(CString),
}

impl Op {
    /// The path it makes or mounts on.
    fn target(&self) -> &CStr {
        match self {
            Op::Mkdir(p) | Op::Touch(p) | Op::Tmpfs(p, _) | Op::Proc(p) | Op::Exists(p) => p,
            Op::Symlink(_, link) => link,
            Op::Bind { dst, .. } => dst,
        }
    }
}

/// A confined step's root in two parts: what every step with the same
/// toolchains and builder has, which a template may stand for, then the
/// step's own: its `/tmp`, `/dev/shm`, `/proc`, `/build` and inputs, and
/// whatever lies under them (a toolchain in a checkout under `/tmp`).
struct RootOps {
    own_points: [PathBuf; 4],
    shared: Vec<Op>,
    own: Vec<Op>,
}

impl RootOps {
    fn new(root: &Path) -> RootOps {
        RootOps {
            own_points: ["tmp", "dev/shm", "proc", "build"].map(|d| root.join(d)),
            shared: Vec::new(),
            own: Vec::new(),
        }
    }

    fn shared(&mut self, op: Op) {
        let target = Path::new(std::ffi::OsStr::from_bytes(op.target().to_bytes()));
        let hidden = self
            .own_points
            .iter()
            .any(|point| target != point && target.starts_with(point));
        match hidden {
            true => self.own.push(op),
            false => self.shared.push(op),
        }
    }

    fn own(&mut self, op: Op) {
        self.own.push(op);
    }

    /// All of them, the shared first, and how many of them may be shared.
    fn into_ops(self, shareable: bool) -> (Vec<Op>, usize) {
        let shared = if shareable { self.shared.len() } else { 0 };
        let mut ops = self.shared;
        ops.extend(self.own);
        (ops, shared)
    }
}

pub struct Sandbox {
    work: PathBuf,
    mode: Mode,
    confinement: Confinement,
    /// The directory a confined step's root is built on.
    root: Option<PathBuf>,
    inputs: Vec<(String, PathBuf)>,
    cache: Option<PathBuf>,
    ops: Vec<Op>,
    /// How many of `ops` a template may stand for (see `exec::template`).
    shared: usize,
    /// The uid and gid the step runs as, as it sees them.
    uid: u32,
    hostname: &'static str,
    domainname: &'static str,
    settings: StepSettings,
}

impl Sandbox {
    pub fn new(step: &Step, work: &Path) -> Result<Sandbox, ExecError> {
        let mode = mode();
        let io = |what: &str, path: &Path| {
            let path = path.to_path_buf();
            let what = what.to_string();
            move |e| ExecError::io(what, &path, e)
        };
        let inputs = step.inputs.clone();
        let variation = step.variation.as_ref();
        let (hostname, domainname) = variation
            .and_then(|v| v.hostname())
            .unwrap_or(("localhost", "(none)"));
        let uid = match (mode, step.confinement) {
            (_, Confinement::Privileged) | (Mode::InPlace, _) => 0,
            (Mode::Root, _) => variation.and_then(|v| v.uid()).unwrap_or(BUILD_UID),
            (Mode::User { .. }, _) => variation.and_then(|v| v.uid()).unwrap_or(0),
        };
        let mut sandbox = Sandbox {
            work: work.to_path_buf(),
            mode,
            confinement: step.confinement,
            root: None,
            inputs,
            cache: step.cache.as_ref().map(|(_, dir)| dir.clone()),
            ops: Vec::new(),
            shared: 0,
            uid,
            hostname,
            domainname,
            settings: variation.map(StepSettings::of).unwrap_or_default(),
        };
        if let Some(dir) = &sandbox.cache {
            fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        match (mode, step.confinement) {
            (Mode::InPlace, _) => {}
            (Mode::User { .. }, Confinement::Privileged) => {
                return Err(ExecError::Io {
                    what: "a privileged step".into(),
                    source: io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "it needs bake to run as root",
                    ),
                })
            }
            (_, Confinement::Privileged) => {
                fs::create_dir_all(BUILD_DIR).map_err(io("cannot create", Path::new(BUILD_DIR)))?;
            }
            (_, Confinement::Confined) => sandbox.confine(step)?,
        }
        Ok(sandbox)
    }

    /// Prepares the root of a confined step: every path and string it needs is
    /// made now, as nothing may allocate between fork and exec.
    fn confine(&mut self, step: &Step) -> Result<(), ExecError> {
        // Every step's root is a tmpfs of its own namespace, mounted on one empty
        // directory; bake's files for it are made once per build uid. Each
        // file made and removed per step costs: on an ext4 without a journal,
        // finding a free inode skips every one freed in the last seconds.
        let root = step.shared.join("root");
        let etc = step.shared.join(format!("etc-{}", self.uid));
        for d in [&root, &etc] {
            fs::create_dir_all(d).map_err(|e| ExecError::io("cannot create", d, e))?;
        }
        let (uid, gid) = (self.uid, self.uid);
        let passwd = format!(
            "root:x:0:0:root:/build/home:/bin/sh\nbake:x:{uid}:{gid}:bake build user:/build/home:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        let group = format!("root:x:0:\nbake:x:{gid}:\nnogroup:x:65534:\n");
        for (file, text) in [("passwd", passwd), ("group", group)] {
            let p = etc.join(file);
            if !p.exists() {
                crate::store::write_atomic(&p, text.as_bytes())
                    .map_err(|e| ExecError::io("cannot write", &p, e))?;
            }
        }
        self.root = Some(root.clone());
        let at = |p: &str| cpath(&root.join(p.trim_start_matches('/')));
        let mut ops = RootOps::new(&root);
        ops.shared(Op::Tmpfs(cpath(&root)?, cstr("mode=0755")?));
        let host = Host::get()?;
        for (entry, seen) in &host.entries {
            match seen {
                HostEntry::Link(target) => ops.shared(Op::Symlink(cpath(target)?, at(entry)?)),
                HostEntry::Dir => {
                    ops.shared(Op::Mkdir(at(entry)?));
                    ops.shared(bind(&Path::new("/").join(entry), &root.join(entry), true)?);
                }
            }
        }
        for file in ["passwd", "group"] {
            ops.shared(bind(&etc.join(file), &root.join("etc").join(file), true)?);
        }
        ops.shared(Op::Mkdir(at("tmp")?));
        ops.own(Op::Tmpfs(at("tmp")?, cstr("mode=1777")?));
        ops.shared(Op::Mkdir(at("dev")?));
        ops.shared(Op::Tmpfs(at("dev")?, cstr("mode=0755")?));
        for dev in &host.devices {
            ops.shared(Op::Touch(at(&format!("dev/{dev}"))?));
            ops.shared(bind(
                &Path::new("/dev").join(dev),
                &root.join("dev").join(dev),
                false,
            )?);
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            ops.shared(Op::Symlink(cstr(target)?, at(&format!("dev/{link}"))?));
        }
        ops.shared(Op::Mkdir(at("dev/shm")?));
        ops.own(Op::Tmpfs(at("dev/shm")?, cstr("mode=1777")?));
        ops.shared(Op::Mkdir(at("proc")?));
        ops.own(Op::Proc(at("proc")?));
        ops.shared(Op::Mkdir(at("build")?));
        ops.own(bind(&self.work, &root.join("build"), false)?);
        for op in input_binds(&root.join("build/inputs"), &self.inputs)? {
            ops.own(op);
        }
        for m in &step.mounts {
            let real = m
                .canonicalize()
                .map_err(|e| ExecError::io("cannot find the toolchain's", m, e))?;
            // The system's own directories are there already.
            if HOST_ENTRIES
                .iter()
                .any(|e| real.starts_with(Path::new("/").join(e)))
            {
                continue;
            }
            let inside = root.join(real.strip_prefix("/").unwrap_or(&real));
            for op in mkdirs(&root, &inside)? {
                ops.shared(op);
            }
            ops.shared(bind(&real, &inside, true)?);
            // A toolchain the step cannot see would leave it the system's compiler.
            ops.shared(Op::Exists(cpath(&inside)?));
            if *m != real && m.is_absolute() {
                let link = root.join(m.strip_prefix("/").unwrap_or(m));
                if let Some(parent) = link.parent() {
                    for op in mkdirs(&root, parent)? {
                        ops.shared(op);
                    }
                }
                ops.shared(Op::Symlink(cpath(&real)?, cpath(&link)?));
            }
        }
        if let Some(cache) = &self.cache {
            ops.shared(Op::Mkdir(at(CACHE_DIR)?));
            ops.shared(bind(cache, &root.join(&CACHE_DIR[1..]), false)?);
        }
        // Only an unprivileged builder may share: root could write to the
        // template's file systems.
        let shareable = self.mode == Mode::Root;
        (self.ops, self.shared) = ops.into_ops(shareable);
        if self.mode == Mode::Root {
            // /build is the builder's, but for the inputs' mount points.
            for entry in ["", "src", "out", "home", "tmp", "script.sh"] {
                let path = self.work.join(entry);
                if entry.is_empty() {
                    std::os::unix::fs::lchown(&path, Some(self.uid), Some(self.uid))
                        .map_err(|e| ExecError::io("cannot hand over", &path, e))?;
                } else {
                    chown_tree(&path, self.uid)?;
                }
            }
            if let Some(cache) = &self.cache {
                chown_tree(cache, self.uid)?;
            }
        }
        Ok(())
    }

    fn isolated(&self) -> bool {
        self.mode != Mode::InPlace
    }

    /// The build directory as the step sees it.
    pub fn build_dir(&self) -> String {
        if self.isolated() {
            BUILD_DIR.to_string()
        } else {
            self.work.display().to_string()
        }
    }

    /// Where the step sees input `name`.
    pub fn input_path(&self, name: &str) -> String {
        match self.inputs.iter().find(|(n, _)| n == name) {
            Some((_, source)) if !self.isolated() => source.display().to_string(),
            _ => format!("{}/inputs/{name}", self.build_dir()),
        }
    }

    /// Where the step sees its toolchain's cache.
    pub fn cache_path(&self) -> String {
        match (&self.cache, self.isolated(), self.confinement) {
            (_, true, Confinement::Confined) => CACHE_DIR.to_string(),
            (Some(dir), _, _) => dir.display().to_string(),
            (None, _, _) => String::new(),
        }
    }

    /// How a process enters this sandbox; made now, as nothing may allocate
    /// between fork and exec.
    pub fn entry(&mut self) -> Result<Entry, ExecError> {
        let confined = self.confinement == Confinement::Confined;
        // Privileged steps: only /build and the inputs, on the host's own root.
        let privileged_binds = if confined {
            Vec::new()
        } else {
            let mut binds = vec![bind(&self.work, Path::new(BUILD_DIR), false)?];
            binds.extend(input_binds(
                &Path::new(BUILD_DIR).join("inputs"),
                &self.inputs,
            )?);
            binds
        };
        Ok(Entry {
            isolated: self.isolated(),
            flags: namespace_flags(self.mode),
            maps: match self.mode {
                Mode::User { uid, gid } => Some((
                    format!("{} {uid} 1\n", self.uid).into_bytes(),
                    format!("{} {gid} 1\n", self.uid).into_bytes(),
                )),
                _ => None,
            },
            confined,
            become_builder: confined && self.mode == Mode::Root,
            root: match &self.root {
                Some(root) if confined => Some(cpath(root)?),
                _ => None,
            },
            ops: std::mem::take(&mut self.ops),
            shared: self.shared,
            template: None,
            privileged_binds,
            cwd: cpath(&Path::new(&self.build_dir()).join("src"))?,
            hostname: self.hostname.to_string(),
            domainname: self.domainname.to_string(),
            builder: self.uid,
            settings: self.settings,
            cgroup: None,
            oom_score_adj: None,
            network: None,
        })
    }
}

/// How a process enters a step's sandbox between fork and exec: plain data, so
/// that a lane's launcher (`exec::lane`) can enter it as well as bake.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Entry {
    isolated: bool,
    flags: libc::c_int,
    /// `uid_map` and `gid_map` of the step's user namespace, if it has one.
    maps: Option<(Vec<u8>, Vec<u8>)>,
    confined: bool,
    become_builder: bool,
    root: Option<CString>,
    ops: Vec<Op>,
    /// How many of `ops`, from the first, a template may stand for.
    shared: usize,
    /// A mount namespace holding what `ops[..shared]` make (see
    /// `exec::template`), which the step copies rather than make its own.
    #[serde(skip)]
    pub template: Option<OwnedFd>,
    privileged_binds: Vec<Op>,
    cwd: CString,
    hostname: String,
    domainname: String,
    builder: u32,
    settings: StepSettings,
    /// The `cgroup.procs` file of a memory cgroup the step joins first.
    pub cgroup: Option<CString>,
    /// What the step sets its OOM score adjustment back to (a launcher lowers
    /// its own).
    pub oom_score_adj: Option<Vec<u8>>,
    /// A network namespace from the step's launcher, made ahead of time or
    /// left clean by the step before, which it joins rather than make its own.
    #[serde(skip)]
    pub network: Option<OwnedFd>,
}

impl Entry {
    /// Whether the step makes a network namespace of its own that one made
    /// ahead of time, by root, could stand for: not inside a user namespace,
    /// which must own the network namespace its root configures.
    pub fn takes_network(&self) -> bool {
        self.isolated
            && self.flags & libc::CLONE_NEWNET != 0
            && self.flags & libc::CLONE_NEWUSER == 0
    }

    /// What a template would hold for this step: the mounts it shares with
    /// every step of its toolchains and builder, and the root they are
    /// mounted on. None where it makes its whole root itself.
    pub(super) fn template_ops(&self) -> Option<(&[Op], &CStr)> {
        let root = self.root.as_deref()?;
        let copies = self.become_builder && self.flags & libc::CLONE_NEWNS != 0;
        (copies && self.shared > 0).then(|| (&self.ops[..self.shared.min(self.ops.len())], root))
    }

    /// Whether the step's network namespace may serve the next step once it
    /// holds no socket: the step runs unprivileged, so it can change nothing
    /// else there (addresses, routes, filters, sysctls).
    pub fn network_reusable(&self) -> bool {
        self.takes_network() && self.become_builder
    }

    /// Starts `program` with `args` and `env` in the sandbox, its stdin, stdout
    /// and stderr on `stdio`. In namespaces of its own, the process returned is
    /// PID 1 there, started without a copy of this process's memory
    /// (`vfork`); its end is its whole namespace's.
    pub fn start(
        self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        stdio: [OwnedFd; 3],
    ) -> Result<Process, ExecError> {
        let Entry {
            isolated,
            flags,
            maps,
            confined,
            become_builder,
            root,
            ops,
            shared,
            template,
            privileged_binds,
            cwd,
            hostname,
            domainname,
            builder,
            settings,
            cgroup,
            oom_score_adj,
            network,
        } = self;
        let started = |e| ExecError::io("cannot start", Path::new(program), e);
        let oom_score_adj = oom_score_adj.map(|value| (c"/proc/self/oom_score_adj", value));
        if !isolated {
            let [stdin, stdout, stderr] = stdio;
            let mut cmd = Command::new(program);
            cmd.args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(stdin)
                .stdout(stdout)
                .stderr(stderr);
            // SAFETY: only async-signal-safe calls on memory prepared before fork.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(0o022);
                    // Huge pages as on the host; bake's own are off (src/bin/bake.rs).
                    libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                    settings.enter();
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    // Its own process group, so a timeout kills what it started too.
                    check(libc::setpgid(0, 0))?;
                    reset_oom_score(oom_score_adj.as_ref());
                    join_cgroup(cgroup.as_deref())?;
                    check(libc::chdir(cwd.as_ptr()))
                });
            }
            let child = cmd.spawn().map_err(started)?;
            return Ok(Process::new(child.id() as libc::pid_t, false));
        }
        let flags = match &network {
            Some(_) => flags & !libc::CLONE_NEWNET,
            None => flags,
        };
        // From a template (pivoted into the root already), the step's mount
        // namespace is a copy of it, with only the step's own mounts to make;
        // what they bind is opened before it leaves this namespace.
        let (flags, inside, trees) = match (&template, &root) {
            (Some(_), Some(root)) => {
                let (inside, trees) = inside_root(ops.get(shared..).unwrap_or(&[]), root)?;
                (flags & !libc::CLONE_NEWNS, inside, trees)
            }
            _ => (flags, Vec::new(), Vec::new()),
        };
        let mut opened: Vec<libc::c_int> = vec![-1; trees.len()];
        let own_proc = Op::Proc(cstr("/proc")?);
        let own_run = Op::Tmpfs(cstr("/run")?, cstr("mode=0755")?);
        // A privileged step sees the host's /run/lock in its own /run.
        let host_locks = if !confined && Path::new(HOST_LOCKS).is_dir() {
            let tree = Tree {
                src: cstr(HOST_LOCKS)?,
                read_only: false,
            };
            Some((tree, Op::Mkdir(cstr(HOST_LOCKS)?)))
        } else {
            None
        };
        let mut exec = Exec::new(program, args, env)?;
        let files = [
            cstr("/proc/self/setgroups")?,
            cstr("/proc/self/uid_map")?,
            cstr("/proc/self/gid_map")?,
        ];
        // SAFETY: prctl with integer arguments only.
        let thp_disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }.max(0);
        // SAFETY: only system calls, on memory prepared before the clone. The
        // set-ID calls are made raw: glibc's wrappers would reach for the
        // threads of this process's memory, which the new process shares.
        let spawned = unsafe {
            exec.spawn(flags, &mut || {
                // The descriptors are 3 and up: a Rust program starts with 0-2 open.
                for (fd, to) in stdio.iter().zip(0..) {
                    check(libc::dup2(fd.as_raw_fd(), to) - to)?;
                }
                libc::umask(0o022);
                settings.enter();
                reset_oom_score(oom_score_adj.as_ref());
                join_cgroup(cgroup.as_deref())?;
                if let Some(net) = &network {
                    check(libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET))?;
                }
                if let Some((uid_map, gid_map)) = &maps {
                    write_file(&files[0], b"deny")?;
                    write_file(&files[1], uid_map)?;
                    write_file(&files[2], gid_map)?;
                }
                libc::setsid();
                libc::sethostname(hostname.as_ptr().cast(), hostname.len());
                libc::setdomainname(domainname.as_ptr().cast(), domainname.len());
                loopback_up();
                match (&template, &root) {
                    // Its mounts are private already, its root the step's.
                    (Some(ns), Some(_)) => {
                        for (tree, fd) in trees.iter().zip(opened.iter_mut()) {
                            *fd = open_tree(tree)?;
                        }
                        check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS))?;
                        check(libc::unshare(libc::CLONE_NEWNS))?;
                        for step in &inside {
                            match step {
                                Inside::Do(op) => run_op(op)?,
                                Inside::Attach { tree, dst } => {
                                    attach(opened.get(*tree).copied().unwrap_or(-1), dst)?
                                }
                            }
                        }
                    }
                    (None, Some(root)) => {
                        make_private()?;
                        for op in &ops {
                            run_op(op)?;
                        }
                        pivot_into(root)?;
                    }
                    (_, None) => {
                        make_private()?;
                        for op in &privileged_binds {
                            run_op(op)?;
                        }
                        // Its own processes in /proc, not the host's; and its own /run,
                        // so what it leaves there (network namespaces, containers'
                        // state) goes with it. But the host's /run/lock: the locks
                        // on what the host has only one of (loop devices) are the
                        // host's, so steps and the host's other users exclude each other.
                        run_op(&own_proc)?;
                        let locks = match &host_locks {
                            Some((tree, _)) => Some(open_tree(tree)?),
                            None => None,
                        };
                        run_op(&own_run)?;
                        if let (Some(fd), Some((_, mkdir))) = (locks, &host_locks) {
                            run_op(mkdir)?;
                            attach(fd, mkdir.target())?;
                            libc::close(fd);
                        }
                    }
                }
                check(libc::chdir(cwd.as_ptr()))?;
                if become_builder {
                    let id = builder;
                    let raw = |r: libc::c_long| check(r as libc::c_int);
                    raw(libc::syscall(
                        libc::SYS_setgroups,
                        0,
                        std::ptr::null::<libc::gid_t>(),
                    ))?;
                    raw(libc::syscall(libc::SYS_setresgid, id, id, id))?;
                    raw(libc::syscall(libc::SYS_setresuid, id, id, id))?;
                }
                if confined {
                    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                }
                // Bake (or its launcher) gone, the step goes. After the set-ID
                // calls: a change of credentials clears it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Huge pages as on the host (the flag is the memory's, so this
                // process's own too until the exec: set again below).
                libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                Ok(())
            })
        };
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, thp_disabled, 0, 0, 0);
        }
        let pid = spawned.map_err(started)?;
        // A confined step mounts nothing of its own, so its end may be told
        // before its mounts are gone; a privileged step's (a loop device's file
        // system) are flushed only then.
        Ok(Process::new(pid, confined))
    }
}

/// Stops mounts made from now on in this process's mount namespace from
/// reaching the one it was copied from, and back.
pub(super) unsafe fn make_private() -> io::Result<()> {
    let none = std::ptr::null();
    check(libc::mount(
        none,
        c"/".as_ptr(),
        none,
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ))
}

/// Makes `root` this process's mount namespace's root, the rest detached.
pub(super) unsafe fn pivot_into(root: &CStr) -> io::Result<()> {
    check(libc::chdir(root.as_ptr()))?;
    check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32)?;
    check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))
}

pub(super) unsafe fn run_op(op: &Op) -> io::Result<()> {
    let none = std::ptr::null();
    match op {
        Op::Mkdir(p) => {
            if libc::mkdir(p.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        Op::Symlink(target, link) => {
            if libc::symlink(target.as_ptr(), link.as_ptr()) != 0
                && *libc::__errno_location() != libc::EEXIST
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        Op::Touch(p) => {
            let fd = libc::open(
                p.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        }
        Op::Bind {
            src,
            dst,
            read_only,
        } => {
            check(libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if *read_only {
                // A remount must keep the flags the original mount has locked.
                let mut st: libc::statvfs = std::mem::zeroed();
                check(libc::statvfs(dst.as_ptr(), &mut st))?;
                let kept = [
                    (libc::ST_NODEV, libc::MS_NODEV),
                    (libc::ST_NOEXEC, libc::MS_NOEXEC),
                    (libc::ST_NOATIME, libc::MS_NOATIME),
                    (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                    (libc::ST_RELATIME, libc::MS_RELATIME),
                ]
                .iter()
                .filter(|(st_flag, _)| st.f_flag & *st_flag != 0)
                .fold(0, |acc, (_, ms)| acc | ms);
                let flags =
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | kept;
                check(libc::mount(
                    none,
                    dst.as_ptr(),
                    none,
                    flags,
                    std::ptr::null(),
                ))?;
            }
            Ok(())
        }
        Op::Tmpfs(dst, data) => check(libc::mount(
            c"tmpfs".as_ptr(),
            dst.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )),
        Op::Exists(path) => {
            let mut st: libc::stat = std::mem::zeroed();
            check(libc::stat(path.as_ptr(), &mut st))
        }
        Op::Proc(dst) => check(libc::mount(
            c"proc".as_ptr(),
            dst.as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )),
    }
}

/// What a step binds inside its template's root: a copy of `src` and the
/// mounts under it, as they are on its start.
struct Tree {
    src: CString,
    read_only: bool,
}

/// One thing a step copied from a template does inside its root.
enum Inside {
    Do(Op),
    /// Attach the `tree`th tree it opened before it entered the template.
    Attach {
        tree: usize,
        dst: CString,
    },
}

/// A step's own ops as it makes them inside its template's root: their
/// paths without the root's, and each bind as a tree it opens, then attaches.
fn inside_root(ops: &[Op], root: &CStr) -> Result<(Vec<Inside>, Vec<Tree>), ExecError> {
    let root = Path::new(std::ffi::OsStr::from_bytes(root.to_bytes()));
    let inside = |p: &CString| {
        let path = Path::new(std::ffi::OsStr::from_bytes(p.as_bytes()));
        cpath(&Path::new("/").join(path.strip_prefix(root).unwrap_or(path)))
    };
    let mut trees = Vec::new();
    let mut moved = Vec::with_capacity(ops.len());
    for op in ops {
        moved.push(match op {
            Op::Mkdir(p) => Inside::Do(Op::Mkdir(inside(p)?)),
            Op::Touch(p) => Inside::Do(Op::Touch(inside(p)?)),
            Op::Exists(p) => Inside::Do(Op::Exists(inside(p)?)),
            Op::Proc(p) => Inside::Do(Op::Proc(inside(p)?)),
            Op::Tmpfs(p, data) => Inside::Do(Op::Tmpfs(inside(p)?, data.clone())),
            Op::Symlink(target, link) => Inside::Do(Op::Symlink(target.clone(), inside(link)?)),
            Op::Bind {
                src,
                dst,
                read_only,
            } => {
                trees.push(Tree {
                    src: src.clone(),
                    read_only: *read_only,
                });
                Inside::Attach {
                    tree: trees.len() - 1,
                    dst: inside(dst)?,
                }
            }
        });
    }
    Ok((moved, trees))
}

/// A detached copy of the tree's mounts (`open_tree`), made read-only and
/// without setuid if asked; its descriptor.
unsafe fn open_tree(tree: &Tree) -> io::Result<libc::c_int> {
    let flags =
        libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
    let fd = libc::syscall(
        libc::SYS_open_tree,
        libc::AT_FDCWD,
        tree.src.as_ptr(),
        flags,
    ) as libc::c_int;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    if tree.read_only {
        let attr = libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        check(libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr,
            std::mem::size_of::<libc::mount_attr>(),
        ) as libc::c_int)?;
    }
    Ok(fd)
}

/// Whether this kernel opens, changes and attaches trees (Linux 5.12 and
/// later), which a step copied from a template needs.
pub(super) fn trees_attach() -> bool {
    static PROBED: OnceLock<bool> = OnceLock::new();
    *PROBED.get_or_init(|| {
        let tree = Tree {
            src: c"/".to_owned(),
            read_only: true,
        };
        // SAFETY: the descriptor is this function's, closed here.
        unsafe { open_tree(&tree).map(|fd| libc::close(fd)).is_ok() }
    })
}

/// Attaches a tree from [`open_tree`] at `dst`.
unsafe fn attach(tree: libc::c_int, dst: &CStr) -> io::Result<()> {
    check(libc::syscall(
        libc::SYS_move_mount,
        tree,
        c"".as_ptr(),
        libc::AT_FDCWD,
        dst.as_ptr(),
        libc::MOVE_MOUNT_F_EMPTY_PATH,
    ) as libc::c_int)
}

/// Sets the calling process's OOM score adjustment; a failure leaves the one
/// it has.
unsafe fn reset_oom_score(to: Option<&(&CStr, Vec<u8>)>) {
    if let Some((path, value)) = to {
        let _ = write_file(path, value);
    }
}

/// Moves the calling process into a cgroup (`0` is the writer itself).
unsafe fn join_cgroup(procs: Option<&CStr>) -> io::Result<()> {
    match procs {
        Some(p) => write_file(p, b"0"),
        None => Ok(()),
    }
}

unsafe fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if n != data.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings up `lo` in a fresh network namespace (it starts down), so steps can use
/// 127.0.0.1. Also runs between fork and exec: only system calls, no allocation.
pub(super) unsafe fn loopback_up() {
    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return;
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) == 0
        && req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short == 0
    {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
    }
    libc::close(fd);
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<Op, ExecError> {
    Ok(Op::Bind {
        src: cpath(src)?,
        dst: cpath(dst)?,
        read_only,
    })
}

/// The inputs, read-only under `dir`: their mount points on a tmpfs there,
/// rather than files made in the build directory for every step.
fn input_binds(dir: &Path, inputs: &[(String, PathBuf)]) -> Result<Vec<Op>, ExecError> {
    let mut ops = Vec::new();
    if inputs.is_empty() {
        return Ok(ops);
    }
    ops.push(Op::Tmpfs(cpath(dir)?, cstr("mode=0755")?));
    for (name, path) in inputs {
        let point = dir.join(name);
        // A tree, or a file (a source given as an input).
        ops.push(if path.is_dir() {
            Op::Mkdir(cpath(&point)?)
        } else {
            Op::Touch(cpath(&point)?)
        });
        ops.push(bind(path, &point, true)?);
    }
    Ok(ops)
}

/// Directories from just under `root` down to `dir`, outermost first.
fn mkdirs(root: &Path, dir: &Path) -> Result<Vec<Op>, ExecError> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut at = root.to_path_buf();
    let mut ops = Vec::new();
    for c in rel.components() {
        at.push(c);
        ops.push(Op::Mkdir(cpath(&at)?));
    }
    Ok(ops)
}

/// Gives a tree to the build user (bake as root unpacked and placed it).
fn chown_tree(path: &Path, uid: u32) -> Result<(), ExecError> {
    crate::store::chown_tree(path, uid).map_err(|e| ExecError::io("cannot hand over", path, e))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn cpath(p: &Path) -> Result<CString, ExecError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| ExecError::Io {
        what: p.display().to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"),
    })
}

fn cstr(s: &str) -> Result<CString, ExecError> {
    cpath(Path::new(s))
}
