//! Messy real-world data.
//!
//! Bad input records under `on_bad_record`: for every format, files with
//! bad records at chosen places (made by a Python script that knows each
//! record's line, byte and whether it is good) are read at chunk sizes
//! down to 1 KiB and at several concurrencies; the output must be exactly
//! the good records, in order, the summary must count the bad ones, and
//! the rejects file must list each bad record once, with its file, line,
//! byte and raw text.
//!
//! JSON lines whose fields change type between records (package
//! manifests): group-bys and `json_extract` against Python's json module.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{Run, Scratch, journaled, python, summary};

/// Writes `bad.txt`, `bad.csv`, `bad.jsonl`, `bad.parquet`, `bad.arrow`
/// and `expect.json`: per format, the good records (as the jsonl output
/// writes them) and the bad ones (line, byte, raw text; or range and
/// records for a parquet row group or Arrow batch).
fn inputs(s: &Scratch) {
    python(
        s,
        r#"
import json, random
r = random.Random(3)
expect = {}

def emit(name, records, header=b"", write=True):
    """records: (bytes, good value or None). Writes the file; returns the
    expectation: good values, and the bad records' line, byte and raw."""
    data, line, byte = bytearray(header), 1 + header.count(b"\n"), len(header)
    good, bad = [], []
    for raw, value in records:
        if value is None:
            bad.append({"line": line, "byte": byte, "raw": raw.decode("utf-8", "backslashreplace")})
        elif value != "blank":
            good.append(value)
        data += raw
        line += raw.count(b"\n")
        byte += len(raw)
    if write:
        open(name, "wb").write(data)
    return {"good": good, "bad": bad}

def word():
    return "".join(r.choice("abcdefgh") for _ in range(r.randint(1, 12)))

# text: invalid UTF-8 lines, one longer than the smallest chunk, one at the
# very start and one at the end without a newline.
recs = []
for i in range(1500):
    if i in (0, 7, 500, 501, 1203):
        recs.append((("bad %d " % i).encode() + b"\xff\xfe" + word().encode() + b"\n", None))
    elif i == 900:
        recs.append((b"long \xc3" + b"y" * 3000 + b"\n", None))
    else:
        t = "%d %s é" % (i, word())
        recs.append(((t + "\n").encode(), {"line": t}))
recs.append((b"last \xff", None))
expect["text"] = emit("bad.txt", recs)

# csv (schema given): wrong field counts, values that do not parse in the
# columns read, invalid UTF-8, and quoted newlines in good and bad records.
recs = []
for i in range(1200):
    name, amount = word(), round(r.random() * 100, 2)
    if i in (3, 400):
        recs.append((b"%d,%s\n" % (i, name.encode()), None))                  # too few fields
    elif i == 401:
        recs.append((b"%d,%s,1.5,n,extra\n" % (i, name.encode()), None))      # too many
    elif i in (650, 1199):
        recs.append((b"%d,%s,abc,n\n" % (i, name.encode()), None))            # amount not a number
    elif i == 700:
        recs.append((b"zz,%s,2.0,n\n" % name.encode(), None))                 # id not a number
    elif i == 800:
        recs.append((b'%d,"bro\nken",notanumber,"x\ny"\n' % i, None))         # bad, over 3 lines
    elif i == 950:
        recs.append((b"%d,caf\xe9,2.0,n\n" % i, None))                        # invalid UTF-8
    elif i % 97 == 5:
        v = {"id": i, "name": name, "amount": amount, "note": "multi\nline"}
        recs.append((b'%d,%s,%s,"multi\nline"\n' % (i, name.encode(), repr(amount).encode()), v))
    elif i % 50 == 9:
        recs.append((b"%d,%s,,plain\n" % (i, name.encode()), {"id": i, "name": name, "note": "plain"}))
    else:
        v = {"id": i, "name": name, "amount": amount, "note": "n"}
        recs.append((b"%d,%s,%s,n\n" % (i, name.encode(), repr(amount).encode()), v))
expect["csv"] = emit("bad.csv", recs, header=b"id,name,amount,note\n")
# Read for id and name alone: a value that does not parse in `amount` is
# not seen; wrong field counts and bad ids or names still are.
def id_name(raw, value):
    if value is not None:
        return {"id": value["id"], "name": value["name"]}
    fields = raw.split(b",")
    if raw.startswith(b"800,"):
        return {"id": 800, "name": "bro\nken"}
    if len(fields) == 4 and fields[0].isdigit() and fields[2] == b"abc":
        return {"id": int(fields[0]), "name": fields[1].decode()}
    return None
projected = [(raw, id_name(raw, value)) for raw, value in recs]
expect["csv_id_name"] = emit("bad.csv", projected, header=b"id,name,amount,note\n", write=False)

# jsonl (schema given): truncated, not JSON, not an object, a value of the
# wrong type, invalid UTF-8; blank lines are not records.
recs = []
for i in range(1200):
    v = {"id": i, "name": word(), "amount": round(r.random() * 10, 3)}
    if i == 2:
        recs.append((b'{"id": 2, "name": "cut"\n', None))
    elif i == 300:
        recs.append((b"not json at all\n", None))
    elif i == 301:
        recs.append((b"[1, 2, 3]\n", None))
    elif i in (640, 1100):
        recs.append((b'{"id": "abc", "name": "x", "amount": 1.0}\n', None))
    elif i == 900:
        recs.append((b'{"id": 900, "name": "caf\xe9"}\n', None))
    elif i % 111 == 4:
        recs.append((b"\n", "blank"))
    else:
        recs.append(((json.dumps(v) + "\n").encode(), v))
expect["jsonl"] = emit("bad.jsonl", recs)

# parquet: 16 row groups of 250 rows, uncompressed; the page headers of
# row groups 3 and 11 zeroed.
import pyarrow as pa, pyarrow.parquet as pq
n = 4000
t = pa.table({"id": list(range(n)), "name": ["n%d" % (i % 37) for i in range(n)]})
pq.write_table(t, "bad.parquet", row_group_size=250, compression="NONE", use_dictionary=False)
meta = pq.ParquetFile("bad.parquet").metadata
data = bytearray(open("bad.parquet", "rb").read())
good, bad = [], []
for g in range(meta.num_row_groups):
    rg = meta.row_group(g)
    start = min(rg.column(c).data_page_offset for c in range(rg.num_columns))
    if g in (3, 11):
        off = rg.column(0).data_page_offset
        data[off:off + 16] = bytes(16)
        bad.append({"range": "row group %d" % g, "byte": start, "records": rg.num_rows})
first = 0
for g in range(meta.num_row_groups):
    rows = meta.row_group(g).num_rows
    if g not in (3, 11):
        good += [{"id": i, "name": "n%d" % (i % 37)} for i in range(first, first + rows)]
    first += rows
open("bad.parquet", "wb").write(data)
expect["parquet"] = {"good": good, "bad": bad}

# arrow: 10 batches of 300 rows; the metadata of batch 4 zeroed.
sink = pa.OSFile("bad.arrow", "wb")
schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
w = pa.ipc.new_file(sink, schema)
offsets, good = [], []
for b in range(10):
    ids = list(range(b * 300, b * 300 + 300))
    offsets.append(sink.tell())
    w.write_batch(pa.record_batch([pa.array(ids), pa.array(["n%d" % (i % 37) for i in ids])], schema=schema))
    if b != 4:
        good += [{"id": i, "name": "n%d" % (i % 37)} for i in ids]
w.close()
sink.close()
data = bytearray(open("bad.arrow", "rb").read())
data[offsets[4] + 8:offsets[4] + 24] = bytes(16)
open("bad.arrow", "wb").write(data)
expect["arrow"] = {"good": good, "bad": [{"range": "batch 4", "byte": offsets[4], "records": 1}]}

json.dump(expect, open("expect.json", "w"))
print("ok")
"#,
    );
}

