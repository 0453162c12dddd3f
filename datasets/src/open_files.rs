//! Reading files: the handles and the read-ahead window a worker keeps
//! between splits ([`OpenFiles`]), readers of a byte range of a file or of
//! the window, and a split's bytes as they are in its file (a slice of an
//! uncompressed file, or a whole file decompressed).

use std::io::{BufReader, Read};
use std::sync::Arc;

use arrow_schema::SchemaRef;

use crate::blob::Blob;
use crate::csv::CsvOptions;
use crate::error::{Error, Result};
use crate::format::Compression;
use crate::listing::InputFile;
use crate::split::{Split, SplitRange};

/// The decompressed bytes of a whole file.
pub(crate) fn open_whole(file: &InputFile) -> Result<Box<dyn Read + Send>> {
    // Its reader may stop after a few records: an object is read in
    // growing windows, never asked for whole.
    decompressed(file, Blob::open(file)?.growing(0, file.size))
}

/// File handles kept between reads: the last file a worker read, and a
/// window of it read ahead, so that many tiny splits of one file (a
/// worker gets neighbouring splits together) cost one read, not one each.
#[derive(Debug, Default)]
pub struct OpenFiles {
    last: Option<(std::path::PathBuf, Blob)>,
    /// The end of the splits of a file about to be read one after another
    /// (see [`OpenFiles::expect`]): an object's read-ahead stops there.
    span: Option<(std::path::PathBuf, u64)>,
    /// Bytes `[start, start + len)` of the last file.
    window: Option<(u64, Arc<Vec<u8>>)>,
    /// The csv decoder of the last small csv split, and what it decodes.
    pub(crate) csv: Option<KeptCsv>,
}

/// A csv decoder kept between small splits, with the schema (compared by
/// address: held here, it cannot be another's), projection, dialect and
/// batch size it was built for.
pub(crate) struct KeptCsv {
    pub(crate) schema: SchemaRef,
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) csv: CsvOptions,
    pub(crate) batch_rows: usize,
    pub(crate) decoder: arrow_csv::reader::Decoder,
}

impl std::fmt::Debug for KeptCsv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptCsv")
            .field("projection", &self.projection)
            .field("batch_rows", &self.batch_rows)
            .finish_non_exhaustive()
    }
}

/// Bytes read ahead for small splits.
pub(crate) const WINDOW: u64 = 64 * 1024;

/// Bytes read ahead for small splits of an object: one GET serves many.
const REMOTE_WINDOW: u64 = 1 << 20;

impl OpenFiles {
    /// Says which splits are read next (a worker's group of tasks): an
    /// object's read-ahead for a small split reads up to the end of those
    /// that follow it in the same file, and no further, so that workers
    /// reading neighbouring groups do not read each other's bytes.
    pub fn expect<'a>(&mut self, splits: impl IntoIterator<Item = &'a Split>) {
        let mut splits = splits.into_iter();
        self.span = None;
        let Some(first) = splits.next() else { return };
        let end = |s: &Split| match s.range {
            SplitRange::Bytes { offset, len } => Some(offset + len),
            _ => None,
        };
        let Some(mut last) = end(first) else { return };
        for s in splits {
            match end(s) {
                Some(e) if s.file.path == first.file.path => last = last.max(e),
                _ => break,
            }
        }
        self.span = Some((first.file.path.clone(), last));
    }

    /// The bytes of `range` of `file`, through a kept handle where one
    /// fits.
    pub(crate) fn open(&mut self, file: &InputFile, range: &SplitRange) -> Result<Box<dyn Read + Send>> {
        let SplitRange::Bytes { offset, len } = *range else {
            return open_range(file, range);
        };
        // An object's window is larger: a GET costs more than a read.
        let window = if file.is_remote() { REMOTE_WINDOW } else { WINDOW };
        if len > window / 4 {
            return Ok(self.handle(file)?.range(offset, len));
        }
        let (bytes, at, end) = self.window(file, offset, len)?;
        Ok(Box::new(WindowReader { bytes, at, end }))
    }

    /// The kept handle of `file`, opened if it is not the last one.
    fn handle(&mut self, file: &InputFile) -> Result<Blob> {
        match &self.last {
            Some((path, handle)) if *path == file.path => Ok(handle.clone()),
            _ => {
                let handle = Blob::open(file)?;
                self.last = Some((file.path.clone(), handle.clone()));
                self.window = None;
                Ok(handle)
            }
        }
    }

    /// The read-ahead window holding bytes `[offset, offset + len)` of
    /// `file` (a small split), read if it does not hold them yet, and where
    /// they are in it.
    pub(crate) fn window(&mut self, file: &InputFile, offset: u64, len: u64) -> Result<(Arc<Vec<u8>>, usize, usize)> {
        let handle = self.handle(file)?;
        let covered = |w: &(u64, Arc<Vec<u8>>)| w.0 <= offset && offset + len <= w.0 + w.1.len() as u64;
        if !self.window.as_ref().is_some_and(covered) {
            // Reuse the buffer unless a reader still holds it.
            let mut buf = match self.window.take() {
                Some((_, b)) => Arc::try_unwrap(b).unwrap_or_default(),
                None => Vec::new(),
            };
            let ahead = if handle.is_remote() { REMOTE_WINDOW } else { WINDOW };
            let mut end = file.size.max(offset + len).min(offset + ahead).max(offset + len);
            if handle.is_remote()
                && let Some((path, span_end)) = &self.span
                && *path == file.path
            {
                end = end.min(*span_end).max(offset + len);
            }
            if handle.is_remote() {
                // Kept bytes where a scan read them, else one GET.
                buf = handle.read_ahead(offset, len, end - offset - len).map_err(|e| Error::io(&file.path, e))?;
            } else {
                buf.resize((end - offset) as usize, 0);
                let n = handle.read_at(&mut buf, offset).map_err(|e| Error::io(&file.path, e))?;
                buf.truncate(n);
            }
            self.window = Some((offset, Arc::new(buf)));
        }
        let (start, bytes) = self.window.as_ref().expect("just read");
        let from = (offset - start) as usize;
        let to = (from + len as usize).min(bytes.len());
        Ok((bytes.clone(), from, to))
    }
}

/// Reads a slice of a read-ahead window.
pub(crate) struct WindowReader {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) at: usize,
    pub(crate) end: usize,
}

impl Read for WindowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.end - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The bytes of `split` as they are in its file — a byte range, or the
/// decompressed stream of a whole compressed file (with a csv header, if
/// the file has one) — for a program that takes the data as it is, as GNU
/// parallel's `--pipepart` passes it.
pub fn split_bytes(split: &Split) -> Result<Box<dyn Read + Send>> {
    open_range(&split.file, &split.range)
}

/// The bytes of a split's range: a slice of an uncompressed file or the
/// decompressed stream of a whole file.
pub(crate) fn open_range(file: &InputFile, range: &SplitRange) -> Result<Box<dyn Read + Send>> {
    let blob = Blob::open(file)?;
    match range {
        SplitRange::Bytes { offset, len } => Ok(blob.range(*offset, *len)),
        _ => decompressed(file, blob.range(0, file.size)),
    }
}

/// The decompressed stream of `file`'s bytes `f`.
fn decompressed(file: &InputFile, f: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
    let with_path = |e: std::io::Error| Error::io(&file.path, e);
    Ok(match file.compression {
        Compression::None => f,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(f).map_err(with_path)?),
    })
}
