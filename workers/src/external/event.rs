//! The event contract of the lambda, http and aws_lambda backends (its
//! types are `wire.rs`'s, which `fanout serve` reads too): the JSON an
//! invocation sends (`{"stage", "task", "attempt", "params", "records"}`,
//! or a `split` reference the function reads itself) and the
//! `{"records": [...]}` it gets back, within the payload limit. A keyed
//! stage's reduce event may instead carry `shuffle`: its partition's
//! pieces in object storage, `{"format": "jsonl", "pieces": [{"path",
//! "offset", "length", "records"}, ...]}`, in map task order. A map
//! event may carry `shuffle_to` (`{"key", "partitions", "path"}`): a
//! function that can write its partitioned output there answers
//! `{"pieces": [[partition, offset, length, records], ...]}`.

use std::str::FromStr;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::{Format, Split, SplitRange};

use serde_json::value::RawValue;

use crate::external::codec;
use crate::function::{FunctionError, Invocation};
use crate::wire::{Event, ShuffleRef, SplitRef};

/// What an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventMode {
    /// The task's records, inline.
    Records,
    /// A reference to the task's split, which the function reads itself.
    Split,
    /// Records when they fit the payload limit, else the reference.
    Auto,
}

impl FromStr for EventMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "records" => Ok(EventMode::Records),
            "split" => Ok(EventMode::Split),
            "auto" => Ok(EventMode::Auto),
            _ => Err(format!("unknown event `{s}`, expected one of: records, split, auto")),
        }
    }
}

/// How a function's events are made and its responses read.
pub(crate) struct EventSpec {
    pub(crate) event: EventMode,
    pub(crate) input_schema: SchemaRef,
    pub(crate) output_schema: SchemaRef,
    /// The input's format, for split references (first stages only).
    pub(crate) input_format: Option<Format>,
    /// Whether csv input files start with a header line.
    pub(crate) csv_header: bool,
    /// The stage's params, as JSON.
    pub(crate) params: String,
    /// A keyed stage's key columns, sent with each (reduce) event.
    pub(crate) key: Option<Vec<String>>,
    pub(crate) payload_limit: u64,
}

impl EventSpec {
    /// The event's JSON: the invocation's context and params, then the
    /// records or the split reference.
    pub(crate) fn event(&self, inv: &Invocation<'_>, batches: &[RecordBatch]) -> Result<Vec<u8>, FunctionError> {
        self.event_as(inv, batches, self.event)
    }

    /// The event, carrying what `mode` says (a split reference, when the
    /// platform refused the records as too large).
    pub(crate) fn event_as(
        &self,
        inv: &Invocation<'_>,
        batches: &[RecordBatch],
        mode: EventMode,
    ) -> Result<Vec<u8>, FunctionError> {
        let spec = self;
        let params = serde_json::from_str::<&RawValue>(&spec.params)
            .map_err(|e| FunctionError::permanent(format!("the stage's params: {e}")))?;
        let mut event = Event {
            stage: Some(inv.stage.into()),
            task: inv.task,
            attempt: inv.attempt,
            key: spec.key.clone(),
            shuffle_to: inv.shuffle_to.cloned(),
            params: Some(params),
            ..Event::default()
        };
        let split = || {
            inv.split
                .map(|split| split_ref(split, spec))
                .ok_or_else(|| FunctionError::permanent("no split to refer to: this stage's input is records"))
        };
        let mut out = Vec::new();
        match mode {
            // A partition in object storage: the pieces, whatever the mode.
            _ if inv.pieces.is_some() => {
                event.shuffle = inv.pieces.map(|p| ShuffleRef::jsonl(p.to_vec()));
                event.write_head(&mut out);
            }
            EventMode::Split => {
                event.split = Some(split()?);
                event.write_head(&mut out);
            }
            EventMode::Records | EventMode::Auto => {
                event.write_head(&mut out);
                out.extend_from_slice(b",\"records\":");
                codec::json_records(batches, &mut out).map_err(FunctionError::permanent)?;
                if mode == EventMode::Auto && out.len() as u64 + 1 > spec.payload_limit && inv.split.is_some() {
                    out.clear();
                    event.split = Some(split()?);
                    event.write_head(&mut out);
                }
            }
        }
        out.push(b'}');
        if out.len() as u64 > spec.payload_limit {
            let hint = if inv.split.is_some() {
                "lower input.chunk_size, or set event = \"auto\" or \"split\" to pass a reference to the split"
            } else {
                "lower input.chunk_size, or send less to this stage"
            };
            return Err(FunctionError::permanent(format!(
                "the event is {} bytes, over the payload limit of {} bytes (platform.payload_limit): {hint}",
                out.len(),
                spec.payload_limit
            )));
        }
        Ok(out)
    }

    /// The response's records as batches of the declared schema;
    /// `decoder` is the caller's, kept from one response to the next.
    pub(crate) fn records(
        &self,
        body: &[u8],
        decoder: &mut Option<arrow_json::reader::Decoder>,
    ) -> Result<Vec<RecordBatch>, FunctionError> {
        let bad = |m: String| FunctionError::permanent(format!("the response {m}"));
        codec::response_records(body, &self.output_schema, decoder).map_err(|e| match e {
            codec::ResponseError::NotJson(e) => bad(format!("is not JSON ({e}): {}", preview(body))),
            codec::ResponseError::NotRecords => bad(format!("is not {{\"records\": [...]}}: {}", preview(body))),
            codec::ResponseError::Records(m) => bad(m),
        })
    }
}

/// The split reference of a `split` event.
fn split_ref(split: &Split, spec: &EventSpec) -> SplitRef {
    // An object's URL as it is; a local file's path made absolute.
    let path = match split.file.is_remote() {
        true => split.file.path.clone(),
        false => std::path::absolute(&split.file.path).unwrap_or_else(|_| split.file.path.clone()),
    };
    let (mut offset, mut length, mut row_groups, mut batches) = (None, None, None, None);
    match split.range {
        SplitRange::Bytes { offset: o, len } => (offset, length) = (Some(o), Some(len)),
        SplitRange::Whole => (offset, length) = (Some(0), Some(split.file.size)),
        SplitRange::RowGroups { start, end, .. } => row_groups = Some([start, end]),
        SplitRange::Batches { start, end, .. } => batches = Some([start, end]),
    }
    SplitRef {
        path,
        format: spec.input_format.map_or("unknown", Format::name).to_string(),
        compression: Some(format!("{:?}", split.file.compression).to_lowercase()),
        offset,
        length,
        row_groups,
        batches,
        // A byte range never holds the header: the columns say what it had.
        header: (spec.input_format == Some(Format::Csv)).then_some(spec.csv_header),
        columns: Some(spec.input_schema.fields().iter().map(|f| f.name().clone()).collect()),
    }
}

/// The `records_read` a response to a split reference may carry: how many
/// records the function read from its split (the engine counts them as
/// the invocation's input).
pub(crate) fn records_read(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Read {
        #[serde(default)]
        records_read: Option<u64>,
    }
    serde_json::from_slice::<Read>(body).ok()?.records_read
}

/// The start of a body, for messages.
pub(crate) fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 { format!("{text}...") } else { text }
}