/// Format `fmt`'s bad file.
fn file(fmt: &str) -> String {
    format!("bad.{}", if fmt == "text" { "txt" } else { fmt })
}

/// The `[input]` table for format `fmt`'s bad file.
fn input(fmt: &str, chunk: &str, policy: &str) -> String {
    let schema = match fmt {
        "csv" => "\nschema = [\"id:int64\", \"name:utf8\", \"amount:float64\", \"note:utf8\"]",
        "jsonl" => "\nschema = [\"id:int64\", \"name:utf8\", \"amount:float64\"]",
        _ => "",
    };
    format!("path = \"{}\"\nchunk_size = \"{chunk}\"\non_bad_record = \"{policy}\"{schema}", file(fmt))
}

/// Runs a job over format `fmt`'s bad file with `extra` input settings,
/// writing `out`.
fn run(s: &Scratch, fmt: &str, input: &str, out: &str, concurrency: usize, args: &[&str]) -> Run {
    let job = format!(
        "[input]\n{input}\n[output]\npath = \"{out}\"\nmode = \"overwrite\"\n[platform]\nconcurrency = {concurrency}\n"
    );
    let name = format!("job-{fmt}.toml");
    s.write(&name, job);
    let mut all = vec!["run", name.as_str(), "--progress", "never", "--show", "0", "--json"];
    all.extend_from_slice(args);
    s.run(&all)
}

