//! `fanout run`: progress bars while it runs, then a summary table and a
//! preview of the output (or summary.json with --json).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use fanout_datasets::{Dataset, DatasetOptions};
use fanout_engine::{EngineError, Interrupt, Progress, RunOptions, Stop, Summary};
use fanout_jobs::units::Size;
use fanout_workers::Registry;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::{JobArgs, ProgressMode, RunArgs};
use crate::plan::{engine_failure, load_plan};
use crate::{Failure, Outcome};

/// Runs the job and reports.
pub fn run(a: &RunArgs) -> Outcome {
    // Before any thread starts, so that every thread inherits the mask.
    let stop = Stop::new();
    watch_signals(stop.clone());
    if let Some(dir) = &a.resume {
        crate::runs::check_run_dir(dir)?;
    }
    let resume = a.resume.as_deref().map(from_where_it_began).transpose()?;
    if let Some(dir) = &resume
        && let Some(summary) = fanout_engine::finished_run(dir).map_err(Failure::from)?
    {
        // A pipeline may resume a run again and again: a finished one is
        // not an error.
        return finished_before(dir, &summary, a.json);
    }
    let registry = Registry::builtins();
    let job_args = JobArgs {
        job: match (&a.job, &resume) {
            (_, Some(dir)) => dir.join("job.json"),
            (Some(job), None) => job.clone(),
            (None, None) => unreachable!("clap requires a job or --resume"),
        },
        set: a.set.clone(),
        cache_dir: a.cache_dir.clone(),
    };
    let (job, plan) = load_plan(&job_args, &registry)?;
    if plan.is_stream() {
        if a.json && plan.output.is_stdout() {
            return Err(Failure::invalid(anyhow::anyhow!(
                "--json writes the summary to standard output, where this stream writes its records \
                 (output.path = \"-\"); read it from the run directory's summary.json"
            )));
        }
        if a.no_journal {
            return Err(Failure::invalid(anyhow::anyhow!(
                "--no-journal does not apply to a stream: its checkpoint is what makes it exactly once"
            )));
        }
    } else if a.until.is_some() {
        return Err(Failure::invalid(anyhow::anyhow!("--until applies to a stream input (input.stream)")));
    }
    if let fanout_jobs::InputSource::Generate(g) = &plan.input.source {
        let path = a.cache_dir.join(fanout_jobs::generated_name(g));
        if !path.exists() && a.progress != ProgressMode::Never {
            eprintln!("generating the input: {} into {}", g.kind, path.display());
        }
    }
    let progress = Progress::new();
    let terminal = std::io::stderr().is_terminal();
    let draw = match a.progress {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => terminal,
    };
    let opts = RunOptions {
        run_dir: resume.clone().or_else(|| a.run_dir.clone()),
        cache_dir: a.cache_dir.clone(),
        journal: !a.no_journal,
        resume: resume.is_some(),
        shuffle_memory: a.shuffle_memory.bytes(),
        progress: progress.clone(),
        chaos: a.chaos,
        stop,
        until: a.until,
        live: draw && plan.is_stream(),
        ..RunOptions::default()
    };
    // A stream says how it goes itself, a line a second.
    let bars = (draw && !plan.is_stream())
        .then(|| std::thread::spawn(move || if terminal { draw_bars(&progress) } else { print_lines(&progress) }));
    let result = fanout_engine::run(&plan, &job.file, &registry, &opts);
    if let Some(b) = bars {
        let _ = b.join();
    }
    let report = match result {
        Ok(r) => r,
        Err(f) => {
            if let Some(dir) = &f.run_dir {
                eprintln!("run directory: {}", dir.display());
                if a.report {
                    crate::report::after_run(dir);
                }
                // The journal names the shuffle's objects: they wait for it.
                if let (Some(scratch), true, Some(id)) = (plan.storage.scratch(), opts.journal, dir.file_name()) {
                    let prefix = format!("{scratch}{}/", id.to_string_lossy());
                    eprintln!(
                        "objects the shuffle wrote under {prefix} are kept for `fanout run --resume {}`",
                        dir.display()
                    );
                }
            }
            if let EngineError::Interrupted { signal } = f.error {
                if let Some(dir) = &f.run_dir {
                    let kept = if plan.is_stream() {
                        "it goes on from its last checkpoint"
                    } else if opts.journal {
                        "its finished tasks are journaled"
                    } else {
                        "it kept no journal (--no-journal), so every task runs again"
                    };
                    eprintln!("to finish the run: fanout run --resume {} ({kept})", dir.display());
                }
                return Err(Failure::with_code(128 + signal as u8, f.error));
            }
            return Err(engine_failure(&job, f.error));
        }
    };
    if report.finished_before {
        return finished_before(&report.run_dir, &report.summary, a.json);
    }
    if let Some(signal) = report.signal_in_commit {
        let name = nix::sys::signal::Signal::try_from(signal).map_or("a signal", |s| s.as_str());
        crate::signals::say(&format!("{name} during the commit: the output is complete"));
    }
    if a.report {
        crate::report::after_run(&report.run_dir);
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report.summary)?;
        writeln!(out)?;
        return Ok(());
    }
    eprint!("{}", report.summary.render(&report.run_dir));
    if let Some(s) = &report.summary.stream {
        eprintln!("output: {} ({} files)", s.output.display(), s.files);
    }
    if a.show > 0
        && let Some(o) = &report.summary.output
    {
        let preview = preview(o, plan.output.format, a.show).map_err(Failure::from)?;
        writeln!(out, "{preview}")?;
    }
    Ok(())
}

