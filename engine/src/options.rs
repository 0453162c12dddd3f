//! How a run behaves, not what it computes (where it keeps its files,
//! how it is stopped, where progress goes), and what it gives back: the
//! options and results of batch runs and streams alike.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chaos::Chaos;
use crate::clock::{Clock, SystemClock};
use crate::error::EngineError;
use crate::progress::Progress;
use crate::stop::Stop;
use crate::summary::Summary;

/// How a run behaves (not what it computes): where it keeps its files, how
/// much memory the shuffle may hold, where progress goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory; `None` makes `.fanout/runs/<id>` under the
    /// current directory.
    pub run_dir: Option<PathBuf>,
    /// Where generated inputs are kept.
    pub cache_dir: PathBuf,
    /// Bytes of shuffle data held in memory before spilling to disk.
    pub shuffle_memory: u64,
    /// Live counters for a progress display.
    pub progress: Arc<Progress>,
    /// Faults to inject.
    pub chaos: Option<Chaos>,
    /// Journal completed tasks and their outputs (fsync'ed), so the run can
    /// be resumed; off trades that for speed on tiny tasks.
    pub journal: bool,
    /// Resume the run in `run_dir`: completed tasks are not run again.
    pub resume: bool,
    /// Interrupts runs from outside (Ctrl-C, SIGTERM): a run stops when it
    /// is interrupted; its own failures do not set it.
    pub stop: Arc<Stop>,
    /// The clock the scheduler reads (a real run: [`SystemClock`]).
    pub clock: Arc<dyn Clock>,
    /// When a stream stops by itself (`--until`); none: at a signal, or
    /// when its input ends.
    pub until: Option<Until>,
    /// Whether a stream says how it is going on stderr, once a second.
    pub live: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_dir: None,
            cache_dir: PathBuf::from(".fanout/cache"),
            shuffle_memory: 256 << 20,
            progress: Progress::new(),
            chaos: None,
            journal: true,
            resume: false,
            stop: Stop::new(),
            clock: Arc::new(SystemClock),
            until: None,
            live: false,
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its directory.
    pub run_dir: PathBuf,
    /// What `summary.json` holds.
    pub summary: Summary,
    /// The run had finished before: `--resume` found nothing to do, and
    /// `summary` is what it wrote then.
    pub finished_before: bool,
    /// A signal (its number) that came once the output's commit had begun:
    /// the commit went on to the end, and the output is complete.
    pub signal_in_commit: Option<i32>,
}

/// A run that failed, and its directory if it got as far as making one.
#[derive(Debug)]
pub struct RunFailure {
    /// What went wrong.
    pub error: EngineError,
    /// The run directory, with the records and summary of the failed run.
    pub run_dir: Option<PathBuf>,
}

impl From<EngineError> for RunFailure {
    fn from(error: EngineError) -> Self {
        RunFailure { error, run_dir: None }
    }
}

/// When a stream stops by itself, for batch-like use and tests: after a
/// time without a new record (`idle=5s`), after so many records
/// (`records=N`), or after a time (`time=10m`). Any of them, comma
/// separated; the first met stops it. The input then counts as ended:
/// every open window is committed, and the run succeeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Until {
    /// Stop after this long without a new record.
    #[serde(default, with = "humantime_serde_opt")]
    pub idle: Option<Duration>,
    /// Stop after this many records (over the whole stream, resumes
    /// included).
    #[serde(default)]
    pub records: Option<u64>,
    /// Stop after this long (from the start of this run or resume).
    #[serde(default, with = "humantime_serde_opt")]
    pub time: Option<Duration>,
}

impl FromStr for Until {
    type Err = String;

    fn from_str(s: &str) -> Result<Until, String> {
        let mut until = Until::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("`{part}`: expected idle=5s, records=N or time=10m"))?;
            let duration = || match humantime::parse_duration(value.trim()) {
                Ok(d) if d.is_zero() => Err(format!("`{part}`: must be longer than 0s")),
                Ok(d) => Ok(Some(d)),
                Err(_) if !value.trim().is_empty() && value.trim().bytes().all(|b| b.is_ascii_digit()) => {
                    Err(format!("`{part}`: give the unit, e.g. {}={}s", key.trim(), value.trim()))
                }
                Err(humantime::DurationError::UnknownUnit { .. } | humantime::DurationError::NumberExpected(_)) => {
                    Err(format!("`{part}`: a duration is a number and a unit, e.g. {}=5s", key.trim()))
                }
                Err(e) => Err(format!("`{part}`: {e}")),
            };
            let twice = || format!("`{}` is given twice", key.trim());
            match key.trim() {
                "idle" if until.idle.is_some() => return Err(twice()),
                "time" if until.time.is_some() => return Err(twice()),
                "records" if until.records.is_some() => return Err(twice()),
                "idle" => until.idle = duration()?,
                "time" => until.time = duration()?,
                "records" => match value.trim().parse::<u64>() {
                    Ok(0) => return Err(format!("`{part}`: must be at least 1")),
                    Ok(n) => until.records = Some(n),
                    Err(_) => return Err(format!("`{part}`: not a whole number")),
                },
                other => return Err(format!("`{other}`: expected idle, records or time")),
            }
        }
        if until == Until::default() {
            return Err("expected idle=5s, records=N or time=10m".into());
        }
        Ok(until)
    }
}

/// Optional durations as text (`"5s"`) in the run directory's files.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}
