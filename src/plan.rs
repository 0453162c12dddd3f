//! `fanout validate` and `fanout plan`.

use std::io::Write;

use anyhow::Context;
use fanout_datasets::Dataset;
use fanout_datasets::generator::Amount;
use fanout_jobs::units::Size;
use fanout_jobs::{InputSource, OutputMode, Plan, load, validate as check};
use fanout_workers::catalog::Builtins;

use crate::args::JobArgs;
use crate::{Failure, Outcome};

/// Loads and validates the job named by `a`.
pub fn load_plan(a: &JobArgs) -> Result<Plan, Failure> {
    let job = load(&a.job, &a.set).map_err(Failure::invalid)?;
    check(&job, &Builtins).map_err(Failure::invalid)
}

/// `fanout validate JOB`.
pub fn validate(a: &JobArgs) -> Outcome {
    let plan = load_plan(a)?;
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
    let plan = load_plan(a)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "job {} ({})", plan.name, a.job.display())?;

    let input = &plan.input;
    let paths = input.paths(&a.cache_dir).context("cannot generate the input")?;
    match &input.source {
        InputSource::Paths(p) => writeln!(out, "input: {}", p.join(", "))?,
        InputSource::Generate(g) => {
            let amount = match g.amount {
                Amount::Bytes(b) => Size(b).to_string(),
                Amount::Rows(r) => format!("{r} rows"),
            };
            writeln!(out, "input: generated {} ({amount}, seed {}) at {}", g.kind, g.seed, paths[0])?
        }
    }
    let ds = Dataset::open(paths, input.options.clone()).map_err(Failure::invalid)?;
    let sum = ds.summary().map_err(Failure::invalid)?;
    let columns: Vec<String> =
        ds.schema().fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
    writeln!(out, "  format: {}; columns: {}", ds.format(), columns.join(", "))?;
    writeln!(out, "  files: {}, {} ({} bytes)", sum.files, Size(sum.bytes), sum.bytes)?;
    writeln!(
        out,
        "  splits: {} (target {}; {} to {})",
        sum.splits,
        Size(input.options.chunk_size),
        Size(sum.min_split),
        Size(sum.max_split)
    )?;

    writeln!(out, "stages:")?;
    if plan.stages.is_empty() {
        writeln!(out, "  (none: the input is written as it is)")?;
    }
    for (i, s) in plan.stages.iter().enumerate() {
        let shape = match &s.key {
            Some(key) => format!("keyed by {} into {} partitions", key.join(", "), s.partitions),
            None => "map".to_string(),
        };
        let params = if s.params.is_empty() {
            String::new()
        } else {
            format!(" {}", serde_json::Value::Object(s.params.clone()))
        };
        writeln!(out, "  {}. {}: {}{params} ({shape}, concurrency {})", i + 1, s.name, s.function, s.concurrency)?;
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
    writeln!(out, "platform: {:?}, concurrency {}", plan.platform.preset, plan.platform.concurrency)?;
    Ok(())
}
