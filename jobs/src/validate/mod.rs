//! Validation: a [`LoadedJob`] becomes a [`Plan`], every value checked and
//! resolved (formats, schema, defaults), or a list of located errors.

mod external;
mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::Schema;
use fanout_datasets::generator::{Amount, GenKind, GenSpec};
use fanout_datasets::{CsvOptions, DatasetOptions, Encoding, Format, MaxBad, OnBadRecord, Storage};

use crate::catalog::{FunctionCatalog, FunctionRef};
use crate::column::parse_column;
use crate::environment::{Environment, LocalEnvironment};
use crate::error::{JobError, JobErrors};
use crate::load::{FieldPath, LoadedJob};
use crate::plan::{InputPlan, InputSource, OutputMode, OutputPlan, Plan, SortKey, StagePlan};
use crate::platform::{ColdStart, PlatformPlan, Preset, memory_mb, preset};
use crate::schema::{CountOrText, FunctionSpec, InputSpec, OutputSpec};
use external::validate_external;
use stream::validate_stream_source;
pub use stream::{DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT_EVERY};

/// Validates `job` into a plan, asking `catalog` about functions and this
/// machine's file system about inputs, programs and directories
/// ([`LocalEnvironment`]). Returns every problem found, each located.
pub fn validate(job: &LoadedJob, catalog: &dyn FunctionCatalog) -> Result<Plan, JobErrors> {
    validate_with(job, catalog, &LocalEnvironment)
}

/// Validates `job` as [`validate`] does, asking `env` instead of the local
/// file system whether inputs, programs and directories exist.
pub fn validate_with(job: &LoadedJob, catalog: &dyn FunctionCatalog, env: &dyn Environment) -> Result<Plan, JobErrors> {
    let mut errors = Vec::new();
    let f = &job.file;
    let name = job_name(job);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = match f.platform.concurrency {
        Some(0) => {
            errors.push(job.error(&FieldPath::keys(["platform", "concurrency"]), "concurrency must be at least 1"));
            1
        }
        Some(n) => n,
        None => cores,
    };
    let platform = validate_platform(job, concurrency, &mut errors);

    let storage = validate_storage(job, &mut errors);
    let input = validate_input(job, &f.input, &storage, env, &mut errors);
    let stages = validate_stages(job, catalog, env, concurrency, &mut errors);
    let output = validate_output(job, &f.output, &f.input, env, &mut errors);
    let stream = stream::validate_stream(job, &stages, output.as_ref(), &mut errors);

    if !errors.is_empty() {
        return Err(JobErrors(errors));
    }
    let (input, output) = (input.expect("no errors"), output.expect("no errors"));
    Ok(Plan { name, input, stages, output, platform, storage, stream })
}

/// The `[storage]` table as the clients' options.
fn validate_storage(job: &LoadedJob, errors: &mut Vec<JobError>) -> Arc<Storage> {
    let options: BTreeMap<String, String> = job.file.storage.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    match Storage::new(options) {
        Ok(s) => Arc::new(s),
        Err(m) => {
            let key = job.file.storage.keys().find(|k| m.contains(&format!("`{k}`"))).cloned().unwrap_or_default();
            errors.push(job.error(&FieldPath::keys(["storage", key.as_str()]), m));
            Arc::default()
        }
    }
}

