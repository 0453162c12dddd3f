//! Arrow IPC files: splits are ranges of record batches, read by index
//! through the file's footer.

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_schema::SchemaRef;

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::listing::InputFile;

/// The size in the file (metadata and body) of each record batch.
pub(crate) fn batch_sizes(file: &InputFile) -> Result<Vec<u64>> {
    Ok(blocks(file)?.into_iter().map(|(_, len)| len).collect())
}

/// Each record batch's place in the file: its offset and its size
/// (metadata and body).
pub(crate) fn blocks(file: &InputFile) -> Result<Vec<(u64, u64)>> {
    let (path, len) = (&file.path, file.size);
    let bad = |m: String| Error::invalid(path, format!("not an Arrow IPC file: {m}"));
    let blob = Blob::open(file)?;
    let read_exact_at = |buf: &mut [u8], at: u64| match blob.read_at(buf, at) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(_) => Err(Error::io(path, std::io::ErrorKind::UnexpectedEof.into())),
        Err(e) => Err(Error::io(path, e)),
    };
    if len < 10 {
        return Err(bad("too short".into()));
    }
    let mut tail = [0u8; 10];
    read_exact_at(&mut tail, len - 10)?;
    let footer_len = arrow_ipc::reader::read_footer_length(tail).map_err(|e| bad(e.to_string()))? as u64;
    if footer_len + 10 > len {
        return Err(bad("footer longer than the file".into()));
    }
    let mut footer = vec![0; footer_len as usize];
    read_exact_at(&mut footer, len - 10 - footer_len)?;
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
pub(crate) fn batch_rows_at(file: &InputFile, offset: u64) -> Option<u64> {
    let blob = Blob::open(file).ok()?;
    let read_exact_at = |buf: &mut [u8], at: u64| blob.read_at(buf, at).ok().filter(|&n| n == buf.len());
    let mut head = [0u8; 8];
    read_exact_at(&mut head, offset)?;
    // A continuation marker, then the metadata's length.
    let (at, len) = if head[..4] == [0xff; 4] {
        (offset + 8, i32::from_le_bytes(head[4..].try_into().ok()?))
    } else {
        (offset + 4, i32::from_le_bytes(head[..4].try_into().ok()?))
    };
    let mut meta = vec![0; usize::try_from(len).ok()?.min(1 << 24)];
    read_exact_at(&mut meta, at)?;
    let message = arrow_ipc::root_as_message(&meta).ok()?;
    Some(message.header_as_record_batch()?.length().max(0) as u64)
}

/// The schema of the Arrow IPC file at `path`.
pub(crate) fn schema(file: &InputFile) -> Result<SchemaRef> {
    let path = &file.path;
    let reader =
        FileReader::try_new(Blob::open(file)?.seekable(file.size), None).map_err(|e| Error::invalid(path, e))?;
    Ok(reader.schema())
}

/// Reads record batches `[start, end)` of `path`, only the columns
/// `projection` if given.
pub(crate) fn read(
    file: &InputFile,
    start: usize,
    end: usize,
    projection: Option<Vec<usize>>,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send + use<>> {
    let path = &file.path;
    let mut reader =
        FileReader::try_new(Blob::open(file)?.seekable(file.size), projection).map_err(|e| Error::invalid(path, e))?;
    reader.set_index(start).map_err(|e| Error::invalid(path, e))?;
    Ok(reader.take(end - start).map(|r| r.map_err(|e| e.to_string())))
}
