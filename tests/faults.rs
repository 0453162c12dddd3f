//! Faults found by using fanout as a new user would, each checked through
//! the real binary: kill and resume on every preset, resuming a finished or
//! failed run, interrupts, error messages, long cells in the preview, and a
//! straggler's twin that fails.

use std::process::Command;

use crate::util::{Scratch, finish_within, journaled, lines_in, python, root, summary, wait_for};

pub(crate) const PRESETS: [&str; 4] = ["local", "aws-lambda", "gcp-functions", "azure-functions"];

fn example(name: &str) -> String {
    root().join("jobs/examples").join(format!("{name}.toml")).display().to_string()
}

/// `fanout run JOB --set ...` followed by `extra`.
fn run_args<'a>(job: &'a str, sets: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", job, "--progress", "never"];
    for set in sets {
        args.extend(["--set", set.as_str()]);
    }
    args.extend_from_slice(extra);
    args
}

/// Starts a run, kills it with SIGKILL once its journal holds a task, and
/// checks it had not finished.
fn kill_once_journaled(s: &Scratch, args: &[&str], dir: &str) {
    let mut child = s.spawn(args);
    let journal = s.path(&format!("{dir}/journal.jsonl"));
    assert!(wait_for(60, || lines_in(&journal) > 0), "no task was journaled in 60 s");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!s.path(&format!("{dir}/summary.json")).exists(), "the run finished before the kill");
}

/// The records of the csv the generator made for `rows` rows, counted by
/// Python's csv module.
fn generated_csv_records(s: &Scratch, rows: u64) -> u64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import csv, glob; f = glob.glob('.fanout/cache/gen-csv-{rows}rows-seed1.csv')[0]; \
             print(sum(1 for _ in csv.reader(open(f, newline=''))) - 1)"
        ))
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("{out:?}"))
}

#[test]
fn a_killed_run_resumes_to_the_same_output_on_every_preset() {
    let s = Scratch::new();
    let job = example("csv-groupby");
    let rows = 100_000;
    let sets = |preset: &str| {
        vec![
            format!("input.generate.rows={rows}"),
            "input.chunk_size=2KiB".to_string(),
            "platform.concurrency=4".to_string(),
            format!("platform.preset={preset}"),
        ]
    };
    let local = sets("local");
    let clean = s.run_within(120, &run_args(&job, &local, &["--json"])).expect(0);
    let clean = summary(&clean);
    let expected = std::fs::read(s.path("out/csv-groupby.csv")).unwrap();
    let records = generated_csv_records(&s, rows);
    assert_eq!(clean["input"]["records"], records);
    for preset in PRESETS {
        std::fs::remove_dir_all(s.path("out")).unwrap();
        let dir = format!("killed-{preset}");
        let sets = sets(preset);
        kill_once_journaled(&s, &run_args(&job, &sets, &["--run-dir", &dir]), &dir);
        // Backups are on by default on the FaaS presets: a resume used to
        // wait for the journaled tasks to finish in the flight, for ever.
        let r = s.run_within(120, &["run", "--resume", &dir, "--progress", "never", "--json"]).expect(0);
        let sum = summary(&r);
        assert_eq!(sum["status"], "succeeded", "{preset}");
        assert!(sum["resumed_tasks"].as_u64().unwrap() > 0, "{preset}: nothing was resumed: {sum}");
        assert_eq!(std::fs::read(s.path("out/csv-groupby.csv")).unwrap(), expected, "{preset}");
        // The summary covers the whole run: the input read before the
        // kill counts too.
        assert_eq!(sum["input"], clean["input"], "{preset}");
        // A pipeline may resume it again: nothing to do, and not an error.
        let again = s.run_within(60, &["run", "--resume", &dir]).expect(0);
        assert!(
            again.stderr.contains("nothing to resume") && again.stderr.contains("out/csv-groupby.csv (9450 rows"),
            "{preset}: {}",
            again.stderr
        );
        let again = s.run_within(60, &["run", "--resume", &dir, "--json"]).expect(0);
        assert_eq!(summary(&again)["output"], sum["output"]);
    }
}

