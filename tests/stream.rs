//! Streams: a job whose input is records as they arrive, run through the
//! real binary against a producer process, its windows checked against
//! an oracle computed in Python from what the producer wrote — also
//! across `kill -9` and resume, and a SIGTERM's drain.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{Scratch, binary, root, summary};

/// The clicks job: a tumbling 2 s window of counts and sums per page over
/// the event-time field `ts`, 1 s allowed lateness.
pub(crate) fn clicks(extra_stream: &str, output: &str) -> String {
    format!(
        r#"name = "clicks"
[input]
stream = {{ dir = "incoming" }}
format = "jsonl"
schema = ["page:utf8", "ts:utf8", "n:int64"]
[stream]
batch_size = 300
batch_window = "50ms"
window = {{ tumbling = "2s", time = "ts" }}
allowed_lateness = "1s"
{extra_stream}
[[stage]]
name = "count"
function = "aggregate"
key = ["page"]
params = {{ count = true, sum = ["n"] }}
[output]
path = "{output}"
format = "jsonl"
[platform]
concurrency = 2
"#
    )
}

/// Starts the producer: `files` files of `records` events into
/// `incoming/`, `rate` files a second.
fn produce(s: &Scratch, files: u32, records: u32, rate: f64) -> std::process::Child {
    produce_seeded(s, files, records, rate, 7)
}

/// The same, its events drawn from `seed`.
pub(crate) fn produce_seeded(s: &Scratch, files: u32, records: u32, rate: f64, seed: u32) -> std::process::Child {
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    Command::new("python3")
        .arg(root().join("tests/fixtures/stream_producer.py"))
        .arg(s.path("incoming"))
        .args([files.to_string(), records.to_string(), rate.to_string(), seed.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Checks the windows in `out` and the late records of `run_dir` against
/// the oracle.
fn check(s: &Scratch, out: &str, run_dir: &str) {
    check_windows(s, out, run_dir, &["2000", "1000"]);
}

/// The same, with the oracle's window arguments (`WINDOW_MS LATENESS_MS
/// [EVERY_MS | session]`).
pub(crate) fn check_windows(s: &Scratch, out: &str, run_dir: &str, window: &[&str]) {
    let oracle = root().join("tests/fixtures/stream_oracle.py");
    let r = Command::new("python3")
        .arg(oracle)
        .args([s.path("incoming"), s.path(out), s.path(run_dir)])
        .args(window)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "ok", "oracle: {}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn a_windowed_count_over_a_directory_matches_the_oracle() {
    let s = Scratch::new();
    let mut producer = produce(&s, 12, 400, 20.0);
    s.write("clicks.toml", clicks("", "out/"));
    let r = s.run_within(
        120,
        &["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--json", "--run-dir", "rd"],
    );
    let r = r.expect(0);
    assert!(producer.wait().unwrap().success());
    // The directory is watched with inotify, not listed at every poll.
    assert!(!r.stderr.contains("listing it every"), "{}", r.stderr);
    let sum = summary(&r);
    assert_eq!(sum["status"], "succeeded");
    assert_eq!(sum["stream"]["stopped_by"], "idle");
    assert_eq!(sum["stream"]["records_in"], 12 * 400);
    assert!(sum["stream"]["windows"].as_u64().unwrap() >= 8, "{sum}");
    assert!(sum["stream"]["late_records"].as_u64().unwrap() > 0, "the producer writes late events: {sum}");
    check(&s, "out", "rd");
    // The stream over time, a sample a second, in the summary and the
    // report's Stream section.
    let lag = sum["stream"]["lag"].as_array().unwrap();
    assert!(lag.len() >= 2, "{lag:?}");
    let ins: Vec<u64> = lag.iter().map(|l| l["records_in"].as_u64().unwrap()).collect();
    assert_eq!(ins[0], 0, "the first sample is the stream's start");
    assert!(ins.windows(2).all(|w| w[0] <= w[1]) && *ins.last().unwrap() == 12 * 400, "{ins:?}");
    s.run(&["report", "rd"]).expect(0);
    let html = std::fs::read_to_string(s.path("rd/report.html")).unwrap();
    assert!(html.contains("<h2>Stream</h2>") && html.contains("id=\"stream-lag\"") && html.contains("files waiting"));
    // Every invocation is recorded: a combine per window part of a batch,
    // a reduce per window.
    let r = s.run(&["records", "rd"]).expect(0);
    let records: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len() as u64, sum["invocations"]["total"].as_u64().unwrap());
    let reduces = records.iter().filter(|r| r["phase"] == "reduce").count() as u64;
    assert_eq!(reduces, sum["stream"]["windows"].as_u64().unwrap());
    let combined: u64 =
        records.iter().filter(|r| r["phase"] == "combine").map(|r| r["records_in"].as_u64().unwrap()).sum();
    let late = sum["stream"]["late_records"].as_u64().unwrap();
    assert_eq!(combined + late, 12 * 400, "every record is combined once or is late");
    let r = s.run(&["report", "rd"]).expect(0);
    assert!(r.stderr.contains(&format!("({} invocations", records.len())), "{}", r.stderr);
    // Resuming the finished stream does nothing.
    let r = s.run(&["run", "--resume", "rd", "--progress", "never"]).expect(0);
    assert!(r.stderr.contains("nothing to resume: the run in rd finished; its output is the"), "{}", r.stderr);
}

#[test]
fn kill_9_at_random_points_then_resume_neither_loses_nor_repeats() {
    let s = Scratch::new();
    let mut producer = produce(&s, 40, 300, 12.0);
    s.write("clicks.toml", clicks("checkpoint_every = \"150ms\"", "out/"));
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = Command::new(binary()).args(args).current_dir(s.dir.path()).stderr(Stdio::null()).spawn().unwrap();
    let mut child = kill_and_resume(s.dir.path(), child, 5, "rd", &[]);
    assert!(producer.wait().unwrap().success());
    let ended = crate::util::wait_for(120, || child.try_wait().unwrap().is_some());
    assert!(ended, "the resumed stream did not stop when idle");
    assert!(child.wait().unwrap().success());
    check(&s, "out", "rd");
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["records_in"], 40 * 300);
}

/// Kills `child` with SIGKILL `times` times, at pseudo-random moments,
/// each time resuming run directory `run_dir` (in `dir`, with `env`): the
/// last resume, running.
pub(crate) fn kill_and_resume(
    dir: &std::path::Path,
    mut child: std::process::Child,
    times: u32,
    run_dir: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..times {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 500));
        child.kill().unwrap();
        child.wait().unwrap();
        child = Command::new(binary())
            .args(["run", "--resume", run_dir, "--progress", "never"])
            .envs(env.iter().copied())
            .current_dir(dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    }
    child
}

