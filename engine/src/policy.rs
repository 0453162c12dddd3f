//! The platform's policy: every decision about invocations that a run
//! makes and that `fanout simulate` must make alike — how tasks are
//! grouped for the slots, how far the listing runs ahead,
//! when a container is cold and when an idle one is retired, the draw of
//! its modelled cold start, the backoff before a retry, which faults a
//! backup draws, which failures a job tolerates, and when a straggler
//! gets a backup.
//!
//! `run/` (the engine) and `simulate/` both call these functions and
//! neither keeps a copy of its own; tests/simulate.rs replays a real
//! run's durations in the simulator and checks that the two decide the
//! same invocations, retries, backups and cold starts. A change of policy
//! is made here, once.

use std::time::{Duration, Instant};

use crate::step::Step;

/// Task groups the listing runs ahead of the slots, per slot (the bounded
/// channel between the coordinator and the slots): the listing ends, and
/// backups may start, that far before the last task runs.
pub(crate) const LISTED_AHEAD_PER_SLOT: usize = 2;

/// Most tasks in one group.
pub(crate) const GROUP_TASKS: usize = 32;
/// The work one group should carry: tasks are grouped only as far as
/// their measured time stays under this, so that tiny tasks share the
/// hand-off while costly ones spread over every slot.
pub(crate) const GROUP_TIME: Duration = Duration::from_micros(100);
/// Split bytes past which a group is sent: a task of this size or more
/// travels alone.
pub(crate) const GROUP_BYTES: u64 = 256 * 1024;

/// Whether a phase's tasks travel one by one: with backups (a straggler
/// must not hold up the tasks grouped behind it), with a function outside
/// the process (whose invocations cost far more than the hand-off), or
/// when the source does not group its tasks.
pub(crate) fn tasks_alone(grouped_source: bool, backups: bool, external: bool) -> bool {
    !grouped_source || backups || external
}

/// How many tasks the next group carries, given the `nanos` the slots
/// spent on the phase's `tasks` tasks so far: one until a task has been
/// measured, then as many as fit [`GROUP_TIME`] at the mean task time, up
/// to [`GROUP_TASKS`].
pub(crate) fn group_size(nanos: u64, tasks: u64) -> usize {
    if tasks == 0 {
        return 1;
    }
    let mean = (nanos / tasks).max(1);
    (GROUP_TIME.as_nanos() as u64 / mean).clamp(1, GROUP_TASKS as u64) as usize
}

/// Whether a container last used at `used` has passed its `keep_alive` at
/// `now` (and is retired: the next invocation on its slot is cold).
pub(crate) fn expired(used: Instant, keep_alive: Option<Duration>, now: Instant) -> bool {
    keep_alive.is_some_and(|k| now.saturating_duration_since(used) > k)
}

/// How long from `now` until the first of the containers last used at
/// `used` passes `keep` (a millisecond past it); `None` when there are
/// none.
pub(crate) fn next_expiry(used: impl Iterator<Item = Instant>, keep: Duration, now: Instant) -> Option<Duration> {
    used.map(|u| keep.saturating_sub(now.saturating_duration_since(u)) + Duration::from_millis(1)).min()
}

