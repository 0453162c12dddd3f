//! `[platform]`: presets that model FaaS platforms (limits and prices) and
//! the overrides a job may give.
//!
//! Prices and limits, as their providers published them (2026, us-east-1 or
//! the equivalent region, x86, on-demand, no free tier):
//! - aws-lambda: AWS Lambda pricing page — $0.20 per 1M requests,
//!   $0.0000166667 per GB-second, billed per 1 ms; default account
//!   concurrency 1,000; memory 128 MB–10,240 MB (1,769 MB buys one vCPU).
//! - gcp-functions: Google Cloud Functions (1st gen) pricing, Tier 1 —
//!   $0.40 per 1M invocations; compute at the 1 GB / 1.4 GHz tier,
//!   $0.0000165 per GB-second (memory and CPU together), billed in 100 ms
//!   increments; default max instances 3,000.
//! - azure-functions: Azure Functions Consumption plan pricing — $0.20 per
//!   1M executions, $0.000016 per GB-second, memory rounded up to 128 MB,
//!   at least 100 ms per execution, billed per 1 ms; 200 instances.
//! - local: this machine; no prices, no delays.

use serde::{Deserialize, Serialize};

use crate::units::Size;

/// A platform model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// This machine, modelling no delays or prices.
    Local,
    /// AWS Lambda.
    AwsLambda,
    /// Google Cloud Functions (1st gen).
    GcpFunctions,
    /// Azure Functions, Consumption plan.
    AzureFunctions,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [Preset::Local, Preset::AwsLambda, Preset::GcpFunctions, Preset::AzureFunctions];

    /// Its name in job files.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Local => "local",
            Preset::AwsLambda => "aws-lambda",
            Preset::GcpFunctions => "gcp-functions",
            Preset::AzureFunctions => "azure-functions",
        }
    }

    /// The memory that buys one full vCPU, where CPU is proportional to
    /// memory (Lambda).
    pub fn full_cpu_mb(self) -> Option<u64> {
        matches!(self, Preset::AwsLambda).then_some(1769)
    }

    /// The modelled cold start and keep-alive: the start of a new container
    /// (lognormal median and sigma) and how long an idle one lives.
    /// Assumptions, not measurements: Lambda's managed runtimes start in a
    /// few hundred ms and idle containers are reclaimed after minutes.
    pub fn container_model(self) -> ContainerModel {
        let ms = std::time::Duration::from_millis;
        match self {
            Preset::Local => ContainerModel { cold_start: ColdStart::Fixed(ms(0)), keep_alive: None, overhead: ms(0) },
            Preset::AwsLambda => ContainerModel {
                cold_start: ColdStart::LogNormal { median: ms(250), sigma: 0.5 },
                keep_alive: Some(ms(600_000)),
                overhead: ms(2),
            },
            Preset::GcpFunctions => ContainerModel {
                cold_start: ColdStart::LogNormal { median: ms(500), sigma: 0.6 },
                keep_alive: Some(ms(900_000)),
                overhead: ms(5),
            },
            Preset::AzureFunctions => ContainerModel {
                cold_start: ColdStart::LogNormal { median: ms(1000), sigma: 0.7 },
                keep_alive: Some(ms(1_200_000)),
                overhead: ms(5),
            },
        }
    }

    /// The longest an invocation may run: AWS Lambda 900 s, Cloud Functions
    /// (1st gen) 540 s, Azure Functions Consumption 600 s; none locally.
    pub fn timeout(self) -> Option<std::time::Duration> {
        let s = std::time::Duration::from_secs;
        match self {
            Preset::Local => None,
            Preset::AwsLambda => Some(s(900)),
            Preset::GcpFunctions => Some(s(540)),
            Preset::AzureFunctions => Some(s(600)),
        }
    }

    /// The largest event or response of one invocation: AWS Lambda 6 MB
    /// (synchronous invocations, 6,291,456 bytes), Cloud Functions (1st gen)
    /// 10 MB for HTTP requests, Azure Functions 100 MB; local takes Lambda's,
    /// since its Runtime API is Lambda's.
    pub fn payload_limit(self) -> u64 {
        match self {
            Preset::Local | Preset::AwsLambda => 6 << 20,
            Preset::GcpFunctions => 10 << 20,
            Preset::AzureFunctions => 100 << 20,
        }
    }

    /// The price of one object storage request of the write class (PUT,
    /// POST, LIST) and of the read class (GET, HEAD), in dollars, at list
    /// prices in a US region: S3 Standard (also for local runs, whose data
    /// is most often there) $0.005 and $0.0004 per 1,000; Cloud Storage
    /// Standard class A and B the same; Azure Blob hot tier $0.065 and
    /// $0.005 per 10,000.
    pub fn storage_prices(self) -> (f64, f64) {
        match self {
            Preset::Local | Preset::AwsLambda | Preset::GcpFunctions => (0.005 / 1e3, 0.0004 / 1e3),
            Preset::AzureFunctions => (0.065 / 1e4, 0.005 / 1e4),
        }
    }

    /// The preset's defaults.
    pub fn defaults(self) -> Pricing {
        let ms = std::time::Duration::from_millis;
        match self {
            Preset::Local => Pricing {
                memory_mb: 1769,
                price_per_request: 0.0,
                price_per_gb_second: 0.0,
                billing_granularity: ms(1),
                min_billed: ms(0),
                cpu_scale: 1.0,
            },
            Preset::AwsLambda => Pricing {
                memory_mb: 1769,
                price_per_request: 0.20 / 1e6,
                price_per_gb_second: 0.000_016_666_7,
                billing_granularity: ms(1),
                min_billed: ms(1),
                cpu_scale: 1.0,
            },
            Preset::GcpFunctions => Pricing {
                memory_mb: 1024,
                price_per_request: 0.40 / 1e6,
                price_per_gb_second: 0.000_016_5,
                billing_granularity: ms(100),
                min_billed: ms(100),
                cpu_scale: 1.0,
            },
            Preset::AzureFunctions => Pricing {
                memory_mb: 1536,
                price_per_request: 0.20 / 1e6,
                price_per_gb_second: 0.000_016,
                billing_granularity: ms(1),
                min_billed: ms(100),
                cpu_scale: 1.0,
            },
        }
    }
}

