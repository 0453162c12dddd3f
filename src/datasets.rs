//! `fanout datasets gen`.

use std::time::Instant;

use fanout_datasets::generator::{Amount, GenSpec, generate as run};

use crate::args::GenArgs;
use crate::{Failure, Outcome};

/// Generates the dataset into a temporary file, then uploads it to the
/// object `url` through the storage layer outputs use (whole or not at
/// all; credentials and endpoint from the environment, as a job's).
fn to_object(spec: &GenSpec, url: &str) -> Result<fanout_datasets::generator::GenStats, Failure> {
    use anyhow::Context;
    let storage = fanout_datasets::Storage::default();
    // A URL that cannot name a writable object is a usage error.
    fanout_datasets::store::writable(url).map_err(|e| Failure::invalid(anyhow::anyhow!("--out {url}: {e}")))?;
    let dir = tempfile::tempdir().context("a temporary directory for the dataset")?;
    let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("data");
    let local = dir.path().join(name);
    let stats = run(spec, &local)?;
    storage.upload(&local, url, false, None, &mut |_| Ok(()))?;
    Ok(stats)
}

/// Generates a dataset and reports its size and speed.
pub fn generate(a: &GenArgs) -> Outcome {
    let amount = match (a.size, a.rows) {
        (Some(s), _) => Amount::Bytes(s.bytes()),
        (None, Some(r)) => Amount::Rows(r),
        (None, None) => unreachable!("clap requires --size or --rows"),
    };
    let spec = GenSpec { kind: a.kind, amount, seed: a.seed };
    let start = Instant::now();
    let out = a.out.to_string_lossy();
    let stats = match fanout_datasets::store::is_url(&out) && !out.starts_with("file://") {
        true => to_object(&spec, &out)?,
        false => run(&spec, std::path::Path::new(fanout_datasets::store::local_path(&out)))?,
    };
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
