//! `fanout report RUN_DIR [RUN_DIR_B] [--out FILE]`: a run's report page,
//! or two runs compared (the engine's `report` module draws them).

use std::path::{Path, PathBuf};

use crate::Outcome;

/// Writes the report of `runs` (one run, or two to compare).
pub fn report(runs: &[PathBuf], out: Option<&Path>) -> Outcome {
    match runs {
        [run] => {
            let out = out.map_or_else(|| run.join("report.html"), Path::to_path_buf);
            let info = fanout_engine::report::write(run, &out)?;
            say(&info);
        }
        [a, b] => {
            let out = out.map_or_else(|| b.join("compare.html"), Path::to_path_buf);
            let (info, cmp) = fanout_engine::report::write_comparison(a, b, &out)?;
            print!("{cmp}");
            say(&info);
        }
        _ => unreachable!("clap takes one or two runs"),
    }
    Ok(())
}

/// Writes the report of a run that just ended (`fanout run --report`);
/// says where, or why it could not.
pub fn after_run(run_dir: &Path) {
    match fanout_engine::report::write(run_dir, &run_dir.join("report.html")) {
        Ok(info) => say(&info),
        Err(e) => eprintln!("error: the report: {e}"),
    }
}

fn say(info: &fanout_engine::report::ReportInfo) {
    eprintln!("report: {} ({} invocations, {} KiB)", info.path.display(), info.invocations, info.bytes.div_ceil(1024));
}
