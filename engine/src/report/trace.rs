//! A run's invocations in the Chrome trace-event format (`fanout trace`),
//! which Perfetto (ui.perfetto.dev) and chrome://tracing load: a track per
//! worker slot, a slice per invocation (its stage and phase, with task,
//! attempt, cold, backup, status, error, bytes and records as args), and a
//! counter per stage of the invocations in flight. Written as it is read
//! (the counters from a sorted list of start and end times: 16 bytes an
//! invocation), so 10^6 invocations make a trace without holding their
//! records; gzip-compressed when the file name ends in `.gz`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::EngineError;

/// What a trace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traced {
    /// Invocations (slices).
    pub invocations: u64,
    /// Worker slots (tracks).
    pub workers: usize,
    /// Stages (counters).
    pub stages: usize,
}

/// Writes the trace of the run in `run_dir` to `out`: to a temporary file
/// beside it, renamed into place when whole, so that a failure leaves no
/// half a trace.
pub fn write_trace(run_dir: &Path, out: &Path) -> Result<Traced, EngineError> {
    let at = |e: std::io::Error| EngineError::io(out, e);
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // tempfile's error names its own file; the cause is what counts.
    let temp = tempfile::Builder::new().prefix(".fanout-trace-").tempfile_in(dir).map_err(|e| {
        let text = e.to_string();
        at(std::io::Error::new(e.kind(), text.split(" at path ").next().unwrap_or(&text).to_string()))
    })?;
    // Readable as a file `create` makes (a temporary file is its owner's).
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    temp.as_file().set_permissions(readable).map_err(at)?;
    let file = temp.as_file().try_clone().map_err(at)?;
    let gz = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let sink: Box<dyn Write> =
        if gz { Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast())) } else { Box::new(file) };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, sink);
    let run = run_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (invocations, workers, stages) = write_events(run_dir, &run, &mut w)?;
    w.flush().map_err(at)?;
    let sink = w.into_inner().map_err(|e| at(std::io::Error::new(e.error().kind(), e.error().to_string())))?;
    drop(sink);
    temp.persist(out).map_err(|e| at(e.error))?;
    Ok(Traced { invocations, workers, stages })
}

/// Writes the trace's JSON; returns the invocations, worker slots and
/// stages it holds. The events are written by hand (numbers through
/// `itoa`, strings through serde_json's escaping): building a
/// `serde_json::Value` per event took most of the time.
fn write_events(run_dir: &Path, run: &str, w: &mut impl Write) -> Result<(u64, usize, usize), EngineError> {
    let io = |e: std::io::Error| EngineError::io(run_dir, e);
    let mut head = || -> std::io::Result<()> {
        w.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
        w.write_all(b"{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":")?;
        string(w, &format!("fanout run {run}"))?;
        w.write_all(b"}}")
    };
    head().map_err(io)?;
    // Per stage: its number; (time, +1 or -1) edges of its invocations.
    let mut stages: BTreeMap<String, u32> = BTreeMap::new();
    let mut edges: Vec<(u64, u32, i32)> = Vec::new();
    let mut workers: BTreeMap<usize, ()> = BTreeMap::new();
    let mut invocations = 0u64;
    let mut failed: std::io::Result<()> = Ok(());
    let mut n = itoa::Buffer::new();
    crate::records::scan(run_dir, |r| {
        if failed.is_err() {
            return;
        }
        invocations += 1;
        let stage = match stages.get(r.stage) {
            Some(&i) => i,
            None => {
                let i = stages.len() as u32;
                stages.insert(r.stage.to_string(), i);
                i
            }
        };
        let dur = r.finished_us.saturating_sub(r.started_us);
        edges.push((r.started_us, stage, 1));
        edges.push((r.finished_us.max(r.started_us), stage, -1));
        let new_worker = workers.insert(r.worker, ()).is_none();
        failed = (|| -> std::io::Result<()> {
            if new_worker {
                w.write_all(b",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":")?;
                w.write_all(n.format(r.worker).as_bytes())?;
                w.write_all(b",\"args\":{\"name\":\"slot ")?;
                w.write_all(n.format(r.worker).as_bytes())?;
                w.write_all(b"\"}}")?;
            }
            w.write_all(b",\n{\"name\":")?;
            let cold = if r.cold { " (cold)" } else { "" };
            string(w, &format!("{} {}{cold}", r.stage, r.phase))?;
            w.write_all(b",\"cat\":")?;
            string(w, r.stage)?;
            w.write_all(b",\"ph\":\"X\"")?;
            for (key, v) in [("ts", r.started_us), ("dur", dur)] {
                write!(w, ",\"{key}\":")?;
                w.write_all(n.format(v).as_bytes())?;
            }
            w.write_all(b",\"pid\":1,\"tid\":")?;
            w.write_all(n.format(r.worker).as_bytes())?;
            w.write_all(b",\"args\":{\"task\":")?;
            w.write_all(n.format(r.task).as_bytes())?;
            w.write_all(b",\"attempt\":")?;
            w.write_all(n.format(r.attempt).as_bytes())?;
            write!(w, ",\"cold\":{},\"backup\":{},\"status\":", r.cold, r.backup)?;
            string(w, r.status)?;
            let numbers = [
                ("container", r.container),
                ("queued_us", r.started_us.saturating_sub(r.queued_us)),
                ("bytes_in", r.bytes_in),
                ("records_in", r.records_in),
                ("bytes_out", r.bytes_out),
                ("records_out", r.records_out),
            ];
            for (key, v) in numbers {
                write!(w, ",\"{key}\":")?;
                w.write_all(n.format(v).as_bytes())?;
            }
            if let Some(e) = r.error {
                w.write_all(b",\"error\":")?;
                string(w, e)?;
            }
            w.write_all(b"}}")
        })();
    })?;
    failed.map_err(io)?;
    // The counters: invocations in flight per stage, at each change. An
    // end sorts before a start at the same time.
    edges.sort_unstable_by_key(|&(t, stage, delta)| (t, delta, stage));
    let names: Vec<String> = {
        let mut v = vec![String::new(); stages.len()];
        for (name, &i) in &stages {
            v[i as usize] = serde_json::to_string(&format!("in flight: {name}")).expect("a string serializes");
        }
        v
    };
    let mut counters = || -> std::io::Result<()> {
        let mut in_flight = vec![0i64; stages.len()];
        let mut i = 0;
        let mut changed = Vec::new();
        while i < edges.len() {
            let t = edges[i].0;
            changed.clear();
            while i < edges.len() && edges[i].0 == t {
                let (_, stage, delta) = edges[i];
                in_flight[stage as usize] += i64::from(delta);
                if !changed.contains(&stage) {
                    changed.push(stage);
                }
                i += 1;
            }
            for &stage in &changed {
                w.write_all(b",\n{\"name\":")?;
                w.write_all(names[stage as usize].as_bytes())?;
                w.write_all(b",\"ph\":\"C\",\"ts\":")?;
                w.write_all(n.format(t).as_bytes())?;
                w.write_all(b",\"pid\":1,\"args\":{\"invocations\":")?;
                w.write_all(n.format(in_flight[stage as usize]).as_bytes())?;
                w.write_all(b"}}")?;
            }
        }
        w.write_all(b"]}\n")?;
        Ok(())
    };
    counters().map_err(io)?;
    Ok((invocations, workers.len(), stages.len()))
}

/// `s` as a JSON string.
fn string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, s).map_err(std::io::Error::from)
}