fn validate_platform(job: &LoadedJob, concurrency: usize, errors: &mut Vec<JobError>) -> PlatformPlan {
    let p = &job.file.platform;
    let at = |k: &str| FieldPath::keys(["platform", k]);
    let preset = match p.preset.as_deref().map(preset) {
        None => Preset::Local,
        Some(Ok(p)) => p,
        Some(Err(m)) => {
            errors.push(job.error(&at("preset"), m));
            Preset::Local
        }
    };
    let mut pricing = preset.defaults();
    if let Some(m) = p.memory {
        match memory_mb(m) {
            mb @ 1..=1_000_000 => pricing.memory_mb = mb,
            _ => errors.push(job.error(&at("memory"), "memory must be between 1MB and 1TB")),
        }
    }
    for (key, value, field) in [
        ("price_per_request", p.price_per_request, &mut pricing.price_per_request),
        ("price_per_gb_second", p.price_per_gb_second, &mut pricing.price_per_gb_second),
    ] {
        if let Some(v) = value {
            if v.is_finite() && v >= 0.0 {
                *field = v;
            } else {
                errors.push(job.error(&at(key), format!("{key} must be a price of 0 or more")));
            }
        }
    }
    if let Some(g) = p.billing_granularity {
        if g.0.is_zero() {
            errors.push(job.error(&at("billing_granularity"), "billing_granularity must be more than 0"));
        } else {
            pricing.billing_granularity = g.0;
        }
    }
    if let Some(full) = preset.full_cpu_mb() {
        pricing.cpu_scale = (full as f64 / pricing.memory_mb as f64).max(1.0);
    }
    let mut containers = preset.container_model();
    match &p.cold_start {
        None => {}
        Some(crate::schema::ColdStartSpec::Fixed(d)) => containers.cold_start = ColdStart::Fixed(d.0),
        Some(crate::schema::ColdStartSpec::LogNormal { median, sigma }) => {
            let sigma = sigma.unwrap_or(0.5);
            if !(0.0..=5.0).contains(&sigma) {
                errors.push(job.error(&at("cold_start"), "cold_start.sigma must be between 0 and 5"));
            }
            containers.cold_start = ColdStart::LogNormal { median: median.0, sigma };
        }
    }
    if let Some(k) = p.keep_alive {
        containers.keep_alive = Some(k.0);
    }
    if let Some(o) = p.invocation_overhead {
        containers.overhead = o.0;
    }
    let percent = p.tolerated_failure_percent;
    if percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
        errors.push(job.error(&at("tolerated_failure_percent"), "tolerated_failure_percent must be between 0 and 100"));
    }
    PlatformPlan {
        preset,
        concurrency,
        pricing,
        timeout: match p.timeout {
            Some(t) if t.0.is_zero() => {
                errors.push(job.error(&at("timeout"), "timeout must be more than 0"));
                None
            }
            Some(t) => Some(t.0),
            None => preset.timeout(),
        },
        containers,
        emulate: p.emulate.unwrap_or(false),
        // Backups need containers on threads of their own (to cancel the
        // loser), which FaaS presets have for their deadlines anyway; on
        // local the hand-off would cost ~10 µs an invocation, so it is off
        // unless asked for.
        backups: p.backups.unwrap_or(preset != Preset::Local),
        backup_after: match p.backup_after {
            Some(x) if !(x >= 1.0 && x.is_finite()) => {
                errors
                    .push(job.error(&at("backup_after"), "backup_after must be at least 1 (a multiple of the median)"));
                3.0
            }
            x => x.unwrap_or(3.0),
        },
        backup_when_done: match p.backup_when_done {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                errors.push(job.error(&at("backup_when_done"), "backup_when_done must be between 0 and 1"));
                0.9
            }
            x => x.unwrap_or(0.9),
        },
        retries: p.retries.unwrap_or(2),
        backoff: p.backoff.map_or(std::time::Duration::from_millis(100), |b| b.0),
        tolerated_failure_percent: percent,
        tolerated_failure_count: p.tolerated_failure_count,
        payload_limit: match p.payload_limit {
            Some(l) if l.bytes() == 0 => {
                errors.push(job.error(&at("payload_limit"), "payload_limit must be at least 1 byte"));
                preset.payload_limit()
            }
            Some(l) => l.bytes(),
            None => preset.payload_limit(),
        },
        // Platforms mean MB of 2^20 bytes (Lambda's 1,769 MB is 1,769 MiB).
        memory_limit: (p.memory.is_some() || preset != Preset::Local).then_some(pricing.memory_mb << 20),
    }
}

