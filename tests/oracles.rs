//! End-to-end runs checked against oracles computed independently: Python's
//! standard library, pyarrow (Arrow's reference implementation, for Parquet
//! and Arrow files) and DuckDB. tests/setup.sh installs pyarrow, duckdb and
//! xxhash; without them these tests fail and say so.

use crate::util::{Run, Scratch, need_python_module, python, root};

/// Fails the test unless the Python modules it checks against are there.
fn require_python(modules: &[&str]) {
    modules.iter().for_each(|m| need_python_module(m));
}

/// Runs the job file `job` (written into the scratch directory) with `args`.
fn run_job(s: &Scratch, job: &str, args: &[&str]) -> Run {
    s.write("job.toml", job);
    let mut all = vec!["run", "job.toml", "--progress", "never", "--show", "0"];
    all.extend_from_slice(args);
    s.run(&all)
}

/// A job over `input` with the given stages and output table.
fn job(input: &str, stages: &str, output: &str) -> String {
    format!("[input]\n{input}\n{stages}\n[output]\nmode = \"overwrite\"\n{output}\n[platform]\nconcurrency = 3\n")
}

/// Writes `data.csv`: id, country, amount (a float, empty for some rows),
/// qty (an int), note (text with commas and quotes), 5,000 rows.
fn events(s: &Scratch) {
    python(
        s,
        r#"
import csv, random
r = random.Random(7)
with open("data.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "country", "amount", "qty", "note"])
    for i in range(5000):
        amount = "" if r.random() < 0.1 else "%.2f" % (r.random() * 1000)
        note = r.choice(["plain", "with, comma", 'a "quote"', "x"])
        w.writerow([i, r.choice(["DE", "FR", "US", "JP", "BR", "IN", "NG"]), amount, r.randint(0, 20), note])
print("ok")
"#,
    );
}

#[test]
fn builtins_match_duckdb_and_python() {
    require_python(&["duckdb"]);
    let s = Scratch::new();
    events(&s);
    let input = "path = \"data.csv\"\nchunk_size = \"2KiB\"";
    // select: the columns, renamed, in input order.
    let stages = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\", \"country as c\"] }";
    run_job(&s, &job(input, stages, "path = \"select.csv\""), &[]).expect(0);
    // top_k per invocation, then the same order and limit at the gather:
    // the global top 7.
    let stages = "[[stage]]\nfunction = \"top_k\"\nparams = { by = [\"-amount\", \"id\"], k = 7 }";
    run_job(&s, &job(input, stages, "path = \"top.csv\"\nsort = [\"-amount\", \"id\"]\nlimit = 7"), &[]).expect(0);
    // sort over one split: the whole file in that order.
    let one = "path = \"data.csv\"\nchunk_size = \"64MiB\"";
    let stages = "[[stage]]\nfunction = \"sort\"\nparams = { by = [\"country\", \"-qty\", \"id\"] }";
    run_job(&s, &job(one, stages, "path = \"sorted.csv\""), &[]).expect(0);
    // aggregate's count, sum, min and max by key.
    let stages = "[[stage]]\nfunction = \"aggregate\"\nkey = [\"country\"]\n\
                  params = { count = true, sum = [\"qty\"], min = [\"amount\", \"qty\"], max = [\"amount\", \"qty\"] }";
    run_job(&s, &job(input, stages, "path = \"agg.csv\"\nsort = [\"country\"]"), &[]).expect(0);
    python(
        &s,
        r#"
import csv, duckdb
rows = list(csv.DictReader(open("data.csv", newline="")))
out = lambda p: list(csv.DictReader(open(p, newline="")))
assert [(r["id"], r["c"]) for r in out("select.csv")] == [(r["id"], r["country"]) for r in rows]
db = duckdb.connect()
db.sql("CREATE TABLE t AS SELECT * FROM read_csv('data.csv', header=true, columns={'id':'BIGINT','country':'VARCHAR','amount':'DOUBLE','qty':'BIGINT','note':'VARCHAR'})")
top = [str(r[0]) for r in db.sql("SELECT id FROM t ORDER BY amount DESC NULLS LAST, id LIMIT 7").fetchall()]
assert [r["id"] for r in out("top.csv")] == top, (out("top.csv"), top)
order = [str(r[0]) for r in db.sql("SELECT id FROM t ORDER BY country, qty DESC NULLS LAST, id").fetchall()]
assert [r["id"] for r in out("sorted.csv")] == order
want = db.sql("SELECT country, count(*), sum(qty), min(amount), min(qty), max(amount), max(qty) FROM t GROUP BY country ORDER BY country").fetchall()
got = out("agg.csv")
assert len(got) == len(want), (got, want)
for g, w in zip(got, want):
    assert g["country"] == w[0] and int(g["count"]) == w[1] and int(g["sum_qty"]) == w[2], (g, w)
    assert float(g["min_amount"]) == w[3] and int(g["min_qty"]) == w[4], (g, w)
    assert float(g["max_amount"]) == w[5] and int(g["max_qty"]) == w[6], (g, w)
print("ok")
"#,
    );
}

#[test]
fn sample_and_hash_follow_their_documented_digests() {
    let s = Scratch::new();
    events(&s);
    let select = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\", \"country\"] }\n";
    let sample = format!("{select}[[stage]]\nfunction = \"sample\"\nparams = {{ fraction = 0.3, seed = 5 }}");
    for (chunk, out) in [("1KiB", "sample-a.csv"), ("64KiB", "sample-b.csv")] {
        let input = format!("path = \"data.csv\"\nchunk_size = \"{chunk}\"");
        run_job(&s, &job(&input, &sample, &format!("path = \"{out}\"")), &[]).expect(0);
    }
    let hash =
        format!("{select}[[stage]]\nfunction = \"hash\"\nparams = {{ columns = [\"id\", \"country\"], name = \"h\" }}");
    run_job(&s, &job("path = \"data.csv\"\nchunk_size = \"2KiB\"", &hash, "path = \"hash.csv\""), &[]).expect(0);
    python(
        &s,
        r#"
import csv, hashlib
rows = list(csv.DictReader(open("data.csv", newline="")))
out = lambda p: list(csv.DictReader(open(p, newline="")))
def text(r):
    return (r["id"] + "\x1f" + r["country"] + "\x1f").encode()
def keep(r):
    d = hashlib.sha256((5).to_bytes(8, "little", signed=True) + text(r)).digest()
    return (int.from_bytes(d[:8], "little") >> 11) / float(1 << 53) < 0.3
want = [(r["id"], r["country"]) for r in rows if keep(r)]
for p in ["sample-a.csv", "sample-b.csv"]:
    assert [(r["id"], r["country"]) for r in out(p)] == want, p
assert 0.25 < len(want) / len(rows) < 0.35
assert [r["h"] for r in out("hash.csv")] == [hashlib.sha256(text(r)).hexdigest() for r in rows]
print("ok")
"#,
    );
}

#[test]
fn burn_and_sleep_take_their_time_and_pass_records_through() {
    let s = Scratch::new();
    s.write("in.txt", (0..12).map(|i| format!("line {i}\n")).collect::<String>());
    let input = "path = \"in.txt\"\nchunk_size = 1";
    for function in ["burn", "sleep"] {
        let stages = format!("[[stage]]\nfunction = \"{function}\"\nparams = {{ ms = 3 }}");
        let dir = format!("rd-{function}");
        run_job(&s, &job(input, &stages, &format!("path = \"{function}.csv\"")), &["--run-dir", &dir]).expect(0);
        let want: String =
            std::iter::once("line\n".to_string()).chain((0..12).map(|i| format!("line {i}\n"))).collect();
        assert_eq!(std::fs::read_to_string(s.path(&format!("{function}.csv"))).unwrap(), want);
        let records = s.records(&dir);
        assert_eq!(records.lines().count(), 12);
        for r in records.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()) {
            let took = r["finished_us"].as_u64().unwrap() - r["started_us"].as_u64().unwrap();
            assert!(took >= 3000, "{function}: an invocation of {took} µs: {r}");
        }
    }
}

