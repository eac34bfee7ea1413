//! A memory limit for a step's processes: a cgroup (v2 where the host has the
//! unified hierarchy with the memory controller, else v1's memory hierarchy),
//! a lane's (`exec::lane`) or the step's own.

use std::ffi::{CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

pub struct Cgroup {
    dir: PathBuf,
    procs: CString,
    /// The file that holds the limit.
    limit: PathBuf,
    /// Where the kernel counts OOM kills, and the line that holds the count.
    events: PathBuf,
}

impl Cgroup {
    /// A cgroup limited to `limit` bytes, or none (said once) where cgroups are
    /// not writable here.
    pub fn create(limit: u64) -> Option<Cgroup> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let made = if unified_memory() {
            v2(&name, limit)
        } else {
            v1(&name, limit)
        };
        match made {
            Ok(c) => Some(c),
            Err(e) => {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    crate::progress::warn(&format!(
                        "step memory limits are not enforced: cannot make a cgroup ({e})"
                    ))
                });
                None
            }
        }
    }

    /// The file a process writes `0` to, to join.
    pub fn procs(&self) -> &CStr {
        &self.procs
    }

    /// Moves process `pid` (and what it starts from then on) into the cgroup.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Sets the limit; fails where the cgroup holds more than `bytes` that the
    /// kernel cannot reclaim.
    pub fn set_limit(&self, bytes: u64) -> std::io::Result<()> {
        fs::write(&self.limit, bytes.to_string())
    }

    /// How many processes the kernel has killed in the cgroup for its memory.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(&self.events)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The step's namespace may take a moment to empty after its last process.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn unified_memory() -> bool {
    fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
}

fn v2(name: &str, limit: u64) -> std::io::Result<Cgroup> {
    let base = Path::new("/sys/fs/cgroup/bake");
    fs::create_dir_all(base)?;
    sweep(base);
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")?;
    fs::write(base.join("cgroup.subtree_control"), "+memory")?;
    let dir = base.join(name);
    fs::create_dir_all(&dir)?;
    finish(dir, "memory.max", "memory.events", limit)
}

fn v1(name: &str, limit: u64) -> std::io::Result<Cgroup> {
    let base = Path::new("/sys/fs/cgroup/memory/bake");
    fs::create_dir_all(base)?;
    sweep(base);
    let dir = base.join(name);
    fs::create_dir_all(&dir)?;
    finish(dir, "memory.limit_in_bytes", "memory.oom_control", limit)
}

/// Removes, once per process, the cgroups a bake that was killed left behind
/// (named after its pid, which no longer runs).
fn sweep(base: &Path) {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let owner = name
                .to_str()
                .and_then(|n| n.split_once('-'))
                .map(|(pid, _)| pid);
            if owner.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                // A cgroup still in use refuses; that is fine.
                let _ = fs::remove_dir(entry.path());
            }
        }
    });
}

fn finish(dir: PathBuf, limit_file: &str, events: &str, limit: u64) -> std::io::Result<Cgroup> {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("cgroup path holds a NUL byte"))?;
    let cgroup = Cgroup {
        events: dir.join(events),
        limit: dir.join(limit_file),
        dir,
        procs,
    };
    cgroup.set_limit(limit)?;
    Ok(cgroup)
}
