//! fanout-init: the first process of every exec and lambda container, as
//! tini is of a Docker container. fanout starts it; it starts the
//! function and owns everything the function starts, so that no process
//! of a container outlives it, whatever becomes of fanout:
//!
//! - it is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a process the
//!   function starts and leaves behind (a `cmd &`, a daemon that left its
//!   session) becomes its child, not init's;
//! - it dies with fanout (`PR_SET_PDEATHSIG`), and ends the function's
//!   processes first, so that even `kill -9` of fanout leaves none;
//! - when the function's process exits, it kills whatever the function
//!   left running (its process group and every descendant), reaps them,
//!   and exits as the function did: the same code, or the same signal;
//! - the function starts with the default signal mask and dispositions
//!   (fanout blocks SIGINT and SIGTERM in its own threads), in a process
//!   group of its own, with the memory limit it is given.
//!
//! Signals it takes:
//! - SIGUSR1 (fanout's kill, and fanout's death): every process of the
//!   container is killed at once;
//! - SIGTERM, SIGINT, SIGHUP (a container's shutdown, as a platform
//!   does it): the function's processes get SIGTERM, and whatever is left
//!   after the grace period (`--grace-ms`) is killed.
//!
//! Usage: `fanout-init --ppid PID [--rlimit-data BYTES] [--grace-ms MS]
//! -- PROGRAM [ARGS...]`. `PID` is fanout's: if it is already gone, the
//! init exits at once. A program that cannot be started is reported on
//! stderr (`fanout-init: cannot start ...`) with exit code 127.
//!
//! It is built by the workers crate's build script with the standard
//! library alone (no crates), and embedded in fanout. Linux only.

use std::ffi::{OsString, c_int, c_ulong, c_void};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

#[cfg(not(all(
    target_os = "linux",
    target_pointer_width = "64",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "powerpc64",
        target_arch = "s390x"
    )
)))]
compile_error!("fanout-init knows the signal numbers of 64-bit Linux on x86_64, aarch64, riscv64, loongarch64, powerpc64 and s390x");

// Signal numbers of the architectures above.
const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGKILL: c_int = 9;
const SIGUSR1: c_int = 10;
const SIGTERM: c_int = 15;
const SIGSTOP: c_int = 19;
const SIGCHLD: c_int = 17;
/// The highest signal number (SIGRTMAX).
const SIGMAX: c_int = 64;

const PR_SET_PDEATHSIG: c_int = 1;
const PR_SET_NAME: c_int = 15;
const PR_SET_CHILD_SUBREAPER: c_int = 36;
const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const SIG_DFL: usize = 0;
const WNOHANG: c_int = 1;
const ECHILD: i32 = 10;
const EAGAIN: i32 = 11;
const RLIMIT_DATA: c_int = 2;
const RLIMIT_CORE: c_int = 4;
/// rt_sigaction(2)'s number: the C library's sigaction refuses the
/// signals it keeps for itself (32 and 33), which posix_spawn leaves
/// ignored in the init.
#[cfg(target_arch = "x86_64")]
const SYS_RT_SIGACTION: i64 = 13;
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64", target_arch = "loongarch64"))]
const SYS_RT_SIGACTION: i64 = 134;
#[cfg(target_arch = "powerpc64")]
const SYS_RT_SIGACTION: i64 = 173;
#[cfg(target_arch = "s390x")]
const SYS_RT_SIGACTION: i64 = 174;

/// glibc's and musl's `sigset_t`: 1,024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