fn validate_input(
    job: &LoadedJob,
    spec: &InputSpec,
    storage: &Arc<Storage>,
    env: &dyn Environment,
    errors: &mut Vec<JobError>,
) -> Option<InputPlan> {
    let at = |k: &str| FieldPath::keys(["input", k]);
    let before = errors.len();
    let mut told: Option<Format> = None;
    let source = match (&spec.path, &spec.generate) {
        _ if spec.stream.is_some() => {
            let stream = spec.stream.as_ref().expect("matched");
            if spec.path.is_some() || spec.generate.is_some() {
                let other = if spec.path.is_some() { "path" } else { "generate" };
                errors.push(job.error(&at("stream"), format!("give either input.stream or input.{other}, not both")));
            }
            validate_stream_source(job, stream, env, errors).map(InputSource::Stream)
        }
        (Some(_), Some(_)) => {
            errors.push(job.error(&at("generate"), "give either input.path or input.generate, not both"));
            None
        }
        (None, None) => {
            errors.push(
                job.error(&FieldPath::keys(["input"]), "missing input.path (or input.generate, or input.stream)"),
            );
            None
        }
        (Some(paths), None) => {
            let paths = paths.to_vec();
            if paths.is_empty() {
                errors.push(job.error(&at("path"), "input.path is an empty list"));
            }
            for (i, p) in paths.iter().enumerate() {
                match env.first_file(p, storage) {
                    Ok(file) if i == 0 => told = Format::from_path(&file),
                    Ok(_) => {}
                    Err(m) => errors.push(job.error(&at("path"), m)),
                }
            }
            Some(InputSource::Paths(paths))
        }
        (None, Some(g)) => {
            let gat = |k: &str| FieldPath::keys(["input", "generate", k]);
            let kind = GenKind::from_str(&g.kind).map_err(|m| errors.push(job.error(&gat("kind"), m))).ok();
            let amount = match (g.size, g.rows) {
                (Some(s), None) => Some(Amount::Bytes(s.bytes())),
                (None, Some(r)) => Some(Amount::Rows(r)),
                _ => {
                    errors.push(job.error(&at("generate"), "give exactly one of generate.size and generate.rows"));
                    None
                }
            };
            told = kind.map(GenKind::format);
            match (kind, amount) {
                (Some(kind), Some(amount)) => {
                    Some(InputSource::Generate(GenSpec { kind, amount, seed: g.seed.unwrap_or(1) }))
                }
                _ => None,
            }
        }
    };

    let format = match &spec.format {
        Some(name) => match name.parse::<Format>() {
            Ok(f) => Some(f),
            Err(e) => {
                errors.push(job.error(&at("format"), e.to_string()));
                None
            }
        },
        None if spec.stream.is_some() => {
            errors.push(job.error(
                &at("format"),
                "a stream's records have no file name to tell their format: set input.format to text, jsonl or csv",
            ));
            None
        }
        None if errors.len() == before && told.is_none() => {
            errors.push(job.error(
                &at("path"),
                format!(
                    "cannot tell the input format from the file name; set input.format to one of: {}",
                    Format::known_names()
                ),
            ));
            None
        }
        None => told,
    };
    // Without input.format, every file must be of the format the first
    // one's name tells.
    if let (None, Some(format), Some(paths)) = (&spec.format, format, &spec.path) {
        for p in paths.to_vec() {
            if let Some((file, other)) = env.other_format(&p, storage, format) {
                errors.push(job.error(
                    &at("path"),
                    format!(
                        "{} is {other}, but the input is {format} (told from its first file); \
                         name files of one format, or set input.format to read every file as one",
                        file.display()
                    ),
                ));
                break;
            }
        }
    }

    let mut opts = DatasetOptions { format, storage: storage.clone(), ..DatasetOptions::default() };
    if let Some(size) = spec.chunk_size {
        if let Err(m) = size.check() {
            errors.push(job.error(&at("chunk_size"), m));
        }
        opts.chunk_size = size.min.bytes();
        opts.chunk_size_max = size.max.map(|m| m.bytes());
    }
    if let Some(n) = spec.infer_rows {
        opts.infer_rows = n.max(1);
    }
    if let Some(p) = &spec.on_bad_record {
        match p.parse::<OnBadRecord>() {
            Ok(p) => opts.bad.on_bad = p,
            Err(m) => errors.push(job.error(&at("on_bad_record"), m)),
        }
    }
    if let Some(max) = &spec.max_bad_records {
        let parsed = match max {
            CountOrText::Count(n) => Ok(MaxBad::Count(*n)),
            CountOrText::Text(t) => t.parse::<MaxBad>(),
        };
        match parsed {
            Ok(_) if opts.bad.on_bad == OnBadRecord::Fail => {
                errors.push(job.error(
                    &at("max_bad_records"),
                    "max_bad_records applies when on_bad_record is \"skip\" or \"reject\"",
                ))
            }
            Ok(m) => opts.bad.max = Some(m),
            Err(m) => errors.push(job.error(&at("max_bad_records"), m)),
        }
    }
    if let Some(e) = &spec.encoding {
        if format.is_some() && format != Some(Format::Text) {
            errors.push(job.error(&at("encoding"), "input.encoding applies to text input only"));
        }
        match e.parse::<Encoding>() {
            Ok(e) => opts.bad.encoding = e,
            Err(m) => errors.push(job.error(&at("encoding"), m)),
        }
    }
    let is_csv = format == Some(Format::Csv);
    let tsv =
        matches!(&spec.path, Some(p) if p.to_vec().first().is_some_and(|p| p.to_ascii_lowercase().ends_with(".tsv")));
    let mut csv = CsvOptions { delimiter: if tsv { b'\t' } else { b',' }, ..CsvOptions::default() };
    let csv_fields: [(&str, Option<&String>); 3] =
        [("delimiter", spec.delimiter.as_ref()), ("quote", spec.quote.as_ref()), ("escape", spec.escape.as_ref())];
    for (key, value) in csv_fields {
        let Some(value) = value else { continue };
        if !is_csv && format.is_some() {
            errors.push(job.error(&at(key), format!("input.{key} applies to csv input only")));
            continue;
        }
        match value.as_bytes() {
            [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => match key {
                "delimiter" => csv.delimiter = *b,
                "quote" => csv.quote = *b,
                _ => csv.escape = Some(*b),
            },
            _ => errors.push(job.error(&at(key), format!("input.{key} must be one ASCII character, got {value:?}"))),
        }
    }
    if let Some(h) = spec.header {
        if !is_csv && format.is_some() {
            errors.push(job.error(&at("header"), "input.header applies to csv input only"));
        }
        csv.header = h;
    }
    opts.csv = csv;
    if let Some(columns) = &spec.schema {
        if format.is_some() && !matches!(format, Some(Format::Csv | Format::Jsonl)) {
            errors.push(job.error(
                &at("schema"),
                "input.schema applies to csv and jsonl input only; other formats carry their own",
            ));
        }
        if columns.is_empty() {
            errors.push(job.error(&at("schema"), "input.schema lists no column; name one, or leave it out to infer"));
        }
        let mut fields = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            match parse_column(c) {
                Ok(f) => fields.push(f),
                Err(m) => errors.push(job.error(&at("schema").index(i), m)),
            }
        }
        opts.schema = Some(Arc::new(Schema::new(fields)));
    }
    (errors.len() == before).then(|| InputPlan { source: source.expect("no errors"), options: opts })
}