#[test]
fn parquet_and_arrow_outputs_and_their_manifests() {
    require_python(&["pyarrow", "xxhash"]);
    let s = Scratch::new();
    events(&s);
    let input = "path = \"data.csv\"\nchunk_size = \"4KiB\"";
    let stages = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\", \"country\", \"amount\", \"note\"] }";
    for out in ["out.parquet", "out.arrow"] {
        run_job(&s, &job(input, stages, &format!("path = \"{out}\"")), &[]).expect(0);
    }
    python(
        &s,
        r#"
import csv, json, os, xxhash
import pyarrow.parquet as pq, pyarrow.ipc as ipc
rows = list(csv.DictReader(open("data.csv", newline="")))
want = [(int(r["id"]), r["country"], float(r["amount"]) if r["amount"] else None, r["note"]) for r in rows]
tables = {"out.parquet": pq.read_table("out.parquet"), "out.arrow": ipc.open_file("out.arrow").read_all()}
for path, t in tables.items():
    assert t.column_names == ["id", "country", "amount", "note"], t.schema
    got = list(zip(*(t.column(c).to_pylist() for c in t.column_names)))
    assert got == want, path
    m = json.load(open(path + ".manifest.json"))
    o = m["output"]
    assert o["rows"] == len(want) and o["bytes"] == os.path.getsize(path), m
    assert o["xxh3"] == xxhash.xxh3_64_hexdigest(open(path, "rb").read()), m
    assert o["format"] == path.split(".")[1], m
print("ok")
"#,
    );
}

