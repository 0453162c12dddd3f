//! A stream's output directory: checked before a run makes anything,
//! cleared of an earlier stream's files when overwriting, and its files —
//! windows, parts, late records — written beside their place and renamed
//! into it whole.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::{CsvOptions, Format, Writer};
use fanout_jobs::{OutputMode, Plan};

use super::checkpoint;
use crate::error::EngineError;

/// Refuses an output that is a file, or a directory holding files already
/// (another run's), unless the job overwrites.
pub(super) fn check_output(plan: &Plan) -> Result<(), EngineError> {
    let out = &plan.output.path;
    // Standard output's files are kept in the run directory.
    if plan.output.is_stdout() {
        return Ok(());
    }
    // A prefix in object storage: new or empty, unless overwriting.
    let url = out.to_string_lossy();
    if fanout_datasets::store::is_url(&url) && !url.starts_with("file://") {
        let prefix = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        let found = fanout_datasets::listing::list(std::slice::from_ref(&prefix), &plan.storage).next();
        return match found {
            Some(Ok(_)) if plan.output.mode == OutputMode::Error => Err(EngineError::OutputExists(out.clone())),
            Some(Err(fanout_datasets::Error::NoMatch { .. })) | Some(Ok(_)) | None => Ok(()),
            Some(Err(e)) => Err(EngineError::Input(e)),
        };
    }
    if out.exists() && !out.is_dir() {
        return Err(EngineError::io(
            out,
            std::io::Error::other("a stream's output is a directory, and this is a file"),
        ));
    }
    let taken = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if taken && plan.output.mode == OutputMode::Error {
        return Err(EngineError::OutputExists(out.clone()));
    }
    Ok(())
}

/// Overwriting a prefix in object storage: the objects an earlier stream
/// wrote there (`window-*`, `sessions-*` and `part-*` of the output's
/// format) go first, as a directory's files do; other objects stay.
pub(super) fn clear_prefix(plan: &Plan, prefix: &str, overwrite: bool) -> Result<(), EngineError> {
    if !overwrite {
        return Ok(());
    }
    let ext = format!(".{}", plan.output.format.extension());
    for found in fanout_datasets::listing::list(&[prefix.to_string()], &plan.storage) {
        let file = match found {
            Ok(f) => f,
            Err(fanout_datasets::Error::NoMatch { .. }) => return Ok(()),
            Err(e) => return Err(EngineError::Input(e)),
        };
        let url = file.path.to_string_lossy().into_owned();
        let name = url.strip_prefix(prefix).unwrap_or_default();
        let ours = ["window-", "sessions-", "part-"].iter().any(|p| name.starts_with(p)) && name.ends_with(&ext);
        if ours && !name.contains('/') {
            plan.storage.delete(&url).map_err(EngineError::Output)?;
        }
    }
    Ok(())
}

/// Makes the output directory. Overwriting, the files an earlier stream
/// wrote there (`window-*`, `sessions-*` and `part-*` of the output's format, and their
/// unfinished dot-files) go first, so that two runs' windows never mix;
/// other files are left alone.
pub(super) fn prepare_output(plan: &Plan) -> Result<(), EngineError> {
    let out = &plan.output.path;
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    if plan.output.mode == OutputMode::Overwrite {
        let ext = format!(".{}", plan.output.format.extension());
        for entry in std::fs::read_dir(out).map_err(|e| EngineError::io(out, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bare = name.strip_prefix('.').unwrap_or(&name);
            let ours = (bare.starts_with("window-") || bare.starts_with("sessions-") || bare.starts_with("part-"))
                && (name.ends_with(&ext) || (name.starts_with('.') && name.ends_with(".tmp")));
            if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(entry.path()).map_err(|e| EngineError::io(entry.path(), e))?;
            }
        }
    }
    Ok(())
}

/// Opens `slot`'s part file `NAME-NNNNNN` in `dir` if none is open.
pub(super) fn open_part<'w>(
    slot: &'w mut Option<(Writer, PathBuf, u64)>,
    dir: &Path,
    name: &str,
    number: u64,
    format: Format,
    schema: &SchemaRef,
) -> Result<&'w mut Writer, EngineError> {
    if slot.is_none() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let temp = dir.join(format!(".{name}-{number:06}.tmp"));
        let writer =
            Writer::create(&temp, format, schema.clone(), &CsvOptions::default()).map_err(EngineError::Output)?;
        *slot = Some((writer, temp, number));
    }
    Ok(&mut slot.as_mut().expect("opened above").0)
}

/// Finishes a part and renames it into place; returns its rows and path.
pub(super) fn finish_part(
    writer: Writer,
    temp: &Path,
    dir: &Path,
    name: &str,
    number: u64,
    format: Format,
) -> Result<(u64, PathBuf), EngineError> {
    let rows = writer.finish().map_err(EngineError::Output)?;
    let target = dir.join(format!("{name}-{number:06}.{}", format.extension()));
    place(temp, &target)?;
    Ok((rows, target))
}

/// Writes `batches` as the file `NAME.EXT` of `dir`, whole or not at all;
/// returns its path.
pub(super) fn commit_file(
    dir: &Path,
    name: &str,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<PathBuf, EngineError> {
    let temp = dir.join(format!(".{name}.tmp"));
    let mut writer =
        Writer::create(&temp, format, schema.clone(), &CsvOptions::default()).map_err(EngineError::Output)?;
    for b in batches {
        writer.write(b).map_err(EngineError::Output)?;
    }
    writer.finish().map_err(EngineError::Output)?;
    let target = dir.join(format!("{name}.{}", format.extension()));
    place(&temp, &target)?;
    Ok(target)
}

/// Fsyncs `temp` and renames it to `target` (replacing a file of the same
/// name: the same records, written again by a replay).
pub(super) fn place(temp: &Path, target: &Path) -> Result<(), EngineError> {
    std::fs::File::open(temp).and_then(|f| f.sync_all()).map_err(|e| EngineError::io(temp, e))?;
    std::fs::rename(temp, target).map_err(|e| EngineError::io(target, e))?;
    checkpoint::sync_dir(target.parent().unwrap_or(Path::new(".")))
}
