//! Doubles — a failing, a panicking and a slow function — prove the error
//! paths: a failure fails the job with its task and input, a panic does
//! not take the process down, nothing hangs, concurrency stays bounded,
//! and no output is committed for a failed job.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_engine::EngineError;
use fanout_workers::catalog::{FunctionInfo, Shape};
use fanout_workers::{Builtin, FunctionError, Invocation, MapInstance, Planned, Registry, StageSpec};

#[derive(Clone)]
enum Behaviour {
    FailOn(u64),
    /// Fails the first `n` attempts of every task, transiently.
    FlakyFor(u32),
    /// Hangs (ignoring its deadline) on the first attempt of `task`.
    HangOn(u64, Duration),
    /// Takes `time` on the first run of `task` only (a straggler).
    StraggleOn(u64, Duration, Arc<AtomicUsize>),
    PanicOn(u64),
    Slow {
        time: Duration,
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
    },
}

#[derive(Clone)]
struct Double {
    info: &'static FunctionInfo,
    behaviour: Behaviour,
    schema: Option<SchemaRef>,
}

static FAIL: FunctionInfo = FunctionInfo { name: "fail", shape: Shape::Map, summary: "", doc: "", params: &[] };
static PANIC: FunctionInfo = FunctionInfo { name: "panic", shape: Shape::Map, summary: "", doc: "", params: &[] };
static FLAKY: FunctionInfo = FunctionInfo { name: "flaky", shape: Shape::Map, summary: "", doc: "", params: &[] };
static HANG: FunctionInfo = FunctionInfo { name: "hang", shape: Shape::Map, summary: "", doc: "", params: &[] };
static STRAGGLE: FunctionInfo = FunctionInfo { name: "straggle", shape: Shape::Map, summary: "", doc: "", params: &[] };
static SLOW: FunctionInfo = FunctionInfo { name: "slow", shape: Shape::Map, summary: "", doc: "", params: &[] };

impl Builtin for Double {
    fn info(&self) -> &'static FunctionInfo {
        self.info
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        Ok(Arc::new(Double { schema: Some(spec.input.clone()), ..self.clone() }))
    }
}

impl Planned for Double {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone().unwrap()
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        Ok(Box::new(self.clone()))
    }
}

impl MapInstance for Double {
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        match &self.behaviour {
            Behaviour::FailOn(t) if *t == inv.task => Err(FunctionError::permanent("deliberate failure")),
            Behaviour::FlakyFor(n) if inv.attempt <= *n => Err(FunctionError::transient("flaky")),
            Behaviour::StraggleOn(t, time, runs) if *t == inv.task && runs.fetch_add(1, SeqCst) == 0 => {
                std::thread::sleep(*time);
                Ok(input)
            }
            Behaviour::HangOn(t, time) if *t == inv.task && inv.attempt == 1 => {
                std::thread::sleep(*time);
                Ok(input)
            }
            Behaviour::PanicOn(t) if *t == inv.task => panic!("deliberate panic"),
            Behaviour::Slow { time, now, max } => {
                let n = now.fetch_add(1, SeqCst) + 1;
                max.fetch_max(n, SeqCst);
                std::thread::sleep(*time);
                now.fetch_sub(1, SeqCst);
                Ok(input)
            }
            _ => Ok(input),
        }
    }
}

fn registry(doubles: Vec<Double>) -> Registry {
    let mut r = Registry::builtins();
    for d in doubles {
        r.register(Arc::new(d));
    }
    r
}

fn job(dir: &std::path::Path, function: &str, extra: &str, concurrency: usize) -> String {
    let d = dir.display();
    format!(
        "[input]\npath = \"{d}/in.txt\"\nchunk_size = 4\n[[stage]]\nfunction = \"{function}\"\n{extra}\n[output]\npath = \"{d}/out/o.csv\"\n[platform]\nconcurrency = {concurrency}\n"
    )
}

fn setup(lines: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..lines).map(|i| format!("l{i:02}\n")).collect();
    std::fs::write(dir.path().join("in.txt"), text).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    dir
}

