//! Sliding and session windows on a stream, through the real binary,
//! checked against the oracle of tests/fixtures/stream_oracle.py computed
//! from what the producer wrote — sessions also across `kill -9` and
//! resume.

use std::process::{Command, Stdio};

use crate::stream::{check_windows, clicks, kill_and_resume, produce_seeded};
use crate::util::{Scratch, binary, summary};

/// The clicks job with `window` in place of its tumbling one.
fn job(window: &str, extra: &str) -> String {
    clicks(extra, "out/").replace("window = { tumbling = \"2s\", time = \"ts\" }", &format!("window = {window}"))
}

#[test]
fn a_sliding_window_counts_each_record_in_every_window_that_holds_it() {
    let s = Scratch::new();
    let mut producer = produce_seeded(&s, 12, 400, 20.0, 9);
    s.write("clicks.toml", job("{ sliding = \"4s\", every = \"1s\", time = \"ts\" }", ""));
    let r = s.run_within(
        120,
        &["run", "clicks.toml", "--until", "idle=2s", "--progress", "always", "--json", "--run-dir", "rd"],
    );
    let r = r.expect(0);
    assert!(producer.wait().unwrap().success());
    // A progress line a second: counts, rates, windows, the files waiting.
    let line = r.stderr.lines().rfind(|l| l.starts_with("stream: ")).expect("a progress line");
    assert!(line.starts_with("stream: 4800 records in, "), "{line}");
    assert!(line.contains("/s in, ") && line.contains("/s out), ") && line.ends_with(" 0 files waiting"), "{line}");
    assert_eq!(summary(&r)["stream"]["records_in"], 12 * 400);
    check_windows(&s, "out", "rd", &["4000", "1000", "1000"]);
    let plan = s.run(&["plan", "clicks.toml"]).expect(0);
    assert!(plan.stdout.contains("window: sliding 4s, one every 1s over event time `ts`"), "{}", plan.stdout);
}

#[test]
fn session_windows_per_key_survive_kill_9_and_resume() {
    let s = Scratch::new();
    // Sparse events: a page's records come about a second apart, so a
    // 700 ms gap makes sessions of a few records, merged as records come
    // out of order.
    let mut producer = produce_seeded(&s, 40, 4, 10.0, 9);
    s.write("clicks.toml", job("{ session = \"700ms\", time = \"ts\" }", "checkpoint_every = \"100ms\""));
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = Command::new(binary()).args(args).current_dir(s.dir.path()).stderr(Stdio::null()).spawn().unwrap();
    let mut child = kill_and_resume(s.dir.path(), child, 4, "rd", &[]);
    assert!(producer.wait().unwrap().success());
    assert!(crate::util::wait_for(120, || child.try_wait().unwrap().is_some()), "the stream did not stop");
    assert!(child.wait().unwrap().success());
    check_windows(&s, "out", "rd", &["700", "1000", "session"]);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["records_in"], 160);
    assert!(sum["stream"]["windows"].as_u64().unwrap() > 10, "{sum}");
    let plan = s.run(&["plan", "clicks.toml"]).expect(0);
    assert!(plan.stdout.contains("window: session, per key, closed after a gap of 700ms"), "{}", plan.stdout);
}

#[test]
fn an_arrival_time_window_closes_when_the_source_goes_quiet() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    // Windows of arrival time, none late allowed: a window closes once the
    // clock passes its end with every record taken applied, whether or
    // not another record comes.
    s.write("clicks.toml", job("{ tumbling = \"1s\" }", "").replace("allowed_lateness = \"1s\"", ""));
    let args = ["run", "clicks.toml", "--until", "idle=6s", "--progress", "never", "--run-dir", "rd"];
    let mut child = Command::new(binary()).args(args).current_dir(s.dir.path()).stderr(Stdio::null()).spawn().unwrap();
    let arrive = |name: &str, pages: &[&str]| {
        let lines: String = pages.iter().map(|p| format!("{{\"page\": \"{p}\", \"ts\": \"x\", \"n\": 1}}\n")).collect();
        s.write(&format!("incoming/.{name}"), lines);
        std::fs::rename(s.path(&format!("incoming/.{name}")), s.path(&format!("incoming/{name}"))).unwrap();
    };
    let windows = || -> Vec<serde_json::Value> {
        let mut files: Vec<_> = std::fs::read_dir(s.path("out")).map_or(Vec::new(), |d| d.flatten().collect());
        files.sort_by_key(|e| e.file_name());
        (files.iter())
            .filter(|e| e.file_name().to_string_lossy().starts_with("window-"))
            .flat_map(|e| std::fs::read_to_string(e.path()).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    };
    arrive("a.jsonl", &["x", "x", "y"]);
    // Committed within a few seconds, the stream still running and no
    // other record come.
    assert!(crate::util::wait_for(4, || !windows().is_empty()), "the quiet stream's window never closed");
    assert!(child.try_wait().unwrap().is_none(), "the stream stopped");
    let rows = windows();
    let counts: std::collections::BTreeMap<String, i64> =
        rows.iter().map(|r| (r["page"].as_str().unwrap().to_string(), r["count"].as_i64().unwrap())).collect();
    assert_eq!(counts, [("x".to_string(), 2), ("y".to_string(), 1)].into_iter().collect());
    // A later record opens a new window, not a late one.
    arrive("b.jsonl", &["x"]);
    assert!(child.wait().unwrap().success());
    let rows = windows();
    assert_eq!(rows.iter().map(|r| r["count"].as_i64().unwrap()).sum::<i64>(), 4, "{rows:?}");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["late_records"], 0, "{sum}");
}

#[test]
fn window_kinds_are_checked() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    let cases = [
        ("{ time = \"ts\" }", "a window is one of { tumbling = \"10s\" }, { sliding = \"5m\", every = \"1m\" }"),
        ("{ tumbling = \"2s\", session = \"1s\" }", "a window is one of"),
        ("{ sliding = \"4s\", time = \"ts\" }", "a sliding window says how often one starts: every = \"1m\""),
        ("{ sliding = \"4s\", every = \"5s\" }", "every must be longer than 0s and no longer than the window"),
        ("{ tumbling = \"4s\", every = \"1s\" }", "every applies to a sliding window"),
        ("{ session = \"0s\" }", "a window must be longer than 0s"),
    ];
    for (window, want) in cases {
        s.write("j.toml", job(window, ""));
        let r = s.run(&["validate", "j.toml"]).expect(2);
        assert!(r.stderr.contains(want), "{window}: {}", r.stderr);
        assert!(!r.stderr.contains("aggregates per window: set stream.window"), "{window}: {}", r.stderr);
    }
}
