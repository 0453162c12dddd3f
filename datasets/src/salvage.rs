//! Reading a split under a job's bad-record policy: the fast read first,
//! and only when it fails, the split again record by record (row group by
//! row group, batch by batch), with the records that cannot be read set
//! apart as [`BadRecord`]s.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::builder::StringBuilder;
use arrow_schema::SchemaRef;

use crate::bad::{self, BadRecord, Encoding, OnBadRecord, Salvager, Stream};
use crate::csv::{self, CsvOptions, Scanner};
use crate::dataset::{Dataset, OpenFiles};
use crate::error::{Error, Location, Result};
use crate::format::Format;
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
                let groups = parquet::row_groups(path)?;
                self.salvage_ranges(split, start..end, "row group", |i| {
                    let (byte, len, rows) = groups.get(i).copied().unwrap_or_default();
                    let read = parquet::read(path, i, i + 1, batch_rows, self.projection.as_deref())
                        .and_then(|b| b.collect::<Result<Vec<_>, String>>().map_err(|m| Error::invalid(path, m)));
                    (read, byte, len, Some(rows))
                })
            }
            SplitRange::Batches { start, end, .. } => {
                let blocks = ipc::blocks(path)?;
                self.salvage_ranges(split, start..end, "batch", |i| {
                    let (byte, len) = blocks.get(i).copied().unwrap_or_default();
                    let read = ipc::read(path, i, i + 1, self.projection.clone())
                        .and_then(|b| b.collect::<Result<Vec<_>, String>>().map_err(|m| Error::invalid(path, m)));
                    (read, byte, len, ipc::batch_rows_at(path, byte))
                })
            }
            SplitRange::Bytes { offset, .. } => {
                let line = self.lines.line_at(path, offset).map_err(|e| Error::io(path, e))?;
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
                let mut s = TextSalvager { lossy, lines: StringBuilder::new() };
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
                let mut s = JsonSalvager::new(self.schema.clone(), at.batch_rows)
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
    lines: StringBuilder,
}

impl Salvager for TextSalvager {
    fn push(&mut self, record: &[u8]) -> Result<(), String> {
        let line = record.strip_suffix(b"\n").unwrap_or(record);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::str::from_utf8(line) {
            Ok(text) => self.lines.append_value(text),
            Err(_) if self.lossy => self.lines.append_value(String::from_utf8_lossy(line)),
            Err(e) => return Err(format!("invalid UTF-8 at byte {} of the line", e.valid_up_to())),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>, String> {
        let lines = Arc::new(self.lines.finish());
        Ok(vec![RecordBatch::try_new(text::schema(), vec![lines]).map_err(|e| e.to_string())?])
    }
}

/// Csv records: each decoded alone to check it, the good ones decoded
/// again together.
struct CsvSalvager {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    opts: CsvOptions,
    batch_rows: usize,
    check: arrow_csv::reader::Decoder,
    good: Vec<u8>,
}

impl CsvSalvager {
    fn new(schema: SchemaRef, projection: Option<Vec<usize>>, opts: CsvOptions, batch_rows: usize) -> Self {
        let check = csv::decoder(schema.clone(), projection.clone(), &opts, 1);
        CsvSalvager { schema, projection, opts, batch_rows, check, good: Vec::new() }
    }

    fn decoder(&self, batch_rows: usize) -> arrow_csv::reader::Decoder {
        csv::decoder(self.schema.clone(), self.projection.clone(), &self.opts, batch_rows)
    }
}

impl Salvager for CsvSalvager {
    fn push(&mut self, record: &[u8]) -> Result<(), String> {
        match csv::decode_records(&mut self.check, record) {
            Ok(_) => {
                self.good.extend_from_slice(record);
                Ok(())
            }
            Err(e) => {
                // A decoder is not used again after an error.
                self.check = self.decoder(1);
                Err(csv_message(&e.to_string()))
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>, String> {
        let mut decoder = self.decoder(self.batch_rows);
        let out = csv::decode_records(&mut decoder, &self.good).map_err(|e| e.to_string());
        self.good.clear();
        out
    }
}

/// An arrow-csv error about one record decoded alone, without the line
/// numbers it counts (from the decoder's first record, not the file's)
/// and the row it repeats (the bad record shows its raw text).
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

/// Jsonl lines: each decoded alone to check it, the good ones decoded
/// again together.
struct JsonSalvager {
    schema: SchemaRef,
    batch_rows: usize,
    check: arrow_json::reader::Decoder,
    good: Vec<u8>,
}

impl JsonSalvager {
    fn new(schema: SchemaRef, batch_rows: usize) -> Result<Self, String> {
        let check = jsonl::decoder(schema.clone(), 1)?;
        Ok(JsonSalvager { schema, batch_rows, check, good: Vec::new() })
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
    fn push(&mut self, record: &[u8]) -> Result<(), String> {
        match decode_json(&mut self.check, record) {
            Ok(_) => {
                self.good.extend_from_slice(record);
                Ok(())
            }
            Err(e) => {
                self.check = jsonl::decoder(self.schema.clone(), 1)?;
                Err(e.strip_prefix("Json error: ").unwrap_or(&e).to_string())
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>, String> {
        let mut decoder = jsonl::decoder(self.schema.clone(), self.batch_rows)?;
        let out = decode_json(&mut decoder, &self.good);
        self.good.clear();
        out
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
