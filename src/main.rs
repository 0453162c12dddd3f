//! The `fanout` command line: parse arguments, run a command, map the
//! outcome to an exit code (0 success, 1 the job failed, 2 an invalid job
//! file or usage). The work itself lives in the library crates.

/// `eprintln!` that does not panic when stderr is gone (a closed pipe):
/// the command goes on, and its exit code says how it ended.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that does not panic when stderr is gone.
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod bench;
mod datasets;
mod functions;
mod plan;
mod records;
mod report;
mod run;
mod runs;
mod serve;
mod signals;
mod simulate;
mod trace;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Args, Command, DatasetsCommand};

/// A run allocates a little per invocation on every worker at once;
/// mimalloc's thread-local heaps keep that off the critical path (glibc's
/// allocator was a third of the time of a run of tiny tasks).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes.
const FAILED: u8 = 1;
const INVALID: u8 = 2;

/// A command's failure: an error and the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// The job or its data is invalid (exit 2).
    pub fn invalid(error: impl Into<anyhow::Error>) -> Self {
        Failure { code: INVALID, error: error.into() }
    }

    /// A failure with its own exit code (128 + a signal's number, for a
    /// run a signal interrupted, as shells report it).
    pub fn with_code(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure { code, error: error.into() }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure { code: FAILED, error: error.into() }
    }
}

/// The result of a command.
pub type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let args = Args::parse();
    // Panics injected by --chaos are expected; keep them off stderr.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let chaos = info.payload().downcast_ref::<&str>().is_some_and(|m| m.starts_with("chaos: "));
        if !chaos {
            default_hook(info);
        }
    }));
    let outcome = match args.command {
        Command::Run(a) => run::run(&a),
        Command::Validate(a) => plan::validate(&a),
        Command::Plan(a) => plan::plan(&a),
        Command::Datasets { command: DatasetsCommand::Gen(a) } => datasets::generate(&a),
        Command::Functions { name } => functions::list(name.as_deref()),
        Command::Records { run_dir } => runs::check_run_dir(&run_dir).and_then(|()| records::print(&run_dir)),
        Command::Serve(a) => serve::serve(&a),
        Command::Runs { dir, json } => runs::list(&dir, json),
        Command::Trace { run_dir, out } => {
            runs::check_run_dir(&run_dir).and_then(|()| trace::trace(&run_dir, out.as_deref()))
        }
        Command::Simulate(a) => simulate::simulate(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::Report { runs: dirs, out } => {
            dirs.iter().try_for_each(|d| runs::check_run_dir(d)).and_then(|()| report::report(&dirs, out.as_deref()))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if is_broken_pipe(&f.error) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = std::io::stdout().flush();
            // A line per problem; an indented line quotes the one above
            // it (the end of a function's stderr).
            for line in message(&f.error).lines() {
                match line.starts_with(' ') {
                    true => eprintln!("{line}"),
                    false => eprintln!("error: {line}"),
                }
            }
            ExitCode::from(f.code)
        }
    }
}

/// An error and its causes on one line, `outer: cause: ...`, each clause
/// once: an error that already shows its cause in its own text (as
/// `path: {source}` does) is not followed by the cause again.
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let clause = cause.to_string();
        if text.contains(&clause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&clause);
    }
    text
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
