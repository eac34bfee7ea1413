//! Bounds on what a recipe may ask of bake before anything reads it closely: a
//! hostile or broken file must cost a located error, not a crash or all memory.

use super::error::RecipeError;
use super::source::{FileId, Loc};

/// Deepest nesting of `{ }` blocks (recipes use three or four; the KDL parser
/// overflows its stack somewhere past a thousand).
pub const MAX_DEPTH: usize = 64;
/// Largest recipe file read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most instances one evaluation may expand to.
pub const MAX_INSTANCES: u64 = 1_000_000;
/// Most bytes of local files (toolchain identities, sysext files) hashed at evaluation.
pub const MAX_FINGERPRINT_BYTES: u64 = 4 << 30;

/// Refuses text nested deeper than [`MAX_DEPTH`], pointing at the brace that
/// goes too deep. Braces in strings and comments do not count.
pub fn check_nesting(file: FileId, text: &str) -> Result<(), RecipeError> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = find(b, i, b"\n").unwrap_or(b.len());
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment_end(b, i),
            b'"' => i = string_end(b, i, 0),
            b'#' | b'r' => {
                let hashes = b[i + usize::from(b[i] == b'r')..]
                    .iter()
                    .take_while(|c| **c == b'#')
                    .count();
                let quote = i + usize::from(b[i] == b'r') + hashes;
                let raw = b.get(quote) == Some(&b'"')
                    && (b[i] == b'#' || i == 0 || !b[i - 1].is_ascii_alphanumeric());
                i = if raw {
                    string_end(b, quote, hashes)
                } else {
                    i + 1
                };
            }
            b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(RecipeError::at(
                        Loc::new(file, (i, 1).into()),
                        format!("blocks nested deeper than {MAX_DEPTH}"),
                        "too deep",
                    )
                    .help("recipes need a few levels of { }; this file is probably not a recipe"));
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// The end of a `/* */` comment starting at `start`; they nest in KDL.
fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut level = 0;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                level += 1;
                i += 2;
            }
            (b'*', b'/') => {
                level -= 1;
                i += 2;
                if level == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// The end of a string whose opening quote is at `quote`: raw when `hashes` > 0
/// (no escapes; ends at a quote followed by as many `#`), `"""` multi-line or not.
fn string_end(b: &[u8], quote: usize, hashes: usize) -> usize {
    let triple = b.get(quote..quote + 3) == Some(b"\"\"\"");
    let mut i = quote + if triple { 3 } else { 1 };
    while i < b.len() {
        match b[i] {
            b'\\' if hashes == 0 => i += 2,
            b'"' => {
                let closes = !triple || b.get(i..i + 3) == Some(b"\"\"\"");
                let end = i + if triple { 3 } else { 1 };
                if closes
                    && b[end.min(b.len())..]
                        .iter()
                        .take_while(|c| **c == b'#')
                        .count()
                        >= hashes
                {
                    return end + hashes;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_not_braces_in_strings_and_comments() {
        let f = FileId(0);
        let ok = "a { b { c \"{{{{\" #\"}}}\"# } } // {{{\n/* { /* { */ */ d #\"\"\"\n{{\n\"\"\"#";
        assert!(check_nesting(f, ok).is_ok());
        let deep = "a {".repeat(MAX_DEPTH + 1);
        let err = check_nesting(f, &deep).unwrap_err();
        assert!(err.message.contains("nested deeper"));
        let fine = "a {".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
        assert!(check_nesting(f, &fine).is_ok());
        let in_string = format!("a \"{}\"", "{".repeat(5000));
        assert!(check_nesting(f, &in_string).is_ok());
    }
}
