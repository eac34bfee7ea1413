//! A memory limit for one step's processes: a cgroup of its own (v2 where the
//! host has the unified hierarchy with the memory controller, else v1's memory
//! hierarchy), joined by the step before it starts.

use std::ffi::{CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

pub struct Cgroup {
    dir: PathBuf,
    procs: CString,
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

    /// Whether the kernel killed a process of the step for its memory.
    pub fn oom_killed(&self) -> bool {
        fs::read_to_string(&self.events)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
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
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")?;
    fs::write(base.join("cgroup.subtree_control"), "+memory")?;
    let dir = base.join(name);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("memory.max"), limit.to_string())?;
    finish(dir, "memory.events")
}

fn v1(name: &str, limit: u64) -> std::io::Result<Cgroup> {
    let base = Path::new("/sys/fs/cgroup/memory/bake");
    fs::create_dir_all(base)?;
    let dir = base.join(name);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
    finish(dir, "memory.oom_control")
}

fn finish(dir: PathBuf, events: &str) -> std::io::Result<Cgroup> {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("cgroup path holds a NUL byte"))?;
    Ok(Cgroup {
        events: dir.join(events),
        dir,
        procs,
    })
}
