//! `fanout plan`: inputs, splits, stages and output, checked against
//! counts computed here.

use crate::util::{Scratch, root, run_in};

#[test]
fn plan_counts_files_bytes_and_splits() {
    let s = Scratch::new();
    let mut total = 0;
    for i in 0..30 {
        let line = format!("line {i}\n").repeat(i + 1);
        total += line.len();
        s.write(&format!("in/part-{i:02}.txt"), line);
    }
    s.write("in/.hidden", "not an input");
    s.write(
        "job.toml",
        "[input]\npath = \"in\"\nchunk_size = 64\n[[stage]]\nfunction = \"word_count\"\n[output]\npath = \"o.csv\"\n",
    );
    let r = s.run(&["plan", "job.toml"]).expect(0);
    assert!(r.stdout.contains("  files: 30, "), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("({total} bytes)")), "{}", r.stdout);
    // Oracle: each file splits into ceil-ish pieces of >= 64 bytes ending at
    // newlines; count them the slow way.
    let mut splits = 0;
    for i in 0..30 {
        let content = format!("line {i}\n").repeat(i + 1);
        let mut pos = 0;
        while pos < content.len() {
            let target = pos + 64;
            pos = if target >= content.len() {
                content.len()
            } else {
                content[target - 1..].find('\n').map_or(content.len(), |j| target + j)
            };
            splits += 1;
        }
    }
    assert!(r.stdout.contains(&format!("  splits: {splits} ")), "{}", r.stdout);
}

#[test]
fn the_default_example_plans() {
    let s = Scratch::new();
    let job = root().join("jobs/examples/wordcount.toml");
    let r = run_in(s.dir.path(), &["plan", job.to_str().unwrap(), "--set", "input.generate.size=1MiB"]).expect(0);
    assert!(r.stdout.contains("input: generated text (1.0 MiB, seed 1)"), "{}", r.stdout);
    assert!(r.stdout.contains("  1. count: word_count (map"), "{}", r.stdout);
    assert!(r.stdout.contains("  2. total: aggregate {\"sum\":[\"count\"]} (keyed by word"), "{}", r.stdout);
    assert!(s.path(".fanout/cache/gen-text-1048576b-seed1.txt").is_file());
}

#[test]
fn plan_rejects_mismatched_files() {
    let s = Scratch::new();
    s.write("in/a.csv", "x,y\n1,2\n");
    s.write("in/b.csv", "x,z\n1,2\n");
    s.write("job.toml", "[input]\npath = \"in/*.csv\"\n[output]\npath = \"o.csv\"\n");
    // The files' data is at fault, not the job: exit 1, as a run
    // reading them fails.
    let r = s.run(&["plan", "job.toml"]).expect(1);
    assert!(
        r.stderr.contains("in/b.csv: header [\"x\", \"z\"] differs from the dataset's columns [\"x\", \"y\"]"),
        "{}",
        r.stderr
    );
}

#[test]
fn plan_shows_the_columns_a_first_stage_reads() {
    let s = Scratch::new();
    s.write("in.csv", "id,country,amount,note\n1,FR,2.5,x\n2,DE,1.0,y\n");
    let job =
        |function: &str| format!("[input]\npath = \"in.csv\"\n[[stage]]\n{function}\n[output]\npath = \"o.csv\"\n");
    s.write("agg.toml", job("function = \"aggregate\"\nkey = [\"country\"]\nparams = { sum = [\"amount\"] }"));
    let r = s.run(&["plan", "agg.toml"]).expect(0);
    assert!(r.stdout.contains("columns: id: Int64, country: Utf8, amount: Float64, note: Utf8"), "{}", r.stdout);
    assert!(r.stdout.contains("  reads only: country, amount (what the first stage uses)"), "{}", r.stdout);
    // A filter passes every column on: all are read.
    s.write("filter.toml", job("function = \"filter\"\nparams = { where = \"amount > 1\" }"));
    let r = s.run(&["plan", "filter.toml"]).expect(0);
    assert!(!r.stdout.contains("reads only"), "{}", r.stdout);
}
