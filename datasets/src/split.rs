//! Splits: small descriptors of record-aligned chunks of input.
//!
//! A split names a file and a range of it: a byte range for the line-based
//! formats (text, csv, jsonl), a row-group range for parquet, a record-batch
//! range for Arrow IPC, or the whole file for a compressed input (a byte range
//! of a compressed stream cannot be decoded on its own). Byte ranges start and
//! end on record boundaries, so a worker that reads `[offset, offset + len)`
//! gets whole records, each exactly once, whatever the chunk size.
//!
//! Splits are made lazily, one file at a time: the boundaries of text and
//! jsonl files are found by reading a few bytes around each target offset;
//! csv boundaries need the quote state, so a csv file is scanned once,
//! sequentially, with a fixed buffer. Millions of splits cost no memory up
//! front.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::listing::InputFile;

/// One record-aligned chunk of input: the unit of work of a map task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Position of this split in the dataset (0-based, in listing order).
    pub index: u64,
    /// The file this split reads.
    pub file: Arc<InputFile>,
    /// Which part of the file.
    pub range: SplitRange,
}

/// The part of a file a split covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitRange {
    /// Bytes `[offset, offset + len)` of an uncompressed file; both ends are
    /// record boundaries, and a csv header is never inside.
    Bytes {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
    /// The whole decompressed stream of a compressed file (including a csv
    /// header, which the reader skips).
    Whole,
    /// Row groups `[start, end)` of a parquet file.
    RowGroups {
        /// First row group.
        start: usize,
        /// One past the last row group.
        end: usize,
        /// Their compressed size in bytes.
        bytes: u64,
    },
    /// Record batches `[start, end)` of an Arrow IPC file.
    Batches {
        /// First batch.
        start: usize,
        /// One past the last batch.
        end: usize,
        /// Their size in the file, in bytes.
        bytes: u64,
    },
}

impl Split {
    /// The number of input bytes this split covers (compressed bytes for a
    /// compressed file).
    pub fn bytes(&self) -> u64 {
        match self.range {
            SplitRange::Bytes { len, .. } => len,
            SplitRange::Whole => self.file.size,
            SplitRange::RowGroups { bytes, .. } | SplitRange::Batches { bytes, .. } => bytes,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.file.path.display();
        match &self.range {
            SplitRange::Bytes { offset, len } => {
                write!(f, "{path} bytes {offset}..{}", offset + len)
            }
            SplitRange::Whole => write!(f, "{path} (whole file)"),
            SplitRange::RowGroups { start, end, .. } => {
                write!(f, "{path} row groups {start}..{end}")
            }
            SplitRange::Batches { start, end, .. } => write!(f, "{path} batches {start}..{end}"),
        }
    }
}

/// A window of a file, refilled on demand: the splitters' only buffer.
pub(crate) struct Window {
    blob: Blob,
    path: Arc<Path>,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// Valid bytes in `buf`.
    filled: usize,
    /// Bytes read by a refill at a new place.
    first: usize,
    /// Bytes the last refill asked for.
    last: usize,
    /// Keep what an object's refills read (see [`crate::kept`]): a scan
    /// whose bytes the splits read again.
    keep: bool,
}

impl Window {
    /// Opens `file` with a window of `capacity` bytes. For an object each
    /// refill is a request: a refill that goes on from the last one reads
    /// four times as much as it did, up to at least 1 MiB, while one at a
    /// new place (a boundary probe, which mostly needs a few bytes) reads
    /// 64 KiB at most.
    pub(crate) fn open(file: &InputFile, capacity: usize) -> Result<Window> {
        Window::open_probing(file, capacity, 64 << 10)
    }

