//! What the exec and lambda backends share about their processes: how
//! they start, how they end, and the end of their output for error
//! messages.
//!
//! Every function process starts under fanout-init (`workers/init/`,
//! built by this crate's build script and embedded here): the first
//! process of its container, which owns everything the function starts.
//! When the function's process exits, or fanout kills the container, or
//! fanout itself dies (even by `kill -9`), the init kills the function's
//! processes and every process they left behind, so none outlives its
//! container. The function starts with the default signal mask and
//! dispositions, in a process group of its own.
//!
//! The inits are started from one thread that lives as long as the
//! process: the kernel sends a child its parent-death signal when the
//! *thread* that started it ends, and a container outlives the thread
//! that started it (an abandoned invocation's, a finished stage's).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock, mpsc};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// fanout-init, built by the build script.
const INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fanout-init"));

/// How long a container's processes have to exit after SIGTERM when it
/// shuts down, before they are killed (Lambda's shutdown phase with one
/// internal extension).
const GRACE_MS: u64 = 500;

/// A command that runs `program` with `args` under fanout-init, in a
/// container of its own (a lambda worker process's); `memory_limit` caps its data memory (heap and
/// anonymous mappings), as a container's memory limit. The caller adds
/// the environment, working directory and standard streams, and starts
/// it with [`spawn`]. A program that cannot be found or run is an error
/// here, as starting it would be.
pub(crate) fn command(
    program: &OsStr,
    args: &[String],
    cwd: Option<&Path>,
    memory_limit: Option<u64>,
) -> std::io::Result<Command> {
    check_program(program, cwd)?;
    let mut cmd = Command::new(init_path()?);
    cmd.arg0("fanout-init").arg("--ppid").arg(std::process::id().to_string());
    cmd.arg("--grace-ms").arg(GRACE_MS.to_string());
    if let Some(bytes) = memory_limit {
        cmd.arg("--rlimit-data").arg(bytes.to_string());
    }
    cmd.arg("--").arg(program).args(args);
    // The init's own process group: a terminal's Ctrl-C goes to fanout,
    // which stops its containers itself.
    cmd.process_group(0);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    Ok(cmd)
}

