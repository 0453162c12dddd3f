//! Helpers for running the binary in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory to run `fanout` in.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file (creating directories) and returns its path.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Runs `fanout ARGS` in the scratch directory.
    pub fn run(&self, args: &[&str]) -> Run {
        run_in(self.dir.path(), args)
    }
}

/// The outcome of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// The binary under test: this build's, or `FANOUT_BIN` (to check that a
/// test fails on an older build).
pub fn binary() -> PathBuf {
    std::env::var_os("FANOUT_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fanout")), PathBuf::from)
}

pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    run_with(dir, args, &[])
}

/// Runs `fanout ARGS` in `dir` with more environment variables.
pub fn run_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = Command::new(binary()).args(args).current_dir(dir).envs(env.iter().copied()).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A server a test started, killed (and reaped) when dropped.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The repository root (for jobs/examples).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The summary a run printed with `--json`.
pub fn summary(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Runs a Python oracle in the scratch directory; it must print `ok`.
pub fn python(s: &Scratch, script: &str) {
    let out = Command::new("python3").arg("-c").arg(script).current_dir(s.dir.path()).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "python oracle: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Scratch {
    /// Starts `fanout ARGS` in the scratch directory, its output piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(binary())
            .args(args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `fanout ARGS`, failing the test (and killing the run) if it
    /// has not ended after `secs` seconds: a hang is a failure, not a
    /// test that never ends.
    #[track_caller]
    pub fn run_within(&self, secs: u64, args: &[&str]) -> Run {
        finish_within(self.spawn(args), secs, args)
    }
}

/// Waits for a child started by [`Scratch::spawn`], at most `secs`
/// seconds (then kills it and fails the test).
#[track_caller]
pub fn finish_within(mut child: std::process::Child, secs: u64, args: &[&str]) -> Run {
    // Drain the pipes while waiting, or a chatty child would block.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed().as_secs() >= secs {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`fanout {}` did not end within {secs} s", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Run { code: status.code().unwrap_or(-1), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Waits until `ready` holds, polling every millisecond, at most `secs`
/// seconds; whether it held.
pub fn wait_for(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < secs {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// Lines in a file (0 if it does not exist).
pub fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

impl Scratch {
    /// The invocation records of run directory `dir`, as JSON lines
    /// (`fanout records DIR`).
    #[track_caller]
    pub fn records(&self, dir: &str) -> String {
        self.run(&["records", dir]).expect(0).stdout
    }
}

/// The (phase, task) pairs journaled in a run directory's `journal.jsonl`,
/// in the order of its lines (each line lists runs of tasks:
/// `[first, count, rows, input]`).
pub fn journaled(run_dir: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let phase = line["phase"].as_u64().unwrap();
        for run in line["tasks"].as_array().unwrap() {
            let (first, count) = (run[0].as_u64().unwrap(), run[1].as_u64().unwrap());
            out.extend((first..first + count).map(|t| (phase, t)));
        }
    }
    out
}

/// Held by the tests that measure wall time against a prediction and by
/// those that load every core (the benchmark suite), so that they do not
/// run at once.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Fails the test, naming what is missing, unless Python can import
/// `module`: tests/setup.sh installs every module the tests use, and no
/// test passes by skipping.
#[track_caller]
pub fn need_python_module(module: &str) {
    let ok = Command::new("python3").args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success());
    assert!(ok, "the Python module {module} is missing: tests/setup.sh installs it");
}

/// The processes whose environment holds `FANOUT_TEST_MARK=mark` (a
/// function table's `env`, which every process it starts inherits): pid
/// and command line, from the whole process table.
pub fn marked(mark: &str) -> Vec<(u32, String)> {
    let needle = format!("FANOUT_TEST_MARK={mark}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        if memchr::memmem::find(&env, needle.as_bytes()).is_some() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}