    /// [`Window::open`] whose reads of an object at a new place read
    /// `probe` bytes at most.
    pub(crate) fn open_probing(file: &InputFile, capacity: usize, probe: usize) -> Result<Window> {
        let blob = Blob::open(file)?;
        let (capacity, first) = match blob.is_remote() {
            true => (capacity.max(1 << 20), capacity.clamp(1, probe.max(1))),
            false => (capacity.max(1), capacity.max(1)),
        };
        let path = file.path.as_path().into();
        Ok(Window { blob, path, buf: vec![0; capacity], start: 0, filled: 0, first, last: first, keep: false })
    }

    /// Keeps what refills read, for the splits to read again.
    pub(crate) fn keeping(mut self) -> Window {
        self.keep = true;
        self
    }

    /// The bytes available from file offset `at` (empty at end of file).
    pub(crate) fn at(&mut self, at: u64) -> Result<&[u8]> {
        let end = self.start + self.filled as u64;
        if at < self.start || at >= end {
            let want = if at == end && self.filled > 0 { (self.last * 4).min(self.buf.len()) } else { self.first };
            self.start = at;
            self.last = want;
            let buf = &mut self.buf[..want];
            let read = if self.keep { self.blob.read_keeping(buf, at) } else { self.blob.read_at(buf, at) };
            self.filled = read.map_err(|e| Error::io(&*self.path, e))?;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..self.filled])
    }
}

/// Finds record boundaries for a [`RangeSplitter`].
pub(crate) trait Boundaries {
    /// The end of the record holding byte `target - 1`, given that `from`
    /// (< `target`) is a record boundary and the data ends at `len`.
    fn end_of_record(&mut self, from: u64, target: u64, len: u64) -> Result<u64>;
}

/// Splits of a [`ChunkSize`] range per sweep up and down it.
const SWEEP: u64 = 32;

/// Splits' target sizes: one size, or sizes spread over a range.
///
/// A range (`chunk_size = "64KiB..4MiB"` in a job) is for a calibration
/// run: its splits' sizes sweep up and down the range in even steps on a
/// log scale, and one run then shows how each step's time and output grow
/// with its input — measured in one run, not across runs that the
/// machine's speed sets apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize {
    /// The smallest target size (the only one, when it is not a range).
    pub min: u64,
    /// The largest target size (`min` when it is not a range).
    pub max: u64,
}

impl ChunkSize {
    /// Splits of one target size.
    pub fn fixed(size: u64) -> ChunkSize {
        ChunkSize { min: size.max(1), max: size.max(1) }
    }

    /// Whether the sizes spread over a range.
    pub fn is_range(&self) -> bool {
        self.max > self.min
    }

    /// The target size of a file's `i`-th split.
    pub fn nth(&self, i: u64) -> u64 {
        if !self.is_range() {
            return self.min.max(1);
        }
        // Up and down the range in 32 splits, in even steps on a log
        // scale: a split follows one of about its size, as in a run of one
        // size (a small split after a large one finds the caches cold).
        let phase = (i % SWEEP) as f64 / SWEEP as f64;
        let u = 1.0 - (2.0 * phase - 1.0).abs();
        let (lo, hi) = (self.min.max(1) as f64, self.max as f64);
        ((lo * (hi / lo).powf(u)).round() as u64).clamp(self.min.max(1), self.max)
    }
}

/// Splits bytes `[start, len)` of a file into record-aligned ranges of
/// about the target sizes: each range ends at the end of the record that
/// holds its target's last byte, so no range is empty and none cuts a
/// record.
pub(crate) struct RangeSplitter<B> {
    bounds: B,
    pos: u64,
    len: u64,
    chunks: ChunkSize,
    /// Splits made so far.
    made: u64,
}

impl<B: Boundaries> RangeSplitter<B> {
    /// Splits `[start, len)` with `bounds`.
    pub(crate) fn new(bounds: B, start: u64, len: u64, chunks: ChunkSize) -> Self {
        RangeSplitter { bounds, pos: start, len, chunks, made: 0 }
    }
}

