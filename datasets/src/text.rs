//! Text: one record per line, read as a single Utf8 column named `line`.
//!
//! Lines end with `\n`; a trailing `\r` is removed (CRLF files), and a last
//! line without a newline is a record. Bytes must be UTF-8: an invalid
//! sequence is an error naming the file and the line.

use std::io::Read;
use std::sync::{Arc, LazyLock};

use arrow_array::RecordBatch;
use arrow_array::builder::StringBuilder;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// The schema of a text dataset: one non-null Utf8 column, `line`.
pub fn schema() -> SchemaRef {
    // One instance shared by every batch: a tiny split's batch would
    // otherwise allocate (and free) a schema of its own.
    static SCHEMA: LazyLock<SchemaRef> =
        LazyLock::new(|| Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)])));
    SCHEMA.clone()
}

/// A decoding error: the stream offset and line (counted from the start of
/// the stream, 0-based) of the bad line, and what is wrong.
#[derive(Debug)]
pub(crate) struct LineError {
    pub(crate) byte: u64,
    pub(crate) line: u64,
    pub(crate) message: String,
}

/// Reads lines from a stream into batches of at most `batch_rows` rows.
pub(crate) struct Lines<R> {
    source: R,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    at: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Lines consumed so far.
    lines: u64,
    eof: bool,
    batch_rows: usize,
    /// Bytes read at a time.
    block: usize,
    schema: SchemaRef,
}

impl<R: Read> Lines<R> {
    /// Lines of `source`, in batches of at most `batch_rows` rows, read
    /// `block` bytes at a time (a tiny split needs no big buffer).
    pub(crate) fn new(source: R, batch_rows: usize, block: usize) -> Self {
        let block = block.max(64);
        Lines {
            source,
            buf: Vec::with_capacity(block),
            at: 0,
            base: 0,
            lines: 0,
            eof: false,
            batch_rows: batch_rows.max(1),
            block,
            schema: schema(),
        }
    }

    /// Reads more bytes after the unconsumed ones; false at end of stream.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.base += self.at as u64;
            self.at = 0;
        }
        let len = self.buf.len();
        let want = self.block.max(len);
        self.buf.resize(len + want, 0);
        let n = loop {
            match self.source.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(len + n);
        Ok(n > 0)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, LineError> {
        // Sized to what one block can hold: a tiny split allocates little.
        let mut builder =
            StringBuilder::with_capacity(self.batch_rows.min(self.block / 8 + 1), self.block.min(1 << 20));
        let mut rows = 0;
        while rows < self.batch_rows {
            let pending = &self.buf[self.at..];
            // Whole lines in the buffer, or the last line at end of stream.
            let end = match memchr::memrchr(b'\n', pending) {
                Some(i) => i + 1,
                None if self.eof && !pending.is_empty() => pending.len(),
                None if self.eof => break,
                None => {
                    self.eof = !self.fill().map_err(|e| self.error(0, e.to_string()))?;
                    continue;
                }
            };
            let block = &self.buf[self.at..self.at + end];
            let text = utf8(block, self.base + self.at as u64, self.lines)?;
            let mut used = 0;
            for line in text.split_inclusive('\n') {
                builder.append_value(content(line));
                used += line.len();
                rows += 1;
                if rows == self.batch_rows {
                    break;
                }
            }
            self.lines += memchr::memchr_iter(b'\n', &block[..used]).count() as u64;
            self.at += used;
        }
        if rows == 0 {
            return Ok(None);
        }
        let array = Arc::new(builder.finish());
        Ok(Some(RecordBatch::try_new(self.schema.clone(), vec![array]).expect("schema fits")))
    }

    fn error(&self, offset: usize, message: String) -> LineError {
        LineError { byte: self.base + (self.at + offset) as u64, line: self.lines, message }
    }
}

/// `block` as text; for invalid UTF-8, an error naming the line, with
/// `byte` and `line` the stream offset and line count of `block[0]`.
fn utf8(block: &[u8], byte: u64, line: u64) -> Result<&str, LineError> {
    std::str::from_utf8(block).map_err(|e| {
        let bad = e.valid_up_to();
        let line_start = memchr::memrchr(b'\n', &block[..bad]).map_or(0, |i| i + 1);
        let before = memchr::memchr_iter(b'\n', &block[..line_start]).count() as u64;
        LineError {
            byte: byte + line_start as u64,
            line: line + before,
            message: format!("invalid UTF-8 at byte {} of the line", bad - line_start),
        }
    })
}

