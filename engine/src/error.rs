//! Engine errors: what failed, and where (stage, task, input location).

use std::path::PathBuf;

/// A problem found while compiling a job against its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// The stage at fault (0-based), or `None` for the output.
    pub stage: Option<usize>,
    /// The parameter at fault, when known.
    pub param: Option<String>,
    /// The job file's field at fault, by its keys, when it is neither a
    /// stage nor the output's sort (`["stream", "window", "time"]`).
    pub field: Option<Vec<&'static str>>,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    pub(crate) fn stage(stage: usize, param: Option<String>, message: impl Into<String>) -> Self {
        CompileError { stage: Some(stage), param, field: None, message: message.into() }
    }

    pub(crate) fn output_sort(message: impl Into<String>) -> Self {
        CompileError { stage: None, param: None, field: None, message: message.into() }
    }

    pub(crate) fn field(keys: &[&'static str], message: impl Into<String>) -> Self {
        CompileError { stage: None, param: None, field: Some(keys.to_vec()), message: message.into() }
    }
}

/// A failed task: the stage, the task and its input, and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// The stage's name.
    pub stage: String,
    /// map, combine or reduce.
    pub phase: crate::step::StepKind,
    /// The task id.
    pub task: u64,
    /// The attempt that failed last.
    pub attempt: u32,
    /// The task's input: a split, or a partition.
    pub input: String,
    /// The function's error (or panic message).
    pub message: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage `{}` ({}) failed on task {} ({}), attempt {}: {}",
            self.stage,
            self.phase,
            self.task,
            self.input,
            self.attempt,
            quoted(&self.message)
        )
    }
}

/// A function's error as one error: its lines after the first quoted
/// under it (`  | ...`, as the end of its stderr already is), and control
/// characters escaped, so that what a function wrote can neither pass for
/// more errors nor move the terminal's cursor.
fn quoted(message: &str) -> String {
    let escape = |line: &str| -> String {
        line.chars()
            .map(|c| match c {
                '\r' => "\\r".to_string(),
                c if c.is_control() && c != '\t' => format!("\\x{:02x}", c as u32),
                c => c.to_string(),
            })
            .collect()
    };
    let mut lines = message.trim_end().lines();
    let mut out = escape(lines.next().unwrap_or_default());
    for line in lines {
        out.push_str("\n  | ");
        out.push_str(&escape(line.strip_prefix("  | ").unwrap_or(line)));
    }
    out
}

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input cannot be listed, opened or read (bad records included).
    #[error("{0}")]
    Input(fanout_datasets::Error),
    /// The job does not fit its data (a stage's parameters, the output sort).
    #[error("{}", .0.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; "))]
    Compile(Vec<CompileError>),
    /// The output exists and the job does not say to overwrite it.
    #[error("the output {} exists; remove it or set output.mode = \"overwrite\" (--set output.mode=overwrite)", .0.display())]
    OutputExists(PathBuf),
    /// A task failed.
    #[error("{0}")]
    Task(Box<TaskFailure>),
    /// More tasks failed than the job tolerates.
    #[error(
        "{failed} of {tasks} tasks failed, more than the tolerated {percent}% (failures.jsonl in the run directory lists them)"
    )]
    TooManyFailures {
        /// Failed tasks.
        failed: u64,
        /// Tasks in the phase.
        tasks: u64,
        /// The tolerated percentage.
        percent: f64,
    },
    /// More input records could not be read than `max_bad_records`
    /// tolerates.
    #[error(
        "{count} bad input records, more than max_bad_records = {limit}; the last: {last}{}",
        rejects.as_ref().map(|p| format!(" ({} lists them)", p.display())).unwrap_or_default()
    )]
    TooManyBadRecords {
        /// Bad records counted.
        count: u64,
        /// The limit, as written.
        limit: String,
        /// The last bad record: where, and what is wrong with it.
        last: String,
        /// The rejects file, when rejecting.
        rejects: Option<PathBuf>,
    },
    /// Writing the run directory, the shuffle or the output failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A --chaos setting the job cannot honour.
    #[error("--chaos: {0}")]
    Chaos(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(fanout_datasets::Error),
    /// Another process is using the run directory (running or resuming
    /// the run in it).
    #[error("the run in {} is in use by process {pid}", dir.display())]
    InUse {
        /// The run directory.
        dir: PathBuf,
        /// The process holding its lock, as it wrote it (`unknown` if it
        /// had not yet).
        pid: String,
    },
    /// The input of a resumed run is not what the run read before: the
    /// files that changed, each with how.
    #[error(
        "the input changed since the run began, so resuming it would mix old and new data: {}{}; start a new run",
        .0.iter().take(10).cloned().collect::<Vec<_>>().join("; "),
        if .0.len() > 10 { "; and more" } else { "" }
    )]
    InputChanged(Vec<String>),
    /// A stream could not go on: a stage failed on a batch, or a record
    /// had no event time.
    #[error("{0}")]
    Stream(String),
    /// A signal (Ctrl-C, SIGTERM) interrupted the run.
    #[error("interrupted by {}", signal_name(*.signal))]
    Interrupted {
        /// The signal's number.
        signal: i32,
    },
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".to_string(),
        15 => "SIGTERM".to_string(),
        1 => "SIGHUP".to_string(),
        n => format!("signal {n}"),
    }
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io { path: path.into(), source }
    }
}
