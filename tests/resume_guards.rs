//! What keeps a run directory and its output whole around a resume: a
//! run directory in use refuses a second run; a resume whose input changed
//! refuses to mix old and new data; a signal before the commit point
//! writes nothing, and one during the commit lets it finish.

use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::faults::signal;
use crate::util::{Scratch, finish_within, journaled, lines_in, summary, wait_for};

/// Three files of words; a word count whose tasks from the 25th on
/// sleep while the file `slow` exists.
fn word_job(s: &Scratch) {
    for (name, word) in [("a.txt", "apple"), ("b.txt", "berry"), ("c.txt", "cocoa")] {
        let text: String = (0..40).map(|i| format!("{word} {word} line{i:02}\n")).collect();
        s.write(&format!("data/{name}"), text);
    }
    let job = r#"
[input]
path = "data/*.txt"
chunk_size = 64
[[stage]]
name = "slow"
function = { exec = ["sh", "-c", 'if [ -e slow ] && [ "$FANOUT_TASK" -ge 24 ]; then sleep 27.1828; fi; cat'] }
[[stage]]
name = "count"
function = "word_count"
[[stage]]
name = "total"
function = "aggregate"
key = ["word"]
params = { sum = ["count"] }
[output]
path = "out/counts.csv"
sort = ["word"]
[platform]
concurrency = 2
"#;
    s.write("job.toml", job);
}

/// The word counts of the files in `data/`, counted here.
fn expected_counts(s: &Scratch) -> String {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for name in ["a.txt", "b.txt", "c.txt"] {
        for word in std::fs::read_to_string(s.path(&format!("data/{name}"))).unwrap().split_whitespace() {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    std::iter::once("word,sum_count\n".to_string()).chain(counts.iter().map(|(w, c)| format!("{w},{c}\n"))).collect()
}

/// Starts the word count in `rd` with its slow tasks held, waits until
/// twenty tasks are journaled, and interrupts it.
fn interrupted_run(s: &Scratch) {
    word_job(s);
    s.write("slow", "");
    let args = ["run", "job.toml", "--progress", "never", "--run-dir", "rd"];
    let child = s.spawn(&args);
    assert!(wait_for(60, || journaled(&s.path("rd")).len() >= 20), "the first tasks were not journaled");
    signal(child.id(), "INT");
    finish_within(child, 30, &args).expect(130);
}

/// The files in a run directory with their sizes, to tell that a refused
/// command touched nothing.
fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = walk(dir);
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let meta = e.metadata().unwrap();
        match meta.is_dir() {
            true => out.extend(walk(&e.path())),
            false => out.push((e.path().display().to_string(), meta.len())),
        }
    }
    out
}

#[test]
fn a_run_directory_in_use_refuses_a_second_run_and_touches_nothing() {
    let s = Scratch::new();
    interrupted_run(&s);
    // The first resume runs with its slow tasks held.
    let args = ["run", "--resume", "rd", "--progress", "never", "--json"];
    let first = s.spawn(&args);
    let pid = first.id();
    assert!(
        wait_for(60, || std::fs::read_to_string(s.path("rd/lock")).is_ok_and(|p| p.trim() == pid.to_string())),
        "the first resume did not lock the run directory"
    );
    // Its quick tasks journaled, it waits on slow ones: nothing of its own
    // changes the files for a while.
    let quick = || journaled(&s.path("rd")).iter().filter(|t| t.0 == 0 && t.1 < 24).count();
    assert!(wait_for(60, || quick() >= 24), "the quick tasks were not journaled");
    std::thread::sleep(Duration::from_millis(100));
    let before = listing(&s.path("rd"));
    let journal = lines_in(&s.path("rd/journal.jsonl"));
    for second in [
        vec!["run", "--resume", "rd", "--progress", "never"],
        vec!["run", "job.toml", "--run-dir", "rd", "--progress", "never"],
    ] {
        let r = s.run_within(60, &second).expect(1);
        assert_eq!(r.stderr.trim(), format!("error: the run in rd is in use by process {pid}"), "{second:?}");
    }
    // The run is said to be running, not interrupted.
    let runs = s.run_within(60, &["runs", ".", "--json"]).expect(0);
    let line: serde_json::Value = serde_json::from_str(runs.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["status"], "running", "{}", runs.stdout);
    s.run_within(60, &["report", "rd", "--out", "page.html"]).expect(0);
    let page = std::fs::read_to_string(s.path("page.html")).unwrap();
    assert!(page.contains(&format!("The run is still running (process {pid})")), "no running notice");
    // Nothing of the run's was touched (the first resume is held, so
    // nothing of its own changed the files in between either).
    assert_eq!(listing(&s.path("rd")), before);
    assert_eq!(lines_in(&s.path("rd/journal.jsonl")), journal);
    std::fs::remove_file(s.path("slow")).unwrap();
    let r = finish_within(first, 120, &args).expect(0);
    assert_eq!(summary(&r)["status"], "succeeded");
    assert_eq!(std::fs::read_to_string(s.path("out/counts.csv")).unwrap(), expected_counts(&s));
    // The records are whole: one per invocation the summary counts.
    let records = s.run_within(60, &["records", "rd"]).expect(0);
    let invocations: u64 =
        summary(&r)["stages"].as_array().unwrap().iter().map(|st| st["invocations"].as_u64().unwrap()).sum();
    assert_eq!(records.stdout.lines().count() as u64, invocations);
    // Once the run has ended, its directory is free again.
    let again = s.run_within(60, &["run", "--resume", "rd"]).expect(0);
    assert!(again.stderr.contains("nothing to resume"), "{}", again.stderr);
}