/// How invocations are billed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// Memory of each container, in MB.
    pub memory_mb: u64,
    /// Price of one request, in dollars.
    pub price_per_request: f64,
    /// Price of one GB-second of billed duration, in dollars.
    pub price_per_gb_second: f64,
    /// Billed durations are rounded up to a multiple of this.
    #[serde(with = "duration_ms")]
    pub billing_granularity: std::time::Duration,
    /// The shortest billed duration.
    #[serde(with = "duration_ms")]
    pub min_billed: std::time::Duration,
    /// How much slower CPU-bound work runs on the platform than on one
    /// core here: on Lambda, CPU is proportional to memory (1,769 MB buys
    /// one vCPU), so below that, durations are scaled up by this factor.
    pub cpu_scale: f64,
}

impl Pricing {
    /// The billed duration of an invocation that ran `d` here (scaled by
    /// `cpu_scale`).
    pub fn billed(&self, d: std::time::Duration) -> std::time::Duration {
        // In 64-bit nanoseconds (584 years): this runs for every invocation.
        let nanos = |d: std::time::Duration| {
            d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
        };
        let d = if self.cpu_scale > 1.0 { d.mul_f64(self.cpu_scale) } else { d };
        let g = nanos(self.billing_granularity).max(1);
        let rounded = nanos(d).div_ceil(g).saturating_mul(g);
        std::time::Duration::from_nanos(rounded).max(self.min_billed)
    }

    /// What an invocation that ran `d` costs, in dollars.
    pub fn cost(&self, d: std::time::Duration) -> f64 {
        self.bill(self.billed(d), 1)
    }

    /// GB-seconds of `billed` time at this memory.
    pub fn gb_seconds(&self, billed: std::time::Duration) -> f64 {
        billed.as_secs_f64() * self.memory_mb as f64 / 1024.0
    }

    /// What `requests` invocations billed `billed` in all cost, in dollars:
    /// the one formula for an invocation and for a run.
    pub fn bill(&self, billed: std::time::Duration, requests: u64) -> f64 {
        self.gb_seconds(billed) * self.price_per_gb_second + requests as f64 * self.price_per_request
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        Ok(std::time::Duration::from_secs_f64(f64::deserialize(d)? / 1000.0))
    }
}

/// How long a new container takes to start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColdStart {
    /// Always this long.
    Fixed(std::time::Duration),
    /// Lognormally distributed with this median and sigma (of the log).
    LogNormal {
        /// The median start time.
        median: std::time::Duration,
        /// The spread.
        sigma: f64,
    },
}

impl ColdStart {
    /// A start time for a uniform draw `u` in (0, 1) and a standard normal
    /// draw `z` (the caller's generator keeps runs reproducible).
    pub fn sample(&self, z: f64) -> std::time::Duration {
        match *self {
            ColdStart::Fixed(d) => d,
            ColdStart::LogNormal { median, sigma } => median.mul_f64((sigma * z).exp()),
        }
    }
}

/// Containers as the platform runs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerModel {
    /// A new container's start.
    pub cold_start: ColdStart,
    /// How long an idle container lives; `None`: for ever.
    pub keep_alive: Option<std::time::Duration>,
    /// The platform's own time per invocation (routing, marshalling).
    pub overhead: std::time::Duration,
}

