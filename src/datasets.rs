//! `fanout datasets gen`.

use std::time::Instant;

use fanout_datasets::generator::{Amount, GenSpec, generate as run};

use crate::Outcome;
use crate::args::GenArgs;

/// Generates a dataset and reports its size and speed.
pub fn generate(a: &GenArgs) -> Outcome {
    let amount = match (a.size, a.rows) {
        (Some(s), _) => Amount::Bytes(s.bytes()),
        (None, Some(r)) => Amount::Rows(r),
        (None, None) => unreachable!("clap requires --size or --rows"),
    };
    let spec = GenSpec { kind: a.kind, amount, seed: a.seed };
    let start = Instant::now();
    let stats = run(&spec, &a.out)?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} rows, {} ({} bytes) to {} in {:.2}s ({:.0} MB/s)",
        stats.rows,
        fanout_jobs::units::Size(stats.bytes),
        stats.bytes,
        a.out.display(),
        secs,
        stats.bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}