#[test]
fn a_run_killed_under_chaos_resumes_under_chaos_to_the_same_output() {
    let s = Scratch::new();
    let job = example("wordcount");
    let sets: Vec<String> = [
        "input.generate.size=1MiB",
        "input.chunk_size=8KiB",
        "platform.preset=aws-lambda",
        "platform.concurrency=3",
        "platform.retries=6",
        "platform.backoff=1ms",
        "platform.timeout=5s",
    ]
    .map(String::from)
    .to_vec();
    s.run_within(120, &run_args(&job, &sets, &["--show", "0"])).expect(0);
    let expected = std::fs::read(s.path("out/wordcount.csv")).unwrap();
    std::fs::remove_dir_all(s.path("out")).unwrap();
    let chaos = ["--chaos", "fail=0.1,panic=0.02,straggle=0.05x4,seed=11"];
    let mut first = vec!["--run-dir", "rd"];
    first.extend(chaos);
    kill_once_journaled(&s, &run_args(&job, &sets, &first), "rd");
    let mut resume = vec!["run", "--resume", "rd", "--progress", "never", "--json"];
    resume.extend(chaos);
    let sum = summary(&s.run_within(120, &resume).expect(0));
    assert!(sum["resumed_tasks"].as_u64().unwrap() > 0, "{sum}");
    assert!(sum["retries"].as_u64().unwrap() > 0, "chaos injected nothing: {sum}");
    assert_eq!(std::fs::read(s.path("out/wordcount.csv")).unwrap(), expected);
}

#[test]
fn a_failed_run_resumes_and_runs_its_failed_tasks_again() {
    let s = Scratch::new();
    s.write("in.txt", (0..12).map(|i| format!("line {i}\n")).collect::<String>());
    // Task 7 fails while the file `broken` exists.
    let job = r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "tool"
function = { exec = ["sh", "-c", 'if [ "$FANOUT_TASK" = 7 ] && [ -e broken ]; then echo broken >&2; exit 1; fi; cat'] }
[output]
path = "out.csv"
[platform]
concurrency = 2
retries = 0
"#;
    s.write("job.toml", job);
    s.write("broken", "");
    let r = s.run_within(60, &["run", "job.toml", "--progress", "never", "--run-dir", "rd"]).expect(1);
    assert!(r.stderr.contains("task 7") && r.stderr.contains("broken"), "{}", r.stderr);
    assert!(!s.path("out.csv").exists());
    std::fs::remove_file(s.path("broken")).unwrap();
    let sum = summary(&s.run_within(60, &["run", "--resume", "rd", "--progress", "never", "--json"]).expect(0));
    assert_eq!(sum["status"], "succeeded");
    assert_eq!(sum["failed_tasks"].as_array().unwrap().len(), 0, "{sum}");
    assert!(sum["resumed_tasks"].as_u64().unwrap() > 0, "{sum}");
    assert!(!s.path("rd/failures.jsonl").exists(), "no task failed in the end");
    let want: String = std::iter::once("line\n".to_string()).chain((0..12).map(|i| format!("line {i}\n"))).collect();
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
}

/// The process ids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            found.push(format!("{name}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn ctrl_c_stops_the_run_says_how_to_resume_and_leaves_no_process() {
    let s = Scratch::new();
    s.write("in.txt", (0..20).map(|i| format!("line {i}\n")).collect::<String>());
    // While `slow` exists, tasks from 4 on sleep (a duration no other test
    // uses, to find the processes by).
    let job = r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "tool"
function = { exec = ["sh", "-c", 'if [ -e slow ] && [ "$FANOUT_TASK" -ge 4 ]; then sleep 31.4159; fi; cat'] }
[output]
path = "out.csv"
[platform]
concurrency = 2
"#;
    s.write("job.toml", job);
    s.write("slow", "");
    let args = ["run", "job.toml", "--progress", "never", "--run-dir", "rd"];
    let child = s.spawn(&args);
    let pid = child.id();
    assert!(wait_for(60, || processes_with("31.4159").len() >= 2), "the slow tasks did not start");
    assert!(wait_for(60, || journaled(&s.path("rd")).len() >= 4), "the first tasks were not journaled");
    signal(pid, "INT");
    let r = finish_within(child, 30, &args);
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(r.stderr.contains("error: interrupted by SIGINT"), "{}", r.stderr);
    assert!(r.stderr.contains("fanout run --resume rd"), "{}", r.stderr);
    assert_eq!(processes_with("31.4159"), Vec::<String>::new(), "worker processes left behind");
    assert!(!s.path("out.csv").exists(), "an interrupted run commits nothing");
    // The tasks cancelled by the signal did not fail: none is listed.
    assert!(!s.path("rd/failures.jsonl").exists(), "cancelled tasks listed as failed");
    std::fs::remove_file(s.path("slow")).unwrap();
    let sum = summary(&s.run_within(60, &["run", "--resume", "rd", "--progress", "never", "--json"]).expect(0));
    assert!(sum["resumed_tasks"].as_u64().unwrap() >= 4, "{sum}");
    let want: String = std::iter::once("line\n".to_string()).chain((0..20).map(|i| format!("line {i}\n"))).collect();
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
}

