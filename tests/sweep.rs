//! `fanout simulate --sweep` and `--deadline`: the table, sweep.csv and
//! sweep.json checked against single simulations of the same points and
//! against a Pareto front and a choice computed here; a sweep over every
//! preset; a simulated run stopping, as a real one does, at a failure the
//! job does not tolerate; and the errors.

use serde_json::Value;

use crate::faults::PRESETS;
use crate::simulate::{real, simulate, sleep_job};
use crate::util::{Scratch, summary};

fn calibrated() -> Scratch {
    let s = Scratch::new();
    sleep_job(&s, 24);
    real(&s, "cal", &["platform.concurrency=1".to_string()]);
    s
}

fn sweep(s: &Scratch, extra: &[&str]) -> crate::util::Run {
    let mut args = vec!["simulate", "job.toml", "--from", "cal", "--out", "sweep"];
    if !extra.contains(&"--seeds") {
        args.extend(["--seeds", "3"]);
    }
    args.extend_from_slice(extra);
    s.run_within(120, &args)
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn a_sweep_tabulates_every_combination_as_single_simulations_predict_them() {
    let s = calibrated();
    let args = [
        "--set",
        "platform.preset=aws-lambda",
        "--sweep",
        "platform.concurrency=1,4,12",
        "--sweep",
        "platform.memory=512MB,1769MB",
        "--json",
    ];
    let r = sweep(&s, &args).expect(0);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["keys"], serde_json::json!(["platform.concurrency", "platform.memory"]));
    assert_eq!(out["seeds"], 3);
    let points = out["points"].as_array().unwrap();
    // Every combination, the last key varying fastest.
    let values: Vec<Vec<String>> = points
        .iter()
        .map(|p| p["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .collect();
    let mut expected = Vec::new();
    for c in ["1", "4", "12"] {
        for m in ["512MB", "1769MB"] {
            expected.push(vec![c.to_string(), m.to_string()]);
        }
    }
    assert_eq!(values, expected);
    // Each point is what `fanout simulate --set` predicts for it alone.
    for (i, (p, v)) in points.iter().zip(&expected).enumerate() {
        let sets = vec![
            "platform.preset=aws-lambda".to_string(),
            format!("platform.concurrency={}", v[0]),
            format!("platform.memory={}", v[1]),
        ];
        let one = summary(&simulate(&s, &format!("one-{i}"), &sets, &["--seeds", "3"]).expect(0));
        for (a, b) in [("wall_p5", "wall_p5"), ("wall_p50", "wall_p50"), ("wall_p95", "wall_p95")] {
            assert_eq!(p[a], one["simulation"][b], "point {v:?}: {a}");
        }
        assert_eq!(p["invocations"], one["invocations"]["total"], "point {v:?}");
        assert_eq!(p["cold"], one["invocations"]["cold"], "point {v:?}");
        assert_eq!(p["failed_seeds"], 0);
        assert!(f(p, "usd") > 0.0);
    }
    // More slots, less time; more memory, a higher price per GB-s.
    assert!(f(&points[4], "wall_p50") < f(&points[0], "wall_p50") / 3.0);
    // The Pareto front, computed here.
    for (i, p) in points.iter().enumerate() {
        let dominated = points.iter().any(|q| {
            f(q, "wall_p95") <= f(p, "wall_p95")
                && f(q, "usd") <= f(p, "usd")
                && (f(q, "wall_p95") < f(p, "wall_p95") || f(q, "usd") < f(p, "usd"))
        });
        assert_eq!(p["pareto"], !dominated, "point {i}: {p}");
        assert_eq!(p["meets_deadline"], Value::Null);
    }
    assert_eq!(out["chosen"], Value::Null);
    // sweep.json is what --json printed; sweep.csv holds the same rows.
    let written: Value = serde_json::from_str(&std::fs::read_to_string(s.path("sweep/sweep.json")).unwrap()).unwrap();
    assert_eq!(written, out);
    let csv = std::fs::read_to_string(s.path("sweep/sweep.csv")).unwrap();
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(head[..5], ["platform.concurrency", "platform.memory", "wall_p5_s", "wall_p50_s", "wall_p95_s"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), points.len());
    for (row, p) in rows.iter().zip(points) {
        assert_eq!(row.len(), head.len());
        let col = |name: &str| row[head.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("platform.concurrency"), p["values"][0].as_str().unwrap());
        assert_eq!(col("platform.memory"), p["values"][1].as_str().unwrap());
        assert!((col("wall_p50_s").parse::<f64>().unwrap() - f(p, "wall_p50")).abs() < 1e-5);
        assert!((col("usd").parse::<f64>().unwrap() - f(p, "usd")).abs() < 1e-7);
        assert_eq!(col("invocations"), p["invocations"].to_string());
        assert_eq!(col("pareto"), p["pareto"].to_string());
    }
    // The table: a row per point, the front starred.
    let r = sweep(&s, &args[..args.len() - 1]).expect(0);
    let table: Vec<&str> =
        r.stderr.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).collect();
    assert_eq!(table.len(), points.len(), "{}", r.stderr);
    let starred = table.iter().filter(|l| l.ends_with('*')).count();
    assert_eq!(starred, points.iter().filter(|p| p["pareto"] == true).count(), "{}", r.stderr);
    assert!(r.stderr.contains("written to sweep/sweep.csv and sweep.json"), "{}", r.stderr);
}

#[test]
fn a_deadline_picks_the_cheapest_configuration_that_meets_it_at_p95() {
    let s = calibrated();
    let base = [
        "--set",
        "platform.preset=aws-lambda",
        "--sweep",
        "platform.concurrency=1,2,4,8,24",
        "--sweep",
        "platform.memory=256MB,1769MB",
    ];
    // Find the times, then set a deadline between them.
    let all: Value = serde_json::from_str(&sweep(&s, &[&base[..], &["--json"]].concat()).expect(0).stdout).unwrap();
    let points = all["points"].as_array().unwrap();
    let mut p95: Vec<f64> = points.iter().map(|p| f(p, "wall_p95")).collect();
    p95.sort_by(f64::total_cmp);
    let deadline = (p95[p95.len() / 2] + p95[p95.len() / 2 + 1]) / 2.0;
    let d = format!("{}ms", (deadline * 1000.0) as u64);
    let deadline = (deadline * 1000.0).floor() / 1000.0;
    let r = sweep(&s, &[&base[..], &["--deadline", &d, "--json"]].concat()).expect(0);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    let points = out["points"].as_array().unwrap();
    let meets: Vec<usize> = (0..points.len()).filter(|&i| f(&points[i], "wall_p95") <= deadline).collect();
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["meets_deadline"], meets.contains(&i), "point {i}");
    }
    let cheapest = *meets.iter().min_by(|&&a, &&b| f(&points[a], "usd").total_cmp(&f(&points[b], "usd"))).unwrap();
    assert_eq!(out["chosen"], cheapest, "{}", r.stdout);
    let said = format!("at p95: #{} (platform.concurrency=", cheapest + 1);
    assert!(r.stderr.contains("cheapest meeting the deadline of ") && r.stderr.contains(&said), "{}", r.stderr);
    // A deadline nothing meets: exit 1, and the fastest named.
    let r = sweep(&s, &[&base[..], &["--deadline", "1ms"]].concat()).expect(1);
    assert!(r.stderr.contains("no configuration meets the deadline of 0.001 s at p95: the fastest, #"), "{}", r.stderr);
    // Without a sweep, the deadline checks the one configuration.
    let one = ["simulate", "job.toml", "--from", "cal", "--set", "platform.concurrency=24", "--run-dir"];
    let r = s.run_within(60, &[&one[..], &["d1", "--deadline", "1h"]].concat()).expect(0);
    assert!(r.stderr.contains("meets the deadline of 3600 s at p95"), "{}", r.stderr);
    let r = s.run_within(60, &[&one[..], &["d2", "--deadline", "1ms"]].concat()).expect(1);
    assert!(r.stderr.contains("the job does not meet the deadline of 0.001 s: p95 "), "{}", r.stderr);
}

