//! A simulated run of a task on a slot, decided when it starts (a slot
//! runs a task's steps back to back): per step, its attempts — a warm or
//! a cold container by the engine's keep-alive and cold-start draw, the
//! stage's own concurrency, chaos, the deadline, the backoff before each
//! retry — and their durations, from the calibrated model or replayed
//! from a run.

use std::cmp::Reverse;

use crate::chaos::Fault;
use crate::policy::{backoff, chaos_attempt, cold_start_draw, expired};

use super::{Event, Planned, Run, Running, Sim};

impl Sim<'_, '_> {
    /// Starts a run of `task` on `slot` now: its invocations are decided
    /// at once (a slot runs a task's steps back to back).
    pub(super) fn start(&mut self, slot: usize, task: u64, bytes: u64, records: u64, queued: u64, backup: bool) {
        let now = self.now;
        let r = self.running.entry(task).or_insert_with(|| Running {
            started: now,
            bytes,
            records,
            backed_up: false,
            slots: Vec::new(),
        });
        if r.slots.is_empty() && !r.backed_up {
            self.watch.push_back((now, task));
        }
        r.slots.push(slot);
        let (mut t, mut bytes, mut records) = (self.now, bytes, records);
        let platform = &self.plan.platform;
        let cpu = platform.pricing.cpu_scale.max(1.0) / self.cal.cpu_scale.max(1.0);
        let beside = self.beside();
        let mut planned = Vec::new();
        let mut ok = true;
        for k in 0..self.phase.len() {
            let i = self.phase[k];
            let (step, model) = (self.steps[i], &self.models[i]);
            let at = step.index();
            let mut attempt = 1;
            loop {
                // The stage's own concurrency: the invocation waits for a
                // permit (the wait is not part of it, as in the engine).
                let permit = self.limits[step.stage].as_mut().map(|p| p.pop().expect("a permit").0);
                t = t.max(permit.unwrap_or(0));
                let warm = self.slots[slot].containers[at]
                    .filter(|&(_, used)| !expired(self.at(used), platform.containers.keep_alive, self.at(t)));
                let (container, cold) = match warm {
                    Some((id, _)) => (id, false),
                    None => {
                        self.next_container += 1;
                        (self.next_container, true)
                    }
                };
                let mut us = 0.0;
                if cold {
                    let nth = &mut self.slots[slot].cold_starts[at];
                    let draw = cold_start_draw(slot, at, *nth, self.seed);
                    *nth += 1;
                    if platform.emulate {
                        us += platform.containers.cold_start.sample(draw).as_secs_f64() * 1e6;
                    }
                    us += model.cold_us(self.draw(at, task, attempt, backup, 1));
                }
                if platform.emulate {
                    us += platform.containers.overhead.as_secs_f64() * 1e6;
                }
                let draw = chaos_attempt(attempt, backup);
                let fault = self.chaos.map_or(Fault::None, |c| c.draw(step.stage, step.kind as usize, task, draw));
                let mut compute = model.warm_us(bytes, self.draw(at, task, attempt, backup, 0)) * cpu;
                if self.shares_machine {
                    let limit = self.plan.stages[step.stage].concurrency.max(1) as u64;
                    compute *= self.cal.sharing(&model.stretch, beside.min(limit).max(1) as f64);
                }
                let timeout = platform.timeout.map(|d| d.as_secs_f64() * 1e6);
                let (mut us, mut error) = match fault {
                    Fault::None => (us + compute, None),
                    Fault::Fail => (us, Some("chaos: injected failure")),
                    Fault::Panic => (us, Some("chaos: injected panic")),
                    Fault::Timeout => (timeout.unwrap_or(us + compute), Some("timed out")),
                    Fault::Straggle(x) => (us + compute * x, None),
                };
                // A replayed run's own invocation: the time it took, its
                // cold start and faults included.
                let name = &self.plan.stages[step.stage].name;
                let replayed = self.replay.and_then(|r| r.get(name, step.kind, task, attempt, backup));
                if let Some(r) = replayed {
                    us = r.us * cpu;
                } else if let Some(ran) =
                    self.replay.and_then(|r| r.ran_before_cancelled(name, step.kind, task, attempt, backup))
                {
                    // It would have ended later than it was cancelled.
                    us = us.max(ran * cpu + 1000.0);
                }
                if let Some(limit) = timeout
                    && us > limit
                {
                    (us, error) = (limit, Some("timed out"));
                }
                let end = t + us.round() as u64;
                if let Some(p) = self.limits[step.stage].as_mut() {
                    p.push(Reverse(end));
                }
                let (bytes_out, records_out) = match replayed {
                    _ if error.is_some() => (0, 0),
                    Some(r) => (r.bytes_out, r.records_out),
                    None => {
                        (model.bytes_out.at(bytes as f64) as u64, model.records_out.at(records as f64).round() as u64)
                    }
                };
                // A panicked or timed-out container is not reused.
                let reused = !matches!(fault, Fault::Panic | Fault::Timeout) && error != Some("timed out");
                self.slots[slot].containers[at] = reused.then_some((container, end));
                planned.push(Planned {
                    step,
                    attempt,
                    container,
                    cold,
                    start: t,
                    end,
                    error,
                    bytes_in: bytes,
                    records_in: records,
                    bytes_out,
                    records_out,
                });
                t = end;
                if error.is_none() {
                    (bytes, records) = (bytes_out, records_out);
                    break;
                }
                if attempt > platform.retries {
                    ok = false;
                    break;
                }
                // A replay draws the replayed run's backoff.
                let seed = match self.replay {
                    Some(r) if self.seed == 0 => r.seed,
                    _ => self.seed,
                };
                t += backoff(platform.backoff, attempt, seed, step, task).as_micros() as u64;
                attempt += 1;
            }
            if !ok {
                break;
            }
        }
        self.slots[slot].run = Some(Run { task, backup, queued, planned, ok });
        let epoch = self.slots[slot].epoch;
        self.push(t, Event::End { slot, epoch });
    }

    /// How many tasks run at once, as the phase goes: one per slot, then
    /// the tasks left.
    pub(super) fn beside(&self) -> u64 {
        let slots = self.slots.len() as u64;
        if self.exhausted { slots.min(self.listed - self.finished).max(1) } else { slots }
    }

    /// A uniform draw in [0, 1) for a residual (`what` 0) or a cold start
    /// (1), by seed, step, task, attempt and run.
    fn draw(&self, step: usize, task: u64, attempt: u32, backup: bool, what: u64) -> f64 {
        let mut key = [0u8; 40];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&(step as u64).to_le_bytes());
        key[16..24].copy_from_slice(&task.to_le_bytes());
        key[24..32].copy_from_slice(&(u64::from(attempt) | u64::from(backup) << 32).to_le_bytes());
        key[32..].copy_from_slice(&what.to_le_bytes());
        (xxhash_rust::xxh3::xxh3_64(&key) >> 11) as f64 / (1u64 << 53) as f64
    }
}
