//! A large recipe is parsed in pieces: the result, and the location of every
//! error, are those of the whole text parsed at once (a trailing block comment
//! keeps a text whole).

mod common;

use common::Project;

/// `n` build nodes, node i taking i-1 and i/2 as inputs (once each).
fn recipe(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!("build \"n{i}\" {{\n"));
        match i {
            0 => {}
            1 | 2 => out.push_str(&format!("    input \"n{}\"\n", i - 1)),
            _ => out.push_str(&format!("    input \"n{}\" \"n{}\"\n", i - 1, i / 2)),
        }
        out.push_str(&format!(
            "    script \"echo {i} > $out/n{i}\" // }} \"\n}}\n"
        ));
    }
    out
}

fn eval(p: &Project, file: &str) -> (bool, String, String) {
    let out = p.bake(&["eval", file, "--json"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(file, "FILE"),
    )
}

#[test]
fn pieces_evaluate_as_the_whole() {
    let p = Project::new();
    let text = recipe(8_000);
    assert!(text.len() > 512 << 10, "large enough to be cut");
    p.write("split.kdl", &text);
    p.write("whole.kdl", &format!("{text}/* whole */\n"));
    let (ok, split, err) = eval(&p, "split.kdl");
    assert!(ok, "{err}");
    let (ok, whole, err) = eval(&p, "whole.kdl");
    assert!(ok, "{err}");
    assert_eq!(split, whole);
    assert_eq!(split.matches("\"id\"").count(), 8_000);
}

#[test]
fn errors_in_late_pieces_point_where_the_whole_does() {
    let p = Project::new();
    let text = recipe(8_000);
    // One error found after parsing (an unknown input), one while parsing
    // (an unknown field), both far into the file.
    let unknown_input = text.replace("input \"n6999\" \"n3500\"", "input \"n6999\" \"nope\"");
    let unknown_field = text.replace("    input \"n7100\"", "    inptu \"n7100\"");
    for (name, bad) in [("input", unknown_input), ("field", unknown_field)] {
        p.write(&format!("{name}-split.kdl"), &bad);
        p.write(&format!("{name}-whole.kdl"), &format!("{bad}/* whole */\n"));
        let (ok, _, split) = eval(&p, &format!("{name}-split.kdl"));
        assert!(!ok);
        let (ok, _, whole) = eval(&p, &format!("{name}-whole.kdl"));
        assert!(!ok);
        assert_eq!(split, whole);
        // Node i starts on line 4i (node 0 has no inputs); its inputs are the line after.
        let line = if name == "input" {
            "FILE:28001:"
        } else {
            "FILE:28405:"
        };
        assert!(split.contains(line), "{split}");
    }
}