/// A run to resume goes on in the directory it was started in, where the
/// job's relative paths lead from: when that is not this one, the process
/// moves there, and the run directory is named by its absolute path.
fn from_where_it_began(dir: &std::path::Path) -> Result<std::path::PathBuf, Failure> {
    use std::os::unix::ffi::OsStringExt;
    let Ok(began) = std::fs::read(dir.join(fanout_engine::CWD)) else { return Ok(dir.to_path_buf()) };
    let began = std::path::PathBuf::from(std::ffi::OsString::from_vec(began));
    let here = std::env::current_dir()?;
    if here.canonicalize().ok() == began.canonicalize().ok() {
        return Ok(dir.to_path_buf());
    }
    let absolute = std::path::absolute(dir)?;
    std::env::set_current_dir(&began).map_err(|e| {
        anyhow::anyhow!(
            "{}: the run was started in {}, where its relative paths lead from: {e}",
            dir.display(),
            began.display()
        )
    })?;
    Ok(absolute)
}

/// Stops the run at SIGINT (Ctrl-C) or SIGTERM: the engine stops issuing
/// tasks, cancels what is in flight (worker processes are killed) and
/// keeps its journal; the run then fails as interrupted, with the exit
/// code a shell gives (130, 143). A second signal exits at once. The
/// signals are blocked in every thread but the one waiting for them
/// (processes started later get the usual mask back).
fn watch_signals(stop: Arc<Stop>) {
    crate::signals::on_signal(move |signal| {
        // Said after the interrupt took effect, so that it says what
        // happens: before the commit point the run stops, after it the
        // commit goes on.
        let line = match stop.interrupt(signal as i32) {
            Interrupt::Stops => "stopping the run (in-flight invocations are cancelled); again to stop at once",
            Interrupt::Drains => {
                "draining the stream (batches in flight finish, windows due are committed, then a checkpoint); again to stop at once"
            }
            Interrupt::Commits => {
                "the output is being committed: the run ends when it is complete; again to stop at once (a resume finishes the commit)"
            }
        };
        crate::signals::say(&format!("{}: {line}", signal.as_str()));
    });
}

