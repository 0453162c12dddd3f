//! `fanout run`: progress bars while it runs, then a summary table and a
//! preview of the output (or summary.json with --json).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use fanout_datasets::{Dataset, DatasetOptions};
use fanout_engine::{Progress, Report, RunOptions, Summary};
use fanout_jobs::units::Size;
use fanout_workers::Registry;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::{JobArgs, ProgressMode, RunArgs};
use crate::plan::{engine_failure, load_plan};
use crate::{Failure, Outcome};

/// Runs the job and reports.
pub fn run(a: &RunArgs) -> Outcome {
    let registry = Registry::builtins();
    let job_args = JobArgs {
        job: match (&a.job, &a.resume) {
            (_, Some(dir)) => dir.join("job.json"),
            (Some(job), None) => job.clone(),
            (None, None) => unreachable!("clap requires a job or --resume"),
        },
        set: a.set.clone(),
        cache_dir: a.cache_dir.clone(),
    };
    let (job, plan) = load_plan(&job_args, &registry)?;
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
        run_dir: a.resume.clone().or_else(|| a.run_dir.clone()),
        cache_dir: a.cache_dir.clone(),
        journal: !a.no_journal,
        resume: a.resume.is_some(),
        shuffle_memory: a.shuffle_memory.bytes(),
        progress: progress.clone(),
        chaos: a.chaos,
    };
    let bars =
        draw.then(|| std::thread::spawn(move || if terminal { draw_bars(&progress) } else { print_lines(&progress) }));
    let result = fanout_engine::run(&plan, &job.file, &registry, &opts);
    if let Some(b) = bars {
        let _ = b.join();
    }
    let report = match result {
        Ok(r) => r,
        Err(f) => {
            if let Some(dir) = &f.run_dir {
                eprintln!("run directory: {}", dir.display());
            }
            return Err(engine_failure(&job, f.error));
        }
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report.summary)?;
        writeln!(out)?;
        return Ok(());
    }
    eprint!("{}", table(&report));
    if a.show > 0
        && let Some(o) = &report.summary.output
    {
        let preview = preview(o, plan.output.format, a.show).map_err(Failure::from)?;
        writeln!(out, "{preview}")?;
    }
    Ok(())
}

/// The first `rows` rows of the committed output, as a table.
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
    let shown = arrow_cast::pretty::pretty_format_batches(&batches)?.to_string();
    let more = if o.rows as usize > n { format!("\n({} of {} rows)", n, o.rows) } else { String::new() };
    Ok(format!("{shown}{more}"))
}

/// The summary table.
fn table(r: &Report) -> String {
    let s: &Summary = &r.summary;
    let mut t = String::new();
    let mib = |b: u64| Size(b).to_string();
    t += &format!(
        "{} {} in {:.2}s: {} splits, {} read, {} records ({:.1} MiB/s, {:.0} records/s)\n",
        s.job,
        s.status,
        s.wall_seconds,
        s.input.splits,
        mib(s.input.bytes),
        s.input.records,
        s.input_mib_per_second,
        s.records_per_second,
    );
    t += &format!(
        "invocations: {} ({} cold, {} failed, {:.0}/s); latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}\n",
        s.invocations.total,
        s.invocations.cold,
        s.invocations.failed,
        s.invocations.per_second,
        s.latency_ms.p50,
        s.latency_ms.p95,
        s.latency_ms.p99,
        s.latency_ms.max
    );
    t += &format!(
        "{:<16} {:<8} {:>8} {:>6} {:>12} {:>12} {:>9} {:>9} {:>9}\n",
        "stage", "phase", "calls", "cold", "records in", "records out", "p50 ms", "p99 ms", "max ms"
    );
    for st in &s.stages {
        t += &format!(
            "{:<16} {:<8} {:>8} {:>6} {:>12} {:>12} {:>9.2} {:>9.2} {:>9.2}\n",
            st.name,
            st.phase,
            st.invocations,
            st.cold,
            st.records_in,
            st.records_out,
            st.latency_ms.p50,
            st.latency_ms.p99,
            st.latency_ms.max
        );
    }
    if s.resumed_tasks > 0 {
        t += &format!("resumed: {} tasks taken from the journal\n", s.resumed_tasks);
    }
    if s.retries > 0 || s.backup_tasks > 0 || !s.failed_tasks.is_empty() {
        t += &format!(
            "retries: {}; backup tasks: {}; tasks failed for good: {}\n",
            s.retries,
            s.backup_tasks,
            s.failed_tasks.len()
        );
        for f in s.failed_tasks.iter().take(5) {
            t += &format!("  stage {} task {} ({}), {} attempts: {}\n", f.stage, f.task, f.input, f.attempts, f.error);
        }
    }
    let c = &s.cost;
    t += &format!(
        "cost on {} at {} MB: {} requests, {:.3} GB-s, ${:.6}\n",
        c.preset, c.memory_mb, c.requests, c.gb_seconds, c.usd
    );
    if c.note.starts_with("durations measured here scaled") {
        t += &format!("  ({})\n", c.note);
    }
    if s.shuffle_spilled_bytes > 0 {
        t += &format!("shuffle spilled {} to disk\n", mib(s.shuffle_spilled_bytes));
    }
    if let Some(o) = &s.output {
        t += &format!("output: {} ({} rows, {})\n", o.path.display(), o.rows, mib(o.bytes));
    }
    t += &format!("run directory: {}\n", r.run_dir.display());
    t
}

/// One stage's progress as text: done/total tasks and rates.
fn stage_line(s: &fanout_engine::StageProgress, secs: f64) -> String {
    let total = s.total.load(Relaxed);
    let more = if s.total_known.load(Relaxed) { "" } else { "+" };
    let records = s.records.load(Relaxed) as f64 / secs;
    let mb = s.bytes.load(Relaxed) as f64 / 1e6 / secs;
    format!("{}/{total}{more} tasks {records:.0} rec/s {mb:.1} MB/s", s.done.load(Relaxed))
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
            for s in progress.stages() {
                eprintln!("{}: {}", s.name, stage_line(&s, secs));
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
        for ((bar, s), start) in bars.iter().zip(&stages).zip(&mut starts) {
            let total = s.total.load(Relaxed);
            if total > 0 && start.is_none() {
                *start = Some(Instant::now());
            }
            let secs = start.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-3);
            // An empty bar until the stage has tasks.
            bar.set_length(total.max(1));
            bar.set_position(s.done.load(Relaxed));
            bar.set_message(stage_line(s, secs));
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