/// A standard normal draw from a seed (Box–Muller over two hashes), so an
/// emulated run's cold starts are the same every time.
pub(crate) fn standard_normal(seed: u64) -> f64 {
    let u = |salt: u64| {
        let h = xxhash_rust::xxh3::xxh3_64(&(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
        ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (-2.0 * u(1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u(2)).cos()
}

/// The draw of the modelled cold start of the `nth` container started for
/// step index `step` on worker slot `slot`: keyed by where it starts, not
/// by its id (which threads take in the order they get there), so an
/// emulated run draws the same cold starts every time, and a simulation's
/// seed 0 draws a real run's (other seeds, others).
pub(crate) fn cold_start_draw(slot: usize, step: usize, nth: u32, seed: u64) -> f64 {
    let at = (slot as u64) << 40 | (step as u64) << 24 | u64::from(nth);
    standard_normal(at ^ seed.wrapping_mul(0xA24B_AED4_963E_E407))
}

/// A run's random seed (the backoff's jitter), from its id.
pub(crate) fn run_seed(run_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(run_id.as_bytes())
}

/// The delay before retry `attempt` (1 = the first retry): the base doubled
/// per attempt, capped at 30 s, with "equal jitter" (half fixed, half
/// random) so that retries of many tasks spread out. The random half is
/// drawn from the run's `seed` and the attempt's step, task and number, so
/// a run's retries are reproducible.
pub(crate) fn backoff(base: Duration, attempt: u32, seed: u64, step: Step, task: u64) -> Duration {
    let full = base.saturating_mul(1 << (attempt - 1).min(16)).min(Duration::from_secs(30));
    let mut key = [0u8; 28];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(step.index() as u64).to_le_bytes());
    key[16..24].copy_from_slice(&task.to_le_bytes());
    key[24..].copy_from_slice(&attempt.to_le_bytes());
    let r = (xxhash_rust::xxh3::xxh3_64(&key) >> 11) as f64 / (1u64 << 53) as f64;
    full / 2 + full.mul_f64(r / 2.0)
}

/// The number chaos draws an attempt's fault by: a backup's attempts
/// draw faults of their own, not its first run's.
pub(crate) fn chaos_attempt(attempt: u32, backup: bool) -> u32 {
    if backup { attempt + 1000 } else { attempt }
}

/// Whether a phase goes on with `failed` tasks failed for good so far,
/// tolerated up to `count` at once and `percent` (checked by
/// [`too_many`] when the phase ends).
pub(crate) fn tolerated_so_far(failed: u64, count: Option<u64>, percent: Option<f64>) -> bool {
    match (count, percent) {
        (None, None) => false,
        (Some(count), _) if failed > count => false,
        _ => true,
    }
}

/// Whether `failed` of a phase's `tasks` are more than `percent` allows.
pub(crate) fn too_many(failed: u64, tasks: u64, percent: f64) -> bool {
    failed > 0 && failed as f64 * 100.0 > percent * tasks as f64
}

/// The shortest wait before a backup, whatever the median.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Whether backups may start: `finished` of a phase's `total` tasks are
/// done, at least the fraction `done` of them.
pub(crate) fn backups_due(finished: u64, total: u64, done: f64) -> bool {
    total > 0 && finished as f64 >= done * total as f64
}

/// How long a task may run before it is a straggler: `after` times the
/// median of the finished tasks, and at least [`MIN_WAIT`].
pub(crate) fn straggler_wait(median: Duration, after: f64) -> Duration {
    median.mul_f64(after).max(MIN_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_grouped_by_their_measured_time() {
        assert_eq!(group_size(0, 0), 1, "nothing measured yet: one at a time");
        // 10 µs a task: ten fit 100 µs.
        assert_eq!(group_size(1_000_000, 100), 10);
        // Tiny tasks: at most 32.
        assert_eq!(group_size(1_000, 1000), GROUP_TASKS);
        // Costly ones: one each, to spread over every slot.
        assert_eq!(group_size(50_000_000, 10), 1);
        assert!(tasks_alone(true, true, false) && tasks_alone(true, false, true) && tasks_alone(false, false, false));
        assert!(!tasks_alone(true, false, false));
    }

    #[test]
    fn keep_alive_retires_what_idled_past_it_and_says_when_next() {
        let clock = crate::clock::ManualClock::new();
        let ms = Duration::from_millis;
        let t0 = clock.at(ms(0));
        let keep = Some(ms(100));
        assert!(!expired(t0, keep, clock.at(ms(100))), "at the keep-alive, still alive");
        assert!(expired(t0, keep, clock.at(ms(101))));
        assert!(!expired(t0, None, clock.at(ms(1_000_000))), "no keep-alive: for ever");
        let used = [clock.at(ms(10)), clock.at(ms(40))];
        assert_eq!(next_expiry(used.into_iter(), ms(100), clock.at(ms(50))), Some(ms(61)));
        assert_eq!(next_expiry(used.into_iter(), ms(100), clock.at(ms(500))), Some(ms(1)), "overdue: at once");
        assert_eq!(next_expiry(std::iter::empty(), ms(100), t0), None);
    }

    #[test]
    fn cold_start_draws_are_standard_normal_and_reproducible() {
        let draws: Vec<f64> = (0..20_000).map(standard_normal).collect();
        assert_eq!(standard_normal(7), standard_normal(7));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean}, variance {var}");
        assert_eq!(cold_start_draw(1, 2, 3, 0), cold_start_draw(1, 2, 3, 0));
        assert_ne!(cold_start_draw(1, 2, 3, 0), cold_start_draw(1, 2, 3, 1), "another seed, another draw");
    }

    #[test]
    fn backoff_doubles_with_seeded_jitter() {
        let base = Duration::from_millis(100);
        let step = Step::map(0);
        for attempt in 1..=5 {
            let full = base * (1 << (attempt - 1));
            let d = backoff(base, attempt, 7, step, 3);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            assert_eq!(d, backoff(base, attempt, 7, step, 3), "the same seed, the same delay");
        }
        // Capped at 30 s.
        assert!(backoff(base, 40, 7, step, 3) <= Duration::from_secs(30));
        // Tasks, and runs with other seeds, spread out.
        let spread: std::collections::HashSet<Duration> = (0..50).map(|t| backoff(base, 2, 7, step, t)).collect();
        assert!(spread.len() > 40);
        assert_ne!(backoff(base, 2, 7, step, 3), backoff(base, 2, 8, step, 3));
        assert_eq!((chaos_attempt(2, false), chaos_attempt(2, true)), (2, 1002));
    }

    #[test]
    fn failures_are_tolerated_by_count_at_once_and_by_percent_at_the_end() {
        assert!(!tolerated_so_far(1, None, None), "nothing tolerated by default");
        assert!(tolerated_so_far(1, Some(1), None) && !tolerated_so_far(2, Some(1), None));
        assert!(tolerated_so_far(50, None, Some(10.0)), "a percentage is checked when the phase ends");
        assert!(too_many(2, 10, 10.0) && !too_many(1, 10, 10.0) && !too_many(0, 0, 0.0));
    }

    #[test]
    fn backups_wait_for_most_tasks_and_a_multiple_of_the_median() {
        assert!(!backups_due(8, 10, 0.9) && backups_due(9, 10, 0.9) && !backups_due(0, 0, 0.0));
        let ms = Duration::from_millis;
        assert_eq!(straggler_wait(ms(100), 3.0), ms(300));
        assert_eq!(straggler_wait(ms(1), 3.0), MIN_WAIT, "at least the shortest wait");
    }
}
