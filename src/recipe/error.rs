//! Recipe errors: what went wrong and where, rendered as miette diagnostics.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

use super::source::{Files, Loc};

/// A mistake in a recipe, with the places it concerns. Built while parsing and
/// evaluating; [`RecipeError::render`] attaches the file texts.
#[derive(Debug, Clone)]
pub struct RecipeError {
    pub message: String,
    /// Labelled places; the first is where the error is.
    pub labels: Vec<(Loc, String)>,
    pub help: Option<String>,
}

impl RecipeError {
    pub fn new(message: impl Into<String>) -> Self {
        RecipeError {
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn at(loc: Loc, message: impl Into<String>, label: impl Into<String>) -> Self {
        RecipeError::new(message).label(loc, label)
    }

    pub fn label(mut self, loc: Loc, label: impl Into<String>) -> Self {
        self.labels.push((loc, label.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The diagnostic to show: labels in the primary file are drawn on it, labels
    /// in other files become related diagnostics of their own.
    pub fn render(&self, files: &Files) -> Report {
        let location = self.labels.first().map(|(loc, _)| {
            let (line, col) = files.line_col(*loc);
            Location {
                file: files.get(loc.file).display.clone(),
                line,
                col,
            }
        });
        let mut groups: Vec<(Loc, Vec<LabeledSpan>)> = Vec::new();
        for (loc, text) in &self.labels {
            let span = LabeledSpan::new_with_span(Some(text.clone()), loc.span);
            match groups.iter_mut().find(|(l, _)| l.file == loc.file) {
                Some((_, spans)) => spans.push(span),
                None => groups.push((*loc, vec![span])),
            }
        }
        let mut groups = groups.into_iter();
        let (source, labels) = match groups.next() {
            Some((loc, spans)) => (Some(files.named_source(loc.file)), spans),
            None => (None, Vec::new()),
        };
        let related = groups
            .map(|(loc, spans)| Report {
                message: format!("... and in {}", files.get(loc.file).display),
                source: Some(files.named_source(loc.file)),
                labels: spans,
                help: None,
                related: Vec::new(),
                location: None,
            })
            .collect();
        Report {
            message: self.message.clone(),
            source,
            labels,
            help: self.help.clone(),
            related,
            location,
        }
    }
}

/// File, 1-based line and column of an error's primary place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A recipe error ready to print.
#[derive(Debug)]
pub struct Report {
    message: String,
    source: Option<NamedSource<Arc<String>>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
    related: Vec<Report>,
    location: Option<Location>,
}

impl Report {
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    pub fn label_texts(&self) -> impl Iterator<Item = &str> {
        self.labels
            .iter()
            .chain(self.related.iter().flat_map(|r| r.labels.iter()))
            .filter_map(|l| l.label())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.location
            .as_ref()
            .map(|l| Box::new(l) as Box<dyn fmt::Display>)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|r| r as &dyn Diagnostic)))
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 2).max(1))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(
            did_you_mean("opensl", ["openssl", "libnl"]),
            Some("openssl")
        );
        assert_eq!(did_you_mean("scrpt", ["script", "source"]), Some("script"));
        assert_eq!(did_you_mean("zzz", ["openssl", "libnl"]), None);
    }
}
