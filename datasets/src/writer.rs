//! Writers: record batches to csv, jsonl, parquet or Arrow IPC files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::csv::{self, CsvOptions};
use crate::error::{Error, Result};
use crate::format::Format;

/// Writes record batches of one schema to a file in one format.
pub struct Writer {
    inner: Inner,
    path: PathBuf,
    rows: u64,
}

enum Inner {
    Csv(arrow_csv::Writer<BufWriter<File>>),
    Jsonl(arrow_json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(crate::parquet::ParquetWriter),
    Arrow(arrow_ipc::writer::FileWriter<BufWriter<File>>),
}

/// Rows per parquet row group written by fanout.
pub const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;

impl Writer {
    /// Creates (or truncates) `path` and writes batches of `schema` to it.
    /// Text is not an output format: write csv or jsonl instead.
    pub fn create(path: &Path, format: Format, schema: SchemaRef, csv_opts: &CsvOptions) -> Result<Writer> {
        let io = |e| Error::io(path, e);
        let file = File::create(path).map_err(io)?;
        let arrow = |e: arrow_schema::ArrowError| Error::invalid(path, e);
        let inner = match format {
            Format::Text => {
                return Err(Error::Config("text is an input format only; write csv or jsonl".into()));
            }
            Format::Csv => Inner::Csv(csv::writer(BufWriter::new(file), csv_opts)),
            Format::Jsonl => Inner::Jsonl(crate::json_writer().build(BufWriter::new(file))),
            Format::Parquet => Inner::Parquet(
                crate::parquet::writer(file, schema, PARQUET_ROW_GROUP_ROWS).map_err(|e| Error::invalid(path, e))?,
            ),
            Format::Arrow => {
                Inner::Arrow(arrow_ipc::writer::FileWriter::try_new_buffered(file, &schema).map_err(arrow)?)
            }
        };
        Ok(Writer { inner, path: path.to_path_buf(), rows: 0 })
    }

    /// Appends one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let path = &self.path;
        let arrow = |e: arrow_schema::ArrowError| Error::invalid(path, e);
        match &mut self.inner {
            Inner::Csv(w) => w.write(batch).map_err(arrow)?,
            Inner::Jsonl(w) => w.write(batch).map_err(arrow)?,
            Inner::Parquet(w) => w.write(batch).map_err(|e| Error::invalid(path, e))?,
            Inner::Arrow(w) => w.write(batch).map_err(arrow)?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file (footers, flush, fsync) and returns the rows written.
    pub fn finish(self) -> Result<u64> {
        let path = &self.path;
        let arrow = |e: arrow_schema::ArrowError| Error::invalid(path, e);
        let io = |e| Error::io(path, e);
        let file = match self.inner {
            Inner::Csv(w) => w.into_inner().into_inner().map_err(|e| io(e.into_error()))?,
            Inner::Jsonl(mut w) => {
                w.finish().map_err(arrow)?;
                w.into_inner().into_inner().map_err(|e| io(e.into_error()))?
            }
            Inner::Parquet(w) => {
                let mut f = w.into_inner().map_err(|e| Error::invalid(path, e))?;
                f.flush().map_err(io)?;
                f
            }
            Inner::Arrow(mut w) => {
                w.finish().map_err(arrow)?;
                w.into_inner().map_err(arrow)?.into_inner().map_err(|e| io(e.into_error()))?
            }
        };
        file.sync_all().map_err(io)?;
        Ok(self.rows)
    }
}
