//! `fanout run` on every example, compared exactly with oracles computed
//! independently here (plain sequential Rust) or by Python's standard
//! library, for several chunk sizes and concurrency levels.

use std::collections::HashMap;
use std::process::Command;

use crate::util::{Run, Scratch, python, root, summary};

fn example(name: &str) -> String {
    root().join("jobs/examples").join(format!("{name}.toml")).display().to_string()
}

/// Runs an example in `s` with `--json` and overrides; returns the run.
fn run(s: &Scratch, name: &str, sets: &[String]) -> Run {
    let job = example(name);
    let mut args = vec!["run".to_string(), job, "--json".into(), "--progress".into(), "never".into()];
    for set in sets {
        args.push("--set".into());
        args.push(set.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.run(&args)
}

/// Runs an example on `rows` generated rows at a chunk size and concurrency.
fn run_generated(s: &Scratch, name: &str, rows: u64, chunk: &str, concurrency: usize) -> Run {
    let sets = [
        format!("input.generate.rows={rows}"),
        format!("input.chunk_size={chunk}"),
        format!("platform.concurrency={concurrency}"),
    ];
    run(s, name, &sets).expect(0)
}

#[test]
fn wordcount_matches_a_sequential_count() {
    let s = Scratch::new();
    let mut expected: Option<String> = None;
    for (chunk, concurrency, partitions) in [("4KiB", 1, 1), ("64KiB", 3, 5), ("1MiB", 2, 2), ("1", 4, 3)] {
        let size = if chunk == "1" { "16KiB" } else { "256KiB" };
        let r = run(
            &s,
            "wordcount",
            &[
                format!("input.generate.size={size}"),
                format!("input.chunk_size={chunk}"),
                format!("platform.concurrency={concurrency}"),
                format!("stage.total.partitions={partitions}"),
            ],
        )
        .expect(0);
        let sum = summary(&r);
        assert_eq!(sum["status"], "succeeded");
        assert_eq!(sum["concurrency"], concurrency);
        // The oracle: count the generated file's words sequentially.
        let bytes: u64 = if size == "16KiB" { 16 << 10 } else { 256 << 10 };
        let text = std::fs::read_to_string(s.path(&format!(".fanout/cache/gen-text-{bytes}b-seed1.txt"))).unwrap();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for w in text.split_ascii_whitespace() {
            *counts.entry(w).or_default() += 1;
        }
        let mut rows: Vec<(&str, u64)> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut want = String::from("word,sum_count\n");
        for (w, c) in rows.iter().take(100) {
            want += &format!("{w},{c}\n");
        }
        let got = std::fs::read_to_string(s.path("out/wordcount.csv")).unwrap();
        assert_eq!(got, want, "chunk {chunk}, concurrency {concurrency}");
        assert_eq!(sum["output"]["rows"], 100);
        if size == "256KiB" {
            // Every setting writes the same bytes.
            assert_eq!(expected.get_or_insert(got.clone()), &got);
        }
    }
}

#[test]
fn csv_groupby_matches_python() {
    let s = Scratch::new();
    for (chunk, concurrency) in [("16KiB", 2), ("1MiB", 1)] {
        run_generated(&s, "csv-groupby", 20000, chunk, concurrency);
        python(
            &s,
            r#"
import csv, math
groups = {}
for r in csv.DictReader(open(".fanout/cache/gen-csv-20000rows-seed1.csv", newline="")):
    g = groups.setdefault((r["country"], r["category"]), [0, 0.0, 0])
    g[0] += 1
    if r["amount"] != "":
        g[1] += float(r["amount"]); g[2] += 1
out = list(csv.DictReader(open("out/csv-groupby.csv", newline="")))
assert [(r["country"], r["category"]) for r in out] == sorted(groups), "groups or order differ"
for r in out:
    n, total, k = groups[(r["country"], r["category"])]
    assert int(r["count"]) == n, (r, n)
    if k == 0:
        # Every amount of the group is null: so are its sum and mean.
        assert r["sum_amount"] == "" and r["mean_amount"] == "", r
        continue
    assert math.isclose(float(r["sum_amount"]), total, rel_tol=1e-9, abs_tol=1e-6), (r, total)
    assert math.isclose(float(r["mean_amount"]), total / k, rel_tol=1e-9), (r, total / k)
print("ok")
"#,
        );
    }
}

#[test]
fn jsonl_filter_matches_python() {
    let s = Scratch::new();
    for (chunk, concurrency) in [("8KiB", 3), ("4MiB", 1)] {
        run_generated(&s, "jsonl-filter", 20000, chunk, concurrency);
        python(
            &s,
            r#"
import json
want = []
for line in open(".fanout/cache/gen-jsonl-20000rows-seed1.jsonl"):
    e = json.loads(line)
    a = e["event"]["amount"]
    if a is not None and a >= 900 and e["user"]["country"] in ("AA", "AB", "AC"):
        want.append((e["id"], e["user"]["country"], e["event"]["category"], a))
got = []
for line in open("out/jsonl-filter.jsonl"):
    r = json.loads(line)
    got.append((r["id"], r["user_country"], r["event_category"], r["event_amount"]))
assert len(want) > 10, len(want)
assert got == want, (got[:3], want[:3])
print("ok")
"#,
        );
    }
}

#[test]
fn jsonl_columns_keep_the_files_order() {
    let s = Scratch::new();
    // Keys in no sorted order; a key first seen in the second record, and
    // nested members likewise, come after those seen before them.
    s.write(
        "in.jsonl",
        "{\"zeta\":1,\"alpha\":\"x\",\"o\":{\"z\":1,\"a\":2}}\n{\"mid\":true,\"zeta\":2,\"alpha\":\"y\",\"o\":{\"m\":3,\"z\":4}}\n",
    );
    s.write("job.toml", "[input]\npath = \"in.jsonl\"\n[output]\npath = \"out.jsonl\"\n");
    s.run(&["run", "job.toml", "--progress", "never"]).expect(0);
    // Columns (and members) in the order first seen in the file, as
    // DuckDB, Polars and pyarrow read it; arrow-json writes nulls as absent.
    let out = std::fs::read_to_string(s.path("out.jsonl")).unwrap();
    let first = out.lines().next().unwrap();
    assert_eq!(first, r#"{"zeta":1,"alpha":"x","o":{"z":1,"a":2}}"#, "{out}");
    let second = out.lines().nth(1).unwrap();
    assert_eq!(second, r#"{"zeta":2,"alpha":"y","o":{"z":4,"m":3},"mid":true}"#, "{out}");
}

/// SplitMix64, written again here as the oracle.
fn oracle_inside(seed: u64, i: u64, samples: u64) -> u64 {
    let mut state = seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..samples)
        .filter(|_| {
            let (x, y) = (next(), next());
            x * x + y * y <= 1.0
        })
        .count() as u64
}

#[test]
fn pi_matches_a_sequential_simulation() {
    let s = Scratch::new();
    let samples = 2000;
    let want: u64 = (0..1000).map(|i| oracle_inside(42, i, samples)).sum();
    for (chunk, concurrency) in [("64", 2), ("100KiB", 1), ("7", 3)] {
        let r = run(
            &s,
            "pi",
            &[
                format!("stage.darts.params.samples={samples}"),
                format!("input.chunk_size={chunk}"),
                format!("platform.concurrency={concurrency}"),
            ],
        )
        .expect(0);
        let got = std::fs::read_to_string(s.path("out/pi.csv")).unwrap();
        assert_eq!(got, format!("sum_inside,sum_samples\n{want},{}\n", 1000 * samples));
        let pi = 4.0 * want as f64 / (1000 * samples) as f64;
        assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
        assert_eq!(summary(&r)["input"]["records"], 1000);
    }
}

#[test]
fn the_summary_table_and_preview_are_printed() {
    let s = Scratch::new();
    let r = s
        .run(&[
            "run",
            &example("wordcount"),
            "--set",
            "input.generate.size=64KiB",
            "--show",
            "3",
            "--progress",
            "never",
        ])
        .expect(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[1].starts_with("| word ") && lines[1].ends_with("| sum_count |"), "{}", r.stdout);
    assert_eq!(lines.len(), 8, "{}", r.stdout);
    assert_eq!(lines.last().copied(), Some("(3 of 100 rows)"));
    assert!(r.stderr.contains("wordcount succeeded in "), "{}", r.stderr);
    assert!(r.stderr.contains("count            map"), "{}", r.stderr);
    assert!(r.stderr.contains("output: out/wordcount.csv (100 rows"), "{}", r.stderr);
    // Records: one per invocation, in the run directory.
    let dir = r.stderr.lines().find_map(|l| l.strip_prefix("run directory: ")).unwrap();
    let records = s.records(dir);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path(dir).join("summary.json")).unwrap()).unwrap();
    assert_eq!(records.lines().count() as u64, summary["invocations"]["total"].as_u64().unwrap());
    let first: serde_json::Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    for key in ["stage", "phase", "task", "attempt", "worker", "container", "cold", "queued_us", "started_us"] {
        assert!(first.get(key).is_some(), "{key} missing from {first}");
    }
    assert!(s.path(dir).join("job.json").is_file());
}

#[test]
fn progress_always_reports_without_a_terminal() {
    let s = Scratch::new();
    let r = s.run(&[
        "run",
        &example("pi"),
        "--set",
        "stage.darts.params.samples=200000",
        "--progress",
        "always",
        "--show",
        "0",
    ]);
    let r = r.expect(0);
    // The last line for the stage shows every task done, the total known.
    let last = r.stderr.lines().rfind(|l| l.starts_with("darts: ")).unwrap();
    let tasks = last.split_once(" tasks").unwrap().0.split_whitespace().last().unwrap();
    let (done, total) = tasks.split_once('/').unwrap();
    assert_eq!(done, total, "{}", r.stderr);
    assert!(r.stderr.contains("total: 1/1 tasks"), "{}", r.stderr);
}

#[test]
fn progress_goes_by_input_bytes_with_an_eta_while_the_splitting_goes_on() {
    let s = Scratch::new();
    let text: String = (0..2000).map(|i| format!("line {i} of some words\n")).collect();
    s.write("in.txt", &text);
    let job = "[input]\npath = \"in.txt\"\nchunk_size = \"2KiB\"\n[[stage]]\nname = \"slow\"\nfunction = \"sleep\"\nparams = { ms = 150 }\n\
               [output]\npath = \"out.csv\"\nmode = \"overwrite\"\n[platform]\nconcurrency = 2\n";
    s.write("job.toml", job);
    let r = s.run(&["run", "job.toml", "--progress", "always", "--show", "0"]).expect(0);
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("slow: ")).collect();
    // A line a second while it runs (~3 s), and one at the end.
    assert!(lines.len() >= 2, "{}", r.stderr);
    let total = format!(" of {} · ", fanout_jobs_size(text.len() as u64));
    assert!(lines.iter().all(|l| l.contains(&total)), "the input's size is not shown from the start: {}", r.stderr);
    let mid = lines[0];
    assert!(mid.contains(" running, ") && mid.contains(" queued, ") && mid.contains(" retrying"), "{mid}");
    assert!(mid.contains(" · ETA "), "no ETA mid-run: {mid}");
    assert!(!lines.last().unwrap().contains("ETA"), "{}", r.stderr);
}

