//! Strings with `{axis}` placeholders.
//!
//! `{name}` (a name of letters, digits, `_` and `-`, starting with a letter or `_`)
//! is a placeholder; `{{` and `}}` write literal braces; `${VAR}` is the shell's and
//! stays as written. Any other brace is literal, so shell groups (`{ cmd; }`) and
//! function bodies need no escaping.

use std::collections::BTreeMap;

use super::source::{Loc, Spanned};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Axis(Spanned<String>),
}

/// A recipe string split into literal text and placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub loc: Loc,
}

impl Template {
    /// Splits `text`. `raw` is the value as written in the file at `loc` (quotes and
    /// all): a placeholder is located by finding its text there, falling back to the
    /// whole value when escapes make that impossible.
    pub fn parse(text: &str, raw: &str, loc: Loc) -> Template {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut search_from = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            if rest.starts_with("{{") || rest.starts_with("}}") {
                literal.push_str(&rest[..1]);
                i += 2;
            } else if rest.starts_with("${") {
                let end = rest.find('}').map_or(rest.len(), |e| e + 1);
                literal.push_str(&rest[..end]);
                i += end;
            } else if let Some(name) = placeholder_at(rest) {
                if !literal.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut literal)));
                }
                let written = &rest[..name.len() + 2];
                let name_loc = match raw[search_from..].find(written) {
                    Some(at) => {
                        search_from += at + written.len();
                        loc.sub(search_from - written.len(), written.len())
                    }
                    None => loc,
                };
                segments.push(Segment::Axis(Spanned::new(name.to_string(), name_loc)));
                i += written.len();
            } else {
                let ch = rest.chars().next().map_or(1, char::len_utf8);
                literal.push_str(&rest[..ch]);
                i += ch;
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Template { segments, loc }
    }

    /// The placeholders, in order of appearance.
    pub fn axes(&self) -> impl Iterator<Item = &Spanned<String>> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Axis(a) => Some(a),
            Segment::Text(_) => None,
        })
    }

    /// The string with every placeholder replaced by its axis value. Axes were
    /// checked during evaluation; a missing one renders empty.
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Axis(a) => out.push_str(values.get(&a.value).map_or("", String::as_str)),
            }
        }
        out
    }
}

/// The name of a placeholder starting `s`, if `s` starts with one.
fn placeholder_at(s: &str) -> Option<&str> {
    let body = s.strip_prefix('{')?;
    let end = body.find('}')?;
    let name = &body[..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::source::FileId;

    fn loc() -> Loc {
        Loc::new(FileId(0), (0, 0).into())
    }

    fn render(text: &str, pairs: &[(&str, &str)]) -> String {
        let values = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Template::parse(text, text, loc()).render(&values)
    }

    #[test]
    fn placeholders_shell_variables_and_braces() {
        assert_eq!(
            render("k-{version}.tgz", &[("version", "2.3.4")]),
            "k-2.3.4.tgz"
        );
        assert_eq!(
            render("${out}/{arch}", &[("arch", "arm64")]),
            "${out}/arm64"
        );
        assert_eq!(render("awk '{{print $1}}'", &[]), "awk '{print $1}'");
        assert_eq!(render("f() { echo; }", &[]), "f() { echo; }");
        assert_eq!(render("x{", &[]), "x{");
    }

    #[test]
    fn placeholder_spans_point_into_the_raw_text() {
        let raw = "\"a {arch} b {arch}\"";
        let t = Template::parse(
            "a {arch} b {arch}",
            raw,
            Loc::new(FileId(0), (10, raw.len()).into()),
        );
        let spans: Vec<_> = t.axes().map(|a| a.loc.span.offset()).collect();
        assert_eq!(spans, vec![13, 22]);
    }
}
