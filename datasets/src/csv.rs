//! CSV: a quote-aware splitter, and reading, schema inference and writing
//! through arrow-csv.
//!
//! Fields may be quoted (RFC 4180): a quoted field may hold delimiters,
//! newlines and doubled quotes, and, when an escape byte is set, escaped
//! bytes. A newline ends a record only outside quotes, so the splitter keeps
//! the lexer's quote state while it scans; it follows the csv-core rules
//! that arrow-csv uses (a quote opens a quoted field only at the start of a
//! field; elsewhere it is literal), so a split never cuts a record. Lines may
//! end with `\n` or `\r\n`.

use std::io::{BufReader, Cursor, Read};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

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

/// Infers a schema from the first `rows` records of `source`. Column names
/// come from the header, or are `column_1`, `column_2`, ... without one.
///
/// The rules are arrow-csv's (`Format::infer_schema`): a column's type is
/// the narrowest that every non-empty value fits — boolean, then Int64,
/// Float64 (Int64 and Float64 values together), Date32, then timestamps
/// (seconds to nanoseconds, the finest seen), else Utf8. They are written
/// out here rather than taken from arrow-csv, whose regular expressions
/// take ~17 M instructions to compile: most of planning a small csv job.
/// One difference: digits are ASCII digits and `true`/`false` match ASCII
/// case-insensitively, where arrow-csv's regexes take any Unicode digit and
/// Unicode case folds (`fAlſE`), which its reader then fails to parse.
pub(crate) fn infer_schema(
    source: impl Read,
    opts: &CsvOptions,
    rows: usize,
    skip_invalid: bool,
) -> Result<Schema, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(opts.header)
        .flexible(false)
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .escape(opts.escape)
        .from_reader(source);
    let first = reader.headers().map_err(record_error)?;
    let names: Vec<String> = if opts.header {
        first.iter().map(str::to_string).collect()
    } else {
        (1..=first.len()).map(|i| format!("column_{i}")).collect()
    };
    let mut seen = vec![0u16; names.len()];
    let mut record = csv::StringRecord::new();
    for _ in 0..rows {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            // A bad record the job skips: left out of the sample.
            Err(e) if skip_invalid && !matches!(e.kind(), csv::ErrorKind::Io(_)) => continue,
            Err(e) => return Err(record_error(e)),
        }
        for (kinds, value) in seen.iter_mut().zip(record.iter()) {
            // An empty value is a null, whatever the type.
            if !value.is_empty() {
                *kinds |= kind(value);
            }
        }
    }
    Ok(Schema::new(names.into_iter().zip(seen).map(|(n, k)| Field::new(n, data_type(k), true)).collect::<Vec<_>>()))
}

/// A csv reader's error, as arrow-csv words it.
fn record_error(e: csv::Error) -> String {
    let at = |pos: &Option<csv::Position>| pos.as_ref().map(|p| format!(" at line {}", p.line())).unwrap_or_default();
    match e.kind() {
        csv::ErrorKind::Io(e) => e.to_string(),
        csv::ErrorKind::Utf8 { pos, err } => format!("invalid UTF-8: {err}{}", at(pos)),
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => {
            format!("a record has {len} fields where the first had {expected_len}{}", at(pos))
        }
        _ => e.to_string(),
    }
}

// The kinds a value can be, as bits (arrow-csv's order).
const BOOLEAN: u16 = 1;
const INTEGER: u16 = 1 << 1;
const FLOAT: u16 = 1 << 2;
const DATE: u16 = 1 << 3;
const SECONDS: u16 = 1 << 4;
const TEXT: u16 = 1 << 8;

/// The narrowest kind of a non-empty csv value.
fn kind(s: &str) -> u16 {
    let b = s.as_bytes();
    let digits = |b: &[u8]| !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    let unsigned = unsigned(b);
    if b[0] == b'"' {
        TEXT
    } else if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
        BOOLEAN
    } else if digits(unsigned) {
        // Past i64, text.
        if b.len() >= 19 && s.parse::<i64>().is_err() { TEXT } else { INTEGER }
    } else if is_float(unsigned) || matches!(s, "NaN" | "nan" | "inf" | "-inf") {
        FLOAT
    } else {
        temporal(b)
    }
}

/// `b` without a leading `+` or `-`.
fn unsigned(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"+").or_else(|| b.strip_prefix(b"-")).unwrap_or(b)
}

/// `digits.digits` (one side may be empty, not both) or `digits`, then an
/// optional exponent — required after bare digits.
fn is_float(b: &[u8]) -> bool {
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let (mantissa, exponent) = match b.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    if let Some(e) = exponent {
        let e = unsigned(e);
        if e.is_empty() || !digits(e) {
            return false;
        }
    }
    match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => {
            let (whole, fraction) = (&mantissa[..i], &mantissa[i + 1..]);
            whole.len() + fraction.len() > 0 && digits(whole) && digits(fraction)
        }
        None => exponent.is_some() && !mantissa.is_empty() && digits(mantissa),
    }
}

