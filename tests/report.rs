//! `fanout report` and `fanout run --report`: the page of a run with
//! retries, backups, cold starts and failures, checked against the run's
//! own records and loaded in a real browser (headless Chromium) on every
//! preset's run; a failed run's page; an interrupted run's; two runs
//! compared; the slowest tasks' splits.

use std::collections::BTreeSet;
use std::process::Command;

use crate::faults::PRESETS;
use crate::util::{Scratch, root, summary};

/// What the records of a run directory say, counted here from `fanout
/// records` (JSON lines), apart from the report's code.
#[derive(Debug, Default)]
struct Counted {
    invocations: u64,
    slots: BTreeSet<u64>,
    cold: u64,
    retries: u64,
    backups: u64,
    failed: u64,
    /// Runs of a raced task that lost: cancelled, or finished after the
    /// winner.
    lost: u64,
}

/// The error of a run cancelled because its twin won.
const CANCELLED: &str = "cancelled: another run of the task finished first";

fn count(s: &Scratch, dir: &str) -> Counted {
    let mut c = Counted::default();
    let records: Vec<serde_json::Value> = s.records(dir).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let task = |r: &serde_json::Value| (r["stage"].to_string(), r["phase"].to_string(), r["task"].as_u64().unwrap());
    let raced: BTreeSet<_> = records.iter().filter(|r| r["backup"] == true).map(task).collect();
    let mut finishes: std::collections::BTreeMap<_, Vec<u64>> = Default::default();
    for r in &records {
        c.invocations += 1;
        c.slots.insert(r["worker"].as_u64().unwrap());
        c.cold += u64::from(r["cold"] == true);
        c.retries += u64::from(r["attempt"].as_u64().unwrap() > 1);
        c.backups += u64::from(r["backup"] == true && r["attempt"] == 1);
        if r["status"] == "ok" {
            if raced.contains(&task(r)) {
                finishes.entry(task(r)).or_default().push(r["finished_us"].as_u64().unwrap());
            }
        } else if r["error"] == CANCELLED {
            c.lost += 1;
        } else {
            c.failed += 1;
        }
    }
    c.lost += finishes.values().map(|f| f.len() as u64 - 1).sum::<u64>();
    c
}

/// Loads `page` in headless Chromium (tests/fixtures/report_check.py):
/// what it saw, as JSON; a screenshot to `shot` if given.
pub(crate) fn browse(page: &std::path::Path, shot: Option<&std::path::Path>) -> serde_json::Value {
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("tests/fixtures/report_check.py")).arg(page);
    if let Some(shot) = shot {
        cmd.arg(shot);
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "the browser check failed (is Debian's chromium installed? tests/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn figure<'a>(seen: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    seen["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no figure `{id}` in {seen}"))
}

/// A text of 3,000 lines, and a job over it in 1 KiB splits: 2 ms of
/// work, then a word count.
fn wordcount(s: &Scratch) {
    let text: String = (0..3000).map(|i| format!("w{} w{} w{}\n", i % 7, i % 11, i % 13)).collect();
    s.write("in.txt", &text);
    // 2 ms of work a task: a straggler slowed 400-fold outlasts the rest
    // of its phase however loaded the machine, so it gets its backup.
    let job = "name = \"wc\"\n[input]\npath = \"in.txt\"\nchunk_size = \"1KiB\"\n[[stage]]\nname = \"work\"\n\
               function = \"burn\"\nparams = { ms = 2 }\n[[stage]]\nname = \"count\"\n\
               function = \"word_count\"\n[[stage]]\nname = \"total\"\nfunction = \"aggregate\"\nkey = [\"word\"]\n\
               params = { sum = [\"count\"] }\n[output]\npath = \"out.csv\"\nmode = \"overwrite\"\n";
    s.write("job.toml", job);
}

