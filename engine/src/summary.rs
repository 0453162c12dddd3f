//! `summary.json`: what a run did, how fast, and how its invocations went;
//! and the same as the table `fanout run` prints ([`Summary::render`]).

use std::path::PathBuf;
use std::time::Duration;

use fanout_jobs::Plan;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, TaskFailure};
use crate::gather::OutputInfo;
use crate::stats::StageStats;
use crate::step::Step;

/// What a run measured, for its summary.
pub(crate) struct Totals {
    /// Statistics per step (by step index).
    pub(crate) stats: Vec<StageStats>,
    pub(crate) splits: u64,
    pub(crate) input_bytes: u64,
    pub(crate) input_records: u64,
    pub(crate) spilled: u64,
    /// Shuffle bytes written to object storage (`[storage] scratch`).
    pub(crate) scratch_written: u64,
    pub(crate) concurrency: usize,
    /// Tasks that failed for good.
    pub(crate) failures: Vec<TaskFailure>,
    /// Tasks taken from the journal of an earlier run.
    pub(crate) resumed: u64,
    /// Backup tasks started for stragglers.
    pub(crate) backups: u64,
    /// Input records that could not be read (skipped or rejected), and
    /// the rejects file when rejecting.
    pub(crate) bad_records: u64,
    pub(crate) rejects: Option<std::path::PathBuf>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One stage's (and phase's) totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// The stage.
    pub name: String,
    /// map, combine or reduce.
    pub phase: String,
    /// Invocations.
    pub invocations: u64,
    /// Cold starts.
    pub cold: u64,
    /// Failed invocations.
    pub failed: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Invocation latency.
    pub latency_ms: Latency,
    /// Billed GB-seconds of its invocations (0 in runs before it was kept).
    #[serde(default)]
    pub gb_seconds: f64,
    /// What its invocations cost on the platform model, in dollars.
    #[serde(default)]
    pub usd: f64,
}

/// Input totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSummary {
    /// Splits read.
    pub splits: u64,
    /// Bytes read (on disk).
    pub bytes: u64,
    /// Records read.
    pub records: u64,
    /// Records that could not be read and were left out, under
    /// `on_bad_record = "skip"`.
    #[serde(default)]
    pub skipped: u64,
    /// Records that could not be read and were set aside in the rejects
    /// file, under `on_bad_record = "reject"`.
    #[serde(default)]
    pub rejected: u64,
    /// The rejects file, when rejecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<std::path::PathBuf>,
}

/// Invocation totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocations {
    /// All invocations.
    pub total: u64,
    /// Cold starts.
    pub cold: u64,
    /// Failed ones.
    pub failed: u64,
    /// Invocations per second of wall time.
    pub per_second: f64,
}

/// What the invocations would cost on the platform model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The preset priced.
    pub preset: String,
    /// Memory per container, MB.
    pub memory_mb: u64,
    /// Requests (invocations, retries included).
    pub requests: u64,
    /// Billed duration, seconds.
    pub billed_seconds: f64,
    /// Billed GB-seconds.
    pub gb_seconds: f64,
    /// Dollars.
    pub usd: f64,
    /// How much slower CPU-bound work runs on the platform than on a core
    /// here (Lambda below 1,769 MB); durations were scaled by it.
    #[serde(default = "one")]
    pub cpu_scale: f64,
    /// Durations are this machine's; a platform whose CPU share differs
    /// from a core here would run CPU-bound functions slower or faster.
    pub note: String,
}

fn one() -> f64 {
    1.0
}

/// A task that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedTask {
    /// The stage.
    pub stage: String,
    /// map, combine or reduce.
    pub phase: String,
    /// The task.
    pub task: u64,
    /// Its input.
    pub input: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

impl From<&crate::error::TaskFailure> for FailedTask {
    fn from(f: &crate::error::TaskFailure) -> FailedTask {
        FailedTask {
            stage: f.stage.clone(),
            phase: f.phase.name().to_string(),
            task: f.task,
            input: f.input.clone(),
            attempts: f.attempt,
            error: f.message.clone(),
        }
    }
}

