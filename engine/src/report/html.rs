//! The report page of one run, and the pieces the comparison page shares:
//! the style sheet, escaping, tables and figures. The page fetches
//! nothing: its Content-Security-Policy forbids every source but its own
//! inline style, so a browser opening it offline shows all of it.

use std::fmt::Write;

use super::RunView;
use super::aggregate::{Key, Mark};
use super::charts::{self, ChartResult};

/// The head of a page titled `title`.
pub(crate) fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width\">\n<title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n",
        esc(title)
    )
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1000px;\
color:#222;padding:0 12px}h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin:28px 0 6px;\
border-bottom:1px solid #ddd;padding-bottom:3px}h3{font-size:14px;margin:10px 0 2px}\
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{padding:3px 9px;border-bottom:1px solid #eee;\
text-align:right;vertical-align:top}th{background:#f6f6f6;text-align:left}td.name{text-align:left}\
.nowrap{white-space:nowrap}td:first-child,th:first-child{text-align:left}\
td.text{text-align:left;font-family:ui-monospace,monospace;font-size:12px;max-width:520px;overflow-wrap:anywhere}\
svg{max-width:100%;height:auto;display:block}figure{margin:6px 0}.grid{display:flex;flex-wrap:wrap;gap:4px}\
.grid figure{flex:1 1 460px}.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:-1px}\
.legend{font-size:13px;margin:4px 0}.status{display:inline-block;padding:2px 9px;border-radius:4px;color:#fff;\
font-weight:600}.succeeded{background:#2a8a3a}.running{background:#1f6fb7}.failed{background:#c62828}.interrupted{background:#b7791f}.simulated{background:#5a4fcf}\
.error{background:#fdecea;border-left:4px solid #c62828;padding:8px 12px;font-size:13px;white-space:pre-wrap;\
overflow-wrap:anywhere}.muted{color:#777;font-size:12px}";

/// `s` escaped for HTML text and attributes.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table: a header row, then rows of cells (already HTML).
pub(crate) fn table(id: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = format!("<table id=\"{id}\"><tr>");
    for h in header {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr>\n");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            t.push_str(c);
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</table>\n");
    t
}

/// A numeric cell.
pub(crate) fn num(v: impl std::fmt::Display) -> String {
    format!("<td>{v}</td>")
}

/// A text cell (left-aligned, escaped).
pub(crate) fn text(v: &str) -> String {
    format!("<td class=\"text\">{}</td>", esc(v))
}

/// A figure holding a chart: `id` names it for tests and links.
pub(crate) fn figure(id: &str, attrs: &str, svg: ChartResult) -> Result<String, String> {
    Ok(format!("<figure id=\"{id}\" class=\"chart\"{attrs}>{}</figure>\n", svg?))
}

/// Milliseconds with sensible digits.
pub(crate) fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Bytes in KiB, MiB, GiB.
pub(crate) fn bytes(b: u64) -> String {
    let f = b as f64;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

/// Dollars, with digits enough for fractions of a cent.
pub(crate) fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".to_string()
    } else if v >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.6}")
    }
}

/// The legend of the stages' colours.
pub(crate) fn key_legend(keys: &[Key]) -> String {
    let mut l = String::from("<div class=\"legend\">");
    for (i, k) in keys.iter().enumerate() {
        let _ = write!(l, "<span class=\"sw\" style=\"background:{}\"></span>{}", charts::css(i), esc(&k.label()));
    }
    l.push_str("</div>\n");
    l
}

/// The page of one run.
pub(crate) fn page(run: &RunView) -> Result<String, String> {
    let mut p = head(&format!("fanout run {} ({})", run.id, run.job()));
    let _ = writeln!(p, "<h1>fanout run {}</h1>", esc(&run.id));
    p.push_str(&header(run));
    p.push_str(&sections(run, "")?);
    p.push_str("</body></html>\n");
    Ok(p)
}

/// A stream's lag over time: records in and rows out a second, and how
/// far behind the source's head it was.
fn stream_section(lag: &[crate::summary::LagSample], suffix: &str) -> Result<String, String> {
    let mut p = String::from("<h2>Stream</h2>\n");
    let secs = lag.last().map_or(1.0, |l| l.at_s);
    let rate = |f: fn(&crate::summary::LagSample) -> u64| -> Vec<(f64, f64)> {
        (lag.windows(2))
            .map(|w| (w[1].at_s, (f(&w[1]) - f(&w[0]).min(f(&w[1]))) as f64 / (w[1].at_s - w[0].at_s).max(1e-3)))
            .collect()
    };
    let flow = [("records in / s", rate(|l| l.records_in)), ("rows out / s", rate(|l| l.rows_out))];
    p.push_str(&figure(&format!("stream-rates{suffix}"), "", charts::series(secs, "per second", &flow))?);
    let waiting: Vec<(f64, f64)> = lag.iter().map(|l| (l.at_s, l.waiting_files as f64)).collect();
    let behind: Vec<(f64, f64)> = lag.iter().filter_map(|l| Some((l.at_s, l.behind_ms? as f64 / 1000.0))).collect();
    let lags = [("files waiting", waiting), ("seconds behind the newest event", behind)];
    p.push_str(&figure(&format!("stream-lag{suffix}"), "", charts::series(secs, "lag", &lags))?);
    let _ = writeln!(
        p,
        "<p class=\"muted\">A sample a second. Files waiting: the source's files (or spooled ones) not read yet; \
         seconds behind: from the newest event time seen to the moment of the sample.</p>"
    );
    Ok(p)
}

