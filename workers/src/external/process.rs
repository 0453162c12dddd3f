//! What the exec and lambda backends share about their processes: how a
//! process ended, killing its process group, and the end of its output
//! for error messages.

use std::io::Read;
use std::sync::Mutex;

/// How a process ended, for messages: `exited with exit status: 3`, or
/// `was killed by signal 9 (SIGKILL)`.
pub(crate) fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(s) => {
            let name = nix::sys::signal::Signal::try_from(s).map_or("unknown", |s| s.as_str());
            format!("was killed by signal {s} ({name})")
        }
        None => format!("exited with {status}"),
    }
}

/// Kills a process group (a process started as its group's leader, and
/// every process it started).
pub(crate) fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
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

    /// The last lines, trimmed.
    pub(crate) fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}