/// The JSON lines of a file.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The rejects of a run: per (line or range, byte), the line.
fn rejects(s: &Scratch, sum: &Value) -> BTreeMap<(String, u64), Value> {
    let path = sum["input"]["rejects"].as_str().expect("a rejects file");
    let mut out = BTreeMap::new();
    for line in json_lines(&std::fs::read_to_string(s.path(path)).unwrap()) {
        let at = match line.get("range") {
            Some(r) => r.as_str().unwrap().to_string(),
            None => format!("line {}", line["line"]),
        };
        let key = (at, line["byte"].as_u64().unwrap());
        assert!(out.insert(key.clone(), line).is_none(), "{key:?} listed twice");
    }
    out
}

#[test]
fn skipped_and_rejected_records_at_every_chunk_size_and_concurrency() {
    let s = Scratch::new();
    inputs(&s);
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(s.path("expect.json")).unwrap()).unwrap();
    for fmt in ["text", "csv", "jsonl", "parquet", "arrow"] {
        let want = &expect[fmt];
        let good = want["good"].as_array().unwrap();
        let bad = want["bad"].as_array().unwrap();
        let bad_records: u64 = bad.iter().map(|b| b.get("records").and_then(Value::as_u64).unwrap_or(1)).sum();
        for chunk in ["1KiB", "3KiB", "1MiB"] {
            for concurrency in [1, 4] {
                for policy in ["skip", "reject"] {
                    let at = format!("{fmt} chunk {chunk} concurrency {concurrency} {policy}");
                    let out = format!("out-{fmt}.jsonl");
                    let r = run(&s, fmt, &input(fmt, chunk, policy), &out, concurrency, &[]).expect(0);
                    let sum = summary(&r);
                    let got = json_lines(&std::fs::read_to_string(s.path(&out)).unwrap());
                    assert_eq!(got.len(), good.len(), "{at}: rows");
                    assert!(got.iter().eq(good.iter()), "{at}: the output is not the good records in order");
                    assert_eq!(sum["input"]["records"].as_u64(), Some(good.len() as u64), "{at}: {sum}");
                    let (counted, other) =
                        if policy == "skip" { ("skipped", "rejected") } else { ("rejected", "skipped") };
                    assert_eq!(sum["input"][counted].as_u64(), Some(bad_records), "{at}: {sum}");
                    assert_eq!(sum["input"][other].as_u64(), Some(0), "{at}: {sum}");
                    if policy == "skip" {
                        assert!(sum["input"].get("rejects").is_none(), "{at}: {sum}");
                        continue;
                    }
                    let listed = rejects(&s, &sum);
                    assert_eq!(listed.len(), bad.len(), "{at}: {listed:?}");
                    for b in bad {
                        let key = match b.get("range") {
                            Some(r) => r.as_str().unwrap().to_string(),
                            None => format!("line {}", b["line"]),
                        };
                        let line = listed
                            .get(&(key.clone(), b["byte"].as_u64().unwrap()))
                            .unwrap_or_else(|| panic!("{at}: {key} byte {} is not listed: {listed:?}", b["byte"]));
                        assert_eq!(line["file"], file(fmt), "{at}");
                        assert!(!line["error"].as_str().unwrap().is_empty(), "{at}");
                        match b.get("raw") {
                            Some(raw) => assert_eq!(&line["raw"], raw, "{at}: {key}"),
                            None => assert_eq!(line["records"], b["records"], "{at}: {key}"),
                        }
                    }
                    // The manifest beside the output points to the rejects.
                    let manifest: Value = serde_json::from_str(
                        &std::fs::read_to_string(s.path(&format!("{out}.manifest.json"))).unwrap(),
                    )
                    .unwrap();
                    assert_eq!(manifest["rejects"]["path"], sum["input"]["rejects"], "{at}");
                    assert_eq!(manifest["rejects"]["records"].as_u64(), Some(bad_records), "{at}");
                }
            }
        }
    }
}

