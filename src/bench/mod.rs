//! `fanout bench`: benchmark runs as a user makes them. The built-in suite
//! (see `suite.rs`) runs in interleaved rounds — each round starts with
//! another program, so the machine's drift between minutes hits each
//! alike — and reports each program's wall time (median and range) and
//! fanout's speed against each peer as the median and range of the
//! per-round ratios: a markdown table on stdout, and bench.md, bench.json
//! and bench.html (with charts) written to the output directory.

mod suite;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use fanout_engine::report::{BenchReport, ProgramResult, Spread, WorkloadResult};

use crate::Outcome;
use crate::args::BenchArgs;
use suite::{Peers, Program, Setup, Workload};

/// Runs the suite.
pub fn bench(a: &BenchArgs) -> Outcome {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let only: Vec<&str> =
        if a.only.is_empty() { suite::ALL.to_vec() } else { a.only.iter().map(String::as_str).collect() };
    for id in &only {
        if !suite::ALL.contains(id) {
            return Err(crate::Failure::invalid(anyhow::anyhow!(
                "--only {id}: no such workload (the suite: {})",
                suite::ALL.join(", ")
            )));
        }
    }
    let threads = if a.threads.is_empty() { vec![cores] } else { a.threads.clone() };
    if threads.contains(&0) {
        return Err(crate::Failure::invalid(anyhow::anyhow!("--threads: a thread count must be at least 1")));
    }
    let runs = a.runs.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let out = a.out.clone().unwrap_or_else(|| {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "");
        PathBuf::from(".fanout/bench").join(format!("{stamp}-{}", std::process::id()))
    });
    let exe = std::env::current_exe().context("finding this binary")?;
    let setup = Setup {
        compare: a.compare,
        quick: a.quick,
        cache: a.cache_dir.join("bench"),
        work: out.join("work"),
        text_size: a.size.map_or(if a.quick { 8 << 20 } else { 1 << 30 }, |s| s.bytes()),
        exe: exe.clone(),
    };
    let peers = Peers::find(&exe);
    let mut workloads = Vec::new();
    for &t in &threads {
        for id in &only {
            let w = suite::workload(id, &setup, &peers, t)?;
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            eprintln!(
                "{} at {t} thread{}: {} program{}, {runs} round{}",
                w.title,
                plural(t),
                w.programs.len(),
                plural(w.programs.len()),
                plural(runs as usize)
            );
            workloads.push(measure(&w, t, runs, &out)?);
        }
    }
    let report = BenchReport { cores, runs, quick: a.quick, workloads };
    let markdown = report.markdown();
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let json = serde_json::to_string_pretty(&report)? + "\n";
    let page = report.page().map_err(|e| anyhow::anyhow!("drawing bench.html: {e}"))?;
    for (name, text) in [("bench.md", &markdown), ("bench.json", &json), ("bench.html", &page)] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(if a.json { json.as_bytes() } else { markdown.as_bytes() })?;
    eprintln!("written to {} (and bench.md, bench.json)", out.join("bench.html").display());
    Ok(())
}

/// Times `w`'s programs in `runs` interleaved rounds.
fn measure(w: &Workload, threads: usize, runs: u32, out: &std::path::Path) -> anyhow::Result<WorkloadResult> {
    let n = w.programs.len();
    let mut walls = vec![Vec::new(); n];
    for r in 0..runs as usize {
        for k in 0..n {
            let i = (r + k) % n;
            walls[i].push(time(&w.programs[i], out)?);
        }
    }
    let fanout = walls.first().cloned().unwrap_or_default();
    let programs = w
        .programs
        .iter()
        .zip(walls)
        .enumerate()
        .map(|(i, (p, walls))| {
            let ratios: Vec<f64> = walls.iter().zip(&fanout).map(|(peer, ours)| peer / ours.max(1e-9)).collect();
            ProgramResult {
                name: p.name.clone(),
                command: p.cmd.join(" "),
                ratio: (i > 0).then(|| Spread::of(&ratios)),
                walls,
            }
        })
        .collect();
    Ok(WorkloadResult {
        id: w.id.to_string(),
        title: w.title.clone(),
        threads,
        unit: w.unit.to_string(),
        amount: w.amount,
        programs,
        skipped: w.skipped.clone(),
    })
}

/// One run of `p`: its wall seconds; an error with its stderr's end if it
/// fails (a benchmark of a failing program measures nothing).
fn time(p: &Program, out: &std::path::Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(out)?;
    let err_path = out.join("last-stderr.txt");
    let err = std::fs::File::create(&err_path)?;
    let start = Instant::now();
    let status = Command::new(&p.cmd[0])
        .args(&p.cmd[1..])
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .with_context(|| format!("{}: starting {}", p.name, p.cmd[0]))?;
    let wall = start.elapsed().as_secs_f64();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: String = stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{} failed ({status}): {}\n{tail}", p.name, p.cmd.join(" "));
    }
    Ok(wall)
}
