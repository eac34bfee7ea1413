//! The subset reader against the `kdl` crate: wherever the reader takes a
//! text, the crate must accept it and give the same document, spans included.

use std::path::{Path, PathBuf};

use kdl::{KdlDocument, KdlEntry, KdlIdentifier, KdlNode};
use proptest::prelude::*;

use super::subset;

fn id(a: &KdlIdentifier, b: &KdlIdentifier, at: &str) -> Result<(), String> {
    if a.value() != b.value() || a.span() != b.span() {
        return Err(format!(
            "{at}: identifier {:?}@{:?} vs {:?}@{:?}",
            a.value(),
            a.span(),
            b.value(),
            b.span()
        ));
    }
    Ok(())
}

fn entry(a: &KdlEntry, b: &KdlEntry, at: &str) -> Result<(), String> {
    match (a.name(), b.name()) {
        (Some(x), Some(y)) => id(x, y, at)?,
        (None, None) => {}
        _ => return Err(format!("{at}: property vs argument")),
    }
    if a.value() != b.value() || a.span() != b.span() || a.ty().is_some() || b.ty().is_some() {
        return Err(format!(
            "{at}: entry {:?}@{:?} vs {:?}@{:?}",
            a.value(),
            a.span(),
            b.value(),
            b.span()
        ));
    }
    Ok(())
}

fn node(a: &KdlNode, b: &KdlNode, at: &str) -> Result<(), String> {
    let at = format!("{at}/{}", a.name().value());
    id(a.name(), b.name(), &at)?;
    if a.span() != b.span() || a.ty().is_some() || b.ty().is_some() {
        return Err(format!("{at}: node span {:?} vs {:?}", a.span(), b.span()));
    }
    if a.entries().len() != b.entries().len() {
        return Err(format!("{at}: {:?} vs {:?}", a.entries(), b.entries()));
    }
    for (x, y) in a.entries().iter().zip(b.entries()) {
        entry(x, y, &at)?;
    }
    match (a.children(), b.children()) {
        (Some(x), Some(y)) => doc(x, y, &at),
        (None, None) => Ok(()),
        _ => Err(format!("{at}: block vs none")),
    }
}

fn doc(a: &KdlDocument, b: &KdlDocument, at: &str) -> Result<(), String> {
    if a.span() != b.span() || a.nodes().len() != b.nodes().len() {
        return Err(format!(
            "{at}: document {:?} with {} nodes vs {:?} with {}",
            a.span(),
            a.nodes().len(),
            b.span(),
            b.nodes().len()
        ));
    }
    for (x, y) in a.nodes().iter().zip(b.nodes()) {
        node(x, y, at)?;
    }
    Ok(())
}

/// Whether the reader took `text`; an error when it read it differently from the crate.
fn agree(text: &str) -> Result<bool, String> {
    let Some(ours) = subset(text) else {
        return Ok(false);
    };
    match text.parse::<KdlDocument>() {
        Ok(theirs) => doc(&ours, &theirs, "").map(|()| true),
        Err(e) => Err(format!("read a text the crate refuses: {e:?}")),
    }
}

fn kdl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            kdl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "kdl") {
            out.push(p);
        }
    }
}

#[test]
fn every_recipe_in_the_repository_is_read_as_the_crate_reads_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["recipes", "toolchains", "tests", "benches"] {
        kdl_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 50, "found {} recipes", files.len());
    let mut taken = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        match agree(&text) {
            Ok(t) => taken += t as usize,
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    // The recipes users build are all in the subset: that is its point.
    for f in ["recipes/keepalived.kdl", "recipes/toolchains.kdl"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        assert!(
            subset(&text).is_some(),
            "{f} is not read by the subset reader"
        );
    }
    assert!(
        taken * 2 > files.len(),
        "only {taken} of {} read",
        files.len()
    );
}

#[test]
fn the_fuzz_corpus_is_read_as_the_crate_reads_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_eval");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if let Err(err) = agree(&text) {
            panic!("{}: {err}", e.path().display());
        }
        n += 1;
    }
    assert!(n > 100, "{n} inputs");
}

