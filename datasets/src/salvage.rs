//! Reading a split under a job's bad-record policy: the fast read first,
//! and only when it fails, the split again record by record (row group by
//! row group, batch by batch), with the records that cannot be read set
//! apart as [`BadRecord`]s.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::builder::StringBuilder;
use arrow_schema::SchemaRef;

use crate::bad::{BadRecord, Encoding, OnBadRecord, RAW_LIMIT};
use crate::csv::{self, CsvOptions, FieldCounter, Scanner};
use crate::dataset::Dataset;
use crate::error::{Error, Location, Result};
use crate::format::Format;
use crate::open_files::OpenFiles;
use crate::split::{Split, SplitRange};
use crate::{ipc, jsonl, parquet, text};

impl Dataset {
    /// Reads all of `split`, as [`Dataset::read_all_with`] does, under the
    /// dataset's bad-record policy: when skipping or rejecting, a split
    /// that fails to read is read again record by record, and the records
    /// that cannot be read come back apart instead of failing it. A text
    /// input read as `utf-8-lossy` has its invalid bytes replaced instead.
    /// I/O errors fail the split whatever the policy.
    pub fn read_salvaging(&self, split: &Split, files: &mut OpenFiles) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
        let policy = self.opts.bad;
        let lossy = self.format == Format::Text && policy.encoding == Encoding::Utf8Lossy;
        if policy.on_bad == OnBadRecord::Fail && !lossy {
            return Ok((self.read_all_with(split, files)?, Vec::new()));
        }
        match self.read_all_with(split, files) {
            Ok(batches) => Ok((batches, Vec::new())),
            Err(Error::Malformed { .. } | Error::Invalid { .. }) => {
                let (batches, bad) = self.salvage(split, files)?;
                // Under `fail`, only a lossy text read gets here, and it
                // has no bad lines: any other error stands.
                match (policy.on_bad, bad.first()) {
                    (OnBadRecord::Fail, Some(b)) => {
                        Err(Error::Malformed { path: b.path.clone(), location: b.location, message: b.error.clone() })
                    }
                    _ => Ok((batches, bad)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Reads `split` record by record (range by range for parquet and
    /// Arrow): the good records, and the bad ones.
    fn salvage(&self, split: &Split, files: &mut OpenFiles) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
        let file = &split.file;
        let path = &file.path;
        let batch_rows = self.batch_rows(&split.range);
        match split.range {
            SplitRange::RowGroups { start, end, .. } => {
                let groups = parquet::row_groups(file)?;
                self.salvage_ranges(split, start..end, "row group", |i| {
                    let (byte, len, rows) = groups.get(i).copied().unwrap_or_default();
                    let read = parquet::read(file, i, i + 1, batch_rows, self.projection.as_deref())
                        .and_then(|b| b.collect::<Result<Vec<_>, String>>().map_err(|m| Error::invalid(path, m)));
                    (read, byte, len, Some(rows))
                })
            }
            SplitRange::Batches { start, end, .. } => {
                let blocks = ipc::blocks(file)?;
                self.salvage_ranges(split, start..end, "batch", |i| {
                    let (byte, len) = blocks.get(i).copied().unwrap_or_default();
                    let read = ipc::read(file, i, i + 1, self.projection.clone())
                        .and_then(|b| b.collect::<Result<Vec<_>, String>>().map_err(|m| Error::invalid(path, m)));
                    (read, byte, len, ipc::batch_rows_at(file, byte))
                })
            }
            SplitRange::Bytes { offset, .. } => {
                let line = self.lines.line_at(file, offset).map_err(|e| Error::io(path, e))?;
                self.salvage_records(split, files, Stream::at(path, offset, line, batch_rows))
            }
            SplitRange::Whole => self.salvage_records(split, files, Stream::at(path, 0, 1, batch_rows)),
        }
    }

    /// Salvages the records of a line-format split, read as a stream
    /// starting at `at`.
    fn salvage_records(
        &self,
        split: &Split,
        files: &mut OpenFiles,
        mut at: Stream<'_>,
    ) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
        let source = files.open(&split.file, &split.range)?;
        match self.format {
            Format::Text => {
                let lossy = self.opts.bad.encoding == Encoding::Utf8Lossy;
                let mut s = TextSalvager { lossy };
                salvage(source, at, &mut s)
            }
            Format::Csv => {
                let opts = self.opts.csv;
                at.csv = Some(Scanner::new(&opts));
                at.skip_first = opts.header && split.range == SplitRange::Whole;
                let mut s = CsvSalvager::new(self.full.clone(), self.projection.clone(), opts, at.batch_rows);
                salvage(source, at, &mut s)
            }
            Format::Jsonl => {
                at.skip_blank = true;
                let mut s = JsonSalvager::new(self.schema.clone(), self.json_strict(), at.batch_rows)
                    .map_err(|m| Error::invalid(&split.file.path, m))?;
                salvage(source, at, &mut s)
            }
            Format::Parquet | Format::Arrow => unreachable!("parquet and arrow splits are unit ranges"),
        }
    }

    /// Salvages a parquet or Arrow split range by range: `read(i)` reads
    /// range `i`, and says where it is in the file, its size, and its rows
    /// if known.
    fn salvage_ranges(
        &self,
        split: &Split,
        ranges: std::ops::Range<usize>,
        unit: &str,
        read: impl Fn(usize) -> (Result<Vec<RecordBatch>>, u64, u64, Option<u64>),
    ) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
        let (mut batches, mut bad) = (Vec::new(), Vec::new());
        for i in ranges {
            match read(i) {
                (Ok(b), ..) => batches.extend(b),
                (Err(Error::Io { path, source }), ..) => return Err(Error::Io { path, source }),
                (Err(e), byte, len, rows) => bad.push(BadRecord {
                    path: split.file.path.clone(),
                    location: Location { line: None, byte },
                    len,
                    raw: Vec::new(),
                    range: Some(format!("{unit} {i}")),
                    records: rows.unwrap_or(1),
                    error: cause(&e, &split.file.path),
                }),
            }
        }
        Ok((batches, bad))
    }
}

impl<'a> Stream<'a> {
    /// A stream of the file at `path` from `byte`, which is on `line`.
    fn at(path: &'a std::path::Path, byte: u64, line: u64, batch_rows: usize) -> Self {
        Stream { path, byte, line, csv: None, skip_first: false, skip_blank: false, batch_rows }
    }
}

/// An error's message without the file it names (the bad record names it).
fn cause(e: &Error, path: &std::path::Path) -> String {
    let text = e.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix).map(str::to_string).unwrap_or(text)
}

/// Text lines: a line is bad when it is not UTF-8 (unless read lossily).
struct TextSalvager {
    lossy: bool,
}

impl Salvager for TextSalvager {
    fn look(&mut self, record: &[u8]) -> Look {
        match std::str::from_utf8(record) {
            Err(e) if !self.lossy => Look::Bad(format!("invalid UTF-8 at byte {} of the line", e.valid_up_to())),
            _ => Look::Plausible,
        }
    }