fn validate_stages(
    job: &LoadedJob,
    catalog: &dyn FunctionCatalog,
    env: &dyn Environment,
    default_concurrency: usize,
    errors: &mut Vec<JobError>,
) -> Vec<StagePlan> {
    let mut stages: Vec<StagePlan> = Vec::new();
    for (i, s) in job.file.stages.iter().enumerate() {
        let at = FieldPath::keys(["stage"]).index(i);
        let (function, base) = match &s.function {
            FunctionSpec::Builtin(name) => {
                if let Err(p) = catalog.check(name, &s.params, s.key.is_some()) {
                    let field = match &p.param {
                        Some(param) => at.key("params").key(param),
                        None => at.key("function"),
                    };
                    errors.push(job.error(&field, p.message));
                }
                (FunctionRef::Builtin(name.clone()), name.clone())
            }
            // The kind names a stage by what it runs (exec: the program).
            FunctionSpec::External(table) => validate_external(job, &at, i, table, catalog, env, errors),
        };
        let name = s.name.clone().unwrap_or_else(|| {
            if base.is_empty() || stages.iter().any(|p| p.name == base) { format!("{base}{i}") } else { base }
        });
        if name.is_empty() {
            errors.push(job.error(&at.key("name"), "a stage name cannot be empty"));
        } else if stages.iter().any(|p| p.name == name) {
            errors.push(job.error(&at.key("name"), format!("two stages are named `{name}`; give each a unique name")));
        }
        if let Some(key) = &s.key {
            if key.is_empty() && s.partitions.is_some_and(|p| p > 1) {
                errors.push(
                    job.error(
                        &at.key("partitions"),
                        "an empty key makes one group, so one partition; remove partitions",
                    ),
                );
            }
        } else if s.partitions.is_some() {
            errors.push(job.error(&at.key("partitions"), "partitions applies to keyed stages only; add key = [...]"));
        }
        if s.partitions == Some(0) {
            errors.push(job.error(&at.key("partitions"), "partitions must be at least 1"));
        }
        if s.concurrency == Some(0) {
            errors.push(job.error(&at.key("concurrency"), "concurrency must be at least 1"));
        }
        stages.push(StagePlan {
            name,
            function,
            params: s.params.clone(),
            key: s.key.clone(),
            // An empty key is one global group: one partition.
            partitions: match &s.key {
                Some(k) if k.is_empty() => 1,
                _ => s.partitions.unwrap_or(default_concurrency).max(1),
            },
            concurrency: s.concurrency.unwrap_or(default_concurrency).max(1),
        });
    }
    stages
}

