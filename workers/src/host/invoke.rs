//! The host's side of the event contract: an event decoded (records, a
//! split reference or shuffle pieces), the function it names planned for
//! its records' schema (kept warm per connection) and invoked, and the
//! reply encoded.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde_json::value::RawValue;

use super::JobFunction;
use crate::external::codec;
use crate::function::{FunctionError, Invocation, MapInstance, StageSpec};
use crate::wire::{Event, SplitRef};

/// What a name on the host serves.
pub(super) enum Served<'a> {
    Builtin(&'a dyn crate::function::Builtin),
    Job(&'a JobFunction, &'a dyn crate::external::Backend),
}

impl Served<'_> {
    /// Plans the function for records of `schema` with `params`.
    fn plan(
        &self,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        schema: &SchemaRef,
        key: Option<&[String]>,
        payload_limit: u64,
    ) -> Result<Arc<dyn crate::function::Planned>, FunctionError> {
        match self {
            Served::Builtin(b) => b.plan(&StageSpec { params, input: schema, key }),
            Served::Job(f, backend) => backend.plan(
                &f.function,
                &crate::external::ExternalContext {
                    stage: name,
                    input: schema,
                    input_format: None,
                    csv_header: true,
                    csv: fanout_datasets::CsvOptions::default(),
                    key,
                    params,
                    payload_limit,
                    memory_limit: f.memory_limit,
                    memory_mb: f.memory_mb,
                },
            ),
        }
    }
}

/// A planned builtin kept warm on a connection: which function and params
/// it is for, and a decoder of its input's schema.
pub(super) struct Warm {
    name: String,
    params: String,
    key: Option<Vec<String>>,
    schema: SchemaRef,
    decoder: arrow_json::reader::Decoder,
    instance: Box<dyn MapInstance>,
    /// For a keyed stage's partition: the reduce that follows the
    /// map-side step.
    reduce: Option<Box<dyn crate::function::ReduceInstance>>,
    /// Each invocation's time limit (a job function's `platform.timeout`).
    timeout: Option<std::time::Duration>,
}

impl Warm {
    /// Whether the instance serves function `name` with these params and
    /// key.
    fn serves(&self, name: &str, params: &str, key: &Option<Vec<String>>) -> bool {
        self.name == name && self.params == params && &self.key == key
    }
}

/// One storage for the host's life: its clients keep their connections.
pub(super) fn storage() -> &'static Arc<fanout_datasets::Storage> {
    static STORAGE: std::sync::OnceLock<Arc<fanout_datasets::Storage>> = std::sync::OnceLock::new();
    STORAGE.get_or_init(Arc::default)
}

/// Runs function `name` on the event `body`; the reply's body.
pub(super) fn invoke(
    name: &str,
    served: &Served<'_>,
    body: &[u8],
    warm: &mut Option<Warm>,
    payload_limit: u64,
) -> Result<Vec<u8>, FunctionError> {
    let event = parse_event(body).map_err(FunctionError::permanent)?;
    invoke_event(name, served, event, warm, payload_limit)
}

/// The event in `body`, or what is wrong with it: it must be a JSON
/// object with its records (a list), a split reference or shuffle pieces.
pub(super) fn parse_event(body: &[u8]) -> Result<Event<'_>, String> {
    const SHAPE: &str = "the event must be a JSON object with \"records\" (a list)";
    // serde would take a list for the struct's fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => format!("{SHAPE}; this is not an object"),
            Err(e) => format!("the event is not JSON: {e}"),
        });
    }
    let event: Event<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("{SHAPE} (line {}, column {})", e.line(), e.column()),
        _ => format!("the event is not JSON: {e}"),
    })?;
    if event.records.is_none() && event.split.is_none() && event.shuffle.is_none() {
        return Err(format!("{SHAPE}, a \"split\" or \"shuffle\" pieces; it has none"));
    }
    // Each record an object, checked before an invocation is accepted.
    let records = event.records.as_deref().unwrap_or_default();
    if let Some(i) = records.iter().position(|r| !r.get().starts_with('{')) {
        return Err(format!("{SHAPE} of objects; record {i} is `{}`", cut(records[i].get())));
    }
    Ok(event)
}

