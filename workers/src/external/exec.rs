//! The exec backend: one process per invocation, never through a shell.
//! The task's records go to its stdin in the stage's io format; its stdout,
//! in the same or a declared format, becomes the stage's output. A
//! non-zero exit, a signal or output that does not parse fails the attempt
//! with the end of its stderr; a process past its deadline is killed with
//! its whole process group.
//!
//! Its function table: `exec = ["program", "arg", ...]`, and besides the
//! common keys `io` (how records go to stdin: lines, csv, jsonl or arrow)
//! and `output` (the format of stdout; default: `io`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Instant;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fanout_datasets::Format;
use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalRef, FieldPath};

use crate::external::codec::{self, IoFormat};
use crate::external::process::{InitServer, NotStarted, TAIL_BYTES, Tail, ended};
use crate::external::settings::{Settings, stem};
use crate::external::{Backend, Container, ExternalContext, Launch, planned};
use crate::function::{FunctionError, Invocation, Planned};

/// The exec backend (`exec = [argv]`): a process per invocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exec;

/// The settings of an exec function table.
struct ExecSettings {
    command: Vec<String>,
    io: Option<IoFormat>,
    output: Option<IoFormat>,
}

impl ExecSettings {
    fn read(s: &mut Settings<'_>, lookup: Option<(&dyn Environment, Option<&std::path::Path>)>) -> Self {
        ExecSettings { command: s.command("exec", lookup), io: s.parse("io"), output: s.parse("output") }
    }
}

impl Backend for Exec {
    fn kind(&self) -> &str {
        "exec"
    }

    fn keys(&self) -> &[&str] {
        &["io", "output"]
    }

    fn check(&self, f: &ExternalCheck<'_>, env: &dyn Environment) -> ExternalChecked {
        let mut s = Settings::new(f.settings);
        let x = ExecSettings::read(&mut s, Some((env, f.cwd)));
        if let (Some(IoFormat::Lines), Some(schema)) = (x.output.or(x.io), f.schema)
            && !one_utf8_column(schema)
        {
            s.problem(FieldPath::keys(["schema"]), "lines output is one utf8 column; use csv, jsonl or arrow for more");
        }
        // The stage is named for its program.
        ExternalChecked {
            name: x.command.first().map_or_else(String::new, |p| stem(p, false)),
            problems: s.into_problems(),
        }
    }

    fn plan(&self, f: &ExternalRef, ctx: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let mut s = Settings::new(&f.settings);
        let x = ExecSettings::read(&mut s, None);
        s.finish()?;
        let input = ctx.input.clone();
        let keyed = ctx.key.is_some();
        let io = x.io.unwrap_or_else(|| codec::default_io(if keyed { None } else { ctx.input_format }, &input));
        let output_format = x.output.unwrap_or(io);
        let output = match (&f.schema, output_format) {
            (Some(s), _) => s.clone(),
            (None, IoFormat::Lines) => Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)])),
            (None, _) => input.clone(),
        };
        if io == IoFormat::Lines && !one_utf8_column(&input) {
            return Err(FunctionError::permanent(format!(
                "io = \"lines\" needs one utf8 column, and this stage's input is {}: use csv, jsonl or arrow",
                codec::columns(&input)
            )));
        }
        // A first stage whose io is the input's own format gets the
        // split's bytes as they are in the file, as GNU parallel's
        // --pipepart passes them (csv: standard dialect with a header).
        let plain_csv =
            ctx.csv.header && ctx.csv.delimiter == b',' && ctx.csv.quote == b'"' && ctx.csv.escape.is_none();
        let raw = !keyed
            && matches!(
                (ctx.input_format, io),
                (Some(Format::Text), IoFormat::Lines)
                    | (Some(Format::Jsonl), IoFormat::Jsonl)
                    | (Some(Format::Csv), IoFormat::Csv)
            )
            && (ctx.input_format != Some(Format::Csv) || plain_csv);
        let function = ExecFunction {
            raw: raw.then(|| Raw {
                csv: (ctx.input_format == Some(Format::Csv)).then_some(ctx.csv),
                headers: Default::default(),
            }),
            program: resolve(&x.command[0]),
            command: x.command,
            env: environment(&f.env),
            cwd: f.cwd.clone(),
            io,
            output: output_format,
            input_schema: input.clone(),
            output_schema: output.clone(),
            params: ctx.params_json(),
        };
        Ok(planned(Arc::new(function), input, output, keyed))
    }
}

/// The variables each invocation sets.
const INVOCATION_VARS: [&str; 4] = ["FANOUT_STAGE", "FANOUT_TASK", "FANOUT_ATTEMPT", "FANOUT_PARAMS"];

