//! `fanout simulate JOB --from RUN_DIR`: the job's predicted time and cost
//! (the engine's `simulate` module does the work), as the summary table a
//! run prints, or summary.json with `--json`; with `--sweep`, a table of
//! configurations (sweep.csv and sweep.json written beside), and with
//! `--deadline`, the cheapest that meets it.

use std::io::Write;
use std::path::PathBuf;

use fanout_engine::simulate::{Calibrated, Point, SimulateOptions, SweepOptions};
use fanout_jobs::Override;
use fanout_workers::Registry;

use crate::args::{JobArgs, SimulateArgs};
use crate::plan::load_plan;
use crate::{Failure, Outcome};

/// Simulates the job, or sweeps it.
pub fn simulate(a: &SimulateArgs) -> Outcome {
    let registry = Registry::builtins();
    let job_args = JobArgs { job: a.job.clone(), set: a.set.clone(), cache_dir: ".fanout/cache".into() };
    let (job, plan) = load_plan(&job_args, &registry)?;
    let cal = calibration(a, &plan)?;
    if !a.sweep.is_empty() {
        return sweep(a, &cal, &registry);
    }
    let opts = SimulateOptions { seeds: a.seeds, run_dir: a.run_dir.clone(), chaos: a.chaos };
    let sim = fanout_engine::simulate::simulate(&plan, &job.file, &cal, &opts).map_err(Failure::invalid)?;
    let s = &sim.summary;
    let m = s.simulation.as_ref().expect("a simulated summary");
    if a.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, s)?;
        writeln!(out)?;
    } else {
        eprintln!(
            "simulated (durations from {}): wall {:.3} s, p5 {:.3} s – p95 {:.3} s over {} seeds",
            m.calibrated_from.display(),
            m.wall_p50,
            m.wall_p5,
            m.wall_p95,
            m.seeds
        );
        eprint!("{}", s.render(&sim.run_dir));
    }
    if let Some(d) = a.deadline {
        let d = d.0.as_secs_f64();
        if s.status != "succeeded" || m.wall_p95 > d {
            let why =
                if s.status != "succeeded" { "the run fails".to_string() } else { format!("p95 {:.3} s", m.wall_p95) };
            return Err(Failure::with_code(1, anyhow::anyhow!("the job does not meet the deadline of {d} s: {why}")));
        }
        eprintln!("meets the deadline of {d} s at p95 ({:.3} s)", m.wall_p95);
    }
    Ok(())
}

/// What the durations come from: the `--from` runs, with the
/// `--durations` given over them.
fn calibration(a: &SimulateArgs, plan: &fanout_jobs::Plan) -> Result<Calibrated, Failure> {
    let from: Vec<PathBuf> = match (&a.replay, a.from.is_empty()) {
        (Some(run), true) => vec![run.clone()],
        _ => a.from.clone(),
    };
    if from.is_empty() && a.durations.is_empty() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "no durations to simulate with: give --from RUN_DIR (a run of the job to calibrate on) or --durations \
             STAGE=TIME for each stage"
        )));
    }
    let runs = a.replay.iter().map(|r| ("--replay", r)).chain(a.from.iter().map(|r| ("--from", r)));
    for (flag, run) in runs {
        if !run.join("summary.json").is_file() {
            return Err(Failure::invalid(anyhow::anyhow!(
                "{flag} {}: not the directory of a finished run (no summary.json)",
                run.display()
            )));
        }
    }
    let mut cal =
        if from.is_empty() { Calibrated::none() } else { Calibrated::load_all(&from).map_err(Failure::invalid)? };
    if let Some(run) = &a.replay {
        cal.replay(run).map_err(Failure::invalid)?;
    }
    for g in &a.durations {
        if !plan.stages.iter().any(|s| s.name == g.stage) {
            let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(Failure::invalid(anyhow::anyhow!(
                "--durations {}: the job has no stage `{}` (its stages: {})",
                g.stage,
                g.stage,
                names.join(", ")
            )));
        }
        cal.give(&g.stage, g.phase.as_deref(), &g.durations);
    }
    Ok(cal)
}

/// `--sweep`: every combination of the swept values, simulated.
fn sweep(a: &SimulateArgs, cal: &Calibrated, registry: &Registry) -> Outcome {
    let keys: Vec<String> = a.sweep.iter().map(|s| s.key.clone()).collect();
    let mut combos: Vec<Vec<&Override>> = vec![Vec::new()];
    for s in &a.sweep {
        combos = combos.iter().flat_map(|c| s.values.iter().map(move |v| [c.as_slice(), &[v]].concat())).collect();
    }
    let mut points = Vec::with_capacity(combos.len());
    for combo in combos {
        let mut set = a.set.clone();
        set.extend(combo.iter().map(|&o| o.clone()));
        let job_args = JobArgs { job: a.job.clone(), set, cache_dir: ".fanout/cache".into() };
        let label: Vec<String> = combo.iter().map(|o| o.label().replacen("--set", "--sweep", 1)).collect();
        let (_, plan) = load_plan(&job_args, registry)
            .map_err(|f| Failure::invalid(anyhow::anyhow!("{}: {:#}", label.join(" "), f.error)))?;
        points.push(Point { values: combo.iter().map(|o| o.raw.clone()).collect(), plan });
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let opts =
        SweepOptions { seeds: a.seeds, chaos: a.chaos, deadline: a.deadline.map(|d| d.0.as_secs_f64()), threads };
    let result = fanout_engine::simulate::sweep(keys, points, cal, &opts).map_err(Failure::invalid)?;
    let dir = a.out.clone().unwrap_or_else(|| {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "");
        PathBuf::from(".fanout/sweeps").join(format!("{stamp}-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(&result)?;
    for (name, text) in [("sweep.csv", result.csv()), ("sweep.json", json.clone() + "\n")] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if a.json {
        writeln!(std::io::stdout().lock(), "{json}")?;
    } else {
        eprintln!(
            "simulated {} configurations (durations from {}, {} seeds each; * the Pareto front of p95 time and cost)",
            result.points.len(),
            cal.from().display(),
            result.seeds
        );
        eprint!("{result}");
        eprintln!("written to {} and sweep.json", dir.join("sweep.csv").display());
    }
    match result.decision() {
        Some(d) if result.chosen.is_none() => Err(Failure::with_code(1, anyhow::anyhow!("{d}"))),
        Some(d) => {
            eprintln!("{d}");
            Ok(())
        }
        None => Ok(()),
    }
}