#[test]
fn a_stage_that_has_not_started_says_what_it_waits_for() {
    let s = Scratch::new();
    let text: String = (0..2000).map(|i| format!("w{} w{}\n", i % 13, i % 7)).collect();
    s.write("in.txt", &text);
    // The map phase takes at least 13 tasks x 300 ms / 2 slots, past the
    // first line (at 1 s); the keyed stage waits for it.
    let job = "[input]\npath = \"in.txt\"\nchunk_size = \"1KiB\"\n\
               [[stage]]\nname = \"slow\"\nfunction = \"sleep\"\nparams = { ms = 300 }\n\
               [[stage]]\nname = \"count\"\nfunction = \"word_count\"\n\
               [[stage]]\nname = \"total\"\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = { sum = [\"count\"] }\n\
               [output]\npath = \"out.csv\"\n[platform]\nconcurrency = 2\n";
    s.write("job.toml", job);
    let r = s.run(&["run", "job.toml", "--progress", "always", "--show", "0"]).expect(0);
    let lines = |stage: &str| -> Vec<String> {
        let prefix = format!("{stage}: ");
        r.stderr.lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_string).collect()
    };
    let total = lines("total");
    assert!(total.len() >= 2, "{}", r.stderr);
    // Mid-run, while the map phase goes on: what it waits for, no empty bar.
    assert_eq!(total[0], "waiting for count", "{}", r.stderr);
    // Stages of one phase start together: `count` never waits.
    assert!(lines("count").iter().all(|l| !l.starts_with("waiting")), "{}", r.stderr);
    assert!(lines("slow").iter().all(|l| !l.starts_with("waiting")), "{}", r.stderr);
    // At the end, its tasks.
    let last = total.last().unwrap();
    assert!(last.contains(" tasks · ") && !last.contains("waiting"), "{}", r.stderr);
}

