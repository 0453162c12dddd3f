//! CSV: a quote-aware splitter, and reading and writing through arrow-csv
//! (schema inference is `csv_infer.rs`).
//!
//! Fields may be quoted (RFC 4180): a quoted field may hold delimiters,
//! newlines and doubled quotes, and, when an escape byte is set, escaped
//! bytes. A newline ends a record only outside quotes, so the splitter keeps
//! the lexer's quote state while it scans; it follows the csv-core rules
//! that arrow-csv uses (a quote opens a quoted field only at the start of a
//! field; elsewhere it is literal), so a split never cuts a record. Lines may
//! end with `\n` or `\r\n`.

use std::io::{BufReader, Read};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::{Error, Result};
use crate::listing::InputFile;
use crate::split::{Boundaries, ChunkSize, RangeSplitter, Window};

/// The CSV dialect of an input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    /// Whether the first record of each file is a header.
    pub header: bool,
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote byte.
    pub quote: u8,
    /// Escape byte inside quoted fields; `None` means quotes are escaped by
    /// doubling them only.
    pub escape: Option<u8>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { header: true, delimiter: b',', quote: b'"', escape: None }
    }
}

/// The lexer states that decide whether a newline ends a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Outside a quoted field; `prev` is the last byte seen.
    Outside { prev: u8 },
    /// Inside a quoted field.
    Quoted,
    /// Inside a quoted field, just after the escape byte.
    Escaped,
    /// Inside a quoted field, just after a quote: either the field ends or
    /// the quote is doubled.
    QuoteInQuoted,
}

/// Tracks quote state across buffers to find record boundaries.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    lex: Lex,
}

impl Scanner {
    /// A scanner at the start of a record.
    pub(crate) fn new(opts: &CsvOptions) -> Self {
        Scanner {
            delimiter: opts.delimiter,
            quote: opts.quote,
            escape: opts.escape.filter(|&e| e != opts.quote),
            lex: Lex::Outside { prev: b'\n' },
        }
    }

    /// Feeds `buf`. With `find`, stops at the first newline that ends a
    /// record and returns its index; without, consumes all of `buf`.
    pub(crate) fn feed(&mut self, buf: &[u8], find: bool) -> Option<usize> {
        let mut i = 0;
        while i < buf.len() {
            match self.lex {
                Lex::Outside { prev } => {
                    let rest = &buf[i..];
                    let hit =
                        if find { memchr::memchr2(self.quote, b'\n', rest) } else { memchr::memchr(self.quote, rest) };
                    let Some(k) = hit else {
                        self.lex = Lex::Outside { prev: *rest.last().expect("non-empty") };
                        return None;
                    };
                    let j = i + k;
                    if buf[j] == b'\n' {
                        self.lex = Lex::Outside { prev: b'\n' };
                        return Some(j);
                    }
                    let before = if j > i { buf[j - 1] } else { prev };
                    self.lex = if before == self.delimiter || before == b'\n' || before == b'\r' {
                        Lex::Quoted
                    } else {
                        Lex::Outside { prev: self.quote }
                    };
                    i = j + 1;
                }
                Lex::Quoted => {
                    let rest = &buf[i..];
                    let hit = match self.escape {
                        Some(e) => memchr::memchr2(self.quote, e, rest),
                        None => memchr::memchr(self.quote, rest),
                    };
                    let k = hit?;
                    let j = i + k;
                    self.lex = if buf[j] == self.quote { Lex::QuoteInQuoted } else { Lex::Escaped };
                    i = j + 1;
                }
                Lex::Escaped => {
                    self.lex = Lex::Quoted;
                    i += 1;
                }
                Lex::QuoteInQuoted => {
                    if buf[i] == self.quote {
                        self.lex = Lex::Quoted;
                        i += 1;
                    } else {
                        self.lex = Lex::Outside { prev: self.quote };
                    }
                }
            }
        }
        None
    }
}

