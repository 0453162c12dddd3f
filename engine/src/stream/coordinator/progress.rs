//! What a stream says about itself as it goes: the progress line, the
//! samples of its lag over time, the files waiting behind the source's
//! head, and the summary it ends with.

use std::time::{Duration, Instant, SystemTime};

use fanout_jobs::Plan;

use super::{Stream, say};
use crate::error::EngineError;
use crate::stream::source;
use crate::summary::{LagSample, Latency, StreamSummary, Summary, Totals, summarize};

impl Stream<'_> {
    /// Notes where the stream is now, for the summary's `lag`; a long
    /// run's samples are thinned to every other one past `MOST_SAMPLES`.
    pub(super) fn sample(&mut self) {
        const MOST_SAMPLES: usize = 1800;
        let c = self.state.counts;
        self.lag.push(LagSample {
            at_s: self.origin.elapsed().as_secs_f64(),
            records_in: c.records_in,
            rows_out: c.rows_out,
            waiting_files: self.waiting().unwrap_or(0) as u64,
            behind_ms: self.state.clock.newest.map(|n| source::millis(SystemTime::now()) - n),
        });
        if self.lag.len() > MOST_SAMPLES {
            let mut i = 0;
            self.lag.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
    }

    /// One line on stderr: records in, rows out, their rates, windows, lag.
    pub(super) fn say_progress(&mut self) {
        let c = self.state.counts;
        let lag = self.state.clock.newest.map_or(String::new(), |n| {
            let behind = (source::millis(SystemTime::now()) - n) as f64 / 1000.0;
            format!(", newest event {behind:.1}s ago")
        });
        // Rates since the last line; the files the source has not read.
        let (at, records, rows) = self.said.unwrap_or((self.origin, 0, 0));
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        let rates = format!(
            " ({:.0}/s in, {:.0}/s out)",
            c.records_in.saturating_sub(records) as f64 / secs,
            c.rows_out.saturating_sub(rows) as f64 / secs
        );
        self.said = Some((Instant::now(), c.records_in, c.rows_out));
        let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let waiting = self
            .waiting()
            .map_or(String::new(), |n| format!(", {}", plural(n as u64, "file waiting", "files waiting")));
        say(&format!(
            "stream: {} records in, {} rows out{rates}, {} committed ({} open), {} late{lag}{waiting}",
            c.records_in,
            c.rows_out,
            plural(c.windows, "window", "windows"),
            self.partials.len(),
            c.late
        ));
    }

    /// The files of the source's directory (or spool) not read yet.
    fn waiting(&self) -> Option<usize> {
        let dir = match &self.plan.input.source {
            fanout_jobs::InputSource::Stream(fanout_jobs::StreamSource::Dir(d)) => d.clone(),
            _ => self.spooled.clone()?,
        };
        let names = std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned());
        let current = self.state.position.current.as_ref().map(|(name, _)| name.as_str());
        Some(
            names
                .filter(|n| !n.starts_with('.') && !self.state.position.done.contains(n) && Some(n.as_str()) != current)
                .count(),
        )
    }

    /// The run's summary: the batch summary's fields, with the stream's
    /// own counts.
    pub(in crate::stream) fn summary(
        &self,
        run_id: &str,
        plan: &Plan,
        wall: Duration,
        ended: Option<&str>,
        error: Option<&EngineError>,
    ) -> Summary {
        let c = self.state.counts;
        let totals = Totals {
            stats: self.recorder.stats.clone(),
            splits: c.batches,
            input_bytes: 0,
            input_records: c.records_in,
            spilled: 0,
            scratch_written: 0,
            concurrency: plan.platform.concurrency,
            failures: Vec::new(),
            resumed: 0,
            backups: 0,
            bad_records: 0,
            rejects: None,
        };
        let mut summary = summarize(run_id, plan, &totals, wall, None, None, error);
        summary.stream = Some(StreamSummary {
            records_in: c.records_in,
            rows_out: c.rows_out,
            batches: c.batches,
            windows: c.windows,
            late_records: c.late,
            failed_records: c.failed,
            expired_records: crate::stream::receive::expired(&self.run_dir),
            files: c.files,
            output: plan.output.path.clone(),
            stopped_by: ended.unwrap_or("a failure").to_string(),
            latency_ms: Latency::of(&self.latency),
            lag: self.lag.clone(),
            source_cost: match &plan.input.source {
                fanout_jobs::InputSource::Stream(fanout_jobs::StreamSource::Kinesis { .. }) => {
                    self.usage().cost("kinesis")
                }
                fanout_jobs::InputSource::Stream(fanout_jobs::StreamSource::Sqs { .. }) => self.usage().cost("sqs"),
                _ => None,
            },
        });
        summary
    }
}
