//! Calibration: each step's invocation durations, learned from real runs'
//! records. A step's warm compute time is a line in its input bytes (least
//! squares of the relative errors) times a residual drawn from the runs'
//! own spread; a cold start adds what the runs' cold invocations took
//! beyond that; what the runs' platform emulated (modelled cold starts,
//! overheads) is taken out first, so the simulated platform's own model can
//! be put in; runs at higher concurrencies, and the runs' CPU time, tell
//! how invocations on this machine slow each other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fanout_jobs::PlatformPlan;

use crate::error::EngineError;
use crate::policy::cold_start_draw;
use crate::records;
use crate::summary::Summary;
use fanout_datasets::RequestCounts;

use super::curve::{Curve, MIN_SPREAD, Stretch};

/// Residuals kept per step (evenly spaced quantiles of the run's).
const RESIDUALS: usize = 4096;

/// One step's durations.
#[derive(Debug, Clone)]
pub(crate) struct StepModel {
    /// Warm compute time: `a + b × bytes in`, in µs.
    pub(crate) a_us: f64,
    pub(crate) b_us_per_byte: f64,
    /// Actual / fitted, sorted: a draw picks one.
    pub(crate) residuals: Vec<f64>,
    /// What a cold start took beyond the warm time and the modelled start
    /// (the function's init, a process start), sorted; µs.
    pub(crate) cold_extra_us: Vec<f64>,
    /// Output bytes as a curve of the input bytes, and output records of
    /// the input records.
    pub(crate) bytes_out: Curve,
    pub(crate) records_out: Curve,
    /// How much slower its invocations ran beside others on the
    /// calibration machine.
    pub(crate) stretch: Stretch,
}

impl StepModel {
    /// The warm compute time of an invocation reading `bytes`, for a
    /// uniform draw `u` in [0, 1).
    pub(crate) fn warm_us(&self, bytes: u64, u: f64) -> f64 {
        let fit = self.a_us + self.b_us_per_byte * bytes as f64;
        fit * pick(&self.residuals, u).unwrap_or(1.0)
    }

    /// A cold start's extra time, for a draw `u`.
    pub(crate) fn cold_us(&self, u: f64) -> f64 {
        pick(&self.cold_extra_us, u).unwrap_or(0.0)
    }
}

fn pick(sorted: &[f64], u: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((u * sorted.len() as f64) as usize).min(sorted.len() - 1)])
}

/// What the runs taught about their job.
#[derive(Debug, Clone)]
pub(crate) struct Calibration {
    /// By (stage, phase).
    pub(crate) steps: HashMap<(String, String), StepModel>,
    /// Input records per byte.
    pub(crate) records_per_byte: f64,
    /// Before the first invocation (listing, opening) and after the last
    /// (gather, commit), µs.
    pub(crate) head_us: f64,
    pub(crate) tail_us: f64,
    /// A slot's time between one task and the next (the hand-off), µs, at
    /// the runs' lowest concurrency, and how much longer it took at higher.
    pub(crate) gap_us: f64,
    pub(crate) gap_stretch: Stretch,
    /// The share of the invocations' time that kept a core busy (the runs'
    /// CPU time over their invocations' time, at the lowest concurrency),
    /// when the runs measured it, and this machine's cores: how much
    /// invocations side by side past the cores slow each other, when no
    /// run at that concurrency showed it (see [`Calibration::sharing`]).
    pub(crate) cpu_share: Option<f64>,
    pub(crate) cores: f64,
    /// The CPU share the durations are for (1 = a core here: the runs'
    /// durations are scaled to it).
    pub(crate) cpu_scale: f64,
    /// The object storage requests of the runs, if they read or wrote
    /// objects, to scale to the simulated input.
    pub(crate) storage: Option<StorageRates>,
    /// Per keyed stage: the bytes its reduces took in per byte its
    /// combines put out (the shuffle hands the records over in batches of
    /// another size).
    pub(crate) shuffled: HashMap<String, f64>,
}

