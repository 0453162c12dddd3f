//! The report's charts, as SVG drawn by plotters: the timeline of worker
//! slots, concurrency and throughput over time, and latency histograms.
//! Each draws an [`Aggregate`], so its size does not grow with the number
//! of invocations. Text is left to the browser's fonts (plotters'
//! estimate lays it out), so nothing is fetched and nothing is embedded.

use plotters::coord::Shift;
use plotters::coord::combinators::IntoLogRange;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::aggregate::{Aggregate, BINS_PER_DECADE, COLUMNS, Key, LEVELS, Mark};

/// A chart's width in pixels.
pub(crate) const WIDTH: u32 = 960;

/// Stage colours: category10 without its red, which marks failures.
const PALETTE: [(u8, u8, u8); 9] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// The colour of key `k`.
pub(crate) fn colour(k: usize) -> RGBColor {
    let (r, g, b) = PALETTE[k % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The colour of key `k` as CSS.
pub(crate) fn css(k: usize) -> String {
    let (r, g, b) = PALETTE[k % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The colour of a mark as CSS, and its symbol in legends.
pub(crate) fn mark_style(m: Mark) -> (&'static str, &'static str) {
    match m {
        Mark::Cold => ("#000000", "▲"),
        Mark::Retry => ("#000000", "○"),
        Mark::Backup => ("#000000", "◆"),
        Mark::Lost => ("#777777", "✕"),
        Mark::Failed => ("#d62728", "✕"),
    }
}

/// A chart's failure, as text.
pub(crate) type ChartResult = Result<String, String>;

/// Draws an SVG of `w` × `h` pixels.
pub(crate) fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> ChartResult {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

pub(crate) fn label_style(size: u32) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).color(&BLACK)
}

/// Time in seconds of column `c`'s middle.
fn at(a: &Aggregate, c: usize) -> f64 {
    (c as f64 + 0.5) * a.col_us / 1e6
}

/// The timeline: a track per worker slot (or per group of slots, when
/// there are many), each invocation in its stage's colour, its opacity by
/// how busy the slot was in that pixel, and marks on cold starts, retries,
/// backups, lost races and failures.
pub(crate) fn timeline(a: &Aggregate) -> ChartResult {
    let row_px: u32 = match a.rows {
        0..=24 => 16,
        25..=64 => 9,
        n => (640 / n as u32).max(2),
    };
    let h = a.rows as u32 * row_px + 60;
    let secs = a.span_us as f64 / 1e6;
    let rows = a.rows as f64;
    svg(WIDTH, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..secs, 0f64..rows)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("seconds since the run started")
            .label_style(label_style(12))
            .draw()?;
        // Row 0 at the top.
        let y = |row: usize| rows - row as f64;
        let runs = a.runs();
        let pad = if row_px >= 6 { 0.12 } else { 0.0 };
        for (row, runs) in runs.iter().enumerate() {
            chart.draw_series(runs.iter().map(|&(c0, c1, key, level)| {
                let x0 = c0 as f64 * a.col_us / 1e6;
                let x1 = (c1 + 1) as f64 * a.col_us / 1e6;
                let alpha = f64::from(level) / f64::from(LEVELS);
                let fill = if key == u8::MAX { BLACK.mix(alpha) } else { colour(key.into()).mix(alpha) };
                Rectangle::new([(x0, y(row) - pad), (x1, y(row + 1) + pad)], fill.filled())
            }))?;
        }
        // Track labels: every slot's, or every few when rows are thin.
        let every = (12 / row_px as usize).max(1);
        for row in (0..a.rows).step_by(every) {
            let slots = a.row_slots(row);
            let label = match slots {
                [one] => format!("slot {one}"),
                [first, .., last] => format!("slots {first}–{last}"),
                [] => continue,
            };
            let (_, py) = chart.backend_coord(&(0.0, y(row) - 0.5));
            let (px, _) = chart.backend_coord(&(0.0, 0.0));
            let style = label_style(11).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(&label, &style, (px - 6, py))?;
        }
        let size = (row_px as i32 / 3).clamp(2, 5);
        for (i, &m) in Mark::ALL.iter().enumerate() {
            let (hex, _) = mark_style(m);
            let c = parse_hex(hex);
            let points = a.marks[i]
                .iter()
                .enumerate()
                .filter(|&(_, &on)| on)
                .map(|(j, _)| (at(a, j % COLUMNS), y(j / COLUMNS) - 0.5));
            match m {
                Mark::Cold => {
                    chart.draw_series(points.map(|p| TriangleMarker::new(p, size, c.filled())))?;
                }
                Mark::Retry => {
                    chart.draw_series(points.map(|p| Circle::new(p, size, c.stroke_width(1))))?;
                }
                Mark::Backup => {
                    chart.draw_series(points.map(|p| {
                        EmptyElement::at(p)
                            + Polygon::new(vec![(0, -size), (size, 0), (0, size), (-size, 0)], c.filled())
                    }))?;
                }
                Mark::Lost | Mark::Failed => {
                    chart.draw_series(points.map(|p| Cross::new(p, size, c.stroke_width(2))))?;
                }
            }
        }
        Ok(())
    })
}

fn parse_hex(hex: &str) -> RGBColor {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0);
    RGBColor((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

/// A chart over the run's time, 0 to `top` high.
type TimeChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws a chart of `h` pixels over the run's time, its y axis from 0 to
/// `top` and named `y_desc`; `draw` draws the series.
fn over_time(
    a: &Aggregate,
    h: u32,
    top: f64,
    y_desc: &str,
    draw: impl FnOnce(&mut TimeChart<'_, '_>) -> Result<(), Box<dyn std::error::Error>>,
) -> ChartResult {
    over_seconds(a.span_us as f64 / 1e6, h, top, y_desc, draw)
}

/// The same over `secs` seconds.
fn over_seconds(
    secs: f64,
    h: u32,
    top: f64,
    y_desc: &str,
    draw: impl FnOnce(&mut TimeChart<'_, '_>) -> Result<(), Box<dyn std::error::Error>>,
) -> ChartResult {
    svg(WIDTH, h, |root| draw(&mut axes(root, secs, top, y_desc)?))
}

/// A chart on `root` over `secs` seconds, its y axis from 0 to `top` and
/// named `y_desc`.
fn axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    secs: f64,
    top: f64,
    y_desc: &str,
) -> Result<TimeChart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs.max(1e-3), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc(y_desc)
        .y_label_formatter(&|v| short(*v))
        .label_style(label_style(12))
        .draw()?;
    Ok(chart)
}

/// Lines over a stream's time (`secs` long), each named, in the
/// palette's colours, the y axis named `y_desc`.
pub(crate) fn series(secs: f64, y_desc: &str, lines: &[(&str, Vec<(f64, f64)>)]) -> ChartResult {
    let top = (lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.1)).fold(0.0f64, f64::max) * 1.1).max(1.0);
    svg(WIDTH, 240, |root| {
        let mut chart = axes(root, secs, top, y_desc)?;
        for (k, (name, points)) in lines.iter().enumerate() {
            let c = colour(k);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().label_font(label_style(12)).border_style(BLACK).draw()?;
        Ok(())
    })
}

