//! Helpers shared by the engine tests: jobs from TOML text, runs in a
//! scratch directory.

#![allow(dead_code)]

use std::path::Path;

use fanout_engine::{Report, RunFailure, RunOptions, run};
use fanout_jobs::{Plan, Source, load_source, validate};
use fanout_workers::Registry;

/// Validates TOML job `text` (paths relative to `dir`) with `registry`.
pub fn plan(dir: &Path, text: &str, registry: &Registry) -> (fanout_jobs::JobFile, Plan) {
    let job = load_source(Source::new(&dir.join("job.toml"), text.to_string()), &[]).unwrap();
    let plan = validate(&job, registry).unwrap_or_else(|e| panic!("{e}"));
    (job.file, plan)
}

/// Runs a job in `dir` with a given shuffle budget.
pub fn run_in(dir: &Path, text: &str, registry: &Registry, shuffle_memory: u64) -> Result<Report, RunFailure> {
    let (file, plan) = plan(dir, text, registry);
    let opts = RunOptions {
        run_dir: Some(dir.join(format!(
            "run-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ))),
        cache_dir: dir.join("cache"),
        shuffle_memory,
        ..RunOptions::default()
    };
    run(&plan, &file, registry, &opts)
}

/// A run's invocation records as JSON lines, as `fanout records` prints them.
pub fn records(run_dir: &Path) -> String {
    fanout_engine::records::read(run_dir).unwrap().map(|r| serde_json::to_string(&r.unwrap()).unwrap() + "\n").collect()
}
