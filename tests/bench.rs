//! `fanout bench`: the quick suite with the peers this machine has (a
//! missing one is skipped, with how to get it), its table, JSON and page
//! (loaded in headless Chromium), the ratios checked against the times, a
//! thread sweep's speedup chart, and the errors.

use std::process::Command;

use serde_json::Value;

use crate::report::browse;
use crate::util::{Scratch, root};

fn python_has(module: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success())
}

fn on_path(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// Whether a hand-written limit binary sits beside the fanout under test.
fn limit_built() -> bool {
    let deps = crate::util::binary().parent().unwrap().join("deps");
    std::fs::read_dir(deps).into_iter().flatten().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.starts_with("limits-") && !n.contains('.')
    })
}

fn program<'a>(w: &'a Value, name: &str) -> Option<&'a Value> {
    w["programs"].as_array().unwrap().iter().find(|p| p["name"].as_str().unwrap().starts_with(name))
}

fn skipped<'a>(w: &'a Value, name: &str) -> Option<&'a str> {
    w["skipped"].as_array().unwrap().iter().find(|s| s["name"] == name).map(|s| s["why"].as_str().unwrap())
}

#[test]
fn the_quick_suite_runs_every_workload_and_the_peers_found_and_skips_the_others() {
    let _heavy = crate::util::heavy();
    let s = Scratch::new();
    let r = s.run_within(240, &["bench", "--quick", "--compare", "--runs", "2", "--out", "b", "--json"]).expect(0);
    let out: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(out["runs"], 2);
    assert_eq!(out["quick"], true);
    let workloads = out["workloads"].as_array().unwrap();
    let ids: Vec<&str> = workloads.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["wordcount", "groupby", "pi", "dispatch", "exec", "lambda", "stream"]);
    let cores = out["cores"].as_u64().unwrap();
    for w in workloads {
        assert_eq!(w["threads"], cores, "the default is the cores");
        let fanout = &w["programs"][0];
        assert_eq!(fanout["name"], "fanout run", "{w}");
        assert!(fanout["ratio"].is_null());
        let ours: Vec<f64> = fanout["walls"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(ours.len(), 2);
        assert!(ours.iter().all(|&t| t > 0.0));
        // Each peer's ratio is its time over fanout's, round by round.
        for p in &w["programs"].as_array().unwrap()[1..] {
            let theirs: Vec<f64> = p["walls"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let mut ratios: Vec<f64> = theirs.iter().zip(&ours).map(|(t, o)| t / o).collect();
            ratios.sort_by(f64::total_cmp);
            let r = &p["ratio"];
            assert!((r["min"].as_f64().unwrap() - ratios[0]).abs() < 1e-9, "{p}");
            assert!((r["max"].as_f64().unwrap() - ratios[1]).abs() < 1e-9, "{p}");
            assert!((r["median"].as_f64().unwrap() - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-9, "{p}");
        }
    }
    let w = |id: &str| workloads.iter().find(|w| w["id"] == id).unwrap();
    // The peers: measured where this machine has them, else skipped with
    // how to get them.
    for (workload, peer, found, hint) in [
        ("groupby", "DuckDB", python_has("duckdb"), "pip install duckdb"),
        ("groupby", "Polars", python_has("polars"), "pip install polars"),
        ("exec", "GNU parallel", on_path("parallel"), "apt-get install parallel"),
        ("pi", "limit (rayon, hand-written)", limit_built(), "cargo bench --bench limits --no-run"),
        ("stream", "limit (rayon, hand-written)", limit_built(), "cargo bench --bench limits --no-run"),
    ] {
        let w = w(workload);
        if found {
            assert!(program(w, peer).is_some(), "{peer} is installed but was not run: {w}");
        } else {
            let why = skipped(w, peer).unwrap_or_else(|| panic!("{peer} neither run nor skipped: {w}"));
            assert!(why.contains(hint), "{why}");
        }
    }
    assert!(program(w("lambda"), "fanout, the same tasks in-process").is_some());
    // The files: bench.json is what --json printed; bench.md the table.
    let written: Value = serde_json::from_str(&std::fs::read_to_string(s.path("b/bench.json")).unwrap()).unwrap();
    assert_eq!(written, out);
    let md = std::fs::read_to_string(s.path("b/bench.md")).unwrap();
    let rows: Vec<&str> = md.lines().skip(2).collect();
    let expected: usize = workloads
        .iter()
        .map(|w| w["programs"].as_array().unwrap().len() + w["skipped"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows.len(), expected, "{md}");
    assert!(rows.iter().all(|r| r.starts_with("| ") && r.split('|').count() == 8), "{md}");
    assert!(md.contains("| Monte Carlo pi, 2e6 samples | "), "{md}");
    // The page, as a browser shows it.
    let seen = browse(&s.path("b/bench.html"), Some(&root().join("target/tmp/bench.png")));
    assert_eq!(seen["console"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["svg_parse_errors"], serde_json::json!([]), "{seen}");
    assert!(seen["tables"].as_array().unwrap().contains(&Value::from("results")), "{seen}");
    let figures: Vec<&str> = seen["figures"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(figures, ["ratios"], "{seen}");
}

#[test]
fn a_thread_sweep_measures_each_count_and_plots_the_speedup() {
    let _heavy = crate::util::heavy();
    let s = Scratch::new();
    let r =
        s.run_within(120, &["bench", "--quick", "--only", "pi,dispatch", "--threads", "1,2", "--out", "t"]).expect(0);
    // The table on stdout, a row per workload and thread count.
    let rows: Vec<&str> = r.stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), 4, "{}", r.stdout);
    assert!(rows[0].starts_with("| Monte Carlo pi, 2e6 samples | 1 | fanout run | "), "{}", r.stdout);
    assert!(rows[3].starts_with("| dispatch, 5000 empty invocations | 2 | fanout run | "), "{}", r.stdout);
    assert_eq!(r.stdout, std::fs::read_to_string(s.path("t/bench.md")).unwrap());
    let job = std::fs::read_to_string(s.path("t/work/pi.toml")).unwrap();
    assert!(job.contains("function = \"pi\""), "{job}");
    let seen = browse(&s.path("t/bench.html"), None);
    assert_eq!(seen["console"], serde_json::json!([]), "{seen}");
    let figures: Vec<&str> = seen["figures"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(figures, ["speedup-pi", "speedup-dispatch"], "{seen}");
}

#[test]
fn bench_names_what_it_cannot_run() {
    let s = Scratch::new();
    let r = s.run(&["bench", "--quick", "--only", "wordcount,nosuch"]).expect(2);
    assert!(
        r.stderr.contains(
            "--only nosuch: no such workload (the suite: wordcount, groupby, pi, dispatch, exec, lambda, stream)"
        ),
        "{}",
        r.stderr
    );
    let r = s.run(&["bench", "--quick", "--threads", "0"]).expect(2);
    assert!(r.stderr.contains("--threads: a thread count must be at least 1"), "{}", r.stderr);
    // A program that fails fails the bench, named, with its error.
    s.write("limits", "#!/bin/sh\necho 'no such mode' >&2\nexit 3\n");
    Command::new("chmod").args(["+x", s.path("limits").to_str().unwrap()]).status().unwrap();
    let limits = s.path("limits").display().to_string();
    let out = Command::new(crate::util::binary())
        .args(["bench", "--quick", "--compare", "--only", "pi"])
        .env("FANOUT_LIMITS", &limits)
        .current_dir(s.path("."))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("limit (rayon, hand-written) failed (exit status: 3): "), "{stderr}");
    assert!(stderr.contains("no such mode"), "{stderr}");
}
