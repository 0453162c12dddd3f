//! Engine benchmarks: dispatch overhead (an empty function on tiny
//! chunks, every invocation recorded) and per-chunk word count.
//! Run with `cargo bench -p fanout-engine --bench engine`.

use std::hint::black_box;
use std::path::Path;

use arrow_array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fanout_datasets::generator::{Amount, GenKind, GenSpec, generate};
use fanout_datasets::{Dataset, DatasetOptions};
use fanout_engine::{RunOptions, run};
use fanout_jobs::{Source, load_source, validate};
use fanout_workers::{Invocation, Registry, StageSpec};

const TASKS: usize = 20_000;

fn job(dir: &Path, input: &Path, concurrency: usize) -> (fanout_jobs::LoadedJob, fanout_jobs::Plan) {
    let text = format!(
        r#"
[input]
path = "{}"
chunk_size = 1
[[stage]]
function = "burn"
params = {{ ms = 0 }}
[output]
path = "{}"
format = "csv"
mode = "overwrite"
[platform]
concurrency = {concurrency}
"#,
        input.display(),
        dir.join("out.csv").display()
    );
    let job = load_source(Source::new(&dir.join("job.toml"), text), &[]).unwrap();
    let plan = validate(&job, &Registry::builtins()).unwrap();
    (job, plan)
}

fn dispatch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // One record of two bytes per split.
    let input = dir.path().join("tiny.txt");
    std::fs::write(&input, "a\n".repeat(TASKS)).unwrap();
    let registry = Registry::builtins();
    let mut group = c.benchmark_group("dispatch");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TASKS as u64));
    for concurrency in [1, 2] {
        let (job, plan) = job(dir.path(), &input, concurrency);
        group.bench_function(format!("empty function, {concurrency} workers"), |b| {
            b.iter(|| {
                let opts = RunOptions {
                    run_dir: Some(dir.path().join("run")),
                    cache_dir: dir.path().join("cache"),
                    ..RunOptions::default()
                };
                let _ = std::fs::remove_dir_all(dir.path().join("run"));
                let report = run(&plan, &job.file, &registry, &opts).unwrap();
                assert_eq!(report.summary.invocations.total, TASKS as u64);
                black_box(report)
            })
        });
    }
    group.finish();
}

fn word_count(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("words.txt");
    generate(&GenSpec { kind: GenKind::Text, amount: Amount::Bytes(16 << 20), seed: 1 }, &path).unwrap();
    let opts = DatasetOptions { chunk_size: 16 << 20, ..Default::default() };
    let ds = Dataset::open(vec![path.display().to_string()], opts).unwrap();
    let split = ds.splits().next().unwrap().unwrap();
    let batches: Vec<RecordBatch> = ds.read(&split).unwrap().collect::<Result<_, _>>().unwrap();
    let params = serde_json::Map::new();
    let schema = ds.schema();
    let planned = Registry::builtins()
        .get("word_count")
        .unwrap()
        .plan(&StageSpec { params: &params, input: &schema, key: None })
        .unwrap();
    let mut container = planned.init().unwrap();
    let inv = Invocation::plain("count", 0);
    let mut group = c.benchmark_group("word_count");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(split.bytes()));
    group.bench_function("one 16 MiB chunk", |b| b.iter(|| black_box(container.call(&inv, batches.clone()).unwrap())));
    group.bench_function("read + count one 16 MiB chunk", |b| {
        b.iter(|| {
            let batches: Vec<RecordBatch> = ds.read(&split).unwrap().collect::<Result<_, _>>().unwrap();
            black_box(container.call(&inv, batches).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, dispatch, word_count);
criterion_main!(benches);
