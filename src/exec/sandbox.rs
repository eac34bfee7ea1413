//! The sandbox a step runs in: as root, a private mount namespace in which the
//! build directory is bind-mounted at the fixed path `/build` and each input
//! read-only at `/build/inputs/NAME`, plus a network namespace with no
//! interfaces up. Where that is impossible, the step runs in place, said once.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::BUILD_DIR;

/// Whether mount namespaces work here; probed once per process.
fn namespaces_work() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let ok = root
            && fs::create_dir_all(BUILD_DIR).is_ok()
            && Command::new("/bin/true")
                .pre_exec_unshare()
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "warning: cannot make a mount namespace (needs root and unshare); steps run in place, \
                 so their build paths vary and outputs may not be reproducible"
            );
        }
        ok
    })
}

trait Unshare {
    fn pre_exec_unshare(&mut self) -> &mut Self;
}

impl Unshare for Command {
    fn pre_exec_unshare(&mut self) -> &mut Self {
        // SAFETY: unshare is async-signal-safe.
        unsafe {
            self.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

pub struct Sandbox {
    work: PathBuf,
    isolated: bool,
    /// (source, mount point) pairs, read-only.
    inputs: Vec<(PathBuf, String, PathBuf)>,
}

impl Sandbox {
    pub fn new(work: &Path, inputs: &[(String, PathBuf)]) -> io::Result<Sandbox> {
        let isolated = namespaces_work();
        let mut mounts = Vec::new();
        for (name, path) in inputs {
            let point = work.join("inputs").join(name);
            fs::create_dir_all(&point)?;
            mounts.push((path.clone(), name.clone(), point));
        }
        Ok(Sandbox {
            work: work.to_path_buf(),
            isolated,
            inputs: mounts,
        })
    }

    /// The build directory as the step sees it.
    pub fn build_dir(&self) -> String {
        if self.isolated {
            BUILD_DIR.to_string()
        } else {
            self.work.display().to_string()
        }
    }

    /// Where the step sees input `name`.
    pub fn input_path(&self, name: &str) -> String {
        match self.inputs.iter().find(|(_, n, _)| n == name) {
            Some((source, _, _)) if !self.isolated => source.display().to_string(),
            _ => format!("{}/inputs/{name}", self.build_dir()),
        }
    }

    /// Arranges for `cmd` to enter the sandbox between fork and exec.
    pub fn apply(&self, cmd: &mut Command) -> io::Result<()> {
        let cwd = cstr(&Path::new(&self.build_dir()).join("src"))?;
        if !self.isolated {
            let cwd = cwd.clone();
            // SAFETY: only async-signal-safe calls on memory prepared before fork.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(0o022);
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    check(libc::chdir(cwd.as_ptr()))
                });
            }
            return Ok(());
        }
        let work = cstr(&self.work)?;
        let build = cstr(Path::new(BUILD_DIR))?;
        let root = cstr(Path::new("/"))?;
        let inputs: Vec<(CString, CString)> = self
            .inputs
            .iter()
            .map(|(source, name, _)| {
                Ok((
                    cstr(source)?,
                    cstr(&Path::new(BUILD_DIR).join("inputs").join(name))?,
                ))
            })
            .collect::<io::Result<_>>()?;
        // SAFETY: only async-signal-safe system calls, on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(0o022);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // No network but loopback where a network namespace can be had; not fatal otherwise.
                if libc::unshare(libc::CLONE_NEWNET) == 0 {
                    loopback_up();
                }
                let none = std::ptr::null();
                check(libc::mount(
                    none,
                    root.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    work.as_ptr(),
                    build.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                for (source, point) in &inputs {
                    check(libc::mount(
                        source.as_ptr(),
                        point.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
                    check(libc::mount(
                        none,
                        point.as_ptr(),
                        none,
                        flags,
                        std::ptr::null(),
                    ))?;
                }
                check(libc::chdir(cwd.as_ptr()))
            });
        }
        Ok(())
    }
}

/// Brings up `lo` in a fresh network namespace (it starts down), so steps can use
/// 127.0.0.1. Runs between fork and exec: only system calls, no allocation.
unsafe fn loopback_up() {
    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return;
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) == 0 {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
    }
    libc::close(fd);
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}