#[test]
fn parquet_and_arrow_outputs_keep_every_logical_type() {
    require_python(&["pyarrow", "duckdb"]);
    let s = Scratch::new();
    // A parquet input of the types the outputs must keep (written by
    // pyarrow); a jsonl input whose `v` holds values of several kinds (a
    // JSON text column); a csv whose timestamps are inferred in seconds.
    python(
        &s,
        r#"
import datetime as dt, decimal, json, pyarrow as pa, pyarrow.parquet as pq
n = 50
base = dt.datetime(2024, 2, 9, 9, 41, 59)
pq.write_table(pa.table({
    "id": pa.array(range(n), pa.int64()),
    "ts_ms_utc": pa.array([base + dt.timedelta(milliseconds=i) for i in range(n)], pa.timestamp("ms", tz="UTC")),
    "ts_us_paris": pa.array([base + dt.timedelta(microseconds=i) for i in range(n)], pa.timestamp("us", tz="Europe/Paris")),
    "ts_ns": pa.array([base + dt.timedelta(microseconds=3 * i) for i in range(n)], pa.timestamp("ns")),
    "day": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n)], pa.date32()),
    "price": pa.array([decimal.Decimal(f"{i}.{i % 100:02d}") for i in range(n)], pa.decimal128(10, 2)),
    "at": pa.array([dt.time(9, 30, i % 60, 1000 * i) for i in range(n)], pa.time32("ms")),
}), "typed.parquet")
with open("mixed.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"id": i, "v": [i, f"x{i}", {"a": i}, [i]][i % 4]}) + "\n")
with open("times.csv", "w") as f:
    f.write("id,ts\n" + "".join(f"{i},2024-02-09T09:41:{i % 60:02d}\n" for i in range(n)))
print("ok")
"#,
    );
    for input in ["typed.parquet", "mixed.jsonl", "times.csv"] {
        let stem = input.split('.').next().unwrap();
        for format in ["parquet", "arrow"] {
            let j = job(&format!("path = \"{input}\""), "", &format!("path = \"{stem}.out.{format}\""));
            run_job(&s, &j, &[]).expect(0);
        }
    }
    // A named zone in text outputs: each time with its offset; and in the
    // preview a run prints.
    for format in ["csv", "jsonl"] {
        let j = job("path = \"typed.parquet\"", "", &format!("path = \"typed.out.{format}\""));
        run_job(&s, &j, &[]).expect(0);
        let text = std::fs::read_to_string(s.path(&format!("typed.out.{format}"))).unwrap();
        assert!(text.contains("2024-02-09T10:41:59+01:00"), "{format}: {text}");
    }
    s.write("job.toml", job("path = \"typed.parquet\"", "", "path = \"typed.out.parquet\""));
    let shown = s.run(&["run", "job.toml", "--progress", "never", "--show", "2"]).expect(0).stdout;
    assert!(shown.contains("2024-02-09T10:41:59+01:00"), "{shown}");
    s.run(&["datasets", "gen", "parquet", "--rows", "100", "--out", "gen.parquet"]).expect(0);
    python(
        &s,
        r#"
import datetime as dt, json, duckdb, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc
def arrow(path):
    with pa.memory_map(path) as m:
        return ipc.open_file(m).read_all()
def duck_types(path):
    return {r[0]: r[1] for r in duckdb.sql(f"describe select * from '{path}'").fetchall()}
# Every type as it was, in both formats, and the same values.
src = pq.read_table("typed.parquet")
for got in [pq.read_table("typed.out.parquet"), arrow("typed.out.arrow")]:
    assert got.schema.remove_metadata() == src.schema.remove_metadata(), (got.schema, src.schema)
    assert got.to_pylist() == src.to_pylist()
assert duck_types("typed.out.parquet") == {
    "id": "BIGINT", "ts_ms_utc": "TIMESTAMP WITH TIME ZONE", "ts_us_paris": "TIMESTAMP WITH TIME ZONE",
    "ts_ns": "TIMESTAMP_NS", "day": "DATE", "price": "DECIMAL(10,2)", "at": "TIME",
}, duck_types("typed.out.parquet")
meta = pq.ParquetFile("typed.out.parquet").metadata.metadata
assert b"ARROW:schema" in meta, meta
# Seconds: kept in Arrow; in milliseconds in parquet, which has no unit of
# seconds; the same instants either way.
want = [dt.datetime(2024, 2, 9, 9, 41, i % 60) for i in range(50)]
p, a = pq.read_table("times.out.parquet"), arrow("times.out.arrow")
assert p.schema.field("ts").type == pa.timestamp("ms"), p.schema
assert a.schema.field("ts").type == pa.timestamp("s"), a.schema
assert p.column("ts").to_pylist() == want and a.column("ts").to_pylist() == want
assert duck_types("times.out.parquet")["ts"] == "TIMESTAMP"
assert [r[0] for r in duckdb.sql("select ts from 'times.out.parquet' order by id").fetchall()] == want
# JSON text: annotated JSON in parquet (DuckDB reads JSON), the arrow.json
# extension in both, each value the JSON it was.
values = [json.dumps([i, f"x{i}", {"a": i}, [i]][i % 4], separators=(",", ":")) for i in range(50)]
for got in [pq.read_table("mixed.out.parquet"), arrow("mixed.out.arrow")]:
    field = got.schema.field("v")
    assert str(field.type) == "extension<arrow.json>", field
    assert got.column("v").to_pylist() == values
assert duck_types("mixed.out.parquet")["v"] == "JSON"
assert duckdb.sql("select v->>'a' from 'mixed.out.parquet' where id = 2").fetchall() == [("2",)]
# The generator's timestamps too.
g = pq.read_table("gen.parquet")
assert g.schema.field("ts").type == pa.timestamp("ms"), g.schema
assert duck_types("gen.parquet")["ts"] == "TIMESTAMP"
print("ok")
"#,
    );
}