/// Starts a command made by [`command`], from the thread that starts
/// every init.
pub(crate) fn spawn(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("fanout-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("a thread to start containers");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    let sent = spawner.lock().expect("not poisoned").send((cmd, tx));
    sent.map_err(|_| std::io::Error::other("the container spawner is gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("the container spawner is gone"))?
}

/// Kills a container started by [`spawn`] (`pid` is its init's): its init kills every process
/// of it at once, then exits as the function's process did (killed).
pub(crate) fn kill_container(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
}

/// Shuts a container down as a platform does: its processes get SIGTERM
/// and a grace period, then whatever is left is killed; waits for it.
pub(crate) fn shut_down(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    let _ = child.wait();
}

/// Why an invocation's program could not be run (exec failed), as the
/// init said once it had made its process: the error of [`InitServer::wait`].
#[derive(Debug)]
pub(crate) struct NotStarted(pub(crate) String);

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotStarted {}

/// An exec container's init (`fanout-init --serve`): it starts one
/// process per invocation, one at a time, so that an invocation costs one
/// process, as a plain spawn does, and still owns everything the
/// function starts (see the init's docs). Talked to over a
/// `SOCK_SEQPACKET` socket; dropped, it ends (and so do its processes).
pub(crate) struct InitServer {
    child: Child,
    socket: std::os::fd::OwnedFd,
    /// The init died or stopped answering: the container is spent.
    pub(crate) dead: bool,
}

impl InitServer {
    /// Starts an init for a container of its own.
    pub(crate) fn start() -> std::io::Result<InitServer> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut cmd = Command::new(init_path()?);
        cmd.arg0("fanout-init").arg("--ppid").arg(std::process::id().to_string()).arg("--serve");
        cmd.process_group(0).stdin(theirs).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let child = spawn(cmd)?;
        Ok(InitServer { child, socket: ours, dead: false })
    }

    /// Starts `program` with `args` in `cwd` (the init's own, `None`) with
    /// exactly the environment `env`, its standard streams `stdio`; its
    /// process id.
    pub(crate) fn run(
        &mut self,
        program: &OsStr,
        args: &[String],
        cwd: Option<&Path>,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        stdio: [std::os::fd::OwnedFd; 3],
    ) -> std::io::Result<u32> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let mut m: Vec<u8> = b"R".to_vec();
        let mut field = |bytes: &[u8]| {
            m.extend_from_slice(bytes);
            m.push(0);
        };
        field(cwd.map_or(&b""[..], |c| c.as_os_str().as_bytes()));
        field(b"");
        field((args.len() + 1).to_string().as_bytes());
        field(program.as_bytes());
        for a in args {
            field(a.as_bytes());
        }
        field(env.len().to_string().as_bytes());
        for (k, v) in env {
            let mut var = k.as_bytes().to_vec();
            var.push(b'=');
            var.extend_from_slice(v.as_bytes());
            field(&var);
        }
        m.pop();
        let fds = stdio.each_ref().map(|f| f.as_raw_fd());
        let sent = nix::sys::socket::sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[std::io::IoSlice::new(&m)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        );
        drop(stdio);
        if let Err(e) = sent {
            self.dead = true;
            return Err(std::io::Error::other(format!("the container's init is gone: {e}")));
        }
        let answer = self.answer()?;
        match answer.split_first() {
            Some((b'S', pid)) => Ok(String::from_utf8_lossy(pid).parse().unwrap_or(0)),
            Some((b'F', why)) => Err(std::io::Error::other(String::from_utf8_lossy(why).into_owned())),
            _ => Err(self.lost()),
        }
    }

    /// The socket to the init, to poll: it hangs up when the init dies.
    pub(crate) fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.socket.as_fd()
    }

    /// Marks the init dead (it hung up).
    pub(crate) fn lost_now(&mut self) -> std::io::Error {
        self.lost()
    }

    /// Kills the running invocation's processes now (its end is then
    /// waited for as usual).
    pub(crate) fn kill(&self) {
        use std::os::fd::AsRawFd;
        let _ = nix::sys::socket::send(self.socket.as_raw_fd(), b"K", nix::sys::socket::MsgFlags::empty());
    }

    /// Waits for the running invocation to end: how its process ended,
    /// once every process of it is gone.
    pub(crate) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let answer = self.answer()?;
        match answer.split_first() {
            Some((b'E', raw)) => {
                Ok(std::process::ExitStatus::from_raw(String::from_utf8_lossy(raw).parse().unwrap_or(9)))
            }
            // The process was made, but its program could not be run.
            Some((b'F', why)) => Err(std::io::Error::other(NotStarted(String::from_utf8_lossy(why).into_owned()))),
            _ => Err(self.lost()),
        }
    }

    /// The init's next message.
    fn answer(&mut self) -> std::io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 4096];
        loop {
            match nix::sys::socket::recv(self.socket.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
                Ok(0) => return Err(self.lost()),
                Ok(n) => return Ok(buf[..n].to_vec()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    self.dead = true;
                    return Err(std::io::Error::other(format!("the container's init is gone: {e}")));
                }
            }
        }
    }

    fn lost(&mut self) -> std::io::Error {
        self.dead = true;
        // Its socket closes as it exits, a moment before it can be waited
        // for: give it that moment, to say how it ended.
        let mut status = None;
        for _ in 0..50 {
            status = self.child.try_wait().ok().flatten();
            if status.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let how = match status {
            Some(status) => ended(status),
            None => "stopped answering".to_string(),
        };
        std::io::Error::other(format!("the container's init {how}"))
    }
}