/// Reports a run resumed after it had finished: nothing ran, and its
/// output is where it was committed.
fn finished_before(dir: &std::path::Path, summary: &Summary, json: bool) -> Outcome {
    let output = match &summary.output {
        Some(o) if committed(dir, &o.path) => {
            format!("its output is {} ({} rows, {})", o.path.display(), o.rows, Size(o.bytes))
        }
        Some(o) => format!("its output was committed to {}, which is no longer there", o.path.display()),
        None => match &summary.stream {
            Some(st) => format!("its output is the {} files in {}", st.files, st.output.display()),
            None => "it wrote no output".to_string(),
        },
    };
    eprintln!("nothing to resume: the run in {} finished; {output}", dir.display());
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Whether a finished run's output is still where it was committed: a
/// file, or an object (asked with the job's `[storage]` settings).
fn committed(dir: &std::path::Path, output: &std::path::Path) -> bool {
    let Some(url) = output.to_str().filter(|o| fanout_datasets::store::is_url(o)) else { return output.exists() };
    let Ok(job) = fanout_jobs::load(&dir.join("job.json"), &[]) else { return false };
    let options = job.file.storage.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    fanout_datasets::Storage::new(options).is_ok_and(|s| s.exists(url).unwrap_or(false))
}

/// The longest a cell of the preview shows, in characters (Polars shows
/// 32 of a string, DuckDB what fits the terminal); the rest is cut to `…`.
const CELL_CHARS: usize = 40;

/// A cell's text, cut at [`CELL_CHARS`], control characters escaped (a
/// newline in a cell would break the table). Formatting stops at the cut:
/// a 64 MiB value costs no more than a short one.
fn cell(value: &dyn std::fmt::Display) -> String {
    struct Cut {
        text: String,
        chars: usize,
        cut: bool,
    }
    impl std::fmt::Write for Cut {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.chars == CELL_CHARS {
                    self.cut = true;
                    return Err(std::fmt::Error);
                }
                self.chars += 1;
                match c {
                    '\n' => self.text.push_str("\\n"),
                    '\r' => self.text.push_str("\\r"),
                    '\t' => self.text.push_str("\\t"),
                    c if c.is_control() => self.text.extend(c.escape_unicode()),
                    c => self.text.push(c),
                }
            }
            Ok(())
        }
    }
    let mut cut = Cut { text: String::new(), chars: 0, cut: false };
    let _ = std::fmt::write(&mut cut, format_args!("{value}"));
    if cut.cut {
        cut.text.push('…');
    }
    cut.text
}

/// The first `rows` rows of the committed output, as a table whose long
/// cells are cut (see [`cell`]).
fn preview(o: &fanout_engine::OutputInfo, format: fanout_datasets::Format, rows: usize) -> anyhow::Result<String> {
    let opts = DatasetOptions { format: Some(format), batch_rows: rows.max(1), ..Default::default() };
    let ds = Dataset::open(vec![o.path.display().to_string()], opts)?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut n = 0;
    for b in ds.read_all() {
        let b = b?;
        let take = b.num_rows().min(rows - n);
        n += take;
        batches.push(b.slice(0, take));
        if n >= rows {
            break;
        }
    }
    let shown = arrow_cast::pretty::pretty_format_batches(&cut_cells(&batches)?)?.to_string();
    let more = if o.rows as usize > n { format!("\n({} of {} rows)", n, o.rows) } else { String::new() };
    Ok(format!("{shown}{more}"))
}

/// The batches with every cell as cut text (nulls stay null).
fn cut_cells(batches: &[RecordBatch]) -> anyhow::Result<Vec<RecordBatch>> {
    use arrow_array::{Array, ArrayRef, StringArray};
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (field, column) in b.schema().fields().iter().zip(b.columns()) {
            let f = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let texts: StringArray = (0..column.len()).map(|i| column.is_valid(i).then(|| cell(&f.value(i)))).collect();
            fields.push(arrow_schema::Field::new(field.name(), arrow_schema::DataType::Utf8, true));
            columns.push(Arc::new(texts));
        }
        out.push(RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)?);
    }
    Ok(out)
}

/// A stage's progress: how far, out of how much, and in which unit.
struct Measure {
    done: u64,
    total: u64,
    /// Bytes of the input (the first stage, once the listing summed them)
    /// rather than tasks.
    bytes: bool,
}

fn measure(s: &fanout_engine::StageProgress) -> Measure {
    let total_bytes = s.total_bytes.load(Relaxed);
    if total_bytes > 0 && total_bytes < u64::MAX {
        Measure { done: s.bytes.load(Relaxed).min(total_bytes), total: total_bytes, bytes: true }
    } else {
        Measure { done: s.done.load(Relaxed), total: s.total.load(Relaxed), bytes: false }
    }
}

