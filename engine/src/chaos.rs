//! Chaos: faults injected on purpose, at given rates, so the fault
//! handling is exercised. `--chaos "fail=0.05,panic=0.01,seed=7"`.
//!
//! Each invocation draws from a hash of (seed, stage, phase, task,
//! attempt), so a run's faults are the same every time and a retry draws
//! afresh. An injected fault replaces the invocation: `fail` returns a
//! transient error, `panic` panics inside the invocation (and is caught,
//! as any panic is), `timeout` hangs until the invocation's deadline (so it
//! needs `platform.timeout`), `straggle=RATExN` runs the function and then
//! waits so the invocation takes N times as long.

use std::str::FromStr;

/// Fault rates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Chaos {
    /// Probability that an invocation fails with a transient error.
    pub fail: f64,
    /// Probability that an invocation panics.
    pub panic: f64,
    /// Probability that an invocation hangs past its deadline (needs
    /// `platform.timeout`).
    pub timeout: f64,
    /// Probability that an invocation straggles: takes `slowdown` times
    /// as long as it would.
    pub straggle: f64,
    /// How much slower a straggler is.
    pub slowdown: f64,
    /// The seed of the draws.
    pub seed: u64,
}

/// What chaos does to one invocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Nothing: the function runs.
    None,
    /// A transient error instead of the call.
    Fail,
    /// A panic instead of the call.
    Panic,
    /// A hang until the deadline instead of the call.
    Timeout,
    /// The call, then a wait: the invocation takes this many times longer.
    Straggle(f64),
}

impl Chaos {
    /// The fault for an invocation.
    pub fn draw(&self, stage: usize, phase: usize, task: u64, attempt: u32) -> Fault {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&(stage as u64).to_le_bytes());
        key[16..20].copy_from_slice(&(phase as u32).to_le_bytes());
        key[20..28].copy_from_slice(&task.to_le_bytes());
        key[28..].copy_from_slice(&attempt.to_le_bytes());
        let u = (xxhash_rust::xxh3::xxh3_64(&key) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.fail {
            Fault::Fail
        } else if u < self.fail + self.panic {
            Fault::Panic
        } else if u < self.fail + self.panic + self.timeout {
            Fault::Timeout
        } else if u < self.fail + self.panic + self.timeout + self.straggle {
            Fault::Straggle(self.slowdown)
        } else {
            Fault::None
        }
    }
}

impl FromStr for Chaos {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut c = Chaos::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("`{part}` is not key=value"))?;
            let rate = || -> Result<f64, String> {
                let r: f64 = v.parse().map_err(|_| format!("{k}={v}: not a number"))?;
                if (0.0..=1.0).contains(&r) { Ok(r) } else { Err(format!("{k}={v}: a rate is between 0 and 1")) }
            };
            match k {
                "fail" => c.fail = rate()?,
                "panic" => c.panic = rate()?,
                "seed" => c.seed = v.parse().map_err(|_| format!("seed={v}: not a whole number"))?,
                "timeout" => c.timeout = rate()?,
                "straggle" => {
                    // straggle=RATE or straggle=RATExSLOWDOWN (default 10 times slower).
                    let (r, x) = v.split_once('x').unwrap_or((v, "10"));
                    c.straggle = r.parse().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                        format!("straggle={v}: expected a rate between 0 and 1, optionally xSLOWDOWN")
                    })?;
                    c.slowdown = x
                        .parse()
                        .ok()
                        .filter(|x: &f64| *x >= 1.0)
                        .ok_or_else(|| format!("straggle={v}: the slowdown after x is a number of at least 1"))?;
                }
                other => {
                    return Err(format!(
                        "unknown fault `{other}`, expected one of: fail, panic, timeout, straggle, seed"
                    ));
                }
            }
        }
        if c.fail + c.panic + c.timeout + c.straggle > 1.0 {
            return Err("the fault rates add up to more than 1".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_parses_and_draws_at_its_rates() {
        let c: Chaos = "fail=0.1, panic=0.05,seed=7".parse().unwrap();
        assert_eq!(c, Chaos { fail: 0.1, panic: 0.05, timeout: 0.0, straggle: 0.0, slowdown: 0.0, seed: 7 });
        let draws: Vec<Fault> = (0..20_000).map(|t| c.draw(0, 0, t, 1)).collect();
        let fails = draws.iter().filter(|f| **f == Fault::Fail).count() as f64 / 20_000.0;
        let panics = draws.iter().filter(|f| **f == Fault::Panic).count() as f64 / 20_000.0;
        assert!((fails - 0.1).abs() < 0.01 && (panics - 0.05).abs() < 0.01, "{fails} {panics}");
        assert_eq!(c.draw(1, 0, 5, 2), c.draw(1, 0, 5, 2));
        assert!("fail=2".parse::<Chaos>().unwrap_err().contains("between 0 and 1"));
        let s: Chaos = "straggle=0.02x20".parse().unwrap();
        assert_eq!((s.straggle, s.slowdown), (0.02, 20.0));
        assert_eq!("straggle=0.1".parse::<Chaos>().unwrap().slowdown, 10.0);
        assert!("straggle=0.1x0.5".parse::<Chaos>().is_err());
        assert_eq!("timeout=0.25".parse::<Chaos>().unwrap().timeout, 0.25);
        assert!("boom=1".parse::<Chaos>().unwrap_err().starts_with("unknown fault `boom`"));
    }
}
