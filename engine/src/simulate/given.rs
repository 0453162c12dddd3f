//! Durations given rather than calibrated (`--durations
//! STAGE[.PHASE]=SPEC`): a time per invocation, a time per MiB read and a
//! lognormal spread, for a job no run has calibrated yet, or to replace
//! what a calibration run taught about one step.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::curve::Curve;
use super::model::{Calibrated, Calibration, StepModel};
use crate::policy::standard_normal;

/// A step's time: `per_invocation + per_mib × MiB in`, times a lognormal
/// factor of median 1 and spread `sigma` (0: always the same), on one core
/// here (a platform giving less of a CPU scales it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GivenDurations {
    /// The time of an invocation whatever it reads.
    pub per_invocation: Duration,
    /// The time per MiB it reads.
    pub per_mib: Duration,
    /// The lognormal spread of the log of the time.
    pub sigma: f64,
}

impl FromStr for GivenDurations {
    type Err = String;

    /// `20ms`, `1ms+4ms/MiB`, `4ms/MiB`, each optionally `~0.3` (sigma).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("`{s}`: {why}; expected a time per invocation and/or per MiB, e.g. 20ms, 1ms+4ms/MiB or 20ms~0.3")
        };
        let (times, sigma) = match s.split_once('~') {
            Some((t, sg)) => (t, sg.trim().parse::<f64>().map_err(|_| bad("the spread after ~ is not a number"))?),
            None => (s, 0.0),
        };
        if !(0.0..=5.0).contains(&sigma) {
            return Err(bad("the spread after ~ must be between 0 and 5"));
        }
        let (mut per_invocation, mut per_mib) = (Duration::ZERO, Duration::ZERO);
        for part in times.split('+') {
            let part = part.trim();
            let parse = |d: &str| humantime::parse_duration(d.trim()).map_err(|e| bad(&format!("`{}`: {e}", d.trim())));
            match part.strip_suffix("/MiB") {
                Some(d) => per_mib = parse(d)?,
                None => per_invocation = parse(part)?,
            }
        }
        Ok(GivenDurations { per_invocation, per_mib, sigma })
    }
}

/// Residuals kept for a spread.
const DRAWS: u64 = 4096;

impl StepModel {
    /// The model of given durations: output as much as input (nothing
    /// tells otherwise), no cold start beyond the platform's.
    pub(crate) fn given(g: &GivenDurations) -> StepModel {
        let mut residuals: Vec<f64> = if g.sigma > 0.0 {
            (0..DRAWS).map(|i| (g.sigma * standard_normal(i ^ 0x5EED)).exp()).collect()
        } else {
            Vec::new()
        };
        residuals.sort_by(f64::total_cmp);
        StepModel {
            a_us: g.per_invocation.as_secs_f64() * 1e6,
            b_us_per_byte: g.per_mib.as_secs_f64() * 1e6 / (1u64 << 20) as f64,
            residuals,
            cold_extra_us: Vec::new(),
            bytes_out: Curve::identity(),
            records_out: Curve::identity(),
            stretch: Default::default(),
        }
    }
}

impl Calibrated {
    /// Nothing calibrated: every step's durations must be given.
    pub fn none() -> Calibrated {
        let cal = Calibration {
            steps: Default::default(),
            records_per_byte: 0.0,
            head_us: 0.0,
            tail_us: 0.0,
            gap_us: 0.0,
            gap_stretch: Default::default(),
            cpu_share: None,
            cores: 1.0,
            cpu_scale: 1.0,
            storage: None,
            shuffled: Default::default(),
        };
        Calibrated { cal, from: PathBuf::from("--durations"), given: Vec::new(), replay: None }
    }

    /// Gives `stage`'s durations (of its `phase`, or of all its phases),
    /// in place of what was calibrated.
    pub fn give(&mut self, stage: &str, phase: Option<&str>, durations: &GivenDurations) {
        self.given.push((stage.to_string(), phase.map(str::to_string), StepModel::given(durations)));
    }

    /// The model of `stage`'s `phase`: given (for the phase, then for the
    /// stage), else calibrated.
    pub(super) fn model(&self, stage: &str, phase: &str) -> Option<&StepModel> {
        let given = |p: Option<&str>| self.given.iter().rev().find(|g| g.0 == stage && g.1.as_deref() == p);
        given(Some(phase))
            .or_else(|| given(None))
            .map(|g| &g.2)
            .or_else(|| self.cal.steps.get(&(stage.to_string(), phase.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_written() {
        let g: GivenDurations = "1ms+4ms/MiB~0.3".parse().unwrap();
        assert_eq!(
            g,
            GivenDurations { per_invocation: Duration::from_millis(1), per_mib: Duration::from_millis(4), sigma: 0.3 }
        );
        let m = StepModel::given(&g);
        assert!((m.warm_us(2 << 20, 0.5) - 9000.0).abs() < 9000.0 * 0.05, "{}", m.warm_us(2 << 20, 0.5));
        let g: GivenDurations = "20ms".parse().unwrap();
        assert_eq!(StepModel::given(&g).warm_us(12345, 0.9), 20_000.0);
        assert!("fast".parse::<GivenDurations>().unwrap_err().contains("expected a time per invocation"));
        assert!("20ms~x".parse::<GivenDurations>().unwrap_err().contains("not a number"));
    }
}
