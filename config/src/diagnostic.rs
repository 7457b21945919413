//! Located problems and the error type that carries them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::keypath::KeyPath;

/// One problem, located.
///
/// Problems found in the file carry a 1-based line and column; problems with a value that came
/// from the environment carry neither, and name the variable in the message instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key path, e.g. `stage[1].outputs`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}")?,
            (Some(line), None) => write!(f, ":{line}")?,
            _ => {}
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_invalid(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The located problems; empty for [`ConfigError::Read`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

fn render_invalid(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let count = diagnostics.len();
    let noun = if count == 1 { "error" } else { "errors" };
    let mut out = format!("{}: {count} {noun}", path.display());
    for diagnostic in diagnostics {
        out.push('\n');
        out.push_str(&diagnostic.to_string());
    }
    out
}

/// Where a value came from: a span of the file (named by its key path) or an environment
/// variable. Values keep their origin so that a problem found later still points at the right
/// place.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    File { span: Range<usize>, key: KeyPath },
    Env(&'static str),
}

/// Collects diagnostics for one file.
pub(super) struct Report<'a> {
    file: &'a Path,
    lines: LineIndex<'a>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &'a Path, source: &'a str) -> Self {
        Self {
            file,
            lines: LineIndex::new(source),
            diagnostics: Vec::new(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        self.lines.position(offset)
    }

    pub(super) fn at(
        &mut self,
        span: &Range<usize>,
        key: Option<&KeyPath>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.lines.position(span.start);
        self.push(
            Some((line, column)),
            key.map(ToString::to_string),
            message.into(),
        );
    }

    pub(super) fn env(&mut self, var: &str, message: impl fmt::Display) {
        self.push(None, None, format!("environment variable {var}: {message}"));
    }

    /// A problem with the file as a whole rather than any one key.
    pub(super) fn general(&mut self, message: impl Into<String>) {
        self.push(None, None, message.into());
    }

    pub(super) fn origin(&mut self, origin: &Origin, message: impl Into<String>) {
        match origin {
            Origin::File { span, key } => self.at(span, Some(key), message),
            Origin::Env(var) => self.env(var, message.into()),
        }
    }

    pub(super) fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    pub(super) fn into_error(self) -> ConfigError {
        let mut diagnostics = self.diagnostics;
        // Problems are found item by item and check by check; users read them top to bottom.
        // The sort is stable, so problems at one position keep the order they were found in,
        // and problems without a position (environment, whole file) come first.
        diagnostics.sort_by_key(|d| (d.line.unwrap_or(0), d.column.unwrap_or(0)));
        ConfigError::Invalid {
            path: self.file.to_path_buf(),
            diagnostics,
        }
    }

    fn push(&mut self, position: Option<(usize, usize)>, key: Option<String>, message: String) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_path_buf(),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            key,
            message,
        });
    }
}

/// Translates byte offsets into line and column numbers.
struct LineIndex<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            source,
            line_starts,
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        // Columns count characters, as editors do; a span that does not fall on a character
        // boundary (it should always) degrades to a byte count rather than a panic.
        let column = self
            .source
            .get(start..offset)
            .map_or(offset - start, |text| text.chars().count());
        (line + 1, column + 1)
    }
}

/// `value` if it is within `min..=max`; otherwise reports where it is and
/// what the range is.
pub(super) fn in_range(
    value: &Spanned<i64>,
    min: i64,
    max: i64,
    path: &KeyPath,
    report: &mut Report<'_>,
) -> Option<i64> {
    let v = *value.get_ref();
    if (min..=max).contains(&v) {
        Some(v)
    } else {
        let name = path.last_key().unwrap_or("value");
        report.at(
            &value.span(),
            Some(path),
            format!("{name} must be between {min} and {max}, got {v}"),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let index = LineIndex::new("a = 1\né = 'x'\n");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(4), (1, 5));
        assert_eq!(index.position(6), (2, 1));
        // `=` follows the two-byte `é` and a space.
        assert_eq!(index.position(9), (2, 3));
        assert_eq!(index.position(1000), (3, 1));
        assert_eq!(LineIndex::new("").position(5), (1, 1));
    }

    #[test]
    fn display_formats() {
        let located = Diagnostic {
            file: "p.toml".into(),
            line: Some(3),
            column: Some(7),
            key: Some("stage[0].name".into()),
            message: "bad".into(),
        };
        assert_eq!(located.to_string(), "p.toml:3:7: stage[0].name: bad");
        let unlocated = Diagnostic {
            line: None,
            column: None,
            key: None,
            ..located
        };
        assert_eq!(unlocated.to_string(), "p.toml: bad");
    }
}
