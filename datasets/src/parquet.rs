//! Parquet: splits are ranges of row groups; reading and writing go through
//! the parquet crate's Arrow integration.

use std::fs::File;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::listing::InputFile;

/// The compressed size of each row group of the file at `path`.
pub(crate) fn row_group_sizes(file: &InputFile) -> Result<Vec<u64>> {
    let (path, file) = (&file.path, Blob::open(file)?);
    let meta = ParquetMetaDataReader::new().parse_and_finish(&file).map_err(|e| Error::invalid(path, e))?;
    Ok(meta.row_groups().iter().map(|rg| rg.compressed_size().max(0) as u64).collect())
}

/// Each row group of the file at `path`: where its column chunks start,
/// their compressed size, and its rows.
pub(crate) fn row_groups(file: &InputFile) -> Result<Vec<(u64, u64, u64)>> {
    let (path, file) = (&file.path, Blob::open(file)?);
    let meta = ParquetMetaDataReader::new().parse_and_finish(&file).map_err(|e| Error::invalid(path, e))?;
    Ok(meta
        .row_groups()
        .iter()
        .map(|rg| {
            let start = rg.columns().iter().map(|c| c.byte_range().0).min().unwrap_or(0);
            (start, rg.compressed_size().max(0) as u64, rg.num_rows().max(0) as u64)
        })
        .collect())
}

/// The Arrow schema of the parquet file at `path`.
pub(crate) fn schema(file: &InputFile) -> Result<SchemaRef> {
    let (path, file) = (&file.path, Blob::open(file)?);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::invalid(path, e))?;
    Ok(builder.schema().clone())
}

/// Reads row groups `[start, end)` of `path` in batches of `batch_rows`,
/// only the top-level columns `projection` if given.
pub(crate) fn read(
    file: &InputFile,
    start: usize,
    end: usize,
    batch_rows: usize,
    projection: Option<&[usize]>,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send + use<>> {
    let (path, file) = (&file.path, Blob::open(file)?);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| {
            let b = b.with_row_groups((start..end).collect()).with_batch_size(batch_rows);
            match projection {
                Some(p) => {
                    let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), p.iter().copied());
                    b.with_projection(mask).build()
                }
                None => b.build(),
            }
        })
        .map_err(|e| Error::invalid(path, e))?;
    Ok(reader.map(|r| r.map_err(|e| e.to_string())))
}

/// A parquet writer (zstd-compressed, row groups of at most `row_group_rows`).
pub(crate) fn writer(
    file: File,
    schema: SchemaRef,
    row_group_rows: usize,
) -> parquet::errors::Result<ArrowWriter<File>> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    ArrowWriter::try_new(file, schema, Some(props))
}
