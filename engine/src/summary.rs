//! `summary.json`: what a run did, how fast, and how its invocations went.

use std::time::Duration;

use fanout_jobs::Plan;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::compile::{Compiled, Step};
use crate::error::EngineError;
use crate::gather::OutputInfo;
use crate::run::{RunState, stat_index};
use crate::stats::StageStats;

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
    fn of(h: &Histogram<u64>) -> Latency {
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
    /// Durations are this machine's; a platform whose CPU share differs
    /// from a core here would run CPU-bound functions slower or faster.
    pub note: String,
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
    /// Per stage and phase.
    pub stages: Vec<StageSummary>,
}

pub(crate) fn summarize(
    run_id: &str,
    plan: &Plan,
    compiled: &Compiled,
    state: &RunState,
    wall: Duration,
    output: Option<OutputInfo>,
    error: Option<&EngineError>,
) -> Summary {
    let secs = wall.as_secs_f64().max(1e-9);
    let mut all = StageStats::default();
    let mut stages = Vec::new();
    for (i, s) in compiled.stages.iter().enumerate() {
        let steps = if s.key.is_some() { vec![Step::Combine(i), Step::Reduce(i)] } else { vec![Step::Map(i)] };
        for step in steps {
            let st = &state.stats[stat_index(step)];
            all.merge(st);
            stages.push(StageSummary {
                name: s.name.clone(),
                phase: step.phase().to_string(),
                invocations: st.invocations,
                cold: st.cold,
                failed: st.failed,
                records_in: st.records_in,
                records_out: st.records_out,
                bytes_in: st.bytes_in,
                bytes_out: st.bytes_out,
                latency_ms: Latency::of(&st.latency),
            });
        }
    }
    let pricing = &plan.platform.pricing;
    let billed_seconds = all.billed_us as f64 / 1e6;
    let gb_seconds = billed_seconds * pricing.memory_mb as f64 / 1024.0;
    let cost = Cost {
        preset: plan.platform.preset.name().to_string(),
        memory_mb: pricing.memory_mb,
        requests: all.invocations,
        billed_seconds,
        gb_seconds,
        usd: gb_seconds * pricing.price_per_gb_second + all.invocations as f64 * pricing.price_per_request,
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
    let failed_tasks = state
        .failures
        .iter()
        .map(|f| FailedTask {
            stage: f.stage.clone(),
            phase: f.phase.to_string(),
            task: f.task,
            input: f.input.clone(),
            attempts: f.attempt,
            error: f.message.clone(),
        })
        .collect();
    Summary {
        run_id: run_id.to_string(),
        job: plan.name.clone(),
        status: if error.is_none() { "succeeded" } else { "failed" }.to_string(),
        error: error.map(ToString::to_string),
        wall_seconds: secs,
        concurrency: state.concurrency,
        input: InputSummary { splits: state.splits, bytes: state.input_bytes, records: state.input_records },
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
        stages,
    }
}