#[test]
fn bad_records_past_max_bad_records_fail_the_job_and_fail_is_unchanged() {
    let s = Scratch::new();
    inputs(&s);
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(s.path("expect.json")).unwrap()).unwrap();
    for fmt in ["text", "csv", "jsonl"] {
        let bad = expect[fmt]["bad"].as_array().unwrap().len();
        let good = expect[fmt]["good"].as_array().unwrap().len();
        let out = format!("out-{fmt}.jsonl");
        for policy in ["skip", "reject"] {
            let base = input(fmt, "2KiB", policy);
            // At the limit: fine. One past it: exit 1, naming the count.
            let at_limit = format!("{base}\nmax_bad_records = {bad}");
            run(&s, fmt, &at_limit, &out, 3, &[]).expect(0);
            let _ = std::fs::remove_file(s.path(&out));
            let past = format!("{base}\nmax_bad_records = {}", bad - 1);
            let r = run(&s, fmt, &past, &out, 3, &[]).expect(1);
            assert!(r.stderr.contains(&format!("more than max_bad_records = {}", bad - 1)), "{fmt}: {}", r.stderr);
            assert!(r.stderr.contains(&format!("{}: line ", file(fmt))), "{fmt}: the last bad record: {}", r.stderr);
            assert!(!s.path(&out).exists(), "{fmt}: a failed job wrote its output");
            // A percentage, checked once the input is read.
            let share = bad as f64 * 100.0 / (bad + good) as f64;
            let above = format!("{base}\nmax_bad_records = \"{:.3}%\"", share * 1.01);
            run(&s, fmt, &above, &out, 3, &[]).expect(0);
            let _ = std::fs::remove_file(s.path(&out));
            let below = format!("{base}\nmax_bad_records = \"{:.3}%\"", share * 0.99);
            let r = run(&s, fmt, &below, &out, 3, &[]).expect(1);
            assert!(r.stderr.contains("more than max_bad_records = "), "{fmt}: {}", r.stderr);
            assert!(!s.path(&out).exists(), "{fmt}: a failed job wrote its output");
        }
        // The default, and `fail`: the first bad record fails the job,
        // named by file and line.
        let first = &expect[fmt]["bad"][0];
        for base in [format!("path = \"{}\"\nchunk_size = \"2KiB\"", file(fmt)), input(fmt, "2KiB", "fail")] {
            let r = run(&s, fmt, &base, &out, 1, &[]).expect(1);
            let named = format!("{}: line {}", file(fmt), first["line"]);
            if fmt != "csv" {
                // csv without a schema infers `amount` as text; its first
                // bad record is the first with the wrong field count.
                assert!(r.stderr.contains(&named), "{fmt}: {named}: {}", r.stderr);
            }
            assert!(!s.path(&out).exists(), "{fmt}: a failed job wrote its output");
        }
    }
    // max_bad_records needs skip or reject.
    let r = run(&s, "text", "path = \"bad.txt\"\nmax_bad_records = 3", "o.jsonl", 1, &[]).expect(2);
    assert!(r.stderr.contains("max_bad_records applies when on_bad_record is"), "{}", r.stderr);
}

