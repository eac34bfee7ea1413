//! What `bake check` changes between a build and its rebuild, so that a step
//! whose output depends on its environment shows up as different.
//!
//! Every variation is applied at once (as reprotest does by default): the date,
//! the host and domain name, the kernel release `uname` reports, `JOBS`, the
//! order of directory entries in the source tree, ASLR, the user id and the CPU
//! set. A rebuild also starts from empty toolchain caches, so that nothing
//! compiled for the first build is reused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::names::NodeName;
use crate::store::{Store, TmpDir};

/// One thing a rebuild changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Vary {
    Time,
    Hostname,
    Kernel,
    Jobs,
    DirOrder,
    Aslr,
    Uid,
    Cpus,
}

impl Vary {
    pub const ALL: [Vary; 8] = [
        Vary::Time,
        Vary::Hostname,
        Vary::Kernel,
        Vary::Jobs,
        Vary::DirOrder,
        Vary::Aslr,
        Vary::Uid,
        Vary::Cpus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Vary::Time => "time",
            Vary::Hostname => "hostname",
            Vary::Kernel => "kernel",
            Vary::Jobs => "jobs",
            Vary::DirOrder => "dirorder",
            Vary::Aslr => "aslr",
            Vary::Uid => "uid",
            Vary::Cpus => "cpus",
        }
    }

    /// What the rebuild sees instead, for the report.
    pub fn what(self) -> &'static str {
        match self {
            Vary::Time => "the clock reads 2041-07-13 (faketime)",
            Vary::Hostname => "host name bake-variant, domain variant.invalid",
            Vary::Kernel => "uname reports a 2.6 kernel (UNAME26 personality)",
            Vary::Jobs => "JOBS is 1 (or 2 when builds run with 1)",
            Vary::DirOrder => "the source tree lists its entries in reverse (disorderfs)",
            Vary::Aslr => "address space randomisation off",
            Vary::Uid => "the step runs as uid and gid 30001",
            Vary::Cpus => "one CPU only",
        }
    }
}

impl fmt::Display for Vary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Vary {
    type Err = String;

    fn from_str(s: &str) -> Result<Vary, String> {
        Vary::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Vary::ALL.iter().map(|v| v.name()).collect();
                format!(
                    "no variation `{s}`; there are {}, `all` and `none`",
                    names.join(", ")
                )
            })
    }
}

/// Parses `--variations`: a comma-separated list, `all` or `none`.
pub fn parse_list(text: &str) -> Result<BTreeSet<Vary>, String> {
    match text.trim() {
        "all" => Ok(Vary::ALL.into_iter().collect()),
        "none" | "" => Ok(BTreeSet::new()),
        list => list.split(',').map(|s| s.trim().parse()).collect(),
    }
}

/// What the rebuild's clock starts at.
const FAKE_TIME: &str = "@2041-07-13 12:00:00";
const HOSTNAME: &str = "bake-variant";
const DOMAINNAME: &str = "variant.invalid";
/// The uid and gid a varied rebuild runs as (builds normally run as 30000).
pub const VARIANT_UID: u32 = 30001;

/// The variations of one `bake check`, as far as this machine can apply them.
pub struct Variations {
    used: BTreeSet<Vary>,
    /// Asked for but not possible here, with why.
    skipped: Vec<(Vary, String)>,
    faketime: Option<PathBuf>,
    cpus: Vec<usize>,
    /// Empty toolchain caches for the rebuilds, removed with this.
    caches: Option<TmpDir>,
}

impl Variations {
    /// Prepares `wanted`. Those that cannot be applied here are an error when
    /// `strict` (the user named them), else skipped with the reason.
    pub fn prepare(
        wanted: &BTreeSet<Vary>,
        strict: bool,
        store: &Store,
    ) -> Result<Variations, String> {
        let mut v = Variations {
            used: BTreeSet::new(),
            skipped: Vec::new(),
            faketime: None,
            cpus: Vec::new(),
            caches: None,
        };
        for &kind in wanted {
            match v.possible(kind) {
                Ok(()) => {
                    v.used.insert(kind);
                }
                Err(why) if strict => return Err(format!("cannot vary {kind}: {why}")),
                Err(why) => v.skipped.push((kind, why)),
            }
        }
        if !wanted.is_empty() {
            v.caches = Some(
                store
                    .tmp_dir()
                    .map_err(|e| format!("cannot make the rebuilds' caches: {e}"))?,
            );
        }
        Ok(v)
    }