#[test]
fn a_failing_function_fails_its_task_and_the_job() {
    let dir = setup(20);
    let r = registry(vec![Double { info: &FAIL, behaviour: Behaviour::FailOn(7), schema: None }]);
    let failure = common::run_in(dir.path(), &job(dir.path(), "fail", "", 2), &r, 1 << 30).unwrap_err();
    let EngineError::Task(t) = &failure.error else { panic!("{}", failure.error) };
    assert_eq!((t.stage.as_str(), t.task, t.attempt), ("fail", 7, 1));
    assert_eq!(t.message, "deliberate failure");
    let input = format!("{}/in.txt bytes 28..32", dir.path().display());
    assert_eq!(t.input, input);
    assert_eq!(
        failure.error.to_string(),
        format!("stage `fail` (map) failed on task 7 ({input}), attempt 1: deliberate failure")
    );
    assert!(!dir.path().join("out/o.csv").exists());
    assert_eq!(std::fs::read_dir(dir.path().join("out")).unwrap().count(), 0, "no staging left");
    let run_dir = failure.run_dir.unwrap();
    let records = common::records(&run_dir);
    assert!(records.lines().any(|l| l.contains("\"task\":7") && l.contains("\"error\":\"deliberate failure\"")));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "failed");
    assert!(summary["error"].as_str().unwrap().contains("task 7"));
}

#[test]
fn a_panicking_function_fails_the_job_not_the_process() {
    let dir = setup(12);
    let r = registry(vec![Double { info: &PANIC, behaviour: Behaviour::PanicOn(3), schema: None }]);
    let failure = common::run_in(dir.path(), &job(dir.path(), "panic", "", 3), &r, 1 << 30).unwrap_err();
    let EngineError::Task(t) = &failure.error else { panic!("{}", failure.error) };
    assert_eq!(t.task, 3);
    assert_eq!(t.message, "panicked: deliberate panic");
    assert!(!dir.path().join("out/o.csv").exists());
    // The process carries on: the same registry runs a good job.
    let ok = common::run_in(dir.path(), &job(dir.path(), "word_count", "", 3), &r, 1 << 30).unwrap();
    assert_eq!(ok.summary.status, "succeeded");
}

#[test]
fn slow_functions_never_exceed_the_concurrency() {
    for (platform, stage, limit) in [(3, "", 3), (3, "concurrency = 1", 1)] {
        let dir = setup(12);
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let slow = Behaviour::Slow { time: Duration::from_millis(20), now: now.clone(), max: max.clone() };
        let r = registry(vec![Double { info: &SLOW, behaviour: slow, schema: None }]);
        let report = common::run_in(dir.path(), &job(dir.path(), "slow", stage, platform), &r, 1 << 30).unwrap();
        assert_eq!(report.summary.invocations.total, 12);
        assert!(max.load(SeqCst) <= limit, "{} in flight, limit {limit}", max.load(SeqCst));
        assert!(max.load(SeqCst) >= 1);
        let out = std::fs::read_to_string(dir.path().join("out/o.csv")).unwrap();
        let want: String = std::iter::once("line\n".to_string()).chain((0..12).map(|i| format!("l{i:02}\n"))).collect();
        assert_eq!(out, want, "the output keeps the input's order");
    }
}