/// Csv records: the end of a record is the first newline outside quotes,
/// found by scanning from the previous boundary with the quote state.
pub(crate) struct Records {
    window: Window,
    opts: CsvOptions,
}

impl Records {
    /// Splits the csv file at `path` of `len` bytes; returns the splitter
    /// and the header bytes (empty without a header). The header is not
    /// part of any split.
    /// With `keep`, an object's bytes are kept as the scan reads them, for
    /// its splits to take rather than fetch again (see [`crate::kept`]).
    pub(crate) fn splitter(
        file: &InputFile,
        chunks: ChunkSize,
        opts: CsvOptions,
        keep: bool,
    ) -> Result<(RangeSplitter<Records>, Vec<u8>)> {
        let len = file.size;
        let window = Window::open(file, 1 << 20)?;
        let mut records = Records { window: if keep { window.keeping() } else { window }, opts };
        let mut header = Vec::new();
        let mut start = 0;
        if opts.header && len > 0 {
            start = records.end_of_record(0, 1, len)?;
            let window = records.window.at(0)?;
            header = match window.get(..start as usize) {
                Some(h) => h.to_vec(),
                // A header longer than the window: read it whole.
                None => {
                    let mut h = Vec::new();
                    crate::blob::Blob::open(file)?
                        .range(0, start)
                        .read_to_end(&mut h)
                        .map_err(|e| Error::io(&file.path, e))?;
                    h
                }
            };
        }
        Ok((RangeSplitter::new(records, start, len, chunks), header))
    }
}

/// The header record of the csv `file`, as its bytes with their line end
/// (empty for an empty file): found with the same quote-aware scan as the
/// splits.
pub fn header_bytes(file: &InputFile, opts: CsvOptions) -> Result<Vec<u8>> {
    let (_, header) =
        Records::splitter(file, ChunkSize::fixed(file.size.max(1)), CsvOptions { header: true, ..opts }, false)?;
    Ok(header)
}

impl Boundaries for Records {
    fn end_of_record(&mut self, from: u64, target: u64, len: u64) -> Result<u64> {
        let mut scanner = Scanner::new(&self.opts);
        let mut at = from;
        while at < len {
            let bytes = self.window.at(at)?;
            if bytes.is_empty() {
                break;
            }
            let bytes = &bytes[..bytes.len().min((len - at) as usize)];
            let skip = (target - 1).saturating_sub(at).min(bytes.len() as u64) as usize;
            scanner.feed(&bytes[..skip], false);
            if let Some(i) = scanner.feed(&bytes[skip..], true) {
                return Ok(at + (skip + i) as u64 + 1);
            }
            at += bytes.len() as u64;
        }
        Ok(len)
    }
}

/// Reads the records of `source` as batches of `schema`. `skip_header`
/// drops the first record (for a whole compressed file).
pub(crate) fn read<R: Read + Send + 'static>(
    source: R,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    opts: &CsvOptions,
    skip_header: bool,
    batch_rows: usize,
    buffer: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send + use<R>, String> {
    let builder = builder(schema, projection, opts, skip_header, batch_rows);
    let reader = builder.build(BufReader::with_capacity(buffer.max(64), source)).map_err(|e| e.to_string())?;
    Ok(reader.map(|r| r.map_err(|e| e.to_string())))
}

fn builder(
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    opts: &CsvOptions,
    skip_header: bool,
    batch_rows: usize,
) -> arrow_csv::ReaderBuilder {
    let mut builder = arrow_csv::ReaderBuilder::new(schema)
        .with_header(skip_header)
        .with_delimiter(opts.delimiter)
        .with_quote(opts.quote)
        .with_batch_size(batch_rows);
    if let Some(e) = opts.escape {
        builder = builder.with_escape(e);
    }
    if let Some(p) = projection {
        builder = builder.with_projection(p);
    }
    builder
}

