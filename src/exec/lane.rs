//! Lanes: a launcher process per worker that starts its steps.
//!
//! Forking bake itself for every step copies the page tables of everything it
//! holds (the whole graph), and moving each step into a memory cgroup of its
//! own waits for an RCU grace period (about 3 ms a step here, 13 ms under
//! load, on the v1 hierarchy). A launcher is bake started again with
//! [`LAUNCHER_ARG`]: small, single-threaded, and in its lane's memory cgroup
//! from the start, so the steps it forks are born there. Before each step the
//! cgroup's limit becomes the step's; where that cannot be done (the lane
//! holds more than a lower limit allows), the step gets a cgroup of its own as
//! before.
//!
//! Bake and a launcher talk over its stdin and stdout: a [`Launch`] in, then
//! [`Reply::Started`] and [`Reply::Ended`] (or [`Reply::Refused`]) out, each a
//! length-prefixed postcard message. A launcher whose stdin closes (bake ended
//! or died) stops the step it runs and exits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use super::cgroup::Cgroup;
use super::process::Process;
use super::sandbox::{loopback_up, Entry};
use super::template::Templates;
use super::watch::{self, Ended};
use super::ExecError;

/// The hidden first argument that makes `bake` a launcher.
pub const LAUNCHER_ARG: &str = "--internal-lane-launcher";

/// A step to start: its command, its log (stdout and stderr) and its sandbox.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub entry: Entry,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Reply {
    /// The step's PID 1 runs, with this pid.
    Started(u32),
    /// It could not be started: what failed, and the system's error.
    Refused {
        what: String,
        errno: Option<i32>,
        error: String,
    },
    /// It ended, with this wait status.
    Ended(i32),
}

/// How a step ended.
pub struct Ran {
    pub status: ExitStatus,
    pub oom_killed: bool,
}

impl Launch {
    /// Starts the step, its stdout and stderr to its log.
    fn start(self) -> Result<Process, ExecError> {
        let log =
            File::create(&self.log).map_err(|e| ExecError::io("cannot create", &self.log, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ExecError::io("cannot open", &self.log, e))?;
        let null = Path::new("/dev/null");
        let stdin = File::open(null).map_err(|e| ExecError::io("cannot open", null, e))?;
        self.entry.start(
            &self.program,
            &self.args,
            &self.env,
            [stdin, log, log_err].map(OwnedFd::from),
        )
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Lets steps run from lanes: this process's executable is `bake`, which
/// serves as a launcher (see [`serve`]).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Lanes between steps.
static IDLE: Mutex<Vec<Lane>> = Mutex::new(Vec::new());

/// Ends every idle lane: their launchers exit and their cgroups go.
pub fn close_all() {
    let lanes = std::mem::take(&mut *IDLE.lock().unwrap_or_else(|e| e.into_inner()));
    drop(lanes);
}

/// Runs `launch` to its end within `memory` bytes and `time`; how it ended. The
/// step is watched (for its time, and an interrupt) until its end is known and
/// before its pid can be reaped, so that a stop never reaches another process.
pub fn run(mut launch: Launch, memory: u64, time: Duration) -> Result<(Ran, Ended), ExecError> {
    let mut lane = match take(memory) {
        Some(lane) => lane,
        None => return run_here(launch, memory, time),
    };
    let own = lane.limit_to(memory, &mut launch);
    match lane.start(&launch) {
        Ok(Ok(pid)) => {
            let watched = watch::watch(pid, time);
            let lane_ended = lane.wait();
            let ended = watched.finish();
            let status = lane_ended.map_err(|e| ExecError::Io {
                what: "the lane's launcher failed while the step ran".into(),
                source: e,
            })?;
            let oom_killed = match &own {
                Some(c) => c.oom_kills() > 0,
                None => lane.oom_kills_since_start(),
            };
            put_back(lane);
            Ok((Ran { status, oom_killed }, ended))
        }
        Ok(Err(refused)) => {
            put_back(lane);
            Err(refused)
        }
        Err(e) => {
            fall_back(&format!("a lane's launcher failed ({e})"));
            drop(own);
            launch.entry.cgroup = None;
            run_here(launch, memory, time)
        }
    }
}

/// Starts and waits for the step from this process, in a cgroup of its own.
fn run_here(mut launch: Launch, memory: u64, time: Duration) -> Result<(Ran, Ended), ExecError> {
    let cgroup = Cgroup::create(memory);
    launch.entry.cgroup = cgroup.as_ref().map(|c| c.procs().to_owned());
    let program = PathBuf::from(&launch.program);
    let process = launch.start()?;
    let watched = watch::watch(process.id(), time);
    let status = process.status();
    let ended = watched.finish();
    process.reap();
    let status = status.map_err(|e| ExecError::io("cannot wait for", &program, e))?;
    let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
    Ok((Ran { status, oom_killed }, ended))
}

fn take(memory: u64) -> Option<Lane> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    if let Some(lane) = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        return Some(lane);
    }
    match Lane::open(memory) {
        Ok(lane) => Some(lane),
        Err(e) => {
            fall_back(&format!("cannot start a lane's launcher ({e})"));
            None
        }
    }
}

/// Says, once, why steps are started by bake itself from now on.
fn fall_back(why: &str) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| crate::progress::warn(&format!("{why}; steps are started by bake itself")));
}

