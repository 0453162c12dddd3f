//! The passes over a run's invocation records that a report draws from.
//! Everything is aggregated into pixel columns of the run's time span as
//! it is read, so a report of 10^6 invocations holds a few MB and its
//! charts a few thousand shapes, whatever the number of invocations.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use hdrhistogram::Histogram;

use crate::container::CANCELLED;
use crate::error::EngineError;
use crate::records::{self, InvocationRecord};
use crate::summary::Summary;

/// Pixel columns of the time axis.
pub(crate) const COLUMNS: usize = 900;
/// The most timeline rows: beyond, worker slots share a row.
const MAX_ROWS: usize = 256;
/// The most rectangles the timeline may take: past it, rows are merged
/// (each rectangle is ~90 bytes of SVG).
const RECT_BUDGET: usize = 20_000;
/// Latency bins per decade, from 1 µs.
pub(crate) const BINS_PER_DECADE: usize = 10;
/// Decades of latency binned: 1 µs to 10^5 s.
pub(crate) const DECADES: usize = 11;
/// The slowest invocations kept.
const SLOWEST: usize = 10;
/// The failed invocations kept, the earliest.
const ERRORS: usize = 10;
/// Opacity levels of a timeline cell, by how busy its slots were.
pub(crate) const LEVELS: u8 = 4;

/// What the timeline marks on an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Its container was started for it.
    Cold,
    /// It retried a failed attempt.
    Retry,
    /// It was a straggler's backup.
    Backup,
    /// It lost the race with its twin: its result was dropped.
    Lost,
    /// It failed.
    Failed,
}

impl Mark {
    /// Every mark, in the order [`Aggregate::marks`] keeps them.
    pub(crate) const ALL: [Mark; 5] = [Mark::Cold, Mark::Retry, Mark::Backup, Mark::Lost, Mark::Failed];

    /// Its name in legends.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mark::Cold => "cold start",
            Mark::Retry => "retry",
            Mark::Backup => "backup",
            Mark::Lost => "lost the race (cancelled, or its result dropped)",
            Mark::Failed => "failed",
        }
    }
}

/// Latencies of some invocations: an HDR histogram for percentiles and
/// log-spaced bins to draw.
pub(crate) struct Latencies {
    pub(crate) hist: Histogram<u64>,
    pub(crate) bins: Vec<u64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            hist: Histogram::new(3).expect("3 significant digits are valid"),
            bins: vec![0; DECADES * BINS_PER_DECADE],
        }
    }

    fn add(&mut self, us: u64) {
        // Auto-resizing: a value is never out of range.
        let _ = self.hist.record(us);
        self.bins[bin(us)] += 1;
    }

    /// A percentile in milliseconds, if any were recorded.
    pub(crate) fn ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// The bin of a latency of `us` microseconds.
fn bin(us: u64) -> usize {
    let b = ((us.max(1) as f64).log10() * BINS_PER_DECADE as f64).floor() as usize;
    b.min(DECADES * BINS_PER_DECADE - 1)
}

/// A (stage, phase): a colour in every chart.
pub(crate) struct Key {
    pub(crate) stage: String,
    pub(crate) phase: &'static str,
    /// Its tasks are the input's splits (phases before the first reduce).
    pub(crate) splits: bool,
    pub(crate) invocations: u64,
    pub(crate) failed: u64,
    /// Runs cancelled because their twin finished first.
    pub(crate) lost: u64,
    pub(crate) cold: u64,
    pub(crate) retries: u64,
    pub(crate) backups: u64,
    pub(crate) records_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) billed_us: u64,
    pub(crate) warm: Latencies,
    pub(crate) coldl: Latencies,
    /// Per column: invocations running, tasks queued (time-averaged),
    /// records and bytes read (per µs of the column).
    pub(crate) running: Vec<f64>,
    pub(crate) queued: Vec<f64>,
    pub(crate) records: Vec<f64>,
    pub(crate) bytes: Vec<f64>,
    /// The difference arrays of the same, for whole columns (see
    /// [`spread`]).
    full: [Vec<f64>; 4],
}