fn validate_output(
    job: &LoadedJob,
    spec: &OutputSpec,
    input: &InputSpec,
    env: &dyn Environment,
    errors: &mut Vec<JobError>,
) -> Option<OutputPlan> {
    let at = |k: &str| FieldPath::keys(["output", k]);
    let before = errors.len();
    // A `file://` URL is a local path.
    let path = PathBuf::from(fanout_datasets::store::local_path(&spec.path));
    if spec.path.is_empty() {
        errors.push(job.error(&at("path"), "output.path is empty"));
    } else if fanout_datasets::store::is_url(&spec.path)
        && !spec.path.starts_with("file://")
        && input.stream.is_none()
        && let Err(why) = fanout_datasets::store::writable(&spec.path)
    {
        errors.push(job.error(&at("path"), format!("output.path `{}`: {why}", spec.path)));
    }
    let stdout = spec.path == "-";
    if input.stream.is_none() {
        if stdout {
            errors.push(job.error(&at("path"), "output.path = \"-\" (standard output) applies to a stream"));
        }
        if spec.post.is_some() {
            errors.push(job.error(&at("post"), "output.post (an HTTP sink) applies to a stream"));
        }
    }
    if let Some(url) = &spec.post
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errors.push(job.error(&at("post"), format!("output.post `{url}` is not an http:// or https:// URL")));
    }
    let format = match &spec.format {
        Some(name) => name.parse::<Format>().map_err(|e| e.to_string()),
        // Standard output gets JSON lines.
        None if stdout => Ok(Format::Jsonl),
        None => Format::from_path(&path).ok_or_else(|| {
            "cannot tell the output format from the file name; set output.format to one of: csv, jsonl, parquet, arrow"
                .to_string()
        }),
    };
    let format = match format {
        Ok(Format::Text) => {
            errors.push(job.error(&at("format"), "text is an input format only; write csv, jsonl, parquet or arrow"));
            None
        }
        Ok(f) => Some(f),
        Err(m) => {
            errors.push(job.error(&at(if spec.format.is_some() { "format" } else { "path" }), m));
            None
        }
    };
    let mode = match spec.mode.as_deref() {
        None | Some("error") => OutputMode::Error,
        Some("overwrite") => OutputMode::Overwrite,
        Some(m) => {
            errors.push(job.error(&at("mode"), format!("unknown mode `{m}`, expected one of: error, overwrite")));
            OutputMode::Error
        }
    };
    let mut sort = Vec::new();
    for (i, s) in spec.sort.iter().enumerate() {
        let (column, descending) = match s.strip_prefix('-') {
            Some(c) => (c, true),
            None => (s.strip_prefix('+').unwrap_or(s), false),
        };
        if column.is_empty() {
            errors.push(job.error(&at("sort").index(i), "a sort entry must name a column, e.g. \"-count\""));
        }
        sort.push(SortKey { column: column.to_string(), descending });
    }
    if let Some(paths) = &input.path {
        for p in paths.to_vec() {
            if env.overlaps(&p, &path) {
                errors.push(job.error(
                    &at("path"),
                    format!("output.path `{}` is also an input (`{p}`); write the output elsewhere", spec.path),
                ));
            }
        }
    }
    (errors.len() == before).then(|| OutputPlan {
        path,
        format: format.expect("no errors"),
        sort,
        limit: spec.limit,
        mode,
        post: spec.post.clone(),
    })
}

/// The job's name: its own, else its file's stem.
fn job_name(job: &LoadedJob) -> String {
    job.file.name.clone().unwrap_or_else(|| {
        job.source.path.file_stem().map_or_else(|| "job".to_string(), |s| s.to_string_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_columns_hold_json_text() {
        let f = parse_column("license: json").unwrap();
        assert!(fanout_datasets::is_json_text(&f));
        assert_eq!(f, fanout_datasets::json_text_field("license"));
        assert_eq!(parse_column("n:JSON").unwrap(), fanout_datasets::json_text_field("n"));
        assert!(!fanout_datasets::is_json_text(&parse_column("s:utf8").unwrap()));
        let e = parse_column("x:nope").unwrap_err();
        assert!(e.ends_with("timestamp, json (any JSON value, kept as its text)"), "{e}");
    }
}