fn put_back(lane: Lane) {
    IDLE.lock().unwrap_or_else(|e| e.into_inner()).push(lane);
}

/// One launcher, and the memory cgroup it and its steps are in.
struct Lane {
    process: Child,
    /// Taken when the lane closes.
    to: Option<ChildStdin>,
    from: ChildStdout,
    cgroup: Option<Cgroup>,
    /// The cgroup's limit now.
    limit: u64,
    /// OOM kills the cgroup had counted when the current step started.
    kills: u64,
}

impl Lane {
    fn open(memory: u64) -> io::Result<Lane> {
        let mut process = Command::new("/proc/self/exe")
            .arg(LAUNCHER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(to), Some(from)) = (process.stdin.take(), process.stdout.take()) else {
            return Err(io::Error::other("no pipe to the launcher"));
        };
        // It forks nothing before its first request, so all its steps start here.
        let cgroup = Cgroup::create(memory);
        let mut lane = Lane {
            process,
            to: Some(to),
            from,
            cgroup: None,
            limit: memory,
            kills: 0,
        };
        if let Some(c) = cgroup {
            c.add(lane.process.id())?;
            lane.cgroup = Some(c);
        }
        Ok(lane)
    }

    /// Sets the lane's limit to the step's; where it cannot, gives the step a
    /// cgroup of its own, returned.
    fn limit_to(&mut self, memory: u64, launch: &mut Launch) -> Option<Cgroup> {
        let cgroup = self.cgroup.as_ref()?;
        if self.limit != memory {
            if cgroup.set_limit(memory).is_err() {
                let own = Cgroup::create(memory);
                launch.entry.cgroup = own.as_ref().map(|c| c.procs().to_owned());
                return own;
            }
            self.limit = memory;
        }
        self.kills = cgroup.oom_kills();
        None
    }

    fn oom_kills_since_start(&self) -> bool {
        self.cgroup
            .as_ref()
            .is_some_and(|c| c.oom_kills() > self.kills)
    }