#[test]
fn a_keyed_stage_shows_its_tasks_done_while_a_slow_function_after_it_runs() {
    let s = Scratch::new();
    s.write("in.txt", (0..200).map(|i| format!("w{} w{}\n", i % 13, i % 7)).collect::<String>());
    // The reduce of `total` is quick; `slow`, in the same tasks after it,
    // takes 3 s a partition: the line at 1 s shows total done, slow not.
    let job = "[input]\npath = \"in.txt\"\n\
               [[stage]]\nname = \"count\"\nfunction = \"word_count\"\n\
               [[stage]]\nname = \"total\"\nfunction = \"aggregate\"\nkey = [\"word\"]\npartitions = 2\nparams = { sum = [\"count\"] }\n\
               [[stage]]\nname = \"slow\"\nfunction = { exec = [\"sh\", \"-c\", \"sleep 3; cat\"] }\n\
               [output]\npath = \"out.csv\"\n[platform]\nconcurrency = 2\n";
    s.write("job.toml", job);
    let r = s.run(&["run", "job.toml", "--progress", "always", "--show", "0"]).expect(0);
    let first = |stage: &str| -> String {
        let prefix = format!("{stage}: ");
        r.stderr.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_default().to_string()
    };
    assert!(first("total").starts_with("2/2 tasks · 0 running, 0 queued"), "{}", r.stderr);
    assert!(first("slow").starts_with("0/2 tasks · 2 running"), "{}", r.stderr);
}