/// The job, status, wall time, and for a failed run where it failed.
pub(crate) fn header(run: &RunView) -> String {
    let status = run.status();
    let mut h = format!(
        "<p>job <b>{}</b> · <span class=\"status {status}\">{status}</span> · {:.3} s wall · {} invocations on {} \
         worker slots · <span class=\"muted\">{}</span></p>\n",
        esc(&run.job()),
        run.wall(),
        run.agg.invocations,
        run.agg.slots.len(),
        esc(&run.dir.display().to_string())
    );
    if let Some(m) = run.summary.as_ref().and_then(|s| s.simulation.as_ref()) {
        let _ = writeln!(
            h,
            "<p id=\"simulated\"><span class=\"status simulated\">simulated</span> by <code>fanout simulate</code>, \
             calibrated on {}: wall {:.3} s at the median of {} seeds (p5 {:.3} s, p95 {:.3} s); the timeline is the \
             first seed's.</p>",
            esc(&m.calibrated_from.display().to_string()),
            m.wall_p50,
            m.seeds,
            m.wall_p5,
            m.wall_p95
        );
    }
    if let Some(s) = &run.summary
        && let Some(e) = &s.error
    {
        let _ = writeln!(h, "<div class=\"error\" id=\"failure\"><b>Where it failed:</b> {}", esc(e));
        if let Some(f) = run.agg.failures.first() {
            let _ = write!(
                h,
                "\nfirst failed invocation: {} task {} (attempt {}) at {:.3} s",
                esc(&run.agg.keys[f.key].label()),
                f.task,
                f.attempt,
                f.finished_us as f64 / 1e6
            );
        }
        h.push_str("</div>\n");
    } else if let (None, Some(pid)) = (&run.summary, crate::run::running(&run.dir)) {
        h.push_str(&format!(
            "<div class=\"error\" id=\"failure\">The run is still running (process {}): what follows is what its \
             invocation records hold so far.</div>\n",
            esc(&pid)
        ));
    } else if run.summary.is_none() {
        h.push_str(
            "<div class=\"error\" id=\"failure\">The run has no summary.json: it was interrupted (or crashed). \
             What follows is what its invocation records hold; <code>fanout run --resume</code> finishes it.</div>\n",
        );
    }
    h
}