#[test]
fn sigterm_drains_and_the_resume_finishes() {
    let s = Scratch::new();
    let mut producer = produce(&s, 30, 300, 10.0);
    s.write("clicks.toml", clicks("", "out/"));
    let mut child = s.spawn(&["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"]);
    std::thread::sleep(Duration::from_millis(1200));
    crate::faults::signal(child.id(), "TERM");
    let ended = crate::util::wait_for(30, || child.try_wait().unwrap().is_some());
    assert!(ended, "SIGTERM did not stop the stream");
    let r = crate::util::finish_within(child, 5, &["run"]);
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(r.stderr.contains("to finish the run: fanout run --resume rd"), "{}", r.stderr);
    assert!(r.stderr.contains("SIGTERM: draining the stream (batches in flight finish"), "{}", r.stderr);
    assert!(s.path("rd/checkpoint/CURRENT").is_file());
    assert!(!s.path("rd/summary.json").exists());
    assert!(producer.wait().unwrap().success());
    s.run_within(120, &["run", "--resume", "rd", "--progress", "never"]).expect(0);
    check(&s, "out", "rd");
}

#[test]
fn standard_input_streams_through_a_map_stage_into_parts() {
    let s = Scratch::new();
    s.write(
        "lines.toml",
        r#"[input]
stream = { stdin = true }
format = "text"
[stream]
batch_size = 100
checkpoint_every = "100ms"
[[stage]]
name = "keep"
function = "grep"
params = { column = "line", pattern = "7" }
[output]
path = "parts"
format = "jsonl"
"#,
    );
    let input: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    let args = ["run", "lines.toml", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = fed(&s, &args, &input, 7000);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sum = summary(&r);
    assert_eq!(sum["stream"]["stopped_by"], "input ended");
    assert_eq!(sum["stream"]["records_in"], 5000);
    // Every kept line, once, in order across the parts.
    let mut parts: Vec<_> = std::fs::read_dir(s.path("parts")).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    assert!(parts.len() > 1, "one part per checkpoint: {parts:?}");
    let got: Vec<String> = parts
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap()["line"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..5000).map(|i| format!("line {i}")).filter(|l| l.contains('7')).collect();
    assert_eq!(got, want);
    assert_eq!(sum["stream"]["rows_out"], want.len());
    // The spooled input went once checkpointed.
    assert_eq!(std::fs::read_dir(s.path("rd/stdin")).unwrap().count(), 0);
}

/// Runs `fanout ARGS` with `input` on its standard input, `chunk` bytes
/// every 30 ms, then closed.
pub(crate) fn fed(s: &Scratch, args: &[&str], input: &str, chunk: usize) -> crate::util::Run {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for part in input.as_bytes().chunks(chunk) {
            stdin.write_all(part).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    crate::util::finish_within(child, 60, args)
}

#[test]
fn stream_jobs_are_checked_before_they_run() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    let cases = [
        ("stream = { sqs = \"queue\" }", "", "input.stream.sqs `queue` is not a queue URL"),
        ("stream = { redis = \"redis://127.0.0.1:1\" }", "", "a redis source names its stream: set key"),
        ("stream = { redis = \"127.0.0.1:1\", key = \"k\" }", "", "is not a Redis URL (redis://HOST:PORT)"),
        (
            "stream = { kinesis = \"k\", region = \"eu-west-1\", start = \"oldest\" }",
            "",
            "input.stream.start is trim_horizon or latest, not `oldest`",
        ),
        ("stream = { dir = \"incoming\", group = \"g\" }", "", "input.stream.group applies to a redis source only"),
        (
            "stream = { sqs = \"http://127.0.0.1:1/q\", region = \"us-east-1\", visibility_timeout = \"0s\" }",
            "",
            "visibility_timeout is between 1s and 12h",
        ),
        ("stream = { dir = \"nowhere\" }", "", "input.stream.dir `nowhere` is not a directory"),
        ("stream = { dir = \"incoming\", stdin = true }", "", "input.stream names more than one source: dir, stdin"),
        ("stream = { dir = \"incoming\" }\nformat = \"jsonl\"", "", "list its columns in input.schema"),
        ("stream = { dir = \"incoming\" }", "", "set input.format to text, jsonl or csv"),
        (
            "stream = { dir = \"incoming\" }\nformat = \"text\"\non_bad_record = \"skip\"",
            "",
            "skip and reject are not supported yet",
        ),
    ];
    for (input, stream, want) in cases {
        let job = format!("[input]\n{input}\n{stream}\n[output]\npath = \"out\"\nformat = \"jsonl\"\n");
        s.write("j.toml", &job);
        let r = s.run(&["validate", "j.toml"]).expect(2);
        assert!(r.stderr.contains(want), "{input}: {}", r.stderr);
    }
    // A keyed stage needs a window, a window a keyed stage.
    let keyed =
        clicks("", "out/").replace("window = { tumbling = \"2s\", time = \"ts\" }\nallowed_lateness = \"1s\"\n", "");
    s.write("k.toml", &keyed);
    let r = s.run(&["validate", "k.toml"]).expect(2);
    assert!(r.stderr.contains("k.toml:13:7: a keyed stage on a stream aggregates per window"), "{}", r.stderr);
    // A window over a field the stage does not get fails before it runs.
    s.write("t.toml", clicks("", "out/").replace("time = \"ts\"", "time = \"when\""));
    let r = s.run(&["run", "t.toml", "--until", "records=1", "--progress", "never"]).expect(2);
    assert!(
        r.stderr.contains("t.toml:9:36: window.time `when` is not a column of what stage `count` reads (page, ts, n)"),
        "{}",
        r.stderr
    );
    assert!(!s.path(".fanout/runs").exists(), "a job that does not plan made a run directory");
    // A stream job that plans validates, and `plan` shows its shape.
    s.write("clicks.toml", clicks("", "out/"));
    s.run(&["validate", "clicks.toml"]).expect(0);
    let r = s.run(&["plan", "clicks.toml"]).expect(0);
    assert!(r.stdout.contains("input: a stream of files renamed into incoming"), "{}", r.stdout);
    assert!(r.stdout.contains("window: tumbling 2s over event time `ts`; allowed lateness 1s"), "{}", r.stdout);
    assert!(r.stdout.contains("1. count: aggregate (keyed by page per window) -> page, count, sum_n"), "{}", r.stdout);
    // [stream] and --until belong to streams.
    s.write("data.txt", "a\n");
    s.write("b.toml", "[input]\npath = \"data.txt\"\n[stream]\nbatch_size = 5\n[output]\npath = \"o.csv\"\n");
    let r = s.run(&["validate", "b.toml"]).expect(2);
    assert!(r.stderr.contains("b.toml:3:1: [stream] applies to a stream input"), "{}", r.stderr);
    s.write("b2.toml", "[input]\npath = \"data.txt\"\n[output]\npath = \"o.csv\"\n");
    let r = s.run(&["run", "b2.toml", "--until", "idle=1s"]).expect(2);
    assert!(r.stderr.contains("--until applies to a stream input"), "{}", r.stderr);
    let r = s.run(&["run", "clicks.toml", "--until", "soon"]).expect(2);
    assert!(r.stderr.contains("expected idle=5s, records=N or time=10m"), "{}", r.stderr);
}

/// A stage before the windowed count that passes the records through, as
/// each kind of function: none, an exec process, a Lambda handler.
fn pass_through(kind: &str, mark: &str) -> String {
    let schema = "schema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]";
    let env = format!("env = {{ FANOUT_TEST_MARK = \"{mark}\" }}");
    match kind {
        "builtin" => String::new(),
        "exec" => format!(
            "[[stage]]\nname = \"copy\"\n[stage.function]\nexec = [\"python3\", \"-c\", \"import sys; sys.stdout.write(sys.stdin.read())\"]\nio = \"jsonl\"\n{schema}\n{env}\n"
        ),
        "lambda" => format!(
            "[[stage]]\nname = \"copy\"\n[stage.function]\nlambda = [\"python3\", \"{}\"]\nhandler = \"handlers.echo\"\n{schema}\n{env}\n",
            root().join("tests/fixtures/lambda/bootstrap.py").display()
        ),
        other => unreachable!("{other}"),
    }
}

#[test]
fn every_preset_and_kind_of_function_counts_the_same_windows() {
    let s = Scratch::new();
    let mut producer = produce(&s, 8, 250, 50.0);
    assert!(producer.wait().unwrap().success());
    let runs = [
        ("local", "builtin"),
        ("aws-lambda", "builtin"),
        ("gcp-functions", "builtin"),
        ("azure-functions", "builtin"),
        ("local", "exec"),
        ("aws-lambda", "exec"),
        ("local", "lambda"),
        ("azure-functions", "lambda"),
    ];
    for (i, (preset, kind)) in runs.iter().enumerate() {
        let out = format!("out-{i}/");
        let job = clicks("", &out)
            .replace(
                "[[stage]]\nname = \"count\"",
                &format!("{}[[stage]]\nname = \"count\"", pass_through(kind, "kinds")),
            )
            .replace("concurrency = 2\n", &format!("concurrency = 2\npreset = \"{preset}\"\n"));
        s.write("clicks.toml", &job);
        let rd = format!("rd-{i}");
        let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", &rd];
        let r = s.run_within(120, &args).expect(0);
        let sum = summary(&r);
        assert_eq!(sum["stream"]["records_in"], 8 * 250, "{preset} {kind}");
        assert!(sum["cost"]["usd"].as_f64().unwrap() >= 0.0);
        assert_eq!(sum["cost"]["preset"], *preset);
        if *kind != "builtin" {
            let copy = sum["stages"].as_array().unwrap().iter().find(|st| st["name"] == "copy").unwrap();
            assert_eq!(copy["records_in"], 8 * 250, "{preset} {kind}: {copy}");
        }
        check(&s, &out, &rd);
        assert!(crate::util::marked("kinds").is_empty(), "{preset} {kind}: a function's process outlived the stream");
    }
}

#[test]
fn a_signal_leaves_no_function_process_behind() {
    for kind in ["exec", "lambda"] {
        let s = Scratch::new();
        let mut producer = produce(&s, 40, 200, 20.0);
        let mark = format!("stream-signal-{kind}");
        let job = clicks("", "out/").replace(
            "[[stage]]\nname = \"count\"",
            &format!("{}[[stage]]\nname = \"count\"", pass_through(kind, &mark)),
        );
        s.write("clicks.toml", &job);
        let child = s.spawn(&["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"]);
        let started = crate::util::wait_for(30, || !crate::util::marked(&mark).is_empty());
        assert!(started, "{kind}: no function process started");
        crate::faults::signal(child.id(), "TERM");
        let r = crate::util::finish_within(child, 30, &["run"]);
        assert_eq!(r.code, 143, "{kind}: {}", r.stderr);
        assert_eq!(crate::util::marked(&mark), [], "{kind}: a function's process outlived the stream");
        assert!(producer.wait().unwrap().success());
        s.run_within(120, &["run", "--resume", "rd", "--progress", "never"]).expect(0);
        check(&s, "out", "rd");
        assert_eq!(crate::util::marked(&mark), [], "{kind}: a function's process outlived the resume");
    }
}

#[test]
fn a_failing_function_stops_the_stream_naming_the_records() {
    let s = Scratch::new();
    let mut producer = produce(&s, 3, 100, 50.0);
    assert!(producer.wait().unwrap().success());
    let failing = "[[stage]]\nname = \"copy\"\n[stage.function]\nexec = [\"sh\", \"-c\", \"echo no such luck >&2; exit 3\"]\nio = \"jsonl\"\nschema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]\n";
    let job = clicks("", "out/")
        .replace("[[stage]]\nname = \"count\"", &format!("{failing}[[stage]]\nname = \"count\""))
        .replace("concurrency = 2\n", "concurrency = 2\nretries = 1\nbackoff = \"1ms\"\n");
    s.write("clicks.toml", &job);
    let r = s.run_within(60, &["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", "rd"]);
    let r = r.expect(1);
    assert!(r.stderr.contains("error: stage `copy`, batch of 000000.jsonl records 1..100"), "{}", r.stderr);
    assert!(r.stderr.contains("no such luck"), "{}", r.stderr);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["status"], "failed");
    // Nothing past the failure was committed.
    assert_eq!(std::fs::read_dir(s.path("out")).unwrap().count(), 0);
    // A record that does not parse stops the stream, located.
    std::fs::write(s.path("incoming/.bad"), "{\"page\": \"a\", \"ts\": \"2026-12-07T10:00:01Z\", \"n\": oops}\n")
        .unwrap();
    std::fs::rename(s.path("incoming/.bad"), s.path("incoming/bad.jsonl")).unwrap();
    s.write("plain.toml", clicks("", "plain/"));
    let r = s.run_within(60, &["run", "plain.toml", "--until", "idle=1s", "--progress", "never"]).expect(1);
    assert!(r.stderr.contains("error: incoming/bad.jsonl: line 1 (byte 0): "), "{}", r.stderr);
}

