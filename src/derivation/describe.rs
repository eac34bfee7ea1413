//! One description per derivation: each kind lists its fields once, in order, and
//! the eval key, the build key and the snapshot `bake why` compares are all made
//! from that list, so they cannot drift apart.
//!
//! The key is blake3 over a canonical encoding: a version tag, the kind, then each
//! field as its name, an explicit type tag and a length-prefixed value, then the
//! dependencies sorted by role and name. No instance name, axis value or
//! formatting of the recipe goes in: two instances that would run the very same
//! step share a key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::Digest;
use crate::names::{InstanceId, NodeName};
use crate::recipe::Role;

/// Change whenever the encoding below changes.
const VERSION: &str = "bake-derivation-v2";

/// A field's value; the variant is its type, with a fixed tag in the encoding.
#[derive(Clone, Debug)]
enum Value {
    Text(String),
    Flag(bool),
    Optional(Option<String>),
    Digest(Digest),
    /// Environment variables, each compared on its own.
    Vars(Vec<(String, String)>),
}

impl Value {
    fn tag(&self) -> u8 {
        match self {
            Value::Text(_) => 1,
            Value::Flag(_) => 2,
            Value::Optional(_) => 3,
            Value::Digest(_) => 4,
            Value::Vars(_) => 5,
        }
    }
}

/// What a derivation is, field by field, in the order its kind declares.
#[derive(Clone, Debug)]
pub struct Description {
    kind: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl Description {
    pub fn new(kind: &'static str) -> Self {
        Description {
            kind,
            fields: Vec::new(),
        }
    }

    pub fn text(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.push(name, Value::Text(value.to_string()))
    }

    pub fn flag(&mut self, name: &'static str, value: bool) -> &mut Self {
        self.push(name, Value::Flag(value))
    }

    pub fn optional(&mut self, name: &'static str, value: Option<&str>) -> &mut Self {
        self.push(name, Value::Optional(value.map(str::to_string)))
    }

    pub fn digest(&mut self, name: &'static str, value: Digest) -> &mut Self {
        self.push(name, Value::Digest(value))
    }

    pub fn vars(&mut self, name: &'static str, value: &[(String, String)]) -> &mut Self {
        let mut sorted = value.to_vec();
        sorted.sort();
        self.push(name, Value::Vars(sorted))
    }

    fn push(&mut self, name: &'static str, value: Value) -> &mut Self {
        self.fields.push((name, value));
        self
    }
}

/// One dependency as the key sees it: by its declared identity (sources and
/// toolchains: their eval key) or by the output it produced, and as `why` shows it.
#[derive(Clone, Debug)]
pub struct DepKey {
    pub role: Role,
    /// The dependency's node name (a release gathers several instances of one node).
    pub name: String,
    /// How `why` names it when it changes; unique among the dependencies.
    pub label: String,
    pub digest: Digest,
    /// What `why` shows of it: its declared hash, or `digest`.
    pub shown: String,
}

impl DepKey {
    /// `digest` is what the key counts (a declared instance's eval key, another's
    /// output hash); `shown`, what `why` shows instead of it, if anything.
    pub fn new(
        role: Role,
        name: &NodeName,
        id: &InstanceId,
        digest: Digest,
        shown: Option<String>,
    ) -> DepKey {
        let label = match role {
            Role::Source => "source".to_string(),
            Role::Toolchain => "toolchain".to_string(),
            Role::Input => format!("input `{name}`"),
            Role::Gather => format!("image {id}"),
        };
        DepKey {
            role,
            name: name.to_string(),
            label,
            digest,
            shown: shown.unwrap_or_else(|| digest.to_hex()),
        }
    }
}

/// The key of a derivation.
pub fn key(desc: &Description, deps: &[DepKey]) -> Digest {
    let mut e = Encoder(blake3::Hasher::new());
    e.str(VERSION);
    e.str(desc.kind);
    e.count(desc.fields.len());
    for (name, value) in &desc.fields {
        e.str(name);
        e.0.update(&[value.tag()]);
        match value {
            Value::Text(s) => e.str(s),
            Value::Flag(b) => {
                e.0.update(&[u8::from(*b)]);
            }
            Value::Optional(None) => {
                e.0.update(&[0]);
            }
            Value::Optional(Some(s)) => {
                e.0.update(&[1]);
                e.str(s);
            }
            Value::Digest(d) => {
                e.0.update(d.as_bytes());
            }
            Value::Vars(pairs) => {
                e.count(pairs.len());
                for (k, v) in pairs {
                    e.str(k);
                    e.str(v);
                }
            }
        }
    }
    // Dependencies in a canonical order: by role, then by name, then as gathered.
    let mut sorted: Vec<&DepKey> = deps.iter().collect();
    sorted.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    e.count(sorted.len());
    for d in sorted {
        e.str(d.role.tag());
        e.str(&d.name);
        e.0.update(d.digest.as_bytes());
    }
    Digest::from(e.0.finalize())
}

struct Encoder(blake3::Hasher);

impl Encoder {
    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.update(s.as_bytes());
    }
}

/// How an entry of a snapshot is shown when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Form {
    /// Quoted; several lines are shown as a line diff.
    Text,
    /// A digest or key, shortened.
    Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    label: String,
    value: String,
    form: Form,
}

/// A derivation as `why` compares it: every field and dependency, by label, as
/// it was at a build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot(Vec<Entry>);

