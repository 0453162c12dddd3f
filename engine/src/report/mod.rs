//! The presentation of runs: the report page (`fanout report`), the trace
//! (`fanout trace`, `trace.rs`), the summary table `fanout run` prints
//! (`table.rs`) and the bench page (`bench.rs`).
//!
//! Reports: a run (or two, side by side) as one self-contained HTML page
//! of inline SVG charts and tables, which opens offline and can be
//! attached to a ticket. The page shows the summary, a timeline of the
//! worker slots, concurrency, latency and throughput over time, cost per
//! stage, the slowest invocations with their splits, and the failures.
//!
//! A report reads the run directory only: `summary.json` when the run has
//! one (an interrupted run has not), and the invocation records, in two
//! passes that aggregate them into pixel columns (see `aggregate.rs`), so
//! the page stays a few hundred KB for 10^6 invocations.

mod aggregate;
mod bench;
mod charts;
mod compare;
mod html;
mod table;
mod trace;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use fanout_datasets::Dataset;
use fanout_jobs::InputSource;

use crate::error::EngineError;
use crate::summary::Summary;
use aggregate::Aggregate;

pub use bench::{BenchReport, ProgramResult, Skipped, Spread, WorkloadResult};
pub use compare::Comparison;
pub use trace::{Traced, write_trace};

/// What a written report holds.
#[derive(Debug, Clone)]
pub struct ReportInfo {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The invocations it drew, over all runs.
    pub invocations: u64,
    /// The timeline's tracks (of the first run).
    pub tracks: usize,
}

/// A run as a report sees it.
pub(crate) struct RunView {
    pub(crate) dir: PathBuf,
    pub(crate) id: String,
    pub(crate) summary: Option<Summary>,
    pub(crate) agg: Aggregate,
    /// The input each of the slowest split tasks read.
    pub(crate) splits: HashMap<u64, String>,
}

impl RunView {
    /// Reads the run in `dir`.
    pub(crate) fn load(dir: &Path) -> Result<RunView, EngineError> {
        if !dir.join("job.json").is_file() {
            return Err(EngineError::io(dir, std::io::Error::other("not a run directory (no job.json)")));
        }
        let summary_path = dir.join("summary.json");
        let summary: Option<Summary> = match std::fs::read(&summary_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| EngineError::io(&summary_path, std::io::Error::other(e)))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(EngineError::io(&summary_path, e)),
        };
        let agg = Aggregate::build(dir, summary.as_ref())?;
        let wanted: BTreeSet<u64> = agg.slowest.iter().filter(|s| agg.keys[s.key].splits).map(|s| s.task).collect();
        let splits = describe_splits(dir, &wanted);
        let id = summary.as_ref().map_or_else(
            || dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            |s| s.run_id.clone(),
        );
        Ok(RunView { dir: dir.to_path_buf(), id, summary, agg, splits })
    }

    /// The job's name.
    pub(crate) fn job(&self) -> String {
        match &self.summary {
            Some(s) => s.job.clone(),
            None => std::fs::read(self.dir.join("job.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .unwrap_or_else(|| "-".to_string()),
        }
    }

    /// succeeded, failed, or, with no summary, running (a process holds
    /// the run directory) or interrupted.
    pub(crate) fn status(&self) -> &str {
        match &self.summary {
            Some(s) => s.status.as_str(),
            None if crate::run::running(&self.dir).is_some() => "running",
            None => "interrupted",
        }
    }

    /// Wall time, seconds (the last invocation's end without a summary).
    pub(crate) fn wall(&self) -> f64 {
        self.summary.as_ref().map_or(self.agg.span_us as f64 / 1e6, |s| s.wall_seconds)
    }

    /// What the task of a key read: its split, or its partition.
    pub(crate) fn input_of(&self, key: usize, task: u64) -> String {
        if self.agg.keys[key].splits {
            self.splits.get(&task).cloned().unwrap_or_else(|| format!("split {task}"))
        } else {
            format!("partition {task}")
        }
    }
}

/// Writes the report of the run in `run_dir` to `out`.
pub fn write(run_dir: &Path, out: &Path) -> Result<ReportInfo, EngineError> {
    let run = RunView::load(run_dir)?;
    let page = html::page(&run).map_err(|e| EngineError::io(out, std::io::Error::other(e)))?;
    save(out, &page)?;
    Ok(ReportInfo {
        path: out.to_path_buf(),
        bytes: page.len() as u64,
        invocations: run.agg.invocations,
        tracks: run.agg.rows,
    })
}

/// Writes a report that puts the runs in `a` and `b` side by side to
/// `out`; returns it and the comparison (whose `Display` is a table for a
/// terminal).
pub fn write_comparison(a: &Path, b: &Path, out: &Path) -> Result<(ReportInfo, Comparison), EngineError> {
    let (ra, rb) = (RunView::load(a)?, RunView::load(b)?);
    let cmp = Comparison::of(&ra, &rb);
    let page = compare::page(&ra, &rb, &cmp).map_err(|e| EngineError::io(out, std::io::Error::other(e)))?;
    save(out, &page)?;
    let info = ReportInfo {
        path: out.to_path_buf(),
        bytes: page.len() as u64,
        invocations: ra.agg.invocations + rb.agg.invocations,
        tracks: ra.agg.rows,
    };
    Ok((info, cmp))
}

/// Writes `page` to `out` whole: a temporary file renamed into place.
fn save(out: &Path, page: &str) -> Result<(), EngineError> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp =
        dir.join(format!(".{}.tmp", out.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())));
    std::fs::write(&tmp, page).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| EngineError::io(out, e))
}

/// The most splits listed to find a slow task's: past it, the table says
/// `split N` (listing is cheap, but not free on 10^7 splits).
const MAX_LISTED: u64 = 2_000_000;

/// What the split tasks in `tasks` read (file and byte range, row groups
/// or batches), from the run's job: its input is listed again. Empty when
/// the input is gone or changed shape; the report then names the split's
/// number only.
fn describe_splits(run_dir: &Path, tasks: &BTreeSet<u64>) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    let Some(&last) = tasks.last() else { return found };
    if last >= MAX_LISTED {
        return found;
    }
    let registry = fanout_workers::Registry::builtins();
    let Ok(job) = fanout_jobs::load(&run_dir.join("job.json"), &[]) else { return found };
    let Ok(plan) = fanout_jobs::validate(&job, &registry) else { return found };
    let paths = match &plan.input.source {
        InputSource::Paths(p) => p.clone(),
        InputSource::Generate(g) => {
            // Generated inputs live in the cache beside the runs
            // directory (.fanout/cache); never generated again here.
            let cached = run_dir.join("../../cache").join(fanout_jobs::generated_name(g));
            if !cached.is_file() {
                return found;
            }
            let cached = std::fs::canonicalize(&cached).unwrap_or(cached);
            vec![cached.display().to_string()]
        }
        // A stream's batches are not splits of files.
        InputSource::Stream(_) => return found,
    };
    let Ok(ds) = Dataset::open(paths, plan.input.options.clone()) else { return found };
    for split in ds.splits() {
        let Ok(split) = split else { break };
        if tasks.contains(&split.index) {
            found.insert(split.index, split.to_string());
        }
        if split.index >= last {
            break;
        }
    }
    found
}
