//! Why an instance rebuilt, or would: the exact difference between what it is now
//! and what it was at its last build.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What an instance was built from, as far as `why` can tell the difference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub script: String,
    pub env: BTreeMap<String, String>,
    /// Input name -> the output hash (builds) or key (sources, toolchains) it had.
    pub inputs: BTreeMap<String, String>,
    /// The toolchain instance's key, if the step has one.
    pub toolchain: Option<String>,
    /// The source's declared hash, if the step has one.
    pub source: Option<String>,
    /// Everything else that goes into the key (sysext and release fields).
    pub other: BTreeMap<String, String>,
}

/// One difference from the last build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    NeverBuilt,
    Input {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
    Env {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// A unified-style diff of the script's lines.
    Script(Vec<String>),
    Toolchain {
        before: Option<String>,
        after: Option<String>,
    },
    Source {
        before: Option<String>,
        after: Option<String>,
    },
    Field {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
}

/// The differences, most telling first; empty when nothing changed.
pub fn explain(last: Option<&Snapshot>, now: &Snapshot) -> Vec<Change> {
    let Some(last) = last else {
        return vec![Change::NeverBuilt];
    };
    let mut changes = Vec::new();
    for (name, before, after) in map_diff(&last.inputs, &now.inputs) {
        changes.push(Change::Input {
            name,
            before,
            after,
        });
    }
    if last.toolchain != now.toolchain {
        changes.push(Change::Toolchain {
            before: last.toolchain.clone(),
            after: now.toolchain.clone(),
        });
    }
    if last.source != now.source {
        changes.push(Change::Source {
            before: last.source.clone(),
            after: now.source.clone(),
        });
    }
    for (name, before, after) in map_diff(&last.env, &now.env) {
        changes.push(Change::Env {
            name,
            before,
            after,
        });
    }
    if last.script != now.script {
        changes.push(Change::Script(line_diff(&last.script, &now.script)));
    }
    for (name, before, after) in map_diff(&last.other, &now.other) {
        changes.push(Change::Field {
            name,
            before,
            after,
        });
    }
    changes
}

type Difference = (String, Option<String>, Option<String>);

fn map_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<Difference> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect()
}

/// The changed lines of `b` against `a` (`- old`, `+ new`) with one line of context.
fn line_diff(a: &str, b: &str) -> Vec<String> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    // Longest common subsequence table, from the ends.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', j + 1, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i + 1, a[i]));
            i += 1;
        } else {
            ops.push(('+', j + 1, b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(1);
        let hi = (k + 1).min(ops.len() - 1);
        ops[lo..=hi].iter().any(|(c, _, _)| *c != ' ')
    };
    ops.iter()
        .enumerate()
        .filter(|(k, _)| near_change(*k))
        .map(|(_, (c, line, text))| format!("{c} {line:>3} | {text}"))
        .collect()
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NeverBuilt => write!(f, "never built"),
            Change::Input {
                name,
                before,
                after,
            } => write!(
                f,
                "input `{name}` changed: {} -> {}",
                short(show(before)),
                short(show(after))
            ),
            Change::Env {
                name,
                before,
                after,
            } => {
                write!(
                    f,
                    "variable {name} changed: {:?} -> {:?}",
                    show(before),
                    show(after)
                )
            }
            Change::Script(lines) => {
                write!(f, "script changed:")?;
                for l in lines {
                    write!(f, "\n    {l}")?;
                }
                Ok(())
            }
            Change::Toolchain { before, after } => write!(
                f,
                "toolchain changed: {} -> {}",
                short(show(before)),
                short(show(after))
            ),
            Change::Source { before, after } => {
                write!(f, "source changed: {} -> {}", show(before), show(after))
            }
            Change::Field {
                name,
                before,
                after,
            } => {
                write!(f, "{name} changed: {:?} -> {:?}", show(before), show(after))
            }
        }
    }
}

/// Hashes are long; twelve digits tell them apart in a message.
fn short(s: &str) -> &str {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        &s[..12]
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_diff_shows_changed_lines_with_context() {
        let d = line_diff("a\nb\nc\nd\ne", "a\nb\nX\nd\ne");
        assert_eq!(d, vec!["    2 | b", "-   3 | c", "+   3 | X", "    4 | d"]);
    }

    #[test]
    fn explains_each_kind_of_change() {
        let mut last = Snapshot {
            script: "make".into(),
            ..Default::default()
        };
        last.env.insert("CFLAGS".into(), "-O2".into());
        last.inputs.insert("openssl".into(), "a".repeat(64));
        let mut now = last.clone();
        assert!(explain(Some(&last), &now).is_empty());
        now.env.insert("CFLAGS".into(), "-O3".into());
        now.inputs.insert("openssl".into(), "b".repeat(64));
        now.toolchain = Some("t".into());
        let text: Vec<String> = explain(Some(&last), &now)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            text,
            vec![
                "input `openssl` changed: aaaaaaaaaaaa -> bbbbbbbbbbbb",
                "toolchain changed: (none) -> t",
                "variable CFLAGS changed: \"-O2\" -> \"-O3\"",
            ]
        );
        assert_eq!(explain(None, &now), vec![Change::NeverBuilt]);
    }
}
