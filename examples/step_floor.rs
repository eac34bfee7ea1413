//! What a sandboxed step costs the kernel alone: `sh -c true` started and
//! waited for `N` times in a row, plain, then with the namespaces and the root
//! file system a confined bake step gets (the same mounts, the same order), by
//! fork and by `clone(CLONE_VM | CLONE_VFORK)`, and with the root made ahead
//! while the step before runs or copied from a template mount namespace. No
//! bake code runs; the figures are the floor
//! under bake's cold step (BENCHMARKS.md, "Cold steps").
//!
//! `step_floor [N]` (needs root) prints one line per variant: milliseconds a step.

use std::ffi::{c_void, CString};
use std::time::Instant;

/// A fresh directory the roots are mounted on (each in the step's own mount
/// namespace, so nothing is left on the host).
const BASE: &str = "/tmp/bake-step-floor";

struct Variant {
    name: &'static str,
    namespaces: bool,
    root: bool,
    vfork: bool,
    shape: Shape,
}

/// How a step's process and root come to be.
#[derive(Clone, Copy)]
enum Shape {
    /// Started by the launcher, its root made on its start.
    Direct,
    /// Between the launcher and the step, a waiting process that unshares and
    /// then starts the step (as bake's sandbox did before its launcher started
    /// PID 1 itself).
    Waiter,
    /// The namespaces and the root but for the step's own mounts made ahead,
    /// while the step before runs; the step's own mounts on its start.
    Ahead,
    /// The root but for the step's own mounts made once in a mount namespace
    /// kept open; each step copies it and adds its own.
    Template,
}

struct Plan {
    ops: Vec<Op>,
    root: CString,
    argv: Vec<*const libc::c_char>,
    _args: Vec<CString>,
    flags: libc::c_int,
    vfork: bool,
    stack: Vec<u8>,
    /// Of a root made ahead: how many of `ops` come before the start, and
    /// where the start is read from.
    common: usize,
    go: libc::c_int,
    /// The template's mount namespace.
    tmpl: libc::c_int,
}

enum Op {
    Mkdir(CString),
    Symlink(CString, CString),
    Touch(CString),
    Bind(CString, CString, bool),
    Tmpfs(CString, CString),
    Proc(CString),
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// The mounts of a confined bake step with two inputs, as `strace` shows them.
fn root_ops(base: &str) -> Vec<Op> {
    let r = format!("{base}/root");
    let p = |s: &str| c(&format!("{r}/{s}"));
    let mut ops = vec![Op::Tmpfs(c(&r), c("mode=0755"))];
    ops.push(Op::Mkdir(p("usr")));
    ops.push(Op::Bind(c("/usr"), p("usr"), true));
    for l in ["bin", "sbin", "lib", "lib64"] {
        ops.push(Op::Symlink(c(&format!("usr/{l}")), p(l)));
    }
    ops.push(Op::Mkdir(p("etc")));
    ops.push(Op::Bind(c("/etc"), p("etc"), true));
    ops.push(Op::Bind(c("/etc/passwd"), p("etc/passwd"), true));
    ops.push(Op::Bind(c("/etc/group"), p("etc/group"), true));
    ops.push(Op::Mkdir(p("tmp")));
    ops.push(Op::Tmpfs(p("tmp"), c("mode=1777")));
    ops.push(Op::Mkdir(p("dev")));
    ops.push(Op::Tmpfs(p("dev"), c("mode=0755")));
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        ops.push(Op::Touch(p(&format!("dev/{d}"))));
        ops.push(Op::Bind(
            c(&format!("/dev/{d}")),
            p(&format!("dev/{d}")),
            false,
        ));
    }
    for (target, link) in [
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ] {
        ops.push(Op::Symlink(c(target), p(link)));
    }
    ops.push(Op::Mkdir(p("dev/shm")));
    ops.push(Op::Tmpfs(p("dev/shm"), c("mode=1777")));
    ops.push(Op::Mkdir(p("proc")));
    ops.push(Op::Proc(p("proc")));
    ops.push(Op::Mkdir(p("build")));
    ops.push(Op::Bind(c(&format!("{base}/build")), p("build"), false));
    ops.push(Op::Tmpfs(p("build/inputs"), c("mode=0755")));
    for i in ["a", "b"] {
        ops.push(Op::Mkdir(p(&format!("build/inputs/{i}"))));
        ops.push(Op::Bind(
            c(&format!("{base}/input")),
            p(&format!("build/inputs/{i}")),
            true,
        ));
    }
    ops
}

