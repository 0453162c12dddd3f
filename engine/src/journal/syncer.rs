//! The journal's syncer thread: it takes the workers' batches of finished
//! tasks in groups, appends their invocation records to the log, their
//! saved outputs to `tasks.data`, then their lines to `journal.jsonl`, and
//! fsyncs both files at most [`SYNC_INTERVAL`] after a write.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use crate::error::EngineError;
use crate::records::{Columns, Encoder, Log};

use super::index::write_line;
use super::{Batch, SYNC_INTERVAL, WRITE_INTERVAL};

/// The syncer: appends outputs, then journals them, a group at a time;
/// fsyncs both at most [`SYNC_INTERVAL`] after a write, and at the end
/// unless `stop` says nothing will be resumed.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    rx: crossbeam_channel::Receiver<Batch>,
    spare: &crossbeam_channel::Sender<Batch>,
    mut data: File,
    data_path: PathBuf,
    mut journal: File,
    path: PathBuf,
    log: &Log,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), EngineError> {
    let mut offset = data.metadata().map_err(|e| EngineError::io(&data_path, e))?.len();
    // Buffers kept across groups.
    let (mut records, mut lines, mut bytes) = (Columns::default(), Vec::new(), Vec::new());
    let mut encoder = Encoder::default();
    let mut held = None;
    // When the oldest write not yet synced happened.
    let mut unsynced: Option<std::time::Instant> = None;
    // Data first: a line that reached the disk names bytes that did,
    // unless the machine crashed in between (then its checksum fails).
    let sync = |data: &File, journal: &File, unsynced: &mut Option<std::time::Instant>| {
        if unsynced.take().is_some() {
            data.sync_data().map_err(|e| EngineError::io(&data_path, e))?;
            journal.sync_data().map_err(|e| EngineError::io(&path, e))?;
        }
        Ok::<(), EngineError>(())
    };
    loop {
        // What finishes meanwhile joins the group; `finish` unparks.
        std::thread::park_timeout(WRITE_INTERVAL);
        let first = match held.take().map_or_else(|| rx.try_recv(), Ok) {
            Ok(b) => Some(b),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        };
        if let Some(first) = first {
            let mut group: Vec<Batch> = std::iter::once(first).chain(rx.try_iter()).collect();
            for b in &mut group {
                records.append(&mut b.records);
            }
            log.write(&mut encoder, &mut records)?;
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Nothing more to journal; the records still belong in the log.
                for mut b in rx.try_iter() {
                    records.append(&mut b.records);
                }
                return log.write(&mut encoder, &mut records);
            }
            lines.clear();
            bytes.clear();
            for b in &group {
                let (mut at, mut t) = (0, 0);
                for &(len, count) in &b.saved {
                    let saved = &b.bytes[at..at + len];
                    at += len;
                    let xxh3 = xxhash_rust::xxh3::xxh3_64(saved);
                    let offset = offset + bytes.len() as u64;
                    // One line per phase of its tasks (in practice one: a
                    // slot hands its tasks over when its phase ends).
                    for same in b.tasks[t..t + count].chunk_by(|x, y| x.phase == y.phase) {
                        let tasks = same.iter().map(|d| (d.task, d.rows, d.input, d.bad));
                        write_line(&mut lines, same[0].phase, offset, len as u64, xxh3, same[0].skip, tasks);
                    }
                    t += count;
                    bytes.extend_from_slice(saved);
                }
            }
            for mut b in group {
                b.bytes.clear();
                b.saved.clear();
                b.tasks.clear();
                let _ = spare.try_send(b);
            }
            if !lines.is_empty() {
                data.write_all(&bytes).map_err(|e| EngineError::io(&data_path, e))?;
                offset += bytes.len() as u64;
                journal.write_all(&lines).map_err(|e| EngineError::io(&path, e))?;
                unsynced.get_or_insert_with(std::time::Instant::now);
            }
        }
        if unsynced.is_some_and(|t| t.elapsed() >= SYNC_INTERVAL) {
            sync(&data, &journal, &mut unsynced)?;
        }
        match rx.try_recv() {
            Ok(b) => held = Some(b),
            Err(crossbeam_channel::TryRecvError::Empty) => {}
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        }
    }
    // The channel is closed: the run is over. A run that may be resumed
    // keeps everything it journaled.
    if !stop.load(std::sync::atomic::Ordering::Relaxed) {
        sync(&data, &journal, &mut unsynced)?;
    }
    Ok(())
}