#[test]
fn sigterm_stops_builtins_and_lambda_processes() {
    let s = Scratch::new();
    s.write("in.txt", (0..40).map(|i| format!("line {i}\n")).collect::<String>());
    // A copy of the bootstrap under a name of this test's own, to find its
    // processes by.
    let bootstrap = s.path("bootstrap-sigterm-test.py");
    std::fs::copy(root().join("tests/fixtures/lambda/bootstrap.py"), &bootstrap).unwrap();
    std::fs::copy(root().join("tests/fixtures/lambda/handlers.py"), s.path("handlers.py")).unwrap();
    let job = format!(
        r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "wait"
function = "sleep"
params = {{ ms = 200 }}
[[stage]]
name = "echo"
function = {{ lambda = ["python3", "{}"], handler = "handlers.slow", schema = ["line:utf8"] }}
params = {{ seconds = 0.05 }}
[output]
path = "out.csv"
[platform]
concurrency = 2
"#,
        bootstrap.display()
    );
    s.write("job.toml", &job);
    let args = ["run", "job.toml", "--progress", "never", "--run-dir", "rd"];
    let child = s.spawn(&args);
    let pid = child.id();
    assert!(wait_for(60, || journaled(&s.path("rd")).len() >= 2), "no task was journaled");
    assert!(!processes_with("bootstrap-sigterm-test").is_empty(), "no lambda process");
    signal(pid, "TERM");
    let r = finish_within(child, 30, &args);
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(r.stderr.contains("error: interrupted by SIGTERM"), "{}", r.stderr);
    assert_eq!(processes_with("bootstrap-sigterm-test"), Vec::<String>::new(), "lambda processes left behind");
    assert!(!s.path("rd/failures.jsonl").exists(), "cancelled tasks listed as failed");
    // A builtin the signal stopped says it was cancelled, not that a
    // deadline (there is none) passed.
    let records = s.records("rd");
    assert!(!records.contains("deadline passed"), "{records}");
    let r = s.run_within(120, &["run", "--resume", "rd", "--progress", "never", "--json"]).expect(0);
    assert!(summary(&r)["resumed_tasks"].as_u64().unwrap() >= 2);
    let want: String = std::iter::once("line\n".to_string()).chain((0..40).map(|i| format!("line {i}\n"))).collect();
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
}

/// The `error: ` lines of a failed command.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

