//! What one seed's simulation came to, as a run's summary (for the run
//! directory a simulation writes) or as the figures a sweep compares.

use fanout_jobs::Plan;
use serde::Serialize;

use crate::stats::StageStats;
use fanout_datasets::RequestCounts;

use crate::summary::{
    Cost, FailedTask, InputSummary, Invocations, Latency, Simulation, StageSummary, StorageUse, Summary,
    stage_summaries,
};

/// What one seed's simulation came to.
pub(super) struct Outcome {
    pub(super) wall_us: u64,
    pub(super) stats: Vec<StageStats>,
    pub(super) splits: u64,
    pub(super) input_bytes: u64,
    pub(super) input_records: u64,
    pub(super) backups: u64,
    pub(super) failed: Vec<FailedTask>,
    /// Why the run stopped, as the engine would say it: a task failed
    /// beyond what the job tolerates.
    pub(super) error: Option<String>,
    pub(super) concurrency: usize,
    /// Object storage requests, scaled from the calibration runs'.
    pub(super) storage: Option<RequestCounts>,
}

impl Outcome {
    /// The invocations' totals and the bill, object storage included.
    fn cost(&self, plan: &Plan) -> (Vec<StageSummary>, StageStats, Cost, Option<StorageUse>) {
        let (stages, all, mut cost) = stage_summaries(plan, &self.stats);
        let storage = self.storage.map(|requests| StorageUse::priced(requests, plan.platform.preset));
        cost.usd += storage.as_ref().map_or(0.0, |s| s.usd);
        (stages, all, cost, storage)
    }
}

/// A simulated run's figures, as a sweep tabulates them (medians over the
/// seeds, but for the wall time's spread).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Wall time, seconds: 5th percentile over the seeds, median, 95th.
    pub wall_p5: f64,
    /// The median.
    pub wall_p50: f64,
    /// The 95th percentile.
    pub wall_p95: f64,
    /// Invocations (retries and backups included).
    pub invocations: u64,
    /// Cold starts.
    pub cold: u64,
    /// Retried attempts.
    pub retries: u64,
    /// Tasks backed up.
    pub backups: u64,
    /// Tasks failed for good.
    pub failed_tasks: u64,
    /// Billed GB-seconds.
    pub gb_seconds: f64,
    /// Requests billed.
    pub requests: u64,
    /// What the run costs on the platform, dollars.
    pub usd: f64,
    /// Seeds whose run failed (a task failed beyond what the job
    /// tolerates).
    pub failed_seeds: u32,
    /// The first failed seed's error.
    pub error: Option<String>,
}

impl Figures {
    /// The figures of `outcomes` (one per seed) of `plan`.
    pub(super) fn of(plan: &Plan, outcomes: &[Outcome]) -> Figures {
        let walls = quantiles(outcomes.iter().map(|o| o.wall_us as f64 / 1e6).collect());
        let per: Vec<_> = outcomes
            .iter()
            .map(|o| {
                let (_, all, cost, _) = o.cost(plan);
                (all, cost, o)
            })
            .collect();
        let median_u = |f: &dyn Fn(&(StageStats, Cost, &Outcome)) -> u64| {
            let mut v: Vec<u64> = per.iter().map(f).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let median_f = |f: &dyn Fn(&(StageStats, Cost, &Outcome)) -> f64| {
            let mut v: Vec<f64> = per.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Figures {
            wall_p5: walls.0,
            wall_p50: walls.1,
            wall_p95: walls.2,
            invocations: median_u(&|p| p.0.invocations),
            cold: median_u(&|p| p.0.cold),
            retries: median_u(&|p| p.0.retries),
            backups: median_u(&|p| p.2.backups),
            failed_tasks: median_u(&|p| p.2.failed.len() as u64),
            gb_seconds: median_f(&|p| p.1.gb_seconds),
            requests: median_u(&|p| p.1.requests),
            usd: median_f(&|p| p.1.usd),
            failed_seeds: outcomes.iter().filter(|o| o.error.is_some()).count() as u32,
            error: outcomes.iter().find_map(|o| o.error.clone()),
        }
    }
}

/// The 5th percentile, median and 95th of `v` (not empty).
pub(super) fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (q(0.05), q(0.5), q(0.95))
}

impl Outcome {
    /// The run's summary, as `fanout run` would write it.
    pub(super) fn summary(&self, run_id: &str, plan: &Plan, simulation: Simulation) -> Summary {
        let (stages, all, cost, storage) = self.cost(plan);
        let secs = (self.wall_us as f64 / 1e6).max(1e-9);
        Summary {
            run_id: run_id.to_string(),
            job: plan.name.clone(),
            status: if self.error.is_none() { "succeeded" } else { "failed" }.to_string(),
            error: self.error.clone(),
            wall_seconds: secs,
            cpu_seconds: None,
            concurrency: self.concurrency,
            input: InputSummary {
                splits: self.splits,
                bytes: self.input_bytes,
                records: self.input_records,
                skipped: 0,
                rejected: 0,
                rejects: None,
            },
            input_mib_per_second: self.input_bytes as f64 / (1 << 20) as f64 / secs,
            records_per_second: self.input_records as f64 / secs,
            output: None,
            invocations: Invocations {
                total: all.invocations,
                cold: all.cold,
                failed: all.failed,
                per_second: all.invocations as f64 / secs,
            },
            retries: all.retries,
            resumed_tasks: 0,
            backup_tasks: self.backups,
            failed_tasks: self.failed.clone(),
            cost,
            latency_ms: Latency::of(&all.latency),
            shuffle_spilled_bytes: 0,
            shuffle_scratch_bytes: 0,
            stages,
            storage,
            simulation: Some(simulation),
            stream: None,
        }
    }
}