/// The whole summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The run's id.
    pub run_id: String,
    /// The job's name.
    pub job: String,
    /// succeeded or failed.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Wall time.
    pub wall_seconds: f64,
    /// CPU time (user and system) this process, and the processes it
    /// waited for, used during the run (from the plan compiled and any
    /// generated input made): set for real runs. A calibration tells work
    /// that takes a core from waiting by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Worker slots.
    pub concurrency: usize,
    /// What was read.
    pub input: InputSummary,
    /// Input MiB per second of wall time.
    pub input_mib_per_second: f64,
    /// Input records per second of wall time.
    pub records_per_second: f64,
    /// What was written.
    pub output: Option<OutputInfo>,
    /// Invocation totals.
    pub invocations: Invocations,
    /// Invocations that were retries of a failed attempt.
    pub retries: u64,
    /// Tasks taken from the journal of an interrupted run (`--resume`).
    pub resumed_tasks: u64,
    /// Backup tasks started for stragglers.
    pub backup_tasks: u64,
    /// Tasks that failed for good (tolerated, or the one that failed the job).
    pub failed_tasks: Vec<FailedTask>,
    /// The bill on the platform model.
    pub cost: Cost,
    /// Invocation latency over all stages.
    pub latency_ms: Latency,
    /// Shuffle bytes spilled to disk.
    pub shuffle_spilled_bytes: u64,
    /// Shuffle bytes written to object storage, for keyed stages with
    /// remote functions when the job names a scratch prefix.
    #[serde(default)]
    pub shuffle_scratch_bytes: u64,
    /// Per stage and phase.
    pub stages: Vec<StageSummary>,
    /// Requests to object storage and their price, when the run used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageUse>,
    /// Set when the run was simulated (`fanout simulate`), not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<Simulation>,
    /// A stream's own counts, when the input was a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSummary>,
}

/// Requests a run made to object storage, by kind, with the bytes moved
/// and their price on the preset (included in the cost's dollars).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageUse {
    /// The requests and bytes.
    #[serde(flatten)]
    pub requests: fanout_datasets::RequestCounts,
    /// Their price, in dollars.
    pub usd: f64,
}

impl StorageUse {
    /// The storage `plan`'s run used so far, if it used any.
    pub(crate) fn of(plan: &Plan) -> Option<StorageUse> {
        let requests = plan.storage.requests();
        (requests.total() > 0).then(|| StorageUse::priced(requests, plan.platform.preset))
    }

    /// `requests` priced on `preset`.
    pub(crate) fn priced(requests: fanout_datasets::RequestCounts, preset: fanout_jobs::Preset) -> StorageUse {
        let (write, read) = preset.storage_prices();
        let usd = requests.write_class() as f64 * write + requests.read_class() as f64 * read;
        StorageUse { requests, usd }
    }
}

/// How a simulated run was made, and the spread of its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    /// Always true: the summary is a prediction.
    pub simulated: bool,
    /// The run whose invocations calibrated the durations.
    pub calibrated_from: PathBuf,
    /// Seeds simulated; the summary's figures are the first seed's.
    pub seeds: u32,
    /// Wall time over the seeds: 5th percentile, median, 95th.
    pub wall_p5: f64,
    /// The median.
    pub wall_p50: f64,
    /// The 95th percentile.
    pub wall_p95: f64,
    /// The share of their time the calibration's invocations kept a core
    /// busy (its CPU time over their time, at the lowest concurrency it
    /// ran): past the concurrency it ran at, invocations on this machine
    /// share its cores by it. Absent when the durations were given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<f64>,
    /// This machine's cores, which such invocations share.
    #[serde(default)]
    pub cores: f64,
}

/// Per stage and phase, the summary of `stats` (by step index); their
/// total; and what they cost on the plan's platform.
pub(crate) fn stage_summaries(plan: &Plan, stats: &[StageStats]) -> (Vec<StageSummary>, StageStats, Cost) {
    let mut all = StageStats::default();
    let mut stages = Vec::new();
    for (i, s) in plan.stages.iter().enumerate() {
        let steps = if s.key.is_some() { vec![Step::combine(i), Step::reduce(i)] } else { vec![Step::map(i)] };
        for step in steps {
            let st = &stats[step.index()];
            all.merge(st);
            stages.push(StageSummary {
                name: s.name.clone(),
                phase: step.kind.name().to_string(),
                invocations: st.invocations,
                cold: st.cold,
                failed: st.failed,
                records_in: st.records_in,
                records_out: st.records_out,
                bytes_in: st.bytes_in,
                bytes_out: st.bytes_out,
                latency_ms: Latency::of(&st.latency),
                gb_seconds: plan.platform.pricing.gb_seconds(Duration::from_micros(st.billed_us)),
                usd: plan.platform.pricing.bill(Duration::from_micros(st.billed_us), st.invocations),
            });
        }
    }
    let pricing = &plan.platform.pricing;
    let billed = Duration::from_micros(all.billed_us);
    let cost = Cost {
        preset: plan.platform.preset.name().to_string(),
        memory_mb: pricing.memory_mb,
        requests: all.invocations,
        billed_seconds: billed.as_secs_f64(),
        gb_seconds: pricing.gb_seconds(billed),
        usd: pricing.bill(billed, all.invocations),
        cpu_scale: pricing.cpu_scale,
        note: if pricing.cpu_scale > 1.0 {
            format!(
                "durations measured here scaled by {:.2}: at {} MB the platform gives {:.2} of a vCPU, so CPU-bound work \
                 runs that much slower",
                pricing.cpu_scale,
                pricing.memory_mb,
                1.0 / pricing.cpu_scale
            )
        } else {
            "durations as measured on this machine, one core per invocation".to_string()
        },
    };
    (stages, all, cost)
}

