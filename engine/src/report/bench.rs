//! `fanout bench`'s results: each workload's programs (fanout first, then
//! the peers) timed in interleaved rounds, and fanout's speed against each
//! peer as the median and range of the per-round ratios; as a markdown
//! table, and as a self-contained page with a chart of the ratios and,
//! over several thread counts, of the speedups.

use std::fmt::Write;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::charts::{WIDTH, colour, label_style, svg};
use super::html::{esc, figure, head, num, table, text};

/// A benchmark run: the suite at each thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine's cores.
    pub cores: usize,
    /// Rounds per workload.
    pub runs: u32,
    /// A CI-sized pass.
    pub quick: bool,
    /// The workloads, at each thread count in turn.
    pub workloads: Vec<WorkloadResult>,
}

/// One workload at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// Its short name (`wordcount`, `groupby`, ...).
    pub id: String,
    /// What it does, at what size.
    pub title: String,
    /// Threads (worker slots) every program was given.
    pub threads: usize,
    /// What the throughput counts (`MiB`, `invocations`, `samples`).
    pub unit: String,
    /// How much of it one run does.
    pub amount: f64,
    /// fanout first, then the peers measured.
    pub programs: Vec<ProgramResult>,
    /// Peers not measured, and why (not installed, not built).
    pub skipped: Vec<Skipped>,
}

/// A program's times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramResult {
    /// Its name.
    pub name: String,
    /// What it ran.
    pub command: String,
    /// Wall seconds, one per round.
    pub walls: Vec<f64>,
    /// fanout's speed against it (its time ÷ fanout's, per round): None
    /// for fanout itself.
    pub ratio: Option<Spread>,
}

/// The median and range of a set of figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (not empty).
    pub fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Spread { median, min: s[0], max: s[n - 1] }
    }
}

/// A peer not measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The peer.
    pub name: String,
    /// Why, and how to get it.
    pub why: String,
}

impl ProgramResult {
    /// Its wall times' spread.
    pub fn wall(&self) -> Spread {
        Spread::of(&self.walls)
    }
}

fn range(s: Spread, digits: usize, unit: &str) -> String {
    format!("{:.digits$}{unit} ({:.digits$}–{:.digits$})", s.median, s.min, s.max)
}

impl BenchReport {
    /// The results as a markdown table: a row per program, the skipped
    /// peers after it.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| workload | threads | program | wall s, median (range) | throughput | fanout's speed vs it, median (range) |\n\
             |---|---|---|---|---|---|\n",
        );
        for w in &self.workloads {
            for p in &w.programs {
                let wall = p.wall();
                let ratio = p.ratio.map_or("—".to_string(), |r| range(r, 2, "×"));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    w.title,
                    w.threads,
                    p.name,
                    range(wall, 3, ""),
                    rate(w.amount / wall.median, &w.unit),
                    ratio
                );
            }
            for s in &w.skipped {
                let _ = writeln!(out, "| {} | {} | {} | skipped: {} | | |", w.title, w.threads, s.name, s.why);
            }
        }
        out
    }

    /// The page: the table, the ratios' chart, and the speedups over the
    /// thread counts when there are several.
    pub fn page(&self) -> Result<String, String> {
        let mut out = head("fanout bench");
        let _ = writeln!(
            out,
            "<h1>fanout bench</h1><p class=\"muted\">{} cores; {} round{} per workload, programs interleaved{}</p>",
            self.cores,
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            if self.quick { "; --quick sizes" } else { "" }
        );
        let mut rows = Vec::new();
        for w in &self.workloads {
            for p in &w.programs {
                let wall = p.wall();
                rows.push(vec![
                    text(&w.title),
                    num(w.threads),
                    text(&p.name),
                    num(range(wall, 3, "")),
                    num(rate(w.amount / wall.median, &w.unit)),
                    num(p.ratio.map_or("—".to_string(), |r| range(r, 2, "×"))),
                ]);
            }
            for s in &w.skipped {
                rows.push(vec![text(&w.title), num(w.threads), text(&s.name), text(&format!("skipped: {}", s.why))]);
            }
        }
        out.push_str("<h2>Results</h2>\n");
        out.push_str(&table(
            "results",
            &["workload", "threads", "program", "wall s, median (range)", "throughput", "fanout's speed vs it"],
            &rows,
        ));
        let bars: Vec<(String, Spread)> = self
            .workloads
            .iter()
            .flat_map(|w| {
                w.programs
                    .iter()
                    .filter_map(move |p| p.ratio.map(|r| (format!("{}, {} ({}t)", w.id, p.name, w.threads), r)))
            })
            .collect();
        if !bars.is_empty() {
            out.push_str("<h2>fanout's speed against each peer</h2>\n<p class=\"muted\">The peer's time ÷ fanout's, per round: the bar is the median, the line the range; right of 1 is faster than the peer.</p>\n");
            out.push_str(&figure("ratios", "", ratios(&bars))?);
        }
        let mut ids: Vec<&str> = Vec::new();
        for w in &self.workloads {
            if !ids.contains(&w.id.as_str()) {
                ids.push(&w.id);
            }
        }
        for id in ids {
            let runs: Vec<&WorkloadResult> = self.workloads.iter().filter(|w| w.id == id).collect();
            if runs.len() > 1 {
                let _ = writeln!(out, "<h2>{}: speedup over threads</h2>", esc(&runs[0].title));
                out.push_str(&figure(&format!("speedup-{}", esc(id)), "", speedup(&runs))?);
            }
        }
        out.push_str("</body></html>\n");
        Ok(out)
    }
}

