//! `fanout simulate JOB --from RUN_DIR`: the job's predicted time and cost
//! (the engine's `simulate` module does the work), as the summary table a
//! run prints, or summary.json with `--json`.

use std::io::Write;

use fanout_engine::simulate::SimulateOptions;
use fanout_workers::Registry;

use crate::args::{JobArgs, SimulateArgs};
use crate::plan::load_plan;
use crate::{Failure, Outcome};

/// Simulates the job.
pub fn simulate(a: &SimulateArgs) -> Outcome {
    let registry = Registry::builtins();
    let job_args = JobArgs { job: a.job.clone(), set: a.set.clone(), cache_dir: ".fanout/cache".into() };
    let (job, plan) = load_plan(&job_args, &registry)?;
    if !a.from.join("summary.json").is_file() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "--from {}: not the directory of a finished run (no summary.json)",
            a.from.display()
        )));
    }
    let opts = SimulateOptions { from: a.from.clone(), seeds: a.seeds, run_dir: a.run_dir.clone(), chaos: a.chaos };
    let sim = fanout_engine::simulate::simulate(&plan, &job.file, &opts).map_err(Failure::invalid)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &sim.summary)?;
        writeln!(out)?;
        return Ok(());
    }
    let s = &sim.summary;
    if let Some(m) = &s.simulation {
        eprintln!(
            "simulated (calibrated on {}): wall {:.3} s, p5 {:.3} s – p95 {:.3} s over {} seeds",
            m.calibrated_from.display(),
            m.wall_p50,
            m.wall_p5,
            m.wall_p95,
            m.seeds
        );
    }
    eprint!("{}", s.render(&sim.run_dir));
    Ok(())
}