/// A decoder of csv records (no header) as batches of `schema`, to be
/// kept by a worker across small splits: building one costs more than
/// decoding a tiny split (csv_core builds its state machine, ~250,000
/// instructions).
pub(crate) fn decoder(
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    opts: &CsvOptions,
    batch_rows: usize,
) -> arrow_csv::reader::Decoder {
    builder(schema, projection, opts, false, batch_rows).build_decoder()
}

/// Decodes `bytes` — whole records, the last ending with a newline, so the
/// decoder is at the start of a record again afterwards — with a kept
/// `decoder`. After an error the decoder must not be used again.
pub(crate) fn decode_records(
    decoder: &mut arrow_csv::reader::Decoder,
    bytes: &[u8],
) -> Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
    debug_assert_eq!(bytes.last(), Some(&b'\n'));
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        at += decoder.decode(&bytes[at..])?;
        if at == bytes.len() || decoder.capacity() == 0 {
            out.extend(decoder.flush()?);
        }
        if at == bytes.len() {
            return Ok(out);
        }
    }
}

/// Finds where the first bad record of a failing stream starts: reads
/// `first` one record at a time until the error, then skips that many
/// records of `second` (the same bytes) with the scanner. Returns the
/// record's stream offset and 0-based line. Runs only after an error.
pub(crate) fn locate(
    first: impl Read + Send + 'static,
    mut second: impl Read,
    schema: SchemaRef,
    opts: &CsvOptions,
    skip_header: bool,
) -> Option<(u64, u64)> {
    let good = read(first, schema, None, opts, skip_header, 1, 64 * 1024).ok()?.take_while(Result::is_ok).count();
    let mut skip = good + usize::from(skip_header);
    let mut scanner = Scanner::new(opts);
    let mut buf = vec![0; 64 * 1024];
    let (mut byte, mut line) = (0u64, 0u64);
    while skip > 0 {
        let n = second.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        let mut at = 0;
        while skip > 0 {
            match scanner.feed(&buf[at..n], true) {
                Some(i) => {
                    at += i + 1;
                    skip -= 1;
                }
                None => at = n,
            }
            if at == n {
                break;
            }
        }
        byte += at as u64;
        line += memchr::memchr_iter(b'\n', &buf[..at]).count() as u64;
    }
    Some((byte, line))
}

/// Counts the fields of csv records as the reader splits them (the same
/// csv_core settings as arrow-csv's decoder): a record whose count is not
/// the schema's is surely bad, found without a decoder (which cannot be
/// used again after an error, and costs more to build than a batch).
pub(crate) struct FieldCounter {
    reader: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl FieldCounter {
    /// A counter for the dialect `opts`.
    pub(crate) fn new(opts: &CsvOptions) -> Self {
        let mut b = csv_core::ReaderBuilder::new();
        b.delimiter(opts.delimiter).quote(opts.quote).escape(opts.escape);
        FieldCounter { reader: b.build(), out: vec![0; 1024], ends: vec![0; 64] }
    }

    /// The fields of `record` (whole, ending with a newline); `None` when
    /// the reader would not see it as one record.
    pub(crate) fn count(&mut self, record: &[u8]) -> Option<usize> {
        use csv_core::ReadRecordResult as R;
        self.reader.reset();
        let (mut at, mut fields) = (0, 0);
        loop {
            let (result, read, _, ends) = self.reader.read_record(&record[at..], &mut self.out, &mut self.ends);
            at += read;
            fields += ends;
            match result {
                R::OutputFull => self.out.resize(self.out.len() * 2, 0),
                R::OutputEndsFull => {
                    // Counted; the ends buffer is reused.
                }
                R::Record => return (record[at..].trim_ascii().is_empty()).then_some(fields),
                R::InputEmpty | R::End => return None,
            }
        }
    }
}

/// A csv writer with a header line.
pub(crate) fn writer<W: std::io::Write>(out: W, opts: &CsvOptions) -> arrow_csv::Writer<W> {
    arrow_csv::WriterBuilder::new()
        .with_header(opts.header)
        .with_delimiter(opts.delimiter)
        .with_quote(opts.quote)
        .build(out)
}

/// An arrow-csv error about records decoded on their own, without the
/// line numbers it counts (from the decoder's first record, not the
/// file's) and the row it repeats (the bad record shows its raw text).
pub(crate) fn csv_message(message: &str) -> String {
    let m = message.strip_prefix("Csv error: ").unwrap_or(message);
    let m = m.strip_prefix("Parser error: ").unwrap_or(m);
    let m = m.split(". Row data: ").next().unwrap_or(m);
    let mut out = String::with_capacity(m.len());
    let mut rest = m;
    while let Some(i) = [" for line ", " at line "].iter().filter_map(|p| rest.find(p)).min() {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let after = after.split_once(' ').map_or("", |(_, a)| a).trim_start_matches("line ");
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        rest = match after.strip_prefix(" and") {
            Some(a) => {
                out.push_str(" in");
                a
            }
            None => after,
        };
    }
    out.push_str(rest);
    out.replace("incorrect number of fields,", "wrong number of fields:")
}

#[cfg(test)]
mod tests {

