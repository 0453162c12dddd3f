//! `fanout validate` and `fanout plan`.

use std::io::Write;

use fanout_datasets::Dataset;
use fanout_datasets::generator::Amount;
use fanout_engine::{CompileError, EngineError};
use fanout_jobs::units::Size;
use fanout_jobs::{FieldPath, InputSource, JobError, JobErrors, LoadedJob, OutputMode, Plan, load, validate as check};
use fanout_workers::Registry;

use crate::args::JobArgs;
use crate::{Failure, Outcome};

/// Loads and validates the job named by `a`.
pub fn load_plan(a: &JobArgs, registry: &Registry) -> Result<(LoadedJob, Plan), Failure> {
    let job = load(&a.job, &a.set).map_err(Failure::invalid)?;
    let plan = check(&job, registry).map_err(Failure::invalid)?;
    Ok((job, plan))
}

/// Locates compile errors (a stage's function against its input schema,
/// the output sort) in the job file.
pub fn locate(job: &LoadedJob, errors: &[CompileError]) -> JobErrors {
    JobErrors(
        errors
            .iter()
            .map(|e| {
                let field = match e.stage {
                    _ if e.field.is_some() => FieldPath::keys(e.field.iter().flatten().copied()),
                    Some(i) if job.file.stages.get(i).is_some_and(|s| !s.params.is_empty()) => {
                        FieldPath::keys(["stage"]).index(i).key("params")
                    }
                    Some(i) => FieldPath::keys(["stage"]).index(i).key("function"),
                    None => FieldPath::keys(["output", "sort"]),
                };
                JobError { location: job.locate(&field), message: e.message.clone() }
            })
            .collect(),
    )
}

/// Maps an engine error to a failure: compile errors are located in the
/// job file and exit 2, like any invalid job.
pub fn engine_failure(job: &LoadedJob, e: EngineError) -> Failure {
    match e {
        EngineError::Compile(errors) => Failure::invalid(locate(job, &errors)),
        e @ (EngineError::OutputExists(_) | EngineError::Chaos(_)) => Failure::invalid(e),
        e => Failure::from(e),
    }
}

/// `fanout validate JOB`: checks the job file, then plans every stage
/// against the input's schema (generating a generated input if needed).
pub fn validate(a: &JobArgs) -> Outcome {
    let registry = Registry::builtins();
    let (job, plan) = load_plan(a, &registry)?;
    if plan.is_stream() {
        fanout_engine::plan_stream(&plan, &registry).map_err(|e| engine_failure(&job, e))?;
    } else {
        fanout_engine::compile(&plan, &registry, &a.cache_dir).map_err(|e| engine_failure(&job, e))?;
    }
    writeln!(
        std::io::stdout(),
        "{}: ok ({}, {} stage{})",
        a.job.display(),
        plan.name,
        plan.stages.len(),
        if plan.stages.len() == 1 { "" } else { "s" }
    )?;
    Ok(())
}

/// `fanout plan JOB`.
pub fn plan(a: &JobArgs) -> Outcome {
    let registry = Registry::builtins();
    let (job, plan) = load_plan(a, &registry)?;
    if plan.is_stream() {
        return plan_stream(a, &job, &plan, &registry);
    }
    let compiled = fanout_engine::compile(&plan, &registry, &a.cache_dir).map_err(|e| engine_failure(&job, e))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "job {} ({})", plan.name, a.job.display())?;

    let input = &plan.input;
    let ds: &Dataset = &compiled.dataset;
    match &input.source {
        InputSource::Paths(p) => writeln!(out, "input: {}", p.join(", "))?,
        InputSource::Stream(_) => unreachable!("a stream is planned above"),
        InputSource::Generate(g) => {
            let amount = match g.amount {
                Amount::Bytes(b) => Size(b).to_string(),
                Amount::Rows(r) => format!("{r} rows"),
            };
            let path = ds.files().next().and_then(Result::ok).map(|f| f.path.display().to_string()).unwrap_or_default();
            writeln!(out, "input: generated {} ({amount}, seed {}) at {path}", g.kind, g.seed)?
        }
    }
    // Reading the input's files (their headers, their sizes) fails as a
    // run reading them fails: exit 1, the file named.
    let sum = ds.summary().map_err(Failure::from)?;
    let columns: Vec<String> =
        ds.file_schema().fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
    writeln!(out, "  format: {}; columns: {}", ds.format(), columns.join(", "))?;
    if ds.projection().is_some() {
        let read: Vec<String> = ds.schema().fields().iter().map(|f| f.name().clone()).collect();
        writeln!(out, "  reads only: {} (what the first stage uses)", read.join(", "))?;
    }
    writeln!(out, "  files: {}, {} ({} bytes)", sum.files, Size(sum.bytes), sum.bytes)?;
    writeln!(
        out,
        "  splits: {} (target {}; {} to {})",
        sum.splits,
        match input.options.chunk_size_max {
            Some(max) => format!("{}..{}", Size(input.options.chunk_size), Size(max)),
            None => Size(input.options.chunk_size).to_string(),
        },
        Size(sum.min_split),
        Size(sum.max_split)
    )?;

    writeln!(out, "stages:")?;
    if plan.stages.is_empty() {
        writeln!(out, "  (none: the input is written as it is)")?;
    }
    for (i, (s, c)) in plan.stages.iter().zip(&compiled.stages).enumerate() {
        let shape = match &s.key {
            Some(key) => format!("keyed by {} into {} partitions", key.join(", "), s.partitions),
            None => "map".to_string(),
        };
        let params = if s.params.is_empty() {
            String::new()
        } else {
            format!(" {}", serde_json::Value::Object(s.params.clone()))
        };
        let columns: Vec<&str> = c.output.fields().iter().map(|f| f.name().as_str()).collect();
        writeln!(
            out,
            "  {}. {}: {}{params} ({shape}, concurrency {}) -> {}",
            i + 1,
            s.name,
            s.function,
            s.concurrency,
            columns.join(", ")
        )?;
    }

    let o = &plan.output;
    let mut extra = Vec::new();
    if !o.sort.is_empty() {
        let keys: Vec<String> =
            o.sort.iter().map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.column)).collect();
        extra.push(format!("sorted by {}", keys.join(", ")));
    }
    if let Some(l) = o.limit {
        extra.push(format!("first {l} rows"));
    }
    extra.push(match o.mode {
        OutputMode::Error => "fails if it exists".to_string(),
        OutputMode::Overwrite => "overwrites".to_string(),
    });
    writeln!(out, "output: {} ({}; {})", o.path.display(), o.format, extra.join("; "))?;
    writeln!(out, "platform: {}, concurrency {}", plan.platform.preset.name(), plan.platform.concurrency)?;
    Ok(())
}

