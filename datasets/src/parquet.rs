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

/// A parquet file writer (zstd, `row_group_rows` rows a row group) that
/// keeps every type parquet can say: a timestamp or time of seconds, which
/// parquet has no unit for, is written in milliseconds (with its zone), and
/// a `Date64` as a date; JSON text columns are annotated JSON. The Arrow
/// schema written goes in the file's metadata, as the parquet crate does.
pub(crate) fn writer(file: File, schema: SchemaRef, row_group_rows: usize) -> parquet::errors::Result<ParquetWriter> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let written = storable(&schema);
    let inner = ArrowWriter::try_new(file, written.clone().unwrap_or(schema), Some(props))?;
    Ok(ParquetWriter { inner, cast_to: written })
}

/// `schema` with its fields of types parquet cannot annotate changed to
/// ones it can, or `None` when it has none.
fn storable(schema: &SchemaRef) -> Option<SchemaRef> {
    use arrow_schema::{DataType, Field, TimeUnit};
    let storable = |f: &Field| match f.data_type() {
        DataType::Timestamp(TimeUnit::Second, zone) => {
            Some(f.clone().with_data_type(DataType::Timestamp(TimeUnit::Millisecond, zone.clone())))
        }
        DataType::Time32(TimeUnit::Second) => Some(f.clone().with_data_type(DataType::Time32(TimeUnit::Millisecond))),
        DataType::Date64 => Some(f.clone().with_data_type(DataType::Date32)),
        // The parquet crate annotates JSON only where the extension's
        // metadata is there too (empty, for JSON).
        _ if crate::json_infer::is_json_text(f) && !f.metadata().contains_key(EXTENSION_METADATA) => {
            let mut metadata = f.metadata().clone();
            metadata.insert(EXTENSION_METADATA.to_string(), String::new());
            Some(f.clone().with_metadata(metadata))
        }
        _ => None,
    };
    if !schema.fields().iter().any(|f| storable(f).is_some()) {
        return None;
    }
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| storable(f).unwrap_or_else(|| f.as_ref().clone())).collect();
    Some(std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// The field metadata key of an Arrow extension type's metadata.
const EXTENSION_METADATA: &str = "ARROW:extension:metadata";

/// Writes record batches to a parquet file: see [`writer`].
pub(crate) struct ParquetWriter {
    inner: ArrowWriter<File>,
    /// The schema written, when columns are cast to it.
    cast_to: Option<SchemaRef>,
}

impl ParquetWriter {
    /// Appends one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let Some(schema) = &self.cast_to else { return self.inner.write(batch) };
        let columns = (batch.columns().iter().zip(schema.fields()))
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(c.clone()),
                false => arrow_cast::cast(c, f.data_type()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.write(&RecordBatch::try_new(schema.clone(), columns)?)
    }

    /// Bytes written to the file so far, and those buffered for the row
    /// group in progress.
    pub(crate) fn size(&self) -> u64 {
        self.inner.bytes_written() as u64 + self.inner.in_progress_size() as u64
    }

    /// Writes the footer; the file.
    pub(crate) fn into_inner(self) -> parquet::errors::Result<File> {
        self.inner.into_inner()
    }
}
