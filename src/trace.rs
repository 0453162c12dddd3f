//! `fanout trace RUN_DIR [--out FILE]`: a run's invocations in the Chrome
//! trace-event format, which Perfetto (ui.perfetto.dev) and
//! chrome://tracing load: a track per worker slot, a slice per invocation
//! (its stage and phase, with task, attempt, cold, backup, status, error,
//! bytes and records as args), and a counter per stage of the invocations
//! in flight. Written as it is read (the counters from a sorted list of
//! start and end times: 16 bytes an invocation), so 10^6 invocations make
//! a trace without holding their records; gzip-compressed when the file
//! name ends in `.gz`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Outcome;

/// Writes the trace of the run in `run_dir` to `out` (default
/// `RUN_DIR/trace.json`).
pub fn trace(run_dir: &Path, out: Option<&Path>) -> Outcome {
    let out: PathBuf = out.map_or_else(|| run_dir.join("trace.json"), Path::to_path_buf);
    let file = std::fs::File::create(&out).with_context(|| format!("{}", out.display()))?;
    let gz = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let sink: Box<dyn Write> =
        if gz { Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast())) } else { Box::new(file) };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, sink);
    let run = run_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (invocations, workers, stages) = write_events(run_dir, &run, &mut w)?;
    w.flush()?;
    let sink = w.into_inner().map_err(|e| anyhow::anyhow!("{}: {}", out.display(), e.error()))?;
    drop(sink);
    println!(
        "{}: {invocations} invocations on {workers} worker slots, {stages} stages (open it in ui.perfetto.dev or chrome://tracing)",
        out.display()
    );
    Ok(())
}

/// Writes the trace's JSON; returns the invocations, worker slots and
/// stages it holds.
fn write_events(run_dir: &Path, run: &str, w: &mut impl Write) -> anyhow::Result<(u64, usize, usize)> {
    let records = fanout_engine::records::read(run_dir)?;
    w.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
    let process =
        serde_json::json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": format!("fanout run {run}")}});
    serde_json::to_writer(&mut *w, &process)?;
    // Per stage: its number; (time, +1 or -1) edges of its invocations.
    let mut stages: BTreeMap<String, u32> = BTreeMap::new();
    let mut edges: Vec<(u64, u32, i32)> = Vec::new();
    let mut workers: BTreeMap<u32, ()> = BTreeMap::new();
    let mut invocations = 0u64;
    for r in records {
        let r = r?;
        invocations += 1;
        if workers.insert(r.worker, ()).is_none() {
            let name = serde_json::json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": r.worker,
                                          "args": {"name": format!("slot {}", r.worker)}});
            w.write_all(b",\n")?;
            serde_json::to_writer(&mut *w, &name)?;
        }
        let next = stages.len() as u32;
        let stage = *stages.entry(r.stage.clone()).or_insert(next);
        let dur = r.finished_us.saturating_sub(r.started_us);
        edges.push((r.started_us, stage, 1));
        edges.push((r.finished_us.max(r.started_us), stage, -1));
        let mut args = serde_json::json!({
            "task": r.task, "attempt": r.attempt, "cold": r.cold, "backup": r.backup, "status": r.status,
            "container": r.container, "queued_us": r.started_us.saturating_sub(r.queued_us),
            "bytes_in": r.bytes_in, "records_in": r.records_in, "bytes_out": r.bytes_out, "records_out": r.records_out,
        });
        if let Some(e) = &r.error {
            args["error"] = e.clone().into();
        }
        let mut name = format!("{} {}", r.stage, r.phase);
        if r.cold {
            name.push_str(" (cold)");
        }
        let slice = serde_json::json!({"name": name, "cat": r.stage, "ph": "X", "ts": r.started_us, "dur": dur,
                                       "pid": 1, "tid": r.worker, "args": args});
        w.write_all(b",\n")?;
        serde_json::to_writer(&mut *w, &slice)?;
    }
    // The counters: invocations in flight per stage, at each change. An
    // end sorts before a start at the same time.
    edges.sort_unstable_by_key(|&(t, stage, delta)| (t, delta, stage));
    let names: BTreeMap<u32, &str> = stages.iter().map(|(n, &i)| (i, n.as_str())).collect();
    let mut in_flight = vec![0i64; stages.len()];
    let mut i = 0;
    while i < edges.len() {
        let t = edges[i].0;
        let mut changed = Vec::new();
        while i < edges.len() && edges[i].0 == t {
            let (_, stage, delta) = edges[i];
            in_flight[stage as usize] += i64::from(delta);
            if !changed.contains(&stage) {
                changed.push(stage);
            }
            i += 1;
        }
        for stage in changed {
            let counter = serde_json::json!({"name": format!("in flight: {}", names[&stage]), "ph": "C", "ts": t,
                                             "pid": 1, "args": {"invocations": in_flight[stage as usize]}});
            w.write_all(b",\n")?;
            serde_json::to_writer(&mut *w, &counter)?;
        }
    }
    w.write_all(b"]}\n")?;
    Ok((invocations, workers.len(), stages.len()))
}