#[test]
fn lossy_text_replaces_invalid_bytes_instead() {
    let s = Scratch::new();
    s.write("in.txt", b"ok\nbad \xff here\nlast \xc3");
    let input = "path = \"in.txt\"\nchunk_size = \"4B\"\nencoding = \"utf-8-lossy\"";
    let r = run(&s, "text", input, "out.jsonl", 2, &[]).expect(0);
    let lines: Vec<String> = json_lines(&std::fs::read_to_string(s.path("out.jsonl")).unwrap())
        .iter()
        .map(|v| v["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines, ["ok", "bad \u{fffd} here", "last \u{fffd}"]);
    assert_eq!(summary(&r)["input"]["skipped"].as_u64(), Some(0));
    let r = run(&s, "csv", "path = \"in.txt\"\nformat = \"csv\"\nencoding = \"utf-8-lossy\"", "o.jsonl", 1, &[]);
    assert!(r.expect(2).stderr.contains("input.encoding applies to text input only"));
}

#[test]
fn a_resumed_run_keeps_each_reject_once_on_every_preset() {
    let s = Scratch::new();
    inputs(&s);
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(s.path("expect.json")).unwrap()).unwrap();
    let bad = expect["csv"]["bad"].as_array().unwrap().len();
    let good = expect["csv"]["good"].as_array().unwrap();
    // A stage for chaos to fail and slow down, passing records through.
    let stage = "[[stage]]\nfunction = \"sleep\"\nparams = { ms = 5 }";
    let input = format!("{}\n{stage}", input("csv", "1KiB", "reject"));
    for preset in crate::faults::PRESETS {
        let dir = format!("rd-{preset}");
        // Tasks fail under chaos and are not retried: the run fails part
        // way, with some tasks journaled and their rejects written.
        let set = format!("platform.preset={preset}");
        let chaos = ["--run-dir", &dir, "--chaos", "fail=0.04,seed=2", "--set", "platform.retries=0"];
        let mut args = chaos.to_vec();
        args.extend(["--set", &set]);
        let first = run(&s, "csv", &input, "out.jsonl", 2, &args).expect(1);
        assert!(!journaled(&s.path(&dir)).is_empty(), "{preset}: nothing journaled: {}", first.stderr);
        let r = s.run_within(120, &["run", "--resume", &dir, "--progress", "never", "--show", "0", "--json"]);
        let sum = summary(&r.expect(0));
        assert!(sum["resumed_tasks"].as_u64().unwrap() > 0, "{preset}: {sum}");
        assert_eq!(sum["input"]["rejected"].as_u64(), Some(bad as u64), "{preset}: {sum}");
        // Each bad record listed once (`rejects` fails on a duplicate).
        assert_eq!(rejects(&s, &sum).len(), bad, "{preset}");
        let got = json_lines(&std::fs::read_to_string(s.path("out.jsonl")).unwrap());
        assert!(got.iter().eq(good.iter()), "{preset}: the resumed output is not the good records in order");
        if preset == "local" {
            continue;
        }
        // Stragglers alone: their backups read the same splits again.
        let args = ["--chaos", "straggle=0.2x20,seed=2", "--set", &set];
        let sum = summary(&run(&s, "csv", &input, "out.jsonl", 2, &args).expect(0));
        assert!(sum["backup_tasks"].as_u64().unwrap() > 0, "{preset}: no backups: {sum}");
        assert_eq!(sum["input"]["rejected"].as_u64(), Some(bad as u64), "{preset}: {sum}");
        assert_eq!(rejects(&s, &sum).len(), bad, "{preset}");
    }
}

#[test]
fn compressed_files_report_lines_and_bytes_of_the_decompressed_stream() {
    let s = Scratch::new();
    inputs(&s);
    // gzip by Python's standard library, zstd by pyarrow (Arrow's codec).
    python(
        &s,
        "import gzip, pyarrow as pa\nfor f in ['bad.txt', 'bad.csv', 'bad.jsonl']:\n  data = open(f, 'rb').read()\n  open(f + '.gz', 'wb').write(gzip.compress(data))\n  with pa.CompressedOutputStream(f + '.zst', 'zstd') as z:\n    z.write(data)\nprint('ok')",
    );
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(s.path("expect.json")).unwrap()).unwrap();
    // Locally, and from object storage (moto's S3 server), where a
    // compressed object is one split, streamed once.
    let s3 = crate::storage::S3::start(&s);
    let mut names = Vec::new();
    for fmt in ["text", "csv", "jsonl"] {
        for ext in ["gz", "zst"] {
            names.push(format!("{}.{ext}", file(fmt)));
        }
    }
    s3.upload(&s, &names.iter().map(String::as_str).collect::<Vec<_>>());
    for fmt in ["text", "csv", "jsonl"] {
        for ext in ["gz", "zst"] {
            for remote in [false, true] {
                let name = format!("{}.{ext}", file(fmt));
                let at = if remote { format!("s3://data/{name}") } else { name.clone() };
                let input = input(fmt, "1KiB", "reject").replace(&format!("\"{}\"", file(fmt)), &format!("\"{at}\""));
                let r = if remote {
                    let job = format!(
                        "[input]\n{input}\n[output]\npath = \"out.jsonl\"\nmode = \"overwrite\"\n[platform]\nconcurrency = 2\n"
                    );
                    s.write("remote.toml", job);
                    let args = ["run", "remote.toml", "--progress", "never", "--show", "0", "--json"];
                    crate::util::run_with(s.dir.path(), &args, &s3.env())
                } else {
                    run(&s, fmt, &input, "out.jsonl", 2, &[])
                };
                let sum = summary(&r.expect(0));
                assert_eq!(sum["input"]["splits"], 1, "{at}: one split");
                let got = json_lines(&std::fs::read_to_string(s.path("out.jsonl")).unwrap());
                assert!(got.iter().eq(expect[fmt]["good"].as_array().unwrap().iter()), "{at}");
                let listed: Vec<(u64, u64)> = rejects(&s, &sum)
                    .values()
                    .map(|l| (l["line"].as_u64().unwrap(), l["byte"].as_u64().unwrap()))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let want: Vec<(u64, u64)> = expect[fmt]["bad"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| (b["line"].as_u64().unwrap(), b["byte"].as_u64().unwrap()))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                assert_eq!(listed, want, "{at}");
            }
        }
    }
}