/// CPU seconds (user and system) this process and its waited-for
/// children have used so far.
pub(crate) fn cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |w| {
        getrusage(w).ok().map(|u| {
            let (a, b) = (u.user_time(), u.system_time());
            (a.tv_sec() + b.tv_sec()) as f64 + (a.tv_usec() + b.tv_usec()) as f64 / 1e6
        })
    };
    Some(secs(UsageWho::RUSAGE_SELF)? + secs(UsageWho::RUSAGE_CHILDREN)?)
}

pub(crate) fn summarize(
    run_id: &str,
    plan: &Plan,
    state: &Totals,
    wall: Duration,
    cpu: Option<f64>,
    output: Option<OutputInfo>,
    error: Option<&EngineError>,
) -> Summary {
    let secs = wall.as_secs_f64().max(1e-9);
    let (stages, all, mut cost) = stage_summaries(plan, &state.stats);
    let failed_tasks = state.failures.iter().map(FailedTask::from).collect();
    let storage = StorageUse::of(plan);
    cost.usd += storage.as_ref().map_or(0.0, |s| s.usd);
    Summary {
        run_id: run_id.to_string(),
        job: plan.name.clone(),
        status: if error.is_none() { "succeeded" } else { "failed" }.to_string(),
        error: error.map(ToString::to_string),
        wall_seconds: secs,
        cpu_seconds: cpu,
        concurrency: state.concurrency,
        input: InputSummary {
            splits: state.splits,
            bytes: state.input_bytes,
            records: state.input_records,
            skipped: if state.rejects.is_none() { state.bad_records } else { 0 },
            rejected: if state.rejects.is_some() { state.bad_records } else { 0 },
            rejects: state.rejects.clone(),
        },
        input_mib_per_second: state.input_bytes as f64 / (1 << 20) as f64 / secs,
        records_per_second: state.input_records as f64 / secs,
        output,
        invocations: Invocations {
            total: all.invocations,
            cold: all.cold,
            failed: all.failed,
            per_second: all.invocations as f64 / secs,
        },
        latency_ms: Latency::of(&all.latency),
        retries: all.retries,
        resumed_tasks: state.resumed,
        backup_tasks: state.backups,
        failed_tasks,
        cost,
        shuffle_spilled_bytes: state.spilled,
        shuffle_scratch_bytes: state.scratch_written,
        stages,
        storage,
        simulation: None,
        stream: None,
    }
}

/// How a stream ran, in `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Records read from the source.
    pub records_in: u64,
    /// Rows committed to the output.
    pub rows_out: u64,
    /// Batches processed.
    pub batches: u64,
    /// Windows committed.
    pub windows: u64,
    /// Records that came after their window had closed (in `late/` of
    /// the run directory).
    pub late_records: u64,
    /// Records a function failed on, set aside by `on_failure` (in
    /// `rejects/` of the run directory, or sent to a queue).
    #[serde(default)]
    pub failed_records: u64,
    /// Records of a service older than `max_record_age` when received (in
    /// `expired/` of the run directory).
    #[serde(default)]
    pub expired_records: u64,
    /// Output files committed.
    pub files: u64,
    /// The output directory.
    pub output: PathBuf,
    /// Why it stopped: `idle`, `records`, `time` or `input ended`.
    pub stopped_by: String,
    /// Milliseconds from each record's arrival to the commit of the file
    /// that holds its result (this run's records; a resume's replay
    /// counts from the replay).
    pub latency_ms: Latency,
    /// The stream over time, a sample a second (fewer for a long run: at
    /// most 1,800, spread evenly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<LagSample>,
    /// What reading the source cost on its service's own prices (Kinesis,
    /// SQS), over the run and its resumes; apart from `cost`, the
    /// functions'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cost: Option<SourceCost>,
}

/// What a stream's source cost on its service's prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceCost {
    /// The service: `kinesis` or `sqs`.
    pub service: String,
    /// What was billed.
    pub charges: Vec<SourceCharge>,
    /// Dollars, in all.
    pub usd: f64,
    /// The prices, and what they cover.
    pub note: String,
}

/// One line of a source's bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceCharge {
    /// What is billed: `shard-hours`, `PUT payload units`, `requests`.
    pub item: String,
    /// How many.
    pub quantity: f64,
    /// Dollars each.
    pub price: f64,
    /// Dollars.
    pub usd: f64,
}

/// A stream at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagSample {
    /// Seconds since this run (or resume) started.
    pub at_s: f64,
    /// Records read from the source so far (a resume's counts go on from
    /// the run's).
    pub records_in: u64,
    /// Rows committed so far.
    pub rows_out: u64,
    /// Files of the source's directory (or spool) not read yet.
    pub waiting_files: u64,
    /// Milliseconds from the newest event time seen to now.
    pub behind_ms: Option<i64>,
}
