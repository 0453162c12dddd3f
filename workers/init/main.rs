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
//! `fanout-init --ppid PID --serve` is an exec container's init, which
//! starts one process per invocation, one at a time, for as long as the
//! container lives, so that an invocation costs one process, not two.
//! Its stdin is a `SOCK_SEQPACKET` socket to fanout, one message a
//! datagram:
//! - fanout sends `R` with the invocation (NUL-separated: working
//!   directory, data rlimit or nothing, the argument count and the
//!   arguments, the variable count and `NAME=value` each) and its stdin,
//!   stdout and stderr as `SCM_RIGHTS`; the init answers `S` and the
//!   process id, or `F` and why the program could not start;
//! - when that process exits, the init kills what it left running, reaps
//!   it, and sends `E` and the raw wait status;
//! - `K` kills the invocation's processes now (its `E` follows);
//! - fanout's end closing (the container retired) or fanout dying ends
//!   the invocation's processes and the init.
//!
//! It is built by the workers crate's build script with the standard
//! library alone (no crates), and embedded in fanout. Linux only.
//!
//! (One file by construction: `workers/build.rs` compiles it with `rustc`
//! alone, std only, to embed a small, static binary; its parts share the raw
//! system calls declared here.)

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
const SFD_CLOEXEC: c_int = 0o2000000;
const O_CLOEXEC: c_int = 0o2000000;
const POLLIN: i16 = 1;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const MSG_NOSIGNAL: c_int = 0x4000;
const SOL_SOCKET: c_int = 1;
const SCM_RIGHTS: c_int = 1;
const EINTR: i32 = 4;
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
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

/// `struct msghdr` of 64-bit Linux.
#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
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
    fn fork() -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn chdir(path: *const std::ffi::c_char) -> c_int;
    fn execvp(file: *const std::ffi::c_char, argv: *const *const std::ffi::c_char) -> c_int;
    static mut environ: *const *const std::ffi::c_char;
    fn _exit(code: c_int) -> !;
    fn syscall(number: i64, ...) -> i64;
    fn signalfd(fd: c_int, mask: *const SigSet, flags: c_int) -> c_int;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    fn send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> isize;
}

/// The settings on the command line.
struct Args {
    ppid: Option<i32>,
    serve: bool,
    rlimit_data: Option<u64>,
    grace: Duration,
    command: Vec<OsString>,
}

fn args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    let mut out =
        Args { ppid: None, serve: false, rlimit_data: None, grace: Duration::from_millis(500), command: Vec::new() };
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
            Some("--serve") => out.serve = true,
            Some("--") => {
                out.command = args.by_ref().collect();
                break;
            }
            _ => return Err(format!("unknown argument {}", a.display())),
        }
    }
    if out.command.is_empty() && !out.serve {
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
    // The signals it acts on are taken by sigtimedwait (or a signalfd),
    // never by handlers.
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

    if args.serve {
        serve(&watched);
    }
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    prepare(&mut cmd, args.rlimit_data);
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

/// Starts the function as a container's process must start: default
/// signal mask and dispositions, a process group of its own, killed if
/// the init is, with its memory limit.
fn prepare(cmd: &mut Command, rlimit_data: Option<u64>) {
    let ignored = ignored_signals();
    // SAFETY: the closure runs in the child between fork and exec of a
    // single-threaded process; it calls async-signal-safe functions only
    // (sigprocmask, rt_sigaction, setpgid, prctl, setrlimit) and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || as_container_process(ignored, rlimit_data));
    }
}