impl Calibration {
    /// How much longer a step's invocation (`stretch`: its calibrated
    /// slowing beside others) takes with `k` tasks running at once on this
    /// machine. Past the highest calibrated concurrency (or past 1, when
    /// none was), the cores are shared: `k` invocations that each keep a
    /// core busy for their `cpu_share` of the time get `cores / (k ×
    /// share)` of one when that is less than a core.
    pub(crate) fn sharing(&self, stretch: &Stretch, k: f64) -> f64 {
        let Some(share) = self.cpu_share else { return stretch.at(k) };
        let shared = |k: f64| 1.0 - share + share * (k * share / self.cores).max(1.0);
        match stretch.highest() {
            Some((top, s)) if k > top => s * shared(k) / shared(top),
            Some(_) => stretch.at(k),
            None => shared(k),
        }
    }

    /// The bytes a keyed stage's reduces take in, for `bytes` out of its
    /// combines.
    pub(crate) fn shuffled(&self, stage: &str, bytes: u64) -> u64 {
        (bytes as f64 * self.shuffled.get(stage).copied().unwrap_or(1.0)).round() as u64
    }
}

/// Object storage requests per split, per input byte and per run, as the
/// calibration runs made them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StorageRates {
    /// GET, HEAD, retried and failed requests per split.
    per_split: [f64; 4],
    /// Bytes read per input byte.
    read_per_byte: f64,
    /// LIST, PUT, POST and DELETE requests and bytes written per run
    /// (listing the input and writing the output).
    per_run: [f64; 5],
}

impl StorageRates {
    /// The rates of the runs that used object storage: their requests,
    /// splits and input bytes.
    fn of(runs: &[(RequestCounts, u64, u64)]) -> Option<StorageRates> {
        if runs.is_empty() {
            return None;
        }
        let splits = runs.iter().map(|r| r.1).sum::<u64>().max(1) as f64;
        let bytes = runs.iter().map(|r| r.2).sum::<u64>().max(1) as f64;
        let sum = |f: fn(&RequestCounts) -> u64| runs.iter().map(|r| f(&r.0)).sum::<u64>() as f64;
        let n = runs.len() as f64;
        Some(StorageRates {
            per_split: [sum(|r| r.get), sum(|r| r.head), sum(|r| r.retried), sum(|r| r.failed)].map(|x| x / splits),
            read_per_byte: sum(|r| r.bytes_read) / bytes,
            per_run: [sum(|r| r.list), sum(|r| r.put), sum(|r| r.post), sum(|r| r.delete), sum(|r| r.bytes_written)]
                .map(|x| x / n),
        })
    }

    /// The requests of a run of `splits` splits and `bytes` input bytes.
    pub(crate) fn at(&self, splits: u64, bytes: u64) -> RequestCounts {
        let split = |i: usize| (self.per_split[i] * splits as f64).round() as u64;
        let run = |i: usize| self.per_run[i].round() as u64;
        RequestCounts {
            get: split(0),
            head: split(1),
            retried: split(2),
            failed: split(3),
            list: run(0),
            put: run(1),
            post: run(2),
            delete: run(3),
            bytes_read: (self.read_per_byte * bytes as f64).round() as u64,
            bytes_written: run(4),
        }
    }
}

/// A run's invocations, learned as durations to simulate with: load it
/// once, simulate any number of configurations of its job.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub(super) cal: Calibration,
    pub(super) from: PathBuf,
    /// Steps' durations given instead (`given.rs`): stage, phase (none:
    /// all its phases), model.
    pub(super) given: Vec<(String, Option<String>, StepModel)>,
    /// A run whose invocations' durations are replayed (`replay.rs`).
    pub(super) replay: Option<std::sync::Arc<super::replay::Replay>>,
}

impl Calibrated {
    /// Calibrates on the finished runs in `runs`, their invocations pooled
    /// (runs of the job at several chunk sizes teach how its steps' time
    /// and output grow with their input; runs at several concurrencies,
    /// how its invocations slow each other on this machine).
    pub fn load_all(runs: &[PathBuf]) -> Result<Calibrated, EngineError> {
        let jobs = runs.iter().map(|r| calibration_job(r)).collect::<Result<Vec<_>, _>>()?;
        let pairs: Vec<(&Path, RunJob)> = runs.iter().map(PathBuf::as_path).zip(jobs).collect();
        let joined = runs.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        let cal = Calibration::from_runs(&pairs)?;
        Ok(Calibrated { cal, from: PathBuf::from(joined), given: Vec::new(), replay: None })
    }

