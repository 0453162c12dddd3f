//! `fanout records RUN_DIR`: a run's invocation records as JSON lines,
//! one per invocation, in the order they were written.

use std::io::Write;
use std::path::Path;

use crate::Outcome;

/// Prints the records of the run in `run_dir`.
pub fn print(run_dir: &Path) -> Outcome {
    let records = fanout_engine::records::read(run_dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = Vec::new();
    for r in records {
        line.clear();
        serde_json::to_writer(&mut line, &r?)?;
        line.push(b'\n');
        // An io::Error, so that a closed pipe (`| head`) ends it quietly.
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}
