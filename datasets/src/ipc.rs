//! Arrow IPC files: splits are ranges of record batches, read by index
//! through the file's footer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_schema::SchemaRef;

use crate::error::{Error, Result};

/// The size in the file (metadata and body) of each record batch.
pub(crate) fn batch_sizes(path: &Path) -> Result<Vec<u64>> {
    Ok(blocks(path)?.into_iter().map(|(_, len)| len).collect())
}

/// Each record batch's place in the file: its offset and its size
/// (metadata and body).
pub(crate) fn blocks(path: &Path) -> Result<Vec<(u64, u64)>> {
    let bad = |m: String| Error::invalid(path, format!("not an Arrow IPC file: {m}"));
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < 10 {
        return Err(bad("too short".into()));
    }
    let mut tail = [0u8; 10];
    file.seek(SeekFrom::Start(len - 10)).and_then(|_| file.read_exact(&mut tail)).map_err(|e| Error::io(path, e))?;
    let footer_len = arrow_ipc::reader::read_footer_length(tail).map_err(|e| bad(e.to_string()))? as u64;
    if footer_len + 10 > len {
        return Err(bad("footer longer than the file".into()));
    }
    let mut footer = vec![0; footer_len as usize];
    file.seek(SeekFrom::Start(len - 10 - footer_len))
        .and_then(|_| file.read_exact(&mut footer))
        .map_err(|e| Error::io(path, e))?;
    let footer = arrow_ipc::root_as_footer(&footer).map_err(|e| bad(e.to_string()))?;
    Ok(footer
        .recordBatches()
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| (b.offset().max(0) as u64, (b.metaDataLength().max(0) as u64) + b.bodyLength().max(0) as u64))
                .collect()
        })
        .unwrap_or_default())
}

/// The rows of the record batch whose message starts at `offset` of the
/// file at `path`, as its metadata says; `None` when that cannot be read.
pub(crate) fn batch_rows_at(path: &Path, offset: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).ok()?;
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, offset).ok()?;
    // A continuation marker, then the metadata's length.
    let (at, len) = if head[..4] == [0xff; 4] {
        (offset + 8, i32::from_le_bytes(head[4..].try_into().ok()?))
    } else {
        (offset + 4, i32::from_le_bytes(head[..4].try_into().ok()?))
    };
    let mut meta = vec![0; usize::try_from(len).ok()?.min(1 << 24)];
    file.read_exact_at(&mut meta, at).ok()?;
    let message = arrow_ipc::root_as_message(&meta).ok()?;
    Some(message.header_as_record_batch()?.length().max(0) as u64)
}

/// The schema of the Arrow IPC file at `path`.
pub(crate) fn schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = FileReader::try_new(file, None).map_err(|e| Error::invalid(path, e))?;
    Ok(reader.schema())
}

/// Reads record batches `[start, end)` of `path`, only the columns
/// `projection` if given.
pub(crate) fn read(
    path: &Path,
    start: usize,
    end: usize,
    projection: Option<Vec<usize>>,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send + use<>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = FileReader::try_new(file, projection).map_err(|e| Error::invalid(path, e))?;
    reader.set_index(start).map_err(|e| Error::invalid(path, e))?;
    Ok(reader.take(end - start).map(|r| r.map_err(|e| e.to_string())))
}