/// The charts and tables of a run; `suffix` makes element ids unique on
/// a page of two runs.
pub(crate) fn sections(run: &RunView, suffix: &str) -> Result<String, String> {
    let a = &run.agg;
    let mut p = String::new();
    p.push_str(&summary_table(run, suffix));
    if let Some(lag) = run.summary.as_ref().and_then(|s| s.stream.as_ref()).map(|s| &s.lag)
        && !lag.is_empty()
    {
        p.push_str(&stream_section(lag, suffix)?);
    }
    let _ = writeln!(p, "<h2>Timeline</h2>");
    p.push_str(&key_legend(&a.keys));
    let mut marks = String::from("<div class=\"legend\">");
    for (i, &m) in Mark::ALL.iter().enumerate() {
        let (colour, symbol) = charts::mark_style(m);
        let _ = write!(
            marks,
            "<span style=\"color:{colour};margin-left:12px\">{symbol}</span> {} ({})",
            m.name(),
            a.mark_counts[i]
        );
    }
    marks.push_str("</div>\n");
    p.push_str(&marks);
    let tracks = format!(" data-tracks=\"{}\" data-slots=\"{}\"", a.rows, a.slots.len());
    p.push_str(&figure(&format!("timeline{suffix}"), &tracks, charts::timeline(a))?);
    let _ = writeln!(
        p,
        "<p class=\"muted\">A track per worker slot{}; colour: the stage; opacity: how busy the slot was in that pixel.</p>",
        if a.group > 1 { format!(" group ({} slots each)", a.group) } else { String::new() }
    );
    let limit = run.summary.as_ref().map(|s| s.concurrency);
    let _ = writeln!(p, "<h2>Concurrency</h2>");
    p.push_str(&key_legend(&a.keys));
    p.push_str(&figure(&format!("concurrency{suffix}"), "", charts::concurrency(a, limit))?);
    let _ = writeln!(
        p,
        "<p class=\"muted\">Solid: invocations running; dashed: tasks queued for a slot; dotted: the run's concurrency \
         limit ({}). Peak: {} in flight.</p>",
        limit.map_or_else(|| "-".to_string(), |l| l.to_string()),
        a.peak
    );
    let _ = writeln!(p, "<h2>Latency</h2>");
    let _ = writeln!(
        p,
        "<p class=\"muted\">Per stage, on a log scale: warm invocations in the stage's colour, cold starts in grey; red: p50, \
         p95, p99.</p>"
    );
    p.push_str("<div class=\"grid\">");
    for (k, key) in a.keys.iter().enumerate() {
        let chart = charts::latency(key, k)?;
        let _ = write!(
            p,
            "<figure id=\"latency{suffix}-{k}\" class=\"chart\"><h3>{}</h3>{chart}</figure>",
            esc(&key.label())
        );
    }
    p.push_str("</div>\n");
    p.push_str(&latency_table(a, suffix));
    let _ = writeln!(p, "<h2>Throughput</h2>");
    p.push_str(&key_legend(&a.keys));
    p.push_str(&figure(&format!("throughput{suffix}"), "", charts::throughput(a, false))?);
    p.push_str(&figure(&format!("throughput-bytes{suffix}"), "", charts::throughput(a, true))?);
    let _ = writeln!(
        p,
        "<p class=\"muted\">Records and bytes read per second by successful invocations, spread over their run time \
         and averaged over 1% of the run.</p>"
    );
    p.push_str(&cost_table(run, suffix));
    p.push_str(&slowest_table(run, suffix));
    p.push_str(&failures(run, suffix));
    Ok(p)
}

fn summary_table(run: &RunView, suffix: &str) -> String {
    let a = &run.agg;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row =
        |name: &str, value: String| rows.push(vec![format!("<td class=\"name\">{name}</td>"), num(esc(&value))]);
    row("wall time", format!("{:.3} s", run.wall()));
    let (retries, backups) = a.keys.iter().fold((0, 0), |(r, b), k| (r + k.retries, b + k.backups));
    let cold: u64 = a.keys.iter().map(|k| k.cold).sum();
    let failed: u64 = a.keys.iter().map(|k| k.failed).sum();
    let lost = a.mark_counts[Mark::ALL.iter().position(|&m| m == Mark::Lost).unwrap_or(0)];
    row(
        "invocations",
        format!(
            "{} ({cold} cold, {failed} failed, {retries} retries, {backups} backups, {lost} lost the race to their twin)",
            a.invocations
        ),
    );
    row("worker slots", format!("{} (peak {} in flight)", a.slots.len(), a.peak));
    if let Some(s) = &run.summary {
        let i = &s.input;
        let mut input = format!("{} splits, {}, {} records", i.splits, bytes(i.bytes), i.records);
        if i.skipped + i.rejected > 0 {
            input.push_str(&format!(" ({} bad records skipped, {} rejected)", i.skipped, i.rejected));
        }
        row("input", input);
        row(
            "throughput",
            format!("{} records/s, {:.1} MiB/s", charts::short(s.records_per_second), s.input_mib_per_second),
        );
        if let Some(o) = &s.output {
            row("output", format!("{} ({} rows, {})", o.path.display(), o.rows, bytes(o.bytes)));
        }
        let l = &s.latency_ms;
        row(
            "latency",
            format!("p50 {} ms, p95 {} ms, p99 {} ms, max {} ms", ms(l.p50), ms(l.p95), ms(l.p99), ms(l.max)),
        );
        let c = &s.cost;
        row(
            "cost",
            format!(
                "{} on {} at {} MB: {} requests, {:.3} GB-s ({})",
                usd(c.usd),
                c.preset,
                c.memory_mb,
                c.requests,
                c.gb_seconds,
                c.note
            ),
        );
        if s.resumed_tasks > 0 {
            row("resumed", format!("{} tasks taken from the journal", s.resumed_tasks));
        }
    }
    format!("<h2>Summary</h2>\n{}", table(&format!("summary{suffix}"), &["", ""], &rows))
}

