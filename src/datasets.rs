//! `fanout datasets gen`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use fanout_datasets::generator::{Amount, GenSpec, generate as run};

use crate::args::GenArgs;
use crate::{Failure, Outcome};

/// What a `datasets gen` stopped by a signal must clean up: its
/// temporary file, and a multipart upload in progress.
#[derive(Default)]
struct Leftovers {
    temp: Option<std::path::PathBuf>,
    upload: Option<(String, String)>,
}

/// Removes what a stopped generation left, on SIGINT or SIGTERM, then
/// exits as a shell would (130, 143).
fn clean_up_on_signal(leftovers: Arc<Mutex<Leftovers>>, storage: Arc<fanout_datasets::Storage>) {
    crate::signals::on_signal(move |signal| {
        crate::signals::say(&format!("{}: stopping; nothing is written", signal.as_str()));
        let left = std::mem::take(&mut *leftovers.lock().expect("not poisoned"));
        if let Some(path) = left.temp {
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
        if let Some((url, id)) = left.upload {
            let _ = storage.abort_upload(&url, &id);
        }
        std::process::exit(128 + signal as i32);
    });
}

/// Generates the dataset into a temporary file, then uploads it to the
/// object `url` through the storage layer outputs use (whole or not at
/// all; credentials and endpoint from the environment, as a job's).
fn to_object(
    spec: &GenSpec,
    url: &str,
    storage: &fanout_datasets::Storage,
    leftovers: &Mutex<Leftovers>,
) -> Result<fanout_datasets::generator::GenStats, Failure> {
    use anyhow::Context;
    // A URL that cannot name a writable object is a usage error.
    fanout_datasets::store::writable(url).map_err(|e| Failure::invalid(anyhow::anyhow!("--out {url}: {e}")))?;
    let dir = tempfile::tempdir().context("a temporary directory for the dataset")?;
    leftovers.lock().expect("not poisoned").temp = Some(dir.path().to_path_buf());
    let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("data");
    let local = dir.path().join(name);
    let stats = run(spec, &local)?;
    storage.upload(&local, url, false, None, &mut |note| {
        if let fanout_datasets::store::UploadNote::Created { id } = note {
            leftovers.lock().expect("not poisoned").upload = Some((url.to_string(), id.to_string()));
        }
        Ok(())
    })?;
    leftovers.lock().expect("not poisoned").upload = None;
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
    // Before any thread starts, so that every thread inherits the mask.
    let leftovers = Arc::new(Mutex::new(Leftovers::default()));
    let storage = Arc::new(fanout_datasets::Storage::default());
    clean_up_on_signal(leftovers.clone(), storage.clone());
    let stats = match fanout_datasets::store::is_url(&out) && !out.starts_with("file://") {
        true => to_object(&spec, &out, &storage, &leftovers)?,
        false => {
            let path = std::path::Path::new(fanout_datasets::store::local_path(&out));
            leftovers.lock().expect("not poisoned").temp = Some(fanout_datasets::generator::temp_path(path));
            run(&spec, path)?
        }
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