/// A size as fanout prints it (`41.0 KiB`).
fn fanout_jobs_size(bytes: u64) -> String {
    let kib = bytes as f64 / 1024.0;
    format!("{kib:.1} KiB")
}

#[test]
fn an_existing_output_is_kept_unless_overwrite() {
    let s = Scratch::new();
    s.write("out/pi.csv", "precious\n");
    let r = run(&s, "pi", &["output.mode=error".into(), "stage.darts.params.samples=1".into()]).expect(2);
    assert!(
        r.stderr.contains("the output out/pi.csv exists; remove it or set output.mode = \"overwrite\""),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(s.path("out/pi.csv")).unwrap(), "precious\n");
}

#[test]
fn a_failing_task_fails_the_job_and_leaves_no_output() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"x\": 1}\n{\"x\": 2}\n");
    s.write("in/b.jsonl", "{\"x\": 3}\nnot json\n");
    s.write(
        "job.toml",
        r#"
[input]
path = "in/*.jsonl"
format = "text"
[[stage]]
name = "parse"
function = "json_extract"
params = { fields = ["x:int64"] }
[output]
path = "out/x.csv"
"#,
    );
    let r = s.run(&["run", "job.toml", "--progress", "never"]).expect(1);
    assert!(
        r.stderr.contains("error: stage `parse` (map) failed on task 1 (in/b.jsonl bytes 0..18), attempt 1: json_extract: task 1 row 1: invalid JSON"),
        "{}",
        r.stderr
    );
    assert!(!s.path("out/x.csv").exists());
    let leftovers: Vec<_> = std::fs::read_dir(s.path("out")).unwrap().collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let dir = r.stderr.lines().find_map(|l| l.strip_prefix("run directory: ")).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path(dir).join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "failed");
}

