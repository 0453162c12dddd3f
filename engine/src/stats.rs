//! Per-step statistics of a run: invocation counts, records, bytes,
//! billed time and an HDR histogram of latencies, kept per worker and
//! merged.

use hdrhistogram::Histogram;

/// Totals for one (stage, phase).
#[derive(Debug, Clone)]
pub struct StageStats {
    /// Invocations.
    pub invocations: u64,
    /// Cold starts.
    pub cold: u64,
    /// Failed invocations.
    pub failed: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Invocations after a failed attempt.
    pub retries: u64,
    /// Billed duration, microseconds.
    pub billed_us: u64,
    /// Invocation latency, microseconds.
    pub latency: Histogram<u64>,
}

impl Default for StageStats {
    fn default() -> Self {
        StageStats {
            invocations: 0,
            cold: 0,
            failed: 0,
            records_in: 0,
            records_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            retries: 0,
            billed_us: 0,
            // 1 µs to 1 hour, 3 significant figures.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

impl StageStats {
    /// Adds another worker's totals.
    pub fn merge(&mut self, o: &StageStats) {
        self.invocations += o.invocations;
        self.cold += o.cold;
        self.failed += o.failed;
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.retries += o.retries;
        self.billed_us += o.billed_us;
        self.latency.add(&o.latency).expect("histograms of the same range");
    }
}