    fn decode(&mut self, records: &[u8], _: bool) -> Result<Vec<RecordBatch>, String> {
        let mut lines = StringBuilder::new();
        for line in records.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match std::str::from_utf8(line) {
                Ok(text) => lines.append_value(text),
                Err(_) if self.lossy => lines.append_value(String::from_utf8_lossy(line)),
                Err(e) => return Err(format!("invalid UTF-8 at byte {} of the line", e.valid_up_to())),
            }
        }
        let lines = Arc::new(lines.finish());
        Ok(vec![RecordBatch::try_new(text::schema(), vec![lines]).map_err(|e| e.to_string())?])
    }
}

/// Csv records, decoded with kept decoders (built again after an error):
/// one for batches, one for single records (a decoder's buffers are sized
/// to its batch, zeroed on every decode).
struct CsvSalvager {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    opts: CsvOptions,
    batch_rows: usize,
    batch: arrow_csv::reader::Decoder,
    one: arrow_csv::reader::Decoder,
    fields: FieldCounter,
}

impl CsvSalvager {
    fn new(schema: SchemaRef, projection: Option<Vec<usize>>, opts: CsvOptions, batch_rows: usize) -> Self {
        let batch = csv::decoder(schema.clone(), projection.clone(), &opts, batch_rows);
        let one = csv::decoder(schema.clone(), projection.clone(), &opts, 1);
        CsvSalvager { schema, projection, opts, batch_rows, batch, one, fields: FieldCounter::new(&opts) }
    }
}