#[test]
fn csv_dialects_are_read_as_python_reads_them() {
    let s = Scratch::new();
    // Semicolons, single quotes, a backslash escape, no header; quoted
    // fields hold the delimiter, the quote and a newline.
    python(
        &s,
        r#"
import csv, random
r = random.Random(3)
with open("data.txt", "w", newline="") as f:
    # Text quoted, numbers not: the escape is used inside quotes, as the
    # dialect fanout reads (input.escape) has it.
    w = csv.writer(f, delimiter=";", quotechar="'", escapechar="\\", doublequote=False, quoting=csv.QUOTE_NONNUMERIC)
    for i in range(3000):
        w.writerow([i, r.choice(["a;b", "it's", "plain", "two\nlines", "x"]), r.randint(0, 9)])
print("ok")
"#,
    );
    let input = "path = \"data.txt\"\nformat = \"csv\"\nchunk_size = \"1KiB\"\nheader = false\n\
                 delimiter = \";\"\nquote = \"'\"\nescape = \"\\\\\"";
    let stages = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"column_1 as id\", \"column_2 as text\", \"column_3 as n\"] }";
    run_job(&s, &job(input, stages, "path = \"out.csv\""), &[]).expect(0);
    python(
        &s,
        r#"
import csv
src = list(csv.reader(open("data.txt", newline=""), delimiter=";", quotechar="'", escapechar="\\", doublequote=False))
out = list(csv.reader(open("out.csv", newline="")))
assert out[0] == ["id", "text", "n"], out[0]
assert out[1:] == src, [(a, b) for a, b in zip(out[1:], src) if a != b][:3]
print("ok")
"#,
    );
}

