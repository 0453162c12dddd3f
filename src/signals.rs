//! SIGINT and SIGTERM for the long-running commands (`run`, `serve`):
//! blocked in every thread but one that waits for them (processes started
//! later get the usual mask back). The first signal asks the command to
//! stop; a second exits at once, with the code a shell gives (128 + the
//! signal's number).

use nix::sys::signal::{SigSet, Signal};

/// Calls `first` with the first SIGINT or SIGTERM; exits at the second.
pub fn on_signal(first: impl Fn(Signal) + Send + 'static) {
    on_signals(first, || None);
}

/// As [`on_signal`], and `lost` says what stopping at once loses, on the
/// line that says so.
pub fn on_signals(first: impl Fn(Signal) + Send + 'static, lost: impl Fn() -> Option<String> + Send + 'static) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let mut seen = false;
        while let Ok(signal) = set.wait() {
            if seen {
                match lost() {
                    Some(lost) => say(&format!("{}: stopping at once: {lost}", signal.as_str())),
                    None => say(&format!("{}: stopping at once", signal.as_str())),
                }
                std::process::exit(128 + signal as i32);
            }
            seen = true;
            first(signal);
        }
    });
}

/// A line on stderr; a command whose stderr is gone (a closed pipe) goes
/// on.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
