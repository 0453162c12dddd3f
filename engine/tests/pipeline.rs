//! Property: split → parallel map → shuffle → reduce → gather equals a
//! sequential computation, over random data and settings (chunk size,
//! concurrency, partitions, and a shuffle budget small enough to spill).

mod common;

use std::collections::BTreeMap;

use fanout_workers::Registry;
use proptest::prelude::*;

fn line() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "bb", "c", "dd", "é", "x y"], 0..8).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn word_counts_equal_a_sequential_count(
        lines in proptest::collection::vec(line(), 0..60),
        chunk in 1u64..200,
        concurrency in 1usize..5,
        partitions in 1usize..5,
        spill in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join("in.txt"), &text).unwrap();
        let out = dir.path().join("out.csv");
        let job = format!(
            r#"
[input]
path = "{}"
chunk_size = {chunk}
[[stage]]
function = "word_count"
[[stage]]
name = "total"
function = "aggregate"
key = ["word"]
partitions = {partitions}
params = {{ sum = ["count"], count = true }}
[output]
path = "{}"
sort = ["word"]
[platform]
concurrency = {concurrency}
"#,
            dir.path().join("in.txt").display(),
            out.display()
        );
        let budget = if spill { 1 } else { 1 << 30 };
        let report = common::run_in(dir.path(), &job, &Registry::builtins(), budget).unwrap();
        if spill && !text.trim().is_empty() {
            prop_assert!(report.summary.shuffle_spilled_bytes > 0);
        }
        // The sequential oracle.
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for w in text.split_ascii_whitespace() {
            *counts.entry(w).or_default() += 1;
        }
        let mut want = String::from("word,count,sum_count\n");
        for (w, c) in &counts {
            // `count` counts the map-side rows of each word: one per split
            // that holds it, so it is checked for range, not value.
            want += &format!("{w},N,{c}\n");
        }
        let got = std::fs::read_to_string(&out).unwrap();
        let got_masked: String = got
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 { return format!("{l}\n"); }
                let parts: Vec<&str> = l.split(',').collect();
                let n: u64 = parts[1].parse().unwrap();
                let total: u64 = parts[2].parse().unwrap();
                assert!(n >= 1 && n <= total, "{l}");
                format!("{},N,{}\n", parts[0], parts[2])
            })
            .collect();
        prop_assert_eq!(got_masked, want);
    }

    #[test]
    fn map_only_jobs_keep_the_input_order(
        lines in proptest::collection::vec(line(), 0..60),
        chunk in 1u64..100,
        concurrency in 1usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join("in.txt"), &text).unwrap();
        let out = dir.path().join("out.jsonl");
        let job = format!(
            "[input]\npath = \"{}\"\nchunk_size = {chunk}\n[[stage]]\nfunction = \"grep\"\nparams = {{ pattern = \"b|é\" }}\n[output]\npath = \"{}\"\n[platform]\nconcurrency = {concurrency}\n",
            dir.path().join("in.txt").display(),
            out.display()
        );
        common::run_in(dir.path(), &job, &Registry::builtins(), 1 << 30).unwrap();
        let want: Vec<&str> = lines.iter().map(String::as_str).filter(|l| l.contains('b') || l.contains('é')).collect();
        let got: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_str().unwrap().to_string())
            .collect();
        prop_assert_eq!(got, want);
    }
}
