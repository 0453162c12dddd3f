//! An input file's bytes, wherever they are: a local file read with
//! positional reads, or an object read with ranged GETs. Every reader in
//! this crate — the splitters' windows, the read-ahead of small splits, the
//! streams of large ones, Parquet footers and row groups, Arrow IPC blocks
//! — reads through a [`Blob`], so an `s3://` input is split and read by
//! range exactly as a local file is, never downloaded whole (except a
//! compressed file, which is one split and one streamed GET).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::listing::InputFile;
use crate::store::{Object, block_on, io_error};

/// An open input file.
#[derive(Clone, Debug)]
pub(crate) enum Blob {
    /// A local file.
    Local(Arc<File>),
    /// An object, of the given size.
    Object(Arc<Object>, u64),
}

impl Blob {
    /// Opens `file`.
    pub(crate) fn open(file: &InputFile) -> Result<Blob> {
        match &file.object {
            Some(o) => Ok(Blob::Object(Arc::new(o.clone()), file.size)),
            None => Ok(Blob::Local(Arc::new(File::open(&file.path).map_err(|e| Error::io(&file.path, e))?))),
        }
    }

    /// Whether reads go over the network (and should be few and large).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Blob::Object(..))
    }

    /// Reads into all of `buf` from `offset`, short only at the end.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self {
            Blob::Local(file) => read_full_at(file, buf, offset),
            Blob::Object(o, size) => {
                let end = (offset + buf.len() as u64).min(*size).max(offset);
                if end == offset {
                    return Ok(0);
                }
                let bytes = block_on(o.store.get_range(&o.key, offset..end)).map_err(io_error)?;
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                o.requests.read(n);
                Ok(n)
            }
        }
    }

    /// Reads into all of `buf` from `offset` as [`Blob::read_at`] does,
    /// keeping what an object's read brought (see [`crate::kept`]): for a
    /// scan whose bytes are read again later.
    pub(crate) fn read_keeping(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self {
            Blob::Local(_) => self.read_at(buf, offset),
            Blob::Object(o, size) => {
                let end = (offset + buf.len() as u64).min(*size).max(offset);
                if end == offset {
                    return Ok(0);
                }
                let bytes = block_on(o.store.get_range(&o.key, offset..end)).map_err(io_error)?;
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                o.requests.read(n);
                o.kept.keep(o.id(), offset, bytes);
                Ok(n)
            }
        }
    }

    /// Bytes `[offset, offset + len)` and up to `ahead` bytes after them
    /// (short only at the end): kept bytes of an object where they are
    /// there, else one read.
    pub(crate) fn read_ahead(&self, offset: u64, len: u64, ahead: u64) -> std::io::Result<Vec<u8>> {
        if let Blob::Object(o, _) = self
            && let Some(kept) = o.kept.take(&o.id(), offset, len, ahead)
        {
            return Ok(kept.to_vec());
        }
        let mut buf = vec![0; (len + ahead) as usize];
        let n = self.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Bytes `[offset, offset + len)` as a stream: positional reads of a
    /// local file, or one streamed GET of the range (none where the
    /// range's bytes are kept: see [`crate::kept`]).
    pub(crate) fn range(&self, offset: u64, len: u64) -> Box<dyn Read + Send> {
        match self {
            Blob::Local(file) => Box::new(RangeReader { file: file.clone(), at: offset, end: offset + len }),
            Blob::Object(o, size) => {
                let end = (offset + len).min(*size).max(offset);
                if let Some(kept) = o.kept.take(&o.id(), offset, end - offset, 0) {
                    return Box::new(ObjectReader {
                        object: o.clone(),
                        range: 0..0,
                        body: None,
                        chunk: kept,
                        fetched: false,
                    });
                }
                Box::new(ObjectReader {
                    object: o.clone(),
                    range: offset..end,
                    body: None,
                    chunk: Bytes::new(),
                    fetched: true,
                })
            }
        }
    }

    /// Bytes `[offset, offset + len)` as a stream for a reader that may
    /// stop early (a schema's inference): an object is read in windows
    /// that double from 64 KiB up to 8 MiB, so that a few records cost a
    /// small read, and the whole range a few.
    pub(crate) fn growing(&self, offset: u64, len: u64) -> Box<dyn Read + Send> {
        match self {
            Blob::Local(_) => self.range(offset, len),
            Blob::Object(_, size) => Box::new(GrowingReader {
                blob: self.clone(),
                at: offset,
                end: (offset + len).min(*size),
                next: 64 << 10,
                chunk: Vec::new(),
                pos: 0,
            }),
        }
    }

    /// A reader that can seek: each read is one positional read (one
    /// ranged GET of an object) of the size asked for, which suits
    /// readers that ask for whole blocks (Arrow IPC's).
    pub(crate) fn seekable(&self, size: u64) -> SeekableBlob {
        SeekableBlob { blob: self.clone(), size, pos: 0 }
    }
}