unsafe extern "C" {
    fn prctl(option: c_int, arg2: c_ulong, ...) -> c_int;
    fn getppid() -> c_int;
    fn getpid() -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signal: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigtimedwait(set: *const SigSet, info: *mut c_void, timeout: *const Timespec) -> c_int;
    fn signal(signal: c_int, handler: usize) -> usize;
    fn kill(pid: c_int, signal: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn setpgid(pid: c_int, pgid: c_int) -> c_int;
    fn setrlimit(resource: c_int, limit: *const Rlimit) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
    fn syscall(number: i64, ...) -> i64;
}

/// The settings on the command line.
struct Args {
    ppid: Option<i32>,
    rlimit_data: Option<u64>,
    grace: Duration,
    command: Vec<OsString>,
}

fn args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    let mut out = Args { ppid: None, rlimit_data: None, grace: Duration::from_millis(500), command: Vec::new() };
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().and_then(|v| v.into_string().ok()).ok_or_else(|| format!("{} needs a value", a.display()))
        };
        match a.to_str() {
            Some("--ppid") => out.ppid = Some(value()?.parse().map_err(|e| format!("--ppid: {e}"))?),
            Some("--rlimit-data") => out.rlimit_data = Some(value()?.parse().map_err(|e| format!("--rlimit-data: {e}"))?),
            Some("--grace-ms") => {
                out.grace = Duration::from_millis(value()?.parse().map_err(|e| format!("--grace-ms: {e}"))?)
            }
            Some("--") => {
                out.command = args.by_ref().collect();
                break;
            }
            _ => return Err(format!("unknown argument {}", a.display())),
        }
    }
    if out.command.is_empty() {
        return Err("no command after --".into());
    }
    Ok(out)
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fanout-init: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: prctl(2) with integer arguments; the name is a NUL-ended
    // static string.
    unsafe {
        prctl(PR_SET_NAME, c"fanout-init".as_ptr() as c_ulong);
        prctl(PR_SET_CHILD_SUBREAPER, 1);
    }
    // The signals it acts on are taken by sigtimedwait, never by handlers.
    let watched = sigset(&[SIGCHLD, SIGUSR1, SIGTERM, SIGINT, SIGHUP]);
    // SAFETY: the sets are initialised by sigemptyset and sigaddset.
    unsafe {
        sigprocmask(SIG_BLOCK, &watched, std::ptr::null_mut());
        prctl(PR_SET_PDEATHSIG, SIGUSR1 as c_ulong);
    }
    // fanout died before the death signal was armed: start nothing.
    // SAFETY: getppid(2) cannot fail.
    if args.ppid.is_some_and(|p| unsafe { getppid() } != p) {
        std::process::exit(1);
    }

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    let rlimit_data = args.rlimit_data;
    // SAFETY: the closure runs in the child between fork and exec of a
    // single-threaded process; it calls async-signal-safe functions only
    // (sigprocmask, signal, setpgid, prctl, setrlimit) and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut empty = SigSet([0; 16]);
            sigemptyset(&mut empty);
            sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut());
            // Ignored signals stay ignored across exec (the standard
            // library ignores SIGPIPE); handled ones are reset by it. The
            // kernel's sigaction, all zero: SIG_DFL, no flags, no mask
            // (in every architecture's layout of it).
            let default = [0u64; 4];
            for s in 1..=SIGMAX {
                if s != SIGKILL && s != SIGSTOP {
                    syscall(SYS_RT_SIGACTION, s as i64, default.as_ptr(), std::ptr::null::<u64>(), 8i64);
                }
            }
            if setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Should the init itself be killed outright, its child goes too.
            prctl(PR_SET_PDEATHSIG, SIGKILL as c_ulong);
            if let Some(bytes) = rlimit_data {
                let limit = Rlimit { cur: bytes, max: bytes };
                if setrlimit(RLIMIT_DATA, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fanout-init: cannot start `{}`: {e}", args.command[0].display());
            std::process::exit(127);
        }
    };
    let main = child.id() as c_int;
    drop(child);
    // The init keeps none of the container's pipes open: a reader sees
    // their end when the function's processes are gone.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2(2) onto the standard descriptors.
        unsafe {
            for fd in 0..3 {
                dup2(null.as_raw_fd(), fd);
            }
        }
    }

    let mut init = Init { main, status: None };
    let mut shutdown: Option<Instant> = None;
    loop {
        let wait = shutdown.map(|at| at.saturating_duration_since(Instant::now()));
        match next_signal(&watched, wait) {
            Some(SIGCHLD) => {
                init.reap();
                if init.status.is_some() {
                    break;
                }
            }
            Some(SIGUSR1) => break,
            Some(_) if shutdown.is_none() => {
                // A shutdown: the function may finish what it is doing.
                init.signal_all(SIGTERM);
                shutdown = Some(Instant::now() + args.grace);
            }
            Some(_) => {}
            // The grace period is over.
            None => break,
        }
    }
    init.kill_all();
    exit_as(init.status.unwrap_or(ExitStatus::from_raw(SIGKILL)));
}

