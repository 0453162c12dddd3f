//! Streams: a job whose input is records as they arrive (`input.stream`).
//!
//! A source thread cuts the records into batches (`batch_size`, waiting
//! up to `batch_window` to fill one) and hands them, numbered, to worker
//! threads through a bounded channel: a slow function pauses the source.
//! Each worker runs the map stages on its batch, in containers of its own
//! (a function's instance, made at its first call: a cold start). The
//! coordinator takes the batches back in order and, with a keyed last
//! stage, assigns each record to its tumbling window (by its event-time
//! field, or its arrival), runs the stage's combiner on each window's part
//! of the batch and keeps the partials; once the watermark (the newest
//! event time less `allowed_lateness`) passes a window's end, the reduce
//! runs over its partials and the window is committed as one file of the
//! output directory. Records whose window had closed are late: they go to
//! `late/` in the run directory, counted. Without a keyed stage, the
//! records are committed as a part file at each checkpoint.
//!
//! Every `checkpoint_every`, the source's position, the open windows'
//! partials and the counts are checkpointed together ([`checkpoint`]).
//! Output files have names that the records decide (a window's start, a
//! part's number kept in the checkpoint), so a resume after `kill -9`
//! replays from the checkpoint and writes the same files again: nothing is
//! lost and nothing is counted twice.

mod checkpoint;
mod coordinator;
mod failed;
mod feed;
mod output;
mod receive;
mod session;
mod sink;
mod source;
mod spool;
mod usage;
mod watch;
mod window;
mod worker;

use std::path::Path;
use std::time::Instant;

use fanout_datasets::Format;
use fanout_jobs::{InputSource, JobFile, Plan, StreamSource};
use fanout_workers::Registry;

use crate::compile::{CompiledStage, plan_stages};
use crate::error::EngineError;
use crate::options::{Report, RunFailure, RunOptions, Until};
use crate::records::{Log, Recorder};
use crate::run_dir::{RunDir, finished_run};
use crate::step::{Step, StepKind};
use coordinator::Stream;
use output::{check_output, prepare_output};
use sink::Sinks;
use source::DirSource;
use spool::Spool;

/// Plans a stream job's stages against its schema (declared, or text's):
/// what `fanout plan` shows, and the check a run makes first.
pub fn plan_stream(plan: &Plan, registry: &Registry) -> Result<Vec<CompiledStage>, EngineError> {
    let format = plan.input.options.format.unwrap_or(Format::Jsonl);
    let (stages, _, mut errors) = plan_stages(plan, registry, format, None)?;
    // The window's time field, in what the keyed stage reads.
    if errors.is_empty()
        && let Some(w) = plan.stream.as_ref().and_then(|sp| sp.window.as_ref())
        && let Some(field) = &w.time
        && let Some(k) = stages.iter().position(|s| s.key.is_some())
    {
        let schema = match k {
            0 => plan.input.options.schema.clone().unwrap_or_else(fanout_datasets::text::schema),
            k => stages[k - 1].output.clone(),
        };
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let at = ["stream", "window", "time"];
        match schema.field_with_name(field) {
            Err(_) => errors.push(crate::error::CompileError::field(
                &at,
                format!("window.time `{field}` is not a column of what stage `{}` reads ({})", stages[k].name, columns.join(", ")),
            )),
            Ok(f) if !window::is_time_type(f.data_type()) => errors.push(crate::error::CompileError::field(
                &at,
                format!(
                    "window.time `{field}` is {}; an event time is RFC 3339 text, epoch seconds or milliseconds, or a timestamp",
                    f.data_type()
                ),
            )),
            Ok(_) => {}
        }
    }
    match errors.is_empty() {
        true => Ok(stages),
        false => Err(EngineError::Compile(errors)),
    }
}

/// The file in a stream's run directory that keeps its `--until`, so
/// that a resume stops as the run would have.
const UNTIL_FILE: &str = "stream.json";

