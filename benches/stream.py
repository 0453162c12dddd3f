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
    aggregate when nothing arrives over time;
  - extract: the issue's workload, the files read as text lines, then
    `json_extract` (page, ts, n), `filter` (n >= 10) and the windowed
    count.
It prints each one's median records/s and the stream's ratio to the batch
job. With --peers, each round also runs, on the same files and the same
windowed count:
  - limit: the hand-written Rust program `limits windowcount DIR`
    (benches/limits.rs; built by `cargo build --release --bench limits`);
  - bytewax: benches/peers/bytewax_windows.py on Bytewax
    (`pip install bytewax==0.21.1`), with 1 and 2 workers.
With --memory, it also gives the stream's peak RSS over the first file
only and over all of them, behind a slow stage (`sleep`, 50 ms a batch):
the producer (files already there) is far faster than the function, and
a bounded stream's memory does not grow with what waits.
Builds nothing: give it a release binary (cargo build --release).
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


def extract_job(src, out, batch_size):
    """The issue's workload: text lines, json_extract, filter, then the count."""
    stages = "\n".join([
        "[[stage]]",
        'name = "extract"',
        'function = "json_extract"',
        'params = { fields = ["page:utf8", "ts:utf8", "n:int64"] }',
        "[[stage]]",
        'name = "keep"',
        'function = "filter"',
        'params = { where = "n >= 10" }',
        "[[stage]]",
        'name = "count"',
    ])
    job = stream_job(src, out, batch_size)
    job = job.replace('format = "jsonl"\nschema = ["page:utf8", "ts:utf8", "n:int64"]', 'format = "text"', 1)
    return job.replace('[[stage]]\nname = "count"', stages)


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


def timed(fanout, args, env=None):
    return measured([fanout] + args, env)[0]


def measured(command, env=None):
    """Runs `command` in DATA: its wall seconds and peak RSS (MiB)."""
    t = time.perf_counter()
    p = subprocess.Popen(command, cwd=DATA, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{command[0]} failed")
    return wall, usage.ru_maxrss / 1024


def limit_binary():
    deps = os.path.join(ROOT, "target", "release", "deps")
    found = sorted(
        (os.path.getmtime(os.path.join(deps, f)), os.path.join(deps, f))
        for f in (os.listdir(deps) if os.path.isdir(deps) else [])
        if f.startswith("limits-") and not f.endswith(".d")
    )
    return found[-1][1] if found else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--fanout", default=os.path.join(ROOT, "target", "release", "fanout"))
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--memory", action="store_true")
    a = ap.parse_args()
    if a.peers:
        limit = limit_binary()
        if limit is None:
            sys.exit("the limit program is missing: cargo build --release --bench limits")
        if subprocess.run([sys.executable, "-c", "import bytewax"], capture_output=True).returncode != 0:
            sys.exit("Bytewax is missing: python3 -m pip install bytewax==0.21.1")
    src = generate(a.records, a.files)
    records = a.records // a.files * a.files
    with open(os.path.join(DATA, "stream.toml"), "w") as f:
        f.write(stream_job(src, os.path.join(DATA, "out"), a.batch_size))
    with open(os.path.join(DATA, "batch.toml"), "w") as f:
        f.write(batch_job(src, os.path.join(DATA, "batch-out.csv")))
    with open(os.path.join(DATA, "extract.toml"), "w") as f:
        f.write(extract_job(src, os.path.join(DATA, "out-extract"), a.batch_size))
    stream, batch, extract, peers = [], [], [], {"limit": [], "bytewax -w 1": [], "bytewax -w 2": []}
    env = dict(os.environ, STREAM_DIR=src, STREAM_OUT=os.path.join(DATA, "bytewax-out.jsonl"), PYTHONPATH=ROOT)
    for r in range(a.runs):
        rd = os.path.join(DATA, f"rd-{r}")
        shutil.rmtree(rd, ignore_errors=True)
        stream.append(timed(a.fanout, ["run", "stream.toml", "--until", f"records={records}", "--progress", "never", "--run-dir", rd]))
        batch.append(timed(a.fanout, ["run", "batch.toml", "--progress", "never", "--no-journal"]))
        shutil.rmtree(rd, ignore_errors=True)
        extract.append(timed(a.fanout, ["run", "extract.toml", "--until", f"records={records}", "--progress", "never", "--run-dir", rd]))
        if a.peers:
            peers["limit"].append(measured([limit, "windowcount", src])[0])
            for w in (1, 2):
                if os.path.exists(env["STREAM_OUT"]):
                    os.remove(env["STREAM_OUT"])
                flow = [sys.executable, "-m", "bytewax.run", "benches.peers.bytewax_windows:flow", "-w", str(w)]
                peers[f"bytewax -w {w}"].append(measured(flow, env)[0])
    s, b = statistics.median(stream), statistics.median(batch)
    print(f"records: {records} in {a.files} files; batch_size {a.batch_size}; {a.runs} interleaved rounds")
    print(f"stream: {s:.3f} s, {records / s / 1e6:.2f} M records/s (take, window, commit, checkpoint)")
    print(f"batch:  {b:.3f} s, {records / b / 1e6:.2f} M records/s (the same count as one batch job)")
    print(f"stream / batch records/s: {b / s:.2f}")
    e = statistics.median(extract)
    print(f"stream, text -> json_extract -> filter -> count: {e:.3f} s, {records / e / 1e6:.2f} M records/s")
    for name, times in peers.items():
        if times:
            t = statistics.median(times)
            print(f"{name}: {t:.3f} s, {records / t / 1e6:.3f} M records/s; fanout's stream is {t / s:.2f}x its speed")
    if a.memory:
        memory(a, src, records)


def memory(a, src, records):
    """The stream's peak RSS behind a slow stage, over one file and all."""
    one = os.path.join(DATA, "one")
    shutil.rmtree(one, ignore_errors=True)
    os.makedirs(one)
    first = sorted(os.listdir(src))[0]
    shutil.copy(os.path.join(src, first), one)
    per = records // a.files
    slow = '[[stage]]\nname = "slow"\nfunction = "sleep"\nparams = { ms = 50 }\n[[stage]]\nname = "count"'
    for name, where, n in (("one file", one, per), ("all files", src, records)):
        job = stream_job(where, os.path.join(DATA, "out-mem"), a.batch_size).replace('[[stage]]\nname = "count"', slow)
        with open(os.path.join(DATA, "memory.toml"), "w") as f:
            f.write(job)
        rd = os.path.join(DATA, "rd-mem")
        shutil.rmtree(rd, ignore_errors=True)
        wall, rss = measured([a.fanout, "run", "memory.toml", "--until", f"records={n}", "--progress", "never", "--run-dir", rd])
        print(f"memory, {name} ({n} records waiting, a slow stage): peak RSS {rss:.0f} MiB in {wall:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