fn latency_table(a: &super::aggregate::Aggregate, suffix: &str) -> String {
    let mut rows = Vec::new();
    for k in &a.keys {
        for (which, l) in [("warm", &k.warm), ("cold", &k.coldl)] {
            if l.hist.is_empty() {
                continue;
            }
            let q = |q: f64| l.ms(q).map_or_else(|| "-".to_string(), ms);
            rows.push(vec![
                text(&k.label()),
                text(which),
                num(l.hist.len()),
                num(q(0.5)),
                num(q(0.95)),
                num(q(0.99)),
                num(ms(l.hist.max() as f64 / 1000.0)),
            ]);
        }
    }
    table(
        &format!("latency-table{suffix}"),
        &["stage", "", "invocations", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        &rows,
    )
}

fn cost_table(run: &RunView, suffix: &str) -> String {
    let Some(s) = &run.summary else { return String::new() };
    let mut rows = Vec::new();
    for st in &s.stages {
        let label = if st.phase == "map" { st.name.clone() } else { format!("{} ({})", st.name, st.phase) };
        rows.push(vec![text(&label), num(st.invocations), num(format!("{:.3}", st.gb_seconds)), num(usd(st.usd))]);
    }
    let c = &s.cost;
    rows.push(vec![text("all"), num(c.requests), num(format!("{:.3}", c.gb_seconds)), num(usd(c.usd))]);
    let mut out = format!(
        "<h2>Cost</h2>\n<p class=\"muted\">On the {} preset at {} MB per container.</p>\n{}",
        esc(&c.preset),
        c.memory_mb,
        table(&format!("cost{suffix}"), &["stage", "requests", "GB-s", "price"], &rows)
    );
    if let Some(sc) = s.stream.as_ref().and_then(|st| st.source_cost.as_ref()) {
        let mut rows: Vec<Vec<String>> = (sc.charges.iter())
            .map(|c| vec![text(&c.item), num(format!("{}", c.quantity)), num(usd(c.price)), num(usd(c.usd))])
            .collect();
        rows.push(vec![text("all"), text(""), text(""), num(usd(sc.usd))]);
        let _ = write!(
            out,
            "<h3>The source, {}</h3>\n<p class=\"muted\">{}</p>\n{}",
            esc(&sc.service),
            esc(&sc.note),
            table(&format!("source-cost{suffix}"), &["item", "quantity", "each", "price"], &rows)
        );
    }
    out
}

fn slowest_table(run: &RunView, suffix: &str) -> String {
    let a = &run.agg;
    let rows: Vec<Vec<String>> = a
        .slowest
        .iter()
        .map(|s| {
            let mut flags = Vec::new();
            if s.cold {
                flags.push("cold");
            }
            if s.backup {
                flags.push("backup");
            }
            if !s.ok {
                flags.push("failed");
            }
            vec![
                text(&a.keys[s.key].label()),
                num(s.task),
                text(&run.input_of(s.key, s.task)),
                num(s.attempt),
                num(s.worker),
                num(format!("{:.3}", s.started_us as f64 / 1e6)),
                num(ms(s.dur_us as f64 / 1000.0)),
                num(s.records_in),
                num(bytes(s.bytes_in)),
                format!("<td class=\"nowrap\">{}</td>", flags.join(", ")),
            ]
        })
        .collect();
    format!(
        "<h2>Slowest invocations</h2>\n{}",
        table(
            &format!("slowest{suffix}"),
            &["stage", "task", "input", "attempt", "slot", "started s", "ms", "records", "bytes", ""],
            &rows
        )
    )
}

fn failures(run: &RunView, suffix: &str) -> String {
    let a = &run.agg;
    let failed_tasks = run.summary.as_ref().map(|s| s.failed_tasks.as_slice()).unwrap_or_default();
    if a.failures.is_empty() && failed_tasks.is_empty() {
        return String::new();
    }
    let mut p = String::from("<h2>Failures</h2>\n");
    if !failed_tasks.is_empty() {
        let rows: Vec<Vec<String>> = failed_tasks
            .iter()
            .map(|f| vec![text(&f.stage), text(&f.phase), num(f.task), text(&f.input), num(f.attempts), text(&f.error)])
            .collect();
        p.push_str("<h3>Tasks that failed for good</h3>\n");
        p.push_str(&table(
            &format!("failed-tasks{suffix}"),
            &["stage", "phase", "task", "input", "attempts", "error"],
            &rows,
        ));
    }
    if !a.failures.is_empty() {
        let rows: Vec<Vec<String>> = a
            .failures
            .iter()
            .map(|f| {
                vec![
                    text(&a.keys[f.key].label()),
                    num(f.task),
                    num(f.attempt),
                    num(format!("{:.3}", f.finished_us as f64 / 1e6)),
                    text(&f.error),
                ]
            })
            .collect();
        let total: u64 = a.keys.iter().map(|k| k.failed).sum();
        let _ = writeln!(p, "<h3>Failed invocations: the first {} of {total}</h3>", a.failures.len());
        p.push_str(&table(
            &format!("failed-invocations{suffix}"),
            &["stage", "task", "attempt", "at s", "error"],
            &rows,
        ));
    }
    p
}
