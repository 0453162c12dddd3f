//! A stream job's own checks: its source (`input.stream`), its `[stream]`
//! settings, and what a stream's stages and output may be.

use std::path::PathBuf;
use std::time::Duration;

use fanout_datasets::Format;

use crate::environment::Environment;
use crate::error::JobError;
use crate::load::{FieldPath, LoadedJob};
use crate::plan::{OnFailure, OutputPlan, StagePlan, StartAt, StreamPlan, StreamSource, WindowKind, WindowPlan};
use crate::schema::{OnFailureSpec, StreamSourceSpec};

/// The records a batch holds at most when `batch_size` is not given: as
/// Lambda's Kinesis and DynamoDB mappings default to.
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// How often a stream's checkpoint is written when `checkpoint_every` is
/// not given.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The one source `input.stream` names.
pub(super) fn validate_stream_source(
    job: &LoadedJob,
    spec: &StreamSourceSpec,
    env: &dyn Environment,
    errors: &mut Vec<JobError>,
) -> Option<StreamSource> {
    let at = |k: &str| FieldPath::keys(["input", "stream", k]);
    let named: Vec<&str> = [
        ("dir", spec.dir.is_some()),
        ("stdin", spec.stdin.is_some()),
        ("http", spec.http.is_some()),
        ("kinesis", spec.kinesis.is_some()),
        ("sqs", spec.sqs.is_some()),
        ("redis", spec.redis.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    match named[..] {
        [] => {
            let m = "input.stream names no source: give one of dir = \"DIR\", stdin = true, http = \"ADDR\", \
                     kinesis = \"STREAM\", sqs = \"QUEUE URL\" or redis = \"redis://HOST:PORT\"";
            errors.push(job.error(&FieldPath::keys(["input", "stream"]), m));
            return None;
        }
        [_] => {}
        [_, second, ..] => {
            errors
                .push(job.error(&at(second), format!("input.stream names more than one source: {}", named.join(", "))));
            return None;
        }
    }
    // Each source's own keys belong to it alone.
    let owned = [
        ("key", spec.key.is_some(), &["redis"][..]),
        ("group", spec.group.is_some(), &["redis"]),
        ("claim_after", spec.claim_after.is_some(), &["redis"]),
        ("field", spec.field.is_some(), &["redis"]),
        ("start", spec.start.is_some(), &["kinesis", "redis"]),
        ("region", spec.region.is_some(), &["kinesis", "sqs"]),
        ("visibility_timeout", spec.visibility_timeout.is_some(), &["sqs"]),
    ];
    for (key, given, sources) in owned {
        if given && !sources.contains(&named[0]) {
            let m = format!("input.stream.{key} applies to a {} source only", sources.join(" or "));
            errors.push(job.error(&at(key), m));
        }
    }
    match named[0] {
        "dir" => {
            let dir = PathBuf::from(spec.dir.as_deref().expect("named"));
            let url = dir.to_string_lossy().into_owned();
            if fanout_datasets::store::is_url(&url) && !url.starts_with("file://") {
                if !in_store(&url) {
                    let m = format!("input.stream.dir `{url}`: a stream reads a prefix of s3://, gs:// or az://");
                    errors.push(job.error(&at("dir"), m));
                    return None;
                }
                // A prefix: the objects under it.
                let prefix = if url.ends_with('/') { url } else { format!("{url}/") };
                return Some(StreamSource::Prefix(prefix));
            }
            let dir = PathBuf::from(fanout_datasets::store::local_path(&url));
            if !env.is_dir(&dir) {
                let m = format!(
                    "input.stream.dir `{}` is not a directory (make it before the stream starts)",
                    dir.display()
                );
                errors.push(job.error(&at("dir"), m));
                return None;
            }
            Some(StreamSource::Dir(dir))
        }
        "http" => {
            use std::net::ToSocketAddrs;
            let addr = spec.http.clone().expect("named");
            match addr.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(_)) => Some(StreamSource::Http(addr)),
                _ => {
                    let m =
                        format!("input.stream.http `{addr}` is not an address to listen on (e.g. \"127.0.0.1:8090\")");
                    errors.push(job.error(&at("http"), m));
                    None
                }
            }
        }
        "stdin" if spec.stdin == Some(true) => Some(StreamSource::Stdin),
        "stdin" => {
            errors.push(job.error(&at("stdin"), "input.stream.stdin must be true (or left out)"));
            None
        }
        "kinesis" => {
            let stream = spec.kinesis.clone().expect("named");
            if stream.is_empty() {
                errors.push(job.error(&at("kinesis"), "input.stream.kinesis names no stream"));
                return None;
            }
            // An ARN names its region: arn:aws:kinesis:REGION:ACCOUNT:stream/NAME.
            let arn_region = stream.strip_prefix("arn:").and_then(|a| a.split(':').nth(2)).map(str::to_string);
            let region = region_of(job, spec, arn_region, errors)?;
            let start = start_at(job, spec, errors)?;
            Some(StreamSource::Kinesis { stream, region, start })
        }
        "sqs" => {
            let url = spec.sqs.clone().expect("named");
            let Some(host) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
                let m = format!(
                    "input.stream.sqs `{url}` is not a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
                );
                errors.push(job.error(&at("sqs"), m));
                return None;
            };
            // https://sqs.REGION.amazonaws.com/...
            let url_region = host.strip_prefix("sqs.").and_then(|h| h.split('.').next()).map(str::to_string);
            let region = region_of(job, spec, url_region, errors)?;
            let visibility_timeout = match spec.visibility_timeout {
                Some(d) if d.0 < Duration::from_secs(1) || d.0 > Duration::from_secs(43_200) => {
                    let m = "visibility_timeout is between 1s and 12h, as SQS allows";
                    errors.push(job.error(&at("visibility_timeout"), m));
                    return None;
                }
                Some(d) => d.0,
                None => Duration::from_secs(30),
            };
            Some(StreamSource::Sqs { url, region, visibility_timeout })
        }
        "redis" => {
            let url = spec.redis.clone().expect("named");
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                let m = format!("input.stream.redis `{url}` is not a Redis URL (redis://HOST:PORT)");
                errors.push(job.error(&at("redis"), m));
                return None;
            }
            let Some(key) = spec.key.clone().filter(|k| !k.is_empty()) else {
                errors.push(job.error(&at("redis"), "a redis source names its stream: set key = \"STREAM\""));
                return None;
            };
            let group = spec.group.clone().unwrap_or_else(|| super::job_name(job));
            let start = start_at(job, spec, errors)?;
            let claim_after = spec.claim_after.map_or(Duration::from_secs(60), |d| d.0);
            Some(StreamSource::Redis { url, key, group, start, claim_after, field: spec.field.clone() })
        }
        other => unreachable!("{other} is one of the sources named above"),
    }
}