#[test]
fn a_sweep_over_every_preset_prices_each_as_its_simulation_does() {
    let s = calibrated();
    let presets = PRESETS.join(",");
    let sweep_arg = format!("platform.preset={presets}");
    // One seed: a point's figures are then its one simulation's.
    let r = sweep(&s, &["--sweep", &sweep_arg, "--sweep", "platform.emulate=false,true", "--json", "--seeds", "1"])
        .expect(0);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    let points = out["points"].as_array().unwrap();
    assert_eq!(points.len(), 2 * PRESETS.len());
    for (i, p) in points.iter().enumerate() {
        let (preset, emulate) = (PRESETS[i / 2], i % 2 == 1);
        assert_eq!(p["values"], serde_json::json!([preset, emulate.to_string()]));
        let sets = vec![format!("platform.preset={preset}"), format!("platform.emulate={emulate}")];
        let one = summary(&simulate(&s, &format!("p{i}"), &sets, &["--seeds", "1"]).expect(0));
        assert_eq!(p["wall_p50"], one["simulation"]["wall_p50"], "{preset} emulate={emulate}");
        assert_eq!(p["usd"], one["cost"]["usd"], "{preset} emulate={emulate}");
        assert_eq!(p["gb_seconds"], one["cost"]["gb_seconds"], "{preset} emulate={emulate}");
        assert_eq!(p["cold"], one["invocations"]["cold"], "{preset} emulate={emulate}");
    }
    // Emulated cold starts and overheads take time on every FaaS preset.
    for i in (0..points.len()).step_by(2).skip(1) {
        assert!(f(&points[i + 1], "wall_p50") > f(&points[i], "wall_p50"), "{}", points[i]);
    }
}