/// The snapshot of a description with its dependencies: dependencies first (most
/// telling), then the fields in the kind's order.
pub fn snapshot(desc: &Description, deps: &[DepKey]) -> Snapshot {
    let mut entries = Vec::new();
    let mut sorted: Vec<&DepKey> = deps.iter().collect();
    sorted.sort_by_key(|d| d.role);
    for d in sorted {
        let form = if d.shown.len() == 64 && d.shown.bytes().all(|b| b.is_ascii_hexdigit()) {
            Form::Hash
        } else {
            Form::Text
        };
        entries.push(Entry {
            label: d.label.clone(),
            value: d.shown.clone(),
            form,
        });
    }
    for (name, value) in &desc.fields {
        let entry = |value: String, form| Entry {
            label: name.to_string(),
            value,
            form,
        };
        match value {
            Value::Text(s) => entries.push(entry(s.clone(), Form::Text)),
            Value::Flag(b) => entries.push(entry(b.to_string(), Form::Text)),
            Value::Optional(None) => {}
            Value::Optional(Some(s)) => entries.push(entry(s.clone(), Form::Text)),
            Value::Digest(d) => entries.push(entry(d.to_hex(), Form::Hash)),
            Value::Vars(pairs) => {
                for (k, v) in pairs {
                    entries.push(Entry {
                        label: format!("variable {k}"),
                        value: v.clone(),
                        form: Form::Text,
                    });
                }
            }
        }
    }
    Snapshot(entries)
}

/// One difference from the last build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    label: String,
    before: Option<String>,
    after: Option<String>,
    form: Form,
}

/// The differences between the snapshot of the last build and now, in the
/// order of the current snapshot (dependencies first), then what was removed.
pub fn explain(last: &Snapshot, now: &Snapshot) -> Vec<Change> {
    let find = |s: &Snapshot, label: &str| s.0.iter().find(|e| e.label == label).cloned();
    let mut changes = Vec::new();
    for e in &now.0 {
        let before = find(last, &e.label);
        if before.as_ref().map(|b| &b.value) != Some(&e.value) {
            changes.push(Change {
                label: e.label.clone(),
                before: before.map(|b| b.value),
                after: Some(e.value.clone()),
                form: e.form,
            });
        }
    }
    for e in &last.0 {
        if find(now, &e.label).is_none() {
            changes.push(Change {
                label: e.label.clone(),
                before: Some(e.value.clone()),
                after: None,
                form: e.form,
            });
        }
    }
    changes
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let multiline = |v: &Option<String>| v.as_ref().is_some_and(|s| s.contains('\n'));
        if self.form == Form::Text && (multiline(&self.before) || multiline(&self.after)) {
            write!(f, "{} changed:", self.label)?;
            let (a, b) = (
                self.before.as_deref().unwrap_or(""),
                self.after.as_deref().unwrap_or(""),
            );
            for l in line_diff(a, b) {
                write!(f, "\n    {l}")?;
            }
            return Ok(());
        }
        let show = |v: &Option<String>| match (v, self.form) {
            (None, _) => "(none)".to_string(),
            (Some(s), Form::Hash) => s.get(..12).unwrap_or(s).to_string(),
            (Some(s), Form::Text) => format!("{s:?}"),
        };
        write!(
            f,
            "{} changed: {} -> {}",
            self.label,
            show(&self.before),
            show(&self.after)
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, digest: Digest) -> DepKey {
        DepKey::new(
            Role::Input,
            &NodeName::new(name),
            &InstanceId::new(name),
            digest,
            None,
        )
    }

    #[test]
    fn script_diff_shows_changed_lines_with_context() {
        let d = line_diff("a\nb\nc\nd\ne", "a\nb\nX\nd\ne");
        assert_eq!(d, vec!["    2 | b", "-   3 | c", "+   3 | X", "    4 | d"]);
    }

    #[test]
    fn key_and_snapshot_come_from_the_same_fields() {
        let describe = |script: &str, cflags: &str, level: Option<&str>| {
            let mut d = Description::new("build");
            d.text("script", script)
                .vars("env", &[("CFLAGS".into(), cflags.into())])
                .optional("sysext-level", level);
            d
        };
        let lib = [dep("lib", Digest::of(b"one"))];
        let base = describe("make\nmake install", "-O2", None);
        let snap = snapshot(&base, &lib);
        assert!(explain(&snap, &snap).is_empty());
        for (edited, deps, expect) in [
            (
                describe("make\nmake check", "-O2", None),
                lib.to_vec(),
                "script changed:\n        1 | make\n    -   2 | make install\n    +   2 | make check",
            ),
            (
                describe("make\nmake install", "-O3", None),
                lib.to_vec(),
                "variable CFLAGS changed: \"-O2\" -> \"-O3\"",
            ),
            (
                describe("make\nmake install", "-O2", Some("1.0")),
                lib.to_vec(),
                "sysext-level changed: (none) -> \"1.0\"",
            ),
            (
                base.clone(),
                vec![dep("lib", Digest::of(b"two"))],
                "input `lib` changed: ",
            ),
        ] {
            assert_ne!(key(&edited, &deps), key(&base, &lib));
            let changes = explain(&snap, &snapshot(&edited, &deps));
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert!(changes[0].to_string().starts_with(expect), "{}", changes[0]);
        }
    }

    #[test]
    fn field_types_and_names_are_part_of_the_key() {
        let mut a = Description::new("x");
        a.text("f", "true");
        let mut b = Description::new("x");
        b.flag("f", true);
        let mut c = Description::new("x");
        c.text("g", "true");
        let mut other_kind = Description::new("y");
        other_kind.text("f", "true");
        let keys = [&a, &b, &c, &other_kind].map(|d| key(d, &[]));
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
            }
        }
    }
}