/// Writes `pkgs.jsonl`: package manifests whose fields change type from
/// one record to the next, as npm's do (`license`, `repository`, `bin` a
/// string or an object or a list; `deps` an integer or a float; `author`
/// objects with different members).
fn manifests(s: &Scratch) {
    python(
        s,
        r#"
import json, random
r = random.Random(11)
with open("pkgs.jsonl", "w") as f:
    for i in range(3000):
        d = {"name": "pkg%d" % i, "kind": r.choice(["lib", "cli", "app", "tool"])}
        d["deps"] = r.randint(0, 40) if r.random() < 0.7 else r.randint(0, 400) / 8
        lic = r.choice(["MIT", "ISC", "Apache-2.0"])
        d["license"] = r.choice([lic, {"type": lic, "url": "https://x/" + lic}, [{"type": lic}], None])
        d["repository"] = r.choice(["github:u/p%d" % i, {"type": "git", "url": "git+https://g/p%d.git" % i}])
        if r.random() < 0.5:
            d["bin"] = r.choice(["./cli.js", {"p%d" % i: "./bin/p.js", "q": "./q.js"}])
        d["author"] = r.choice([{"name": "a"}, {"name": "b", "email": "b@x"}, {"url": "https://c"}])
        if d["license"] is None:
            del d["license"]
        f.write(json.dumps(d) + "\n")
print("ok")
"#,
    );
}

#[test]
fn json_whose_fields_change_type_matches_pythons_json_module() {
    let s = Scratch::new();
    manifests(&s);
    let job = |stages: &str, out: &str| {
        format!(
            "[input]\npath = \"pkgs.jsonl\"\nchunk_size = \"16KiB\"\n{stages}\n[output]\npath = \"{out}\"\nmode = \"overwrite\"\nsort = [\"key\"]\n"
        )
    };
    // A group-by on a plain field, summing a field of ints and floats.
    let by_kind = "[[stage]]\nfunction = \"aggregate\"\nkey = [\"kind\"]\nparams = { count = true, sum = [\"deps\"] }";
    s.write("kind.toml", job(by_kind, "kind.jsonl").replace("sort = [\"key\"]", "sort = [\"kind\"]"));
    s.run(&["run", "kind.toml", "--progress", "never", "--show", "0"]).expect(0);
    // A group-by on a mixed field: its values' JSON text.
    let by_license = "[[stage]]\nfunction = \"aggregate\"\nkey = [\"license\"]\nparams = { count = true }";
    s.write("license.toml", job(by_license, "license.jsonl").replace("sort = [\"key\"]", "sort = [\"license\"]"));
    s.run(&["run", "license.toml", "--progress", "never", "--show", "0"]).expect(0);
    // json_extract on a mixed field: members of its objects, null else.
    let extract = "[[stage]]\nfunction = \"json_extract\"\nparams = { column = \"repository\", fields = [\"type:utf8\", \"url:utf8\"] }";
    s.write("repo.toml", job(extract, "repo.jsonl").replace("sort = [\"key\"]\n", ""));
    s.run(&["run", "repo.toml", "--progress", "never", "--show", "0"]).expect(0);
    python(
        &s,
        r#"
import json
rows = [json.loads(l) for l in open("pkgs.jsonl")]
got = lambda p: [json.loads(l) for l in open(p)]
kinds = {}
for d in rows:
    c, t = kinds.get(d["kind"], (0, 0.0))
    kinds[d["kind"]] = (c + 1, t + d["deps"])
want = [{"kind": k, "count": c, "sum_deps": t} for k, (c, t) in sorted(kinds.items())]
have = got("kind.jsonl")
assert [(h["kind"], h["count"]) for h in have] == [(w["kind"], w["count"]) for w in want], (have, want)
assert all(abs(h["sum_deps"] - w["sum_deps"]) < 1e-6 for h, w in zip(have, want)), (have, want)
text = lambda v: json.dumps(v, separators=(",", ":"))
lic = {}
for d in rows:
    k = text(d["license"]) if "license" in d else None
    lic[k] = lic.get(k, 0) + 1
# The key is written out as the JSON it holds.
have = {text(h["license"]) if "license" in h else None: h["count"] for h in got("license.jsonl")}
assert have == lic, (have, lic)
want = [(d["repository"].get("type"), d["repository"].get("url")) if isinstance(d["repository"], dict) else (None, None) for d in rows]
have = [(h.get("type"), h.get("url")) for h in got("repo.jsonl")]
assert have == want, [(i, a, b) for i, (a, b) in enumerate(zip(have, want)) if a != b][:5]
print("ok")
"#,
    );
}