/// Asserts one error line, with no clause (text between `: `) repeated.
#[track_caller]
fn one_clean_line(stderr: &str, wanted: &str) {
    let lines = error_lines(stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    assert!(line.contains(wanted), "`{wanted}` not in: {line}");
    let clauses: Vec<&str> = line.trim_start_matches("error: ").split(": ").collect();
    for (i, c) in clauses.iter().enumerate() {
        assert!(!clauses[i + 1..].contains(c), "`{c}` repeated in: {line}");
    }
}

#[test]
fn error_messages_say_each_thing_once() {
    let s = Scratch::new();
    s.write("in.txt", "a\nb\n");
    let ok = "[input]\npath = \"in.txt\"\n[[stage]]\nfunction = \"word_count\"\n[output]\npath = \"out.csv\"\nmode = \"overwrite\"\n";
    s.write("ok.toml", ok);
    // Bad job files.
    s.write("syntax.toml", "[input\n");
    one_clean_line(&s.run(&["run", "syntax.toml"]).expect(2).stderr, "syntax.toml:1:");
    s.write("unknown.toml", ok.replace("[output]", "[output]\ncolour = 1"));
    one_clean_line(&s.run(&["run", "unknown.toml"]).expect(2).stderr, "unknown field `colour`");
    one_clean_line(&s.run(&["run", "missing.toml"]).expect(2).stderr, "missing.toml");
    // Bad data.
    s.write("bad.txt", b"ok\n\xff\xfe\n");
    one_clean_line(
        &s.run(&["run", "ok.toml", "--set", "input.path=bad.txt", "--progress", "never"]).expect(1).stderr,
        "bad.txt: line 2",
    );
    s.write("bad.csv", "a,b\n1,2\n3\n");
    s.write(
        "csv.toml",
        "[input]\npath = \"bad.csv\"\n[[stage]]\nfunction = \"select\"\nparams = { columns = [\"a\"] }\n\
         [output]\npath = \"out.csv\"\nmode = \"overwrite\"\n",
    );
    one_clean_line(&s.run(&["run", "csv.toml", "--progress", "never"]).expect(1).stderr, "bad.csv");
    // The output is a directory.
    std::fs::create_dir(s.path("adir")).unwrap();
    one_clean_line(
        &s.run(&["run", "ok.toml", "--set", "output.path=adir", "--set", "output.format=csv", "--progress", "never"])
            .expect(1)
            .stderr,
        "adir",
    );
    // A full disk, where the run keeps its invocation records and journal.
    std::fs::create_dir(s.path("full")).unwrap();
    for f in ["invocations.arrows", "tasks.data", "journal.jsonl"] {
        std::os::unix::fs::symlink("/dev/full", s.path(&format!("full/{f}"))).unwrap();
    }
    one_clean_line(
        &s.run(&["run", "ok.toml", "--run-dir", "full", "--progress", "never"]).expect(1).stderr,
        "No space left on device",
    );
    // Resuming what is not a run.
    one_clean_line(&s.run(&["run", "--resume", "in.txt"]).expect(2).stderr, "in.txt");
}

#[test]
fn a_failing_functions_stderr_is_quoted_once_under_its_error() {
    let s = Scratch::new();
    s.write("in.txt", "a\n");
    // 30 lines of stderr, then a failure.
    let job = r#"
[input]
path = "in.txt"
[[stage]]
name = "tool"
function = { exec = ["sh", "-c", 'for i in $(seq 1 30); do echo "complaint $i" >&2; done; printf "bad \033[31mred\rover\n" >&2; exit 3'] }
[output]
path = "out.csv"
[platform]
retries = 0
"#;
    s.write("job.toml", job);
    let r = s.run(&["run", "job.toml", "--progress", "never"]).expect(1);
    let errors = error_lines(&r.stderr);
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(errors[0].ends_with("`sh` exited with status 3; the end of its stderr:"), "{}", r.stderr);
    // The last 20 lines, each quoted once, right under the error.
    let after: Vec<&str> = r.stderr.lines().skip_while(|l| !l.starts_with("error: ")).skip(1).collect();
    // Control characters escaped: the terminal shows them, does not obey.
    let mut quoted: Vec<String> = (12..=30).map(|i| format!("  | complaint {i}")).collect();
    quoted.push("  | bad \\x1b[31mred\\rover".to_string());
    assert_eq!(after[..20], quoted[..], "{}", r.stderr);
    assert!(!r.stderr.contains("complaint 11\n"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("complaint 30").count(), 1, "{}", r.stderr);
}

#[test]
fn long_cells_are_cut_in_the_preview() {
    let s = Scratch::new();
    // A line of 16 MiB, and short ones; no stage: the lines are written
    // as they are.
    let mut text = "x".repeat(16 << 20);
    text.push_str("\nshort\ntab\there\n");
    s.write("in.txt", &text);
    let job = "[input]\npath = \"in.txt\"\n[output]\npath = \"out.csv\"\n";
    s.write("job.toml", job);
    let r = s.run_within(60, &["run", "job.toml", "--progress", "never"]).expect(0);
    assert!(r.stdout.len() < 2000, "a {} byte preview", r.stdout.len());
    let long = format!("| {}… |", "x".repeat(40));
    assert!(r.stdout.lines().any(|l| l.starts_with(&long)), "{}", r.stdout);
    assert!(r.stdout.contains("tab\\there"), "a tab shown escaped: {}", r.stdout);
    // The output itself keeps the whole word.
    python(
        &s,
        "import csv; csv.field_size_limit(1 << 30); rows = list(csv.reader(open('out.csv')))\n\
         print('ok' if max(len(r[0]) for r in rows) == 16 << 20 else rows[1:])",
    );
}

#[test]
fn a_backup_that_fails_leaves_the_task_to_its_first_run() {
    // Task 5's first run waits until its backup has failed (and a moment
    // more, for the engine to see it), then succeeds.
    let first_wins = r#"if [ "$FANOUT_TASK" = 5 ]; then
  if [ -e started ]; then touch backup-failed; exit 3; fi
  touch started; while [ ! -e backup-failed ]; do sleep 0.01; done; sleep 1
fi; cat"#;
    // Task 5's first run fails once its backup runs; the backup succeeds
    // once the first run has failed.
    let backup_wins = r#"if [ "$FANOUT_TASK" = 5 ]; then
  if [ -e started ]; then touch backup-started; while [ ! -e first-failed ]; do sleep 0.01; done; sleep 0.5
  else touch started; while [ ! -e backup-started ]; do sleep 0.01; done; touch first-failed; exit 3; fi
fi; cat"#;
    for script in [first_wins, backup_wins] {
        let s = Scratch::new();
        s.write("in.txt", (0..20).map(|i| format!("line {i}\n")).collect::<String>());
        s.write("task.sh", script);
        let job = r#"
[input]
path = "in.txt"
chunk_size = 1
[[stage]]
name = "tool"
function = { exec = ["sh", "task.sh"] }
[output]
path = "out.csv"
[platform]
concurrency = 3
retries = 0
backups = true
"#;
        s.write("job.toml", job);
        let r = s.run_within(60, &["run", "job.toml", "--progress", "never", "--json", "--run-dir", "rd"]).expect(0);
        let sum = summary(&r);
        // Task 5 got its backup (on a loaded machine, another task may
        // straggle and get one too).
        assert!(sum["backup_tasks"].as_u64().unwrap() >= 1, "{sum}");
        let records = s.records("rd");
        let backed_up = records.lines().any(|l| l.contains("\"task\":5,") && l.contains("\"backup\":true"));
        assert!(backed_up, "task 5 got no backup: {records}");
        assert_eq!(sum["failed_tasks"].as_array().unwrap().len(), 0, "{sum}");
        // Task 5 was read by both its runs, and counts once.
        let size = std::fs::metadata(s.path("in.txt")).unwrap().len();
        assert_eq!((sum["input"]["records"].as_u64(), sum["input"]["bytes"].as_u64()), (Some(20), Some(size)), "{sum}");
        let want: String =
            std::iter::once("line\n".to_string()).chain((0..20).map(|i| format!("line {i}\n"))).collect();
        assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
    }
}

#[test]
fn chaos_on_exec_and_lambda_functions_changes_nothing_and_leaves_no_process() {
    let s = Scratch::new();
    s.run(&["datasets", "gen", "text", "--size", "24KiB", "--out", "in.txt"]).expect(0);
    // Names of this test's own, to find its processes by.
    let bootstrap = s.path("bootstrap-chaos-test.py");
    std::fs::copy(root().join("tests/fixtures/lambda/bootstrap.py"), &bootstrap).unwrap();
    std::fs::copy(root().join("tests/fixtures/lambda/handlers.py"), s.path("handlers.py")).unwrap();
    let functions = [
        r#"{ exec = ["sh", "-c", "cat", "chaos-exec-test"] }"#.to_string(),
        format!(r#"{{ lambda = ["python3", "{}"], handler = "handlers.echo" }}"#, bootstrap.display()),
    ];
    for function in &functions {
        let job = format!(
            r#"
[input]
path = "in.txt"
chunk_size = "1KiB"
[[stage]]
name = "tool"
function = {function}
[[stage]]
function = "word_count"
[[stage]]
name = "total"
function = "aggregate"
key = ["word"]
params = {{ sum = ["count"] }}
[output]
path = "out.csv"
sort = ["-sum_count", "word"]
mode = "overwrite"
[platform]
concurrency = 3
retries = 8
backoff = "1ms"
timeout = "5s"
"#
        );
        s.write("job.toml", &job);
        s.run_within(120, &["run", "job.toml", "--progress", "never", "--show", "0"]).expect(0);
        let clean = std::fs::read(s.path("out.csv")).unwrap();
        let chaos = "fail=0.15,panic=0.05,timeout=0.02,straggle=0.05x3,seed=9";
        let args = ["run", "job.toml", "--progress", "never", "--json", "--chaos", chaos];
        let sum = summary(&s.run_within(300, &args).expect(0));
        assert!(sum["retries"].as_u64().unwrap() > 0, "{sum}");
        assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), clean, "{function}");
        for marker in ["chaos-exec-test", "bootstrap-chaos-test"] {
            assert_eq!(processes_with(marker), Vec::<String>::new(), "{function}: processes left behind");
        }
    }
}
