//! `fanout runs [DIR] [--json]`: the runs kept under a runs directory
//! (`.fanout/runs` by default), oldest first: id, job, status, when it
//! started, wall time, invocations and cost, from each run's
//! `summary.json`. A run with no summary is running (a process holds its
//! directory) or was interrupted.

use std::io::Write;
use std::path::Path;

use fanout_engine::Summary;

use crate::Outcome;

/// Checks that `dir` holds a run (its `job.json`), for the commands that
/// read one: a missing or foreign directory is a usage error (exit 2) that
/// names it.
pub fn check_run_dir(dir: &Path) -> Result<(), crate::Failure> {
    if dir.join("job.json").is_file() {
        return Ok(());
    }
    let why = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such run directory".to_string(),
        Err(e) => e.to_string(),
        Ok(m) if !m.is_dir() => "not a run directory (not a directory)".to_string(),
        Ok(_) => "not a run directory (no job.json)".to_string(),
    };
    Err(crate::Failure::invalid(anyhow::anyhow!("{}: {why}", dir.display())))
}

/// Lists the runs in `dir`.
pub fn list(dir: &Path, json: bool) -> Outcome {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // The default directory before any run: nothing to list. Another
        // that is not there is a mistake, as for the other commands.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == Path::new(".fanout/runs") => {
            writeln!(std::io::stderr(), "no runs in {} yet", dir.display())?;
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::Failure::invalid(anyhow::anyhow!("{}: no such directory", dir.display())));
        }
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", dir.display()).into()),
    };
    let mut runs: Vec<std::path::PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("job.json").is_file()).collect();
    runs.sort();
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<24} {:<16} {:<13} {:<20} {:>9} {:>12} {:>10}",
            "run", "job", "status", "started (UTC)", "wall s", "invocations", "cost $"
        )?;
    }
    for run in runs {
        let id = run.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let summary: Option<Summary> =
            std::fs::read(run.join("summary.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let job = summary.as_ref().map(|s| s.job.clone()).unwrap_or_else(|| job_name(&run));
        let simulated = summary.as_ref().is_some_and(|s| s.simulation.is_some());
        let status = match &summary {
            Some(s) => s.status.as_str(),
            None if fanout_engine::running(&run).is_some() => "running",
            None => "interrupted",
        };
        // A simulation's run directory is not a run's: say so.
        let status = if simulated { format!("sim:{status}") } else { status.to_string() };
        let started = started(&id).or_else(|| written(&run.join("job.json")));
        if json {
            let line = serde_json::json!({
                "run": id, "dir": run, "job": job, "status": status, "simulated": simulated, "started": started,
                "wall_seconds": summary.as_ref().map(|s| s.wall_seconds),
                "invocations": summary.as_ref().map(|s| s.invocations.total),
                "usd": summary.as_ref().map(|s| s.cost.usd),
            });
            writeln!(out, "{line}")?;
        } else {
            let num = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{:<24} {:<16} {:<13} {:<20} {:>9} {:>12} {:>10}",
                id,
                job,
                status,
                started.unwrap_or_default(),
                num(summary.as_ref().map(|s| format!("{:.2}", s.wall_seconds))),
                num(summary.as_ref().map(|s| s.invocations.total.to_string())),
                num(summary.as_ref().map(|s| format!("{:.6}", s.cost.usd))),
            )?;
        }
    }
    Ok(())
}

/// The job's name from a run's `job.json` (its `name`, else `-`).
fn job_name(run: &Path) -> String {
    std::fs::read(run.join("job.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

/// When `file` (a run's `job.json`, written as it starts) was last
/// written, as [`started`] says it: for a run directory named by the user.
fn written(file: &Path) -> Option<String> {
    let at = std::fs::metadata(file).and_then(|m| m.modified()).ok()?;
    // `2026-11-30T19:53:35Z` as `2026-11-30 19:53:35`.
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    Some(stamp.trim_end_matches('Z').replacen('T', " ", 1))
}

/// When a run started, from its id (`20261130T195335Z-27070`):
/// `2026-11-30 19:53:35`; `None` for a directory named otherwise.
fn started(id: &str) -> Option<String> {
    let stamp = id.split('-').next()?;
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !stamp[..8].bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{} {}:{}:{}",
        &stamp[..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    ))
}
