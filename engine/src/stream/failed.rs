//! Records a stream's function failed on, set aside so that the stream
//! goes on (`[stream] on_failure`): each a JSON line
//! `{"stage", "error", "source", "record"}` — `record` the record as the
//! stage got it, `source` the file and record it was read as, where known.
//! They go to the run directory's `rejects/`, a part per checkpoint
//! (`rejects-NNNNNN.jsonl`, renamed into place whole, so a replay writes
//! the same parts), or to an SQS queue (SendMessageBatch, a message each),
//! sent as their batch is applied: a replay after `kill -9` may send a
//! record again, as Lambda's own on-failure destinations may.

use std::io::Write;
use std::path::{Path, PathBuf};

use fanout_jobs::OnFailure;
use fanout_workers::aws::{AwsError, AwsJson};
use serde_json::{Value, json};

use super::output::place;
use super::worker::Failed;
use crate::error::EngineError;

/// Where failed records go.
pub(super) enum SetAside {
    /// Parts of the run directory's `rejects/`; the one being written.
    Rejects { dir: PathBuf, part: Option<(std::fs::File, PathBuf, u64)> },
    /// An SQS queue.
    Sqs { api: Box<AwsJson>, url: String },
}

impl SetAside {
    /// Where `on_failure` says, for a run in `run_dir`.
    pub(super) fn new(on_failure: &OnFailure, run_dir: &Path) -> SetAside {
        match on_failure {
            OnFailure::Rejects => SetAside::Rejects { dir: run_dir.join("rejects"), part: None },
            OnFailure::Sqs { url, region } => {
                SetAside::Sqs { api: Box::new(AwsJson::new("sqs", region, "AmazonSQS", "1.0")), url: url.clone() }
            }
        }
    }

    /// Sets `failed` aside, into part `number` of the rejects.
    pub(super) fn add(&mut self, failed: &[Failed], number: u64) -> Result<(), EngineError> {
        let lines = lines(failed)?;
        match self {
            SetAside::Rejects { dir, part } => {
                if part.is_none() {
                    std::fs::create_dir_all(&*dir).map_err(|e| EngineError::io(&*dir, e))?;
                    let temp = dir.join(format!(".rejects-{number:06}.tmp"));
                    let file = std::fs::File::create(&temp).map_err(|e| EngineError::io(&temp, e))?;
                    *part = Some((file, temp, number));
                }
                let (file, temp, _) = part.as_mut().expect("opened above");
                for line in &lines {
                    writeln!(file, "{line}").map_err(|e| EngineError::io(&*temp, e))?;
                }
                Ok(())
            }
            SetAside::Sqs { api, url } => send(api, url, &lines),
        }
    }

    /// Commits the part being written, if any: its number.
    pub(super) fn commit(&mut self) -> Result<Option<u64>, EngineError> {
        let SetAside::Rejects { dir, part } = self else { return Ok(None) };
        let Some((file, temp, number)) = part.take() else { return Ok(None) };
        drop(file);
        place(&temp, &dir.join(format!("rejects-{number:06}.jsonl")))?;
        Ok(Some(number))
    }
}

/// The JSON lines of `failed`.
fn lines(failed: &[Failed]) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::new();
    for f in failed {
        let mut json = Vec::new();
        let mut writer = arrow_json::LineDelimitedWriter::new(&mut json);
        writer.write(&f.records).map_err(|e| EngineError::Stream(format!("writing failed records: {e}")))?;
        writer.finish().map_err(|e| EngineError::Stream(format!("writing failed records: {e}")))?;
        drop(writer);
        for (row, record) in String::from_utf8_lossy(&json).lines().enumerate() {
            let record: Value = serde_json::from_str(record).unwrap_or(Value::Null);
            let source = f.sources.get(row).cloned().flatten();
            let line = json!({ "stage": f.stage, "error": f.error, "source": source, "record": record });
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// Sends `lines` to the queue at `url`, a message each, trying a failure
/// that may pass again a few times.
fn send(api: &AwsJson, url: &str, lines: &[String]) -> Result<(), EngineError> {
    for chunk in lines.chunks(10) {
        let entries: Vec<Value> =
            chunk.iter().enumerate().map(|(i, l)| json!({ "Id": i.to_string(), "MessageBody": l })).collect();
        let body = json!({ "QueueUrl": url, "Entries": entries });
        let mut tries = 0;
        loop {
            let failed = |why: String| EngineError::Stream(format!("on_failure: sqs queue {url}: {why}"));
            match api.call("SendMessageBatch", &body) {
                Ok(reply) => match reply["Failed"].as_array().and_then(|f| f.first()) {
                    None => break,
                    Some(f) => return Err(failed(format!("SendMessageBatch: {}", f["Message"]))),
                },
                Err(AwsError::Transient(_)) if tries < 5 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200 << tries));
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    }
    Ok(())
}