/// `fanout run job.toml --report` with `sets` and `extra`.
fn run_args<'a>(dir: &'a str, sets: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "job.toml", "--progress", "never", "--show", "0", "--run-dir", dir, "--report"];
    for set in sets {
        args.extend(["--set", set.as_str()]);
    }
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_run_with_retries_backups_and_cold_starts_gets_a_report_a_browser_shows_on_every_preset() {
    let s = Scratch::new();
    wordcount(&s);
    for preset in PRESETS {
        let dir = format!("rd-{preset}");
        let sets: Vec<String> = [
            format!("platform.preset={preset}"),
            "platform.concurrency=3".into(),
            "platform.retries=8".into(),
            "platform.backoff=1ms".into(),
            "platform.backups=true".into(),
            "platform.emulate=true".into(),
            "platform.cold_start=20ms".into(),
        ]
        .to_vec();
        let chaos = ["--chaos", "fail=0.1,straggle=0.1x400,seed=5", "--json"];
        let r = s.run_within(180, &run_args(&dir, &sets, &chaos)).expect(0);
        let sum = summary(&r);
        assert!(
            r.stderr.contains(&format!("report: {dir}/report.html (")),
            "{preset}: --report says where: {}",
            r.stderr
        );
        let page = s.path(&format!("{dir}/report.html"));
        let html = std::fs::read_to_string(&page).unwrap();
        let c = count(&s, &dir);
        assert!(
            c.cold > 0 && c.retries > 0 && c.failed > 0 && c.backups > 0,
            "{preset}: the chaos was too mild: {c:?}"
        );
        // The legend counts what the records hold.
        let legend = [
            ("cold start", c.cold),
            ("retry", c.retries),
            ("backup", c.backups),
            ("failed", c.failed),
            ("lost the race (cancelled, or its result dropped)", c.lost),
        ];
        for (what, n) in legend {
            assert!(html.contains(&format!("{what} ({n})")), "{preset}: `{what} ({n})` is not in the legend");
        }
        assert!(html.contains(&format!("{} invocations on {} worker slots", c.invocations, c.slots.len())), "{preset}");
        // The cost per stage adds up to the run's.
        let stages = sum["stages"].as_array().unwrap();
        let usd: f64 = stages.iter().map(|st| st["usd"].as_f64().unwrap()).sum();
        let total = sum["cost"]["usd"].as_f64().unwrap();
        assert!((usd - total).abs() <= 1e-9 + total * 1e-9, "{preset}: stages cost {usd}, the run {total}");
        if preset != "local" {
            assert!(total > 0.0, "{preset}: a FaaS preset's run costs something");
        }
        // What a person sees, in a real browser.
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{preset}.png"));
        let seen = browse(&page, Some(&shot));
        assert_eq!(seen["console"], serde_json::json!([]), "{preset}: console messages");
        assert_eq!(seen["svg_parse_errors"], serde_json::json!([]), "{preset}");
        let timeline = figure(&seen, "timeline");
        let slots = c.slots.len();
        assert_eq!(timeline["data"]["data-tracks"], slots.to_string(), "{preset}: a track per worker slot");
        let labels: BTreeSet<String> = c.slots.iter().map(|w| format!("slot {w}")).collect();
        let drawn: BTreeSet<String> =
            timeline["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
        assert_eq!(drawn, labels, "{preset}: the tracks are labelled by slot");
        for id in ["concurrency", "latency-0", "latency-1", "latency-2", "latency-3", "throughput", "throughput-bytes"]
        {
            assert_eq!(figure(&seen, id)["svgs"], 1, "{preset}: {id}");
        }
        let tables: Vec<&str> = seen["tables"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        for t in ["summary", "latency-table", "cost", "slowest", "failed-invocations"] {
            assert!(tables.contains(&t), "{preset}: no table {t}: {tables:?}");
        }
        assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "{preset}: a screenshot");
    }
}

#[test]
fn the_browser_check_catches_a_page_that_fetches_or_runs_script() {
    // The check above must be able to fail: a page like the report's,
    // whose policy blocks an image from the network and a script.
    let s = Scratch::new();
    wordcount(&s);
    s.run_within(120, &run_args("rd", &[], &[])).expect(0);
    let html = std::fs::read_to_string(s.path("rd/report.html")).unwrap();
    let bad = html
        .replace("</body>", "<img src=\"http://127.0.0.1:9/x.png\"><script>nosuch()</script><svg><rect></svg></body>");
    let page = s.write("bad.html", bad);
    let seen = browse(&page, None);
    let console = seen["console"].as_array().unwrap();
    assert!(console.len() >= 2, "{console:?}");
    assert_eq!(seen["svg_parse_errors"].as_array().unwrap().len(), 1, "{seen}");
}

#[test]
fn a_failed_run_gets_a_report_that_shows_where_it_failed() {
    let s = Scratch::new();
    wordcount(&s);
    let sets = vec!["platform.retries=1".to_string(), "platform.backoff=1ms".to_string()];
    let r = s.run_within(120, &run_args("rd", &sets, &["--chaos", "fail=0.5,seed=2"])).expect(1);
    assert!(r.stderr.contains("report: rd/report.html ("), "{}", r.stderr);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["status"], "failed");
    let html = std::fs::read_to_string(s.path("rd/report.html")).unwrap();
    assert!(html.contains("<span class=\"status failed\">failed</span>"));
    assert!(html.contains("id=\"failure\"><b>Where it failed:</b>"), "{html}");
    let failed = &sum["failed_tasks"][0];
    let task = format!(
        "<tr><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td>",
        failed["stage"].as_str().unwrap(),
        failed["phase"].as_str().unwrap(),
        failed["task"]
    );
    assert!(html.contains(&task), "the failed task {task} is listed");
    assert!(html.contains("chaos: injected failure"));
    let seen = browse(&s.path("rd/report.html"), None);
    assert_eq!(seen["console"], serde_json::json!([]));
    assert!(seen["tables"].as_array().unwrap().iter().any(|t| t == "failed-tasks"), "{seen}");
}

