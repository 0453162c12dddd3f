//! The exec backend: one process per invocation, never through a shell.
//! The task's records go to its stdin in the stage's io format; its stdout,
//! in the same or a declared format, becomes the stage's output. A
//! non-zero exit, a signal or output that does not parse fails the attempt
//! with the end of its stderr; a process past its deadline is killed with
//! its whole process group.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_jobs::IoFormat;

use crate::external::{Tail, codec, kill_group};
use crate::function::{FunctionError, Invocation};

/// Input up to this size is written before stdout is read: a pipe holds
/// 64 KiB, so the write cannot block. Larger input is written on a thread
/// of its own while stdout is read.
const INLINE_INPUT: usize = 64 * 1024;

/// An exec function, ready to run.
pub(crate) struct Exec {
    pub(crate) command: Vec<String>,
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
    /// One invocation: a process fed the batches.
    pub(crate) fn call(
        &self,
        inv: &Invocation<'_>,
        batches: &[RecordBatch],
    ) -> Result<Vec<RecordBatch>, FunctionError> {
        let input = codec::encode(self.io, &self.input_schema, batches).map_err(FunctionError::permanent)?;
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("FANOUT_STAGE", inv.stage)
            .env("FANOUT_TASK", inv.task.to_string())
            .env("FANOUT_ATTEMPT", inv.attempt.to_string())
            .env("FANOUT_PARAMS", &self.params)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a kill takes its children too.
            .process_group(0);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let program = &self.command[0];
        let mut child = cmd.spawn().map_err(|e| FunctionError::permanent(format!("cannot start `{program}`: {e}")))?;
        let watchdog = inv.deadline.map(|d| Watchdog::start(child.id(), d));
        let result = run(&mut child, input);
        let timed_out = watchdog.is_some_and(Watchdog::stop);
        let (status, stdout, stderr) = result.map_err(|e| FunctionError::transient(format!("`{program}`: {e}")))?;
        let tail = stderr.text();
        let with_stderr = |m: String| if tail.is_empty() { m } else { format!("{m}; the end of its stderr:\n{tail}") };
        if timed_out {
            return Err(FunctionError::transient(with_stderr(format!(
                "`{program}` passed its deadline and was killed with its process group"
            ))));
        }
        if let Some(signal) = status.signal() {
            return Err(FunctionError::transient(with_stderr(format!(
                "`{program}` was killed by signal {signal} ({})",
                signal_name(signal)
            ))));
        }
        if !status.success() {
            return Err(FunctionError::transient(with_stderr(format!("`{program}` exited with {status}"))));
        }
        codec::decode(self.output, &stdout, &self.output_schema).map_err(|e| {
            FunctionError::transient(with_stderr(format!(
                "`{program}` wrote {} that does not parse: {e}",
                self.output.name()
            )))
        })
    }
}

/// Feeds stdin, collects stdout and the end of stderr, and waits.
fn run(child: &mut Child, input: Vec<u8>) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Tail)> {
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
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
    let errors = std::thread::spawn(move || Tail::drain(stderr));
    let mut out = Vec::new();
    let read = stdout.read_to_end(&mut out);
    let status = child.wait()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let tail = errors.join().unwrap_or_default();
    read?;
    Ok((status, out, tail))
}

/// Kills a process group at its deadline unless stopped first.
struct Watchdog {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(pid: u32, deadline: Instant) -> Watchdog {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let wait = deadline.saturating_duration_since(Instant::now());
            match stopped.recv_timeout(wait) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    kill_group(pid);
                    true
                }
                _ => false,
            }
        });
        Watchdog { stop, thread }
    }

    /// Stops the watchdog; whether it had fired.
    fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// The name of a signal, for messages.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str())
}
