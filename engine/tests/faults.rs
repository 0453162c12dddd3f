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
    PanicOn(u64),
    Slow { time: Duration, now: Arc<AtomicUsize>, max: Arc<AtomicUsize> },
}

#[derive(Clone)]
struct Double {
    info: &'static FunctionInfo,
    behaviour: Behaviour,
    schema: Option<SchemaRef>,
}

static FAIL: FunctionInfo = FunctionInfo { name: "fail", shape: Shape::Map, summary: "", doc: "", params: &[] };
static PANIC: FunctionInfo = FunctionInfo { name: "panic", shape: Shape::Map, summary: "", doc: "", params: &[] };
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
    let records = std::fs::read_to_string(run_dir.join("invocations.jsonl")).unwrap();
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