    fn possible(&mut self, kind: Vary) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        match kind {
            Vary::Time => {
                self.faketime = Some(find_faketime().ok_or(
                    "libfaketime is not installed: apt-get install faketime (./setup does)",
                )?);
                Ok(())
            }
            Vary::DirOrder if !root => Err("disorderfs needs bake to run as root".into()),
            Vary::DirOrder if !on_path("disorderfs") => {
                Err("disorderfs is not installed: apt-get install disorderfs (./setup does)".into())
            }
            Vary::DirOrder if !Path::new("/dev/fuse").exists() => {
                Err("there is no /dev/fuse here".into())
            }
            Vary::Aslr => match fs::read_to_string("/proc/sys/kernel/randomize_va_space") {
                Ok(s) if s.trim() == "0" => {
                    Err("ASLR is off on this machine already: nothing to turn off".into())
                }
                _ => Ok(()),
            },
            Vary::Cpus => {
                self.cpus = allowed_cpus();
                if self.cpus.len() < 2 {
                    return Err("builds run on one CPU already".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn used(&self) -> impl Iterator<Item = Vary> + '_ {
        self.used.iter().copied()
    }

    pub fn skipped(&self) -> &[(Vary, String)] {
        &self.skipped
    }

    /// Whether anything varies at all.
    pub fn any(&self) -> bool {
        self.caches.is_some()
    }

    /// The variation of the `n`th rebuild: the rebuilds share the machine, so
    /// each is given its own one CPU in turn.
    pub fn rebuild(&self, n: usize) -> Variation {
        Variation {
            used: self.used.clone(),
            faketime: self.faketime.clone(),
            cpu: (!self.cpus.is_empty()).then(|| self.cpus[n % self.cpus.len()]),
            caches: self.caches.as_ref().map(|d| d.path().to_path_buf()),
        }
    }
}

/// The changes one rebuild runs under.
#[derive(Clone, Debug)]
pub struct Variation {
    used: BTreeSet<Vary>,
    faketime: Option<PathBuf>,
    cpu: Option<usize>,
    caches: Option<PathBuf>,
}

impl Variation {
    pub fn has(&self, kind: Vary) -> bool {
        self.used.contains(&kind)
    }

    /// Adds what the step's environment needs (the preloaded fake clock).
    pub fn env(&self, env: &mut BTreeMap<String, String>) {
        if let (true, Some(lib)) = (self.has(Vary::Time), &self.faketime) {
            env.insert("LD_PRELOAD".into(), lib.display().to_string());
            env.insert("FAKETIME".into(), FAKE_TIME.into());
            // Files keep their real times, so make sees none from the future;
            // monotonic clocks stay real, as faked ones can hang waits.
            env.insert("NO_FAKE_STAT".into(), "1".into());
            env.insert("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into());
        }
    }

    /// `JOBS` for a step that would get `normal`.
    pub fn jobs(&self, normal: usize) -> usize {
        match (self.has(Vary::Jobs), normal) {
            (false, n) => n,
            (true, 1) => 2,
            (true, _) => 1,
        }
    }

    /// The host and domain name the step sees, when varied.
    pub fn hostname(&self) -> Option<(&'static str, &'static str)> {
        self.has(Vary::Hostname).then_some((HOSTNAME, DOMAINNAME))
    }

    pub fn uid(&self) -> Option<u32> {
        self.has(Vary::Uid).then_some(VARIANT_UID)
    }

    /// The personality flags the step runs with.
    pub fn personality(&self) -> Option<libc::c_ulong> {
        const UNAME26: libc::c_ulong = 0x0020000;
        const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;
        let mut flags = 0;
        if self.has(Vary::Kernel) {
            flags |= UNAME26;
        }
        if self.has(Vary::Aslr) {
            flags |= ADDR_NO_RANDOMIZE;
        }
        (flags != 0).then_some(flags)
    }

    /// The only CPU the step may run on, when varied.
    pub fn cpu(&self) -> Option<usize> {
        self.cpu.filter(|_| self.has(Vary::Cpus))
    }

    /// The toolchain cache of `toolchain` for the rebuild: an empty one of this
    /// check's, not the one the first build filled.
    pub fn cache(&self, toolchain: &NodeName) -> Option<PathBuf> {
        self.caches.as_ref().map(|d| d.join(toolchain.as_str()))
    }

    /// Shows `dir` with its directory entries in reverse order until the result
    /// is dropped: the tree moves to `aside` and disorderfs serves it at `dir`.
    pub fn reorder(&self, dir: &Path, aside: &Path) -> io::Result<Option<Reordered>> {
        if !self.has(Vary::DirOrder) {
            return Ok(None);
        }
        Reordered::mount(dir, aside).map(Some)
    }

    /// Sets, for a command bake runs itself (packing an image), everything that
    /// applies to a plain process: the clock, the personality, the CPU, the
    /// host name (in a UTS namespace of its own) and the user.
    pub fn apply(&self, cmd: &mut Command) {
        let mut env = BTreeMap::new();
        self.env(&mut env);
        cmd.envs(env);
        let step = StepSettings::of(self);
        let names = self.hostname();
        let uid = self.uid();
        // SAFETY: only system calls, on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                step.enter();
                if let Some((host, domain)) = names {
                    if libc::unshare(libc::CLONE_NEWUTS) == 0 {
                        libc::sethostname(host.as_ptr().cast(), host.len());
                        libc::setdomainname(domain.as_ptr().cast(), domain.len());
                    }
                }
                if let Some(id) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(id, id, id) != 0
                        || libc::setresuid(id, id, id) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

/// What of a variation a process takes on between fork and exec, and keeps
/// for everything it starts.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StepSettings {
    personality: Option<libc::c_ulong>,
    cpu: Option<usize>,
}

impl StepSettings {
    pub fn of(v: &Variation) -> StepSettings {
        StepSettings {
            personality: v.personality(),
            cpu: v.cpu(),
        }
    }

    /// Applies them to the calling process. Async-signal-safe.
    pub fn enter(&self) {
        // SAFETY: personality and sched_setaffinity only read what they are given.
        unsafe {
            if let Some(p) = self.personality {
                libc::personality(p);
            }
            if let Some(cpu) = self.cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
}

/// A directory served by disorderfs with its entries reversed; the tree itself
/// lies beside it. Dropping it unmounts and puts the tree back.
pub struct Reordered {
    dir: PathBuf,
    lower: PathBuf,
    daemon: Child,
}

impl Reordered {
    fn mount(dir: &Path, lower: &Path) -> io::Result<Reordered> {
        let lower = lower.to_path_buf();
        fs::rename(dir, &lower)?;
        fs::create_dir(dir)?;
        let mode = fs::metadata(&lower)?;
        let _ = std::os::unix::fs::chown(dir, Some(mode.uid()), Some(mode.gid()));
        let mut cmd = Command::new("disorderfs");
        cmd.args([
            "-f",
            "--multi-user=yes",
            "--reverse-dirents=yes",
            "--shuffle-dirents=no",
            "--sort-dirents=no",
            "-o",
            "allow_other",
        ])
        .arg(&lower)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe. Bake gone, disorderfs unmounts.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let restore = |e: io::Error| {
            let _ = fs::remove_dir(dir);
            let _ = fs::rename(&lower, dir);
            e
        };
        let mut daemon = cmd.spawn().map_err(restore)?;
        let parent_dev = fs::metadata(dir.parent().unwrap_or(Path::new("/")))?.dev();
        let started = Instant::now();
        loop {
            if fs::metadata(dir).is_ok_and(|m| m.dev() != parent_dev) {
                return Ok(Reordered {
                    dir: dir.to_path_buf(),
                    lower,
                    daemon,
                });
            }
            if let Ok(Some(status)) = daemon.try_wait() {
                let mut why = String::new();
                if let Some(mut err) = daemon.stderr.take() {
                    let _ = io::Read::read_to_string(&mut err, &mut why);
                }
                return Err(restore(io::Error::other(format!(
                    "disorderfs {status}: {}",
                    why.trim()
                ))));
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = daemon.kill();
                let _ = daemon.wait();
                return Err(restore(io::Error::other(
                    "disorderfs did not mount within 20 s",
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reordered {
    fn drop(&mut self) {
        let Ok(c) = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: umount2 takes a NUL-terminated path.
        unsafe {
            if libc::umount2(c.as_ptr(), 0) != 0 {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
        let _ = self.daemon.wait();
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::rename(&self.lower, &self.dir);
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes into the set it is given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// libfaketime, where Debian puts it.
fn find_faketime() -> Option<PathBuf> {
    let lib = fs::read_dir("/usr/lib").ok()?.flatten().find_map(|e| {
        let p = e.path().join("faketime/libfaketime.so.1");
        p.is_file().then_some(p)
    });
    lib.or_else(|| {
        let p = PathBuf::from("/usr/lib/faketime/libfaketime.so.1");
        p.is_file().then_some(p)
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}