#[test]
fn an_interrupted_run_is_reported_from_its_records() {
    let s = Scratch::new();
    wordcount(&s);
    s.run_within(120, &run_args("rd", &[], &[])).expect(0);
    std::fs::remove_file(s.path("rd/summary.json")).unwrap();
    std::fs::remove_file(s.path("rd/report.html")).unwrap();
    let r = s.run(&["report", "rd", "--out", "page.html"]).expect(0);
    assert!(r.stderr.contains("report: page.html ("), "{}", r.stderr);
    let html = std::fs::read_to_string(s.path("page.html")).unwrap();
    assert!(html.contains("<span class=\"status interrupted\">interrupted</span>"));
    assert!(html.contains("The run has no summary.json"));
    let c = count(&s, "rd");
    assert!(html.contains(&format!("data-slots=\"{}\"", c.slots.len())));
    // Not a run directory: a usage error that says so.
    let r = s.run(&["report", "nosuch"]).expect(2);
    assert!(r.stderr.contains("nosuch: no such run directory"), "{}", r.stderr);
    std::fs::create_dir(s.path("empty")).unwrap();
    let r = s.run(&["report", "empty"]).expect(2);
    assert!(r.stderr.contains("empty: not a run directory (no job.json)"), "{}", r.stderr);
}

#[test]
fn two_runs_are_compared_side_by_side() {
    let s = Scratch::new();
    wordcount(&s);
    let one = vec!["platform.concurrency=1".to_string()];
    let three = vec!["platform.concurrency=3".to_string()];
    let a = summary(&s.run_within(120, &run_args("a", &one, &["--json"])).expect(0));
    let b = summary(&s.run_within(120, &run_args("b", &three, &["--json"])).expect(0));
    let r = s.run(&["report", "a", "b"]).expect(0);
    assert!(r.stderr.contains("report: b/compare.html ("), "{}", r.stderr);
    // The table on stdout: each figure of A and B, and B / A.
    let row = |metric: &str| -> Vec<String> {
        let line = r.stdout.lines().find(|l| l.starts_with(metric)).unwrap_or_else(|| panic!("{metric}: {}", r.stdout));
        line[metric.len()..].split_whitespace().map(str::to_string).collect()
    };
    let wall = row("wall time (s)");
    let (wa, wb) = (a["wall_seconds"].as_f64().unwrap(), b["wall_seconds"].as_f64().unwrap());
    let number = |t: &str| t.trim_end_matches('×').parse::<f64>().unwrap();
    assert!((number(&wall[0]) - wa).abs() < 5e-4 && (number(&wall[1]) - wb).abs() < 5e-4, "{wall:?}: {wa} {wb}");
    assert!((number(&wall[2]) - wb / wa).abs() < 5e-3 && wall[2].ends_with('×'), "{wall:?}");
    let inv = row("invocations");
    assert_eq!(inv[..2], [a["invocations"]["total"].to_string(), b["invocations"]["total"].to_string()]);
    let peak = row("peak in flight");
    assert_eq!(peak[0], "1", "one slot, one at a time");
    assert!(r.stdout.contains("count: p50 latency (ms)") && r.stdout.contains("total (reduce): p99 latency (ms)"));
    let seen = browse(&s.path("b/compare.html"), None);
    assert_eq!(seen["console"], serde_json::json!([]));
    assert_eq!(figure(&seen, "timeline-a")["data"]["data-slots"], "1");
    assert_eq!(figure(&seen, "timeline-b")["data"]["data-slots"], count(&s, "b").slots.len().to_string());
    let tables = seen["tables"].as_array().unwrap();
    for t in ["comparison", "summary-a", "summary-b", "cost-a", "cost-b"] {
        assert!(tables.iter().any(|x| x == t), "{t}");
    }
}

#[test]
fn the_slowest_tasks_name_their_splits() {
    let s = Scratch::new();
    wordcount(&s);
    // Stragglers make some map tasks the slowest.
    let sets = vec!["platform.concurrency=2".to_string()];
    s.run_within(120, &run_args("rd", &sets, &["--chaos", "straggle=0.2x40,seed=9"])).expect(0);
    let html = std::fs::read_to_string(s.path("rd/report.html")).unwrap();
    let text = std::fs::read(s.path("in.txt")).unwrap();
    let table = &html[html.find("<table id=\"slowest\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let mut splits = 0;
    // Each map task's input cell: `.../in.txt bytes A..B`, a record-aligned
    // range of the file no longer than a chunk and a line.
    for cell in table.split("<td class=\"text\">").skip(1).map(|c| &c[..c.find("</td>").unwrap()]) {
        let Some((path, range)) = cell.split_once(" bytes ") else { continue };
        assert!(path.ends_with("in.txt"), "{cell}");
        let (a, b) = range.split_once("..").unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(a < b && b <= text.len() && b - a <= 1024 + 20, "{cell}");
        assert!(a == 0 || text[a - 1] == b'\n', "{cell}: starts at a record");
        assert_eq!(text[b - 1], b'\n', "{cell}: ends at a record");
        splits += 1;
    }
    assert!(splits > 0, "no split in the slowest table: {table}");
}