    /// Replays the invocations of the finished run in `dir`: each takes
    /// the time the run's own took (see `replay.rs`); what the run did not
    /// see end takes the calibrated model's.
    pub fn replay(&mut self, dir: &Path) -> Result<(), EngineError> {
        self.replay = Some(std::sync::Arc::new(super::replay::Replay::load(dir)?));
        Ok(())
    }

    /// The run (or runs, joined with commas) it was calibrated on.
    pub fn from(&self) -> &Path {
        &self.from
    }
}

/// What a calibration run's job was: its platform, and its stages' names
/// in order.
pub(crate) struct RunJob {
    pub(crate) platform: PlatformPlan,
    pub(crate) stages: Vec<String>,
}

/// The job of the run in `from`.
fn calibration_job(from: &Path) -> Result<RunJob, EngineError> {
    let bad = |m: String| EngineError::io(from, std::io::Error::other(m));
    let job = fanout_jobs::load(&from.join("job.json"), &[])
        .map_err(|e| bad(format!("not a run directory to calibrate on: {e}")))?;
    let plan = fanout_jobs::validate(&job, &fanout_workers::Registry::builtins())
        .map_err(|e| bad(format!("its job no longer validates: {e}")))?;
    Ok(RunJob { platform: plan.platform, stages: plan.stages.into_iter().map(|s| s.name).collect() })
}

/// Per step while reading: (bytes in, compute µs) of warm invocations,
/// and the cold ones' (bytes in, µs beyond the modelled start).
#[derive(Default)]
struct Samples {
    warm: Vec<(f64, f64)>,
    /// The concurrency of the run of each warm invocation.
    warm_at: Vec<usize>,
    cold: Vec<(f64, f64)>,
    /// The concurrency of the run of each cold invocation.
    cold_at: Vec<usize>,
    /// (in, out) bytes and records of its successful invocations.
    bytes: Vec<(f64, f64)>,
    records: Vec<(f64, f64)>,
}

/// What is read from the runs, before the fit.
#[derive(Default)]
struct Reading {
    per: HashMap<(String, String), Samples>,
    /// By the runs' concurrency.
    gaps: HashMap<usize, Vec<u32>>,
    heads: Vec<(usize, f64)>,
    tails: Vec<(usize, f64)>,
    bytes: f64,
    records: f64,
    /// Runs that used object storage: requests, splits, input bytes.
    storage: Vec<(RequestCounts, u64, u64)>,
    /// Per run: its concurrency, CPU seconds and invocations' seconds.
    cpu: Vec<(usize, f64, f64)>,
}

impl Calibration {
    /// Calibrates on the runs in `runs` (each a run directory and its
    /// job), whose invocations are pooled: runs at several chunk sizes
    /// teach how a step's time and output grow with its input, runs at
    /// several concurrencies how much they slow each other.
    pub(crate) fn from_runs(runs: &[(&Path, RunJob)]) -> Result<Calibration, EngineError> {
        let mut reading = Reading::default();
        for (dir, job) in runs {
            reading.read(dir, job)?;
        }
        let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        // The hand-off, head and tail of the runs at the lowest
        // concurrency; higher ones tell how much longer the hand-off took.
        let lowest = reading.heads.iter().map(|h| h.0).min().unwrap_or(1);
        let at_lowest = |v: &[(usize, f64)]| v.iter().filter(|h| h.0 == lowest).map(|h| h.1).collect::<Vec<_>>();
        let mut gaps: Vec<(usize, f64)> = reading.gaps.iter_mut().map(|(&k, g)| (k, trimmed_mean(g))).collect();
        let gap_us = gaps.iter().find(|g| g.0 == lowest).map_or(0.0, |g| g.1);
        gaps.retain(|g| g.0 > lowest);
        let gap_stretch = gaps.iter().map(|&(k, g)| (k, if gap_us > 0.0 { g / gap_us } else { 1.0 })).collect();
        let total = |stage: &str, phase: &str, f: fn(&(f64, f64)) -> f64| {
            reading.per.get(&(stage.to_string(), phase.to_string())).map(|s| s.bytes.iter().map(f).sum::<f64>())
        };
        let shuffled = reading
            .per
            .keys()
            .filter(|(_, phase)| phase == "reduce")
            .filter_map(|(stage, _)| {
                let (out, into) = (total(stage, "combine", |p| p.1)?, total(stage, "reduce", |p| p.0)?);
                (out > 0.0 && into > 0.0).then(|| (stage.clone(), into / out))
            })
            .collect();
        Ok(Calibration {
            steps: reading.per.into_iter().map(|(k, s)| (k, fit(s))).collect(),
            records_per_byte: reading.records / reading.bytes.max(1.0),
            head_us: mean(&at_lowest(&reading.heads)),
            tail_us: mean(&at_lowest(&reading.tails)),
            gap_us,
            gap_stretch: Stretch::new(lowest, gap_stretch),
            cpu_share: {
                let at: Vec<&(usize, f64, f64)> = reading.cpu.iter().filter(|c| c.0 == lowest).collect();
                let busy: f64 = at.iter().map(|c| c.2).sum();
                (!at.is_empty() && busy > 0.0).then(|| (at.iter().map(|c| c.1).sum::<f64>() / busy).clamp(0.0, 1.0))
            },
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            cpu_scale: 1.0,
            storage: StorageRates::of(&reading.storage),
            shuffled,
        })
    }
}