/// A Kinesis or SQS source's region: the table's, else the one its name
/// carries, else the environment's.
fn region_of(
    job: &LoadedJob,
    spec: &StreamSourceSpec,
    named: Option<String>,
    errors: &mut Vec<JobError>,
) -> Option<String> {
    match spec.region.clone().filter(|r| !r.is_empty()).or(named).or_else(env_region) {
        Some(r) => Some(r),
        None => {
            let m = "no AWS region: set input.stream.region = \"us-east-1\", or AWS_REGION";
            errors.push(job.error(&FieldPath::keys(["input", "stream", "region"]), m));
            None
        }
    }
}

/// Whether `url` names a place in an object store a stream reads and
/// writes (s3, gs, az).
fn in_store(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    ["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"].contains(&scheme)
}

/// The region the environment names (`AWS_REGION`, else
/// `AWS_DEFAULT_REGION`).
fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| std::env::var(k).ok().filter(|r| !r.is_empty()))
}

/// Where a Kinesis or Redis source starts reading.
fn start_at(job: &LoadedJob, spec: &StreamSourceSpec, errors: &mut Vec<JobError>) -> Option<StartAt> {
    match spec.start.as_deref() {
        None | Some("trim_horizon") => Some(StartAt::TrimHorizon),
        Some("latest") => Some(StartAt::Latest),
        Some(other) => {
            let m = format!("input.stream.start is trim_horizon or latest, not `{other}`");
            errors.push(job.error(&FieldPath::keys(["input", "stream", "start"]), m));
            None
        }
    }
}

