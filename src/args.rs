//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use fanout_jobs::Override;

/// Run data-parallel batch jobs the way serverless platforms run them.
#[derive(Debug, Parser)]
#[command(name = "fanout", version, about, max_term_width = 100)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job: split, fan out, shuffle, gather, commit.
    #[command(override_usage = "fanout run [OPTIONS] <JOB>\n       fanout run --resume <RUN_DIR> [OPTIONS]")]
    Run(RunArgs),
    /// Check a job file and report every problem with its location.
    Validate(JobArgs),
    /// Show what a job would do: inputs, splits, stages, output.
    Plan(JobArgs),
    /// Work with datasets.
    Datasets {
        /// What to do with datasets.
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// List the builtin functions, or explain one.
    Functions {
        /// A function to explain in full.
        name: Option<String>,
    },
    /// Print a run's invocation records as JSON lines (they are kept in
    /// `invocations.arrows`, an Arrow IPC stream).
    Records {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// List the runs kept under a runs directory: id, job, status, start,
    /// wall time, invocations, cost.
    Runs {
        /// The runs directory.
        #[arg(default_value = ".fanout/runs")]
        dir: PathBuf,
        /// One JSON object per run instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's invocations as a Chrome trace (Perfetto,
    /// chrome://tracing): a track per worker slot, a slice per invocation,
    /// a counter per stage of invocations in flight.
    Trace {
        /// The run directory.
        run_dir: PathBuf,
        /// Where to write it (default RUN_DIR/trace.json; gzip when it
        /// ends in .gz).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Predict a job's time and cost by simulating it (at any scale):
    /// the engine's scheduling policy in simulated time, over durations
    /// calibrated on a real run of the job.
    Simulate(SimulateArgs),
    /// Write a run's report: one self-contained HTML page (inline SVG,
    /// nothing fetched) with the summary, a timeline of the worker slots,
    /// concurrency, latency and throughput over time, cost per stage, the
    /// slowest invocations and the failures. Given two runs, puts them side
    /// by side with the ratio of each figure (and prints that table).
    Report {
        /// The run directory; a second one to compare it with.
        #[arg(required = true, num_args = 1..=2, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Where to write it (default RUN_DIR/report.html; for two runs,
        /// the second's compare.html).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Serve the builtin functions over HTTP, for the `http` backend of
    /// another fanout: `POST /functions/NAME` and the Lambda Invoke API
    /// (`POST /2015-03-31/functions/NAME/invocations`), `GET /healthz`.
    Serve(ServeArgs),
    /// Benchmark fanout on the built-in suite (word count, csv group-by,
    /// pi, dispatch, exec, lambda) in interleaved rounds; with --compare,
    /// against the peers found on this machine (the hand-written rayon
    /// limit, DuckDB, Polars, GNU parallel). Prints a markdown table and
    /// writes bench.md, bench.json and bench.html.
    Bench(BenchArgs),
}

/// `fanout bench`.
#[derive(Debug, ClapArgs)]
pub struct BenchArgs {
    /// A CI-sized pass of seconds: small inputs, one round unless --runs.
    #[arg(long)]
    pub quick: bool,
    /// Also run the peers found on this machine, in the same rounds; a
    /// missing one is reported as skipped.
    #[arg(long)]
    pub compare: bool,
    /// Thread counts to sweep, e.g. 1,2,4,8,16 (default: the cores); the
    /// page plots each program's speedup.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub threads: Vec<usize>,
    /// Rounds per workload (default 3; 1 with --quick).
    #[arg(long, value_name = "N")]
    pub runs: Option<u32>,
    /// Only these workloads: wordcount, groupby, pi, dispatch, exec, lambda, stream.
    #[arg(long, value_delimiter = ',', value_name = "W,...")]
    pub only: Vec<String>,
    /// The word count's text size (default 1GiB; 8MiB with --quick).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<fanout_jobs::units::Size>,
    /// Where to write bench.md, bench.json, bench.html and the jobs
    /// (default `.fanout/bench/<id>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print bench.json instead of the markdown table.
    #[arg(long)]
    pub json: bool,
    /// Where the generated inputs are kept between runs.
    #[arg(long, value_name = "DIR", default_value = ".fanout/cache")]
    pub cache_dir: PathBuf,
}

/// `fanout serve`.
#[derive(Debug, ClapArgs)]
pub struct ServeArgs {
    /// Where to listen (default 127.0.0.1:8080, or 0.0.0.0:$PORT when
    /// PORT is set, as Cloud Run and Knative set it).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Invocations at once; one more is answered 429 (default: the cores).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// A file holding the bearer token requests must carry (required
    /// when listening beyond the loopback interface).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The largest event accepted (413 past it).
    #[arg(long, value_name = "SIZE", default_value = "6MiB")]
    pub payload_limit: fanout_jobs::units::Size,
    /// Also serve the external functions (exec, lambda, ...) of this job
    /// file, each under its stage's name.
    #[arg(long, value_name = "JOB")]
    pub job: Option<PathBuf>,
}

/// A job file and its overrides.
#[derive(Debug, ClapArgs)]
pub struct JobArgs {
    /// The job file (TOML, or JSON if it ends in .json).
    pub job: PathBuf,
    /// Override a field of the job, e.g. --set platform.concurrency=4.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<Override>,
    /// Where generated inputs are kept.
    #[arg(long, value_name = "DIR", default_value = ".fanout/cache")]
    pub cache_dir: PathBuf,
}

/// When to draw progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// When stderr is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `fanout run`.
#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// The job file (TOML, or JSON if it ends in .json).
    #[arg(required_unless_present = "resume")]
    pub job: Option<PathBuf>,
    /// Override a field of the job, e.g. --set platform.concurrency=4.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "resume")]
    pub set: Vec<Override>,
    /// Where generated inputs are kept.
    #[arg(long, value_name = "DIR", default_value = ".fanout/cache")]
    pub cache_dir: PathBuf,
    /// Resume an interrupted run: its completed tasks are taken from its
    /// journal, the rest are run, with the job it was started with.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["job", "run_dir"])]
    pub resume: Option<PathBuf>,
    /// Do not journal completed tasks (faster on tiny tasks; no --resume).
    #[arg(long)]
    pub no_journal: bool,
    /// When a stream stops by itself: `idle=5s` (no new record for 5 s),
    /// `records=N`, `time=10m`, or several, comma separated. The input
    /// then counts as ended: every open window is committed. A resumed
    /// stream stops by the --until it was started with.
    #[arg(long, value_name = "SPEC", conflicts_with = "resume")]
    pub until: Option<fanout_engine::Until>,
    /// The run directory (default: `.fanout/runs/<id>`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Progress bars on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print summary.json to stdout instead of the summary table and preview.
    #[arg(long)]
    pub json: bool,
    /// Write the run's report (RUN_DIR/report.html, as `fanout report`
    /// does) when it ends, whether it succeeded or failed.
    #[arg(long)]
    pub report: bool,
    /// Rows of the output to print when the run succeeds.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub show: usize,
    /// Inject faults at these rates, e.g. "fail=0.05,panic=0.01,seed=7".
    #[arg(long, value_name = "SPEC")]
    pub chaos: Option<fanout_engine::Chaos>,
    /// Shuffle data held in memory before it spills to the run directory.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub shuffle_memory: fanout_jobs::units::Size,
}

/// `fanout simulate`.
#[derive(Debug, ClapArgs)]
pub struct SimulateArgs {
    /// The job file (TOML, or JSON if it ends in .json).
    pub job: PathBuf,
    /// Override a field of the job, e.g. --set platform.concurrency=1000.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<Override>,
    /// A run of the job (its run directory) whose invocations calibrate
    /// the durations: run it at a small scale, at concurrency 1, over a
    /// range of chunk sizes (`--set input.chunk_size=64KiB..4MiB`), then
    /// simulate at any. Given again, the runs' invocations are pooled; runs
    /// at higher concurrencies teach how invocations on this machine slow
    /// each other (used for local and emulated simulations).
    #[arg(long, value_name = "RUN_DIR")]
    pub from: Vec<PathBuf>,
    /// A run of the job whose invocations are replayed: each simulated
    /// invocation takes the time that the run's own invocation of the same
    /// task, step and attempt took (one it did not make, the calibrated
    /// model's). With the run's settings, the simulation decides what the
    /// run decided; with others, what the same work would have done.
    /// Calibrates on the run too, unless --from is given.
    #[arg(long, value_name = "RUN_DIR")]
    pub replay: Option<PathBuf>,
    /// A stage's durations, given instead of calibrated:
    /// STAGE[.PHASE]=TIME, a time per invocation and/or per MiB read with
    /// an optional lognormal spread (20ms, 1ms+4ms/MiB, 20ms~0.3). With
    /// one for every stage, no --from is needed.
    #[arg(long, value_name = "STAGE=TIME")]
    pub durations: Vec<GivenArg>,
    /// Seeds to simulate: the wall time's p5–p95 over them.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub seeds: u32,
    /// Inject faults at these rates, as `fanout run --chaos` does.
    #[arg(long, value_name = "SPEC")]
    pub chaos: Option<fanout_engine::Chaos>,
    /// The run directory to write (default: `.fanout/runs/<id>`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Print summary.json (with --sweep, sweep.json) to stdout instead of
    /// the table.
    #[arg(long)]
    pub json: bool,
    /// Simulate every combination of these values of a field, e.g.
    /// --sweep platform.concurrency=10,100,1000 (any field, repeated for
    /// more): prints a table of time and cost per configuration with the
    /// Pareto front marked, and writes sweep.csv and sweep.json.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Vec<Sweep>,
    /// Pick the cheapest configuration whose wall time meets this at p95
    /// (with --sweep, among its points); exit 1 if none does.
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<fanout_jobs::units::Duration>,
    /// Where a sweep writes sweep.csv and sweep.json (default
    /// `.fanout/sweeps/<id>`).
    #[arg(long, value_name = "DIR", requires = "sweep")]
    pub out: Option<PathBuf>,
}

/// A `--durations STAGE[.PHASE]=TIME`.
#[derive(Debug, Clone)]
pub struct GivenArg {
    /// The stage's name.
    pub stage: String,
    /// map, combine or reduce; none: all its phases.
    pub phase: Option<String>,
    /// Its durations.
    pub durations: fanout_engine::simulate::GivenDurations,
}

impl std::str::FromStr for GivenArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, spec) =
            s.split_once('=').ok_or_else(|| format!("--durations {s}: expected STAGE=TIME, e.g. count=1ms+4ms/MiB"))?;
        let key = key.trim();
        let (stage, phase) = match key.rsplit_once('.') {
            Some((stage, phase @ ("map" | "combine" | "reduce"))) => (stage, Some(phase.to_string())),
            _ => (key, None),
        };
        let durations = spec.parse().map_err(|e| format!("--durations {s}: {e}"))?;
        Ok(GivenArg { stage: stage.to_string(), phase, durations })
    }
}