impl<B: Boundaries> Iterator for RangeSplitter<B> {
    type Item = Result<(u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.len {
            return None;
        }
        let target = self.pos.saturating_add(self.chunks.nth(self.made));
        self.made += 1;
        let end = if target >= self.len { Ok(self.len) } else { self.bounds.end_of_record(self.pos, target, self.len) };
        Some(end.map(|end| {
            let start = std::mem::replace(&mut self.pos, end);
            (start, end - start)
        }))
    }
}

/// Newline-delimited records (text, jsonl): a record ends at the first
/// newline at or after its last byte, found by reading a few bytes there.
pub(crate) struct Lines(Window);

impl Lines {
    /// Splits `file`.
    pub(crate) fn splitter(file: &InputFile, chunks: ChunkSize) -> Result<RangeSplitter<Lines>> {
        // A probe of an object reads a 32nd of a split (4 to 64 KiB): a
        // line is found in a few bytes, and the probe's bytes are read
        // again by the split (a longer line takes more reads).
        let probe = (chunks.min / 32).clamp(4 << 10, 64 << 10) as usize;
        Ok(RangeSplitter::new(Lines(Window::open_probing(file, 64 * 1024, probe)?), 0, file.size, chunks))
    }
}

impl Boundaries for Lines {
    fn end_of_record(&mut self, _from: u64, target: u64, len: u64) -> Result<u64> {
        let mut at = target - 1;
        while at < len {
            let bytes = self.0.at(at)?;
            if bytes.is_empty() {
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', bytes) {
                return Ok(at + i as u64 + 1);
            }
            at += bytes.len() as u64;
        }
        Ok(len)
    }
}

/// Groups consecutive units (row groups, record batches) of the given sizes
/// into ranges of about the target sizes.
pub(crate) fn group_units(sizes: Vec<u64>, chunks: ChunkSize) -> impl Iterator<Item = (usize, usize, u64)> + Send {
    let mut start = 0;
    let mut made = 0;
    std::iter::from_fn(move || {
        if start >= sizes.len() {
            return None;
        }
        let chunk = chunks.nth(made);
        made += 1;
        let mut end = start;
        let mut bytes = 0;
        while end < sizes.len() && (end == start || bytes + sizes[end] <= chunk) {
            bytes += sizes[end];
            end += 1;
        }
        let range = (start, end, bytes);
        start = end;
        Some(range)
    })
}

/// Counts the lines before byte `offset` of `file`: the 1-based line number
/// of the byte at `offset`. Used only to name the location of an error.
pub(crate) fn line_at(file: &InputFile, offset: u64) -> Option<u64> {
    let mut file = Blob::open(file).ok()?.range(0, offset);
    let mut buf = vec![0; 256 * 1024];
    let mut lines = 1;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            return Some(lines);
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(content: &[u8], chunk: u64) -> Vec<(u64, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        std::fs::write(&p, content).unwrap();
        Lines::splitter(&InputFile::stat(&p).unwrap(), ChunkSize::fixed(chunk)).unwrap().collect::<Result<_>>().unwrap()
    }

    #[test]
    fn line_splits_end_after_newlines() {
        assert_eq!(ranges(b"", 4), []);
        assert_eq!(ranges(b"ab\ncd\nef", 1), [(0, 3), (3, 3), (6, 2)]);
        assert_eq!(ranges(b"ab\ncd\nef\n", 3), [(0, 3), (3, 3), (6, 3)]);
        assert_eq!(ranges(b"ab\ncd\nef\n", 4), [(0, 6), (6, 3)]);
        assert_eq!(ranges(b"abcdef\n", 2), [(0, 7)]);
        assert_eq!(ranges(b"a\n\n\nb", 100), [(0, 5)]);
    }

    #[test]
    fn units_group_up_to_the_chunk() {
        let g: Vec<_> = group_units(vec![5, 5, 5, 20, 1], ChunkSize::fixed(10)).collect();
        assert_eq!(g, [(0, 2, 10), (2, 3, 5), (3, 4, 20), (4, 5, 1)]);
        assert_eq!(group_units(vec![], ChunkSize::fixed(10)).count(), 0);
    }
}
