//! Property tests of eval keys: deterministic, blind to formatting, and changed by
//! any script change exactly where the change reaches.

use std::collections::{BTreeMap, BTreeSet};

use bake::eval::{evaluate, Options};
use proptest::prelude::*;

/// A generated recipe: builds with scripts, env and dependencies on earlier builds.
#[derive(Clone, Debug)]
struct Recipe {
    arches: Vec<String>,
    builds: Vec<BuildSpec>,
}

#[derive(Clone, Debug)]
struct BuildSpec {
    script: String,
    env: Vec<(String, String)>,
    inputs: Vec<usize>,
    uses_arch: bool,
}

fn script_text() -> impl Strategy<Value = String> {
    // Shell-ish text, quotes and backslashes included; no braces, so no placeholders.
    proptest::string::string_regex("[a-z0-9 $;|&=._/\"\\\\\n-]{1,40}").unwrap()
}

fn recipe() -> impl Strategy<Value = Recipe> {
    let build = (
        script_text(),
        proptest::collection::btree_map("[A-Z][A-Z0-9_]{0,5}", "[a-z0-9 -]{0,8}", 0..3),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        any::<bool>(),
    );
    (
        proptest::collection::vec("[a-z][a-z0-9]{0,5}", 1..3),
        proptest::collection::vec(build, 1..8),
    )
        .prop_map(|(arches, builds)| {
            let arches: Vec<String> = arches
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let builds = builds
                .into_iter()
                .enumerate()
                .map(|(i, (script, env, inputs, uses_arch))| BuildSpec {
                    script,
                    env: env.into_iter().collect(),
                    inputs: if i == 0 {
                        Vec::new()
                    } else {
                        let set: BTreeSet<usize> = inputs.iter().map(|x| x.index(i)).collect();
                        set.into_iter().collect()
                    },
                    uses_arch,
                })
                .collect();
            Recipe { arches, builds }
        })
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The recipe as KDL; `noisy` adds comments, blank lines, odd spacing, reversed
/// property order and braces on their own lines, none of which may change a key.
fn render(r: &Recipe, noisy: bool) -> String {
    let sep = if noisy { "   " } else { " " };
    let mut out = String::new();
    if noisy {
        out.push_str("// generated\n\n/* block comment */\n");
    }
    out.push_str("matrix {\n    arch");
    for a in &r.arches {
        out.push_str(sep);
        out.push_str(&quote(a));
    }
    out.push_str("\n}\n");
    for (i, b) in r.builds.iter().enumerate() {
        out.push_str(&format!("build{sep}\"b{i}\""));
        out.push_str(if noisy {
            " /* node */ \\\n  {\n"
        } else {
            " {\n"
        });
        let mut fields = Vec::new();
        let arch = if b.uses_arch { " {arch}" } else { "" };
        fields.push(format!(
            "    script{sep}{}",
            quote(&format!("{}{arch}", b.script))
        ));
        for input in &b.inputs {
            fields.push(format!("    input{sep}\"b{input}\""));
        }
        if !b.env.is_empty() {
            let mut props: Vec<String> = b
                .env
                .iter()
                .map(|(k, v)| format!("{k}={}", quote(v)))
                .collect();
            if noisy {
                props.reverse();
            }
            fields.push(format!("    env {}", props.join(sep)));
        }
        if noisy {
            fields.reverse();
            fields.push("    // trailing comment".to_string());
        }
        out.push_str(&fields.join("\n"));
        out.push_str("\n}\n");
        if noisy {
            out.push('\n');
        }
    }
    out
}

fn keys(text: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipe.kdl");
    std::fs::write(&path, text).unwrap();
    let e = match evaluate(&path, &Options::default()) {
        Ok(e) => e,
        Err(r) => panic!("{}: {:?}\n{text}", r.message(), r.location()),
    };
    e.graph
        .nodes()
        .map(|(_, i)| (i.id.to_string(), i.key.to_string()))
        .collect()
}

/// Builds that depend on build `changed`, directly or not, and `changed` itself.
fn reached(r: &Recipe, changed: usize) -> BTreeSet<usize> {
    let mut set = BTreeSet::from([changed]);
    for (i, b) in r.builds.iter().enumerate() {
        if b.inputs.iter().any(|x| set.contains(x)) {
            set.insert(i);
        }
    }
    set
}

fn build_index(id: &str) -> usize {
    id.trim_start_matches('b')
        .split('@')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn keys_are_deterministic_and_blind_to_formatting(r in recipe()) {
        let plain = keys(&render(&r, false));
        prop_assert_eq!(&plain, &keys(&render(&r, false)));
        prop_assert_eq!(&plain, &keys(&render(&r, true)));
    }

    #[test]
    fn a_script_change_rekeys_exactly_its_dependents(
        r in recipe(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        ch in proptest::char::range('a', 'z'),
    ) {
        let before = keys(&render(&r, false));
        let changed = which.index(r.builds.len());
        let mut r2 = r.clone();
        let script: Vec<char> = r2.builds[changed].script.chars().collect();
        let pos = at.index(script.len());
        let new_char = if script[pos] == ch { if ch == 'a' { 'b' } else { 'a' } } else { ch };
        let mut script = script;
        script[pos] = new_char;
        r2.builds[changed].script = script.into_iter().collect();
        let after = keys(&render(&r2, false));
        let reached = reached(&r, changed);
        prop_assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
        for (id, key) in &before {
            let should_change = reached.contains(&build_index(id));
            prop_assert_eq!(key != &after[id], should_change, "{} ({})", id, changed);
        }
    }
}