#[test]
fn a_parquet_input_with_many_row_groups() {
    require_python(&["pyarrow"]);
    let s = Scratch::new();
    python(
        &s,
        r#"
import pyarrow as pa, pyarrow.parquet as pq
n = 30000
t = pa.table({"id": list(range(n)), "key": ["k%d" % (i * 7 % 13) for i in range(n)], "v": [i % 101 for i in range(n)]})
pq.write_table(t, "in.parquet", row_group_size=700)
assert pq.ParquetFile("in.parquet").num_row_groups == 43
print("ok")
"#,
    );
    // Small chunks: a split per row group or two.
    let input = "path = \"in.parquet\"\nchunk_size = \"8KiB\"";
    let stages = "[[stage]]\nfunction = \"aggregate\"\nkey = [\"key\"]\nparams = { count = true, sum = [\"v\"] }";
    let r = run_job(&s, &job(input, stages, "path = \"agg.csv\"\nsort = [\"key\"]"), &["--json"]).expect(0);
    let sum: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(sum["input"]["splits"].as_u64().unwrap() >= 10, "{sum}");
    let stages = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\"] }";
    run_job(&s, &job(input, stages, "path = \"ids.csv\""), &[]).expect(0);
    python(
        &s,
        r#"
import csv, pyarrow.parquet as pq
t = pq.read_table("in.parquet").to_pydict()
want = {}
for k, v in zip(t["key"], t["v"]):
    c, s = want.get(k, (0, 0))
    want[k] = (c + 1, s + v)
got = {r["key"]: (int(r["count"]), int(r["sum_v"])) for r in csv.DictReader(open("agg.csv"))}
assert got == want, (got, want)
assert [int(r["id"]) for r in csv.DictReader(open("ids.csv"))] == t["id"]
print("ok")
"#,
    );
}