/// A `--sweep KEY=V1,V2,...`: a field and the values to simulate it at.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The field, as `--set` names it.
    pub key: String,
    /// Each value as a `--set KEY=VALUE`.
    pub values: Vec<Override>,
}

impl std::str::FromStr for Sweep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, list) = s
            .split_once('=')
            .ok_or_else(|| format!("--sweep {s}: expected KEY=V1,V2,..., e.g. platform.concurrency=10,100,1000"))?;
        let mut values = Vec::new();
        for v in split_top_level(list) {
            if v.trim().is_empty() {
                return Err(format!("--sweep {s}: an empty value"));
            }
            let set: Override =
                format!("{key}={}", v.trim()).parse().map_err(|e: String| e.replacen("--set", "--sweep", 1))?;
            values.push(set);
        }
        Ok(Sweep { key: key.trim().to_string(), values })
    }
}

/// Splits at the commas outside brackets and quotes (a value may be a
/// TOML list or a quoted string).
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quote, mut start) = (Vec::new(), 0i32, None, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Dataset subcommands.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Generate a deterministic synthetic dataset.
    Gen(GenArgs),
}

/// `fanout datasets gen`.
#[derive(Debug, ClapArgs)]
#[command(group = clap::ArgGroup::new("amount").required(true).args(["size", "rows"]))]
pub struct GenArgs {
    /// text (Zipf words), csv (events), jsonl (nested events) or parquet (events).
    pub kind: fanout_datasets::generator::GenKind,
    /// About this much data, e.g. 256MiB (never more, for text, csv and jsonl).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<fanout_jobs::units::Size>,
    /// Exactly this many records.
    #[arg(long, value_name = "N")]
    pub rows: Option<u64>,
    /// The seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The file to write (replaced atomically).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_values_split_outside_lists_and_quotes() {
        let s: Sweep = "platform.memory=512MB, 1769MB,3008MB".parse().unwrap();
        assert_eq!(s.key, "platform.memory");
        assert_eq!(s.values.iter().map(|v| v.raw.as_str()).collect::<Vec<_>>(), ["512MB", "1769MB", "3008MB"]);
        let s: Sweep = "stage.0.params.sum=[\"a\",\"b\"],[\"c\"],\"x,y\"".parse().unwrap();
        assert_eq!(
            s.values.iter().map(|v| v.raw.as_str()).collect::<Vec<_>>(),
            ["[\"a\",\"b\"]", "[\"c\"]", "\"x,y\""]
        );
        assert!("platform.concurrency".parse::<Sweep>().unwrap_err().contains("expected KEY=V1,V2"));
        assert!("platform.concurrency=1,,2".parse::<Sweep>().unwrap_err().contains("an empty value"));
    }
}
