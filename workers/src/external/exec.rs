//! The exec backend: one process per invocation, never through a shell.
//! The task's records go to its stdin in the stage's io format; its stdout,
//! in the same or a declared format, becomes the stage's output. A
//! non-zero exit, a signal or output that does not parse fails the attempt
//! with the end of its stderr; a process past its deadline is killed with
//! its whole process group.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_jobs::IoFormat;

use crate::external::{Tail, codec, ended, kill_group};
use crate::function::{FunctionError, Invocation};

/// Input up to this size is written before stdout is read: a pipe holds
/// 64 KiB, so the write cannot block. Larger input is written on a thread
/// of its own while stdout is read.
const INLINE_INPUT: usize = 64 * 1024;

/// Input passed as the file holds it, not re-encoded.
pub(crate) struct Raw {
    /// The dialect of csv input, whose byte ranges need the header first.
    pub(crate) csv: Option<fanout_datasets::CsvOptions>,
    /// Header bytes per csv file, read once.
    pub(crate) headers: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Arc<Vec<u8>>>>,
}

impl Raw {
    /// How many records `input` holds: its lines (csv: outside quotes,
    /// less the header).
    fn records(&self, input: &[u8]) -> u64 {
        let mut lines = if self.csv.is_some() {
            let mut quoted = false;
            let mut n = 0;
            for &b in input {
                match b {
                    b'"' => quoted = !quoted,
                    b'\n' if !quoted => n += 1,
                    _ => {}
                }
            }
            n
        } else {
            memchr::memchr_iter(b'\n', input).count() as u64
        };
        if !input.is_empty() && !input.ends_with(b"\n") {
            lines += 1;
        }
        if self.csv.is_some() { lines.saturating_sub(1) } else { lines }
    }

    /// The split's bytes as the program gets them.
    fn input(&self, split: &fanout_datasets::Split) -> Result<Vec<u8>, FunctionError> {
        let bad = |e: fanout_datasets::Error| FunctionError::permanent(e.to_string());
        let mut out = Vec::with_capacity(split.bytes() as usize + 1024);
        if let (Some(opts), fanout_datasets::SplitRange::Bytes { .. }) = (self.csv, &split.range) {
            let path = &split.file.path;
            let mut headers = self.headers.lock().expect("not poisoned");
            let header = match headers.get(path) {
                Some(h) => h.clone(),
                None => {
                    let h = Arc::new(fanout_datasets::csv::header_bytes(path, opts).map_err(bad)?);
                    headers.insert(path.clone(), h.clone());
                    h
                }
            };
            drop(headers);
            out.extend_from_slice(&header);
        }
        fanout_datasets::split_bytes(split)
            .map_err(bad)?
            .read_to_end(&mut out)
            .map_err(|e| FunctionError::transient(format!("{split}: {e}")))?;
        Ok(out)
    }
}

/// An exec function, ready to run.
pub(crate) struct Exec {
    /// A first stage fed the split's own bytes.
    pub(crate) raw: Option<Raw>,
    pub(crate) command: Vec<String>,
    /// The program, found on `PATH` once rather than at every spawn.
    pub(crate) program: std::path::PathBuf,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<std::path::PathBuf>,
    pub(crate) io: IoFormat,
    pub(crate) output: IoFormat,
    pub(crate) input_schema: SchemaRef,
    pub(crate) output_schema: SchemaRef,
    /// The stage's params, as JSON, for `FANOUT_PARAMS`.
    pub(crate) params: String,
}

