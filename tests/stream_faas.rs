//! The FaaS model on a stream: chaos (`--chaos`), the container model
//! (`emulate`, `cold_start`, `keep_alive`), and deadlines that abandon a
//! hung function — each checked through the invocation records, with the
//! windows still equal to the oracle's.

use crate::stream::{check_windows, clicks, produce_seeded};
use crate::util::{Scratch, summary};

/// A builtin map stage before the windowed count: chaos and the container
/// model act on map invocations.
const KEEP: &str = "[[stage]]\nname = \"keep\"\nfunction = \"filter\"\nparams = { where = \"n >= 0\" }\n";

/// The clicks job with `KEEP` (or `stage`) first and `platform` added.
fn job(stage: &str, platform: &str) -> String {
    clicks("", "out/")
        .replace("[[stage]]\nname = \"count\"", &format!("{stage}[[stage]]\nname = \"count\""))
        .replace("concurrency = 2\n", &format!("concurrency = 2\n{platform}\n"))
}

/// The invocation records of `rd` as JSON.
fn records(s: &Scratch, rd: &str) -> Vec<serde_json::Value> {
    s.records(rd).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn chaos_on_a_stream_is_retried_and_the_windows_are_the_oracles() {
    let s = Scratch::new();
    assert!(produce_seeded(&s, 8, 250, 100.0, 3).wait().unwrap().success());
    s.write("clicks.toml", job(KEEP, "retries = 6\nbackoff = \"1ms\"").replace("batch_size = 300", "batch_size = 50"));
    let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = s.run_within(120, &[&args[..], &["--chaos", "fail=0.2,panic=0.05,seed=4"]].concat()).expect(0);
    assert_eq!(summary(&r)["stream"]["records_in"], 2000);
    check_windows(&s, "out", "rd", &["2000", "1000"]);
    let records = records(&s, "rd");
    let error = |r: &serde_json::Value| r["error"].as_str().unwrap_or_default().to_string();
    let failed = records.iter().filter(|r| error(r) == "chaos: injected failure").count();
    let panicked = records.iter().filter(|r| error(r).contains("panicked: chaos: injected panic")).count();
    assert!(failed >= 3 && panicked >= 1, "{failed} failures, {panicked} panics injected");
    // A retry is another attempt of the same batch, in a new container.
    let retried = records.iter().filter(|r| r["attempt"].as_u64().unwrap() > 1).count();
    assert!(retried >= failed + panicked, "{retried} retries");
}

#[test]
fn emulated_cold_starts_and_keep_alive_shape_a_streams_containers() {
    let s = Scratch::new();
    // Files 400 ms apart, each a batch: with a 100 ms keep-alive nearly
    // every batch starts a container; with none, each worker starts one.
    for (keep_alive, fewest, most) in [("keep_alive = \"100ms\"", 5, 6), ("", 1, 2)] {
        let _ = std::fs::remove_dir_all(s.path("incoming"));
        let mut producer = produce_seeded(&s, 6, 50, 2.5, 3);
        let platform = format!("emulate = true\ncold_start = \"150ms\"\n{keep_alive}");
        s.write("clicks.toml", job(KEEP, &platform));
        let rd = format!("rd-{most}");
        let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", &rd];
        s.run_within(120, &args).expect(0);
        assert!(producer.wait().unwrap().success());
        let records = records(&s, &rd);
        let keep: Vec<&serde_json::Value> = records.iter().filter(|r| r["stage"] == "keep").collect();
        let colds: Vec<&&serde_json::Value> = keep.iter().filter(|r| r["cold"] == true).collect();
        let n = colds.len();
        assert!((fewest..=most).contains(&n), "{keep_alive}: {n} cold of {} invocations", keep.len());
        // An emulated cold start takes its modelled 150 ms.
        for r in colds {
            let took = r["finished_us"].as_u64().unwrap() - r["started_us"].as_u64().unwrap();
            assert!(took >= 150_000, "a cold start of {took} µs");
        }
        check_windows(&s, "out", &rd, &["2000", "1000"]);
        std::fs::remove_dir_all(s.path("out")).unwrap();
    }
}

#[test]
fn a_hung_function_is_abandoned_at_its_deadline_with_no_process_left() {
    let s = Scratch::new();
    assert!(produce_seeded(&s, 2, 100, 100.0, 3).wait().unwrap().success());
    let hang = "[[stage]]\nname = \"copy\"\n[stage.function]\nexec = [\"sh\", \"-c\", \"sleep 30\"]\nio = \"jsonl\"\n\
                schema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]\nenv = { FANOUT_TEST_MARK = \"hung-stream\" }\n";
    s.write("clicks.toml", job(hang, "timeout = \"500ms\"\nretries = 1\nbackoff = \"1ms\""));
    let started = std::time::Instant::now();
    let r = s.run_within(60, &["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", "rd"]);
    let r = r.expect(1);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the deadline did not cut the hang short");
    assert!(r.stderr.contains("`sh` passed its deadline and was killed with every process it started"), "{}", r.stderr);
    assert!(crate::util::marked("hung-stream").is_empty(), "a hung function's process outlived the stream");
    // A builtin that overruns is abandoned by its container's thread.
    let slow = "[[stage]]\nname = \"slow\"\nfunction = \"sleep\"\nparams = { ms = 30000 }\n";
    s.write("slow.toml", job(slow, "timeout = \"300ms\"\nretries = 0").replace("out/", "slow/"));
    let started = std::time::Instant::now();
    let r = s.run_within(60, &["run", "slow.toml", "--until", "idle=1s", "--progress", "never"]).expect(1);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the deadline did not cut the sleep short");
    assert!(
        r.stderr.contains("slow`, batch of 000000.jsonl records 1..100, 000001.jsonl records 1..100: deadline passed"),
        "{}",
        r.stderr
    );
}
