#!/usr/bin/env python3
"""The stream benchmark: a windowed count over a directory source, against
the same count over the same files as a batch job, in interleaved rounds of
the same command, so that only ratios are quoted.

Usage: python3 benches/stream.py [--records 2000000] [--files 20] [--runs 3]
           [--batch-size 10000] [--fanout target/release/fanout]

It writes FILES JSON-lines files of click events (page, RFC 3339 ts, n)
under target/stream-bench/, then each round runs
  - stream: `fanout run` with `input.stream = { dir }`, a tumbling 10 s
    window over `ts` with 5 s allowed lateness, `aggregate` count and sum
    by page, stopped by `--until records=N` (all of them), so its wall time
    is the time to take, window and commit every record;
  - batch: the same files as `input.path`, `aggregate` count and sum by
    page (no windows), in one run: what the records cost to read and
    aggregate when nothing arrives over time.
It prints each one's median records/s and the stream's ratio to the batch
job. Builds nothing: give it a release binary (cargo build --release).
"""
import argparse, datetime, json, os, random, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "target", "stream-bench")


def generate(records, files):
    src = os.path.join(DATA, "files")
    stamp = os.path.join(DATA, f"made-{records}-{files}")
    if os.path.exists(stamp):
        return src
    shutil.rmtree(DATA, ignore_errors=True)
    os.makedirs(src)
    random.seed(1)
    base = 1796637600.0
    per = records // files
    for f in range(files):
        with open(os.path.join(src, f"{f:04}.jsonl"), "w") as out:
            for i in range(per):
                t = base + (f * per + i) * 0.001 - random.uniform(0, 2)
                ts = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="milliseconds")
                out.write(json.dumps({"page": f"p{random.randrange(50)}", "ts": ts.replace("+00:00", "Z"), "n": i % 100}) + "\n")
    open(stamp, "w").close()
    return src


def stream_job(src, out, batch_size):
    return f"""name = "clicks"
[input]
stream = {{ dir = "{src}" }}
format = "jsonl"
schema = ["page:utf8", "ts:utf8", "n:int64"]
[stream]
batch_size = {batch_size}
window = {{ tumbling = "10s", time = "ts" }}
allowed_lateness = "5s"
checkpoint_every = "1s"
[[stage]]
name = "count"
function = "aggregate"
key = ["page"]
params = {{ count = true, sum = ["n"] }}
[output]
path = "{out}"
format = "jsonl"
mode = "overwrite"
"""


def batch_job(src, out):
    return f"""name = "clicks-batch"
[input]
path = "{src}/*.jsonl"
format = "jsonl"
schema = ["page:utf8", "ts:utf8", "n:int64"]
[[stage]]
name = "count"
function = "aggregate"
key = ["page"]
params = {{ count = true, sum = ["n"] }}
[output]
path = "{out}"
mode = "overwrite"
"""


def timed(fanout, args):
    t = time.perf_counter()
    subprocess.run([fanout] + args, check=True, cwd=DATA, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--fanout", default=os.path.join(ROOT, "target", "release", "fanout"))
    a = ap.parse_args()
    src = generate(a.records, a.files)
    records = a.records // a.files * a.files
    with open(os.path.join(DATA, "stream.toml"), "w") as f:
        f.write(stream_job(src, os.path.join(DATA, "out"), a.batch_size))
    with open(os.path.join(DATA, "batch.toml"), "w") as f:
        f.write(batch_job(src, os.path.join(DATA, "batch-out.csv")))
    stream, batch = [], []
    for r in range(a.runs):
        rd = os.path.join(DATA, f"rd-{r}")
        shutil.rmtree(rd, ignore_errors=True)
        stream.append(timed(a.fanout, ["run", "stream.toml", "--until", f"records={records}", "--progress", "never", "--run-dir", rd]))
        batch.append(timed(a.fanout, ["run", "batch.toml", "--progress", "never", "--no-journal"]))
    s, b = statistics.median(stream), statistics.median(batch)
    print(f"records: {records} in {a.files} files; batch_size {a.batch_size}; {a.runs} interleaved rounds")
    print(f"stream: {s:.3f} s, {records / s / 1e6:.2f} M records/s (take, window, commit, checkpoint)")
    print(f"batch:  {b:.3f} s, {records / b / 1e6:.2f} M records/s (the same count as one batch job)")
    print(f"stream / batch records/s: {b / s:.2f}")


if __name__ == "__main__":
    sys.exit(main())