/// `YYYY-MM-DD` (a date), or that, `T` or a space and `hh:mm:ss` (a
/// timestamp): in seconds if nothing or a non-digit other than `.` follows,
/// else as fine as the digits after the `.` (up to 9), which a non-digit
/// or the end must follow. Anything else is text.
fn temporal(b: &[u8]) -> u16 {
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let date = (0..4).all(d) && at(4, b'-') && d(5) && d(6) && at(7, b'-') && d(8) && d(9);
    if !date {
        return TEXT;
    }
    if b.len() == 10 {
        return DATE;
    }
    let time = (at(10, b'T') || at(10, b' '))
        && d(11)
        && d(12)
        && at(13, b':')
        && d(14)
        && d(15)
        && at(16, b':')
        && d(17)
        && d(18);
    if !time {
        return TEXT;
    }
    // What may follow: nothing, or a character that is not a digit (nor,
    // right after the seconds, a `.`) and then anything but a newline —
    // arrow-csv's `(?:[^\d].*)?$`, whose `.` stops at one.
    let tail = |rest: &[u8], dot: bool| match rest.split_first() {
        None => true,
        Some((c, more)) => !(c.is_ascii_digit() || (dot && *c == b'.') || more.contains(&b'\n')),
    };
    if b.get(19) == Some(&b'.') {
        let fraction = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !tail(&b[20 + fraction..], false) {
            return TEXT;
        }
        match fraction {
            1..=3 => SECONDS << 1,
            4..=6 => SECONDS << 2,
            7..=9 => SECONDS << 3,
            _ => TEXT,
        }
    } else if tail(&b[19..], true) {
        SECONDS
    } else {
        TEXT
    }
}

/// The type of a column whose values were of the kinds `seen`: the finest
/// temporal type among temporal ones; Float64 for integers and floats;
/// Null when every value was empty.
fn data_type(seen: u16) -> DataType {
    match seen {
        0 => DataType::Null,
        BOOLEAN => DataType::Boolean,
        INTEGER => DataType::Int64,
        FLOAT | 6 => DataType::Float64,
        k if k & !0b1111_1000 == 0 => match k.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

/// The column names in a header record.
pub(crate) fn header_names(header: &[u8], opts: &CsvOptions) -> Result<Vec<String>, String> {
    let schema = infer_schema(Cursor::new(header), &CsvOptions { header: true, ..*opts }, 0, false)?;
    Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
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
    use proptest::prelude::*;

    /// arrow-csv's own inference, the oracle.
    fn arrow_infer(data: &str, opts: &CsvOptions, rows: usize) -> Result<Schema, String> {
        let mut format = arrow_csv::reader::Format::default()
            .with_header(opts.header)
            .with_delimiter(opts.delimiter)
            .with_quote(opts.quote);
        if let Some(e) = opts.escape {
            format = format.with_escape(e);
        }
        format.infer_schema(data.as_bytes(), Some(rows)).map(|(s, _)| s).map_err(|e| e.to_string())
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[+-]?[0-9]{1,20}",
            "[+-]?[0-9]{0,3}\\.[0-9]{0,3}([eE][+-]?[0-9]{0,2})?",
            "[+-]?[0-9]{1,3}[eE][+-]?[0-9]{0,2}",
            // ASCII only: arrow-csv's regexes also take Unicode digits and
            // case folds (`fAlſE` is a boolean to them), which its reader
            // then fails to parse.
            "[tT][rR][uU][eE]|[fF][aA][lL][sS][eE]|tru|yes",
            "(NaN|nan|inf|-inf|Inf|\\+inf)",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            "[0-9]{3,5}-[0-9]{1,2}-[0-9]{2}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{0,11}(Z|[+-][0-9]{2}:?[0-9]{2}|x[0-9])?",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}[Z+ 0-9-][0-9:]{0,5}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{1}",
            // Quoted values with newlines after a timestamp or a fraction.
            "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,4})?[\n a.Z]{1,3}[a\n]{0,2}",
            "\"[a-z0-9]{0,3}\"",
            "[a-z .]{1,4}",
        ]
    }

    proptest! {
        #[test]
        fn inference_follows_arrow_csv(
            rows in proptest::collection::vec(proptest::collection::vec(value(), 3), 0..12),
            header in any::<bool>(),
            infer_rows in 0usize..14,
        ) {
            let quote = |v: &String| {
                if v.contains(['"', ',', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.clone() }
            };
            let mut data = String::new();
            if header {
                data.push_str("a,b,c\n");
            }
            for r in &rows {
                data.push_str(&r.iter().map(quote).collect::<Vec<_>>().join(","));
                data.push('\n');
            }
            let opts = CsvOptions { header, ..CsvOptions::default() };
            let ours = infer_schema(data.as_bytes(), &opts, infer_rows, false).unwrap();
            let arrow = arrow_infer(&data, &opts, infer_rows).unwrap();
            prop_assert_eq!(ours, arrow, "{:?}", data);
        }
    }

    #[test]
    fn inference_errors_name_the_line() {
        let data = "a,b\n1,\"x\ny\"\n2,z\n3,w,extra\n";
        let e = infer_schema(data.as_bytes(), &CsvOptions::default(), 10, false).unwrap_err();
        assert_eq!(e, "a record has 3 fields where the first had 2 at line 5");
        assert!(arrow_infer(data, &CsvOptions::default(), 10).unwrap_err().contains("at line 5"));
    }

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