impl Salvager for CsvSalvager {
    /// A record with the wrong number of fields is surely bad; one that is
    /// not UTF-8 is likely bad (the decoder checks the fields' bytes).
    fn look(&mut self, record: &[u8]) -> Look {
        let want = self.schema.fields().len();
        match self.fields.count(record) {
            Some(n) if n != want => Look::Bad(format!("wrong number of fields: expected {want} got {n}")),
            Some(_) if std::str::from_utf8(record).is_ok() => Look::Plausible,
            _ => Look::Doubtful,
        }
    }

    fn decode(&mut self, records: &[u8], one: bool) -> Result<Vec<RecordBatch>, String> {
        let decoder = if one { &mut self.one } else { &mut self.batch };
        csv::decode_records(decoder, records).map_err(|e| {
            // A decoder is not used again after an error.
            let rows = if one { 1 } else { self.batch_rows };
            *decoder = csv::decoder(self.schema.clone(), self.projection.clone(), &self.opts, rows);
            csv::csv_message(&e.to_string())
        })
    }
}

/// Jsonl lines, decoded with kept decoders (built again after an error),
/// one for batches and one for single lines.
struct JsonSalvager {
    schema: SchemaRef,
    strict: bool,
    batch_rows: usize,
    batch: arrow_json::reader::Decoder,
    one: arrow_json::reader::Decoder,
}

impl JsonSalvager {
    fn new(schema: SchemaRef, strict: bool, batch_rows: usize) -> Result<Self, String> {
        let batch = jsonl::decoder(schema.clone(), batch_rows, strict)?;
        let one = jsonl::decoder(schema.clone(), 1, strict)?;
        Ok(JsonSalvager { schema, strict, batch_rows, batch, one })
    }
}

/// Decodes all of `bytes` (whole lines) with `decoder`.
fn decode_json(decoder: &mut arrow_json::reader::Decoder, bytes: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = decoder.decode(&bytes[at..]).map_err(|e| e.to_string())?;
        at += n;
        // The decoder stops when its batch is full.
        let full = decoder.flush().map_err(|e| e.to_string())?;
        if n == 0 && full.is_none() {
            return Err("the decoder took no bytes".into());
        }
        out.extend(full);
    }
    if decoder.has_partial_record() {
        return Err("the line ends inside a JSON value".into());
    }
    Ok(out)
}

impl Salvager for JsonSalvager {
    /// A line that is not valid JSON is likely bad (decoded alone, for
    /// the decoder's word on it).
    fn look(&mut self, record: &[u8]) -> Look {
        match serde_json::from_slice::<serde::de::IgnoredAny>(record) {
            Ok(_) => Look::Plausible,
            Err(_) => Look::Doubtful,
        }
    }

    fn decode(&mut self, records: &[u8], one: bool) -> Result<Vec<RecordBatch>, String> {
        let decoder = if one { &mut self.one } else { &mut self.batch };
        decode_json(decoder, records).map_err(|e| {
            match jsonl::decoder(self.schema.clone(), if one { 1 } else { self.batch_rows }, self.strict) {
                Ok(d) => *decoder = d,
                Err(m) => return m,
            }
            e.strip_prefix("Json error: ").unwrap_or(&e).to_string()
        })
    }
}

/// What a first, cheap look at a record tells.
#[derive(Debug, PartialEq)]
pub(crate) enum Look {
    /// Likely good: decoded with others.
    Plausible,
    /// Maybe bad: decoded alone.
    Doubtful,
    /// Surely bad, and why: not decoded.
    Bad(String),
}

/// Decodes the records of a split for [`salvage`].
pub(crate) trait Salvager {
    /// A cheap look at one record (its bytes, ending with a newline).
    fn look(&mut self, record: &[u8]) -> Look;

    /// Decodes whole records into batches (`one`: a single record), or
    /// says why they cannot be; a failed decode leaves the salvager ready
    /// for the next.
    fn decode(&mut self, records: &[u8], one: bool) -> Result<Vec<RecordBatch>, String>;
}