impl Exec {
    /// One invocation: a process fed the batches. `stderr`, a scratch
    /// file of the container's, takes the process's stderr (no thread to
    /// drain a pipe); without one, a pipe is drained.
    pub(crate) fn call(
        &self,
        inv: &Invocation<'_>,
        batches: &[RecordBatch],
        mut stderr: Option<&mut std::fs::File>,
        read: &mut Option<u64>,
    ) -> Result<Vec<RecordBatch>, FunctionError> {
        if let Some(f) = stderr.as_deref_mut() {
            f.set_len(0).and_then(|_| f.rewind()).map_err(|e| FunctionError::transient(format!("stderr: {e}")))?;
        }
        let stderr = stderr.as_deref();
        *read = None;
        let input = match (&self.raw, inv.split) {
            (Some(raw), Some(split)) => {
                let input = raw.input(split)?;
                *read = Some(raw.records(&input));
                input
            }
            _ => codec::encode(self.io, &self.input_schema, batches).map_err(FunctionError::permanent)?,
        };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("FANOUT_STAGE", inv.stage)
            .env("FANOUT_TASK", inv.task.to_string())
            .env("FANOUT_ATTEMPT", inv.attempt.to_string())
            .env("FANOUT_PARAMS", &self.params)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match stderr {
                Some(f) => Stdio::from(f.try_clone().map_err(|e| FunctionError::transient(format!("stderr: {e}")))?),
                None => Stdio::piped(),
            })
            // Its own process group, so that a kill takes its children too.
            .process_group(0);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let program = &self.command[0];
        let mut child = cmd.spawn().map_err(|e| FunctionError::permanent(format!("cannot start `{program}`: {e}")))?;
        // Its process group is killed when the deadline passes or the
        // invocation is cancelled, while its stdout is read.
        let (status, stdout, stderr, timed_out) =
            run(&mut child, input, stderr, inv).map_err(|e| FunctionError::transient(format!("`{program}`: {e}")))?;
        let tail = stderr.text();
        let with_stderr = |m: String| if tail.is_empty() { m } else { format!("{m}; the end of its stderr:\n{tail}") };
        if timed_out {
            let why = if inv.cancelled() { "was cancelled" } else { "passed its deadline" };
            return Err(FunctionError::transient(with_stderr(format!(
                "`{program}` {why} and was killed with its process group"
            ))));
        }
        if !status.success() {
            return Err(FunctionError::transient(with_stderr(format!("`{program}` {}", ended(status)))));
        }
        codec::decode(self.output, &stdout, &self.output_schema).map_err(|e| {
            FunctionError::transient(with_stderr(format!(
                "`{program}` wrote {} that does not parse: {e}",
                self.output.name()
            )))
        })
    }
}

/// Feeds stdin, collects stdout and the end of stderr (from the pipe, or
/// from `stderr`, the file it went to), and waits; kills the process group
/// when the invocation expires (says so in the last value).
fn run(
    child: &mut Child,
    input: Vec<u8>,
    stderr: Option<&std::fs::File>,
    inv: &Invocation<'_>,
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Tail, bool)> {
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let writer = if input.len() <= INLINE_INPUT {
        // A process that exits without reading its input is not an error.
        let _ = stdin.write_all(&input);
        drop(stdin);
        None
    } else {
        Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        }))
    };
    let errors = child.stderr.take().map(|pipe| std::thread::spawn(move || Tail::drain(pipe)));
    let mut out = Vec::new();
    let (read, killed) = if inv.deadline.is_some() || inv.cancel.is_some() {
        read_watching(&mut stdout, &mut out, child.id(), inv)
    } else {
        (stdout.read_to_end(&mut out).map(drop), false)
    };
    let status = child.wait()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let tail = match (errors, stderr) {
        (Some(t), _) => t.join().unwrap_or_default(),
        (None, Some(mut f)) => {
            // The end of what the process wrote.
            let len = f.seek(SeekFrom::End(0))?;
            f.seek(SeekFrom::Start(len.saturating_sub(super::TAIL_BYTES as u64)))?;
            Tail::drain(f)
        }
        (None, None) => Tail::default(),
    };
    read?;
    Ok((status, out, tail, killed))
}

/// How often a process's invocation is checked for a cancellation.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Reads `stdout` to its end, waiting on it with poll(2) so that the
/// process group of `pid` is killed as soon as the invocation expires (its
/// deadline, or a cancellation); whether it was killed. Its output up to
/// the kill is read all the same (the pipe closes when the group dies).
fn read_watching(
    stdout: &mut std::process::ChildStdout,
    out: &mut Vec<u8>,
    pid: u32,
    inv: &Invocation<'_>,
) -> (std::io::Result<()>, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut killed = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !killed && inv.expired() {
            kill_group(pid);
            killed = true;
        }
        let wait = if killed {
            PollTimeout::NONE
        } else {
            let left = inv.deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()).min(POLL));
            // Rounded up: a zero timeout at the deadline would spin.
            PollTimeout::from(left.as_millis().clamp(1, POLL.as_millis()) as u16)
        };
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return (Err(e.into()), killed),
        }
        match stdout.read(&mut buf) {
            Ok(0) => return (Ok(()), killed),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), killed),
        }
    }
}