#[test]
fn edge_cases_agree_with_the_crate() {
    let cases = [
        "",
        "a",
        "a;b",
        "a; b;",
        "a;;",
        "a {}",
        "a{}",
        "a { }",
        "a { b }",
        "a { b; c }",
        "a {\n  b 1\n}\n",
        "a \"x\"{ b }",
        "a {} b",
        "a {} \"x\"",
        "a 1=2",
        "a k=v",
        "a k = v",
        "a \"k\"=1",
        "a #\"k\"#=1",
        "a k=",
        "a =1",
        "a=1",
        "a b=c=d",
        "a 007 -5 +3 -0",
        "a 1.5",
        "a 1_000",
        "a 0x10",
        "a 1e3",
        "a 99999999999999999999999999999999999999999",
        "a #true #false #null",
        "a #inf",
        "a ##true",
        "a #truex",
        "a true",
        "a inf",
        "a nan",
        "a -",
        "a x86-64 _y a.b",
        "a café",
        "a \"x\" // c\nb",
        "a // c",
        "// only\n",
        "a /* c */ b",
        "a /- b c",
        "/- a\nb",
        "a \\\n b",
        "a \"\\n\\t\\\\\\\"\\s\\b\\f\\r\\u{1F600}\\u{0}\"",
        "a \"\\u{D800}\"",
        "a \"\\u{1234567}\"",
        "a \"\\q\"",
        "a \"x\\   y\"",
        "a \"tab\there\"",
        "a \"é ü\"",
        "a \"nbsp\u{a0}\"",
        "a \"line\nbreak\"",
        "a \"x\"\"y\"",
        "a \"x\"y",
        "a #\"raw \\ \"q\" \"#",
        "a ##\"x\"# y\"##",
        "a #\"\"\"#",
        "a #\"\"#",
        "a \"\"",
        "a \"\"\"\n  x\n   y\n\n  z\n  \"\"\"",
        "a \"\"\"\n  x\n y\n  \"\"\"",
        "a \"\"\"\n\"\"\"",
        "a \"\"\"\n  \"\"\"",
        "a \"\"\"x\n\"\"\"",
        "a \"\"\"\n  a \"b\" \"\"c\n  \"\"\"",
        "a \"\"\"\n  a \"\"\"b\n  \"\"\"",
        "a #\"\"\"\n    x \\\n    \\ y\n    \"\"\"#",
        "a #\"\"\"\n    \\\n    \"\"\"#",
        "a #\"\"\"\n  x \"\"\" y\n  \"\"\"#",
        "a #\"\"\"\n  x \"\"\"# y\n  \"\"\"#",
        "a #\"\"\"\n\"\n\"\"\"#",
        "a #\"\"\"\n  \"\n  \"\"\"#",
        "a #\"\"\"\n  x\n  \"\"\"#b",
        "a #\"\"\"\n  x\n  \"\"\"# b",
        "a ##\"\"\"\n  \"\"\"#\n  \"\"\"##",
        "a \"\"\"\n\t x\n\t \"\"\"",
        "a \"\"\"\n  x  \n    \n  \"\"\"",
        "a\r\nb",
        "a \"x\"\r\n",
        "\u{feff}a",
        "a\u{a0}b",
        "(t)a",
        "a (t)1",
        "a [x]",
        "}",
        "a }",
        "{ a }",
        "a {",
        "a { b",
        ";",
        "a\n\n\n   \t b   \n",
        "a   ",
        "a \"x\"   ",
        "a {\n} // c",
        "a {}   ;  b",
    ];
    for c in cases {
        if let Err(e) = agree(c) {
            panic!("{c:?}: {e}");
        }
    }
}

/// Pieces of KDL, well-formed and not: the generator puts them together at random.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(" ".to_string()),
        3 => Just("\n".to_string()),
        1 => Just("\t".to_string()),
        1 => Just(";".to_string()),
        2 => Just("{".to_string()),
        2 => Just("}".to_string()),
        1 => Just("=".to_string()),
        1 => Just("// c\n".to_string()),
        1 => prop::sample::select(vec![
            "/-", "/*x*/", "\\", "\r", "(", ")", "#", "\"", "\u{a0}", "é", "1.0", "0x1", "_", "-", "+", ".", "##",
            "#true", "#inf", "\"\"\"", "#\"", "\"#", "\\n", "\\u{41}", "\\ ",
        ])
        .prop_map(str::to_string),
        4 => "[a-z_][a-z0-9._-]{0,5}",
        2 => "-?[0-9]{1,4}",
        3 => "\"([a-z $/.\\\\\"]|\\\\[ntu\"]){0,8}\"",
        1 => "#\"[a-z \"\\\\#]{0,6}\"#",
        1 => ("[ \t]{0,3}", prop::collection::vec("[ \ta-z\"\\\\#]{0,6}", 0..4), "[ \t]{0,3}", any::<bool>())
            .prop_map(|(indent, lines, close, raw)| {
                let mut s = String::from(if raw { "#\"\"\"\n" } else { "\"\"\"\n" });
                for l in lines {
                    s.push_str(&indent);
                    s.push_str(&l);
                    s.push('\n');
                }
                s.push_str(&close);
                s.push_str(if raw { "\"\"\"#" } else { "\"\"\"" });
                s
            }),
    ]
}

/// A recipe-like document: nodes with arguments, properties and blocks.
fn recipe_like() -> impl Strategy<Value = String> {
    let leaf = (
        "[a-z]{1,6}",
        prop::collection::vec(fragment(), 0..6),
        "[ ;]?\n",
    )
        .prop_map(|(name, parts, end)| {
            let mut s = name;
            for p in parts {
                s.push(' ');
                s.push_str(&p);
            }
            s + &end
        });
    prop::collection::vec(
        (
            "[a-z]{1,6}",
            "[ \t]{0,2}",
            prop::collection::vec(leaf, 0..4),
            "[ \t]{0,2}",
        ),
        0..5,
    )
    .prop_map(|nodes| {
        nodes
            .into_iter()
            .map(|(name, before, children, after)| {
                format!("{name}{before}{{\n{}}}{after}\n", children.concat())
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_fragments_agree_with_the_crate(parts in prop::collection::vec(fragment(), 0..24)) {
        let text = parts.concat();
        prop_assert!(agree(&text).is_ok(), "{:?}: {:?}", text, agree(&text));
    }

    #[test]
    fn recipe_like_documents_agree_with_the_crate(text in recipe_like()) {
        prop_assert!(agree(&text).is_ok(), "{:?}: {:?}", text, agree(&text));
    }
}