/// The validated platform.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformPlan {
    /// The preset.
    pub preset: Preset,
    /// In-flight invocations.
    pub concurrency: usize,
    /// Billing.
    pub pricing: Pricing,
    /// How long an invocation may run before it is abandoned and counts as
    /// a failed attempt; `None`: no deadline.
    pub timeout: Option<std::time::Duration>,
    /// Containers: cold start, keep-alive, per-invocation overhead.
    pub containers: ContainerModel,
    /// Whether to inject the modelled cold starts and overheads into a
    /// real run, so a local run shows the shape and timing of a FaaS run.
    pub emulate: bool,
    /// Back up stragglers: start a second run of a task that runs far past
    /// its phase's median once most tasks are done.
    pub backups: bool,
    /// How far past the median (as a multiple of it) a task straggles.
    pub backup_after: f64,
    /// The fraction of a phase's tasks that must be done first.
    pub backup_when_done: f64,
    /// Retries of a failed invocation (not counting the first attempt).
    pub retries: u32,
    /// The first retry's delay; each later one doubles it (with jitter).
    pub backoff: std::time::Duration,
    /// Failed tasks tolerated, as a percentage of the tasks of their phase
    /// (`None`: not set). With neither this nor the count set, any failed
    /// task fails the job; with one or both, the job fails when a set
    /// threshold is exceeded.
    pub tolerated_failure_percent: Option<f64>,
    /// Failed tasks tolerated, as a count (`None`: not set).
    pub tolerated_failure_count: Option<u64>,
    /// The largest event or response of one invocation, in bytes.
    pub payload_limit: u64,
    /// The memory limit of each worker process, in bytes (`None`: no limit;
    /// set when the job gives platform.memory or a FaaS preset).
    pub memory_limit: Option<u64>,
}

/// Resolves a preset name, or says which ones exist.
pub fn preset(name: &str) -> Result<Preset, String> {
    Preset::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
        let known: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
        format!("unknown preset `{name}`, expected one of: {}", known.join(", "))
    })
}

/// Memory sizes as platforms take them: whole MB, from a size.
pub fn memory_mb(size: Size) -> u64 {
    size.bytes() / 1_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn billed_durations_round_up_to_the_granularity_after_scaling() {
        let ms = std::time::Duration::from_millis;
        let p = |granularity, min, cpu_scale| Pricing {
            memory_mb: 1024,
            price_per_request: 0.0,
            price_per_gb_second: 0.0,
            billing_granularity: granularity,
            min_billed: min,
            cpu_scale,
        };
        let lambda = p(ms(1), ms(0), 1.0);
        assert_eq!(lambda.billed(std::time::Duration::from_micros(150_200)), ms(151));
        assert_eq!(lambda.billed(ms(150)), ms(150));
        assert_eq!(lambda.billed(ms(0)), ms(0));
        let coarse = p(ms(100), ms(100), 1.0);
        assert_eq!(coarse.billed(ms(0)), ms(100));
        assert_eq!(coarse.billed(ms(101)), ms(200));
        let slower = p(ms(1), ms(0), 2.5);
        assert_eq!(slower.billed(ms(10)), ms(25));
        // A granularity of zero bills the nanoseconds.
        assert_eq!(p(ms(0), ms(0), 1.0).billed(std::time::Duration::from_nanos(7)), std::time::Duration::from_nanos(7));
    }

    use super::*;
    use std::time::Duration as D;

    #[test]
    fn billing_rounds_up_and_prices() {
        let aws = Preset::AwsLambda.defaults();
        assert_eq!(aws.billed(D::from_micros(1500)), D::from_millis(2));
        let gcp = Preset::GcpFunctions.defaults();
        assert_eq!(gcp.billed(D::from_millis(101)), D::from_millis(200));
        assert_eq!(gcp.billed(D::from_millis(1)), D::from_millis(100));
        let azure = Preset::AzureFunctions.defaults();
        assert_eq!(azure.billed(D::from_millis(3)), D::from_millis(100));
        // 1 s at 1,769 MB on Lambda: 1.7275390625 GB-s.
        let one = aws.cost(D::from_secs(1));
        assert!((one - (1769.0 / 1024.0 * 0.000_016_666_7 + 0.0000002)).abs() < 1e-12, "{one}");
        assert_eq!(Preset::Local.defaults().cost(D::from_secs(5)), 0.0);
        // At 512 MB Lambda gives 512/1769 of a vCPU: 10 ms of CPU here
        // bills as 35 ms there.
        let small = Pricing { memory_mb: 512, cpu_scale: 1769.0 / 512.0, ..aws };
        assert_eq!(small.billed(D::from_millis(10)), D::from_millis(35));
        assert_eq!(ColdStart::Fixed(D::from_millis(7)).sample(1.3), D::from_millis(7));
        let ln = ColdStart::LogNormal { median: D::from_millis(100), sigma: 0.5 };
        assert_eq!(ln.sample(0.0), D::from_millis(100));
        assert!(ln.sample(1.0) > D::from_millis(160) && ln.sample(-1.0) < D::from_millis(61));
        assert_eq!(preset("aws-lambda"), Ok(Preset::AwsLambda));
        assert_eq!(
            preset("heroku").unwrap_err(),
            "unknown preset `heroku`, expected one of: local, aws-lambda, gcp-functions, azure-functions"
        );
    }
}