impl Key {
    fn new(stage: &str, phase: &'static str) -> Self {
        let zeros = || vec![0.0; COLUMNS];
        Key {
            stage: stage.to_string(),
            phase,
            splits: false,
            invocations: 0,
            failed: 0,
            lost: 0,
            cold: 0,
            retries: 0,
            backups: 0,
            records_in: 0,
            bytes_in: 0,
            billed_us: 0,
            warm: Latencies::new(),
            coldl: Latencies::new(),
            running: zeros(),
            queued: zeros(),
            records: zeros(),
            bytes: zeros(),
            full: std::array::from_fn(|_| vec![0.0; COLUMNS + 1]),
        }
    }

    /// Its label: the stage, and the phase where it is not a map.
    pub(crate) fn label(&self) -> String {
        if self.phase == "map" { self.stage.clone() } else { format!("{} ({})", self.stage, self.phase) }
    }
}

/// A timeline cell: one row's share of one column.
#[derive(Clone, Copy)]
pub(crate) struct Cell {
    /// Busy microseconds of its slots.
    pub(crate) busy: u64,
    /// The key that took most of it, and how much (a running estimate).
    pub(crate) key: u8,
    key_us: u64,
}

const EMPTY: Cell = Cell { busy: 0, key: u8::MAX, key_us: 0 };

/// An invocation in the table of the slowest.
#[derive(Debug, Clone)]
pub(crate) struct Slow {
    pub(crate) key: usize,
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) worker: u32,
    pub(crate) started_us: u64,
    pub(crate) dur_us: u64,
    pub(crate) cold: bool,
    pub(crate) backup: bool,
    pub(crate) ok: bool,
    pub(crate) records_in: u64,
    pub(crate) bytes_in: u64,
}

/// A failed invocation.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) key: usize,
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) finished_us: u64,
    pub(crate) error: String,
}

/// A run's invocations, aggregated.
pub(crate) struct Aggregate {
    /// The time axis: 0 to the last finish (or the wall time).
    pub(crate) span_us: u64,
    pub(crate) col_us: f64,
    pub(crate) keys: Vec<Key>,
    /// The worker slots, and how many share a timeline row.
    pub(crate) slots: Vec<u32>,
    pub(crate) group: usize,
    pub(crate) rows: usize,
    /// rows × [`COLUMNS`].
    pub(crate) cells: Vec<Cell>,
    /// Per [`Mark`]: rows × [`COLUMNS`] flags, and the count.
    pub(crate) marks: Vec<Vec<bool>>,
    pub(crate) mark_counts: [u64; 5],
    pub(crate) slowest: Vec<Slow>,
    pub(crate) failures: Vec<Failure>,
    pub(crate) invocations: u64,
    /// The busiest moment: invocations in flight at once.
    pub(crate) peak: u64,
}