/// The `[stream]` settings, checked against the stages and output they go
/// with; `None` for a job that reads no stream.
pub(super) fn validate_stream(
    job: &LoadedJob,
    stages: &[StagePlan],
    output: Option<&OutputPlan>,
    errors: &mut Vec<JobError>,
) -> Option<StreamPlan> {
    let f = &job.file;
    let at = |k: &str| FieldPath::keys(["stream", k]);
    let Some(source) = &f.input.stream else {
        if f.stream.is_some() {
            let m = "[stream] applies to a stream input: set input.stream (dir = \"DIR\" or stdin = true)";
            errors.push(job.error(&FieldPath::keys(["stream"]), m));
        }
        return None;
    };
    let spec = f.stream.clone().unwrap_or_default();
    let before = errors.len();
    // The formats a stream's records come in.
    if let Some(format) = f.input.format.as_deref().and_then(|n| n.parse::<Format>().ok()) {
        let lines_only = source.dir.is_none();
        let fits = match lines_only {
            true => matches!(format, Format::Text | Format::Jsonl),
            false => matches!(format, Format::Text | Format::Jsonl | Format::Csv),
        };
        if !fits {
            let which = if lines_only { "text or jsonl" } else { "text, jsonl or csv" };
            errors.push(job.error(&FieldPath::keys(["input", "format"]), format!("this stream reads {which} records")));
        } else if format != Format::Text && f.input.schema.is_none() {
            let m = "a stream's schema cannot be inferred before its records arrive: list its columns in input.schema";
            errors.push(job.error(&FieldPath::keys(["input"]), m));
        }
    }
    if f.input.on_bad_record.as_deref().is_some_and(|p| p != "fail") {
        let m = "on a stream, a bad record stops the stream (on_bad_record = \"fail\"); skip and reject are not supported yet";
        errors.push(job.error(&FieldPath::keys(["input", "on_bad_record"]), m));
    }
    // What a stream does not model yet is refused, not ignored.
    let p = &f.platform;
    let unmodelled = [
        ("backups", p.backups.is_some()),
        ("backup_after", p.backup_after.is_some()),
        ("backup_when_done", p.backup_when_done.is_some()),
        ("tolerated_failure_percent", p.tolerated_failure_percent.is_some()),
        ("tolerated_failure_count", p.tolerated_failure_count.is_some()),
    ];
    for (key, given) in unmodelled {
        if given {
            let m = format!(
                "platform.{key} does not apply to a stream: a batch that fails is retried, bisected \
                 (stream.bisect_on_error) or set aside (stream.on_failure), not backed up or tolerated"
            );
            errors.push(job.error(&FieldPath::keys(["platform", key]), m));
        }
    }
    let batch_size = match spec.batch_size {
        Some(0) => {
            errors.push(job.error(&at("batch_size"), "batch_size must be at least 1"));
            1
        }
        Some(n) => n,
        None => DEFAULT_BATCH_SIZE,
    };
    let checkpoint_every = match spec.checkpoint_every {
        Some(d) if d.0.is_zero() => {
            errors.push(job.error(&at("checkpoint_every"), "checkpoint_every must be longer than 0s"));
            DEFAULT_CHECKPOINT_EVERY
        }
        Some(d) => d.0,
        None => DEFAULT_CHECKPOINT_EVERY,
    };
    let window = spec.window.as_ref().and_then(|w| {
        let wat = |k: &str| at("window").key(k);
        let kinds: Vec<(&str, Duration)> = [("tumbling", w.tumbling), ("sliding", w.sliding), ("session", w.session)]
            .into_iter()
            .filter_map(|(k, d)| Some((k, d?.0)))
            .collect();
        let (kind, size) = match kinds[..] {
            [one] => one,
            [] | [_, _, ..] => {
                let m = "a window is one of { tumbling = \"10s\" }, { sliding = \"5m\", every = \"1m\" } \
                         or { session = \"30s\" }";
                errors.push(job.error(&at("window"), m));
                return None;
            }
        };
        if size.is_zero() {
            errors.push(job.error(&wat(kind), "a window must be longer than 0s"));
        }
        if w.time.as_deref().is_some_and(str::is_empty) {
            errors.push(job.error(&wat("time"), "window.time names no field"));
        }
        let kind = match (kind, w.every) {
            ("sliding", Some(every)) if every.0.is_zero() || every.0 > size => {
                errors.push(job.error(&wat("every"), "every must be longer than 0s and no longer than the window"));
                return None;
            }
            ("sliding", Some(every)) => WindowKind::Sliding { every: every.0 },
            ("sliding", None) => {
                errors.push(job.error(&wat("sliding"), "a sliding window says how often one starts: every = \"1m\""));
                return None;
            }
            (_, Some(_)) => {
                errors.push(job.error(&wat("every"), "every applies to a sliding window"));
                return None;
            }
            ("tumbling", None) => WindowKind::Tumbling,
            _ => WindowKind::Session,
        };
        Some(WindowPlan { kind, size, time: w.time.clone() })
    });
    if spec.allowed_lateness.is_some() && window.as_ref().is_none_or(|w| w.time.is_none()) {
        let m = "allowed_lateness applies to a window over an event-time field (window = { tumbling = ..., time = \"FIELD\" })";
        errors.push(job.error(&at("allowed_lateness"), m));
    }
    // A keyed stage aggregates per window, and ends the stream's stages.
    let keyed: Vec<usize> = (stages.iter().enumerate()).filter(|(_, s)| s.key.is_some()).map(|(i, _)| i).collect();
    match (&keyed[..], &window) {
        ([], Some(_)) => errors.push(job.error(
            &at("window"),
            "a window needs a keyed stage to aggregate over it (a last stage with key = [...])",
        )),
        // A window given but refused has its own error already.
        ([k], None) if spec.window.is_none() => errors.push(job.error(
            &FieldPath::keys(["stage"]).index(*k).key("key"),
            "a keyed stage on a stream aggregates per window: set stream.window (window = { tumbling = \"10s\", time = \"FIELD\" })",
        )),
        ([k], Some(_)) if *k + 1 != stages.len() => errors.push(job.error(
            &FieldPath::keys(["stage"]).index(*k).key("key"),
            "on a stream, the keyed stage must be the last: its windows are the output",
        )),
        ([_, second, ..], _) => errors.push(job.error(
            &FieldPath::keys(["stage"]).index(*second).key("key"),
            "a stream has one keyed stage at most (the windowed aggregate)",
        )),
        _ => {}
    }
    let out = |k: &str| FieldPath::keys(["output", k]);
    if let Some(o) = output {
        let path = o.path.to_string_lossy();
        if fanout_datasets::store::is_url(&path) && !path.starts_with("file://") && !in_store(&path) {
            let m = format!("a stream writes a local directory or a prefix of s3://, gs:// or az://, not `{path}`");
            errors.push(job.error(&out("path"), m));
        }
        if !o.sort.is_empty() {
            errors.push(
                job.error(&out("sort"), "output.sort does not apply to a stream (each window is written as it closes)"),
            );
        }
        if o.limit.is_some() {
            errors.push(job.error(&out("limit"), "output.limit does not apply to a stream"));
        }
    }
    if let Some(age) = spec.max_record_age {
        let service = source.kinesis.is_some() || source.sqs.is_some() || source.redis.is_some();
        if !service {
            let m = "max_record_age applies to a stream received from a service (kinesis, sqs, redis), \
                     whose records carry the time the service took them";
            errors.push(job.error(&at("max_record_age"), m));
        } else if age.0.is_zero() {
            errors.push(job.error(&at("max_record_age"), "max_record_age must be longer than 0s"));
        }
    }
    // A shard's batches, one after another unless said otherwise.
    let parallelization = match (spec.parallelization, source.kinesis.is_some()) {
        (Some(n), true) if (1..=10).contains(&n) => Some(n),
        (Some(_), true) => {
            errors.push(job.error(&at("parallelization"), "parallelization is 1 to 10, as Lambda allows"));
            None
        }
        (Some(_), false) => {
            let m = "parallelization applies to a source with partitions (kinesis: batches of a shard in flight)";
            errors.push(job.error(&at("parallelization"), m));
            None
        }
        (None, true) => Some(1),
        (None, false) => None,
    };
    let on_failure = match &spec.on_failure {
        None => None,
        Some(OnFailureSpec::Named(n)) if n == "rejects" => Some(OnFailure::Rejects),
        Some(OnFailureSpec::Named(n)) => {
            let m = format!("on_failure is \"rejects\" or {{ sqs = \"QUEUE URL\" }}, not `{n}`");
            errors.push(job.error(&at("on_failure"), m));
            None
        }
        Some(OnFailureSpec::Queue { sqs }) => {
            let host = sqs.strip_prefix("https://").or_else(|| sqs.strip_prefix("http://"));
            match host {
                None => {
                    let m = format!("on_failure.sqs `{sqs}` is not a queue URL");
                    errors.push(job.error(&at("on_failure").key("sqs"), m));
                    None
                }
                Some(host) => {
                    let named = host.strip_prefix("sqs.").and_then(|h| h.split('.').next()).map(str::to_string);
                    match named.or_else(env_region) {
                        Some(region) => Some(OnFailure::Sqs { url: sqs.clone(), region }),
                        None => {
                            let m = "no AWS region for on_failure.sqs: set AWS_REGION";
                            errors.push(job.error(&at("on_failure").key("sqs"), m));
                            None
                        }
                    }
                }
            }
        }
    };
    (errors.len() == before).then(|| StreamPlan {
        batch_size,
        batch_window: spec.batch_window.map_or(Duration::ZERO, |d| d.0),
        window,
        allowed_lateness: spec.allowed_lateness.map_or(Duration::ZERO, |d| d.0),
        checkpoint_every,
        bisect_on_error: spec.bisect_on_error.unwrap_or(false),
        on_failure,
        max_record_age: spec.max_record_age.map(|d| d.0),
        parallelization,
    })
}