/// Runs a stream job until `until`, an interrupt, or the end of its input
/// (standard input closed).
pub(crate) fn run(plan: &Plan, job: &JobFile, registry: &Registry, opts: &RunOptions) -> Result<Report, RunFailure> {
    let started = Instant::now();
    let sp = plan.stream.as_ref().expect("a stream job has a stream plan");
    let InputSource::Stream(source) = &plan.input.source else { unreachable!("a stream job reads a stream") };
    if opts.resume
        && let Some(dir) = &opts.run_dir
        && let Some(summary) = finished_run(dir)?
    {
        return Ok(Report { run_dir: dir.clone(), summary, finished_before: true, signal_in_commit: None });
    }
    // A signal drains the stream: what is in flight finishes.
    opts.stop.drain_on_interrupt();
    // The stages are planned before anything is made.
    let stages = plan_stream(plan, registry)?;
    // A new run whose output is taken makes nothing, not even its run
    // directory (which a resume could then take for its own).
    if !opts.resume {
        check_output(plan)?;
        receive::check(source, &plan.storage)?;
    }
    let dir = RunDir::create(opts.run_dir.as_deref(), opts.resume)?;
    let fail = |error: EngineError| RunFailure { error, run_dir: Some(dir.path.clone()) };
    // The files of standard output, and of a prefix in object storage, are
    // kept in the run directory's `out/` and delivered from there.
    let to_stdout = plan.output.is_stdout();
    let overwrite = plan.output.mode == fanout_jobs::OutputMode::Overwrite;
    let shown = plan.output.path.clone();
    let to_store = Some(shown.to_string_lossy().into_owned())
        .filter(|p| fanout_datasets::store::is_url(p) && !p.starts_with("file://"))
        .map(|p| if p.ends_with('/') { p } else { format!("{p}/") });
    let kept;
    let plan = match to_stdout || to_store.is_some() {
        true => {
            let mut to_run_dir = plan.clone();
            to_run_dir.output.path = dir.path.join("out");
            to_run_dir.output.mode = fanout_jobs::OutputMode::Overwrite;
            kept = to_run_dir;
            &kept
        }
        false => plan,
    };
    let until = settle_until(&dir.path, opts).map_err(fail)?;
    if !opts.resume {
        dir.write_job(job).map_err(fail)?;
        prepare_output(plan).map_err(fail)?;
        if let Some(prefix) = &to_store {
            output::clear_prefix(plan, prefix, overwrite).map_err(fail)?;
        }
    }
    let output_schema = match stages.last() {
        Some(s) => s.output.clone(),
        None => plan.input.options.schema.clone().unwrap_or_else(fanout_datasets::text::schema),
    };
    let restored = checkpoint::load(&dir.path).map_err(fail)?;
    let (state, partials) = restored.unwrap_or_default();
    let source_dir = match source {
        StreamSource::Dir(d) => d.clone(),
        StreamSource::Stdin => dir.path.join("stdin"),
        StreamSource::Http(_) => dir.path.join("http"),
        StreamSource::Kinesis { .. }
        | StreamSource::Sqs { .. }
        | StreamSource::Redis { .. }
        | StreamSource::Prefix(_) => dir.path.join("received"),
    };
    if !matches!(source, StreamSource::Dir(_)) {
        // The spool is there before it is watched.
        std::fs::create_dir_all(&source_dir).map_err(|e| fail(EngineError::io(&source_dir, e)))?;
    }
    let reader = DirSource::new(source_dir.clone(), plan.input.options.clone(), state.position.clone(), &dir.path);
    if let Some(why) = reader.listed() {
        eprintln!("fanout: {}: {why}; listing it every 10 ms instead", source_dir.display());
    }
    let reader = match source {
        StreamSource::Dir(_) => reader,
        StreamSource::Stdin => reader.spooled_from("standard input".into()),
        StreamSource::Http(addr) => reader.spooled_from(format!("the HTTP endpoint {addr}")),
        StreamSource::Kinesis { stream, .. } => reader.spooled_from(format!("kinesis stream {stream}")),
        StreamSource::Sqs { url, .. } => reader.spooled_from(format!("sqs queue {url}")),
        StreamSource::Redis { key, .. } => reader.spooled_from(format!("redis stream {key}")),
        StreamSource::Prefix(prefix) => reader.spooled_from(format!("objects under {prefix}")),
    };
    let format = plan.input.options.format.unwrap_or(Format::Jsonl);
    let spool = match source {
        StreamSource::Dir(_) => None,
        StreamSource::Stdin => {
            Some(Spool::start(&source_dir, &dir.path, sp.batch_size, sp.batch_window).map_err(fail)?)
        }
        StreamSource::Http(addr) => {
            Some(Spool::http(&source_dir, &dir.path, addr, &plan.name, format, reader.taken()).map_err(fail)?)
        }
        remote => {
            let taken = reader.taken();
            receive::start(remote, &source_dir, &dir.path, &dir.id, sp, taken, &plan.storage).map_err(fail)?
        }
    };
    let log = open_records(plan, &dir.path, opts.resume).map_err(fail)?;
    let mut recorder = Recorder::new(&log, Step::count(stages.len()));
    if opts.resume {
        let step_of = |stage: &str, phase: &str| {
            let s = plan.stages.iter().position(|c| c.name == stage)?;
            Some(Step { stage: s, kind: StepKind::parse(phase)? }.index())
        };
        crate::records::replay(&dir.path, step_of, &mut recorder.stats).map_err(fail)?;
    }
    let mut stream = Stream::new(plan, sp, &stages, output_schema, &dir.path, state, partials, recorder, opts);
    stream.spooled = spool.as_ref().map(|_| source_dir.clone());
    stream.sinks = Sinks::new(plan, to_stdout, to_store.clone(), &dir.path);
    let result = stream.run(reader, spool.as_ref(), until, opts);
    drop(spool);
    let wall = started.elapsed();
    let (ended, error) = match result {
        Ok(ended) => (Some(ended), None),
        Err(e) => (None, Some(e)),
    };
    if let Some(EngineError::Interrupted { .. }) = &error {
        // As a batch run: no summary, so that a resume goes on.
        return Err(fail(error.expect("matched")));
    }
    let mut summary = stream.summary(&dir.id, plan, wall, ended, error.as_ref());
    // Where the output went: the prefix, not the files kept for it.
    if let (Some(st), Some(_)) = (summary.stream.as_mut(), &to_store) {
        st.output = shown.clone();
    }
    let path = dir.path.join("summary.json");
    let text = serde_json::to_vec_pretty(&summary).expect("a summary serializes");
    let written = checkpoint::write_synced(&path, &text);
    dir.tidy(error.is_none());
    if let Some(e) = error {
        return Err(fail(e));
    }
    written.map_err(fail)?;
    Ok(Report { run_dir: dir.path.clone(), summary, finished_before: false, signal_in_commit: None })
}

/// The run's invocation records, appended to on a resume.
fn open_records(plan: &Plan, run_dir: &Path, resume: bool) -> Result<Log, EngineError> {
    let names: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
    Log::create(&run_dir.join(crate::records::FILE), resume, &names)
}

/// The `--until` a run goes by: a new run's (kept in its directory), or
/// the one the resumed run was started with.
fn settle_until(run_dir: &Path, opts: &RunOptions) -> Result<Until, EngineError> {
    let path = run_dir.join(UNTIL_FILE);
    if opts.resume {
        return match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Until::default()),
            Err(e) => Err(EngineError::io(&path, e)),
        };
    }
    let until = opts.until.unwrap_or_default();
    checkpoint::write_synced(&path, &serde_json::to_vec(&until).expect("serializes"))?;
    Ok(until)
}