/// How [`salvage`] finds records in a stream and where it is in the file.
pub(crate) struct Stream<'a> {
    /// The input file, for the bad records and errors.
    pub(crate) path: &'a Path,
    /// The file offset of the stream's first byte (0 for a decompressed
    /// stream, whose offsets are its own).
    pub(crate) byte: u64,
    /// The 1-based line of the stream's first byte.
    pub(crate) line: u64,
    /// Csv records (a newline in quotes does not end one), else lines.
    pub(crate) csv: Option<Scanner>,
    /// Skip the first record (a compressed csv file's header).
    pub(crate) skip_first: bool,
    /// Skip blank lines (jsonl).
    pub(crate) skip_blank: bool,
    /// Records per batch.
    pub(crate) batch_rows: usize,
}

/// Where a record held for decoding is: in the held bytes, and in the
/// file (line, byte).
struct Held {
    start: usize,
    line: u64,
    byte: u64,
}

/// Reads `source` record by record: the good records as batches, the bad
/// ones apart. Plausible records are held and decoded together, up to a
/// batch at a time; when that fails, or for a record that is not
/// plausible, each record is decoded alone to tell the good from the bad.
/// A split with a few bad records costs little more than a clean one.
pub(crate) fn salvage(
    source: impl Read,
    mut at: Stream<'_>,
    salvager: &mut dyn Salvager,
) -> Result<(Vec<RecordBatch>, Vec<BadRecord>)> {
    let path = at.path;
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut out = Salvaged { path, batches: Vec::new(), bad: Vec::new() };
    let mut record = Vec::new();
    let (mut held, mut bytes) = (Vec::<Held>::new(), Vec::new());
    loop {
        record.clear();
        let n = next_record(&mut reader, at.csv.as_mut(), &mut record).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        let lines = memchr::memchr_iter(b'\n', &record).count() as u64;
        let (line, byte) = (at.line, at.byte);
        at.line += lines;
        at.byte += n as u64;
        if std::mem::take(&mut at.skip_first) || (at.skip_blank && record.trim_ascii().is_empty()) {
            continue;
        }
        if record.last() != Some(&b'\n') {
            record.push(b'\n');
        }
        match salvager.look(&record) {
            Look::Plausible => {
                held.push(Held { start: bytes.len(), line, byte });
                bytes.extend_from_slice(&record);
                if held.len() >= at.batch_rows {
                    out.decode_held(salvager, &mut held, &mut bytes, at.byte);
                }
            }
            Look::Doubtful => {
                out.decode_held(salvager, &mut held, &mut bytes, byte);
                out.decode_one(salvager, &record, line, byte, n);
            }
            // No rows: the held records need not be decoded first.
            Look::Bad(error) => out.bad.push(out.bad_record(&record, line, byte, n, error)),
        }
    }
    out.decode_held(salvager, &mut held, &mut bytes, at.byte);
    Ok((out.batches, out.bad))
}

/// What [`salvage`] has read so far.
struct Salvaged<'a> {
    path: &'a Path,
    batches: Vec<RecordBatch>,
    bad: Vec<BadRecord>,
}

impl Salvaged<'_> {
    /// Decodes the held records (their `bytes`, which end at stream
    /// offset `end`) together, or one by one when that fails.
    fn decode_held(&mut self, s: &mut dyn Salvager, held: &mut Vec<Held>, bytes: &mut Vec<u8>, end: u64) {
        if held.is_empty() {
            return;
        }
        match s.decode(bytes, held.len() == 1) {
            Ok(batches) => self.batches.extend(batches),
            Err(_) => {
                for (i, h) in held.iter().enumerate() {
                    let stop = held.get(i + 1).map_or(bytes.len(), |next| next.start);
                    let next_byte = held.get(i + 1).map_or(end, |next| next.byte);
                    let len = (next_byte - h.byte) as usize;
                    self.decode_one(s, &bytes[h.start..stop], h.line, h.byte, len);
                }
            }
        }
        held.clear();
        bytes.clear();
    }

    /// Decodes one record (`len` bytes in the file at `line` and `byte`;
    /// `record` may have a newline added): its rows, or a bad record.
    fn decode_one(&mut self, s: &mut dyn Salvager, record: &[u8], line: u64, byte: u64, len: usize) {
        match s.decode(record, true) {
            Ok(batches) => self.batches.extend(batches),
            Err(error) => {
                let bad = self.bad_record(record, line, byte, len, error);
                self.bad.push(bad);
            }
        }
    }

    /// The bad record `record` (`len` bytes in the file at `line` and
    /// `byte`; `record` may have a newline added).
    fn bad_record(&self, record: &[u8], line: u64, byte: u64, len: usize, error: String) -> BadRecord {
        BadRecord {
            path: self.path.to_path_buf(),
            location: Location { line: Some(line), byte },
            len: len as u64,
            raw: record[..len.min(record.len()).min(RAW_LIMIT)].to_vec(),
            range: None,
            records: 1,
            error,
        }
    }
}