#[test]
fn a_simulated_run_stops_at_a_failure_the_job_does_not_tolerate_as_a_real_one_does() {
    let s = calibrated();
    let sets: Vec<String> = ["platform.concurrency=2", "platform.retries=0"].map(String::from).to_vec();
    let chaos = ["--chaos", "fail=1"];
    let mut args = crate::simulate::with_sets(vec!["run", "job.toml", "--progress", "never", "--run-dir", "r"], &sets);
    args.extend(chaos);
    s.run_within(60, &args).expect(1);
    let measured: Value = serde_json::from_slice(&std::fs::read(s.path("r/summary.json")).unwrap()).unwrap();
    let predicted = summary(&simulate(&s, "sim", &sets, &chaos).expect(0));
    assert_eq!(predicted["status"], "failed");
    let (p, m) = (predicted["error"].as_str().unwrap(), measured["error"].as_str().unwrap());
    let prefix = "stage `work` (map) failed on task ";
    assert!(p.starts_with(prefix) && m.starts_with(prefix), "{p}\n{m}");
    assert!(p.ends_with("attempt 1: chaos: injected failure"), "{p}");
    // It stopped there: no more invocations than slots.
    assert!(predicted["invocations"]["total"].as_u64().unwrap() <= 2, "{predicted}");
    // Tolerated failures go on; past the percentage, the phase fails.
    let mut sets = sets;
    sets.push("platform.tolerated_failure_percent=50".into());
    let p = summary(&simulate(&s, "sim2", &sets, &["--chaos", "fail=0.2,seed=2"]).expect(0));
    assert_eq!(p["status"], "succeeded", "{p}");
    assert!(!p["failed_tasks"].as_array().unwrap().is_empty());
    let p = summary(&simulate(&s, "sim3", &sets, &["--chaos", "fail=0.9,seed=2"]).expect(0));
    assert_eq!(p["status"], "failed", "{p}");
    assert!(p["error"].as_str().unwrap().contains("of 24 tasks failed, more than the tolerated 50%"), "{p}");
    // A sweep marks a failing point and leaves it off the front.
    let r = sweep(&s, &["--sweep", "platform.retries=0,10", "--chaos", "fail=0.3", "--json"]).expect(0);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    let (failing, ok) = (&out["points"][0], &out["points"][1]);
    assert_eq!(failing["failed_seeds"], 3, "{failing}");
    assert_eq!(failing["pareto"], false);
    assert!(failing["error"].as_str().unwrap().contains("chaos: injected failure"));
    assert_eq!(ok["failed_seeds"], 0, "{ok}");
    assert_eq!(ok["pareto"], true);
}