#[test]
fn a_bad_record_fails_the_run_with_its_location() {
    let s = Scratch::new();
    s.write("in.txt", b"good line\nbad \xff line\n".as_slice());
    s.write(
        "job.toml",
        "[input]\npath = \"in.txt\"\n[[stage]]\nfunction = \"word_count\"\n[output]\npath = \"o.csv\"\n",
    );
    let r = s.run(&["run", "job.toml"]).expect(1);
    assert!(
        r.stderr.contains("failed on task 0 (in.txt bytes 0..21), attempt 1: in.txt: line 2 (byte 10): invalid UTF-8 at byte 4 of the line"),
        "{}",
        r.stderr
    );
    assert!(!s.path("o.csv").exists());
}

#[test]
fn function_parameters_are_checked_against_the_data_before_running() {
    let s = Scratch::new();
    s.write("in.csv", "a,b\n1,x\n");
    s.write(
        "job.toml",
        "[input]\npath = \"in.csv\"\n[[stage]]\nfunction = \"filter\"\nparams = { where = \"c > 1\" }\n[output]\npath = \"o.csv\"\n",
    );
    for cmd in ["validate", "run"] {
        let r = s.run(&[cmd, "job.toml"]).expect(2);
        assert_eq!(
            r.stderr, "error: job.toml:5:10: filter: no column `c` in the input; it has: a, b in `c > 1`\n",
            "{cmd}"
        );
    }
    let r = s
        .run(&["validate", "job.toml", "--set", "output.sort=[\"zz\"]", "--set", "stage.0.params.where=a > 0"])
        .expect(2);
    assert!(r.stderr.contains("--set output.sort=[\"zz\"]: output.sort: no column `zz`"), "{}", r.stderr);
}

