//! Comparing two output trees: which files differ, and where each first does.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One path that differs between two trees.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileDiff {
    /// Relative to the trees' roots.
    pub path: String,
    /// Of the first tree's file and the second's; none where it is missing or
    /// not a file.
    pub sizes: (Option<u64>, Option<u64>),
    /// Where and how it first differs.
    pub first: String,
}

/// What the two sides are called in descriptions (`the build`, `the rebuild`).
pub type Names = (&'static str, &'static str);

/// Every path under which `a` and `b` differ, in sorted order.
pub fn trees(a: &Path, b: &Path, names: Names) -> Vec<FileDiff> {
    let mut out = Vec::new();
    walk(a, b, Path::new(""), names, &mut out);
    out
}

fn walk(a: &Path, b: &Path, rel: &Path, names: Names, out: &mut Vec<FileDiff>) {
    let entries = |p: &Path| -> BTreeSet<OsString> {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let all: BTreeSet<_> = entries(&a.join(rel))
        .union(&entries(&b.join(rel)))
        .cloned()
        .collect();
    for name in all {
        let r = rel.join(&name);
        let (pa, pb) = (a.join(&r), b.join(&r));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).ok(),
            fs::symlink_metadata(&pb).ok(),
        );
        if let (Some(ma), Some(mb)) = (&ma, &mb) {
            if ma.is_dir() && mb.is_dir() {
                walk(a, b, &r, names, out);
                continue;
            }
        }
        let size = |m: &Option<fs::Metadata>| m.as_ref().filter(|m| m.is_file()).map(|m| m.len());
        let first = match (&ma, &mb) {
            (Some(_), None) => Some(format!("only in {}", names.0)),
            (None, Some(_)) => Some(format!("only in {}", names.1)),
            (Some(ma), Some(mb)) if ma.file_type() != mb.file_type() => Some(format!(
                "{} in {}, {} in {}",
                kind(ma),
                names.0,
                kind(mb),
                names.1
            )),
            (Some(ma), Some(_)) if ma.file_type().is_symlink() => {
                let (ta, tb) = (fs::read_link(&pa).ok(), fs::read_link(&pb).ok());
                (ta != tb).then(|| {
                    let show = |t: Option<PathBuf>| {
                        t.map_or_else(|| "?".into(), |t| t.display().to_string())
                    };
                    format!("links to {} and to {}", show(ta), show(tb))
                })
            }
            (Some(ma), Some(mb)) => match first_difference(&pa, &pb, names) {
                Ok(Some(d)) => Some(d),
                Ok(None) => {
                    let exec = |m: &fs::Metadata| m.permissions().mode() & 0o111 != 0;
                    (exec(ma) != exec(mb)).then(|| {
                        let show = |m: &fs::Metadata| {
                            if exec(m) {
                                "executable"
                            } else {
                                "not executable"
                            }
                        };
                        format!("same bytes; {} and {}", show(ma), show(mb))
                    })
                }
                Err(e) => Some(format!("cannot compare: {e}")),
            },
            (None, None) => None,
        };
        if let Some(first) = first {
            out.push(FileDiff {
                path: r.display().to_string(),
                sizes: (size(&ma), size(&mb)),
                first,
            });
        }
    }
}

fn kind(m: &fs::Metadata) -> &'static str {
    if m.is_dir() {
        "a directory"
    } else if m.file_type().is_symlink() {
        "a symlink"
    } else {
        "a file"
    }
}

/// Bytes shown either side of the first difference.
const CONTEXT: usize = 16;

/// Where two files first differ: the line for text, the bytes for anything
/// else. None when they are the same.
pub fn first_difference(a: &Path, b: &Path, names: Names) -> io::Result<Option<String>> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    // The last line or bytes before the chunk being read, for context.
    let mut before: Vec<u8> = Vec::new();
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            let mut ctx_a = before.clone();
            ctx_a.extend_from_slice(&ba[..na]);
            let mut ctx_b = before;
            ctx_b.extend_from_slice(&bb[..nb]);
            let at = ctx_a.len() - na + i;
            return Ok(Some(describe(&ctx_a, &ctx_b, at, offset + i as u64)));
        }
        if na != nb {
            let (longer, which) = if na > nb {
                (na, names.0)
            } else {
                (nb, names.1)
            };
            return Ok(Some(format!(
                "the same for {} bytes, then only {which} goes on ({} more)",
                offset + n as u64,
                longer - n
            )));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
        // Keep the current line (up to 4 KiB) for text context.
        let keep = ba[..n]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1)
            .max(n.saturating_sub(4096));
        before = ba[keep..n].to_vec();
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Shows the difference at `at` in `a` and `b` (both windows around the same
/// place), which is byte `offset` of the files.
fn describe(a: &[u8], b: &[u8], at: usize, offset: u64) -> String {
    let text = |s: &[u8]| !s.contains(&0) && std::str::from_utf8(s).is_ok();
    if text(&a[..a.len().min(at + 256)]) && text(&b[..b.len().min(at + 256)]) {
        let start = a[..at]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1);
        let line = |s: &[u8]| {
            let end = s[start..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(s.len(), |p| start + p);
            let l = String::from_utf8_lossy(&s[start..end]).into_owned();
            if l.chars().count() > 120 {
                l.chars().take(117).collect::<String>() + "..."
            } else {
                l
            }
        };
        return format!("at byte {offset}: `{}` and `{}`", line(a), line(b));
    }
    let start = at.saturating_sub(CONTEXT / 2);
    let hex = |s: &[u8]| {
        s[start.min(s.len())..(start + CONTEXT).min(s.len())]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "at byte {offset} (0x{offset:x}), from 0x{:x}: {} and {}",
        offset - (at - start) as u64,
        hex(a),
        hex(b)
    )
}

/// Writes diffoscope's HTML report on `a` and `b` to `html`, if diffoscope is
/// installed. Bounded: a report that takes over `limit` is given up.
pub fn diffoscope(a: &Path, b: &Path, html: &Path, limit: Duration) -> Option<io::Result<()>> {
    let mut child = match Command::new("diffoscope")
        .arg("--html")
        .arg(html)
        .arg("--no-progress")
        .arg(a)
        .arg(b)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(e)),
        Ok(c) => c,
    };
    let started = Instant::now();
    Some(loop {
        match child.try_wait() {
            // 1: differences found, the usual case here.
            Ok(Some(s)) if matches!(s.code(), Some(0 | 1)) && html.is_file() => break Ok(()),
            Ok(Some(s)) => break Err(io::Error::other(format!("diffoscope {s}"))),
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(io::Error::other(format!(
                    "diffoscope took over {} s",
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => break Err(e),
        }
    })
}