    /// Hands the step to the launcher: its PID 1's pid, or why it
    /// could not start; an outer error is the launcher's own.
    fn start(&mut self, launch: &Launch) -> io::Result<Result<u32, ExecError>> {
        let request = postcard::to_stdvec(launch).map_err(io::Error::other)?;
        let to = self
            .to
            .as_mut()
            .ok_or_else(|| io::Error::other("the lane is closed"))?;
        send(to, &request)?;
        match receive(&mut self.from)? {
            Reply::Started(pid) => Ok(Ok(pid)),
            Reply::Refused { what, errno, error } => {
                let source = match errno {
                    Some(n) => io::Error::from_raw_os_error(n),
                    None => io::Error::other(error),
                };
                Ok(Err(if source.kind() == io::ErrorKind::StorageFull {
                    ExecError::NoSpace {
                        path: launch.log.clone(),
                    }
                } else {
                    ExecError::Io { what, source }
                }))
            }
            Reply::Ended(_) => Err(io::Error::other("the launcher answered out of turn")),
        }
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        match receive(&mut self.from)? {
            Reply::Ended(raw) => Ok(ExitStatus::from_raw(raw)),
            _ => Err(io::Error::other("the launcher answered out of turn")),
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Its stdin closed, the launcher exits; the cgroup can go once it has.
        drop(self.to.take());
        let _ = self.process.wait();
    }
}

fn send(to: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut message = Vec::with_capacity(4 + bytes.len());
    message.extend_from_slice(&len.to_le_bytes());
    message.extend_from_slice(bytes);
    to.write_all(&message)?;
    to.flush()
}

/// The next message's bytes; none at a clean end of the stream.
fn read_message(from: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    from.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

fn receive(from: &mut impl Read) -> io::Result<Reply> {
    let bytes = read_message(from)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the launcher exited"))?;
    postcard::from_bytes(&bytes).map_err(io::Error::other)
}

/// A launcher: starts the steps bake sends, one at a time, until its stdin
/// closes. Returns the process's exit status.
pub fn serve() -> i32 {
    // An interrupt is bake's to handle: it stops the steps, then closes the lane.
    // SAFETY: setting a signal's disposition has no memory preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let adjust = Path::new("/proc/self/oom_score_adj");
    let original = std::fs::read(adjust).ok();
    // The cgroup's OOM killer must pick the step, never the launcher; the step
    // gets the original value back.
    let _ = std::fs::write(adjust, "-1000");
    // SAFETY: fds 0 and 1 are the pipes bake made, owned by nothing else here.
    let (mut input, mut output) = unsafe { (File::from_raw_fd(0), File::from_raw_fd(1)) };
    let mut networks = Networks::default();
    let mut templates = Templates::default();
    // Steps whose PID 1 ended, not yet reaped: bake may signal a step's pid
    // until it has read the end, and sends nothing before that.
    let mut ending: Vec<Process> = Vec::new();
    loop {
        let message = read_message(&mut input);
        ending.retain(|process| !process.try_reap());
        let bytes = match message {
            Ok(Some(bytes)) => bytes,
            Ok(None) | Err(_) => {
                for process in ending {
                    process.reap();
                }
                return i32::from(message.is_err());
            }
        };
        let Ok(mut launch) = postcard::from_bytes::<Launch>(&bytes) else {
            return 1;
        };
        launch.entry.oom_score_adj = original.clone();
        let lent = networks.lend(&mut launch.entry);
        templates.lend(&mut launch.entry);
        let mut process = match launch.start() {
            Ok(process) => process,
            Err(e) => {
                if answer(&mut output, &refused(e)).is_err() {
                    return 1;
                }
                continue;
            }
        };
        if answer(&mut output, &Reply::Started(process.id())).is_err() {
            process.stop();
            return 1;
        }
        networks.make_ahead(&lent);
        let status = wait_or_hang_up(&process, &input);
        if answer(&mut output, &Reply::Ended(status)).is_err() {
            return 1;
        }
        // While bake takes in the step's outputs.
        process.release_mounts();
        ending.push(process);
        networks.take_back(lent);
    }
}

/// The network namespaces a launcher hands its steps (where they make none of
/// their own, see [`Entry::takes_network`]). Making one (its loopback device,
/// its sysctl tables) and tearing it down cost about 2 ms of CPU: an
/// unprivileged step's namespace is kept for the next step when it holds no
/// socket any more, else the next one is made while a step runs.
#[derive(Default)]
struct Networks {
    spare: Option<OwnedFd>,
}

/// What a step was given: the namespace, if it may come back.
enum Lent {
    /// The step takes no namespace from the launcher.
    Nothing,
    /// It got none (it makes its own) or one not to serve again.
    Spent,
    /// It got this one, to be looked at when it ends.
    Returnable(OwnedFd),
}

impl Networks {
    fn lend(&mut self, entry: &mut Entry) -> Lent {
        if !entry.takes_network() {
            return Lent::Nothing;
        }
        let Some(net) = self.spare.take() else {
            return Lent::Spent;
        };
        let lent = match entry.network_reusable() {
            true => net.try_clone().map_or(Lent::Spent, Lent::Returnable),
            false => Lent::Spent,
        };
        entry.network = Some(net);
        lent
    }

    /// Makes the next step's namespace while this one runs, unless this one's
    /// is likely to come back.
    fn make_ahead(&mut self, lent: &Lent) {
        if matches!(lent, Lent::Spent) && self.spare.is_none() {
            self.spare = new_network();
        }
    }

    fn take_back(&mut self, lent: Lent) {
        let Lent::Returnable(net) = lent else {
            return;
        };
        if self.spare.is_none() {
            self.spare = match holds_no_socket(&net) {
                true => Some(net),
                false => new_network(),
            };
        }
    }
}

/// Whether a network namespace holds no socket. The step's processes are gone,
/// but a closed TCP connection stays (TIME_WAIT and the like) and would keep
/// its port from the next step. The namespace's own counts in `sockstat` say
/// so; its socket tables would walk the whole host's (tens of ms here).
fn holds_no_socket(net: &OwnedFd) -> bool {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns changes only this thread's namespace.
                if unsafe { libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return false;
                }
                [
                    "/proc/thread-self/net/sockstat",
                    "/proc/thread-self/net/sockstat6",
                ]
                .iter()
                .all(|file| std::fs::read_to_string(file).is_ok_and(|counts| none_in_use(&counts)))
            })
            .join()
            .unwrap_or(false)
    })
}