/// One stage's progress as text: input bytes (or tasks) done of the total,
/// tasks, invocations running, tasks queued and retrying, rates, and (for
/// logs) the time left at the rate so far.
fn stage_line(progress: &Progress, stage: usize, s: &fanout_engine::StageProgress, secs: f64, eta: bool) -> String {
    // While the splitting goes on, the tasks handed out so far.
    let total = s.total.load(Relaxed).max(s.sent.load(Relaxed));
    let more = if s.total_known.load(Relaxed) { "" } else { "+" };
    let records = s.records.load(Relaxed) as f64 / secs;
    let mb = s.bytes.load(Relaxed) as f64 / 1e6 / secs;
    let m = measure(s);
    let f = progress.in_flight(stage);
    let mut line = String::new();
    if m.bytes {
        line.push_str(&format!("{} of {} · ", Size(m.done), Size(m.total)));
    }
    line.push_str(&format!(
        "{}/{total}{more} tasks · {} running, {} queued, {} retrying · {records:.0} rec/s {mb:.1} MB/s",
        s.done.load(Relaxed),
        f.running,
        f.queued,
        f.retrying
    ));
    let bad = s.bad.load(Relaxed);
    if bad > 0 {
        line.push_str(&format!(" · {bad} bad records"));
    }
    // Time left, at the rate so far: only once the total is known (bytes
    // from the listing, or every task split).
    if eta && m.done > 0 && m.done < m.total && (m.bytes || s.total_known.load(Relaxed)) {
        let left = (m.total - m.done) as f64 * secs / m.done as f64;
        line.push_str(&format!(" · ETA {}", humantime::format_duration(Duration::from_secs(left.ceil() as u64))));
    }
    line
}

/// The stage a stage waits on while none of its tasks has been handed out
/// (the one before it, whose output it takes): `None` for the first stage,
/// and once it has started.
fn waiting_on(stages: &[Arc<fanout_engine::StageProgress>], i: usize) -> Option<&str> {
    let s = &stages[i];
    let idle = s.sent.load(Relaxed) == 0 && s.done.load(Relaxed) == 0;
    (i > 0 && idle).then(|| stages[i - 1].name.as_str())
}

/// Prints a line per stage every second, and once at the end: progress
/// for logs, when stderr is not a terminal.
fn print_lines(progress: &Arc<Progress>) {
    let start = Instant::now();
    let mut last = Instant::now();
    loop {
        let finished = progress.is_finished();
        if finished || last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            let stages = progress.stages();
            for (i, s) in stages.iter().enumerate() {
                let line = match waiting_on(&stages, i) {
                    Some(on) => format!("waiting for {on}"),
                    None => stage_line(progress, i, s, secs, true),
                };
                crate::signals::say(&format!("{}: {line}", s.name));
            }
        }
        if finished {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Draws one bar per stage until the run finishes.
fn draw_bars(progress: &Arc<Progress>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{prefix:<14} [{bar:30}] {msg} ETA {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    let waiting = ProgressStyle::with_template("{prefix:<14} {msg}").expect("a valid template");
    let mut bars: Vec<ProgressBar> = Vec::new();
    // When each stage got its first task: rates count from there.
    let mut starts: Vec<Option<Instant>> = Vec::new();
    loop {
        let stages = progress.stages();
        while bars.len() < stages.len() {
            let s = &stages[bars.len()];
            let bar = multi.add(ProgressBar::new(0).with_style(style.clone()).with_prefix(s.name.clone()));
            bars.push(bar);
            starts.push(None);
        }
        for (i, ((bar, s), start)) in bars.iter().zip(&stages).zip(&mut starts).enumerate() {
            if let Some(on) = waiting_on(&stages, i) {
                bar.set_style(waiting.clone());
                bar.set_message(format!("waiting for {on}"));
                continue;
            }
            if start.is_none() {
                bar.set_style(style.clone());
            }
            let m = measure(s);
            if m.total > 0 && start.is_none() {
                *start = Some(Instant::now());
            }
            let secs = start.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-3);
            // An empty bar until the stage has tasks; by bytes, its ETA is
            // the input's, from the first second.
            bar.set_length(m.total.max(1));
            bar.set_position(m.done);
            bar.set_message(stage_line(progress, i, s, secs, false));
        }
        if progress.is_finished() {
            for b in &bars {
                b.finish();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
