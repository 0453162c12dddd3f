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