#[test]
fn a_resume_whose_input_changed_fails_before_running_anything() {
    let s = Scratch::new();
    interrupted_run(&s);
    let journal = lines_in(&s.path("rd/journal.jsonl"));
    let records = std::fs::metadata(s.path("rd/invocations.arrows")).unwrap().len();
    // A word replaced by one of the same length (same size; a later
    // modification time), and a line appended to another file.
    let a = s.path("data/a.txt");
    let text = std::fs::read_to_string(&a).unwrap().replacen("apple", "grape", 1);
    std::fs::write(&a, text).unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options().write(true).open(&a).unwrap().set_modified(later).unwrap();
    let b = s.path("data/b.txt");
    let size = std::fs::metadata(&b).unwrap().len();
    let mut text = std::fs::read_to_string(&b).unwrap();
    text.push_str("berry extra\n");
    std::fs::write(&b, text).unwrap();
    std::fs::remove_file(s.path("slow")).unwrap();
    let r = s.run_within(60, &["run", "--resume", "rd", "--progress", "never"]).expect(1);
    let err: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        err,
        [format!(
            "error: the input changed since the run began, so resuming it would mix old and new data: \
             data/a.txt (modified); data/b.txt (was {size} bytes, now {}); start a new run",
            size + 12
        )],
        "{}",
        r.stderr
    );
    assert_eq!(lines_in(&s.path("rd/journal.jsonl")), journal, "a task ran");
    let after = std::fs::metadata(s.path("rd/invocations.arrows")).unwrap().len();
    assert_eq!(after, records, "an invocation was recorded");
    assert!(!s.path("out/counts.csv").exists());
    // There is no option to go on with it; a new run reads the new input.
    s.run_within(120, &["run", "job.toml", "--progress", "never"]).expect(0);
    assert_eq!(std::fs::read_to_string(s.path("out/counts.csv")).unwrap(), expected_counts(&s));
}

#[test]
fn a_resume_of_unchanged_input_goes_on_and_a_removed_file_is_named() {
    let s = Scratch::new();
    interrupted_run(&s);
    // A new run does not take the interrupted run's directory.
    let journal = lines_in(&s.path("rd/journal.jsonl"));
    let r = s.run_within(60, &["run", "job.toml", "--run-dir", "rd", "--progress", "never"]).expect(1);
    assert_eq!(
        r.stderr.trim(),
        "error: rd: this run directory holds a run that did not finish: `fanout run --resume rd` finishes it"
    );
    assert_eq!(lines_in(&s.path("rd/journal.jsonl")), journal);
    std::fs::remove_file(s.path("slow")).unwrap();
    // A file gone, or a new one listed among those the run read: named
    // alone (the files after them are not blamed).
    let refused = |what: &str| {
        let r = s.run_within(60, &["run", "--resume", "rd", "--progress", "never"]).expect(1);
        let want = format!(
            "error: the input changed since the run began, so resuming it would mix old and new data: {what}; \
             start a new run"
        );
        let errors: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors, [want.as_str()], "{}", r.stderr);
    };
    std::fs::rename(s.path("data/b.txt"), s.path("b.txt")).unwrap();
    refused("data/b.txt (no longer listed)");
    std::fs::rename(s.path("b.txt"), s.path("data/b.txt")).unwrap();
    s.write("data/0.txt", "new\n");
    refused("data/0.txt (new, listed before files the run read)");
    std::fs::remove_file(s.path("data/0.txt")).unwrap();
    std::fs::rename(s.path("data/c.txt"), s.path("c.txt")).unwrap();
    let r = s.run_within(60, &["run", "--resume", "rd", "--progress", "never"]).expect(1);
    assert!(r.stderr.contains("data/c.txt (no longer listed)"), "{}", r.stderr);
    // Put back as it was (its modification time kept): the resume goes on,
    // from wherever it is started: the job's relative paths lead from
    // where the run began.
    std::fs::rename(s.path("c.txt"), s.path("data/c.txt")).unwrap();
    std::fs::create_dir(s.path("elsewhere")).unwrap();
    let args = ["run", "--resume", "../rd", "--progress", "never", "--json"];
    let r = crate::util::run_in(&s.path("elsewhere"), &args).expect(0);
    assert!(!s.path("elsewhere/out").exists());
    assert!(summary(&r)["resumed_tasks"].as_u64().unwrap() >= 20);
    assert_eq!(std::fs::read_to_string(s.path("out/counts.csv")).unwrap(), expected_counts(&s));
}