/// Reads into all of `buf` from `offset` of a local file.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads bytes `[at, end)` of a shared local file with positional reads.
struct RangeReader {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min((self.end - self.at) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Reads a range of an object through one GET, started on the first
/// read (or from its kept bytes).
struct ObjectReader {
    object: Arc<Object>,
    range: std::ops::Range<u64>,
    body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    chunk: Bytes,
    /// The bytes come from a GET (and count as read).
    fetched: bool,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            if self.range.is_empty() && self.body.is_none() {
                return Ok(0);
            }
            let body = match &mut self.body {
                Some(b) => b,
                None => {
                    let range = std::mem::replace(&mut self.range, 0..0);
                    let opts = GetOptions { range: Some(range.into()), ..GetOptions::default() };
                    let got = block_on(self.object.store.get_opts(&self.object.key, opts)).map_err(io_error)?;
                    self.body.insert(got.into_stream())
                }
            };
            match block_on(body.next()) {
                Some(chunk) => self.chunk = chunk.map_err(io_error)?,
                None => {
                    self.body = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        if self.fetched {
            self.object.requests.read(n);
        }
        Ok(n)
    }
}

/// Reads a range in windows that grow (see [`Blob::growing`]).
struct GrowingReader {
    blob: Blob,
    at: u64,
    end: u64,
    next: usize,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.chunk.len() {
            let want = (self.end.saturating_sub(self.at)).min(self.next as u64) as usize;
            if want == 0 {
                return Ok(0);
            }
            self.chunk.resize(want, 0);
            let n = self.blob.read_at(&mut self.chunk, self.at)?;
            self.chunk.truncate(n);
            self.at += n as u64;
            self.pos = 0;
            self.next = (self.next * 2).min(8 << 20);
            if n == 0 {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blob read as a seekable stream (what Arrow's IPC reader takes).
pub(crate) struct SeekableBlob {
    blob: Blob,
    size: u64,
    pos: u64,
}

impl Read for SeekableBlob {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.blob.read_at(out, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SeekableBlob {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// Parquet reads footers and column chunks by range.
impl parquet::file::reader::Length for Blob {
    fn len(&self) -> u64 {
        match self {
            Blob::Local(f) => f.metadata().map_or(0, |m| m.len()),
            Blob::Object(_, size) => *size,
        }
    }
}

impl parquet::file::reader::ChunkReader for Blob {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use parquet::file::reader::Length;
        Ok(self.range(start, self.len().saturating_sub(start)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0; length];
        let n = self.read_at(&mut buf, start).map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        if n < length {
            return Err(parquet::errors::ParquetError::EOF(format!("expected {length} bytes at {start}, got {n}")));
        }
        Ok(buf.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seekable_blob_reads_like_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = InputFile::stat(&path).unwrap();
        let blob = Blob::open(&file).unwrap();
        let mut r = blob.seekable(file.size);
        let mut got = vec![0; 10];
        r.seek(SeekFrom::Start(70_000)).unwrap();
        r.read_exact(&mut got).unwrap();
        assert_eq!(got, data[70_000..70_010]);
        r.seek(SeekFrom::End(-5)).unwrap();
        let mut tail = Vec::new();
        r.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, data[data.len() - 5..]);
        let mut all = Vec::new();
        blob.range(100, 150_000).read_to_end(&mut all).unwrap();
        assert_eq!(all, data[100..150_100]);
    }
}