/// `text`, cut to its first 40 characters.
fn cut(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Runs function `name` on `event`; the reply's body.
pub(super) fn invoke_event(
    name: &str,
    served: &Served<'_>,
    mut event: Event<'_>,
    warm: &mut Option<Warm>,
    payload_limit: u64,
) -> Result<Vec<u8>, FunctionError> {
    let params_text = event.params.map_or("{}", RawValue::get);
    if let (Some(split), None) = (&event.split, &event.records) {
        let batches = read_split(split)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            return Ok(b"{\"records\":[],\"records_read\":0}".to_vec());
        };
        let fits = warm.as_ref().is_some_and(|w| w.serves(name, params_text, &event.key) && w.schema == schema);
        if !fits {
            let decoder = decoder(&schema)?;
            *warm = Some(plan(name, served, params_text, &event.key, schema, decoder, payload_limit)?);
        }
        let mut reply = call(warm.as_mut().expect("just made"), &event, name, batches)?;
        // The records it read, for the caller's input count.
        reply.pop();
        reply.extend_from_slice(format!(",\"records_read\":{rows}}}").as_bytes());
        return Ok(reply);
    }
    let lines = match (&event.shuffle, event.records.take()) {
        (Some(shuffle), None) => shuffle.lines(storage())?,
        (_, records) => {
            let records = records.unwrap_or_default();
            let size: usize = records.iter().map(|r| r.get().len() + 1).sum();
            let mut lines = Vec::with_capacity(size);
            for r in &records {
                if !r.get().starts_with('{') {
                    return Err(FunctionError::permanent(format!("a record is not a JSON object: {}", r.get())));
                }
                lines.extend_from_slice(r.get().as_bytes());
                lines.push(b'\n');
            }
            lines
        }
    };
    if lines.is_empty() {
        return Ok(b"{\"records\":[]}".to_vec());
    }
    // The same function and params as last time: the records most likely
    // have the same schema. They are decoded with it strictly (a field it
    // does not have is an error, not dropped), and on any error the
    // schema is inferred again.
    let reused = match warm {
        Some(w) if w.serves(name, params_text, &event.key) => decode(&mut w.decoder, &lines).ok(),
        _ => None,
    };
    let batches = match reused {
        Some(b) => b,
        None => {
            let schema = infer(&lines)?;
            let mut decoder = decoder(&schema)?;
            let batches = decode(&mut decoder, &lines)?;
            *warm = Some(plan(name, served, params_text, &event.key, schema, decoder, payload_limit)?);
            batches
        }
    };
    let called = call(warm.as_mut().expect("just made"), &event, name, batches);
    // A container killed at its deadline, or crashed, is replaced.
    if warm.as_ref().is_some_and(|w| w.instance.spent() || w.reduce.as_ref().is_some_and(|r| r.spent())) {
        *warm = None;
    }
    called
}

/// Plans function `name` for `schema` with the params `params_text`, and
/// starts an instance of it (its cold start).
pub(super) fn plan(
    name: &str,
    served: &Served<'_>,
    params_text: &str,
    key: &Option<Vec<String>>,
    schema: SchemaRef,
    decoder: arrow_json::reader::Decoder,
    payload_limit: u64,
) -> Result<Warm, FunctionError> {
    let params: serde_json::Map<String, serde_json::Value> = serde_json::from_str(params_text)
        .map_err(|e| FunctionError::permanent(format!("params must be a JSON object: {e}")))?;
    let planned = served.plan(name, &params, &schema, key.as_deref(), payload_limit)?;
    let instance = planned.init()?;
    // A keyed function reduces what its map side made of the partition.
    let reduce = match key {
        Some(_) => Some(planned.init_reduce().ok_or_else(|| {
            FunctionError::permanent(format!("`{name}` is not a keyed function: it has no reduce"))
        })??),
        None => None,
    };
    let (name, params, key) = (name.to_string(), params_text.to_string(), key.clone());
    let timeout = match served {
        Served::Job(f, _) => f.timeout,
        Served::Builtin(_) => None,
    };
    Ok(Warm { name, params, key, schema, decoder, instance, reduce, timeout })
}

