//! Functions outside the process: the exec backend (a process per
//! invocation) and the lambda backend (worker processes speaking the AWS
//! Lambda Runtime API), run through the real binary and checked against
//! oracles computed here or by Python's standard library.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use crate::util::{Run, Scratch, need_python_module, python, root, summary};

fn fixture(name: &str) -> String {
    root().join("tests/fixtures/lambda").join(name).display().to_string()
}

/// Runs a job file written into the scratch directory.
fn run_job(s: &Scratch, job: &str, extra: &[&str]) -> Run {
    s.write("job.toml", job);
    let mut args = vec!["run", "job.toml", "--progress", "never", "--json"];
    args.extend_from_slice(extra);
    s.run(&args)
}

/// A generated file in the scratch directory.
fn generate(s: &Scratch, kind: &str, amount: &[&str], out: &str) {
    let mut args = vec!["datasets", "gen", kind, "--out", out];
    args.extend_from_slice(amount);
    s.run(&args).expect(0);
}

/// The job's lambda stage over the bootstrap fixture and a handler.
fn lambda_job(handler: &str, schema: &str, input: &str, chunk: &str, extra: &str) -> String {
    format!(
        r#"
[input]
path = "{input}"
chunk_size = "{chunk}"

[[stage]]
name = "f"
function = {{ lambda = ["python3", "{}"], handler = "handlers.{handler}", schema = {schema} }}

[output]
path = "out.csv"
mode = "overwrite"

[platform]
{}
"#,
        fixture("bootstrap.py"),
        platform(extra)
    )
}

/// `extra` platform settings, with the tests' defaults for those not given.
fn platform(extra: &str) -> String {
    let mut out = extra.to_string();
    for (key, value) in [("concurrency", "2"), ("retries", "1"), ("backoff", "\"1ms\"")] {
        if !extra.contains(&format!("{key} =")) {
            out.push_str(&format!("\n{key} = {value}"));
        }
    }
    out
}