#[test]
fn a_fraction_in_an_integer_column_and_a_field_past_the_sample_are_bad_not_dropped() {
    let s = Scratch::new();
    // The sample (2 records) says `n` is an integer; a later 2.5 is not
    // cut to 2.
    s.write("n.jsonl", "{\"n\": 1}\n{\"n\": 3}\n{\"n\": 2.5}\n{\"n\": 7.0}\n");
    let input = "path = \"n.jsonl\"\ninfer_rows = 2";
    let r = run(&s, "jsonl", input, "o.jsonl", 1, &[]).expect(1);
    assert!(r.stderr.contains("n.jsonl: line 3"), "{}", r.stderr);
    assert!(r.stderr.contains("field `n` is a number with a fraction here, but int64 in the schema"), "{}", r.stderr);
    assert!(r.stderr.contains("`n:float64`"), "{}", r.stderr);
    let r = run(&s, "jsonl", &format!("{input}\non_bad_record = \"reject\""), "o.jsonl", 1, &[]).expect(0);
    assert_eq!(summary(&r)["input"]["rejected"].as_u64(), Some(1));
    assert_eq!(std::fs::read_to_string(s.path("o.jsonl")).unwrap(), "{\"n\":1}\n{\"n\":3}\n{\"n\":7}\n");
    // A field the inferred schema lacks (first seen in another file) is an
    // error naming it; a job that reads only other columns is not
    // concerned, and a schema given leaves it out on purpose.
    s.write("d/a.jsonl", "{\"zeta\": 1, \"alpha\": \"a\"}\n");
    s.write("d/b.jsonl", "{\"q\": 1, \"zeta\": 9, \"aa\": \"n\"}\n");
    let r = run(&s, "jsonl", "path = \"d/*.jsonl\"", "o.jsonl", 1, &[]).expect(1);
    assert!(r.stderr.contains("d/b.jsonl: line 1 (byte 0): field `q` is not in the schema"), "{}", r.stderr);
    let given = "path = \"d/*.jsonl\"\nschema = [\"zeta:int64\"]";
    run(&s, "jsonl", given, "o.jsonl", 1, &[]).expect(0);
    assert_eq!(std::fs::read_to_string(s.path("o.jsonl")).unwrap(), "{\"zeta\":1}\n{\"zeta\":9}\n");
}

#[test]
fn a_csv_value_that_does_not_parse_is_located_once() {
    let s = Scratch::new();
    s.write("c.csv", "n\n1\nabc\n");
    let r = run(&s, "csv", "path = \"c.csv\"\nschema = [\"n:int64\"]", "o.csv", 1, &[]).expect(1);
    // The file's line, not also the decoder's own count from its first
    // record.
    let want = "error: c.csv: line 3 (byte 4): Error while parsing value 'abc' as type 'Int64' for column 0";
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>(), [want], "{}", r.stderr);
}