/// Calls the warm instance on `batches`; the reply's body.
pub(super) fn call(
    w: &mut Warm,
    event: &Event<'_>,
    name: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<u8>, FunctionError> {
    let stage = event.stage.as_deref().unwrap_or(name);
    let deadline = w.timeout.map(|t| std::time::Instant::now() + t);
    let inv = Invocation { attempt: event.attempt, deadline, ..Invocation::plain(stage, event.task) };
    let mut out = w.instance.call(&inv, batches)?;
    if let Some(reduce) = &mut w.reduce {
        out = reduce.call(&inv, out)?;
    }
    if let Some(to) = &event.shuffle_to {
        return crate::shuffle::write_reply(storage(), to, out);
    }
    let mut reply = Vec::with_capacity(64 + out.iter().map(|b| b.get_array_memory_size()).sum::<usize>());
    reply.extend_from_slice(b"{\"records\":");
    codec::json_records(&out, &mut reply).map_err(FunctionError::permanent)?;
    reply.push(b'}');
    Ok(reply)
}

/// Reads the records of a split reference from a file this host can see
/// (a shared file system) or from object storage (an `s3://` URL, reached
/// as the environment says): the file's schema is inferred as the
/// coordinator's was, and only the referenced columns are read.
pub(super) fn read_split(r: &SplitRef) -> Result<Vec<RecordBatch>, FunctionError> {
    use fanout_datasets::{Dataset, DatasetOptions, Format, InputFile, OpenFiles, Split, SplitRange};
    let storage = storage();
    let bad = |m: String| FunctionError::permanent(format!("the split reference: {m}"));
    let format: Format = r.format.parse().map_err(|e: fanout_datasets::UnknownFormat| bad(e.to_string()))?;
    let mut opts = DatasetOptions { format: Some(format), storage: storage.clone(), ..DatasetOptions::default() };
    opts.csv.header = r.header.unwrap_or(true);
    if r.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv")) {
        opts.csv.delimiter = b'\t';
    }
    let path = r.path.display().to_string();
    let read = |e: fanout_datasets::Error| FunctionError::permanent(e.to_string());
    let mut dataset = Dataset::open(vec![path.clone()], opts).map_err(read)?;
    if let Some(columns) = &r.columns
        && let Some(projected) = dataset.project(columns).map_err(read)?
    {
        dataset = projected;
    }
    let file = InputFile::open(&path, storage).map_err(read)?;
    let range = match (r.row_groups, r.batches, r.offset, r.length) {
        (Some([start, end]), ..) => SplitRange::RowGroups { start, end, bytes: 0 },
        (_, Some([start, end]), ..) => SplitRange::Batches { start, end, bytes: 0 },
        _ if r.compression.as_deref().is_some_and(|c| c != "none") => SplitRange::Whole,
        (_, _, Some(offset), Some(len)) => SplitRange::Bytes { offset, len },
        _ => return Err(bad("no offset and length, row_groups or batches".into())),
    };
    let split = Split { index: 0, file: std::sync::Arc::new(file), range };
    dataset.read_all_with(&split, &mut OpenFiles::default()).map_err(read)
}

/// The schema of JSON object lines, as a jsonl input's is inferred.
pub(super) fn infer(lines: &[u8]) -> Result<SchemaRef, FunctionError> {
    fanout_datasets::infer_json_schema(lines, usize::MAX)
        .map(Arc::new)
        .map_err(|m| FunctionError::permanent(format!("the records' schema: {m}")))
}

/// A strict decoder of JSON object lines of `schema`: a field the schema
/// does not have is an error.
pub(super) fn decoder(schema: &SchemaRef) -> Result<arrow_json::reader::Decoder, FunctionError> {
    fanout_datasets::json_reader(schema.clone())
        .with_batch_size(8192)
        .with_strict_mode(true)
        .build_decoder()
        .map_err(|e| FunctionError::permanent(e.to_string()))
}

/// Decodes JSON object lines (whole ones) with `decoder`.
pub(super) fn decode(
    decoder: &mut arrow_json::reader::Decoder,
    lines: &[u8],
) -> Result<Vec<RecordBatch>, FunctionError> {
    let bad = |e: arrow_schema::ArrowError| FunctionError::permanent(format!("the records: {e}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let n = decoder.decode(&lines[at..]).map_err(bad)?;
        at += n;
        match decoder.flush().map_err(bad)? {
            Some(b) => out.push(b),
            None if n == 0 => return Err(FunctionError::permanent("the records: the decoder took no bytes")),
            None => {}
        }
    }
    Ok(out)
}