#[test]
fn chaos_with_retries_changes_nothing_in_the_output() {
    let s = Scratch::new();
    // The lambda example's handler, by its path from here.
    let handler = format!(
        "stage.tag.function.lambda=[\"python3\", \"{}\"]",
        root().join("jobs/examples/lambda/handler.py").display()
    );
    let cases: [(&str, &[&str], &str); 6] = [
        ("wordcount", &["input.generate.size=64KiB", "input.chunk_size=4KiB"], "out/wordcount.csv"),
        ("csv-groupby", &["input.generate.rows=5000", "input.chunk_size=16KiB"], "out/csv-groupby.csv"),
        ("jsonl-filter", &["input.generate.rows=5000", "input.chunk_size=16KiB"], "out/jsonl-filter.jsonl"),
        ("pi", &["stage.darts.params.samples=100"], "out/pi.csv"),
        ("exec-awk", &["input.generate.size=512KiB", "input.chunk_size=16KiB"], "out/exec-awk.csv"),
        ("lambda-python", &["input.generate.rows=6000", "input.chunk_size=4KiB", &handler], "out/lambda-python.csv"),
    ];
    // Every example in jobs/examples is here.
    let examples: Vec<String> = std::fs::read_dir(root().join("jobs/examples"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".toml").map(String::from))
        .collect();
    for e in &examples {
        assert!(cases.iter().any(|c| c.0 == e), "the example {e} is not run under chaos");
    }
    for (name, sets, out) in cases {
        let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        run(&s, name, &sets).expect(0);
        let clean = std::fs::read(s.path(out)).unwrap();
        sets.extend(["platform.retries=30".into(), "platform.backoff=1ms".into()]);
        let job = example(name);
        sets.push("platform.timeout=300ms".into());
        sets.push("platform.backups=true".into());
        let chaos = "fail=0.1,panic=0.02,timeout=0.02,straggle=0.05x20,seed=11";
        let mut args = vec!["run", job.as_str(), "--json", "--chaos", chaos];
        for set in &sets {
            args.extend(["--set", set.as_str()]);
        }
        let r = s.run(&args).expect(0);
        let sum = summary(&r);
        assert!(sum["retries"].as_u64().unwrap() > 0, "{name}: chaos injected nothing");
        assert_eq!(sum["failed_tasks"].as_array().unwrap().len(), 0);
        assert_eq!(std::fs::read(s.path(out)).unwrap(), clean, "{name}: output differs under chaos");
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

#[test]
fn the_bill_matches_the_records() {
    let s = Scratch::new();
    let r = run(
        &s,
        "wordcount",
        &[
            "input.generate.size=64KiB".into(),
            "input.chunk_size=8KiB".into(),
            "platform.preset=gcp-functions".into(),
            "platform.memory=2048MB".into(),
        ],
    )
    .expect(0);
    let sum = summary(&r);
    let dir = s.path(".fanout/runs");
    let run_dir = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let records = s.records(&run_dir.display().to_string());
    // By hand: each duration rounded up to 100 ms, 2048 MB = 2,048,000,000
    // bytes = 2048 MB as the platform counts it, $0.0000165/GB-s and
    // $0.40 per million requests.
    let mut usd = 0.0;
    let mut n = 0;
    for line in records.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let us = v["finished_us"].as_u64().unwrap() - v["started_us"].as_u64().unwrap();
        let billed_ms = (us as f64 / 1000.0 / 100.0).ceil().max(1.0) * 100.0;
        assert_eq!(v["billed_us"].as_f64().unwrap(), billed_ms * 1000.0, "{line}");
        usd += billed_ms / 1000.0 * (2048.0 / 1024.0) * 0.0000165 + 0.40 / 1e6;
        n += 1;
    }
    assert_eq!(sum["cost"]["requests"], n);
    assert_eq!(sum["cost"]["preset"], "gcp-functions");
    assert_eq!(sum["cost"]["memory_mb"], 2048);
    let got = sum["cost"]["usd"].as_f64().unwrap();
    assert!((got - usd).abs() < 1e-12, "{got} vs {usd}");
}

#[test]
fn killed_runs_resume_to_the_same_output() {
    let s = Scratch::new();
    let job = example("wordcount");
    let sets = ["input.generate.size=2MiB", "input.chunk_size=16KiB", "platform.concurrency=2"];
    let mut args = vec!["run", job.as_str(), "--progress", "never", "--show", "0"];
    for set in &sets {
        args.extend(["--set", set]);
    }
    s.run(&args).expect(0);
    let clean = std::fs::read(s.path("out/wordcount.csv")).unwrap();
    std::fs::remove_dir_all(s.path("out")).unwrap();

    let mut first: Vec<&str> = args.clone();
    first.extend(["--run-dir", "killed"]);
    let resume = ["run", "--resume", "killed", "--progress", "never", "--show", "0"];
    let mut kills = 0;
    let mut finished = false;
    for i in 0..10u64 {
        let argv: Vec<&str> = if i == 0 { first.clone() } else { resume.to_vec() };
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(&argv)
            .current_dir(s.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different point each time, by the run's progress, not
        // the clock: once the journal has grown by 1 to 3 lines since the
        // last kill (SIGKILL: no cleanup runs).
        let journal = s.path("killed/journal.jsonl");
        let target = crate::util::lines_in(&journal) + 1 + (i as usize % 3);
        let mut ended = None;
        let grew = crate::util::wait_for(120, || {
            ended = child.try_wait().unwrap();
            ended.is_some() || crate::util::lines_in(&journal) >= target
        });
        assert!(grew, "the run made no progress");
        if let Some(status) = ended {
            assert!(status.success(), "run {i} failed: {status}");
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills > 0, "the run was never interrupted");
    if !finished {
        let r = s.run(&resume).expect(0);
        assert!(r.stderr.contains("resumed: "), "{}", r.stderr);
    }
    assert_eq!(std::fs::read(s.path("out/wordcount.csv")).unwrap(), clean, "after {kills} kills");
    // Every task was journaled exactly once: what was redone after a kill
    // is only what had not been journaled, i.e. what was in flight.
    let mut seen = std::collections::HashSet::new();
    for task in crate::util::journaled(&s.path("killed")) {
        assert!(seen.insert(task), "task journaled twice: {task:?}");
    }
    assert!(!seen.is_empty());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("killed/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "succeeded");
    // Some kill landed after tasks were journaled, and they were resumed
    // (else this would pass as an ordinary run).
    assert!(summary["resumed_tasks"].as_u64().unwrap() > 0, "{summary}");
    // The summary covers the whole run, interrupted parts included: every
    // map task and every partition ran at least once somewhere.
    let splits = summary["input"]["splits"].as_u64().unwrap();
    let stages = summary["stages"].as_array().unwrap();
    let calls = |name: &str, phase: &str| {
        stages.iter().find(|st| st["name"] == name && st["phase"] == phase).unwrap()["invocations"].as_u64().unwrap()
    };
    assert!(calls("count", "map") >= splits, "{summary}");
    assert!(calls("total", "reduce") >= 2, "{summary}");
    let logged = s.records("killed").lines().count() as u64;
    assert_eq!(summary["invocations"]["total"].as_u64().unwrap(), logged, "{summary}");
    let leftovers: Vec<_> = std::fs::read_dir(s.path("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "output and manifest only: {leftovers:?}");
}

#[test]
fn a_run_traces_as_chrome_trace_events() {
    let s = Scratch::new();
    let text: String = (0..3000).map(|i| format!("w{} w{} w{}\n", i % 7, i % 11, i % 13)).collect();
    s.write("in.txt", &text);
    let job = "[input]\npath = \"in.txt\"\nchunk_size = \"1KiB\"\n[[stage]]\nfunction = \"word_count\"\n\
               [[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = { sum = [\"count\"] }\n\
               [output]\npath = \"out.csv\"\nmode = \"overwrite\"\n[platform]\nconcurrency = 3\nretries = 5\n";
    s.write("job.toml", job);
    let args = [
        "run",
        "job.toml",
        "--progress",
        "never",
        "--show",
        "0",
        "--json",
        "--run-dir",
        "rd",
        "--chaos",
        "fail=0.1,seed=3",
    ];
    let sum: serde_json::Value = serde_json::from_str(&s.run(&args).expect(0).stdout).unwrap();
    let r = s.run(&["trace", "rd"]).expect(0);
    assert!(r.stdout.contains("rd/trace.json: ") && r.stdout.contains("on 3 worker slots"), "{}", r.stdout);
    s.run(&["trace", "rd", "--out", "t.json.gz"]).expect(0);
    crate::util::python(
        &s,
        &format!(
            r#"
import gzip, json
d = json.load(open("rd/trace.json"))
assert d == json.load(gzip.open("t.json.gz")), "the gzip trace differs"
ev = d["traceEvents"]
slices = [e for e in ev if e["ph"] == "X"]
assert len(slices) == {total}, (len(slices), {total})
assert sum(1 for e in slices if e["args"]["status"] == "error") == {failed}
assert all("error" in e["args"] for e in slices if e["args"]["status"] == "error")
tracks = {{e["tid"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}}
assert tracks == {{e["tid"] for e in slices}} and len(tracks) == 3, tracks
assert all(e["dur"] >= 0 for e in slices)
counters = [e for e in ev if e["ph"] == "C"]
names = {{e["name"] for e in counters}}
assert names == {{"in flight: word_count", "in flight: aggregate"}}, names
# Per stage, the counter is the slices overlapping its time: never more
# than the slots, back to 0 at the end.
for n in names:
    values = [e["args"]["invocations"] for e in counters if e["name"] == n]
    assert max(values) <= 3 and min(values) >= 0 and values[-1] == 0, (n, values)
print("ok")
"#,
            total = sum["invocations"]["total"],
            failed = sum["invocations"]["failed"],
        ),
    );
    assert!(sum["invocations"]["failed"].as_u64().unwrap() > 0, "chaos injected nothing: {sum}");
}

#[test]
fn a_trace_that_fails_leaves_no_file_and_a_missing_run_is_named() {
    let s = Scratch::new();
    s.write("in.txt", (0..2000).map(|i| format!("w{i}\n")).collect::<String>());
    let job = "[input]\npath = \"in.txt\"\nchunk_size = 256\n[[stage]]\nfunction = \"word_count\"\n\
               [output]\npath = \"out.csv\"\n";
    s.write("job.toml", job);
    s.run(&["run", "job.toml", "--progress", "never", "--show", "0", "--run-dir", "rd"]).expect(0);
    // The records cannot be read: the trace fails after it began.
    let records = s.path("rd/invocations.arrows");
    std::fs::remove_file(&records).unwrap();
    std::fs::create_dir(&records).unwrap();
    let r = s.run(&["trace", "rd"]).expect(1);
    assert!(r.stderr.starts_with("error: ") && r.stderr.contains("invocations.arrows"), "{}", r.stderr);
    let left: Vec<String> = std::fs::read_dir(s.path("rd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|f| f.contains("trace")), "a trace was left: {left:?}");
    let r = s.run(&["trace", "rd", "--out", "nodir/t.json"]).expect(1);
    assert_eq!(r.stderr.trim(), "error: nodir/t.json: No such file or directory (os error 2)");
    // A run directory that is not there, or not a run's, is a usage error
    // that names it, alike for every command that reads one.
    for args in [["trace", "gone"], ["records", "gone"], ["report", "gone"]] {
        let r = s.run(&args).expect(2);
        assert_eq!(r.stderr.trim(), "error: gone: no such run directory", "{args:?}");
    }
    let r = s.run(&["run", "--resume", "gone"]).expect(2);
    assert_eq!(r.stderr.trim(), "error: gone: no such run directory");
    for args in [["trace", "out.csv"], ["records", "out.csv"], ["report", "out.csv"]] {
        let r = s.run(&args).expect(2);
        assert_eq!(r.stderr.trim(), "error: out.csv: not a run directory (not a directory)", "{args:?}");
    }
    assert!(!s.path("gone").exists());
    // A job with --resume is a usage error, and the usage says so.
    let r = s.run(&["run", "--resume", "rd", "job.toml"]).expect(2);
    assert!(r.stderr.contains("fanout run --resume <RUN_DIR> [OPTIONS]"), "{}", r.stderr);
    assert!(!r.stderr.contains("--resume <RUN_DIR> [JOB]"), "{}", r.stderr);
}

#[test]
fn runs_lists_the_runs_oldest_first() {
    let s = Scratch::new();
    s.write("in.txt", "a b\nc\n");
    let job = "name = \"listed\"\n[input]\npath = \"in.txt\"\n[[stage]]\nfunction = \"word_count\"\n[output]\npath = \"o.csv\"\nmode = \"overwrite\"\n";
    s.write("job.toml", job);
    let ok = summary(&s.run(&["run", "job.toml", "--progress", "never", "--show", "0", "--json"]).expect(0));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let failing = ["run", "job.toml", "--progress", "never", "--chaos", "fail=1,seed=1", "--set", "platform.retries=0"];
    s.run(&failing).expect(1);
    // A run killed before it wrote its summary.
    let killed = s.path(".fanout/runs/20990101T000000Z-1");
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::write(killed.join("job.json"), r#"{"name": "killed-job"}"#).unwrap();
    let r = s.run(&["runs", "--json"]).expect(0);
    let runs: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "failed", "interrupted"], "{}", r.stdout);
    assert_eq!(runs[0]["run"], ok["run_id"]);
    assert_eq!(runs[0]["invocations"], ok["invocations"]["total"]);
    assert_eq!((runs[0]["job"].as_str(), runs[2]["job"].as_str()), (Some("listed"), Some("killed-job")));
    assert_eq!(runs[2]["started"], "2099-01-01 00:00:00");
    let table = s.run(&["runs"]).expect(0).stdout;
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("listed") && table.contains("interrupted"), "{table}");
    // A runs directory that is not there is a mistake (but the default
    // one before any run).
    assert_eq!(s.run(&["runs", "nowhere"]).expect(2).stderr.trim(), "error: nowhere: no such directory");
    // A run directory named by the user: started is when it began.
    s.run(&["run", "job.toml", "--progress", "never", "--run-dir", "mine/rd"]).expect(0);
    let r = s.run(&["runs", "mine", "--json"]).expect(0);
    let mine: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    let started = mine["started"].as_str().unwrap_or_default().to_string();
    assert!(started.len() == 19 && started.starts_with("20") && &started[10..11] == " ", "{mine}");
}