#[test]
fn lambda_functions_read_csv_parquet_and_arrow_splits_themselves() {
    require_python(&["pyarrow"]);
    let s = Scratch::new();
    events(&s);
    python(
        &s,
        r#"
import csv, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc
rows = list(csv.DictReader(open("data.csv", newline="")))
t = pa.table({"id": [int(r["id"]) for r in rows], "country": [r["country"] for r in rows]})
pq.write_table(t, "data.parquet", row_group_size=400)
with ipc.new_file("data.arrow", t.schema) as w:
    for b in t.to_batches(max_chunksize=300):
        w.write_batch(b)
print("ok")
"#,
    );
    for (path, chunk) in [("data.csv", "4KiB"), ("data.parquet", "4KiB"), ("data.arrow", "4KiB")] {
        let job = format!(
            r#"
[input]
path = "{path}"
chunk_size = "{chunk}"
[[stage]]
name = "read"
function = {{ lambda = ["python3", "{}"], handler = "handlers.read_split", event = "split", schema = ["rows:int64", "ids:int64"] }}
[[stage]]
name = "total"
function = "aggregate"
key = []
params = {{ count = true, sum = ["rows", "ids"] }}
[output]
path = "out.csv"
mode = "overwrite"
[platform]
concurrency = 2
"#,
            root().join("tests/fixtures/lambda/bootstrap.py").display()
        );
        let r = run_job(&s, &job, &["--json"]).expect(0);
        let sum: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let splits = sum["input"]["splits"].as_u64().unwrap();
        assert!(splits >= 5, "{path}: {splits} splits");
        // Every record read once, by some function: 5,000 rows whose ids
        // sum to 0 + 1 + ... + 4999, one answer per split.
        let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
        assert_eq!(out, format!("count,sum_rows,sum_ids\n{splits},5000,{}\n", 4999 * 5000 / 2), "{path}");
    }
}

#[test]
fn two_keyed_stages_and_a_map_after_a_reduce() {
    let s = Scratch::new();
    s.run(&["datasets", "gen", "text", "--size", "64KiB", "--out", "in.txt"]).expect(0);
    // Words counted, renamed by a map stage after the reduce, then how many
    // words have each count.
    let stages = r#"
[[stage]]
function = "word_count"
[[stage]]
name = "total"
function = "aggregate"
key = ["word"]
partitions = 3
params = { sum = ["count"] }
[[stage]]
function = "select"
params = { columns = ["word", "sum_count as n"] }
[[stage]]
name = "histogram"
function = "aggregate"
key = ["n"]
partitions = 2
params = { count = true }
"#;
    run_job(&s, &job("path = \"in.txt\"\nchunk_size = \"4KiB\"", stages, "path = \"out.csv\"\nsort = [\"n\"]"), &[])
        .expect(0);
    python(
        &s,
        r#"
import collections, csv
words = collections.Counter(open("in.txt").read().split())
hist = collections.Counter(words.values())
got = [(int(r["n"]), int(r["count"])) for r in csv.DictReader(open("out.csv"))]
assert got == sorted(hist.items()), (got[:5], sorted(hist.items())[:5])
print("ok")
"#,
    );
}

#[test]
fn sorted_output_breaks_ties_by_input_order_past_the_compaction_threshold() {
    let s = Scratch::new();
    python(
        &s,
        r#"
with open("in.csv", "w") as f:
    f.write("id,k\n")
    for i in range(200000):
        f.write("%d,%d\n" % (i, (i * 7919) % 5))
print("ok")
"#,
    );
    let input = "path = \"in.csv\"\nchunk_size = \"64KiB\"";
    let stages = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\", \"k\"] }";
    // Many ties (5 keys), a limit past the 65,536 rows the gather holds
    // before it compacts, and descending.
    let out = "path = \"sorted.csv\"\nsort = [\"-k\"]\nlimit = 100000";
    run_job(&s, &job(input, stages, out), &[]).expect(0);
    // A limit without a sort: the first rows in input order.
    run_job(&s, &job(input, stages, "path = \"first.csv\"\nlimit = 70000"), &[]).expect(0);
    python(
        &s,
        r#"
import csv
rows = [(int(r["id"]), int(r["k"])) for r in csv.DictReader(open("in.csv"))]
want = sorted(rows, key=lambda r: -r[1])[:100000]  # stable: ties in input order
got = [(int(r["id"]), int(r["k"])) for r in csv.DictReader(open("sorted.csv"))]
assert got == want, [(a, b) for a, b in zip(got, want) if a != b][:3]
first = [(int(r["id"]), int(r["k"])) for r in csv.DictReader(open("first.csv"))]
assert first == rows[:70000]
print("ok")
"#,
    );
}
