//! `fanout trace RUN_DIR [--out FILE]`: a run's invocations as a Chrome
//! trace (the engine's `report::write_trace` writes it).

use std::path::{Path, PathBuf};

use crate::Outcome;

/// Writes the trace of the run in `run_dir` to `out` (default
/// `RUN_DIR/trace.json`).
pub fn trace(run_dir: &Path, out: Option<&Path>) -> Outcome {
    let out: PathBuf = out.map_or_else(|| run_dir.join("trace.json"), Path::to_path_buf);
    let t = fanout_engine::report::write_trace(run_dir, &out)?;
    println!(
        "{}: {} invocations on {} worker slots, {} stages (open it in ui.perfetto.dev or chrome://tracing)",
        out.display(),
        t.invocations,
        t.workers,
        t.stages
    );
    Ok(())
}