/// Reads the next record into `out` — a line, or a csv record whose quoted
/// fields may hold newlines — and returns its length (0 at the end).
fn next_record(reader: &mut impl BufRead, scanner: Option<&mut Scanner>, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let Some(scanner) = scanner else { return reader.read_until(b'\n', out) };
    let mut n = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(n);
        }
        let (take, ended) = match scanner.feed(buf, true) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        out.extend_from_slice(&buf[..take]);
        reader.consume(take);
        n += take;
        if ended {
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_messages_lose_the_decoders_line_numbers() {
        let cases = [
            (
                "Csv error: incorrect number of fields for line 4, expected 4 got 2",
                "wrong number of fields: expected 4 got 2",
            ),
            (
                "Parser error: Error while parsing value 'abc' as type 'Float64' for column 2 at line 248. Row data: '[1,abc]'",
                "Error while parsing value 'abc' as type 'Float64' for column 2",
            ),
            ("Encountered invalid UTF-8 data for line 150 and field 2", "Encountered invalid UTF-8 data in field 2"),
        ];
        for (message, want) in cases {
            assert_eq!(csv::csv_message(message), want);
        }
    }

    /// Takes records that are digits only.
    struct Digits;

    impl Salvager for Digits {
        fn look(&mut self, record: &[u8]) -> Look {
            match record {
                [b'5', ..] => Look::Doubtful,
                [b'9', ..] => Look::Bad("nines".into()),
                _ => Look::Plausible,
            }
        }

        fn decode(&mut self, records: &[u8], _: bool) -> Result<Vec<RecordBatch>, String> {
            let text = std::str::from_utf8(records).map_err(|e| e.to_string())?;
            let lines: Vec<&str> = text.lines().collect();
            if let Some(bad) = lines.iter().find(|l| !l.bytes().all(|b| b.is_ascii_digit())) {
                return Err(format!("not digits: {bad}"));
            }
            let a = arrow_array::StringArray::from(lines);
            Ok(vec![RecordBatch::try_from_iter([("d", Arc::new(a) as _)]).unwrap()])
        }
    }

    #[test]
    fn salvage_sets_bad_records_apart_with_their_lines_and_bytes() {
        let data = b"1\n22\nx3\n\n44\n9\n5y";
        let at = Stream {
            path: Path::new("f"),
            byte: 100,
            line: 7,
            csv: None,
            skip_first: false,
            skip_blank: true,
            batch_rows: 2,
        };
        let (batches, bad) = salvage(&data[..], at, &mut Digits).unwrap();
        // 1 and 22 held and decoded together; x3 fails the next two held,
        // decoded alone; 9 is surely bad; 5y doubtful, decoded alone.
        let rows: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
        assert_eq!(rows, [2, 1]);
        let at: Vec<_> = bad.iter().map(|b| (b.location.line, b.location.byte, b.raw.clone())).collect();
        let want =
            [(Some(9), 105, b"x3\n".to_vec()), (Some(12), 112, b"9\n".to_vec()), (Some(13), 114, b"5y".to_vec())];
        assert_eq!(at, want);
        assert_eq!((bad[1].error.as_str(), bad[2].len), ("nines", 2));
    }

    #[test]
    fn csv_records_may_hold_newlines_in_quotes() {
        let data = b"a,\"b\nc\"\nd,e\n";
        let mut reader = BufReader::with_capacity(3, &data[..]);
        let mut scanner = Scanner::new(&crate::CsvOptions::default());
        let mut out = Vec::new();
        assert_eq!(next_record(&mut reader, Some(&mut scanner), &mut out).unwrap(), 8);
        assert_eq!(out, b"a,\"b\nc\"\n");
        out.clear();
        assert_eq!(next_record(&mut reader, Some(&mut scanner), &mut out).unwrap(), 4);
        out.clear();
        assert_eq!(next_record(&mut reader, Some(&mut scanner), &mut out).unwrap(), 0);
    }
}