/// Concurrency over time: per stage, invocations running (solid) and
/// tasks queued (dashed), averaged over each pixel; the platform's limit
/// as a dotted line.
pub(crate) fn concurrency(a: &Aggregate, limit: Option<usize>) -> ChartResult {
    let per_col = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x / a.col_us).collect() };
    let running: Vec<Vec<f64>> = a.keys.iter().map(|k| per_col(&k.running)).collect();
    let queued: Vec<Vec<f64>> = a.keys.iter().map(|k| per_col(&k.queued)).collect();
    let top = running.iter().chain(&queued).flatten().fold(0.0f64, |m, &x| m.max(x));
    let top = (top.max(limit.unwrap_or(0) as f64) * 1.1).max(1.0);
    let secs = a.span_us as f64 / 1e6;
    over_time(a, 280, top, "invocations", |chart| {
        for (k, (run, queue)) in running.iter().zip(&queued).enumerate() {
            let c = colour(k);
            chart
                .draw_series(LineSeries::new(run.iter().enumerate().map(|(i, &v)| (at(a, i), v)), c.stroke_width(2)))?;
            if queue.iter().any(|&q| q > 0.0) {
                let points: Vec<(f64, f64)> = queue.iter().enumerate().map(|(i, &v)| (at(a, i), v)).collect();
                chart.draw_series(DashedLineSeries::new(points, 6, 4, c.stroke_width(1)))?;
            }
        }
        if let Some(l) = limit {
            let l = l as f64;
            chart.draw_series(DashedLineSeries::new(vec![(0.0, l), (secs, l)], 2, 3, BLACK.stroke_width(1)))?;
        }
        Ok(())
    })
}