impl Drop for InitServer {
    /// The container retires: the init ends its processes and itself.
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let _ = nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = self.child.wait();
    }
}

/// Where fanout-init can be run from: a sealed in-memory file (a file in
/// the temporary directory where the kernel has none).
fn init_path() -> std::io::Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| install_init().map_err(|e| format!("cannot install fanout-init: {e}")))
        .clone()
        .map_err(std::io::Error::other)
}

fn install_init() -> std::io::Result<PathBuf> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::io::Write;
    // MFD_EXEC says the file is to be run (kernels since 6.3 ask); older
    // kernels refuse the flag.
    let exec = MFdFlags::from_bits_retain(0x0010);
    let memfd = memfd_create(c"fanout-init", MFdFlags::MFD_CLOEXEC | exec)
        .or_else(|_| memfd_create(c"fanout-init", MFdFlags::MFD_CLOEXEC));
    if let Ok(fd) = memfd {
        let mut file = std::fs::File::from(fd);
        file.write_all(INIT)?;
        // Kept open for the process's life: its path is the descriptor's.
        let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::IntoRawFd::into_raw_fd(file)));
        return Ok(path);
    }
    let path = std::env::temp_dir().join(format!("fanout-init-{:016x}", xxhash_rust::xxh3::xxh3_64(INIT)));
    if std::fs::read(&path).is_ok_and(|b| b == INIT) {
        return Ok(path);
    }
    let mut tmp = tempfile::Builder::new().prefix(".fanout-init").tempfile_in(std::env::temp_dir())?;
    tmp.write_all(INIT)?;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o755))?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// Checks that `program` names a file that can be run: a path (relative
/// to `cwd`), or a name found on `PATH`.
pub(crate) fn check_program(program: &OsStr, cwd: Option<&Path>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let path = Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        let full = match cwd {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        let meta = std::fs::metadata(&full)?;
        if meta.is_dir() || !runnable(&full) {
            return Err(std::io::Error::from_raw_os_error(nix::libc::EACCES));
        }
        return Ok(());
    }
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| runnable(&d.join(path))));
    if found { Ok(()) } else { Err(std::io::Error::from_raw_os_error(nix::libc::ENOENT)) }
}

/// How a process ended, for messages: `exited with status 3`, or
/// `was killed by signal 9 (SIGKILL)`.
pub(crate) fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(s) => {
            let name = nix::sys::signal::Signal::try_from(s).map_or("unknown", |s| s.as_str());
            format!("was killed by signal {s} ({name})")
        }
        None => match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("ended ({status})"),
        },
    }
}

/// The end of a process's output, for error messages.
#[derive(Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
}

/// Bytes of output kept.
pub(crate) const TAIL_BYTES: usize = 8 * 1024;
/// Lines of output shown.
const TAIL_LINES: usize = 20;

impl Tail {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL_BYTES {
            self.bytes.drain(..self.bytes.len() - TAIL_BYTES);
        }
    }

    /// Reads `r` to its end, keeping the tail.
    pub(crate) fn drain(r: impl Read) -> Tail {
        let tail = Mutex::new(Tail::default());
        Tail::drain_into(r, &tail);
        tail.into_inner().expect("not poisoned")
    }

    /// Reads `r` to its end into a shared tail.
    pub(crate) fn drain_into(mut r: impl Read, tail: &Mutex<Tail>) {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = r.read(&mut buf) {
            tail.lock().expect("not poisoned").push(&buf[..n]);
        }
    }

    /// `message`, then the last lines under it, marked as the end of the
    /// function's `what` (`stderr`) and indented, so that they read as a
    /// quote under one error, not as errors of their own.
    pub(crate) fn under(&self, message: String, what: &str) -> String {
        let tail = self.text();
        if tail.is_empty() {
            return message;
        }
        let quoted: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        format!("{message}; the end of its {what}:\n{}", quoted.join("\n"))
    }

    /// The last lines, trimmed.
    pub(crate) fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}
