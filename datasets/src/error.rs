//! Typed errors for listing, splitting, reading, writing and generating data.

use std::fmt;
use std::path::PathBuf;

/// Where in an input file something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number, when it is known (uncompressed text formats).
    pub line: Option<u64>,
    /// Byte offset from the start of the file (of the decompressed stream for
    /// compressed inputs).
    pub byte: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line} (byte {})", self.byte),
            None => write!(f, "byte {}", self.byte),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record that cannot be parsed.
    #[error("{}: {location}: {message}", path.display())]
    Malformed {
        /// The input file.
        path: PathBuf,
        /// Where the bad record starts.
        location: Location,
        /// What is wrong with it.
        message: String,
    },
    /// An input path, directory or glob that matches no file.
    #[error("input `{pattern}` matches no file")]
    NoMatch {
        /// The path or pattern as the user wrote it.
        pattern: String,
    },
    /// A glob pattern that does not parse.
    #[error("invalid glob `{pattern}`: {message}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// The parser's complaint.
        message: String,
    },
    /// A file whose schema or layout does not fit the dataset (a different
    /// header, an unreadable footer, a format that cannot be told).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A bad option or argument, named in the message.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A problem with the file at `path`.
    pub fn invalid(path: impl Into<PathBuf>, message: impl fmt::Display) -> Self {
        Error::Invalid { path: path.into(), message: message.to_string() }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