impl Aggregate {
    /// Reads the records of the run in `run_dir` (twice: the first pass
    /// finds the time span, the slots and the raced tasks). `summary`, when
    /// the run has one, orders the stages and gives the wall time.
    pub(crate) fn build(run_dir: &Path, summary: Option<&Summary>) -> Result<Aggregate, EngineError> {
        let mut keys: Vec<Key> = Vec::new();
        let mut index: HashMap<(String, &'static str), usize> = HashMap::new();
        let mut key_of = |keys: &mut Vec<Key>, stage: &str, phase: &'static str| -> usize {
            if let Some(&i) = index.get(&(stage.to_string(), phase)) {
                return i;
            }
            keys.push(Key::new(stage, phase));
            index.insert((stage.to_string(), phase), keys.len() - 1);
            keys.len() - 1
        };
        for s in summary.map(|s| s.stages.as_slice()).unwrap_or_default() {
            let phase = match s.phase.as_str() {
                "map" => "map",
                "combine" => "combine",
                _ => "reduce",
            };
            key_of(&mut keys, &s.name, phase);
        }
        // Pass 1: the span, the slots, the tasks that had a backup.
        let mut last = 0u64;
        let mut slots = BTreeSet::new();
        let mut raced: HashSet<(usize, u64)> = HashSet::new();
        // Starts and ends as one word each, time << 1 | start: an end
        // sorts before a start at the same time.
        let mut edges: Vec<u64> = Vec::new();
        // A run that failed before its first invocation has none.
        let any = run_dir.join(records::FILE).exists();
        let scan =
            |f: &mut dyn FnMut(&InvocationRecord<'_>)| if any { records::scan(run_dir, f).map(drop) } else { Ok(()) };
        scan(&mut |r| {
            last = last.max(r.finished_us);
            slots.insert(r.worker as u32);
            let k = key_of(&mut keys, r.stage, r.phase);
            if r.backup {
                raced.insert((k, r.task));
            }
            edges.push(r.started_us << 1 | 1);
            edges.push(r.finished_us.max(r.started_us) << 1);
        })?;
        edges.sort_unstable();
        let (mut now, mut peak) = (0i64, 0i64);
        for e in edges {
            now += if e & 1 == 1 { 1 } else { -1 };
            peak = peak.max(now);
        }
        // The phases before the first reduce run on the input's splits.
        let first_reduce = keys.iter().position(|k| k.phase == "reduce").unwrap_or(keys.len());
        for k in &mut keys[..first_reduce] {
            k.splits = true;
        }
        let wall_us = summary.map_or(0, |s| (s.wall_seconds * 1e6) as u64);
        let span_us = last.max(wall_us).max(1);
        let slots: Vec<u32> = slots.into_iter().collect();
        let group = slots.len().div_ceil(MAX_ROWS).max(1);
        let rows = slots.len().div_ceil(group).max(1);
        let mut a = Aggregate {
            span_us,
            col_us: span_us as f64 / COLUMNS as f64,
            keys,
            group,
            rows,
            cells: vec![EMPTY; rows * COLUMNS],
            marks: vec![vec![false; rows * COLUMNS]; Mark::ALL.len()],
            mark_counts: [0; 5],
            slowest: Vec::new(),
            failures: Vec::new(),
            invocations: 0,
            peak: peak as u64,
            slots,
        };
        // Pass 2: everything else.
        let row_of: HashMap<u32, usize> = a.slots.iter().enumerate().map(|(i, &w)| (w, i / group)).collect();
        let mut won: HashMap<(usize, u64), Vec<(u64, usize)>> = HashMap::new();
        scan(&mut |r| {
            let k = index_of(&a.keys, r);
            let row = row_of[&(r.worker as u32)];
            if r.status == "ok" && raced.contains(&(k, r.task)) {
                won.entry((k, r.task)).or_default().push((r.finished_us, row));
            }
            a.add(k, row, r);
        })?;
        // Of a raced task's successful runs, the first to finish won.
        for mut runs in won.into_values() {
            runs.sort_unstable();
            for &(finished, row) in runs.iter().skip(1) {
                a.mark(Mark::Lost, row, finished);
            }
        }
        for k in &mut a.keys {
            for (level, full) in [&mut k.running, &mut k.queued, &mut k.records, &mut k.bytes].into_iter().zip(&k.full)
            {
                let mut sum = 0.0;
                for (l, d) in level.iter_mut().zip(full) {
                    sum += d;
                    *l += sum;
                }
            }
        }
        a.failures.sort_by_key(|f| f.finished_us);
        a.failures.truncate(ERRORS);
        while a.rows > 8 && a.runs().iter().map(Vec::len).sum::<usize>() > RECT_BUDGET {
            a.merge_rows();
        }
        Ok(a)
    }

    /// Adds one invocation of key `k` on timeline row `row`.
    fn add(&mut self, k: usize, row: usize, r: &InvocationRecord<'_>) {
        self.invocations += 1;
        let (s, f) = (r.started_us, r.finished_us.max(r.started_us));
        let dur = f - s;
        let col_us = self.col_us;
        let key = &mut self.keys[k];
        key.invocations += 1;
        key.cold += u64::from(r.cold);
        key.retries += u64::from(r.attempt > 1);
        key.backups += u64::from(r.backup && r.attempt == 1);
        key.billed_us += r.billed_us;
        if r.cold { &mut key.coldl } else { &mut key.warm }.add(dur);
        let [running, queued, records, bytes] = &mut key.full;
        spread(&mut key.running, running, col_us, s, f, dur as f64);
        let q = r.queued_us.min(s);
        spread(&mut key.queued, queued, col_us, q, s, (s - q) as f64);
        let lost = r.status != "ok" && r.error == Some(CANCELLED);
        if r.status == "ok" {
            key.records_in += r.records_in;
            key.bytes_in += r.bytes_in;
            spread(&mut key.records, records, col_us, s, f, r.records_in as f64);
            spread(&mut key.bytes, bytes, col_us, s, f, r.bytes_in as f64);
        } else if lost {
            key.lost += 1;
        } else {
            key.failed += 1;
            let mut error = r.error.unwrap_or("failed").to_string();
            if error.len() > 500 {
                let cut = (0..=500).rev().find(|&i| error.is_char_boundary(i)).unwrap_or(0);
                error.truncate(cut);
                error.push('…');
            }
            self.failures.push(Failure { key: k, task: r.task, attempt: r.attempt, finished_us: f, error });
            if self.failures.len() > 64 * ERRORS {
                // Keep the earliest.
                self.failures.sort_by_key(|x| x.finished_us);
                self.failures.truncate(ERRORS);
            }
        }
        // The timeline: the row's cells it overlaps.
        let (c0, c1) = (self.column(s), self.column(f));
        for c in c0..=c1 {
            let lo = (c as f64 * col_us) as u64;
            let hi = if c + 1 == COLUMNS { u64::MAX } else { ((c + 1) as f64 * col_us) as u64 };
            let o = f.min(hi).saturating_sub(s.max(lo)).max(u64::from(c == c0 && dur == 0));
            let cell = &mut self.cells[row * COLUMNS + c];
            cell.busy += o;
            if usize::from(cell.key) == k {
                cell.key_us += o;
            } else if o > cell.key_us || cell.key == u8::MAX {
                cell.key = k.min(254) as u8;
                cell.key_us = o;
            }
        }
        if r.cold {
            self.mark(Mark::Cold, row, s);
        }
        if r.attempt > 1 {
            self.mark(Mark::Retry, row, s);
        }
        if r.backup && r.attempt == 1 {
            self.mark(Mark::Backup, row, s);
        }
        if lost {
            self.mark(Mark::Lost, row, f);
        } else if r.status != "ok" {
            self.mark(Mark::Failed, row, f);
        }
        if self.slowest.len() < SLOWEST || dur > self.slowest.last().map_or(0, |x| x.dur_us) {
            let slow = Slow {
                key: k,
                task: r.task,
                attempt: r.attempt,
                worker: r.worker as u32,
                started_us: s,
                dur_us: dur,
                cold: r.cold,
                backup: r.backup,
                ok: r.status == "ok",
                records_in: r.records_in,
                bytes_in: r.bytes_in,
            };
            let at = self.slowest.partition_point(|x| x.dur_us >= dur);
            self.slowest.insert(at, slow);
            self.slowest.truncate(SLOWEST);
        }
    }

    /// The column of time `us`.
    pub(crate) fn column(&self, us: u64) -> usize {
        ((us as f64 / self.col_us) as usize).min(COLUMNS - 1)
    }

    fn mark(&mut self, m: Mark, row: usize, us: u64) {
        let i = Mark::ALL.iter().position(|&x| x == m).expect("a mark");
        self.mark_counts[i] += 1;
        let c = self.column(us);
        self.marks[i][row * COLUMNS + c] = true;
    }

    /// Each row's runs of like cells: (first column, last column, key,
    /// level 1..=[`LEVELS`] of busyness).
    pub(crate) fn runs(&self) -> Vec<Vec<(usize, usize, u8, u8)>> {
        let capacity = self.col_us * self.group as f64;
        (0..self.rows)
            .map(|row| {
                let mut runs: Vec<(usize, usize, u8, u8)> = Vec::new();
                for c in 0..COLUMNS {
                    let cell = self.cells[row * COLUMNS + c];
                    if cell.busy == 0 {
                        continue;
                    }
                    let level = ((cell.busy as f64 / capacity * f64::from(LEVELS)).ceil() as u8).clamp(1, LEVELS);
                    match runs.last_mut() {
                        Some(r) if r.1 + 1 == c && r.2 == cell.key && r.3 == level => r.1 = c,
                        _ => runs.push((c, c, cell.key, level)),
                    }
                }
                runs
            })
            .collect()
    }

    /// Halves the rows: each takes the slots of two.
    fn merge_rows(&mut self) {
        let rows = self.rows.div_ceil(2);
        let mut cells = vec![EMPTY; rows * COLUMNS];
        for (i, cell) in self.cells.iter().enumerate() {
            let (row, c) = (i / COLUMNS, i % COLUMNS);
            let into = &mut cells[(row / 2) * COLUMNS + c];
            into.busy += cell.busy;
            if into.key == cell.key {
                into.key_us += cell.key_us;
            } else if cell.key_us > into.key_us {
                into.key = cell.key;
                into.key_us = cell.key_us;
            }
        }
        for m in &mut self.marks {
            let mut merged = vec![false; rows * COLUMNS];
            for (i, &on) in m.iter().enumerate() {
                merged[(i / COLUMNS / 2) * COLUMNS + i % COLUMNS] |= on;
            }
            *m = merged;
        }
        self.cells = cells;
        self.rows = rows;
        self.group *= 2;
    }

    /// The worker slots of timeline row `row`.
    pub(crate) fn row_slots(&self, row: usize) -> &[u32] {
        let lo = (row * self.group).min(self.slots.len());
        &self.slots[lo..((row + 1) * self.group).min(self.slots.len())]
    }
}

/// The index of a record's key (every key was seen in the first pass).
fn index_of(keys: &[Key], r: &InvocationRecord<'_>) -> usize {
    keys.iter().position(|k| k.phase == r.phase && k.stage == r.stage).expect("keys from the first pass")
}

/// Spreads `amount`, evenly over [s, f), across the columns it overlaps:
/// `level` gets the partial columns at the ends, `full` (a difference
/// array, summed at the end) the whole ones between, so a long invocation
/// costs no more than a short one. An instant puts it all in its column.
fn spread(level: &mut [f64], full: &mut [f64], col_us: f64, s: u64, f: u64, amount: f64) {
    let column = |us: u64| ((us as f64 / col_us) as usize).min(COLUMNS - 1);
    let (c0, c1) = (column(s), column(f));
    if c0 == c1 || f <= s {
        level[c0] += amount;
        return;
    }
    let rate = amount / (f - s) as f64;
    level[c0] += rate * ((c0 + 1) as f64 * col_us - s as f64);
    level[c1] += rate * (f as f64 - c1 as f64 * col_us);
    full[c0 + 1] += rate * col_us;
    full[c1] -= rate * col_us;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreading_keeps_the_amount_and_splits_it_by_overlap() {
        let col_us = 10.0;
        let (mut level, mut full) = (vec![0.0; COLUMNS], vec![0.0; COLUMNS + 1]);
        // 5..35: half of column 0, all of 1 and 2, half of 3.
        spread(&mut level, &mut full, col_us, 5, 35, 30.0);
        spread(&mut level, &mut full, col_us, 41, 41, 7.0);
        let mut sum = 0.0;
        for (l, d) in level.iter_mut().zip(&full) {
            sum += d;
            *l += sum;
        }
        assert_eq!(&level[..5], &[5.0, 10.0, 10.0, 5.0, 7.0]);
        assert!((level.iter().sum::<f64>() - 37.0).abs() < 1e-9);
    }

    #[test]
    fn latency_bins_are_log_spaced() {
        assert_eq!(bin(0), 0);
        assert_eq!(bin(1), 0);
        assert_eq!(bin(10), 10);
        assert_eq!(bin(999), 29);
        assert_eq!(bin(1000), 30);
        assert_eq!(bin(u64::MAX), DECADES * BINS_PER_DECADE - 1);
    }
}