/// A line without its `\n` or `\r\n`.
fn content(line: &str) -> &str {
    let l = line.strip_suffix('\n').unwrap_or(line);
    l.strip_suffix('\r').unwrap_or(l)
}

/// The lines of `bytes`, a whole stream held in memory, as one batch built
/// straight from them (no read buffer, no builder growth): the fast path
/// for small splits. `Ok(None)` for no lines; `None` when they do not fit
/// one batch of `batch_rows` rows, or 32-bit offsets.
pub(crate) fn whole(bytes: &[u8], batch_rows: usize) -> Option<Result<Option<RecordBatch>, LineError>> {
    let rows = memchr::memchr_iter(b'\n', bytes).count() + usize::from(bytes.last().is_some_and(|&b| b != b'\n'));
    if rows > batch_rows.max(1) || bytes.len() > i32::MAX as usize {
        return None;
    }
    if rows == 0 {
        return Some(Ok(None));
    }
    let text = match utf8(bytes, 0, 0) {
        Ok(text) => text,
        Err(e) => return Some(Err(e)),
    };
    let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
    let mut values: Vec<u8> = Vec::with_capacity(bytes.len());
    offsets.push(0);
    for line in text.split_inclusive('\n') {
        values.extend_from_slice(content(line).as_bytes());
        offsets.push(values.len() as i32);
    }
    // The offsets start at 0 and never decrease, and each cut is at a `\n`
    // or `\r` of valid UTF-8: the checks `new` makes pass.
    let array = arrow_array::StringArray::new(
        arrow_buffer::OffsetBuffer::new(arrow_buffer::ScalarBuffer::from(offsets)),
        arrow_buffer::Buffer::from_vec(values),
        None,
    );
    Some(Ok(Some(RecordBatch::try_new(schema(), vec![Arc::new(array)]).expect("schema fits"))))
}

impl<R: Read> Iterator for Lines<R> {
    type Item = Result<RecordBatch, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    fn lines(data: &[u8], batch: usize) -> Result<Vec<String>, LineError> {
        let mut out = vec![];
        for b in Lines::new(data, batch, 7) {
            let b = b?;
            assert!(b.num_rows() <= batch);
            out.extend(b.column(0).as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
        }
        Ok(out)
    }

    #[test]
    fn lines_follow_rust_line_rules() {
        for batch in [1, 2, 100] {
            assert_eq!(lines(b"a\r\nb\n\nc", batch).unwrap(), ["a", "b", "", "c"]);
            assert_eq!(lines(b"a\n", batch).unwrap(), ["a"]);
            assert!(lines(b"", batch).unwrap().is_empty());
            assert_eq!(lines("é\nü".as_bytes(), batch).unwrap(), ["é", "ü"]);
        }
    }

    #[test]
    fn a_whole_small_stream_reads_as_the_lines_reader_reads_it() {
        let cases: [&[u8]; 8] = [b"a\r\nb\n\nc", b"a\n", b"", b"\n", b"\r\n\r", "é\nü\n".as_bytes(), b"x", b"a\nb\n"];
        for data in cases {
            let batches: Vec<RecordBatch> = Lines::new(data, 100, 7).collect::<Result<_, _>>().unwrap();
            let fast = whole(data, 100).expect("fits").unwrap();
            assert_eq!(fast.into_iter().collect::<Vec<_>>(), batches, "{data:?}");
        }
        assert!(whole(b"a\nb\nc", 2).is_none());
        assert!(whole(b"a\nb\n", 2).is_some());
        let err = whole(b"ok\nfine\nbad \xff here\n", 100).expect("fits").unwrap_err();
        assert_eq!((err.line, err.byte), (2, 8));
        assert_eq!(err.message, "invalid UTF-8 at byte 4 of the line");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = lines(b"ok\nfine\nbad \xff here\n", 100).unwrap_err();
        assert_eq!((err.line, err.byte), (2, 8));
        assert_eq!(err.message, "invalid UTF-8 at byte 4 of the line");
        let err = lines(b"ok\nfine\nbad \xff here\n", 1).unwrap_err();
        assert_eq!((err.line, err.byte), (2, 8));
    }
}
