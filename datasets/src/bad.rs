//! Bad records: the records of an input that cannot be read, and what a
//! job does with them.
//!
//! By default ([`OnBadRecord::Fail`]) a record that cannot be read fails
//! its split, with an error naming the file, line and byte. A job may
//! instead skip such records, or set them aside as rejects, up to a limit
//! ([`MaxBad`]), as DuckDB's `ignore_errors`/`store_rejects`, Spark's
//! `DROPMALFORMED` and BigQuery's `max_bad_records` do.
//!
//! A split is read the fast way first; only a split that fails is read
//! again, record by record (`salvage.rs`), with each record decoded alone
//! to tell the good from the bad and the good ones decoded again together.
//! Clean data costs nothing more than under `Fail`.
//!
//! What a bad record is depends on the format: an invalid UTF-8 line of
//! text; a csv row with the wrong number of fields, or a value that does
//! not parse in a column the job reads; a jsonl line that is not JSON, or
//! holds a value of a type the schema cannot; a corrupt row group of
//! parquet or record batch of an Arrow file, rejected whole.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::error::{Location, Result};
use crate::listing::InputFile;

/// What a job does with a record it cannot read (`on_bad_record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum OnBadRecord {
    /// Fail the job, naming the record (the default).
    #[default]
    Fail,
    /// Leave the record out, and count it.
    Skip,
    /// Leave the record out, count it, and write it to the run's rejects
    /// file.
    Reject,
}

impl OnBadRecord {
    /// Every policy.
    pub const ALL: [OnBadRecord; 3] = [OnBadRecord::Fail, OnBadRecord::Skip, OnBadRecord::Reject];

    /// The name used in job files.
    pub fn name(self) -> &'static str {
        match self {
            OnBadRecord::Fail => "fail",
            OnBadRecord::Skip => "skip",
            OnBadRecord::Reject => "reject",
        }
    }
}

impl fmt::Display for OnBadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OnBadRecord {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OnBadRecord::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown on_bad_record `{s}`, expected one of: fail, skip, reject"))
    }
}

/// How many bad records a job tolerates (`max_bad_records`): a count, or a
/// share of the records read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxBad {
    /// At most this many.
    Count(u64),
    /// At most this fraction (0.001 for `"0.1%"`) of all records read, bad
    /// ones included; checked once the whole input is read.
    Fraction(f64),
}

impl MaxBad {
    /// Whether `bad` bad records among `total` records read (bad ones
    /// included) are past the limit.
    pub fn exceeded(self, bad: u64, total: u64) -> bool {
        match self {
            MaxBad::Count(n) => bad > n,
            MaxBad::Fraction(f) => bad as f64 > f * total as f64,
        }
    }
}

impl fmt::Display for MaxBad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxBad::Count(n) => write!(f, "{n}"),
            MaxBad::Fraction(x) => write!(f, "{}%", x * 100.0),
        }
    }
}

impl FromStr for MaxBad {
    type Err = String;

    /// `100` or `"0.1%"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("max_bad_records `{s}` must be a count (100) or a percentage (\"0.1%\")");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("max_bad_records `{s}` must be between 0% and 100%"));
                }
                Ok(MaxBad::Fraction(p / 100.0))
            }
            None => s.parse().map(MaxBad::Count).map_err(|_| bad()),
        }
    }
}

/// How text bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Encoding {
    /// UTF-8; an invalid line is a bad record.
    #[default]
    Utf8,
    /// UTF-8, with invalid sequences replaced by U+FFFD: no line is bad.
    Utf8Lossy,
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "utf-8-lossy" | "utf8-lossy" => Ok(Encoding::Utf8Lossy),
            _ => Err(format!("unknown encoding `{s}`, expected utf-8 or utf-8-lossy")),
        }
    }
}

/// What a dataset does with bad records.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BadRecords {
    /// Fail, skip or reject.
    pub on_bad: OnBadRecord,
    /// The most tolerated when skipping or rejecting (`None`: no limit).
    pub max: Option<MaxBad>,
    /// How text inputs are decoded.
    pub encoding: Encoding,
}

/// The most bytes of a bad record kept to show it.
pub const RAW_LIMIT: usize = 64 * 1024;

/// A record, or a range of records, that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// The input file.
    pub path: PathBuf,
    /// Where it starts: the 1-based line (line formats) and byte offset
    /// (of the decompressed stream for a compressed file).
    pub location: Location,
    /// Its length in bytes (in the file, for a row group or batch).
    pub len: u64,
    /// Its bytes, at most [`RAW_LIMIT`] of them (none for a row group or
    /// batch).
    pub raw: Vec<u8>,
    /// For a parquet row group or Arrow batch rejected whole: which, as
    /// `row group 3` or `batch 7`.
    pub range: Option<String>,
    /// The records it stands for: 1 for a line or row, the rows of a
    /// rejected range (when its metadata can tell them; else 1).
    pub records: u64,
    /// Why it could not be read.
    pub error: String,
}

