//! Sweeps: one job simulated over many configurations (`--sweep
//! platform.concurrency=10,100,1000 --sweep platform.memory=...`), on the
//! machine's cores, each point over the same seeds; the Pareto front of
//! time (p95) against cost, and with a deadline, the cheapest point that
//! meets it at p95. The table prints; CSV and JSON are written.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fanout_jobs::Plan;
use serde::Serialize;

use super::outcome::Figures;
use super::tasks::Listing;
use super::{Calibrated, Prepared};
use crate::chaos::Chaos;
use crate::error::EngineError;

/// One configuration of a sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// The swept fields' values, as written (one per key).
    pub values: Vec<String>,
    /// The job with them set.
    pub plan: Plan,
}

/// How to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Seeds per point.
    pub seeds: u32,
    /// Faults to inject.
    pub chaos: Option<Chaos>,
    /// The wall time (at p95) a point must meet to be chosen, seconds.
    pub deadline: Option<f64>,
    /// Points simulated at once (the cores).
    pub threads: usize,
}

/// A point's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The swept fields' values, in the keys' order.
    pub values: Vec<String>,
    /// What the simulation predicts.
    #[serde(flatten)]
    pub figures: Figures,
    /// On the Pareto front of wall time (p95) and cost: no other point
    /// that succeeds is as fast and as cheap, and faster or cheaper.
    pub pareto: bool,
    /// Meets the deadline at p95 (null without one).
    pub meets_deadline: Option<bool>,
}

/// A sweep's predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    /// The swept fields.
    pub keys: Vec<String>,
    /// Seeds per point.
    pub seeds: u32,
    /// The run the durations were calibrated on.
    pub calibrated_from: String,
    /// The deadline, seconds at p95.
    pub deadline_seconds: Option<f64>,
    /// The cheapest point that meets the deadline (an index into
    /// `points`); null without a deadline or when none meets it.
    pub chosen: Option<usize>,
    /// Every point, in the order the sweep's values were given (the last
    /// key varying fastest).
    pub points: Vec<Prediction>,
}

/// Simulates every point (on `opts.threads` threads: the points are
/// independent), then marks the Pareto front and the deadline's choice.
pub fn sweep(
    keys: Vec<String>,
    points: Vec<Point>,
    cal: &Calibrated,
    opts: &SweepOptions,
) -> Result<Sweep, EngineError> {
    // Points whose inputs list the same share one listing.
    let mut listings: HashMap<String, Listing> = HashMap::new();
    for p in &points {
        let key = Listing::key(&p.plan);
        if let std::collections::hash_map::Entry::Vacant(e) = listings.entry(key) {
            e.insert(Listing::of(&p.plan, cal.cal.records_per_byte)?);
        }
    }
    let results: Mutex<Vec<Option<Result<Figures, EngineError>>>> =
        Mutex::new((0..points.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Relaxed);
            let Some(point) = points.get(i) else { break };
            let listing = &listings[&Listing::key(&point.plan)];
            let figures = Prepared::new(&point.plan, cal, listing)
                .and_then(|p| p.seeds(opts.seeds, opts.chaos, None))
                .map(|outcomes| Figures::of(&point.plan, &outcomes));
            results.lock().expect("not poisoned")[i] = Some(figures);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..opts.threads.clamp(1, points.len().max(1)) {
            s.spawn(work);
        }
        work();
    });
    let mut predictions = Vec::new();
    for (point, figures) in points.into_iter().zip(results.into_inner().expect("not poisoned")) {
        let figures = figures.expect("every point simulated")?;
        let meets_deadline = opts.deadline.map(|d| figures.failed_seeds == 0 && figures.wall_p95 <= d);
        predictions.push(Prediction { values: point.values, figures, pareto: false, meets_deadline });
    }
    mark_pareto(&mut predictions);
    let chosen = opts.deadline.and_then(|_| {
        (0..predictions.len()).filter(|&i| predictions[i].meets_deadline == Some(true)).min_by(|&a, &b| {
            let (a, b) = (&predictions[a].figures, &predictions[b].figures);
            a.usd.total_cmp(&b.usd).then(a.wall_p95.total_cmp(&b.wall_p95))
        })
    });
    Ok(Sweep {
        keys,
        seeds: opts.seeds.max(1),
        calibrated_from: cal.from.display().to_string(),
        deadline_seconds: opts.deadline,
        chosen,
        points: predictions,
    })
}

/// Marks the points no other succeeding point dominates in (p95 wall
/// time, cost). A point whose runs fail is never on the front.
fn mark_pareto(points: &mut [Prediction]) {
    let ok = |p: &Prediction| p.figures.failed_seeds == 0;
    let dominated = |i: usize| {
        let a = &points[i].figures;
        points.iter().any(|q| {
            let b = &q.figures;
            ok(q) && b.wall_p95 <= a.wall_p95 && b.usd <= a.usd && (b.wall_p95 < a.wall_p95 || b.usd < a.usd)
        })
    };
    let front: Vec<bool> = (0..points.len()).map(|i| ok(&points[i]) && !dominated(i)).collect();
    for (p, on) in points.iter_mut().zip(front) {
        p.pareto = on;
    }
}

