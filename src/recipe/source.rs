//! Recipe files as loaded: their text, kept for diagnostics, and locations into them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

/// Index of a loaded file in [`Files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A place in a recipe file: what diagnostics point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: FileId,
    pub span: SourceSpan,
}

impl Loc {
    pub fn new(file: FileId, span: SourceSpan) -> Self {
        Loc { file, span }
    }

    /// A location `len` bytes long, `offset` bytes into this one.
    pub fn sub(self, offset: usize, len: usize) -> Loc {
        Loc::new(
            self.file,
            SourceSpan::from((self.span.offset() + offset, len)),
        )
    }
}

/// A value together with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Spanned<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Spanned { value, loc }
    }
}

/// One loaded recipe file.
#[derive(Debug)]
pub struct File {
    /// The path as canonicalised when loading: imports are deduplicated by it.
    pub path: PathBuf,
    /// The path as the user or the importing file named it, for messages.
    pub display: String,
    pub text: Arc<String>,
}

/// Every file loaded for one evaluation.
#[derive(Debug, Default)]
pub struct Files {
    files: Vec<File>,
}

impl Files {
    pub fn add(&mut self, path: PathBuf, display: String, text: String) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.files.push(File {
            path,
            display,
            text: Arc::new(text),
        });
        id
    }

    pub fn get(&self, id: FileId) -> &File {
        &self.files[id.0 as usize]
    }

    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| FileId(i as u32))
    }

    pub fn named_source(&self, id: FileId) -> NamedSource<Arc<String>> {
        let f = self.get(id);
        NamedSource::new(f.display.clone(), f.text.clone())
    }

    /// 1-based line and column of a byte offset, as editors count them.
    pub fn line_col(&self, loc: Loc) -> (usize, usize) {
        let text = &self.get(loc.file).text;
        let offset = loc.span.offset().min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before, |i| &before[i + 1..])
            .chars()
            .count()
            + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
