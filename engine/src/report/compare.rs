//! Two runs side by side: wall time, throughput, invocations, cold
//! starts, cost, and each stage's latency percentiles, with the ratio of
//! each (B / A); then both runs' charts.

use std::fmt::Write;

use super::RunView;
use super::html::{self, esc, num, table, text};

/// One compared quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What it is, with its unit.
    pub metric: String,
    /// Run A's value, if it has one.
    pub a: Option<f64>,
    /// Run B's.
    pub b: Option<f64>,
}

impl Row {
    /// B / A, where both are known and A is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.a, self.b) {
            (Some(a), Some(b)) if a != 0.0 => Some(b / a),
            _ => None,
        }
    }
}

/// Two runs compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Run A's id and job.
    pub a: (String, String),
    /// Run B's.
    pub b: (String, String),
    /// The quantities.
    pub rows: Vec<Row>,
}

impl Comparison {
    pub(crate) fn of(ra: &RunView, rb: &RunView) -> Comparison {
        let mut rows: Vec<Row> = Vec::new();
        let mut both = |metric: &str, f: &dyn Fn(&RunView) -> Option<f64>| {
            rows.push(Row { metric: metric.to_string(), a: f(ra), b: f(rb) });
        };
        let summary = |r: &RunView| r.summary.clone();
        both("wall time (s)", &|r| Some(r.wall()));
        both("records/s", &|r| summary(r).map(|s| s.records_per_second));
        both("input MiB/s", &|r| summary(r).map(|s| s.input_mib_per_second));
        both("invocations", &|r| Some(r.agg.invocations as f64));
        both("cold starts", &|r| Some(r.agg.keys.iter().map(|k| k.cold).sum::<u64>() as f64));
        both("retries", &|r| Some(r.agg.keys.iter().map(|k| k.retries).sum::<u64>() as f64));
        both("backups", &|r| Some(r.agg.keys.iter().map(|k| k.backups).sum::<u64>() as f64));
        both("failed invocations", &|r| Some(r.agg.keys.iter().map(|k| k.failed).sum::<u64>() as f64));
        both("peak in flight", &|r| Some(r.agg.peak as f64));
        both("GB-s", &|r| summary(r).map(|s| s.cost.gb_seconds));
        both("cost ($)", &|r| summary(r).map(|s| s.cost.usd));
        // Stages by label, in A's order then B's own.
        let mut labels: Vec<String> = ra.agg.keys.iter().map(|k| k.label()).collect();
        for k in &rb.agg.keys {
            if !labels.contains(&k.label()) {
                labels.push(k.label());
            }
        }
        for label in labels {
            let key = |r: &RunView| r.agg.keys.iter().position(|k| k.label() == label);
            for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
                let value = |r: &RunView| {
                    let k = &r.agg.keys[key(r)?];
                    let mut all = k.warm.hist.clone();
                    let _ = all.add(&k.coldl.hist);
                    (!all.is_empty()).then(|| all.value_at_quantile(q) as f64 / 1000.0)
                };
                both(&format!("{label}: {name} latency (ms)"), &value);
            }
            both(&format!("{label}: cold starts"), &|r| key(r).map(|k| r.agg.keys[k].cold as f64));
        }
        Comparison { a: (ra.id.clone(), ra.job()), b: (rb.id.clone(), rb.job()), rows }
    }
}

/// A value in a table: integers as such, others with 3 significant digits.
fn value(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.6}"),
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}×"))
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "A: {} ({})", self.a.0, self.a.1)?;
        writeln!(f, "B: {} ({})", self.b.0, self.b.1)?;
        let width = self.rows.iter().map(|r| r.metric.chars().count()).max().unwrap_or(6).max(6);
        writeln!(f, "{:<width$}  {:>14}  {:>14}  {:>8}", "", "A", "B", "B/A")?;
        for r in &self.rows {
            writeln!(f, "{:<width$}  {:>14}  {:>14}  {:>8}", r.metric, value(r.a), value(r.b), ratio(r.ratio()))?;
        }
        Ok(())
    }
}

/// The page of two runs.
pub(crate) fn page(ra: &RunView, rb: &RunView, cmp: &Comparison) -> Result<String, String> {
    let mut p = html::head(&format!("fanout runs {} and {}", ra.id, rb.id));
    let _ = writeln!(p, "<h1>fanout runs compared</h1>");
    let _ = writeln!(p, "<p><b>A</b>: {} · <b>B</b>: {}</p>", esc(&ra.id), esc(&rb.id));
    let rows: Vec<Vec<String>> = cmp
        .rows
        .iter()
        .map(|r| vec![text(&r.metric), num(value(r.a)), num(value(r.b)), num(ratio(r.ratio()))])
        .collect();
    p.push_str(&table("comparison", &["", "A", "B", "B / A"], &rows));
    for (name, run, suffix) in [("A", ra, "-a"), ("B", rb, "-b")] {
        let _ = writeln!(p, "<h1 id=\"run{suffix}\">{name}: run {}</h1>", esc(&run.id));
        p.push_str(&html::header(run));
        p.push_str(&html::sections(run, suffix)?);
    }
    p.push_str("</body></html>\n");
    Ok(p)
}