#[test]
fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let dir = setup(8);
    let r = registry(vec![Double { info: &FLAKY, behaviour: Behaviour::FlakyFor(2), schema: None }]);
    let text = job(dir.path(), "flaky", "", 2) + "retries = 2\nbackoff = \"1ms\"\n";
    let report = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap();
    // 8 tasks, each failing twice then succeeding.
    assert_eq!(report.summary.invocations.total, 24);
    assert_eq!(report.summary.retries, 16);
    assert_eq!(report.summary.invocations.failed, 16);
    let out = std::fs::read_to_string(dir.path().join("out/o.csv")).unwrap();
    assert_eq!(out.lines().count(), 9);
    // One retry too few: the job fails on the third attempt's error.
    std::fs::remove_file(dir.path().join("out/o.csv")).unwrap();
    let text = job(dir.path(), "flaky", "", 2) + "retries = 1\nbackoff = \"1ms\"\n";
    let failure = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap_err();
    let EngineError::Task(t) = &failure.error else { panic!("{}", failure.error) };
    assert_eq!((t.attempt, t.message.as_str()), (2, "flaky"));
    // A permanent error is not retried.
    let r = registry(vec![Double { info: &FAIL, behaviour: Behaviour::FailOn(3), schema: None }]);
    let text = job(dir.path(), "fail", "", 2) + "retries = 5\nbackoff = \"1ms\"\n";
    let failure = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap_err();
    let EngineError::Task(t) = &failure.error else { panic!("{}", failure.error) };
    assert_eq!((t.task, t.attempt), (3, 1));
}

#[test]
fn tolerated_failures_are_listed_and_thresholds_enforced() {
    let dir = setup(20);
    let r = registry(vec![Double { info: &FAIL, behaviour: Behaviour::FailOn(4), schema: None }]);
    let text = job(dir.path(), "fail", "", 2) + "tolerated_failure_count = 1\n";
    let report = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap();
    assert_eq!(report.summary.status, "succeeded");
    assert_eq!(report.summary.failed_tasks.len(), 1);
    assert_eq!(report.summary.failed_tasks[0].task, 4);
    assert_eq!(report.summary.failed_tasks[0].error, "deliberate failure");
    let failures = std::fs::read_to_string(report.run_dir.join("failures.jsonl")).unwrap();
    assert!(failures.contains("\"task\":4") && failures.contains("in.txt bytes 16..20"), "{failures}");
    // Task 4's line is missing from the output, and only it.
    let out = std::fs::read_to_string(dir.path().join("out/o.csv")).unwrap();
    let want: String = std::iter::once("line\n".to_string())
        .chain((0..20).filter(|&i| i != 4).map(|i| format!("l{i:02}\n")))
        .collect();
    assert_eq!(out, want);
    // 1 of 20 tasks is 5%: tolerated at 5%, not at 4%.
    std::fs::remove_file(dir.path().join("out/o.csv")).unwrap();
    let text = job(dir.path(), "fail", "", 2) + "tolerated_failure_percent = 5\n";
    assert!(common::run_in(dir.path(), &text, &r, 1 << 30).is_ok());
    std::fs::remove_file(dir.path().join("out/o.csv")).unwrap();
    let text = job(dir.path(), "fail", "", 2) + "tolerated_failure_percent = 4\n";
    let failure = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap_err();
    assert_eq!(
        failure.error.to_string(),
        "1 of 20 tasks failed, more than the tolerated 4% (failures.jsonl in the run directory lists them)"
    );
    assert!(!dir.path().join("out/o.csv").exists());
}

#[test]
fn an_invocation_past_its_deadline_is_abandoned_and_retried() {
    let dir = setup(6);
    // Task 2's first attempt hangs for 3 s, ignoring its 100 ms deadline.
    let r =
        registry(vec![Double { info: &HANG, behaviour: Behaviour::HangOn(2, Duration::from_secs(3)), schema: None }]);
    let text = job(dir.path(), "hang", "", 2) + "timeout = \"100ms\"\nretries = 1\nbackoff = \"1ms\"\n";
    let started = std::time::Instant::now();
    let report = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the run waited for the hung invocation");
    assert_eq!(report.summary.retries, 1);
    let records = common::records(&report.run_dir);
    let timed_out: Vec<&str> = records.lines().filter(|l| l.contains("timed out after 100ms")).collect();
    assert_eq!(timed_out.len(), 1, "{records}");
    assert!(timed_out[0].contains("\"task\":2") && timed_out[0].contains("\"attempt\":1"));
    // The abandoned container is replaced: the retry runs on a cold one.
    let retry = records.lines().find(|l| l.contains("\"task\":2") && l.contains("\"attempt\":2")).unwrap();
    assert!(retry.contains("\"cold\":true"), "{retry}");
    let out = std::fs::read_to_string(dir.path().join("out/o.csv")).unwrap();
    assert_eq!(out.lines().count(), 7);
    // Without a retry the job fails, and returns without waiting either.
    std::fs::remove_file(dir.path().join("out/o.csv")).unwrap();
    let text = job(dir.path(), "hang", "", 2) + "timeout = \"100ms\"\nretries = 0\n";
    let failure = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap_err();
    assert!(failure.error.to_string().ends_with("attempt 1: timed out after 100ms"), "{}", failure.error);
}

