//! Cutting a large recipe between top-level nodes, so the pieces parse in
//! parallel and each piece's KDL document is dropped before the next is made:
//! parsing is the largest part of a cold evaluation, and a whole document of a
//! large recipe would be most of its memory.
//!
//! The cut is conservative: only at a newline outside any block, string or
//! comment, and only in text without the syntax that lets a node go on past a
//! newline or hides one (raw and multi-line strings, block comments, `/-`,
//! line continuations). Anything else is parsed whole, as is any text a piece
//! of which fails to parse, so errors read exactly as they always did.

/// Texts smaller than this are not cut: parsing them whole is quick enough.
pub const MIN_SPLIT_BYTES: usize = 256 << 10;
/// About how much text each piece holds.
const PIECE_BYTES: usize = 128 << 10;

/// The pieces of `text` as (offset, text), in order; None when it is not to be cut.
pub fn pieces(text: &str) -> Option<Vec<(usize, &str)>> {
    if text.len() < MIN_SPLIT_BYTES {
        return None;
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                if b.get(i + 1..i + 3) == Some(b"\"\"") {
                    return None; // a multi-line string
                }
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'#' if matches!(b.get(i + 1), Some(b'"' | b'#')) => return None, // a raw string
            b'\\' => return None,                                             // a line continuation
            b'/' => match b.get(i + 1) {
                Some(b'/') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                Some(b'*' | b'-') => return None,
                _ => {}
            },
            b'{' => depth += 1,
            b'}' => depth = depth.checked_sub(1)?,
            b'\n' if depth == 0 && i + 1 - start >= PIECE_BYTES => {
                out.push((start, &text[start..i + 1]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    if start < text.len() {
        out.push((start, &text[start..]));
    }
    (out.len() > 1).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(node: &str) -> String {
        node.repeat(MIN_SPLIT_BYTES / node.len() + 1)
    }

    #[test]
    fn cuts_between_top_level_nodes_only() {
        let text = big("build \"a\" {\n    script \"echo \\\"}\\\" > $out/x\" // }\n}\n");
        let pieces = pieces(&text).expect("cut");
        assert!(pieces.len() > 1);
        let mut at = 0;
        for (offset, piece) in &pieces {
            assert_eq!(*offset, at);
            assert!(piece.starts_with("build \"a\" {\n"), "{piece:.40}");
            assert!(piece.ends_with("}\n"));
            at += piece.len();
        }
        assert_eq!(at, text.len());
    }

    #[test]
    fn leaves_whole_what_could_span_a_newline() {
        for node in [
            "build \"a\" {\n    script #\"echo\"#\n}\n",
            "build \"a\" {\n    script \"\"\"\n    echo\n    \"\"\"\n}\n",
            "build \"a\" { /* x */ }\n",
            "/-build \"a\" {\n}\n",
            "build \"a\" \\\n    { }\n",
            "build \"a\" {\n",
            "build \"a\" \"unterminated\n",
        ] {
            assert!(pieces(&big(node)).is_none(), "{node}");
        }
        assert!(
            pieces("build \"a\" {\n}\n").is_none(),
            "small texts stay whole"
        );
    }
}