impl BadRecord {
    /// Appends the rejects-file line of this record, read by task `task`,
    /// to `out`: a JSON object with the task, file, line, byte, length,
    /// raw text and error (and the range of a rejected row group or
    /// batch). The raw bytes are the text when they are UTF-8, else the
    /// text with each invalid byte written `\xNN` and `"raw_escaped":
    /// true` (Python's `backslashreplace`).
    pub fn write_json(&self, task: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        let text = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).expect("writing to a vector");
        let _ = write!(out, "{{\"task\":{task},\"file\":");
        text(out, &self.path.display().to_string());
        if let Some(l) = self.location.line {
            let _ = write!(out, ",\"line\":{l}");
        }
        let _ = write!(out, ",\"byte\":{},\"len\":{}", self.location.byte, self.len);
        if let Some(r) = &self.range {
            out.extend_from_slice(b",\"range\":");
            text(out, r);
            let _ = write!(out, ",\"records\":{}", self.records);
        } else {
            let (raw, escaped) = escape(&self.raw);
            out.extend_from_slice(b",\"raw\":");
            text(out, &raw);
            if escaped {
                out.extend_from_slice(b",\"raw_escaped\":true");
            }
            if self.raw.len() as u64 != self.len {
                out.extend_from_slice(b",\"raw_truncated\":true");
            }
        }
        out.extend_from_slice(b",\"error\":");
        text(out, &self.error);
        out.extend_from_slice(b"}\n");
    }
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.range {
            Some(r) => write!(f, "{}: {r} (byte {}): {}", self.path.display(), self.location.byte, self.error),
            None => write!(f, "{}: {}: {}", self.path.display(), self.location, self.error),
        }
    }
}

/// `bytes` as text, with invalid UTF-8 bytes written `\xNN`; and whether
/// any were.
fn escape(bytes: &[u8]) -> (String, bool) {
    let mut out = String::with_capacity(bytes.len());
    let mut escaped = false;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
            escaped = true;
        }
    }
    (out, escaped)
}

/// The line numbers of byte offsets in files, found by counting newlines
/// from the nearest offset counted before: a file's bad records, reported
/// by many splits, cost one pass over it in all rather than one each.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineIndex {
    /// Per file: known (offset, 1-based line at it) pairs.
    known: Arc<Mutex<std::collections::HashMap<PathBuf, std::collections::BTreeMap<u64, u64>>>>,
}

/// A checkpoint is kept every this many bytes counted.
const CHECKPOINT: u64 = 16 << 20;

impl LineIndex {
    /// The 1-based line of `file` at byte `offset`.
    pub(crate) fn line_at(&self, file: &InputFile, offset: u64) -> std::io::Result<u64> {
        let path = file.path.as_path();
        let (mut at, mut line) = {
            let known = self.known.lock().expect("not poisoned");
            known.get(path).and_then(|k| k.range(..=offset).next_back().map(|(&o, &l)| (o, l))).unwrap_or((0, 1))
        };
        if at == offset {
            return Ok(line);
        }
        let mut file = crate::blob::Blob::open(file).map_err(std::io::Error::other)?.range(at, offset - at);
        let mut buf = vec![0; 256 * 1024];
        let mut found = Vec::new();
        let mut next = at + CHECKPOINT;
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            line += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            at += n as u64;
            if at >= next {
                found.push((at, line));
                next = at + CHECKPOINT;
            }
        }
        found.push((at, line));
        let mut known = self.known.lock().expect("not poisoned");
        known.entry(path.to_path_buf()).or_default().extend(found);
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_apply() {
        assert_eq!("100".parse::<MaxBad>(), Ok(MaxBad::Count(100)));
        assert_eq!("0.1%".parse::<MaxBad>(), Ok(MaxBad::Fraction(0.001)));
        assert!("x".parse::<MaxBad>().unwrap_err().contains("count (100) or a percentage"));
        assert!("101%".parse::<MaxBad>().is_err());
        assert!(!MaxBad::Count(2).exceeded(2, 10));
        assert!(MaxBad::Count(2).exceeded(3, 10));
        assert!(!MaxBad::Fraction(0.1).exceeded(1, 10));
        assert!(MaxBad::Fraction(0.1).exceeded(2, 10));
        assert_eq!(MaxBad::Fraction(0.001).to_string(), "0.1%");
        assert_eq!("skip".parse::<OnBadRecord>(), Ok(OnBadRecord::Skip));
        assert!("drop".parse::<OnBadRecord>().unwrap_err().contains("fail, skip, reject"));
        assert_eq!("UTF-8-lossy".parse::<Encoding>(), Ok(Encoding::Utf8Lossy));
    }

    #[test]
    fn rejects_lines_escape_invalid_bytes() {
        let bad = BadRecord {
            path: "in.txt".into(),
            location: Location { line: Some(3), byte: 10 },
            len: 6,
            raw: b"caf\xe9\\\n".to_vec(),
            range: None,
            records: 1,
            error: "invalid UTF-8".into(),
        };
        let mut out = Vec::new();
        bad.write_json(2, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["raw"], "caf\\xe9\\\n");
        assert_eq!(v["raw_escaped"], true);
        assert_eq!((v["task"].as_u64(), v["line"].as_u64(), v["byte"].as_u64()), (Some(2), Some(3), Some(10)));
        assert!(v.get("raw_truncated").is_none());
    }

    #[test]
    fn lines_are_counted_from_the_nearest_known_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"a\nb\nc\nd\n").unwrap();
        let index = LineIndex::default();
        let p = crate::InputFile::stat(&p).unwrap();
        assert_eq!(index.line_at(&p, 4).unwrap(), 3);
        assert_eq!(index.line_at(&p, 6).unwrap(), 4);
        assert_eq!(index.line_at(&p, 0).unwrap(), 1);
        assert_eq!(index.line_at(&p, 2).unwrap(), 2);
    }
}