#[test]
fn exec_awk_example_matches_a_sequential_count() {
    let s = Scratch::new();
    let job = root().join("jobs/examples/exec-awk.toml").display().to_string();
    for (chunk, concurrency) in [("1", 2), ("16KiB", 3)] {
        let sets = [
            "--set".to_string(),
            "input.generate.size=24KiB".into(),
            "--set".into(),
            format!("input.chunk_size={chunk}"),
            "--set".into(),
            format!("platform.concurrency={concurrency}"),
        ];
        let mut args = vec!["run", &job, "--progress", "never", "--json"];
        args.extend(sets.iter().map(String::as_str));
        let r = s.run(&args).expect(0);
        assert_eq!(summary(&r)["status"], "succeeded");
        // The oracle: the words of lines with twelve or more fields.
        let text = std::fs::read_to_string(s.path(".fanout/cache/gen-text-24576b-seed1.txt")).unwrap();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for line in text.lines().filter(|l| l.split_ascii_whitespace().count() >= 12) {
            for w in line.split_ascii_whitespace() {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut rows: Vec<(&str, u64)> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut want = String::from("word,sum_count\n");
        for (w, c) in rows.iter().take(20) {
            want.push_str(&format!("{w},{c}\n"));
        }
        assert_eq!(std::fs::read_to_string(s.path("out/exec-awk.csv")).unwrap(), want, "chunk {chunk}");
    }
}

#[test]
fn exec_speaks_csv_jsonl_and_arrow() {
    let s = Scratch::new();
    generate(&s, "csv", &["--rows", "3000"], "events.csv");
    // csv both ways, through a Python script that adds a column.
    let script = "import csv,sys\nr=csv.DictReader(sys.stdin)\nw=csv.writer(sys.stdout)\nw.writerow(['id','country','cents'])\nfor x in r: w.writerow([x['id'],x['country'],round(float(x['amount'])*100) if x['amount'] else ''])\n";
    s.write("cents.py", script);
    let job = r#"
[input]
path = "events.csv"
chunk_size = "8KiB"
[[stage]]
function = { exec = ["python3", "cents.py"], schema = ["id:int64", "country:utf8", "cents:int64"] }
[output]
path = "cents.csv"
"#;
    let r = run_job(&s, job, &[]).expect(0);
    assert!(summary(&r)["stages"][0]["name"] == "python3", "{}", r.stdout);
    python(
        &s,
        "import csv\nrows=list(csv.DictReader(open('events.csv')))\nwant='id,country,cents\\n'+''.join(f\"{x['id']},{x['country']},{round(float(x['amount'])*100) if x['amount'] else ''}\\n\" for x in rows)\nassert open('cents.csv').read()==want\nprint('ok')",
    );

    // jsonl both ways (the default for jsonl input), with env and params.
    generate(&s, "jsonl", &["--rows", "500"], "events.jsonl");
    s.write(
        "pick.py",
        "import json,os,sys\np=json.loads(os.environ['FANOUT_PARAMS'])\nfor l in sys.stdin:\n  x=json.loads(l)\n  print(json.dumps({'id':x['id'],'tag':os.environ['TAG']+p['suffix'],'task':int(os.environ['FANOUT_TASK'])}))\n",
    );
    let job = r#"
[input]
path = "events.jsonl"
chunk_size = "16KiB"
[[stage]]
name = "pick"
params = { suffix = "!" }
function = { exec = ["python3", "pick.py"], env = { TAG = "t" }, schema = ["id:int64", "tag:utf8", "task:int64"] }
[output]
path = "picked.jsonl"
"#;
    run_job(&s, job, &[]).expect(0);
    python(
        &s,
        "import json\nids=[json.loads(l)['id'] for l in open('events.jsonl')]\nout=[json.loads(l) for l in open('picked.jsonl')]\nassert [o['id'] for o in out]==ids\nassert all(o['tag']=='t!' for o in out)\nassert len({o['task'] for o in out})>1\nprint('ok')",
    );

    // Arrow IPC streams, through `cat`: parquet in, the same rows out.
    generate(&s, "parquet", &["--rows", "2000"], "events.parquet");
    let job = r#"
[input]
path = "events.parquet"
[[stage]]
function = { exec = ["cat"] }
[output]
path = "same.csv"
"#;
    run_job(&s, job, &[]).expect(0);
    let direct = r#"
[input]
path = "events.parquet"
[output]
path = "direct.csv"
"#;
    s.write("direct.toml", direct);
    s.run(&["run", "direct.toml", "--progress", "never"]).expect(0);
    let same = std::fs::read_to_string(s.path("same.csv")).unwrap();
    assert_eq!(same, std::fs::read_to_string(s.path("direct.csv")).unwrap());
}

#[test]
fn exec_failures_name_the_task_and_show_stderr() {
    let s = Scratch::new();
    s.write("in.txt", "a\nb\nc\n");
    let job = |argv: &str, extra: &str| {
        format!(
            "[input]\npath = \"in.txt\"\n[[stage]]\nname = \"tool\"\nfunction = {{ exec = {argv} }}\n[output]\npath = \"out.csv\"\n[platform]\n{}",
            platform(extra)
        )
    };
    let r = run_job(&s, &job(r#"["sh", "-c", "echo 'no such column: zz' >&2; exit 3"]"#, ""), &[]).expect(1);
    assert!(r.stderr.contains("stage `tool` (map) failed on task 0"), "{}", r.stderr);
    assert!(r.stderr.contains("in.txt bytes 0..6"), "{}", r.stderr);
    assert!(r.stderr.contains("attempt 2"), "{}", r.stderr);
    assert!(r.stderr.contains("exited with status 3"), "{}", r.stderr);
    assert!(r.stderr.contains("no such column: zz"), "{}", r.stderr);
    assert!(!s.path("out.csv").exists());

    let r = run_job(&s, &job(r#"["sh", "-c", "kill -9 $$"]"#, ""), &[]).expect(1);
    assert!(r.stderr.contains("killed by signal 9 (SIGKILL)"), "{}", r.stderr);

    let bad = r#"["sh", "-c", "printf 'x,y\n1,2\n'"]"#;
    let r = run_job(&s, &job(bad, "").replace("exec = ", "output = \"csv\", schema = [\"a:int64\"], exec = "), &[])
        .expect(1);
    assert!(r.stderr.contains("the csv header `x,y` does not match the declared columns `a`"), "{}", r.stderr);

    // A process past its deadline is killed with its children: the
    // child `sleep`s hold stdout open, so the run could not end before
    // they do unless the whole group is killed.
    let started = Instant::now();
    let hang = r#"["sh", "-c", "sleep 20 & sleep 20; wait"]"#;
    let r = run_job(&s, &job(hang, "timeout = \"300ms\"\nretries = 0"), &[]).expect(1);
    assert!(r.stderr.contains("passed its deadline and was killed with every process it started"), "{}", r.stderr);
    assert!(started.elapsed().as_secs() < 10, "took {:?}", started.elapsed());

    // A program that does not exist is an error at validate time.
    let r = run_job(&s, &job(r#"["no-such-program-xyz"]"#, ""), &[]).expect(2);
    assert!(r.stderr.contains("`no-such-program-xyz` is not found on PATH"), "{}", r.stderr);
    // lines io needs one utf8 column.
    s.write("t.csv", "a,b\n1,2\n");
    let r = run_job(
        &s,
        "[input]\npath = \"t.csv\"\n[[stage]]\nfunction = { exec = [\"cat\"], io = \"lines\" }\n[output]\npath = \"o.csv\"\n",
        &[],
    )
    .expect(2);
    assert!(r.stderr.contains("io = \"lines\" needs one utf8 column"), "{}", r.stderr);
}

#[test]
fn lambda_python_example_matches_python() {
    let s = Scratch::new();
    let job = root().join("jobs/examples/lambda-python.toml").display().to_string();
    let handler = root().join("jobs/examples/lambda/handler.py").display().to_string();
    for (chunk, concurrency) in [("16KiB", 2), ("1MiB", 1)] {
        let sets = [
            "input.generate.rows=3000".to_string(),
            format!("input.chunk_size={chunk}"),
            format!("platform.concurrency={concurrency}"),
            format!("stage.tag.function.lambda=[\"python3\", \"{handler}\"]"),
        ];
        let mut args = vec!["run", &job, "--progress", "never", "--json"];
        for set in &sets {
            args.push("--set");
            args.push(set);
        }
        let r = s.run(&args).expect(0);
        let sum = summary(&r);
        let stage = &sum["stages"][0];
        assert_eq!(stage["cold"], concurrency.min(stage["invocations"].as_u64().unwrap() as usize), "{}", r.stdout);
        python(
            &s,
            "import csv\nrows=list(csv.DictReader(open('.fanout/cache/gen-csv-3000rows-seed1.csv')))\n\
             def tag(x):\n  a=x['amount']\n  if not a: return f\"{x['id']},{x['country']},unknown,\\n\"\n  a=float(a); g=round(a*1.2,2)\n  return f\"{x['id']},{x['country']},{'large' if a>=500 else 'small'},{g!r}\\n\"\n\
             want='id,country,band,gross\\n'+''.join(tag(x) for x in rows)\ngot=open('out/lambda-python.csv').read()\nassert got==want, (got[:300], want[:300])\nprint('ok')",
        );
    }
}

#[test]
fn lambda_errors_crashes_deadlines_and_memory() {
    let s = Scratch::new();
    s.write("in.txt", "alpha\nbeta\ngamma\ndelta\n");
    let schema = r#"["line:utf8"]"#;

    // A function error: its type and message, the task and the input.
    let r = run_job(&s, &lambda_job("fail", schema, "in.txt", "12", ""), &[]).expect(1);
    assert!(r.stderr.contains("stage `f` (map) failed on task"), "{}", r.stderr);
    assert!(r.stderr.contains("ValueError: bad record in task"), "{}", r.stderr);
    // Its lines after the first quoted under the one error, escaped.
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("\n  | second line\n  | \\x1b[31mthird\\rline"), "{}", r.stderr);

    // An init error fails the stage with the function's own message, once.
    let r = run_job(&s, &lambda_job("nothing", schema, "in.txt", "12", "").replace("handlers.", "no_module."), &[])
        .expect(1);
    assert!(r.stderr.contains("init error: ModuleNotFoundError: No module named 'no_module'"), "{}", r.stderr);
    assert!(r.stderr.contains("attempt 1"), "{}", r.stderr);

    // A process that dies mid-invocation is replaced; the retry succeeds.
    let r = run_job(&s, &lambda_job("crash_first", schema, "in.txt", "12", ""), &["--run-dir", "crash"]).expect(0);
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), "line\nalpha\nbeta\ngamma\ndelta\n");
    let sum = summary(&r);
    let tasks = sum["input"]["splits"].as_u64().unwrap();
    assert!(tasks >= 2, "{}", r.stdout);
    assert_eq!(sum["stages"][0]["invocations"].as_u64().unwrap(), 2 * tasks);
    // Every attempt ran on a fresh process: a cold start each.
    assert_eq!(sum["stages"][0]["cold"].as_u64().unwrap(), 2 * tasks);
    let log = s.records("crash");
    assert!(log.lines().any(|l| l.contains("during the invocation")), "{log}");

    // Past its deadline, the process is killed and the attempt fails.
    let slow = lambda_job("slow", schema, "in.txt", "1KiB", "timeout = \"400ms\"\nretries = 0")
        .replace("[output]", "params = { seconds = 30 }\n[output]");
    let started = Instant::now();
    let r = run_job(&s, &slow, &[]).expect(1);
    assert!(r.stderr.contains("timed out: past its deadline"), "{}", r.stderr);
    assert!(started.elapsed().as_secs() < 10, "took {:?}", started.elapsed());

    // platform.memory is each process's memory limit.
    let hog = lambda_job("hog", schema, "in.txt", "1KiB", "memory = \"128MB\"\nretries = 0")
        .replace("[output]", "params = { mb = 1024 }\n[output]");
    let r = run_job(&s, &hog, &[]).expect(1);
    assert!(r.stderr.contains("out of memory: the function passed its limit of 128 MB"), "{}", r.stderr);
    assert!(r.stderr.contains("MemoryError"), "{}", r.stderr);

    // A response that does not fit the declared schema names the record.
    let r = run_job(&s, &lambda_job("wrong_type", r#"["line:utf8", "n:int64"]"#, "in.txt", "1KiB", ""), &[]).expect(1);
    assert!(r.stderr.contains("task 0"), "{}", r.stderr);
    assert!(r.stderr.contains("the response record 0"), "{}", r.stderr);
    let r = run_job(&s, &lambda_job("misspelled", schema, "in.txt", "1KiB", ""), &[]).expect(1);
    assert!(
        r.stderr.contains("the response has no record with the declared column `line`; its records have: lnie"),
        "{}",
        r.stderr
    );
    let r = run_job(&s, &lambda_job("not_records", schema, "in.txt", "1KiB", ""), &[]).expect(1);
    assert!(r.stderr.contains(r#"the response is not {"records": [...]}: {"result": 42}"#), "{}", r.stderr);
}

#[test]
fn lambda_runtime_api_answers_as_the_service_does() {
    let s = Scratch::new();
    generate(&s, "text", &["--size", "6KiB"], "in.txt");
    let job = format!(
        "[input]\npath = \"in.txt\"\nchunk_size = \"1KiB\"\n[[stage]]\nfunction = {{ lambda = [\"python3\", \"{}\"], schema = [\"task:int64\", \"check:utf8\", \"status:int64\"] }}\n[output]\npath = \"out.csv\"\nmode = \"overwrite\"\n[platform]\nconcurrency = 2\n",
        fixture("conformance.py")
    );
    run_job(&s, &job, &[]).expect(0);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for line in out.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        seen.entry(f[1].to_string()).or_default().push(f[2].to_string());
    }
    let all = |check: &str, status: &str| {
        let got = &seen[check];
        assert!(!got.is_empty() && got.iter().all(|s| s == status), "{check}: {got:?}");
    };
    all("unknown_id", "400");
    all("answered_twice", "400");
    all("next_while_invoking", "403");
    all("init_error_after_init", "403");
    all("unknown_path", "404");
    all("wrong_method", "405");
    all("headers", "3");
    assert_eq!(seen["unknown_id"].len() as u64, out.lines().filter(|l| l.contains(",unknown_id,")).count() as u64);

    // A response over the payload limit gets a 413 and fails the attempt.
    let r = run_job(
        &s,
        &lambda_job("inflate", r#"["line:utf8"]"#, "in.txt", "2KiB", "payload_limit = \"64KiB\"\nretries = 0"),
        &[],
    )
    .expect(1);
    assert!(r.stderr.contains("the response is over the payload limit of 65536 bytes"), "{}", r.stderr);
    // An event over the limit is not sent; with event = "auto" the
    // function gets a reference to its split instead.
    let big = lambda_job("count_any", r#"["how:utf8", "lines:int64"]"#, "in.txt", "4KiB", "payload_limit = \"2KiB\"");
    let r = run_job(&s, &big, &[]).expect(1);
    assert!(r.stderr.contains("over the payload limit of 2048 bytes (platform.payload_limit)"), "{}", r.stderr);
    assert!(r.stderr.contains("set event = \"auto\" or \"split\""), "{}", r.stderr);
    run_job(&s, &big.replace("handler =", "event = \"auto\", handler ="), &[]).expect(0);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    let lines: u64 = out.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap()).sum();
    let want = std::fs::read_to_string(s.path("in.txt")).unwrap().lines().count() as u64;
    assert_eq!(lines, want);
    assert!(out.contains("split,"), "{out}");
}

#[test]
fn lambda_split_events_and_keyed_stages() {
    let s = Scratch::new();
    generate(&s, "text", &["--size", "40KiB"], "in.txt");
    let text = std::fs::read_to_string(s.path("in.txt")).unwrap();
    // Split events: the function reads its own byte range.
    let job = lambda_job("count_split", r#"["offset:int64", "lines:int64"]"#, "in.txt", "4KiB", "")
        .replace("handler =", "event = \"split\", handler =");
    run_job(&s, &job, &[]).expect(0);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    let counts: Vec<(u64, u64)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert!(counts.len() >= 10, "{out}");
    assert_eq!(counts[0].0, 0);
    assert!(counts.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), text.lines().count() as u64);

    // A keyed lambda stage: word_count, then a Python reduce per partition.
    let job = format!(
        r#"
[input]
path = "in.txt"
chunk_size = "8KiB"
[[stage]]
function = "word_count"
[[stage]]
name = "total"
key = ["word"]
partitions = 3
function = {{ lambda = ["python3", "{}"], handler = "handlers.total", schema = ["word:utf8", "n:int64"] }}
[output]
path = "words.csv"
sort = ["-n", "word"]
"#,
        fixture("bootstrap.py")
    );
    run_job(&s, &job, &[]).expect(0);
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for w in text.split_ascii_whitespace() {
        *counts.entry(w).or_default() += 1;
    }
    let mut rows: Vec<(&str, u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let want: String =
        std::iter::once("word,n\n".to_string()).chain(rows.iter().map(|(w, c)| format!("{w},{c}\n"))).collect();
    assert_eq!(std::fs::read_to_string(s.path("words.csv")).unwrap(), want);
}

#[test]
fn lambda_functions_on_awslambdaric_run_unchanged() {
    need_python_module("awslambdaric");
    let s = Scratch::new();
    generate(&s, "text", &["--size", "20KiB"], "in.txt");
    let job = format!(
        r#"
[input]
path = "in.txt"
chunk_size = "2KiB"
[[stage]]
name = "up"
function = {{ lambda = ["python3", "-m", "awslambdaric", "handlers.upper"], cwd = "{}", schema = ["line:utf8", "n:int64"] }}
[output]
path = "out.csv"
mode = "overwrite"
[platform]
concurrency = 2
"#,
        root().join("tests/fixtures/lambda").display()
    );
    let r = run_job(&s, &job, &[]).expect(0);
    assert_eq!(summary(&r)["stages"][0]["cold"], 2);
    let text = std::fs::read_to_string(s.path("in.txt")).unwrap();
    let want: String = std::iter::once("line,n\n".to_string())
        .chain(text.lines().map(|l| format!("{},{}\n", l.to_uppercase(), l.len())))
        .collect();
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
    // awslambdaric reports a handler that does not exist as an init error.
    let r = run_job(&s, &job.replace("handlers.upper", "handlers.nope"), &[]).expect(1);
    assert!(r.stderr.contains("init error: Runtime.HandlerNotFound"), "{}", r.stderr);
}

#[test]
fn lambda_functions_on_the_rust_lambda_runtime_run_unchanged() {
    // The fixture is built as for Lambda, in a workspace of its own.
    let dir = root().join("tests/fixtures/lambda-rust");
    let target = root().join("target/fixtures");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "building the lambda_runtime fixture failed");
    let binary = target.join("debug/fanout-lambda-fixture");
    let s = Scratch::new();
    generate(&s, "jsonl", &["--rows", "400"], "in.jsonl");
    let job = format!(
        r#"
[input]
path = "in.jsonl"
chunk_size = "4KiB"
[[stage]]
function = {{ lambda = ["{}"], schema = ["id:int64", "echoed:bool"] }}
[output]
path = "out.jsonl"
[platform]
concurrency = 2
"#,
        binary.display()
    );
    let r = run_job(&s, &job, &[]).expect(0);
    let sum = summary(&r);
    assert_eq!(sum["stages"][0]["cold"], 2, "{}", r.stdout);
    python(
        &s,
        "import json\nids=[json.loads(l)['id'] for l in open('in.jsonl')]\nout=[json.loads(l) for l in open('out.jsonl')]\nassert out==[{'id':i,'echoed':True} for i in ids], out[:3]\nprint('ok')",
    );
}

#[test]
fn a_straggling_reduce_partition_gets_a_backup() {
    let s = Scratch::new();
    generate(&s, "text", &["--size", "8KiB"], "in.txt");
    // The first run of partition 1 hangs; its backup (and every other
    // run) passes the words through.
    let job = |script: &str, extra: &str| {
        format!(
            r#"
[input]
path = "in.txt"
chunk_size = "1KiB"
[[stage]]
function = "word_count"
[[stage]]
name = "pass"
key = ["word"]
partitions = 4
function = {{ exec = ["sh", "-c", '{script}'] }}
[output]
path = "out.csv"
sort = ["word", "count"]
mode = "overwrite"
[platform]
{extra}
"#
        )
    };
    run_job(&s, &job("cat", ""), &[]).expect(0);
    let want = std::fs::read_to_string(s.path("out.csv")).unwrap();
    let hang = r#"if [ "$FANOUT_TASK" = 1 ] && mkdir straggled 2>/dev/null; then sleep 30; fi; cat"#;
    let started = Instant::now();
    let r = run_job(&s, &job(hang, "backups = true\nbackup_when_done = 0.5"), &["--run-dir", "rd"]).expect(0);
    assert!(started.elapsed().as_secs() < 20, "the run waited for the straggler: {:?}", started.elapsed());
    // Partition 1 got a backup; under load another slow partition may too.
    assert!(summary(&r)["backup_tasks"].as_u64().unwrap() >= 1, "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
    let log = s.records("rd");
    let part1: Vec<&str> = log.lines().filter(|l| l.contains("\"phase\":\"reduce\",\"task\":1,")).collect();
    assert_eq!(part1.len(), 2, "{log}");
    // One run of the partition hangs and the other wins. The one that hangs
    // is whichever reaches `mkdir` first: under load that can be the backup.
    assert_eq!(part1.iter().filter(|l| l.contains("\"backup\":true")).count(), 1, "{log}");
    assert_eq!(part1.iter().filter(|l| l.contains("\"status\":\"ok\"")).count(), 1, "{log}");
    assert!(part1.iter().any(|l| l.contains("cancelled")), "{log}");
}

#[test]
fn a_resumed_run_reports_the_failures_and_invocations_before_the_kill() {
    let s = Scratch::new();
    s.write("in.txt", (0..20).map(|i| format!("line {i}\n")).collect::<String>());
    let job = r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "tool"
function = { exec = ["sh", "-c", 'if [ "$FANOUT_TASK" = 3 ]; then echo broken >&2; exit 1; fi; sleep 0.2; cat'] }
[output]
path = "out.csv"
[platform]
concurrency = 2
retries = 0
tolerated_failure_count = 1
"#;
    s.write("job.toml", job);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["run", "job.toml", "--progress", "never", "--run-dir", "rd"])
        .current_dir(s.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Kill once the failure is reported and three tasks are journaled.
    let journaled = || crate::util::journaled(&s.path("rd")).len();
    while !(s.path("rd/failures.jsonl").exists() && journaled() >= 3) && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!s.path("rd/summary.json").exists(), "the run finished before the kill");
    let r = s.run(&["run", "--resume", "rd", "--progress", "never", "--json"]).expect(0);
    let sum = summary(&r);
    assert_eq!(sum["failed_tasks"].as_array().unwrap().len(), 1, "{}", r.stdout);
    assert_eq!(sum["failed_tasks"][0]["task"], 3);
    assert!(sum["failed_tasks"][0]["error"].as_str().unwrap().contains("broken"));
    assert!(sum["resumed_tasks"].as_u64().unwrap() >= 3, "{}", r.stdout);
    // Every task's invocations, before and after the kill, are counted.
    assert!(sum["invocations"]["total"].as_u64().unwrap() >= 20, "{}", r.stdout);
    let failures = std::fs::read_to_string(s.path("rd/failures.jsonl")).unwrap();
    assert_eq!(failures.lines().count(), 1, "{failures}");
    let want: String = std::iter::once("line\n".to_string())
        .chain((0..20).filter(|&i| i != 3).map(|i| format!("line {i}\n")))
        .collect();
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
}

#[test]
fn idle_lambda_processes_are_retired_after_keep_alive() {
    let s = Scratch::new();
    s.write("in.txt", (0..8).map(|i| format!("w{i} x\n")).collect::<String>());
    let pids = s.path("pids").display().to_string();
    // Map: a lambda stage noting its process ids. Reduce: a keyed exec
    // stage that waits past the keep-alive, then says whether those
    // processes still live. The map's container is idle the whole reduce
    // phase, so after the first partition's task it is retired.
    let job = format!(
        r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "map"
params = {{ pids = "{pids}" }}
function = {{ lambda = ["python3", "{}"], handler = "handlers.echo_pid" }}
[[stage]]
name = "check"
key = ["line"]
partitions = 4
function = {{ exec = ["sh", "-c", 'cat >/dev/null; sleep 0.3; for p in $(sort -u {pids}); do kill -0 $p 2>/dev/null && echo alive || echo dead; done'], output = "lines", schema = ["line:utf8"] }}
[output]
path = "out.csv"
mode = "overwrite"
[platform]
concurrency = 1
keep_alive = "100ms"
"#,
        fixture("bootstrap.py")
    );
    run_job(&s, &job, &[]).expect(0);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{out}");
    // The first check runs before its slot retires anything; the last one
    // after: the idle process has been killed.
    assert_eq!(lines.first(), Some(&"alive"), "{out}");
    assert_eq!(lines.last(), Some(&"dead"), "{out}");
}

#[test]
fn a_slot_waiting_for_tasks_retires_its_idle_lambda_process() {
    let s = Scratch::new();
    s.write("in.txt", (0..6).map(|i| format!("w{i}\n")).collect::<String>());
    let pids = s.path("pids").display().to_string();
    // Two slots; the last task keeps one busy while the other has nothing
    // left to run: that slot's process must go once past the keep-alive,
    // not at the end of the phase.
    // The last task waits for the other process to end (at most `wait`
    // seconds): it must end while that task runs.
    let job = |keep_alive: &str, wait: u32| {
        format!(
            r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "map"
params = {{ pids = "{pids}", last = 5, wait = {wait} }}
function = {{ lambda = ["python3", "{}"], handler = "handlers.watch", schema = ["line:utf8", "other:utf8"] }}
[output]
path = "out.csv"
mode = "overwrite"
[platform]
concurrency = 2
{keep_alive}
"#,
            fixture("bootstrap.py")
        )
    };
    let watched = |keep_alive: &str, wait: u32| {
        let _ = std::fs::remove_file(s.path("pids"));
        run_job(&s, &job(keep_alive, wait), &[]).expect(0);
        let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
        out.lines().find(|l| l.starts_with("watch,")).map(str::to_string).unwrap_or_else(|| panic!("{out}"))
    };
    assert_eq!(watched("keep_alive = \"100ms\"", 60), "watch,dead");
    // Without a keep-alive the idle process lives on (the second it is
    // given): the check can fail.
    assert_eq!(watched("", 1), "watch,alive");
}

#[test]
fn a_first_exec_stage_gets_the_split_bytes_as_the_file_has_them() {
    let s = Scratch::new();
    // Formatting a re-encoding would change: "1.50", quotes that need
    // none, a quoted newline, CRLF.
    let mut csv = String::from("id,amount,note\r\n");
    for i in 0..300 {
        csv.push_str(&format!("{i},{}.50,\"line {i}\nmore\"\r\n", i % 7));
    }
    s.write("in.csv", &csv);
    let hex = r#"["python3", "-c", "import sys, binascii; print(binascii.hexlify(sys.stdin.buffer.read()).decode())"]"#;
    let job = |path: &str| {
        format!(
            "[input]\npath = \"{path}\"\nchunk_size = \"1KiB\"\n[[stage]]\nfunction = {{ exec = {hex}, output = \"lines\" }}\n[output]\npath = \"out.csv\"\nmode = \"overwrite\"\n"
        )
    };
    let decoded = |s: &Scratch| -> Vec<Vec<u8>> {
        let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
        out.lines()
            .skip(1)
            .map(|h| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect())
            .collect()
    };
    let r = run_job(&s, &job("in.csv"), &[]).expect(0);
    let sum = summary(&r);
    assert!(sum["input"]["splits"].as_u64().unwrap() > 5, "{}", r.stdout);
    // The records are counted though the engine parsed none of them.
    assert_eq!(sum["input"]["records"], 300, "{}", r.stdout);
    assert_eq!(sum["stages"][0]["records_in"], 300, "{}", r.stdout);
    let header = b"id,amount,note\r\n";
    let mut body = Vec::new();
    for task in decoded(&s) {
        assert!(task.starts_with(header), "{}", String::from_utf8_lossy(&task));
        body.extend_from_slice(&task[header.len()..]);
    }
    assert_eq!(String::from_utf8(body).unwrap(), csv[header.len()..]);

    // A compressed file is one split: its whole decompressed stream.
    let gz = Command::new("gzip").args(["-k", "-n", "in.csv"]).current_dir(s.dir.path()).status().unwrap();
    assert!(gz.success());
    run_job(&s, &job("in.csv.gz"), &[]).expect(0);
    assert_eq!(decoded(&s), vec![csv.as_bytes().to_vec()]);
}

#[test]
fn a_function_s_env_takes_numbers_and_booleans_as_written() {
    let s = Scratch::new();
    s.write("in.txt", "x\n");
    let job = r#"
[input]
path = "in.txt"
[[stage]]
name = "show"
[stage.function]
exec = ["sh", "-c", "cat >/dev/null; echo \"$DELAY $FLAG $N $NAME\""]
env = { DELAY = 0.3, FLAG = true, N = 7, NAME = "x y" }
[output]
path = "out.csv"
mode = "overwrite"
"#;
    run_job(&s, job, &[]).expect(0);
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), "line\n0.3 true 7 x y\n");
    // And from the command line, unquoted.
    run_job(&s, job, &["--set", "stage.show.function.env.N=9"]).expect(0);
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), "line\n0.3 true 9 x y\n");
}
