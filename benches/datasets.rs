//! Split + read throughput (MB/s) for text, csv and jsonl, and generator
//! speed. Run with `cargo bench -p fanout-datasets --bench datasets`.
//!
//! Each read benchmark opens a 64 MiB generated file, enumerates its 4 MiB
//! splits and reads every split into Arrow batches, on one thread and on
//! all cores (rayon over splits, as the engine fans them out).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fanout_datasets::generator::{Amount, GenKind, GenSpec, generate, generate_lines};
use fanout_datasets::{Dataset, DatasetOptions, Split};
use rayon::prelude::*;

const SIZE: u64 = 64 << 20;

fn read_split(ds: &Dataset, split: &Split) -> usize {
    ds.read(split).unwrap().map(|b| b.unwrap().num_rows()).sum()
}

fn read_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("split_read");
    group.sample_size(10);
    for kind in [GenKind::Text, GenKind::Csv, GenKind::Jsonl] {
        let path = dir.path().join(format!("data.{}", kind.format().extension()));
        generate(&GenSpec { kind, amount: Amount::Bytes(SIZE), seed: 1 }, &path).unwrap();
        let opts = DatasetOptions { chunk_size: 4 << 20, ..Default::default() };
        let ds = Dataset::open(vec![path.display().to_string()], opts).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("{kind}/1 thread"), |b| {
            b.iter(|| {
                let rows: usize = ds.splits().map(|s| read_split(&ds, &s.unwrap())).sum();
                black_box(rows)
            })
        });
        group.bench_function(format!("{kind}/all cores"), |b| {
            b.iter(|| {
                let splits: Vec<Split> = ds.splits().collect::<Result<_, _>>().unwrap();
                let rows: usize = splits.par_iter().map(|s| read_split(&ds, s)).sum();
                black_box(rows)
            })
        });
        group.bench_function(format!("{kind}/split only"), |b| b.iter(|| black_box(ds.splits().count())));
    }
    group.finish();
}

fn gen_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE));
    for kind in [GenKind::Text, GenKind::Csv, GenKind::Jsonl] {
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                let spec = GenSpec { kind, amount: Amount::Bytes(SIZE), seed: 1 };
                black_box(generate_lines(&spec, &mut std::io::sink()).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, read_benches, gen_benches);
criterion_main!(benches);