/// Throughput over time: per stage, records read per second (`bytes`
/// false) or MiB read per second.
pub(crate) fn throughput(a: &Aggregate, bytes: bool) -> ChartResult {
    let scale = if bytes { 1e6 / (1u64 << 20) as f64 } else { 1e6 };
    let series: Vec<Vec<f64>> = a
        .keys
        .iter()
        .map(|k| if bytes { &k.bytes } else { &k.records })
        .map(|v| smooth(v, SMOOTHING).into_iter().map(|x| x / a.col_us * scale).collect())
        .collect();
    let top = (series.iter().flatten().fold(0.0f64, |m, &x| m.max(x)) * 1.1).max(1e-9);
    let y_desc = if bytes { "MiB read / s" } else { "records read / s" };
    over_time(a, 240, top, y_desc, |chart| {
        for (k, s) in series.iter().enumerate() {
            let points = s.iter().enumerate().map(|(i, &v)| (at(a, i), v));
            chart.draw_series(LineSeries::new(points, colour(k).stroke_width(2)))?;
        }
        Ok(())
    })
}

/// Columns a throughput point is averaged over (1% of the run): rates of
/// short invocations spread over single pixels would be noise.
pub(crate) const SMOOTHING: usize = COLUMNS / 100;

/// The moving average of `v` over `w` columns, centred.
fn smooth(v: &[f64], w: usize) -> Vec<f64> {
    let half = w / 2;
    let mut prefix = vec![0.0; v.len() + 1];
    for (i, x) in v.iter().enumerate() {
        prefix[i + 1] = prefix[i] + x;
    }
    (0..v.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(v.len()));
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// A number in few characters: 1.2k, 3.4M.
pub(crate) fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A stage's latency histogram on a log scale: warm invocations in its
/// colour, cold ones in black over them, and its p50, p95 and p99.
pub(crate) fn latency(key: &Key, k: usize) -> ChartResult {
    let bins = |i: usize| key.warm.bins[i] + key.coldl.bins[i];
    let n = key.warm.bins.len();
    let (Some(lo), Some(hi)) = ((0..n).find(|&i| bins(i) > 0), (0..n).rev().find(|&i| bins(i) > 0)) else {
        return svg(WIDTH / 2, 220, |_| Ok(()));
    };
    let edge = |i: usize| 10f64.powf(i as f64 / BINS_PER_DECADE as f64) / 1000.0;
    // At least a decade wide, or the log axis has no labels.
    let (x0, x1) = (edge(lo.saturating_sub(1)), edge(hi + 2));
    let x0 = x0.min(x1 / 10.0);
    let top = (0..n).map(bins).max().unwrap_or(1) as f64 * 1.15;
    let mut all = key.warm.hist.clone();
    let _ = all.add(&key.coldl.hist);
    let quantiles: Vec<(&str, f64)> = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)]
        .into_iter()
        .filter(|_| !all.is_empty())
        .map(|(name, q)| (name, (all.value_at_quantile(q) as f64 / 1000.0).max(x0)))
        .collect();
    svg(WIDTH / 2, 220, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d((x0..x1).log_scale(), 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (log)")
            .x_labels(6)
            .y_desc("invocations")
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .label_style(label_style(11))
            .draw()?;
        for (counts, fill) in [(&key.warm.bins, colour(k).mix(0.8)), (&key.coldl.bins, BLACK.mix(0.55))] {
            chart.draw_series(
                (lo..=hi)
                    .filter(|&i| counts[i] > 0)
                    .map(|i| Rectangle::new([(edge(i), 0.0), (edge(i + 1), counts[i] as f64)], fill.filled())),
            )?;
        }
        for (i, (name, v)) in quantiles.iter().enumerate() {
            let v = v.min(x1);
            chart.draw_series(DashedLineSeries::new(vec![(v, 0.0), (v, top)], 3, 3, RED.stroke_width(1)))?;
            let (px, py) = chart.backend_coord(&(v, top));
            let style = label_style(10).pos(Pos::new(HPos::Left, VPos::Top));
            root.draw_text(name, &style, (px + 2, py + 2 + 11 * i as i32))?;
        }
        Ok(())
    })
}
