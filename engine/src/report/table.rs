//! The summary as the table `fanout run` prints on stderr.

use std::fmt::Write as _;
use std::path::Path;

use crate::summary::Summary;

impl Summary {
    /// The summary as the table `fanout run` prints on stderr: totals,
    /// latencies, a line per stage and phase, retries and failures, the
    /// bill, the output and the run directory.
    pub fn render(&self, run_dir: &Path) -> String {
        let mut t = String::new();
        let size = |b: u64| fanout_jobs::units::Size(b).to_string();
        if let Some(s) = &self.stream {
            let _ = writeln!(
                t,
                "{} {} in {:.2}s (stopped: {}): {} records in {} batches ({:.0} records/s), {} rows out in {} files, \
                 {} windows, {} late{}",
                self.job,
                self.status,
                self.wall_seconds,
                s.stopped_by,
                s.records_in,
                s.batches,
                self.records_per_second,
                s.rows_out,
                s.files,
                s.windows,
                s.late_records,
                [(s.failed_records, "failed (set aside)"), (s.expired_records, "expired (set aside)")]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!(", {n} {what}"))
                    .collect::<String>()
            );
            let l = &s.latency_ms;
            if l.max > 0.0 {
                let _ = writeln!(
                    t,
                    "arrival to commit, ms: p50 {:.0} p95 {:.0} p99 {:.0} max {:.0}",
                    l.p50, l.p95, l.p99, l.max
                );
            } else {
                let _ = writeln!(t, "arrival to commit: no record committed in this run");
            }
        } else {
            let _ = writeln!(
                t,
                "{} {} in {:.2}s: {} splits, {} read, {} records ({:.1} MiB/s, {:.0} records/s)",
                self.job,
                self.status,
                self.wall_seconds,
                self.input.splits,
                size(self.input.bytes),
                self.input.records,
                self.input_mib_per_second,
                self.records_per_second,
            );
        }
        let (i, l) = (&self.invocations, &self.latency_ms);
        let _ = writeln!(
            t,
            "invocations: {} ({} cold, {} failed, {:.0}/s); latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
            i.total, i.cold, i.failed, i.per_second, l.p50, l.p95, l.p99, l.max
        );
        let _ = writeln!(
            t,
            "{:<16} {:<8} {:>8} {:>6} {:>12} {:>12} {:>9} {:>9} {:>9}",
            "stage", "phase", "calls", "cold", "records in", "records out", "p50 ms", "p99 ms", "max ms"
        );
        for st in &self.stages {
            let _ = writeln!(
                t,
                "{:<16} {:<8} {:>8} {:>6} {:>12} {:>12} {:>9.2} {:>9.2} {:>9.2}",
                st.name,
                st.phase,
                st.invocations,
                st.cold,
                st.records_in,
                st.records_out,
                st.latency_ms.p50,
                st.latency_ms.p99,
                st.latency_ms.max
            );
        }
        if self.input.skipped > 0 {
            let _ = writeln!(t, "bad input records skipped: {}", self.input.skipped);
        }
        if let Some(path) = &self.input.rejects {
            let _ = writeln!(t, "bad input records rejected: {} (listed in {})", self.input.rejected, path.display());
        }
        if self.resumed_tasks > 0 {
            let _ = writeln!(t, "resumed: {} tasks taken from the journal", self.resumed_tasks);
        }
        if self.retries > 0 || self.backup_tasks > 0 || !self.failed_tasks.is_empty() {
            let _ = writeln!(
                t,
                "retries: {}; backup tasks: {}; tasks failed for good: {}",
                self.retries,
                self.backup_tasks,
                self.failed_tasks.len()
            );
            for f in self.failed_tasks.iter().take(5) {
                let _ = writeln!(
                    t,
                    "  stage {} task {} ({}), {} attempts: {}",
                    f.stage, f.task, f.input, f.attempts, f.error
                );
            }
        }
        let c = &self.cost;
        let _ = writeln!(
            t,
            "cost on {} at {} MB: {} requests, {:.3} GB-s, ${:.6}",
            c.preset, c.memory_mb, c.requests, c.gb_seconds, c.usd
        );
        if c.cpu_scale > 1.0 {
            let _ = writeln!(t, "  ({})", c.note);
        }
        if let Some(sc) = self.stream.as_ref().and_then(|s| s.source_cost.as_ref()) {
            let charges: Vec<String> =
                sc.charges.iter().map(|c| format!("{} {} (${:.6})", quantity(c.quantity), c.item, c.usd)).collect();
            let _ = writeln!(t, "source on {}: {}, ${:.6}", sc.service, charges.join(", "), sc.usd);
        }
        if let Some(s) = &self.storage {
            let r = &s.requests;
            let _ = writeln!(
                t,
                "object storage: {} GET, {} HEAD, {} LIST, {} PUT, {} POST, {} DELETE ({} retried); {} read, {} written, ${:.6}",
                r.get,
                r.head,
                r.list,
                r.put,
                r.post,
                r.delete,
                r.retried + r.failed,
                size(r.bytes_read),
                size(r.bytes_written),
                s.usd
            );
        }
        if self.shuffle_spilled_bytes > 0 {
            let _ = writeln!(t, "shuffle spilled {} to disk", size(self.shuffle_spilled_bytes));
        }
        if self.shuffle_scratch_bytes > 0 {
            let _ = writeln!(t, "shuffle wrote {} to object storage (deleted)", size(self.shuffle_scratch_bytes));
        }
        if let Some(o) = &self.output {
            let _ = writeln!(t, "output: {} ({} rows, {})", o.path.display(), o.rows, size(o.bytes));
        }
        let _ = writeln!(t, "run directory: {}", run_dir.display());
        t
    }
}

/// A billed quantity: whole numbers as they are, fractions (shard-hours)
/// to four significant digits.
fn quantity(q: f64) -> String {
    if q.fract() == 0.0 { format!("{q:.0}") } else { format!("{q:.4}") }
}