impl Reading {
    /// Reads the run in `dir`, whose job was `job`.
    fn read(&mut self, dir: &Path, job: &RunJob) -> Result<(), EngineError> {
        let platform = &job.platform;
        let invalid = |m: String| EngineError::io(dir, std::io::Error::other(m));
        let summary: Summary = std::fs::read(dir.join("summary.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("no summary.json: calibrate on a run that finished".to_string()))?;
        let emulated = platform.emulate;
        let overhead = if emulated { platform.containers.overhead.as_secs_f64() * 1e6 } else { 0.0 };
        // Durations to one core here.
        let cpu = summary.cost.cpu_scale.max(f64::MIN_POSITIVE);
        let (per, gaps) = (&mut self.per, self.gaps.entry(platform.concurrency).or_default());
        let (mut first, mut last, mut busy_us) = (u64::MAX, 0u64, 0u64);
        // Per slot (its records come in the order it ran them): when its
        // last invocation ended, and whether it has started a reduce. The
        // hand-off: a slot's idle time before each task it starts (the
        // first step's first attempt, or a reduce's), but for its first
        // task of each phase (the listing, the shuffle's barrier).
        let mut slots: HashMap<usize, (Option<u64>, bool)> = HashMap::new();
        // Per (slot, step index): containers started, for their draws.
        let mut started: HashMap<(usize, usize), u32> = HashMap::new();
        let step_index = |stage: &str, phase: &str| {
            let kind = crate::step::StepKind::parse(phase).map_or(0, |k| k as usize);
            job.stages.iter().position(|s| s == stage).unwrap_or(0) * crate::step::StepKind::ALL.len() + kind
        };
        let first_stage = summary.stages.first().map(|s| (s.name.clone(), s.phase.clone()));
        records::scan(dir, |r| {
            first = first.min(r.started_us);
            last = last.max(r.finished_us);
            let dur = r.finished_us.saturating_sub(r.started_us);
            busy_us += dur;
            let slot = slots.entry(r.worker).or_insert((None, false));
            let nth = r.cold.then(|| {
                let n = started.entry((r.worker, step_index(r.stage, r.phase))).or_default();
                *n += 1;
                *n - 1
            });
            let reduce = r.phase == "reduce";
            let starts_task = reduce || first_stage.as_ref().is_some_and(|(s, p)| s == r.stage && p == r.phase);
            // A backup starts when the straggler rule says, not at a
            // hand-off: the slot's idle time before it is no gap.
            if starts_task && r.attempt == 1 && !r.backup {
                let first_of_phase = slot.0.is_none() || (reduce && !slot.1);
                if let (false, Some(end)) = (first_of_phase, slot.0) {
                    gaps.push(r.started_us.saturating_sub(end).min(u64::from(u32::MAX)) as u32);
                }
                slot.1 |= reduce;
            }
            slot.0 = Some(slot.0.unwrap_or(0).max(r.finished_us));
            if r.status != "ok" {
                return;
            }
            let s = per.entry((r.stage.to_string(), r.phase.to_string())).or_default();
            let compute = (dur as f64 - overhead) / cpu;
            if let Some(nth) = nth {
                let modelled = if emulated {
                    let draw = cold_start_draw(r.worker, step_index(r.stage, r.phase), nth, 0);
                    platform.containers.cold_start.sample(draw)
                } else {
                    Default::default()
                };
                s.cold.push((r.bytes_in as f64, compute - modelled.as_secs_f64() * 1e6 / cpu));
                s.cold_at.push(platform.concurrency);
            } else {
                s.warm.push((r.bytes_in as f64, compute.max(0.0)));
                s.warm_at.push(platform.concurrency);
            }
            s.bytes.push((r.bytes_in as f64, r.bytes_out as f64));
            s.records.push((r.records_in as f64, r.records_out as f64));
        })?;
        let wall_us = summary.wall_seconds * 1e6;
        self.heads.push((platform.concurrency, if first == u64::MAX { 0.0 } else { first as f64 }));
        self.tails.push((platform.concurrency, (wall_us - last as f64).max(0.0)));
        self.bytes += summary.input.bytes as f64;
        self.records += summary.input.records as f64;
        if let Some(cpu) = summary.cpu_seconds {
            self.cpu.push((platform.concurrency, cpu, busy_us as f64 / 1e6));
        }
        if let Some(st) = &summary.storage {
            self.storage.push((st.requests, summary.input.splits, summary.input.bytes));
        }
        Ok(())
    }
}

/// The mean of `v` without its largest 2% (a slow first minute of the
/// calibration run, a page fault storm, is not the job's hand-off).
fn trimmed_mean(v: &mut [u32]) -> f64 {
    v.sort_unstable();
    let keep = &v[..v.len() - v.len() / 50];
    if keep.is_empty() { 0.0 } else { keep.iter().map(|&g| f64::from(g)).sum::<f64>() / keep.len() as f64 }
}

/// Fits a step's line and spreads.
fn fit(s: Samples) -> StepModel {
    // The line is the runs' at their lowest concurrency; the others tell
    // how much more time the same work took beside others (`stretch`).
    let at = |i: usize| s.warm_at.get(i).copied().unwrap_or(1);
    let cold_at = |i: usize| s.cold_at.get(i).copied().unwrap_or(1);
    let lowest = (0..s.warm.len()).map(at).chain((0..s.cold.len()).map(cold_at)).min().unwrap_or(1);
    let base: Vec<(f64, f64)> = (0..s.warm.len()).filter(|&i| at(i) == lowest).map(|i| s.warm[i]).collect();
    let cold: Vec<(f64, f64)> = (0..s.cold.len()).filter(|&i| cold_at(i) == lowest).map(|i| s.cold[i]).collect();
    // Without warm invocations, the cold ones stand in.
    let points = if base.is_empty() { &cold } else { &base };
    let n = points.len().max(1) as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    // Splits all of about one size cannot tell a cost per invocation from
    // a cost per byte (the slope would be the noise's): the time is then
    // taken as proportional to the bytes, as it is for the functions that
    // read their input, so another chunk size scales it.
    let spread = (var / n).sqrt() / mx.max(f64::MIN_POSITIVE);
    let (mut a, mut b) = if var > 0.0 && spread >= MIN_SPREAD {
        relative_line(points).unwrap_or_else(|| {
            let b = (cov / var).max(0.0);
            (my - b * mx, b)
        })
    } else {
        (my, 0.0)
    };
    if a < 0.0 || (spread < MIN_SPREAD && mx > 0.0) {
        (a, b) = (0.0, if mx > 0.0 { my / mx } else { 0.0 });
    }
    let predict = |x: f64| a + b * x;
    let mut residuals: Vec<f64> =
        points.iter().filter(|p| predict(p.0) > 0.0).map(|p| (p.1 / predict(p.0)).max(0.0)).collect();
    let mut cold: Vec<f64> =
        if base.is_empty() { Vec::new() } else { cold.iter().map(|p| (p.1 - predict(p.0)).max(0.0)).collect() };
    // Ratios to the line, as the base's own median ratio to it.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let base_median = median(residuals.clone()).filter(|&m| m > 0.0).unwrap_or(1.0);
    let mut stretch = Vec::new();
    let mut levels: Vec<usize> = s.warm_at.iter().copied().filter(|&k| k > lowest).collect();
    levels.sort_unstable();
    levels.dedup();
    for k in levels {
        let ratios: Vec<f64> = (0..s.warm.len())
            .filter(|&i| at(i) == k && predict(s.warm[i].0) > 0.0)
            .map(|i| s.warm[i].1 / predict(s.warm[i].0))
            .collect();
        if let Some(m) = median(ratios) {
            stretch.push((k, m / base_median));
        }
    }
    StepModel {
        a_us: a,
        b_us_per_byte: b,
        residuals: quantiles(&mut residuals),
        cold_extra_us: quantiles(&mut cold),
        bytes_out: Curve::fit(&s.bytes),
        records_out: Curve::fit(&s.records),
        stretch: Stretch::new(lowest, stretch),
    }
}

/// The line `a + b × x` through `points` (x > 0) that minimizes the
/// squared *relative* errors: a 64 KiB split's time counts as much as a 4
/// MiB one's (plain least squares would fit the large splits' noise and
/// miss the small ones' time by half), as the residuals that multiply it
/// do. It is `y / x = b + a / x` fitted by least squares. `None` when the
/// sizes do not vary or the time falls with the size.
fn relative_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let q: Vec<(f64, f64)> = points.iter().filter(|p| p.0 > 0.0).map(|&(x, y)| (1.0 / x, y / x)).collect();
    let n = q.len() as f64;
    let (mz, mr) = (q.iter().map(|p| p.0).sum::<f64>() / n, q.iter().map(|p| p.1).sum::<f64>() / n);
    let var: f64 = q.iter().map(|p| (p.0 - mz).powi(2)).sum();
    let cov: f64 = q.iter().map(|p| (p.0 - mz) * (p.1 - mr)).sum();
    let a = cov / var;
    let b = mr - a * mz;
    (var > 0.0 && a.is_finite() && b >= 0.0).then_some((a, b))
}

/// `v` sorted, thinned to at most [`RESIDUALS`] evenly spaced quantiles.
fn quantiles(v: &mut [f64]) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    if v.len() <= RESIDUALS {
        return v.to_vec();
    }
    (0..RESIDUALS).map(|i| v[i * v.len() / RESIDUALS]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_fitted_through_durations_by_bytes() {
        let mut s = Samples::default();
        for x in [1000.0, 2000.0, 3000.0, 4000.0] {
            s.warm.push((x, 50.0 + 0.01 * x));
        }
        s.cold.push((1000.0, 5060.0));
        let m = fit(s);
        assert!((m.a_us - 50.0).abs() < 1e-6 && (m.b_us_per_byte - 0.01).abs() < 1e-9, "{m:?}");
        assert!(m.residuals.iter().all(|r| (r - 1.0).abs() < 1e-9));
        assert_eq!(m.cold_extra_us, [5000.0]);
        assert!((m.warm_us(10_000, 0.5) - 150.0).abs() < 1e-6);
    }

    #[test]
    fn splits_of_one_size_make_the_time_proportional_to_the_bytes() {
        let mut s = Samples::default();
        // Noise would make a slope of anything: 1% apart in size.
        for (x, y) in [(10_000.0, 900.0), (10_100.0, 1100.0), (9_950.0, 1000.0)] {
            s.warm.push((x, y));
        }
        let m = fit(s);
        assert_eq!(m.a_us, 0.0);
        assert!((m.warm_us(20_100, 0.5) / m.warm_us(10_050, 0.5) - 2.0).abs() < 1e-9, "{m:?}");
        // Sizes that vary do fit a line with a fixed cost.
        let mut s = Samples::default();
        for x in [1000.0, 3000.0] {
            s.warm.push((x, 500.0 + 0.1 * x));
        }
        assert!((fit(s).a_us - 500.0).abs() < 1e-6);
    }

    #[test]
    fn the_line_is_fitted_to_relative_errors_so_small_splits_are_not_lost() {
        // A 200 µs fixed cost and 7 µs per KiB, splits from 64 KiB to 4 MiB,
        // every other one 10% slow and a few 4 MiB ones 10% fast (a noisy
        // machine): plain least squares would put the 64 KiB time 33% high.
        let mut s = Samples::default();
        let at = |x: f64| 200.0 + 7.0 * x / 1024.0;
        for i in 0..64 {
            let x = 65_536.0 * 2f64.powi(i % 7);
            let noise = if i % 7 == 6 && i % 2 == 0 {
                0.9
            } else if i % 2 == 1 {
                1.1
            } else {
                1.0
            };
            s.warm.push((x, at(x) * noise));
        }
        let m = fit(s);
        for x in [65_536.0, 1_048_576.0, 4_194_304.0] {
            let err = ((m.a_us + m.b_us_per_byte * x) / at(x) - 1.0).abs();
            assert!(err < 0.08, "{x}: {:?} off by {err}", (m.a_us, m.b_us_per_byte));
        }
    }

    #[test]
    fn runs_at_higher_concurrency_teach_how_invocations_slow_each_other() {
        // The same splits at concurrency 1, then 1.3x slower at 2 and 2.5x
        // at 4 (a machine of two cores).
        let mut s = Samples::default();
        for (k, slower) in [(1, 1.0), (2, 1.3), (4, 2.5)] {
            for x in [1000.0, 2000.0, 4000.0] {
                s.warm.push((x, (100.0 + 0.5 * x) * slower));
                s.warm_at.push(k);
            }
        }
        let m = fit(s);
        // The line is concurrency 1's alone.
        assert!((m.a_us - 100.0).abs() < 1e-6 && (m.b_us_per_byte - 0.5).abs() < 1e-9, "{m:?}");
        assert_eq!(m.stretch.levels(), 3);
        for (k, want) in [(0.0, 1.0), (1.0, 1.0), (2.0, 1.3), (3.0, 1.9), (4.0, 2.5), (16.0, 2.5)] {
            assert!((m.stretch.at(k) - want).abs() < 1e-9, "at {k}: {}", m.stretch.at(k));
        }
        // Runs at one concurrency: nothing to stretch by.
        let mut s = Samples::default();
        s.warm.extend([(1000.0, 600.0), (2000.0, 1100.0)]);
        s.warm_at.extend([2, 2]);
        let m = fit(s);
        assert!(m.stretch.levels() == 0 && m.stretch.at(8.0) == 1.0);
    }

    #[test]
    fn past_the_calibrated_concurrency_the_cores_are_shared() {
        let mut cal = Calibrated::none().cal;
        let none = Stretch::default();
        // Nothing measured: nothing shared.
        assert_eq!(cal.sharing(&none, 8.0), 1.0);
        (cal.cpu_share, cal.cores) = (Some(1.0), 2.0);
        for (k, want) in [(1.0, 1.0), (2.0, 1.0), (4.0, 2.0), (8.0, 4.0)] {
            assert!((cal.sharing(&none, k) - want).abs() < 1e-9, "at {k}: {}", cal.sharing(&none, k));
        }
        // Half the time waiting: four fit two cores; eight take half again.
        cal.cpu_share = Some(0.5);
        assert!((cal.sharing(&none, 4.0) - 1.0).abs() < 1e-9 && (cal.sharing(&none, 8.0) - 1.5).abs() < 1e-9);
        // Calibrated up to 4 (2.2x there): past it, shared from there on.
        cal.cpu_share = Some(1.0);
        let measured = Stretch::new(1, vec![(4, 2.2)]);
        assert!((cal.sharing(&measured, 4.0) - 2.2).abs() < 1e-9);
        assert!((cal.sharing(&measured, 8.0) - 4.4).abs() < 1e-9);
        assert!((cal.sharing(&measured, 2.5) - 1.6).abs() < 1e-9);
    }

    #[test]
    fn thinning_keeps_the_spread() {
        let mut v: Vec<f64> = (0..100_000).rev().map(f64::from).collect();
        let q = quantiles(&mut v);
        assert_eq!(q.len(), RESIDUALS);
        assert_eq!(q[0], 0.0);
        assert!(q[RESIDUALS - 1] > 99_000.0);
    }
}