/// A rate with its unit per second (thousands and millions shortened).
fn rate(v: f64, unit: &str) -> String {
    match v {
        v if v >= 1e7 => format!("{:.0} M {unit}/s", v / 1e6),
        v if v >= 1e6 => format!("{:.1} M {unit}/s", v / 1e6),
        v if v >= 1e5 => format!("{:.0} k {unit}/s", v / 1e3),
        v if v >= 100.0 => format!("{v:.0} {unit}/s"),
        v if v >= 1.0 => format!("{v:.1} {unit}/s"),
        v => format!("{v:.3} {unit}/s"),
    }
}

/// Horizontal bars of the ratios, with their range and a line at 1.
fn ratios(bars: &[(String, Spread)]) -> Result<String, String> {
    let top = bars.iter().map(|b| b.1.max).fold(1.0f64, f64::max) * 1.1;
    let h = 60 + 28 * bars.len() as u32;
    svg(WIDTH, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(330)
            .build_cartesian_2d(0f64..top, 0f64..bars.len() as f64)?;
        let label = |y: &f64| {
            let i = (bars.len() as f64 - y - 0.5).round();
            if (0.0..bars.len() as f64).contains(&i) && (y.fract() - 0.5).abs() < 1e-6 {
                bars[i as usize].0.clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(bars.len() * 2 + 1)
            .y_label_formatter(&label)
            .x_desc("peer's time ÷ fanout's")
            .label_style(label_style(12))
            .draw()?;
        for (i, (_, s)) in bars.iter().enumerate() {
            let y = (bars.len() - 1 - i) as f64;
            let c = colour(i);
            chart.draw_series(std::iter::once(Rectangle::new([(0.0, y + 0.2), (s.median, y + 0.8)], c.filled())))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(s.min, y + 0.5), (s.max, y + 0.5)],
                BLACK.stroke_width(2),
            )))?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, bars.len() as f64)],
            BLACK.stroke_width(1),
        )))?;
        Ok(())
    })
}

/// Each program's speedup over its time at the fewest threads, by thread
/// count; the ideal dashed.
fn speedup(runs: &[&WorkloadResult]) -> Result<String, String> {
    let t0 = runs.iter().map(|w| w.threads).min().unwrap_or(1).max(1) as f64;
    let tmax = runs.iter().map(|w| w.threads).max().unwrap_or(1) as f64;
    let names: Vec<String> = runs[0].programs.iter().map(|p| p.name.clone()).collect();
    let series: Vec<Vec<(f64, f64)>> = names
        .iter()
        .map(|name| {
            let base =
                runs.iter().find(|w| w.threads as f64 == t0).and_then(|w| w.programs.iter().find(|p| &p.name == name));
            runs.iter()
                .filter_map(|w| {
                    let p = w.programs.iter().find(|p| &p.name == name)?;
                    Some((w.threads as f64, base?.wall().median / p.wall().median))
                })
                .collect()
        })
        .collect();
    let top = series.iter().flatten().map(|p| p.1).fold(tmax / t0, f64::max) * 1.1;
    svg(WIDTH, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..tmax * 1.05, 0f64..top)?;
        chart.configure_mesh().x_desc("threads").y_desc("speedup").label_style(label_style(12)).draw()?;
        chart.draw_series(DashedLineSeries::new(vec![(t0, 1.0), (tmax, tmax / t0)], 4, 4, BLACK.stroke_width(1)))?;
        for (k, (name, points)) in names.iter().zip(&series).enumerate() {
            let c = colour(k);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(label_style(12))
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_median_and_the_range() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Spread::of(&[4.0, 1.0]).median, 2.5);
    }
}