/// Whether every `inuse` and `tw` count of a `sockstat` file is 0 (the
/// others, `orphan`, `alloc`, `mem`, are the host's).
fn none_in_use(sockstat: &str) -> bool {
    let words: Vec<&str> = sockstat.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "inuse" || w[0] == "tw")
        .all(|w| w[1] == "0")
        && words.contains(&"inuse")
}

/// A start that failed, as bake is told of it.
fn refused(e: ExecError) -> Reply {
    match e {
        ExecError::Io { what, source } => Reply::Refused {
            what,
            errno: source.raw_os_error(),
            error: source.to_string(),
        },
        ExecError::NoSpace { path } => Reply::Refused {
            what: format!("cannot create {}", path.display()),
            errno: Some(libc::ENOSPC),
            error: String::new(),
        },
        other => Reply::Refused {
            what: other.to_string(),
            errno: None,
            error: String::new(),
        },
    }
}

/// A new network namespace, its loopback device up, made by a thread that
/// leaves it at once.
fn new_network() -> Option<OwnedFd> {
    std::thread::spawn(|| {
        // SAFETY: unshare changes only this thread's namespaces; loopback_up
        // makes system calls on memory of its own.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return None;
            }
            loopback_up();
        }
        File::open("/proc/thread-self/ns/net")
            .ok()
            .map(OwnedFd::from)
    })
    .join()
    .ok()
    .flatten()
}

fn answer(output: &mut File, reply: &Reply) -> io::Result<()> {
    send(
        output,
        &postcard::to_stdvec(reply).map_err(io::Error::other)?,
    )
}

/// Waits for the step; if bake goes away meanwhile (the launcher's stdin
/// closes), stops it first. Returns its raw wait status, leaving the process
/// unreaped.
fn wait_or_hang_up(process: &Process, input: &File) -> i32 {
    // Without a pidfd (an old kernel), only the step's end is waited for.
    let Some(pidfd) = process.pidfd() else {
        return process.status().map_or(0x7f00, |s| s.into_raw());
    };
    let mut fds = [input.as_raw_fd(), pidfd.as_raw_fd()].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: poll writes only the revents of the entries it is given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n > 0 && fds[1].revents == 0 && fds[0].revents != 0 {
            // Bake sends nothing while a step runs: this is its end. Then the
            // step's own end is waited for as before.
            process.stop();
            fds[0].fd = -1;
            continue;
        }
        break;
    }
    process.status().map_or(0x7f00, |s| s.into_raw())
}
