//! No process of a job outlives it, on any path: success, a failed task,
//! a deadline, SIGINT, SIGTERM, a panic in the coordinator and `kill -9`
//! of fanout, for exec and lambda functions alike.
//!
//! Each function leaves processes behind: one in its process group and
//! one in a session of its own (`setsid`), which no process-group kill
//! reaches. Every process of the job carries a mark in its environment
//! (the function table's `env`, which its children inherit), and the test
//! looks for the mark in the whole process table, not only among the
//! processes it knows of. Functions also write their signal mask and
//! ignored signals, which must be the defaults.

use std::path::Path;

use crate::util::{Scratch, finish_within, marked, wait_for};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Exec,
    Lambda,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Success,
    Failure,
    Deadline,
    Signal(i32),
    Panic,
    Kill,
}

/// An exec function: its records back, after leaving two processes
/// behind and writing `started.TASK` (its signal state).
const EXEC: &str = r#"#!/bin/sh
sleep 300 &
setsid sleep 300 &
grep -E '^Sig(Blk|Ign)' /proc/self/status > "started.$FANOUT_TASK.tmp"
mv "started.$FANOUT_TASK.tmp" "started.$FANOUT_TASK"
case "$MODE" in
  fail) [ "$FANOUT_TASK" = 2 ] && { echo "task 2 fails" >&2; exit 3; } ;;
  hang) [ "$FANOUT_TASK" = 2 ] && exec sleep 300 ;;
  block) exec sleep 300 ;;
esac
exec cat
"#;

/// A lambda function on a standard-library runtime loop, which leaves two
/// processes behind when it starts.
const LAMBDA: &str = r#"
import json, os, subprocess, time, urllib.request
API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
MODE = os.environ.get("MODE", "")
subprocess.Popen(["sleep", "300"])
subprocess.Popen(["sleep", "300"], start_new_session=True)

def post(path, body, headers={}):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    urllib.request.urlopen(req).read()

while True:
    with urllib.request.urlopen(API + "/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    task = event["task"]
    with open("/proc/self/status") as f:
        status = "".join(l for l in f if l.startswith(("SigBlk", "SigIgn")))
    with open(f"started.{task}.tmp", "w") as f:
        f.write(status)
    os.rename(f"started.{task}.tmp", f"started.{task}")
    if MODE == "block" or (MODE == "hang" and task == 2):
        time.sleep(300)
    if MODE == "fail" and task == 2:
        post(f"/invocation/{rid}/error", {"errorMessage": "task 2 fails", "errorType": "Failure"},
             {"Lambda-Runtime-Function-Error-Type": "Failure"})
    else:
        post(f"/invocation/{rid}/response", {"records": event["records"]})
"#;

/// Tasks in the job (a file each).
const TASKS: usize = 6;

/// How many functions have started (their `started.TASK` files).
fn started(dir: &Path) -> usize {
    (0..TASKS).filter(|t| dir.join(format!("started.{t}")).exists()).count()
}

fn check(backend: Backend, end: End) {
    let s = Scratch::new();
    for t in 0..TASKS {
        s.write(&format!("in/{t}.txt"), format!("line {t}\n"));
    }
    s.write("f.sh", EXEC);
    s.write("f.py", LAMBDA);
    let mark = s.dir.path().display().to_string();
    let mode = match end {
        End::Success => "",
        End::Failure => "fail",
        End::Deadline => "hang",
        End::Signal(_) | End::Panic | End::Kill => "block",
    };
    let function = match backend {
        Backend::Exec => r#"exec = ["sh", "f.sh"]"#,
        Backend::Lambda => r#"lambda = ["python3", "f.py"]"#,
    };
    let timeout = if end == End::Deadline { "timeout = \"2s\"" } else { "" };
    // One slot when the coordinator panics: task 0 runs while it hands
    // out task 1.
    let concurrency = if end == End::Panic { 1 } else { 2 };
    s.write(
        "job.toml",
        format!(
            r#"name = "lifetime"
[input]
path = "in/*.txt"
format = "text"
[[stage]]
name = "f"
[stage.function]
{function}
env = {{ FANOUT_TEST_MARK = "{mark}", MODE = "{mode}" }}
[output]
path = "out/lines.csv"
[platform]
concurrency = {concurrency}
retries = 0
{timeout}
"#
        ),
    );
    let args = ["run", "job.toml", "--progress", "never"];
    let mut cmd = std::process::Command::new(crate::util::binary());
    cmd.args(args).current_dir(s.dir.path());
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if end == End::Panic {
        cmd.env("FANOUT_TEST_PANIC", format!("1:{}", s.path("started.0").display()));
    }
    let child = cmd.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut child = Some(child);
    match end {
        End::Signal(signal) => {
            // Both slots' functions are running (and have left their
            // processes behind).
            assert!(wait_for(60, || started(s.dir.path()) == 2), "the functions did not start");
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::try_from(signal).unwrap()).unwrap();
        }
        End::Kill => {
            assert!(wait_for(60, || started(s.dir.path()) == 2), "the functions did not start");
            assert!(!marked(&mark).is_empty(), "the functions' processes are in the process table");
            let mut c = child.take().unwrap();
            c.kill().unwrap();
            c.wait().unwrap();
        }
        _ => {}
    }
    let run = child.map(|c| finish_within(c, 120, &args));
    if let Some(r) = &run {
        let (code, says) = match end {
            End::Success => (0, ""),
            End::Failure => (1, "task 2 fails"),
            End::Deadline => (1, "task 2"),
            End::Signal(n) => (128 + n, "to finish the run: fanout run --resume"),
            End::Panic => (101, "FANOUT_TEST_PANIC: the coordinator panics at task 1"),
            End::Kill => unreachable!(),
        };
        assert_eq!(r.code, code, "{backend:?} {end:?}: exit code\n{}", r.stderr);
        assert!(r.stderr.contains(says), "{backend:?} {end:?}: {}", r.stderr);
    }
    // fanout has ended: none of the job's processes is left (those of a
    // killed fanout end once the kernel tells their inits; the others
    // before it exits, as it waits for them).
    if matches!(end, End::Kill | End::Panic) {
        wait_for(30, || marked(&mark).is_empty());
    }
    let left = marked(&mark);
    assert!(left.is_empty(), "{backend:?} {end:?}: processes of the job outlived it: {left:?}");
    assert!(started(s.dir.path()) > 0, "{backend:?} {end:?}: no function ran");
    // Every function started with no signal blocked, or ignored (Python
    // ignores SIGPIPE and SIGXFSZ itself).
    for t in 0..TASKS {
        let Ok(status) = std::fs::read_to_string(s.path(&format!("started.{t}"))) else { continue };
        for line in status.lines().filter(|l| backend == Backend::Exec || l.starts_with("SigBlk")) {
            assert!(line.ends_with("\t0000000000000000"), "{backend:?} {end:?}: task {t} started with {line}");
        }
    }
    if end == End::Success {
        let out = std::fs::read_to_string(s.path("out/lines.csv")).unwrap();
        let mut lines: Vec<&str> = out.lines().skip(1).collect();
        lines.sort();
        let want: Vec<String> = (0..TASKS).map(|t| format!("line {t}")).collect();
        assert_eq!(lines, want);
    }
}