/// Writes `lines` into `incoming/NAME` whole: written under a dot name,
/// its modification time set `age_s` seconds back, then renamed in.
fn arrive(s: &Scratch, name: &str, lines: &[&str], age_s: u64) {
    let temp = s.path(&format!("incoming/.{name}"));
    std::fs::write(&temp, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let when = std::time::SystemTime::now() - Duration::from_secs(age_s);
    std::fs::File::options().write(true).open(&temp).unwrap().set_modified(when).unwrap();
    std::fs::rename(&temp, s.path(&format!("incoming/{name}"))).unwrap();
}

#[test]
fn a_replay_takes_the_files_in_the_order_the_run_took_them() {
    // A file with an older modification time renamed in after a newer
    // one (as `mv` of an old file, `cp -p` or `rsync -t` leave it): the
    // run takes it second, and so must the replay after a kill.
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    s.write("clicks.toml", clicks("checkpoint_every = \"1h\"", "out/"));
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let mut child = Command::new(binary()).args(args).current_dir(s.dir.path()).stderr(Stdio::null()).spawn().unwrap();
    arrive(&s, "x.jsonl", &[r#"{"page":"x","ts":"2026-12-07T10:00:05Z","n":1}"#], 0);
    assert!(crate::util::wait_for(30, || std::fs::read_to_string(s.path("rd/arrivals"))
        .is_ok_and(|a| a.contains("x.jsonl"))));
    arrive(&s, "y.jsonl", &[r#"{"page":"y","ts":"2026-12-07T10:00:25Z","n":2}"#], 3600);
    // y's event closes x's window, which is committed before the kill.
    let window = s.path("out/window-2026-12-07T10-00-04Z.jsonl");
    assert!(crate::util::wait_for(30, || window.exists()), "x's window was not committed");
    child.kill().unwrap();
    child.wait().unwrap();
    s.run_within(60, &["run", "--resume", "rd", "--progress", "never"]).expect(0);
    let arrivals = std::fs::read_to_string(s.path("rd/arrivals")).unwrap();
    let names: Vec<&str> = arrivals.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(names, ["x.jsonl", "y.jsonl"]);
    let windows: Vec<String> =
        std::fs::read_dir(s.path("out")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert_eq!(std::fs::read_to_string(&window).unwrap().lines().count(), 1);
    assert!(
        !s.path("rd/late").exists() || std::fs::read_dir(s.path("rd/late")).unwrap().count() == 0,
        "x was late on replay"
    );
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!((sum["stream"]["windows"].as_u64(), sum["stream"]["late_records"].as_u64()), (Some(2), Some(0)));
}

#[test]
fn the_output_directory_is_checked_before_anything_is_made() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    s.write("out/keep.txt", "mine");
    s.write("clicks.toml", clicks("", "out/"));
    let r = s.run(&["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", "rd"]).expect(2);
    assert!(r.stderr.contains("the output out/ exists"), "{}", r.stderr);
    assert!(!s.path("rd").exists(), "a refused run made its run directory");
    s.write("file-out", "x");
    s.write("f.toml", clicks("", "file-out"));
    let r = s.run(&["run", "f.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", "rd"]).expect(1);
    assert!(r.stderr.contains("file-out: a stream's output is a directory, and this is a file"), "{}", r.stderr);
    assert!(!s.path("rd").exists());
    // Overwriting removes an earlier stream's windows, and nothing else.
    s.write("out/window-2026-12-07T09-00-00Z.jsonl", "{}\n");
    s.write("out/part-000001.jsonl", "{}\n");
    arrive(&s, "a.jsonl", &[r#"{"page":"a","ts":"2026-12-07T10:00:05Z","n":1}"#], 0);
    let r = s.run_within(
        60,
        &["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--set", "output.mode=overwrite"],
    );
    r.expect(0);
    let mut names: Vec<String> =
        std::fs::read_dir(s.path("out")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["keep.txt", "window-2026-12-07T10-00-04Z.jsonl"]);
}

#[test]
fn a_drain_finishes_the_batches_started_and_leaves_the_queued_ones() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    for f in 0..6 {
        let lines: Vec<String> =
            (0..10).map(|i| format!(r#"{{"page":"p","ts":"2026-12-07T10:00:{:02}Z","n":{i}}}"#, f * 5)).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        arrive(&s, &format!("{f}.jsonl"), &lines, 0);
    }
    let slow = "[[stage]]\nname = \"slow\"\n[stage.function]\nexec = [\"sh\", \"-c\", \"sleep 1; cat\"]\nio = \"jsonl\"\nschema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]\n";
    let job = clicks("", "out/")
        .replace("batch_size = 300", "batch_size = 10")
        .replace("[[stage]]\nname = \"count\"", &format!("{slow}[[stage]]\nname = \"count\""))
        .replace("concurrency = 2", "concurrency = 1");
    s.write("slow.toml", &job);
    let child = s.spawn(&["run", "slow.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"]);
    std::thread::sleep(Duration::from_millis(1500));
    crate::faults::signal(child.id(), "TERM");
    let r = crate::util::finish_within(child, 30, &["run"]);
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(r.stderr.contains("(it goes on from its last checkpoint)"), "{}", r.stderr);
    let records = s.run(&["records", "rd"]).expect(0).stdout;
    let started = records.lines().filter(|l| l.contains("\"stage\":\"slow\"")).count();
    assert!((1..=2).contains(&started), "{started} batches started; the queued ones should wait:\n{records}");
    s.run_within(60, &["run", "--resume", "rd", "--progress", "never"]).expect(0);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["records_in"], 60);
    assert_eq!(sum["stream"]["late_records"], 0);
}

#[test]
fn a_closed_stderr_does_not_turn_success_into_a_panic() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    arrive(&s, "a.jsonl", &[r#"{"page":"a","ts":"2026-12-07T10:00:05Z","n":1}"#], 0);
    s.write("clicks.toml", clicks("", "out/"));
    let mut child = Command::new(binary())
        .args(["run", "clicks.toml", "--until", "idle=1s", "--progress", "never"])
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn until_and_platform_settings_a_stream_cannot_honour_are_refused() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    s.write("clicks.toml", clicks("", "out/"));
    for (until, want) in [
        ("idle=1s,idle=2s", "`idle` is given twice"),
        ("records=0", "`records=0`: must be at least 1"),
        ("time=0s", "`time=0s`: must be longer than 0s"),
        ("idle=2", "`idle=2`: give the unit, e.g. idle=2s"),
        ("idle=soon", "`idle=soon`: a duration is a number and a unit, e.g. idle=5s"),
    ] {
        let r = s.run(&["run", "clicks.toml", "--until", until]).expect(2);
        assert!(r.stderr.contains(want), "{until}: {}", r.stderr);
    }
    for setting in ["backups = true", "tolerated_failure_count = 3"] {
        s.write("p.toml", clicks("", "out/").replace("concurrency = 2\n", &format!("concurrency = 2\n{setting}\n")));
        let r = s.run(&["validate", "p.toml"]).expect(2);
        let key = setting.split(' ').next().unwrap();
        assert!(
            r.stderr.contains(&format!("platform.{key} does not apply to a stream: a batch that fails")),
            "{}",
            r.stderr
        );
    }
    // A stream that got nothing says so, rather than latencies of 0 ms.
    let r =
        s.run_within(60, &["run", "clicks.toml", "--until", "idle=500ms", "--progress", "never", "--run-dir", "empty"]);
    let r = r.expect(0);
    assert!(r.stderr.contains("arrival to commit: no record committed in this run"), "{}", r.stderr);
    // A bad event time is named by its file and record.
    arrive(
        &s,
        "a.jsonl",
        &[r#"{"page":"a","ts":"2026-12-07T10:00:05Z","n":1}"#, r#"{"page":"b","ts":"soon","n":2}"#],
        0,
    );
    let r = s.run_within(60, &["run", "clicks.toml", "--until", "idle=1s", "--progress", "never"]).expect(1);
    assert!(r.stderr.contains("`ts` = \"soon\" is not a time"), "{}", r.stderr);
    assert!(r.stderr.contains("(a.jsonl, record 2)"), "{}", r.stderr);
    // Read from standard input, the record is named by it, and the file
    // of the run directory that spooled it.
    let stdin = clicks("", "in-out/").replace("stream = { dir = \"incoming\" }", "stream = { stdin = true }");
    s.write("stdin.toml", stdin);
    let input = "{\"page\":\"a\",\"ts\":\"2026-12-07T10:00:05Z\",\"n\":1}\n{\"page\":\"b\",\"ts\":\"soon\",\"n\":2}\n";
    let r = crate::stream::fed(&s, &["run", "stdin.toml", "--progress", "never", "--run-dir", "sd"], input, 4096);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("(standard input (sd/stdin/000000000001.spool), record 2)"), "{}", r.stderr);
}

#[test]
fn the_http_ingest_takes_posts_and_pushes_back_when_behind() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // A slow stage, so that the producer gets ahead and is told to wait.
    let slow = "[[stage]]\nname = \"slow\"\n[stage.function]\nexec = [\"sh\", \"-c\", \"sleep 0.2; cat\"]\nio = \"jsonl\"\nschema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]\n";
    let job = clicks("", "out/")
        .replace("stream = { dir = \"incoming\" }", &format!("stream = {{ http = \"127.0.0.1:{port}\" }}"))
        .replace("[[stage]]\nname = \"count\"", &format!("{slow}[[stage]]\nname = \"count\""))
        .replace("concurrency = 2", "concurrency = 1");
    s.write("clicks.toml", &job);
    let child =
        s.spawn(&["run", "clicks.toml", "--until", "idle=3s", "--progress", "never", "--json", "--run-dir", "rd"]);
    let up = crate::util::wait_for(30, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "the ingest endpoint did not open");
    let url = format!("http://127.0.0.1:{port}");
    // What is not a stream's records is refused, each with its reason.
    crate::util::python(
        &s,
        &format!(
            "import json, urllib.request, urllib.error\n\
             def post(path, body, method='POST'):\n    \
                 try:\n        \
                     with urllib.request.urlopen(urllib.request.Request('{url}' + path, data=body, method=method)) as r:\n            \
                         return r.status, json.loads(r.read())\n    \
                 except urllib.error.HTTPError as e:\n        \
                     return e.code, json.loads(e.read())\n\
             assert post('/streams/other', b'{{}}') == (404, {{'error': 'no stream here: POST records to /streams/clicks'}})\n\
             assert post('/streams/clicks', None, 'GET')[0] == 405\n\
             code, answer = post('/streams/clicks', b'{{\"page\": \"a\"}}\\nnot json\\n')\n\
             assert code == 400 and answer['error'].startswith('line 2: not JSON'), answer\n\
             assert post('/streams/clicks', b'[1]\\n') == (400, {{'error': 'line 1: a record is a JSON object'}})\n\
             assert post('/streams/clicks', b'') == (200, {{'accepted': 0}})\n\
             print('ok')"
        ),
    );
    let posted = Command::new("python3")
        .arg(root().join("tests/fixtures/stream_post.py"))
        .args([&format!("{url}/streams/clicks"), "150", "60", "7", s.path("sent.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&posted.stdout).trim(), "ok", "{}", String::from_utf8_lossy(&posted.stderr));
    let r = crate::util::finish_within(child, 120, &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let busy: u64 = std::fs::read_to_string(s.path("sent.jsonl.busy")).unwrap().parse().unwrap();
    assert!(busy > 0, "the producer was never told to wait");
    let sum = summary(&r);
    assert_eq!(sum["stream"]["records_in"], 150 * 60);
    check_sent(&s, "sent.jsonl", "out", "rd");
    // The spooled bodies went once checkpointed.
    assert_eq!(std::fs::read_dir(s.path("rd/http")).unwrap().count(), 0);
}

/// Checks the windows against the records an HTTP producer sent, in
/// order.
fn check_sent(s: &Scratch, sent: &str, out: &str, run_dir: &str) {
    check_sent_late(s, sent, out, run_dir, 1000);
}

/// Checks the 2 s windows against the records a producer sent, in order,
/// with `lateness_ms` allowed.
pub(crate) fn check_sent_late(s: &Scratch, sent: &str, out: &str, run_dir: &str, lateness_ms: u64) {
    let oracle = root().join("tests/fixtures/stream_oracle.py");
    let r = Command::new("python3")
        .arg(oracle)
        .args([s.path(sent), s.path(out), s.path(run_dir)])
        .args(["2000".to_string(), lateness_ms.to_string()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "ok", "oracle: {}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn what_the_http_ingest_accepted_survives_kill_9() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let job = clicks("checkpoint_every = \"1h\"", "out/")
        .replace("stream = { dir = \"incoming\" }", &format!("stream = {{ http = \"127.0.0.1:{port}\" }}"));
    s.write("clicks.toml", &job);
    let url = format!("http://127.0.0.1:{port}/streams/clicks");
    let post = |bodies: &str, seed: &str, sent: &str| {
        let up = crate::util::wait_for(30, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "the ingest endpoint did not open");
        let r = Command::new("python3")
            .arg(root().join("tests/fixtures/stream_post.py"))
            .args([url.as_str(), bodies, "100", seed, s.path(sent).to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "ok", "{}", String::from_utf8_lossy(&r.stderr));
    };
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let mut child = Command::new(binary()).args(args).current_dir(s.dir.path()).stderr(Stdio::null()).spawn().unwrap();
    post("20", "3", "sent-1.jsonl");
    // Every body was answered 200: killed now, with no checkpoint taken
    // (every hour), the resume must still count every one of them.
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = s.spawn(&["run", "--resume", "rd", "--progress", "never", "--json"]);
    // The second producer's events come after the first's.
    post("10", "4", "sent-2.jsonl");
    let r = crate::util::finish_within(resumed, 60, &["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut sent = std::fs::read_to_string(s.path("sent-1.jsonl")).unwrap();
    sent.push_str(&std::fs::read_to_string(s.path("sent-2.jsonl")).unwrap());
    s.write("sent.jsonl", sent);
    check_sent(&s, "sent.jsonl", "out", "rd");
    assert_eq!(summary(&r)["stream"]["records_in"], 30 * 100);
}
