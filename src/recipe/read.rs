//! KDL text -> the `kdl` crate's document.
//!
//! Recipes are written in a small part of KDL v2: plain, quoted, raw and
//! multi-line strings, integers, `#true`/`#false`/`#null`, properties, blocks
//! and line comments. That part is read here directly, into the same document
//! with the same spans the crate's parser gives: its backtracking combinators
//! were most of a cold evaluation (about 90 µs a node). Anything outside the
//! part, and every error, goes to the crate's parser, so its verdict on odd
//! input and its diagnostics stand. The tests compare the two on every recipe
//! in the repository, the fuzz corpus and generated documents.

use kdl::{KdlDocument, KdlEntry, KdlError, KdlIdentifier, KdlNode, KdlValue};

/// Parses `text`, through the subset reader when it can and the `kdl` crate
/// otherwise.
pub fn document(text: &str) -> Result<KdlDocument, KdlError> {
    match subset(text) {
        Some(doc) => Ok(doc),
        None => text.parse(),
    }
}

/// The subset reader alone: None wherever it defers to the crate.
fn subset(text: &str) -> Option<KdlDocument> {
    let mut r = Reader {
        text,
        b: text.as_bytes(),
        pos: 0,
    };
    r.nodes(false)
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
}

/// What a value was written as: only strings can be names and keys.
enum Token {
    String(String),
    Other(KdlValue),
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.pos + ahead).copied()
    }

    fn at(&self, s: &[u8]) -> bool {
        self.b[self.pos..].starts_with(s)
    }

    /// Nodes up to the end of the text, or for a block up to its `}` (left unread).
    fn nodes(&mut self, block: bool) -> Option<KdlDocument> {
        let mut doc = KdlDocument::new();
        let mut span: Option<(usize, usize)> = None;
        loop {
            self.line_space()?;
            match self.peek() {
                None if !block => break,
                Some(b'}') if block => break,
                None | Some(b'}' | b';') => return None,
                _ => {}
            }
            let node = self.node()?;
            let (start, len) = (node.span().offset(), node.span().len());
            span = Some((span.map_or(start, |s| s.0), start + len));
            doc.nodes_mut().push(node);
            // Otherwise a line comment (read by line_space), or the end of a block or the text.
            if let Some(b';' | b'\n') = self.peek() {
                self.pos += 1;
            }
        }
        let (start, end) = span.unwrap_or((self.pos, self.pos));
        doc.set_span(start..end);
        Some(doc)
    }

    /// Spaces, newlines and line comments between nodes.
    fn line_space(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n') => self.pos += 1,
                Some(b'/') if self.peek_at(1) == Some(b'/') => {
                    let end =
                        memchr(b'\n', &self.b[self.pos..]).map_or(self.b.len(), |i| self.pos + i);
                    // A comment ends at any of KDL's newlines; only `\n` is read here.
                    if self.text[self.pos..end].chars().any(|c| {
                        matches!(
                            c,
                            '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
                        )
                    }) {
                        return None;
                    }
                    self.pos = end;
                }
                _ => return Some(()),
            }
        }
    }

    /// Spaces and tabs within a node; whether there were any.
    fn ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// One node, up to (not including) its terminator.
    fn node(&mut self) -> Option<KdlNode> {
        let start = self.pos;
        let name = match self.value()? {
            Token::String(s) => identifier(s, start, self.pos),
            Token::Other(_) => return None,
        };
        let mut node = KdlNode::new(name);
        loop {
            let spaced = self.ws();
            match self.peek() {
                None | Some(b'\n' | b';' | b'}') => break,
                Some(b'/') if self.peek_at(1) == Some(b'/') => break,
                Some(b'{') => {
                    self.pos += 1;
                    let children = self.nodes(true)?;
                    self.pos += 1; // the `}` nodes() stopped at
                    node.set_children(children);
                    self.ws();
                    match self.peek() {
                        None | Some(b'\n' | b';' | b'}') => break,
                        Some(b'/') if self.peek_at(1) == Some(b'/') => break,
                        _ => return None,
                    }
                }
                _ if spaced => {
                    let entry = self.entry()?;
                    node.entries_mut().push(entry);
                }
                _ => return None,
            }
        }
        node.set_span(start..self.pos);
        Some(node)
    }

    /// An argument or a property.
    fn entry(&mut self) -> Option<KdlEntry> {
        let start = self.pos;
        let mut entry = match self.value()? {
            Token::String(s) => {
                let key_end = self.pos;
                self.ws();
                if self.peek() == Some(b'=') {
                    self.pos += 1;
                    self.ws();
                    let value = match self.value()? {
                        Token::String(s) => KdlValue::String(s),
                        Token::Other(v) => v,
                    };
                    KdlEntry::new_prop(identifier(s, start, key_end), value)
                } else {
                    self.pos = key_end;
                    KdlEntry::new(KdlValue::String(s))
                }
            }
            Token::Other(v) => KdlEntry::new(v),
        };
        entry.set_span(start..self.pos);
        Some(entry)
    }

    /// A string, an integer or a keyword, which must be followed by
    /// something that can end a value.
    fn value(&mut self) -> Option<Token> {
        let token = match self.peek()? {
            b'"' => Token::String(self.quoted()?),
            b'#' => self.hashed()?,
            b'0'..=b'9' => Token::Other(self.integer()?),
            b'+' | b'-' if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => {
                Token::Other(self.integer()?)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => Token::String(self.bare()?),
            _ => return None,
        };
        matches!(
            self.peek(),
            None | Some(b' ' | b'\t' | b'\n' | b';' | b'{' | b'}' | b'=' | b'/')
        )
        .then_some(token)
    }

    /// A bare identifier string: ASCII only, starting with a letter or `_`.
    fn bare(&mut self) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_graphic() && !b"\\/(){}[];\"#=".contains(&c))
        {
            self.pos += 1;
        }
        if self.peek().is_some_and(|c| !c.is_ascii()) {
            return None;
        }
        let s = &self.text[start..self.pos];
        (!matches!(s, "true" | "false" | "null" | "inf" | "nan")).then(|| s.to_string())
    }

    /// A decimal integer without `_`, exponent or fraction.
    fn integer(&mut self) -> Option<KdlValue> {
        let start = self.pos;
        self.pos += 1;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.text[start..self.pos]
            .parse::<i128>()
            .ok()
            .map(KdlValue::Integer)
    }

    /// `"…"` or `"""` multi-line `"""`.
    fn quoted(&mut self) -> Option<String> {
        if self.at(b"\"\"\"") {
            self.pos += 3;
            return self.multi_line(b"\"\"\"", false);
        }
        self.pos += 1;
        let mut s = String::new();
        loop {
            let rest = &self.b[self.pos..];
            let plain = rest.iter().position(|&c| {
                c == b'"' || c == b'\\' || !(c == b'\t' || (0x20..0x7f).contains(&c))
            })?;
            s.push_str(&self.text[self.pos..self.pos + plain]);
            self.pos += plain;
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(s);
                }
                b'\\' => s.push(self.escape()?),
                c if c.is_ascii() => return None, // a newline or a control character
                _ => {
                    let c = self.text[self.pos..].chars().next()?;
                    if awkward(c) {
                        return None;
                    }
                    s.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// An escape in a quoted string; whitespace escapes are left to the crate.
    fn escape(&mut self) -> Option<char> {
        let c = match self.peek_at(1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b's' => ' ',
            b'u' if self.peek_at(2) == Some(b'{') => {
                let digits = self.b[self.pos + 3..]
                    .iter()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .count();
                if !(1..=6).contains(&digits) || self.peek_at(3 + digits) != Some(b'}') {
                    return None;
                }
                let hex = &self.text[self.pos + 3..self.pos + 3 + digits];
                let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                self.pos += 4 + digits;
                return Some(c);
            }
            _ => return None,
        };
        self.pos += 2;
        Some(c)
    }

    /// A raw string (`#"…"#`, `#"""` multi-line `"""#`) or a keyword.
    fn hashed(&mut self) -> Option<Token> {
        let hashes = self.b[self.pos..]
            .iter()
            .take_while(|&&c| c == b'#')
            .count();
        let open = self.pos;
        self.pos += hashes;
        if self.at(b"\"\"\"") {
            self.pos += 3;
            let close = [b"\"\"\"".as_slice(), &self.b[open..open + hashes]].concat();
            // The crate refuses a raw string that is one quote, multi-line too.
            return self
                .multi_line(&close, true)
                .filter(|body| body != "\"")
                .map(Token::String);
        }
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let close = [b"\"".as_slice(), &self.b[open..open + hashes]].concat();
            let len = find(&self.b[self.pos..], &close)?;
            let body = &self.text[self.pos..self.pos + len];
            if body == "\"" || body.chars().any(|c| c == '\n' || awkward(c)) {
                return None;
            }
            self.pos += len + close.len();
            return Some(Token::String(body.to_string()));
        }
        if hashes != 1 {
            return None;
        }
        let value = [
            ("true", KdlValue::Bool(true)),
            ("false", KdlValue::Bool(false)),
            ("null", KdlValue::Null),
        ]
        .into_iter()
        .find(|(word, _)| self.at(word.as_bytes()))
        .map(|(word, value)| {
            self.pos += word.len();
            value
        })?;
        Some(Token::Other(value))
    }

    /// The body of a multi-line string, read after its opening quotes: a
    /// newline, lines, and `close` on a line of its own after the whitespace
    /// that every other line must begin with, which is removed.
    fn multi_line(&mut self, close: &[u8], raw: bool) -> Option<String> {
        if self.peek() != Some(b'\n') {
            return None;
        }
        self.pos += 1;
        let mut lines = Vec::new();
        let prefix = loop {
            let end = memchr(b'\n', &self.b[self.pos..]).map(|i| self.pos + i);
            let line = &self.text[self.pos..end.unwrap_or(self.b.len())];
            let body = line.trim_start_matches([' ', '\t']);
            if body.as_bytes().starts_with(close) {
                let prefix = &line[..line.len() - body.len()];
                self.pos += prefix.len() + close.len();
                break prefix;
            }
            let quotes: &[u8] = if raw { close } else { b"\"\"\"" };
            // Backslashes: escapes, and whitespace escapes that the crate reads even in raw strings.
            let escapes = if raw {
                line.trim_start_matches([' ', '\t']).starts_with('\\')
            } else {
                line.contains('\\')
            };
            if find(line.as_bytes(), quotes).is_some()
                || escapes
                || line
                    .chars()
                    .any(|c| c != '\t' && (c.is_ascii_control() || awkward(c)))
            {
                return None;
            }
            lines.push(line);
            self.pos = end? + 1;
        };
        let mut s = String::new();
        for line in lines {
            if !line.bytes().all(|c| c == b' ' || c == b'\t') {
                s.push_str(line.strip_prefix(prefix)?);
            }
            s.push('\n');
        }
        s.pop();
        Some(s)
    }
}

fn identifier(value: String, start: usize, end: usize) -> KdlIdentifier {
    let mut id = KdlIdentifier::from(value);
    id.set_span(start..end);
    id
}

/// Characters KDL gives a meaning of their own (newlines, spaces, code
/// points it forbids): the subset reader defers on any of them.
fn awkward(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{a0}'
        | '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
        | '\u{205f}' | '\u{2066}'..='\u{2069}' | '\u{3000}' | '\u{feff}')
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