#[test]
fn exec_success() {
    check(Backend::Exec, End::Success);
}

#[test]
fn exec_failure() {
    check(Backend::Exec, End::Failure);
}

#[test]
fn exec_deadline() {
    check(Backend::Exec, End::Deadline);
}

#[test]
fn exec_sigint() {
    check(Backend::Exec, End::Signal(2));
}

#[test]
fn exec_sigterm() {
    check(Backend::Exec, End::Signal(15));
}

#[test]
fn exec_coordinator_panic() {
    check(Backend::Exec, End::Panic);
}

#[test]
fn exec_kill_9() {
    check(Backend::Exec, End::Kill);
}

#[test]
fn lambda_success() {
    check(Backend::Lambda, End::Success);
}

#[test]
fn lambda_failure() {
    check(Backend::Lambda, End::Failure);
}

#[test]
fn lambda_deadline() {
    check(Backend::Lambda, End::Deadline);
}

#[test]
fn lambda_sigint() {
    check(Backend::Lambda, End::Signal(2));
}

#[test]
fn lambda_sigterm() {
    check(Backend::Lambda, End::Signal(15));
}

#[test]
fn lambda_coordinator_panic() {
    check(Backend::Lambda, End::Panic);
}

#[test]
fn lambda_kill_9() {
    check(Backend::Lambda, End::Kill);
}

#[test]
fn an_exec_function_that_kills_its_init_fails_its_attempt_and_the_run_goes_on() {
    let s = Scratch::new();
    for t in 0..TASKS {
        s.write(&format!("in/{t}.txt"), format!("line {t}\n"));
    }
    // Task 2's first attempt kills its container's init (and a process in
    // its group holds stdout open): the attempt must fail at once, not
    // wait for that process, and the retry runs in a new container.
    s.write(
        "f.sh",
        "if [ \"$FANOUT_TASK\" = 2 ] && [ \"$FANOUT_ATTEMPT\" = 1 ]; then sleep 300 & kill -9 $PPID; sleep 300; fi\nexec cat\n",
    );
    let mark = s.dir.path().display().to_string();
    s.write(
        "job.toml",
        format!(
            "[input]\npath = \"in/*.txt\"\nformat = \"text\"\n[[stage]]\nname = \"f\"\n[stage.function]\n\
             exec = [\"sh\", \"f.sh\"]\nenv = {{ FANOUT_TEST_MARK = \"{mark}\" }}\n[output]\npath = \"out/lines.csv\"\n\
             [platform]\nconcurrency = 2\nretries = 1\n"
        ),
    );
    let args = ["run", "job.toml", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = s.run_within(60, &args).expect(0);
    let sum = crate::util::summary(&r);
    assert_eq!(sum["retries"], 1, "{sum}");
    let failure = s.records("rd");
    assert!(failure.contains("the container's init was killed by signal 9"), "{failure}");
    let out = std::fs::read_to_string(s.path("out/lines.csv")).unwrap();
    let want: String = std::iter::once("line\n".to_string()).chain((0..TASKS).map(|t| format!("line {t}\n"))).collect();
    assert_eq!(out, want);
    // The killed attempt's processes were in its group: killed too.
    assert!(wait_for(30, || marked(&mark).is_empty()), "left: {:?}", marked(&mark));
}
