//! Reading a split under a job's bad-record policy: the fast read first,
//! and only when it fails, the split again record by record (row group by
//! row group, batch by batch), with the records that cannot be read set
//! apart as [`BadRecord`]s.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::builder::StringBuilder;
use arrow_schema::SchemaRef;

use crate::bad::{self, BadRecord, Encoding, Look, OnBadRecord, Salvager, Stream};
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
                bad::salvage(source, at, &mut s)
            }
            Format::Csv => {
                let opts = self.opts.csv;
                at.csv = Some(Scanner::new(&opts));
                at.skip_first = opts.header && split.range == SplitRange::Whole;
                let mut s = CsvSalvager::new(self.full.clone(), self.projection.clone(), opts, at.batch_rows);
                bad::salvage(source, at, &mut s)
            }
            Format::Jsonl => {
                at.skip_blank = true;
                let mut s = JsonSalvager::new(self.schema.clone(), self.json_strict(), at.batch_rows)
                    .map_err(|m| Error::invalid(&split.file.path, m))?;
                bad::salvage(source, at, &mut s)
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
            csv_message(&e.to_string())
        })
    }
}

/// An arrow-csv error about records decoded on their own, without the
/// line numbers it counts (from the decoder's first record, not the
/// file's) and the row it repeats (the bad record shows its raw text).
fn csv_message(message: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::csv_message;

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
            assert_eq!(csv_message(message), want);
        }
    }
}