/// `fanout plan` of a stream job: its source, batching, window and
/// stages, each stage planned against the stream's schema.
fn plan_stream(a: &JobArgs, job: &fanout_jobs::LoadedJob, plan: &fanout_jobs::Plan, registry: &Registry) -> Outcome {
    let stages = fanout_engine::plan_stream(plan, registry).map_err(|e| engine_failure(job, e))?;
    let sp = plan.stream.as_ref().expect("a stream job has a stream plan");
    let mut out = std::io::stdout().lock();
    writeln!(out, "job {} ({})", plan.name, a.job.display())?;
    let source = match &plan.input.source {
        InputSource::Stream(fanout_jobs::StreamSource::Dir(d)) => format!("files renamed into {}", d.display()),
        InputSource::Stream(fanout_jobs::StreamSource::Http(a)) => {
            format!("records POSTed to http://{a}/streams/{}", plan.name)
        }
        InputSource::Stream(fanout_jobs::StreamSource::Kinesis { stream, region, .. }) => {
            format!("records of the Kinesis stream {stream} ({region})")
        }
        InputSource::Stream(fanout_jobs::StreamSource::Sqs { url, .. }) => format!("messages of the SQS queue {url}"),
        InputSource::Stream(fanout_jobs::StreamSource::Prefix(prefix)) => format!("objects that appear under {prefix}"),
        InputSource::Stream(fanout_jobs::StreamSource::Redis { url, key, group, .. }) => {
            format!("entries of the Redis stream {key} at {url}, read by consumer group {group}")
        }
        _ => "standard input".to_string(),
    };
    writeln!(out, "input: a stream of {source}")?;
    let schema = plan.input.options.schema.clone().unwrap_or_else(fanout_datasets::text::schema);
    let columns: Vec<String> = schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
    let format = plan.input.options.format.map_or("jsonl".to_string(), |f| f.to_string());
    writeln!(out, "  format: {format}; columns: {}", columns.join(", "))?;
    writeln!(
        out,
        "  batches: up to {} records, waiting up to {} to fill; checkpoint every {}",
        sp.batch_size,
        humantime::format_duration(sp.batch_window),
        humantime::format_duration(sp.checkpoint_every)
    )?;
    if let Some(n) = sp.parallelization {
        writeln!(out, "  a shard's batches in flight at once: {n}")?;
    }
    if let Some(age) = sp.max_record_age {
        writeln!(out, "  records older than {} when received: set aside", humantime::format_duration(age))?;
    }
    let failing = match (&sp.on_failure, sp.bisect_on_error) {
        (None, false) => "stops the stream",
        (None, true) => "is bisected down to the records that fail, which stop the stream",
        (Some(_), false) => "is set aside whole (on_failure)",
        (Some(_), true) => "is bisected down to the records that fail, which are set aside (on_failure)",
    };
    writeln!(out, "  a batch whose function fails {failing}")?;
    if let Some(w) = &sp.window {
        let over = w.time.as_ref().map_or("arrival time".to_string(), |t| format!("event time `{t}`"));
        let kind = match w.kind {
            fanout_jobs::WindowKind::Tumbling => format!("tumbling {}", humantime::format_duration(w.size)),
            fanout_jobs::WindowKind::Sliding { every } => {
                format!(
                    "sliding {}, one every {}",
                    humantime::format_duration(w.size),
                    humantime::format_duration(every)
                )
            }
            fanout_jobs::WindowKind::Session => {
                format!("session, per key, closed after a gap of {}", humantime::format_duration(w.size))
            }
        };
        writeln!(
            out,
            "  window: {kind} over {over}; allowed lateness {}",
            humantime::format_duration(sp.allowed_lateness)
        )?;
    }
    writeln!(out, "stages:")?;
    if plan.stages.is_empty() {
        writeln!(out, "  (none: the records are written as they are)")?;
    }
    for (i, (s, c)) in plan.stages.iter().zip(&stages).enumerate() {
        let shape = match &s.key {
            Some(key) => format!("keyed by {} per window", key.join(", ")),
            None => "map".to_string(),
        };
        let columns: Vec<&str> = c.output.fields().iter().map(|f| f.name().as_str()).collect();
        writeln!(out, "  {}. {}: {} ({shape}) -> {}", i + 1, s.name, s.function, columns.join(", "))?;
    }
    let what = if sp.window.is_some() { "one file per window" } else { "one part file per checkpoint" };
    writeln!(out, "output: {} ({}; {what})", plan.output.path.display(), plan.output.format)?;
    writeln!(out, "platform: {} preset, concurrency {}", plan.platform.preset.name(), plan.platform.concurrency)?;
    Ok(())
}