/// Runs the word count with the run held at `point` (the test hook
/// `FANOUT_TEST_HOLD`), sends SIGTERM there, releases it, and returns
/// the outcome.
fn signalled_at(s: &Scratch, point: &str) -> crate::util::Run {
    let hold = s.path("hold");
    let args = ["run", "job.toml", "--progress", "never", "--run-dir", "rd"];
    let child = Command::new(crate::util::binary())
        .args(args)
        .current_dir(s.dir.path())
        .env("FANOUT_TEST_HOLD", format!("{point}:{}", hold.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(60, || hold.exists()), "the run did not reach {point}");
    signal(child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_file(&hold).unwrap();
    finish_within(child, 60, &args)
}

#[test]
fn a_signal_before_the_commit_point_writes_nothing_and_one_during_the_commit_lets_it_finish() {
    let s = Scratch::new();
    word_job(&s);
    let r = signalled_at(&s, "gathered").expect(143);
    assert!(r.stderr.contains("error: interrupted by SIGTERM"), "{}", r.stderr);
    assert!(r.stderr.contains("to finish the run: fanout run --resume rd"), "{}", r.stderr);
    assert!(!s.path("out/counts.csv").exists(), "an interrupted run wrote its output");
    assert!(!s.path("rd/summary.json").exists());
    let r = s.run_within(60, &["run", "--resume", "rd", "--progress", "never", "--json"]).expect(0);
    assert!(summary(&r)["resumed_tasks"].as_u64().unwrap() > 0);
    assert_eq!(std::fs::read_to_string(s.path("out/counts.csv")).unwrap(), expected_counts(&s));

    std::fs::remove_dir_all(s.path("out")).unwrap();
    std::fs::remove_dir_all(s.path("rd")).unwrap();
    let r = signalled_at(&s, "committing").expect(0);
    // What the signal does is said as it happens: the commit goes on.
    assert!(
        r.stderr.contains("SIGTERM: the output is being committed: the run ends when it is complete"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("stopping the run"), "{}", r.stderr);
    assert!(r.stderr.contains("SIGTERM during the commit: the output is complete"), "{}", r.stderr);
    assert!(!r.stderr.contains("error:"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(s.path("out/counts.csv")).unwrap(), expected_counts(&s));
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["status"], "succeeded");
}

#[test]
fn a_finished_task_is_journaled_while_the_slot_runs_a_long_one() {
    let s = Scratch::new();
    for i in 0..20 {
        s.write(&format!("data/f{i:02}.txt"), format!("line {i}\n"));
    }
    // Tasks 0 to 9 are quick; from 10 on, each sleeps far past the test.
    let job = r#"
[input]
path = "data/*.txt"
[[stage]]
name = "slow"
function = { exec = ["sh", "-c", 'if [ "$FANOUT_TASK" -ge 10 ]; then sleep 33.3; fi; cat'] }
[output]
path = "out.csv"
[platform]
concurrency = 2
"#;
    s.write("job.toml", job);
    for preset in ["local", "aws-lambda"] {
        let dir = format!("rd-{preset}");
        let set = format!("platform.preset={preset}");
        let args = ["run", "job.toml", "--progress", "never", "--run-dir", &dir, "--set", &set];
        let mut child = s.spawn(&args);
        // Every quick task is journaled while the slots run slow ones,
        // not when those end.
        let all = wait_for(30, || journaled(&s.path(&dir)).len() >= 10);
        child.kill().unwrap();
        child.wait().unwrap();
        let mut tasks: Vec<u64> = journaled(&s.path(&dir)).iter().map(|t| t.1).collect();
        tasks.sort();
        assert!(all && tasks == (0..10).collect::<Vec<u64>>(), "{preset}: journaled {tasks:?}");
    }
}