/// In a child between fork and exec: the default signal mask and
/// dispositions (`ignored`: the signals the init ignores), a process group
/// of its own, killed if the init is, its memory limit.
///
/// # Safety
/// Only in a child of a fork of this single-threaded process: it calls
/// async-signal-safe functions only (sigprocmask, rt_sigaction, setpgid,
/// prctl, setrlimit) and allocates nothing.
unsafe fn as_container_process(ignored: u64, rlimit_data: Option<u64>) -> std::io::Result<()> {
    // SAFETY: the caller's.
    unsafe {
        let mut empty = SigSet([0; 16]);
        sigemptyset(&mut empty);
        sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut());
        // Ignored signals stay ignored across exec (the standard library
        // ignores SIGPIPE); handled ones are reset by it. The kernel's
        // sigaction, all zero: SIG_DFL, no flags, no mask (in every
        // architecture's layout of it).
        let default = [0u64; 4];
        for s in 1..=SIGMAX {
            if ignored & (1 << (s - 1)) != 0 {
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
    }
    Ok(())
}

/// The signals the init ignores (bit `n - 1` for signal `n`), which its
/// children would inherit: read once (the init ignores no more later).
fn ignored_signals() -> u64 {
    static IGNORED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *IGNORED.get_or_init(|| {
        let mut ignored = 0u64;
        for s in 1..=SIGMAX {
            if s == SIGKILL || s == SIGSTOP {
                continue;
            }
            let mut old = [0u64; 4];
            // SAFETY: rt_sigaction(2) reading the action into a buffer
            // larger than the kernel's struct; its first word is the
            // handler.
            let ok = unsafe { syscall(SYS_RT_SIGACTION, s as i64, std::ptr::null::<u64>(), old.as_mut_ptr(), 8i64) };
            // SIG_IGN is 1.
            if ok == 0 && old[0] == 1 {
                ignored |= 1 << (s - 1);
            }
        }
        ignored
    })
}

/// An exec container's init (`--serve`): invocations from the socket on
/// fd 0, one at a time (see the module's docs). Never returns.
fn serve(watched: &SigSet) -> ! {
    // SAFETY: signalfd(2) with an initialised set.
    let signals = unsafe { signalfd(-1, watched, SFD_CLOEXEC) };
    if signals < 0 {
        std::process::exit(1);
    }
    let mut current: Option<Init> = None;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut fds = [PollFd { fd: 0, events: POLLIN, revents: 0 }, PollFd { fd: signals, events: POLLIN, revents: 0 }];
        // SAFETY: poll(2) over two valid entries.
        if unsafe { poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: read(2) of one signalfd_siginfo into a buffer of its size.
            let n = unsafe { read(signals, info.as_mut_ptr().cast(), info.len()) };
            let signo = if n >= 4 { u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as c_int } else { 0 };
            match signo {
                SIGCHLD => match &mut current {
                    Some(init) => {
                        init.reap();
                        if let Some(status) = init.status {
                            init.kill_all();
                            current = None;
                            reply(format!("E{}", status.into_raw()).as_bytes());
                        }
                    }
                    None => reap_all(),
                },
                0 => {}
                // fanout is gone, or says so.
                _ => quit(current),
            }
        }
        if fds[0].revents != 0 {
            let (n, received) = receive(&mut buf);
            if n <= 0 {
                // fanout's end closed: the container is retired.
                quit(current);
            }
            let message = &buf[..n as usize];
            match message.first() {
                // fanout hears of the process before it runs, then of
                // why it did not start (`F`), or of its end (`E`).
                Some(b'R') if current.is_none() => match start(&message[1..], received) {
                    Ok(forked) => {
                        let pid = forked.pid;
                        match forked.exec() {
                            Ok(()) => current = Some(Init { main: pid, status: None }),
                            Err(why) => reply(format!("F{why}").as_bytes()),
                        }
                    }
                    Err(why) => reply(format!("F{why}").as_bytes()),
                },
                Some(b'R') => reply(b"Fan invocation is running already"),
                Some(b'K') => {
                    if let Some(init) = &current {
                        init.signal_all(SIGKILL);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Kills the invocation's processes, if one runs, and exits.
fn quit(current: Option<Init>) -> ! {
    if let Some(mut init) = current {
        init.kill_all();
    }
    reap_all();
    std::process::exit(0)
}

/// Reaps whatever children ended.
fn reap_all() {
    let mut status = 0;
    // SAFETY: waitpid(2) with a valid status pointer.
    while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
}

/// Sends `message` to fanout (a lost reply means fanout is gone: the
/// init's death signal follows).
fn reply(message: &[u8]) {
    // SAFETY: send(2) of a valid buffer on fd 0.
    unsafe { send(0, message.as_ptr().cast(), message.len(), 0) };
}

/// Receives a message into `buf` and the descriptors that came with it
/// (close-on-exec); the message's length (0 at the end, < 0 on error).
fn receive(buf: &mut [u8]) -> (isize, Vec<std::os::fd::OwnedFd>) {
    use std::os::fd::FromRawFd;
    let mut iov = IoVec { base: buf.as_mut_ptr().cast(), len: buf.len() };
    // Room for a cmsghdr and up to 8 descriptors, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: std::mem::size_of_val(&control),
        flags: 0,
    };
    let n = loop {
        // SAFETY: recvmsg(2) into the buffers described by `msg`.
        let n = unsafe { recvmsg(0, &mut msg, MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(EINTR) {
            continue;
        }
        break n;
    };
    let mut fds = Vec::new();
    // One cmsghdr (len: usize, level: i32, type: i32), then its data.
    let header = std::mem::size_of::<usize>() + 8;
    if n >= 0 && msg.controllen >= header {
        // SAFETY: any u64 is 8 initialised bytes.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(control.as_ptr().cast(), 64) };
        let int = |at: usize| i32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let len = control[0] as usize;
        if int(8) == SOL_SOCKET && int(12) == SCM_RIGHTS && len > header && len <= bytes.len() {
            for i in 0..(len - header) / 4 {
                // SAFETY: the kernel made this descriptor for us.
                fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(int(header + 4 * i)) });
            }
        }
    }
    (n, fds)
}

/// An invocation's process, forked: before it runs anything of the
/// function's, it has told fanout its pid itself (`S`, on the init's socket),
/// so that fanout knows its process group before the function can do
/// anything, such as kill this init.
struct Forked {
    pid: c_int,
    /// Where the child writes its errno if exec fails (closed on exec).
    failed: std::os::fd::OwnedFd,
}

impl Forked {
    /// Waits for the child's exec; why it could not, if it could not (it
    /// has then exited, and is reaped).
    fn exec(self) -> Result<(), String> {
        use std::io::Read;
        let Forked { pid, failed } = self;
        let mut errno = [0u8; 4];
        let mut failed = std::fs::File::from(failed);
        let mut got = 0;
        while got < 4 {
            match failed.read(&mut errno[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got < 4 {
            return Ok(());
        }
        let mut status = 0;
        // SAFETY: waitpid(2) of our own child, which has exited or will.
        unsafe { waitpid(pid, &mut status, 0) };
        Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)).to_string())
    }
}

/// Forks the invocation `message` (after its `R`) with `fds` as its stdin,
/// stdout and stderr; or why it cannot start (then nothing was said to
/// fanout).
fn start(message: &[u8], fds: Vec<std::os::fd::OwnedFd>) -> Result<Forked, String> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStringExt;
    let [stdin, stdout, stderr]: [std::os::fd::OwnedFd; 3] =
        fds.try_into().map_err(|_| "an invocation comes with its stdin, stdout and stderr".to_string())?;
    let mut fields = message.split(|&b| b == 0).map(|f| f.to_vec());
    let mut next = || fields.next().ok_or_else(|| "a short invocation message".to_string());
    let cwd = next()?;
    let rlimit = String::from_utf8(next()?).ok().and_then(|r| r.parse().ok());
    let count = |f: Vec<u8>| String::from_utf8(f).ok().and_then(|c| c.parse::<usize>().ok());
    let argc = count(next()?).ok_or("a bad argument count")?;
    let c = |f: Vec<u8>| CString::new(f).map_err(|_| "a NUL in an argument".to_string());
    let argv: Vec<CString> = (0..argc).map(|_| next().and_then(c)).collect::<Result<_, _>>()?;
    let envc = count(next()?).ok_or("a bad variable count")?;
    let env: Vec<CString> = (0..envc).map(|_| next().and_then(c)).collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err("no program".into());
    }
    let cwd = (!cwd.is_empty()).then(|| c(cwd)).transpose()?;
    // Everything the child needs is made before the fork: it allocates
    // nothing.
    let mut argp: Vec<*const std::ffi::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const std::ffi::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let ignored = ignored_signals();
    let pipe = || -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), String> {
        let mut fds = [0 as c_int; 2];
        // SAFETY: pipe2(2) into an array of two.
        if unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        // SAFETY: the kernel made both for us.
        Ok(unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) })
    };
    let (failed_r, failed_w) = pipe()?;
    // SAFETY: fork(2) of this single-threaded process; the child calls
    // async-signal-safe functions only, then execs or exits.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        // SAFETY: in the child, as above.
        unsafe {
            let fail = |fd: c_int| -> ! {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0).to_ne_bytes();
                write(fd, errno.as_ptr().cast(), 4);
                _exit(127)
            };
            // Its pid to fanout first, on the init's socket (still fd 0):
            // nothing of the function's runs before fanout knows it.
            let mut said = [0u8; 24];
            said[0] = b'S';
            let mut digits = [0u8; 20];
            let (mut n, mut pid) = (0, getpid() as u32);
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for i in 0..n {
                said[1 + i] = digits[n - 1 - i];
            }
            if send(0, said.as_ptr().cast(), 1 + n, MSG_NOSIGNAL) != (1 + n) as isize {
                _exit(127);
            }
            let w = failed_w.as_raw_fd();
            for (from, to) in [(stdin.as_raw_fd(), 0), (stdout.as_raw_fd(), 1), (stderr.as_raw_fd(), 2)] {
                if dup2(from, to) < 0 {
                    fail(w);
                }
            }
            if as_container_process(ignored, rlimit).is_err() {
                fail(w);
            }
            if let Some(dir) = &cwd
                && chdir(dir.as_ptr()) != 0
            {
                fail(w);
            }
            environ = envp.as_ptr();
            execvp(argp[0], argp.as_ptr());
            fail(w)
        }
    }
    drop((failed_w, stdin, stdout, stderr));
    Ok(Forked { pid, failed: failed_r })
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
        // SAFETY: kill(2); an absent group is not an error here.
        unsafe { kill(-self.main, SIGKILL) };
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) with a valid status pointer.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid == self.main {
                self.status = Some(ExitStatus::from_raw(status));
            }
            if pid > 0 {
                continue;
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(ECHILD) {
                return;
            }
            // Children live on (left behind, or adopted): kill them all,
            // then wait for one to go (each killed one does; an orphan it
            // leaves is a child of the init's by then, killed next round).
            self.signal_all(SIGKILL);
            // SAFETY: waitpid(2) with a valid status pointer.
            let pid = unsafe { waitpid(-1, &mut status, 0) };
            if pid == self.main {
                self.status = Some(ExitStatus::from_raw(status));
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