    use super::*;

    fn record_ends(data: &[u8], opts: &CsvOptions) -> Vec<usize> {
        let mut s = Scanner::new(opts);
        let mut at = 0;
        let mut ends = vec![];
        while let Some(i) = s.feed(&data[at..], true) {
            at += i + 1;
            ends.push(at);
        }
        ends
    }

    #[test]
    fn fields_are_counted_as_the_reader_splits_them() {
        let mut c = FieldCounter::new(&CsvOptions::default());
        let cases: [(&[u8], Option<usize>); 7] = [
            (b"a,b,c\n", Some(3)),
            (b"a,\"b,c\"\r\n", Some(2)),
            (b"\"x\"\"y,\",z\n", Some(2)),
            (b"a\"b,c\n", Some(2)),
            (b",\n", Some(2)),
            (b"\"a\nb\",c,\"\"\n", Some(3)),
            // A bare carriage return ends a record for the reader.
            (b"a,b\rc,d\n", None),
        ];
        for (record, n) in cases {
            assert_eq!(c.count(record), n, "{:?}", String::from_utf8_lossy(record));
        }
        let long = format!("{}\n", vec!["x".repeat(300); 100].join(","));
        assert_eq!(c.count(long.as_bytes()), Some(100));
        let mut escaped = FieldCounter::new(&CsvOptions { escape: Some(b'\\'), ..CsvOptions::default() });
        assert_eq!(escaped.count(b"\"a\\\",b\",c\n"), Some(2));
    }

    #[test]
    fn newlines_in_quotes_do_not_end_records() {
        let o = CsvOptions::default();
        assert_eq!(record_ends(b"a,b\n\"x\ny\",z\nq\n", &o), [4, 12, 14]);
        assert_eq!(record_ends(b"\"a\"\"\nb\",c\r\nd\n", &o), [11, 13]);
        // A quote inside an unquoted field is literal.
        assert_eq!(record_ends(b"a\"b,c\nd\n", &o), [6, 8]);
        // A closing quote followed by more bytes.
        assert_eq!(record_ends(b"\"a\"b,\"c\nd\"\n", &o), [11]);
    }

    #[test]
    fn escapes_hide_quotes() {
        let o = CsvOptions { escape: Some(b'\\'), ..CsvOptions::default() };
        assert_eq!(record_ends(b"\"a\\\"\nb\",c\nd\n", &o), [10, 12]);
    }

    #[test]
    fn state_carries_across_buffers() {
        let o = CsvOptions::default();
        let data = b"x,\"a\"\"\nb\",c\nd\n";
        for cut in 0..data.len() {
            let mut s = Scanner::new(&o);
            s.feed(&data[..cut], false);
            // The first record end at or after `cut`.
            let found = s.feed(&data[cut..], true).map(|i| cut + i + 1);
            let expect = [12, 14].into_iter().find(|&e| e > cut);
            assert_eq!(found, expect, "cut at {cut}");
        }
    }
}
