//! A simulated run's invocation records: each decided invocation as a
//! real run records it, with its billing, into the run directory's log.

use std::time::Duration;

use crate::container::CANCELLED;
use crate::records::InvocationRecord;

use super::{Run, Sim};

impl Sim<'_, '_> {
    /// Records `run`'s invocations up to `until` (the one in flight then
    /// ends there, cancelled).
    pub(super) fn emit(&mut self, run: &Run, slot: usize, until: u64) {
        let pricing = &self.plan.platform.pricing;
        for p in run.planned.iter().filter(|p| p.start < until || until == u64::MAX) {
            let cut = p.end > until;
            let end = p.end.min(until);
            let name = &self.plan.stages[p.step.stage].name;
            let billed = pricing.billed(Duration::from_micros(end - p.start));
            let record = InvocationRecord {
                stage: name,
                phase: p.step.kind.name(),
                task: run.task,
                attempt: p.attempt,
                backup: run.backup,
                worker: slot,
                container: p.container,
                cold: p.cold,
                queued_us: if p.attempt == 1 && p.step == self.steps[self.phase[0]] { run.queued } else { p.start },
                started_us: p.start,
                finished_us: end,
                billed_us: billed.as_micros() as u64,
                status: if p.error.is_none() && !cut { "ok" } else { "error" },
                error: if cut { Some(CANCELLED) } else { p.error },
                bytes_in: p.bytes_in,
                records_in: p.records_in,
                bytes_out: if cut { 0 } else { p.bytes_out },
                records_out: if cut { 0 } else { p.records_out },
            };
            self.stats[p.step.index()].add(&record);
            if let Some(r) = self.recorder.as_mut() {
                // A full disk shows when the records are flushed.
                let _ = r.record(p.step.index(), &record);
            }
        }
    }
}