#[test]
fn a_type_change_past_the_sample_names_the_field_and_the_fix() {
    let s = Scratch::new();
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!("{{\"id\": {i}, \"license\": \"MIT\"}}\n"));
    }
    text.push_str("{\"id\": 50, \"license\": {\"type\": \"MIT\"}}\n");
    s.write("late.jsonl", &text);
    let input = "path = \"late.jsonl\"\ninfer_rows = 10";
    let r = run(&s, "jsonl", input, "o.jsonl", 1, &[]).expect(1);
    assert!(r.stderr.contains("late.jsonl: line 51"), "{}", r.stderr);
    assert!(r.stderr.contains("field `license` is an object here, but utf8 in the schema"), "{}", r.stderr);
    assert!(r.stderr.contains("license:json"), "{}", r.stderr);
    // Raising the sample, or skipping the record, reads it.
    run(&s, "jsonl", "path = \"late.jsonl\"\ninfer_rows = 100", "o.jsonl", 1, &[]).expect(0);
    let r = run(&s, "jsonl", "path = \"late.jsonl\"\ninfer_rows = 10\non_bad_record = \"skip\"", "o.jsonl", 1, &[]);
    assert_eq!(summary(&r.expect(0))["input"]["skipped"].as_u64(), Some(1));
    // A json column given in the schema holds any value's JSON text.
    let given = "path = \"late.jsonl\"\nschema = [\"id:int64\", \"license:json\"]";
    run(&s, "jsonl", given, "o.jsonl", 1, &[]).expect(0);
    let last = json_lines(&std::fs::read_to_string(s.path("o.jsonl")).unwrap()).pop().unwrap();
    // It is written out as the JSON it holds.
    assert_eq!(last["license"], serde_json::json!({"type": "MIT"}));
}

#[test]
fn a_value_in_a_column_the_job_does_not_read_is_not_bad() {
    let s = Scratch::new();
    inputs(&s);
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(s.path("expect.json")).unwrap()).unwrap();
    let want = &expect["csv_id_name"];
    let select = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\", \"name\"] }";
    for chunk in ["1KiB", "1MiB"] {
        let input = format!("{}\n{select}", input("csv", chunk, "reject"));
        let sum = summary(&run(&s, "csv", &input, "out.jsonl", 2, &[]).expect(0));
        let got = json_lines(&std::fs::read_to_string(s.path("out.jsonl")).unwrap());
        assert!(got.iter().eq(want["good"].as_array().unwrap().iter()), "chunk {chunk}: {got:?}");
        let lines: Vec<u64> = rejects(&s, &sum).values().map(|l| l["line"].as_u64().unwrap()).collect();
        let mut expected: Vec<u64> =
            want["bad"].as_array().unwrap().iter().map(|b| b["line"].as_u64().unwrap()).collect();
        expected.sort_by_key(|l| l.to_string());
        assert_eq!(lines, expected, "chunk {chunk}");
    }
    // The same holds for jsonl: a late type change in a column not read.
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!("{{\"id\": {i}, \"license\": \"MIT\"}}\n"));
    }
    text.push_str("{\"id\": 50, \"license\": {\"type\": \"MIT\"}}\n");
    s.write("late.jsonl", &text);
    let ids = "[[stage]]\nfunction = \"select\"\nparams = { columns = [\"id\"] }";
    let r = run(&s, "jsonl", &format!("path = \"late.jsonl\"\ninfer_rows = 10\n{ids}"), "o.jsonl", 1, &[]);
    assert_eq!(summary(&r.expect(0))["input"]["records"].as_u64(), Some(51));
}

#[test]
fn json_text_reaches_external_functions_as_json_and_comes_back() {
    let s = Scratch::new();
    manifests(&s);
    // The function gets each license as the JSON it is (an object, a list
    // or a string, never an object's text in a string), and returns it
    // in a json column.
    s.write(
        "lic.py",
        "import json,sys\nfor l in sys.stdin:\n  x=json.loads(l)\n  v=x.get('license')\n  assert v is None or not isinstance(v,str) or not v.startswith(('{','[')), v\n  print(json.dumps({'name':x['name'],'license':v}))\n",
    );
    let job = "[input]\npath = \"pkgs.jsonl\"\nchunk_size = \"32KiB\"\n[[stage]]\nfunction = { exec = [\"python3\", \"lic.py\"], schema = [\"name:utf8\", \"license:json\"] }\n[output]\npath = \"lic.jsonl\"\n";
    s.write("lic.toml", job);
    s.run(&["run", "lic.toml", "--progress", "never", "--show", "0"]).expect(0);
    python(
        &s,
        r#"
import json
want = []
for l in open("pkgs.jsonl"):
    d = json.loads(l)
    w = {"name": d["name"]}
    if "license" in d:
        w["license"] = d["license"]
    want.append(w)
have = [json.loads(l) for l in open("lic.jsonl")]
assert have == want, [(a, b) for a, b in zip(have, want) if a != b][:3]
print("ok")
"#,
    );
}
