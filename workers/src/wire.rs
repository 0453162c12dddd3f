//! The event contract with functions outside the process, as one set of
//! serde types: what the lambda, http and aws_lambda backends send
//! (`external/event.rs`) and what `fanout serve` receives (`host/`).
//!
//! An event is `{"stage", "task", "attempt", "key", "shuffle_to",
//! "params", ...}` and one of:
//! - `"records": [...]`, the task's records inline;
//! - `"split": {...}`, a reference to the task's split ([`SplitRef`]),
//!   which the function reads itself;
//! - `"shuffle": {"format": "jsonl", "pieces": [...]}`, a keyed stage's
//!   partition in object storage ([`ShuffleRef`]), in map task order.
//!
//! A map event may carry `shuffle_to` ([`ShuffleTo`]): a function that can
//! write its partitioned output there answers with the pieces it wrote.

use std::borrow::Cow;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::function::{Piece, ShuffleTo};

/// An event, as sent and as received. A sender leaves `records` out and
/// writes them after the rest (they are encoded straight from the task's
/// batches, see [`Event::write_head`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Event<'a> {
    /// The stage's name.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub(crate) stage: Option<Cow<'a, str>>,
    /// The task: a split index, or a partition.
    #[serde(default)]
    pub(crate) task: u64,
    /// 1 for the first attempt.
    #[serde(default = "first")]
    pub(crate) attempt: u32,
    /// A keyed stage's key: the records are a whole partition, reduced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<Vec<String>>,
    /// Where to write the output, partitioned, instead of answering it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shuffle_to: Option<ShuffleTo>,
    /// The stage's params.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub(crate) params: Option<&'a RawValue>,
    /// A reference to the task's split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) split: Option<SplitRef>,
    /// A partition's pieces in object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shuffle: Option<ShuffleRef>,
    /// The task's records, inline.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub(crate) records: Option<Vec<&'a RawValue>>,
}

fn first() -> u32 {
    1
}

impl Default for Event<'_> {
    /// An event of no stage, task 0, attempt 1, carrying nothing.
    fn default() -> Self {
        Event {
            stage: None,
            task: 0,
            attempt: first(),
            key: None,
            shuffle_to: None,
            params: None,
            split: None,
            shuffle: None,
            records: None,
        }
    }
}

impl Event<'_> {
    /// Writes the event to `out` without its closing brace, so that the
    /// sender can add `,"records":[...]` and close it.
    pub(crate) fn write_head(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("an event serializes");
        out.pop();
    }
}

/// A reference to a task's split: a byte range of a file (or an object),
/// a range of a Parquet file's row groups or of an Arrow file's batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SplitRef {
    /// A local file's absolute path, or an object's URL.
    pub(crate) path: PathBuf,
    /// Its format (`csv`, `jsonl`, `text`, `parquet`, `arrow`).
    pub(crate) format: String,
    /// Its compression (`none`, `gzip`, `zstd`): a compressed file is read
    /// whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) compression: Option<String>,
    /// The byte range, for text formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) length: Option<u64>,
    /// Row groups `[start, end)`, for Parquet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) row_groups: Option<[usize; 2]>,
    /// Record batches `[start, end)`, for Arrow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) batches: Option<[usize; 2]>,
    /// Whether csv files start with a header (a byte range past the start
    /// never holds it: `columns` say what it had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) header: Option<bool>,
    /// The columns to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) columns: Option<Vec<String>>,
}

/// A partition in object storage, as a reduce event's `shuffle` refers to
/// it: its pieces, in map task order, each JSON object lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShuffleRef {
    pub(crate) format: String,
    pub(crate) pieces: Vec<Piece>,
}

impl ShuffleRef {
    /// The pieces of a partition, as JSON lines.
    pub(crate) fn jsonl(pieces: Vec<Piece>) -> ShuffleRef {
        ShuffleRef { format: "jsonl".to_string(), pieces }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_sent_is_the_event_received() {
        let params = serde_json::from_str::<&RawValue>(r#"{"n": 1}"#).unwrap();
        let split = SplitRef {
            path: "/data/in.csv".into(),
            format: "csv".into(),
            compression: Some("none".into()),
            offset: Some(10),
            length: Some(20),
            row_groups: None,
            batches: None,
            header: Some(true),
            columns: Some(vec!["a".into()]),
        };
        let sent = Event {
            stage: Some("count".into()),
            task: 3,
            attempt: 2,
            key: Some(vec!["word".into()]),
            params: Some(params),
            split: Some(split.clone()),
            ..Event::default()
        };
        let mut out = Vec::new();
        sent.write_head(&mut out);
        out.extend_from_slice(br#","records":[{"a":1}]}"#);
        let got: Event<'_> = serde_json::from_slice(&out).unwrap();
        assert_eq!((got.stage.as_deref(), got.task, got.attempt), (Some("count"), 3, 2));
        assert_eq!((got.key, got.split), (Some(vec!["word".to_string()]), Some(split)));
        assert_eq!(got.params.map(RawValue::get), Some(r#"{"n": 1}"#));
        assert_eq!(got.records.unwrap().iter().map(|r| r.get()).collect::<Vec<_>>(), [r#"{"a":1}"#]);
        // What a sender leaves out is not written.
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("shuffle") && !text.contains("row_groups"), "{text}");
        // A receiver takes an event with none of the optional fields.
        let bare: Event<'_> = serde_json::from_str(r#"{"records": []}"#).unwrap();
        assert_eq!((bare.task, bare.attempt, bare.stage), (0, 1, None));
    }
}