/// The signal set of `signals`.
fn sigset(signals: &[c_int]) -> SigSet {
    let mut set = SigSet([0; 16]);
    // SAFETY: the set is a sigset_t's size; sigemptyset initialises it.
    unsafe {
        sigemptyset(&mut set);
        for &s in signals {
            sigaddset(&mut set, s);
        }
    }
    set
}

/// The next signal of `set`, or `None` when `wait` passes first.
fn next_signal(set: &SigSet, wait: Option<Duration>) -> Option<c_int> {
    loop {
        // An hour at a time when there is no limit.
        let wait = wait.unwrap_or(Duration::from_secs(3600));
        let timeout = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
        // SAFETY: a valid set and timeout; no siginfo is asked for.
        let s = unsafe { sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        if s > 0 {
            return Some(s);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(EAGAIN) if wait < Duration::from_secs(3600) => return None,
            _ => continue,
        }
    }
}

/// The function's main process and, once it ended, how.
struct Init {
    main: c_int,
    status: Option<ExitStatus>,
}

impl Init {
    /// Reaps the children that ended; notes the main process's status.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) with a valid status pointer.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.main {
                self.status = Some(ExitStatus::from_raw(status));
            }
        }
    }

    /// Sends `signal` to the function's process group and every child of
    /// the init (the processes left behind by others that ended).
    fn signal_all(&self, signal: c_int) {
        // SAFETY: kill(2); an absent group or process is not an error here.
        unsafe {
            kill(-self.main, signal);
            for pid in children() {
                kill(pid, signal);
                kill(-pid, signal);
            }
        }
    }

    /// Kills every process of the container and reaps them: the init has
    /// no child left, so none of the function's descendants is alive
    /// (each has an ancestor that is the init's child, or is one).
    fn kill_all(&mut self) {
        loop {
            self.signal_all(SIGKILL);
            let mut status = 0;
            // SAFETY: waitpid(2) with a valid status pointer.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid == self.main {
                self.status = Some(ExitStatus::from_raw(status));
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(ECHILD) {
                return;
            }
            if pid == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The init's children: those it started and the orphans it adopted.
fn children() -> Vec<c_int> {
    // SAFETY: getpid(2) cannot fail.
    let me = unsafe { getpid() };
    match std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        Ok(list) => list.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
        // A kernel without the children file: the process table.
        Err(_) => {
            let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<c_int>().ok())
                .filter(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    // pid (comm) state ppid ...: the comm may hold spaces.
                    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                    after.split_whitespace().nth(1).and_then(|p| p.parse::<c_int>().ok()) == Some(me)
                })
                .collect()
        }
    }
}

/// Exits as the function's main process did: its code, or its signal.
fn exit_as(status: ExitStatus) -> ! {
    if let Some(code) = status.code() {
        // SAFETY: _exit(2).
        unsafe { _exit(code) }
    }
    let s = status.signal().unwrap_or(SIGKILL);
    // SAFETY: the signal's default action, unblocked, raised at itself;
    // no core file of the init's own.
    unsafe {
        setrlimit(RLIMIT_CORE, &Rlimit { cur: 0, max: 0 });
        signal(s, SIG_DFL);
        let mut empty = SigSet([0; 16]);
        sigemptyset(&mut empty);
        sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut());
        kill(getpid(), s);
        _exit(128 + s)
    }
}
