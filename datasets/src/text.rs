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
            let text = std::str::from_utf8(block).map_err(|e| {
                let bad = e.valid_up_to();
                let line_start = memchr::memrchr(b'\n', &block[..bad]).map_or(0, |i| i + 1);
                let before = memchr::memchr_iter(b'\n', &block[..line_start]).count() as u64;
                LineError {
                    byte: self.base + (self.at + line_start) as u64,
                    line: self.lines + before,
                    message: format!("invalid UTF-8 at byte {} of the line", bad - line_start),
                }
            })?;
            let mut used = 0;
            for line in text.split_inclusive('\n') {
                let l = line.strip_suffix('\n').unwrap_or(line);
                builder.append_value(l.strip_suffix('\r').unwrap_or(l));
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
    fn invalid_utf8_names_the_line() {
        let err = lines(b"ok\nfine\nbad \xff here\n", 100).unwrap_err();
        assert_eq!((err.line, err.byte), (2, 8));
        assert_eq!(err.message, "invalid UTF-8 at byte 4 of the line");
        let err = lines(b"ok\nfine\nbad \xff here\n", 1).unwrap_err();
        assert_eq!((err.line, err.byte), (2, 8));
    }
}