impl Sweep {
    /// The points as CSV: a column per key, then the figures.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        for k in &self.keys {
            let _ = write!(out, "{},", csv_field(k));
        }
        out.push_str(
            "wall_p5_s,wall_p50_s,wall_p95_s,invocations,cold,retries,backups,failed_tasks,gb_seconds,requests,usd,\
             failed_seeds,pareto,meets_deadline,chosen\n",
        );
        for (i, p) in self.points.iter().enumerate() {
            for v in &p.values {
                let _ = write!(out, "{},", csv_field(v));
            }
            let f = &p.figures;
            let _ = writeln!(
                out,
                "{:.6},{:.6},{:.6},{},{},{},{},{},{:.6},{},{:.8},{},{},{},{}",
                f.wall_p5,
                f.wall_p50,
                f.wall_p95,
                f.invocations,
                f.cold,
                f.retries,
                f.backups,
                f.failed_tasks,
                f.gb_seconds,
                f.requests,
                f.usd,
                f.failed_seeds,
                p.pareto,
                p.meets_deadline.map_or(String::new(), |m| m.to_string()),
                self.chosen == Some(i)
            );
        }
        out
    }

    /// What the deadline decided, in a sentence (`None` without one).
    pub fn decision(&self) -> Option<String> {
        let deadline = self.deadline_seconds?;
        let at = |i: usize| {
            let p = &self.points[i];
            let set: Vec<String> = self.keys.iter().zip(&p.values).map(|(k, v)| format!("{k}={v}")).collect();
            format!("#{} ({})", i + 1, set.join(" "))
        };
        Some(match self.chosen {
            Some(i) => {
                let f = &self.points[i].figures;
                format!(
                    "cheapest meeting the deadline of {} at p95: {}: p95 {}, ${:.6}",
                    seconds(deadline),
                    at(i),
                    seconds(f.wall_p95),
                    f.usd
                )
            }
            None => {
                let fastest = (0..self.points.len())
                    .filter(|&i| self.points[i].figures.failed_seeds == 0)
                    .min_by(|&a, &b| self.points[a].figures.wall_p95.total_cmp(&self.points[b].figures.wall_p95));
                let best = fastest.map_or("every configuration fails".to_string(), |i| {
                    format!("the fastest, {}, takes {} at p95", at(i), seconds(self.points[i].figures.wall_p95))
                });
                format!("no configuration meets the deadline of {} at p95: {best}", seconds(deadline))
            }
        })
    }
}

impl std::fmt::Display for Sweep {
    /// The table: a row per point, `*` on the Pareto front, `>` the
    /// deadline's choice.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut head: Vec<String> = vec!["#".into()];
        head.extend(self.keys.iter().cloned());
        head.extend(
            ["wall p50", "p5-p95", "cost", "GB-s", "invocations", "cold", "retries", "backups", "pareto"]
                .map(String::from),
        );
        rows.push(head);
        for (i, p) in self.points.iter().enumerate() {
            let x = &p.figures;
            let mark = if self.chosen == Some(i) { ">" } else { "" };
            let mut row = vec![format!("{mark}{}", i + 1)];
            row.extend(p.values.iter().cloned());
            let status =
                if x.failed_seeds > 0 { format!("failed {}/{}", x.failed_seeds, self.seeds) } else { String::new() };
            row.extend([
                seconds(x.wall_p50),
                format!("{}-{}", seconds(x.wall_p5), seconds(x.wall_p95)),
                format!("${:.6}", x.usd),
                format!("{:.1}", x.gb_seconds),
                x.invocations.to_string(),
                x.cold.to_string(),
                x.retries.to_string(),
                x.backups.to_string(),
                if p.pareto { "*".to_string() } else { status },
            ]);
            rows.push(row);
        }
        let widths: Vec<usize> =
            (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (v, w))| if c == 0 || c > self.keys.len() { format!("{v:>w$}") } else { format!("{v:<w$}") })
                .collect();
            writeln!(f, "{}", cells.join("  ").trim_end())?;
        }
        Ok(())
    }
}

/// Seconds, to three significant figures or so.
fn seconds(s: f64) -> String {
    match s {
        s if s >= 100.0 => format!("{s:.0} s"),
        s if s >= 10.0 => format!("{s:.1} s"),
        s => format!("{s:.3} s"),
    }
}

/// A CSV field, quoted when it must be.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(wall: f64, usd: f64, failed: u32) -> Prediction {
        Prediction {
            values: vec![format!("{wall}/{usd}")],
            figures: Figures { wall_p95: wall, usd, failed_seeds: failed, ..Figures::default() },
            pareto: false,
            meets_deadline: None,
        }
    }

    #[test]
    fn the_front_is_the_points_nothing_beats_on_both() {
        let mut p = vec![
            point(10.0, 1.0, 0),
            point(5.0, 2.0, 0),
            point(6.0, 2.5, 0),  // slower and dearer than the second
            point(1.0, 0.5, 1),  // fails: never on the front, dominates nothing
            point(10.0, 1.0, 0), // a tie with the first: both stay
            point(2.0, 9.0, 0),
        ];
        mark_pareto(&mut p);
        let front: Vec<bool> = p.iter().map(|p| p.pareto).collect();
        assert_eq!(front, [true, true, false, false, true, true]);
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("1769MB"), "1769MB");
        assert_eq!(csv_field("[\"a\", \"b\"]"), "\"[\"\"a\"\", \"\"b\"\"]\"");
    }
}