/// fanout's environment with `extra` set over it, less
/// [`INVOCATION_VARS`]: what a spawned process would inherit.
fn environment(extra: &[(String, String)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> =
        std::env::vars_os().filter(|(k, _)| !extra.iter().any(|(e, _)| k == e.as_str())).collect();
    env.extend(extra.iter().map(|(k, v)| (k.into(), v.into())));
    env.retain(|(k, _)| !INVOCATION_VARS.iter().any(|v| k == v));
    env
}

/// Whether `schema` is one utf8 column, as lines are.
fn one_utf8_column(schema: &Schema) -> bool {
    schema.fields().len() == 1 && schema.field(0).data_type() == &DataType::Utf8
}

/// The program of a command: a name is looked up on `PATH` once (a spawn
/// would search it every time); a path is kept as it is.
fn resolve(program: &str) -> std::path::PathBuf {
    if !program.contains('/')
        && let Some(path) = std::env::var_os("PATH")
        && let Some(found) = std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
    {
        return found;
    }
    std::path::PathBuf::from(program)
}

/// Input up to this size is written before stdout is read: a pipe holds
/// 64 KiB, so the write cannot block. Larger input is written on a thread
/// of its own while stdout is read.
const INLINE_INPUT: usize = 64 * 1024;

/// Input passed as the file holds it, not re-encoded.
struct Raw {
    /// The dialect of csv input, whose byte ranges need the header first.
    csv: Option<fanout_datasets::CsvOptions>,
    /// Header bytes per csv file, read once.
    headers: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Arc<Vec<u8>>>>,
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
                    let h = Arc::new(fanout_datasets::csv::header_bytes(&split.file, opts).map_err(bad)?);
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
struct ExecFunction {
    /// A first stage fed the split's own bytes.
    raw: Option<Raw>,
    command: Vec<String>,
    /// The program, found on `PATH` once rather than at every spawn.
    program: std::path::PathBuf,
    /// The process's whole environment: fanout's own, then the function
    /// table's `env`, less the `FANOUT_*` variables each invocation sets.
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    cwd: Option<std::path::PathBuf>,
    io: IoFormat,
    output: IoFormat,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    /// The stage's params, as JSON, for `FANOUT_PARAMS`.
    params: String,
}

impl Launch for ExecFunction {
    fn start(self: Arc<Self>) -> Result<Box<dyn Container>, FunctionError> {
        // A scratch file for the processes' stderr; a pipe if none.
        Ok(Box::new(ExecContainer { stderr: tempfile::tempfile().ok(), read: None, init: None, function: self }))
    }

    fn reads_split(&self) -> bool {
        self.raw.is_some()
    }
}

/// A container of an exec function: each invocation is a new process,
/// started by the container's init (started with the first).
struct ExecContainer {
    function: Arc<ExecFunction>,
    /// A scratch file for the processes' stderr.
    stderr: Option<std::fs::File>,
    /// The records the last call read itself.
    read: Option<u64>,
    /// The container's init, once started.
    init: Option<InitServer>,
}

impl Container for ExecContainer {
    fn call(&mut self, inv: &Invocation<'_>, input: &[RecordBatch]) -> Result<Vec<RecordBatch>, FunctionError> {
        let init = match &mut self.init {
            Some(init) if !init.dead => init,
            slot => slot.insert(
                InitServer::start()
                    .map_err(|e| FunctionError::transient(format!("cannot start the container's init: {e}")))?,
            ),
        };
        self.function.call(inv, input, init, self.stderr.as_mut(), &mut self.read)
    }

    fn spent(&self) -> bool {
        self.init.as_ref().is_some_and(|i| i.dead)
    }

    fn records_read(&self) -> Option<u64> {
        self.read
    }
}

impl ExecFunction {
    /// One invocation: a process fed the batches, started by the
    /// container's `init`. `stderr`, a scratch file of the container's,
    /// takes the process's stderr (no thread to drain a pipe); without
    /// one, a pipe is drained.
    fn call(
        &self,
        inv: &Invocation<'_>,
        batches: &[RecordBatch],
        init: &mut InitServer,
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
        let program = &self.command[0];
        let io = |e: std::io::Error| FunctionError::transient(format!("`{program}`: {e}"));
        let mut env = self.env.clone();
        env.extend([
            ("FANOUT_STAGE".into(), inv.stage.into()),
            ("FANOUT_TASK".into(), inv.task.to_string().into()),
            ("FANOUT_ATTEMPT".into(), inv.attempt.to_string().into()),
            ("FANOUT_PARAMS".into(), self.params.clone().into()),
        ]);
        let (stdin, stdin_w) = std::io::pipe().map_err(io)?;
        let (stdout_r, stdout) = std::io::pipe().map_err(io)?;
        let (stderr_fd, stderr_r) = match stderr {
            Some(f) => (std::os::fd::OwnedFd::from(f.try_clone().map_err(io)?), None),
            None => {
                let (r, w) = std::io::pipe().map_err(io)?;
                (std::os::fd::OwnedFd::from(w), Some(r))
            }
        };
        let stdio = [stdin.into(), stdout.into(), stderr_fd];
        let pid =
            init.run(self.program.as_os_str(), &self.command[1..], self.cwd.as_deref(), &env, stdio).map_err(|e| {
                let message = format!("cannot start `{program}`: {e}");
                if init.dead { FunctionError::transient(message) } else { FunctionError::permanent(message) }
            })?;
        // Its container's processes are killed when the deadline passes
        // or the invocation is cancelled, while its stdout is read.
        let (status, stdout, stderr, timed_out) =
            run(init, pid, Pipes { stdin: stdin_w, stdout: stdout_r, stderr: stderr_r }, input, stderr, inv).map_err(
                |e| match e.get_ref().and_then(|e| e.downcast_ref::<NotStarted>()) {
                    Some(why) => FunctionError::permanent(format!("cannot start `{program}`: {why}")),
                    None => io(e),
                },
            )?;
        let with_stderr = |m: String| stderr.under(m, "stderr");
        if timed_out {
            let why = if inv.cancelled() { "was cancelled" } else { "passed its deadline" };
            return Err(FunctionError::transient(with_stderr(format!(
                "`{program}` {why} and was killed with every process it started"
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

/// The pipes of a running invocation, fanout's ends.
struct Pipes {
    stdin: std::io::PipeWriter,
    stdout: std::io::PipeReader,
    /// Its stderr, when no scratch file takes it.
    stderr: Option<std::io::PipeReader>,
}

/// Feeds stdin, collects stdout and the end of stderr (from the pipe, or
/// from `stderr`, the file it went to), and waits for the invocation to
/// end; has the init kill its processes when the invocation expires (says
/// so in the last value).
fn run(
    init: &mut InitServer,
    pid: u32,
    pipes: Pipes,
    input: Vec<u8>,
    stderr: Option<&std::fs::File>,
    inv: &Invocation<'_>,
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Tail, bool)> {
    let Pipes { mut stdin, mut stdout, stderr: errors } = pipes;
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
    let errors = errors.map(|pipe| std::thread::spawn(move || Tail::drain(pipe)));
    let mut out = Vec::new();
    let (read, killed) = read_watching(&mut stdout, &mut out, init, pid, inv);
    let status = init.wait()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let tail = match (errors, stderr) {
        (Some(t), _) => t.join().unwrap_or_default(),
        (None, Some(mut f)) => {
            // The end of what the process wrote.
            let len = f.seek(SeekFrom::End(0))?;
            f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES as u64)))?;
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
/// invocation's processes are killed (by `init`) as soon as it expires
/// (its deadline, or a cancellation); whether they were. Its output up to
/// the kill is read all the same (the pipe closes when they are gone).
/// Should the init die (killed by the function itself, say), its process
/// group (`pid`'s) is killed and the read stops: a process that escaped
/// the group may hold the pipe open, and nothing else would end it.
fn read_watching(
    stdout: &mut std::io::PipeReader,
    out: &mut Vec<u8>,
    init: &mut InitServer,
    pid: u32,
    inv: &Invocation<'_>,
) -> (std::io::Result<()>, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut killed = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if !killed && inv.expired() {
            init.kill();
            killed = true;
        }
        let wait = match inv.deadline {
            _ if killed => PollTimeout::NONE,
            None if inv.cancel.is_none() => PollTimeout::NONE,
            deadline => {
                let left = deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()).min(POLL));
                // Rounded up: a zero timeout at the deadline would spin.
                PollTimeout::from(left.as_millis().clamp(1, POLL.as_millis()) as u16)
            }
        };
        // The init's socket is readable only when it hangs up: its
        // answers come after stdout's end.
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN), PollFd::new(init.socket(), PollFlags::empty())];
        match poll(&mut fds, wait) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return (Err(e.into()), killed),
        }
        let hung_up = fds[1].revents().is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
        if hung_up && !fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            return (Err(init.lost_now()), killed);
        }
        match stdout.read(&mut buf) {
            Ok(0) => return (Ok(()), killed),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), killed),
        }
    }
}