#[test]
fn containers_are_cold_once_per_slot_unless_retired() {
    let dir = setup(10);
    let r = Registry::builtins();
    let records = |report: &fanout_engine::Report| common::records(&report.run_dir);
    // One slot, ten tasks: the first invocation is cold, nine are warm.
    let report = common::run_in(dir.path(), &job(dir.path(), "word_count", "", 1), &r, 1 << 30).unwrap();
    assert_eq!((report.summary.invocations.total, report.summary.invocations.cold), (10, 1));
    let cold: Vec<u64> = records(&report)
        .lines()
        .filter(|l| l.contains("\"cold\":true"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["task"].as_u64().unwrap())
        .collect();
    assert_eq!(cold, [0]);
    // A keep-alive shorter than any idle gap retires every container.
    std::fs::remove_file(dir.path().join("out/o.csv")).unwrap();
    let text = job(dir.path(), "word_count", "", 1) + "keep_alive = \"1ns\"\n";
    let report = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap();
    assert_eq!((report.summary.invocations.total, report.summary.invocations.cold), (10, 10));
    let ids: std::collections::BTreeSet<u64> = records(&report)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["container"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 10, "each invocation had a container of its own");
    // Emulation injects the modelled cold start into the cold invocation.
    std::fs::remove_file(dir.path().join("out/o.csv")).unwrap();
    let text = job(dir.path(), "word_count", "", 1) + "emulate = true\ncold_start = \"40ms\"\n";
    let report = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap();
    let first = records(&report)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["cold"] == true)
        .unwrap();
    let took = first["finished_us"].as_u64().unwrap() - first["started_us"].as_u64().unwrap();
    assert!(took >= 40_000, "a cold start of {took} µs");
}

#[test]
fn a_straggler_gets_a_backup_and_the_first_result_wins() {
    let dir = setup(20);
    // The straggler would take a minute: a run that waited for it would
    // take that long, whatever the machine.
    let behaviour = Behaviour::StraggleOn(5, Duration::from_secs(60), Arc::new(AtomicUsize::new(0)));
    let r = registry(vec![Double { info: &STRAGGLE, behaviour, schema: None }]);
    let text = job(dir.path(), "straggle", "", 2) + "backups = true\n";
    let started = std::time::Instant::now();
    let report = common::run_in(dir.path(), &text, &r, 1 << 30).unwrap();
    assert!(started.elapsed() < Duration::from_secs(60), "the run waited for the straggler");
    // Task 5 got its backup (on a loaded machine, another task may
    // straggle and get one too).
    assert!(report.summary.backup_tasks >= 1);
    let records = common::records(&report.run_dir);
    let task5: Vec<&str> = records.lines().filter(|l| l.contains("\"task\":5,")).collect();
    assert_eq!(task5.len(), 2, "{records}");
    assert!(task5.iter().any(|l| l.contains("\"backup\":true") && l.contains("\"status\":\"ok\"")));
    assert!(task5.iter().any(|l| l.contains("cancelled: another run of the task finished first")));
    // Nothing lost, nothing doubled.
    let out = std::fs::read_to_string(dir.path().join("out/o.csv")).unwrap();
    let want: String = std::iter::once("line\n".to_string()).chain((0..20).map(|i| format!("l{i:02}\n"))).collect();
    assert_eq!(out, want);
}