unsafe fn run_op(op: &Op) -> bool {
    let none = std::ptr::null();
    let ok = |r: libc::c_int| r == 0;
    match op {
        Op::Mkdir(p) => ok(libc::mkdir(p.as_ptr(), 0o755)),
        Op::Symlink(t, l) => ok(libc::symlink(t.as_ptr(), l.as_ptr())),
        Op::Touch(p) => {
            let fd = libc::open(
                p.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            fd >= 0 && ok(libc::close(fd))
        }
        Op::Bind(s, d, ro) => {
            ok(libc::mount(
                s.as_ptr(),
                d.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                none.cast(),
            )) && (!ro
                || ok(libc::mount(
                    none,
                    d.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID,
                    none.cast(),
                )))
        }
        Op::Tmpfs(d, data) => ok(libc::mount(
            c"tmpfs".as_ptr(),
            d.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )),
        Op::Proc(d) => ok(libc::mount(
            c"proc".as_ptr(),
            d.as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            none.cast(),
        )),
    }
}

/// The step: its mounts, then `sh -c true`.
extern "C" fn step(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the launcher's `Plan`, unchanged while the step runs.
    unsafe {
        let plan = &*arg.cast::<Plan>();
        if plan.flags != 0 {
            make_private();
        }
        if !plan.ops.is_empty() {
            run_ops(&plan.ops);
            enter_root(plan);
        }
        exec_shell(plan)
    }
}

/// Runs the ops, or ends this process.
unsafe fn run_ops(ops: &[Op]) {
    if !ops.iter().all(|op| run_op(op)) {
        libc::_exit(120);
    }
}

/// Keeps this mount namespace's mounts from the host's.
unsafe fn make_private() {
    let none = std::ptr::null();
    libc::mount(
        none,
        c"/".as_ptr(),
        none,
        libc::MS_REC | libc::MS_PRIVATE,
        none.cast(),
    );
}

/// Makes the plan's root this process's.
unsafe fn enter_root(plan: &Plan) {
    libc::chdir(plan.root.as_ptr());
    libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
    libc::umount2(c".".as_ptr(), libc::MNT_DETACH);
    libc::chdir(c"/".as_ptr());
}

unsafe fn exec_shell(plan: &Plan) -> ! {
    libc::execv(c"/bin/sh".as_ptr(), plan.argv.as_ptr());
    libc::_exit(127)
}

/// A step made ahead: the common mounts, then a wait for the start, then the
/// step's own mounts.
extern "C" fn ahead(arg: *mut c_void) -> libc::c_int {
    // SAFETY: as for `step`; this process has its own copy of the plan.
    unsafe {
        let plan = &*arg.cast::<Plan>();
        make_private();
        run_ops(&plan.ops[..plan.common]);
        let mut byte = 0u8;
        if libc::read(plan.go, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(123);
        }
        run_ops(&plan.ops[plan.common..]);
        enter_root(plan);
        exec_shell(plan)
    }
}

/// Makes a step ahead; its pid and the pipe end that starts it.
unsafe fn make_ahead(plan: &mut Plan) -> (libc::pid_t, libc::c_int) {
    let mut fds = [0; 2];
    assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
    plan.go = fds[0];
    let pid = clone_on(plan, ahead, plan.flags | libc::SIGCHLD);
    libc::close(fds[0]);
    (pid, fds[1])
}

/// A step from the template: its copy of the template's mounts, its own.
extern "C" fn copied(arg: *mut c_void) -> libc::c_int {
    // SAFETY: as for `step`.
    unsafe {
        let plan = &*arg.cast::<Plan>();
        if libc::setns(plan.tmpl, libc::CLONE_NEWNS) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0 {
            libc::_exit(124);
        }
        run_ops(&plan.ops[plan.common..]);
        enter_root(plan);
        exec_shell(plan)
    }
}

/// The template's process: the common mounts, then a wait for its end.
extern "C" fn template(arg: *mut c_void) -> libc::c_int {
    // SAFETY: as for `step`; this process has its own copy of the plan.
    unsafe {
        let plan = &*arg.cast::<Plan>();
        make_private();
        run_ops(&plan.ops[..plan.common]);
        libc::write(plan.go, b"r".as_ptr().cast(), 1);
        loop {
            libc::pause();
        }
    }
}

/// Starts the step from this process; its pid.
unsafe fn start(plan: &mut Plan, flags: libc::c_int) -> libc::pid_t {
    let extra = match plan.vfork {
        true => libc::CLONE_VM | libc::CLONE_VFORK,
        false => 0,
    };
    clone_on(plan, step, flags | extra | libc::SIGCHLD)
}

/// Starts `child` on the plan's stack with the plan; its pid.
unsafe fn clone_on(
    plan: &mut Plan,
    child: extern "C" fn(*mut c_void) -> libc::c_int,
    flags: libc::c_int,
) -> libc::pid_t {
    let top = plan.stack.as_mut_ptr().add(plan.stack.len()) as usize & !15;
    let pid = libc::clone(child, top as *mut c_void, flags, (plan as *mut Plan).cast());
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    pid
}

unsafe fn wait(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    libc::waitpid(pid, &mut status, 0);
    status
}

/// The waiting process: unshares, starts the step, waits for it.
extern "C" fn waiter(arg: *mut c_void) -> libc::c_int {
    // SAFETY: as for `step`; this process has its own copy of the plan.
    unsafe {
        let plan = &mut *arg.cast::<Plan>();
        if libc::unshare(plan.flags) != 0 {
            libc::_exit(121);
        }
        let pid = start(plan, 0);
        libc::_exit(match wait(pid) {
            0 => 0,
            _ => 122,
        })
    }
}

fn time(v: &Variant, n: usize) -> f64 {
    let flags = match v.namespaces {
        true => libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
        false => 0,
    };
    let args = vec![c("sh"), c("-c"), c("true")];
    let mut plan = Plan {
        ops: if v.root { root_ops(BASE) } else { Vec::new() },
        root: c(&format!("{BASE}/root")),
        argv: args
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect(),
        _args: args,
        flags,
        vfork: v.vfork,
        stack: vec![0; 64 << 10],
        common: 0,
        go: -1,
        tmpl: -1,
    };
    match v.shape {
        Shape::Ahead => time_ahead(&mut plan, v.name, n),
        Shape::Template => time_template(&mut plan, v.name, n),
        Shape::Direct | Shape::Waiter => {
            let mut waiter_stack = vec![0u8; 64 << 10];
            per_step(n, v.name, || {
                // SAFETY: the children run only system calls on the plan made above.
                unsafe {
                    let pid = match v.shape {
                        Shape::Waiter => {
                            let top =
                                waiter_stack.as_mut_ptr().add(waiter_stack.len()) as usize & !15;
                            libc::clone(
                                waiter,
                                top as *mut c_void,
                                libc::SIGCHLD,
                                (&mut plan as *mut Plan).cast(),
                            )
                        }
                        _ => start(&mut plan, flags),
                    };
                    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
                    wait(pid)
                }
            })
        }
    }
}

/// Milliseconds a step: `step` run `n` times, each returning its wait status.
fn per_step(n: usize, name: &str, mut step: impl FnMut() -> libc::c_int) -> f64 {
    let began = Instant::now();
    for _ in 0..n {
        assert_eq!(step(), 0, "{name}: the step failed");
    }
    began.elapsed().as_secs_f64() * 1e3 / n as f64
}

/// Each step made ahead while the one before runs, started by a byte on its
/// pipe.
fn time_ahead(plan: &mut Plan, name: &str, n: usize) -> f64 {
    // The per-step mounts are the last: /build and the inputs.
    let own = plan
        .ops
        .iter()
        .rposition(|op| matches!(op, Op::Mkdir(p) if p.as_bytes().ends_with(b"root/build")));
    plan.common = own.expect("the root has /build");
    // SAFETY: the children run only system calls on their copy of the plan.
    let mut next = Some(unsafe { make_ahead(plan) });
    let mut made = 1;
    // SAFETY: as above; each step's pipe end is written once and closed.
    per_step(n, name, || unsafe {
        let (pid, go) = next.take().expect("a step made ahead");
        assert_eq!(libc::write(go, b"g".as_ptr().cast(), 1), 1);
        libc::close(go);
        if made < n {
            next = Some(make_ahead(plan));
            made += 1;
        }
        wait(pid)
    })
}

/// Each step copied from one template mount namespace.
fn time_template(plan: &mut Plan, name: &str, n: usize) -> f64 {
    // A step's own: its /tmp, /dev/shm, /proc, /build and inputs.
    let own = |op: &Op| match op {
        Op::Tmpfs(p, _) => !p.as_bytes().ends_with(b"root") && !p.as_bytes().ends_with(b"root/dev"),
        Op::Proc(_) => true,
        Op::Bind(_, p, _) => {
            p.as_bytes().ends_with(b"root/build") || p.to_string_lossy().contains("build/inputs/")
        }
        Op::Mkdir(p) => p.to_string_lossy().contains("build/inputs/"),
        _ => false,
    };
    let (mine, common): (Vec<Op>, Vec<Op>) = plan.ops.drain(..).partition(own);
    plan.common = common.len();
    plan.ops = common.into_iter().chain(mine).collect();
    // SAFETY: the template's process runs only system calls on its copy of the
    // plan; the pipe's write end is closed here, so its failure ends the read.
    let held = unsafe {
        let mut fds = [0; 2];
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        plan.go = fds[1];
        let held = clone_on(plan, template, libc::CLONE_NEWNS | libc::SIGCHLD);
        libc::close(fds[1]);
        let mut byte = 0u8;
        let ready = libc::read(fds[0], (&mut byte as *mut u8).cast(), 1);
        libc::close(fds[0]);
        assert_eq!(ready, 1, "{name}: the template failed");
        plan.tmpl = libc::open(
            c(&format!("/proc/{held}/ns/mnt")).as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        assert!(
            plan.tmpl >= 0,
            "{name}: cannot open the template's namespace"
        );
        held
    };
    let flags =
        (plan.flags & !libc::CLONE_NEWNS) | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: as for `start`.
    let took = per_step(n, name, || unsafe { wait(clone_on(plan, copied, flags)) });
    // SAFETY: ends the template's process, which holds nothing else.
    unsafe {
        libc::close(plan.tmpl);
        libc::kill(held, libc::SIGKILL);
        wait(held);
    }
    took
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    for d in ["root", "build/src", "build/inputs", "input"] {
        std::fs::create_dir_all(format!("{BASE}/{d}"))
            .expect("cannot make the floor's directories");
    }
    let v = |name, namespaces, root, vfork, shape| Variant {
        name,
        namespaces,
        root,
        vfork,
        shape,
    };
    use Shape::*;
    let variants = [
        v("sh -c true, fork", false, false, false, Direct),
        v(
            "sh -c true, vfork (ninja's posix_spawn)",
            false,
            false,
            true,
            Direct,
        ),
        v(
            "+ mount, PID, IPC, UTS namespaces, fork",
            true,
            false,
            false,
            Direct,
        ),
        v(
            "+ mount, PID, IPC, UTS namespaces, vfork",
            true,
            false,
            true,
            Direct,
        ),
        v(
            "+ a step's root (25 mounts), fork",
            true,
            true,
            false,
            Direct,
        ),
        v(
            "+ a step's root (25 mounts), vfork (bake)",
            true,
            true,
            true,
            Direct,
        ),
        v(
            "+ a step's root, waiting process, fork",
            true,
            true,
            false,
            Waiter,
        ),
        v(
            "+ a step's root, waiting process, vfork (bake before)",
            true,
            true,
            true,
            Waiter,
        ),
        v(
            "+ a step's root made ahead but for /build, inputs",
            true,
            true,
            false,
            Ahead,
        ),
        v(
            "+ a step's root copied from a template namespace",
            true,
            true,
            true,
            Template,
        ),
    ];
    for variant in &variants {
        println!("{:<50} {:6.2} ms/step", variant.name, time(variant, n));
    }
    // Only empty directories: every mount was in a step's own namespace.
    let _ = std::fs::remove_dir_all(BASE);
}