#[test]
fn a_sweep_names_the_value_it_cannot_use() {
    let s = calibrated();
    let r = sweep(&s, &["--sweep", "platform.concurrency=2,lots"]).expect(2);
    assert!(r.stderr.contains("--sweep platform.concurrency=lots: "), "{}", r.stderr);
    let r = s.run(&["simulate", "job.toml", "--from", "cal", "--sweep", "platform.concurrency"]).expect(2);
    assert!(r.stderr.contains("expected KEY=V1,V2,..."), "{}", r.stderr);
    let r = s.run(&["simulate", "job.toml", "--from", "cal", "--out", "x"]).expect(2);
    assert!(r.stderr.contains("--sweep"), "{}", r.stderr);
}

#[test]
fn durations_given_without_a_run_simulate_the_job_by_hand_arithmetic() {
    let s = Scratch::new();
    sleep_job(&s, 24);
    let given = ["--durations", "work=20ms", "--durations", "count=1ms", "--durations", "total=1ms"];
    let run = |extra: &[&str]| {
        let args = ["simulate", "job.toml", "--seeds", "1", "--json", "--set", "platform.concurrency=4"];
        summary(&s.run_within(60, &[&args[..], &given[..], extra].concat()).expect(0))
    };
    // 24 tasks of 20 + 1 + 1 ms on 4 slots: 6 rounds; then 4 partitions
    // of 1 ms at once. Nothing else: no run taught a hand-off.
    let p = run(&["--run-dir", "a"]);
    assert_eq!(p["wall_seconds"], 0.133, "{p}");
    assert_eq!(p["invocations"]["total"], 24 * 3 + 4);
    assert_eq!(p["simulation"]["calibrated_from"], "--durations");
    // Lambda's rule: CPU in proportion to memory, one vCPU at 1,769 MB.
    let p = run(&["--run-dir", "b", "--set", "platform.preset=aws-lambda", "--set", "platform.memory=512MB"]);
    let wall = p["wall_seconds"].as_f64().unwrap();
    assert!((wall - 0.133 * 1769.0 / 512.0).abs() < 1e-3, "{wall}");
    // A stage of several phases given per phase; a spread varies the times.
    let p = run(&["--run-dir", "c", "--durations", "total.reduce=11ms", "--durations", "work=20ms~0.5"]);
    let wall = p["wall_seconds"].as_f64().unwrap();
    assert!(wall != 0.143 && (0.1..0.3).contains(&wall), "{wall}");
    // Over a calibration run: the given stage changes, the others do not.
    real(&s, "cal", &["platform.concurrency=1".to_string()]);
    let calibrated = summary(&simulate(&s, "d", &["platform.concurrency=4".into()], &["--seeds", "1"]).expect(0));
    let slower = summary(
        &simulate(&s, "e", &["platform.concurrency=4".into()], &["--seeds", "1", "--durations", "work=60ms"]).expect(0),
    );
    let (c, w) = (calibrated["wall_seconds"].as_f64().unwrap(), slower["wall_seconds"].as_f64().unwrap());
    assert!((w - c - 6.0 * 0.040).abs() < 0.03, "calibrated {c} s, with work at 60 ms {w} s");
    // What it cannot simulate.
    let r = s.run(&["simulate", "job.toml"]).expect(2);
    assert!(r.stderr.contains("no durations to simulate with: give --from RUN_DIR"), "{}", r.stderr);
    let r = s.run(&["simulate", "job.toml", "--durations", "work=20ms"]).expect(2);
    assert!(r.stderr.contains("stage `count` (map) has no durations: give --durations count=TIME"), "{}", r.stderr);
    let r = s.run(&["simulate", "job.toml", "--durations", "nosuch=20ms"]).expect(2);
    assert!(r.stderr.contains("the job has no stage `nosuch` (its stages: work, count, total)"), "{}", r.stderr);
    let r = s.run(&["simulate", "job.toml", "--durations", "work=fast"]).expect(2);
    assert!(r.stderr.contains("expected a time per invocation and/or per MiB"), "{}", r.stderr);
}
