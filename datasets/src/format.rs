//! Data formats and compression codecs, and how they are told from a path.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A record format fanout reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Lines of UTF-8 text; one Utf8 column named `line`.
    Text,
    /// Comma-separated values (RFC 4180 quoting).
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC file format (also known as Feather v2).
    Arrow,
}

impl Format {
    /// Every format, in the order they are listed to users.
    pub const ALL: [Format; 5] = [Format::Text, Format::Csv, Format::Jsonl, Format::Parquet, Format::Arrow];

    /// The name used in job files.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }

    /// The list of known names, for error messages: `text, csv, ...`.
    pub fn known_names() -> String {
        Format::ALL.map(Format::name).join(", ")
    }

    /// Whether records are delimited by newlines and splits are byte ranges.
    pub fn is_line_based(self) -> bool {
        matches!(self, Format::Text | Format::Csv | Format::Jsonl)
    }

    /// The usual file extension for this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }

    /// Tells the format from a file name, looking through a compression
    /// suffix (`events.csv.gz` is csv).
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name =
            Compression::ALL.iter().filter_map(|c| c.suffix()).find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        Some(match ext {
            "txt" | "text" | "log" | "md" => Format::Text,
            "csv" | "tsv" => Format::Csv,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "parquet" | "pq" => Format::Parquet,
            "arrow" | "ipc" | "feather" => Format::Arrow,
            _ => return None,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}`, expected one of: {known}", known = Format::known_names())]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// A whole-file compression codec. A compressed file is read as one split,
/// since a byte range of it cannot be decoded on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

impl Compression {
    /// Every codec.
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    /// The file-name suffix that marks this codec.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(".gz"),
            Compression::Zstd => Some(".zst"),
        }
    }

    /// Tells the codec from a file name.
    pub fn from_path(path: &Path) -> Compression {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
        Compression::ALL
            .into_iter()
            .find(|c| c.suffix().is_some_and(|s| name.ends_with(s)))
            .unwrap_or(Compression::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_from_paths() {
        assert_eq!(Format::from_path(Path::new("a/b.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("b.CSV.gz")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("x.ndjson.zst")), Some(Format::Jsonl));
        assert_eq!(Format::from_path(Path::new("x.parquet")), Some(Format::Parquet));
        assert_eq!(Format::from_path(Path::new("x.feather")), Some(Format::Arrow));
        assert_eq!(Format::from_path(Path::new("x.bin")), None);
        assert_eq!(Format::from_path(Path::new("noext")), None);
        assert_eq!(Compression::from_path(Path::new("a.txt.gz")), Compression::Gzip);
        assert_eq!(Compression::from_path(Path::new("a.txt")), Compression::None);
    }

    #[test]
    fn unknown_format_lists_known_ones() {
        let err = "xml".parse::<Format>().unwrap_err();
        assert_eq!(err.to_string(), "unknown format `xml`, expected one of: text, csv, jsonl, parquet, arrow");
    }
}
