#!/usr/bin/env python3
"""The stream benchmark: a windowed count over a directory source, against
the same count over the same files as a batch job, in interleaved rounds of
the same command, so that only ratios are quoted.

Usage: python3 benches/stream.py [--records 2000000] [--files 20] [--runs 3]
           [--batch-size 10000] [--fanout target/release/fanout]
           [--peers [--pyflink-python PATH]] [--memory]

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
    (`pip install bytewax==0.21.1`), with 1 and 2 workers;
  - pyflink: benches/peers/pyflink_windows.py, Flink SQL from Python in
    streaming mode, with parallelism 1 and 2, when its virtualenv is there
    (--pyflink-python, default target/peers/pyflink/bin/python; made by
    `python3 -m venv target/peers/pyflink && target/peers/pyflink/bin/pip
    install apache-flink==2.3.0`, and it needs a JDK: openjdk-17-jre-headless).
    Its wall time counts the JVM's start and the job's planning, so each
    round also times the same job on one record a file: its start-up,
    printed apart, with the records/s net of it.
With --memory, it also gives the stream's peak RSS over the first file
only and over all of them, behind a slow stage (`sleep`, 50 ms a batch):
the producer (files already there) is far faster than the function, and
a bounded stream's memory does not grow with what waits.
Every run's output is checked, not just timed, against the count done
once here in plain Python: the (page, window, count, sum of n) rows of
the stream jobs and the peers, the limit's printed totals, the batch
job's counts by page. A wrong output is said at once, loudly: fanout's
stops the benchmark; a peer's figures are not quoted, and the script
exits 1 after the rest.
Builds nothing: give it a release binary (cargo build --release).
"""
import argparse, csv, datetime, glob, json, os, random, shutil, statistics, subprocess, sys, time

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


def measured(command, env=None, out=None):
    """Runs `command` in DATA: its wall seconds and peak RSS (MiB); its
    standard output goes to the file `out`, if given."""
    with open(out or os.devnull, "w") as stdout:
        t = time.perf_counter()
        p = subprocess.Popen(command, cwd=DATA, stdout=stdout, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{command[0]} failed")
    return wall, usage.ru_maxrss / 1024


def window_start(ts):
    """The start of the 10 s window of an RFC 3339 time, in epoch ms."""
    t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000) // 10_000 * 10_000


def add(rows, key, count, sum_n):
    c, s = rows.get(key, (0, 0))
    rows[key] = (c + count, s + sum_n)


def expected(src):
    """The windowed count of SRC's files done here, in plain Python:
    {(page, window start): (count, sum of n)} over every record, and over
    those with n >= 10 (the extract job's filter)."""
    rows, kept = {}, {}
    for name in sorted(os.listdir(src)):
        with open(os.path.join(src, name)) as f:
            for line in f:
                r = json.loads(line)
                key = (r["page"], window_start(r["ts"]))
                add(rows, key, 1, r["n"])
                if r["n"] >= 10:
                    add(kept, key, 1, r["n"])
    return rows, kept


def written(path):
    """The rows a program wrote as JSON lines (page, window_start, count,
    sum_n), in the file `path` or the `window-*.jsonl` files of the
    directory `path`, and how many (page, window) rows came twice."""
    rows, twice = {}, 0
    for name in sorted(glob.glob(os.path.join(path, "window-*.jsonl"))) if os.path.isdir(path) else [path]:
        with open(name) as f:
            for line in f:
                r = json.loads(line)
                key = (r["page"], window_start(r["window_start"]))
                twice += key in rows
                add(rows, key, r["count"], r["sum_n"])
    return rows, twice


def wrong(want, got, twice=0):
    """How the rows `got` differ from `want`; None where they are equal."""
    if got == want and not twice:
        return None
    differ = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    return (f"{len(got)} rows of {len(want)}, {sum(c for c, _ in got.values())} records of "
            f"{sum(c for c, _ in want.values())}, {len(differ)} rows differ (e.g. "
            f"{[(k, got.get(k), want.get(k)) for k in differ[:2]]}), {twice} rows written twice")


def wrong_limit(out, want):
    """The limit program prints `W windows, R rows, N records`."""
    with open(out) as f:
        got = f.read().strip()
    line = (f"{len({w for _, w in want})} windows, {len(want)} rows, "
            f"{sum(c for c, _ in want.values())} records")
    return None if got == line else f"printed {got!r}, not {line!r}"


def wrong_batch(out, want):
    """The batch job's CSV (page, count, sum_n) against `want` by page."""
    pages = {}
    for (page, _), (c, s) in want.items():
        add(pages, page, c, s)
    with open(out, newline="") as f:
        got = {r["page"]: (int(r["count"]), int(r["sum_n"])) for r in csv.DictReader(f)}
    return wrong(pages, got)


def check(name, message, invalid):
    """Says a wrong output at once, loudly: fanout's stops the benchmark
    (exit 1), a peer's goes into `invalid`, so that its figures are not
    quoted."""
    if message is None:
        return
    print(f"!!! {name}: WRONG OUTPUT: {message}", file=sys.stderr, flush=True)
    if name in ("stream", "batch", "extract") or name.startswith("memory"):
        sys.exit(f"!!! fanout's {name} job wrote a wrong output: nothing quoted")
    invalid.setdefault(name, message)


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
    ap.add_argument("--pyflink-python", default=os.path.join(ROOT, "target", "peers", "pyflink", "bin", "python"))
    a = ap.parse_args()
    pyflink = None
    if a.peers:
        limit = limit_binary()
        if limit is None:
            sys.exit("the limit program is missing: cargo build --release --bench limits")
        if subprocess.run([sys.executable, "-c", "import bytewax"], capture_output=True).returncode != 0:
            sys.exit("Bytewax is missing: python3 -m pip install bytewax==0.21.1")
        if not os.path.exists(a.pyflink_python):
            print("PyFlink is missing, skipped: python3 -m venv target/peers/pyflink && "
                  "target/peers/pyflink/bin/pip install apache-flink==2.3.0 (and a JDK: apt-get install openjdk-17-jre-headless)")
        elif shutil.which("java") is None:
            print("PyFlink needs a JDK, skipped: apt-get install openjdk-17-jre-headless")
        else:
            pyflink = a.pyflink_python
    src = generate(a.records, a.files)
    records = a.records // a.files * a.files
    with open(os.path.join(DATA, "stream.toml"), "w") as f:
        f.write(stream_job(src, os.path.join(DATA, "out"), a.batch_size))
    with open(os.path.join(DATA, "batch.toml"), "w") as f:
        f.write(batch_job(src, os.path.join(DATA, "batch-out.csv")))
    with open(os.path.join(DATA, "extract.toml"), "w") as f:
        f.write(extract_job(src, os.path.join(DATA, "out-extract"), a.batch_size))
    stream, batch, extract, peers = [], [], [], {"limit": [], "bytewax -w 1": [], "bytewax -w 2": []}
    want, kept = expected(src)
    invalid = {}
    env = dict(os.environ, STREAM_DIR=src, STREAM_OUT=os.path.join(DATA, "bytewax-out.jsonl"), PYTHONPATH=ROOT)
    starts = {}
    if pyflink:
        peers.update({"pyflink -p 1": [], "pyflink -p 2": []})
        starts = {"pyflink -p 1": [], "pyflink -p 2": []}
        # The start-up input: the same files, one record each.
        small = os.path.join(DATA, "pyflink-startup")
        shutil.rmtree(small, ignore_errors=True)
        os.makedirs(small)
        for name in sorted(os.listdir(src)):
            with open(os.path.join(src, name)) as f, open(os.path.join(small, name), "w") as out:
                out.write(f.readline())
        job = os.path.join(ROOT, "benches", "peers", "pyflink_windows.py")
        flink_env = dict(env, STREAM_OUT=os.path.join(DATA, "pyflink-out.jsonl"))
        small_env = dict(env, STREAM_DIR=small, STREAM_OUT=os.path.join(DATA, "pyflink-startup-out.jsonl"))
        small_want = expected(small)[0]
    for r in range(a.runs):
        rd = os.path.join(DATA, f"rd-{r}")
        shutil.rmtree(rd, ignore_errors=True)
        stream.append(timed(a.fanout, ["run", "stream.toml", "--until", f"records={records}", "--progress", "never", "--run-dir", rd]))
        check("stream", wrong(want, *written(os.path.join(DATA, "out"))), invalid)
        batch.append(timed(a.fanout, ["run", "batch.toml", "--progress", "never", "--no-journal"]))
        check("batch", wrong_batch(os.path.join(DATA, "batch-out.csv"), want), invalid)
        shutil.rmtree(rd, ignore_errors=True)
        extract.append(timed(a.fanout, ["run", "extract.toml", "--until", f"records={records}", "--progress", "never", "--run-dir", rd]))
        check("extract", wrong(kept, *written(os.path.join(DATA, "out-extract"))), invalid)
        if a.peers:
            out = os.path.join(DATA, "limit-out.txt")
            peers["limit"].append(measured([limit, "windowcount", src], out=out)[0])
            check("limit", wrong_limit(out, want), invalid)
            for w in (1, 2):
                if os.path.exists(env["STREAM_OUT"]):
                    os.remove(env["STREAM_OUT"])
                flow = [sys.executable, "-m", "bytewax.run", "benches.peers.bytewax_windows:flow", "-w", str(w)]
                peers[f"bytewax -w {w}"].append(measured(flow, env)[0])
                check(f"bytewax -w {w}", wrong(want, *written(env["STREAM_OUT"])), invalid)
            if pyflink:
                for p in (1, 2):
                    for penv, times, rows in ((small_env, starts, small_want), (flink_env, peers, want)):
                        if os.path.exists(penv["STREAM_OUT"]):
                            os.remove(penv["STREAM_OUT"])
                        times[f"pyflink -p {p}"].append(measured([pyflink, job, str(p)], penv)[0])
                        check(f"pyflink -p {p}", wrong(rows, *written(penv["STREAM_OUT"])), invalid)
    s, b = statistics.median(stream), statistics.median(batch)
    print(f"records: {records} in {a.files} files; batch_size {a.batch_size}; {a.runs} interleaved rounds")
    print(f"stream: {s:.3f} s, {records / s / 1e6:.2f} M records/s (take, window, commit, checkpoint)")
    print(f"batch:  {b:.3f} s, {records / b / 1e6:.2f} M records/s (the same count as one batch job)")
    print(f"stream / batch records/s: {b / s:.2f}")
    e = statistics.median(extract)
    print(f"stream, text -> json_extract -> filter -> count: {e:.3f} s, {records / e / 1e6:.2f} M records/s")
    for name, times in peers.items():
        if name in invalid:
            print(f"{name}: INVALID, not quoted: its output was wrong ({invalid[name]})")
        elif times:
            t = statistics.median(times)
            print(f"{name}: {t:.3f} s, {records / t / 1e6:.3f} M records/s; fanout's stream is {t / s:.2f}x its speed")
            if name in starts:
                up = statistics.median(starts[name])
                net = f"{records / (t - up) / 1e6:.3f} M records/s" if t > up else "n/a"
                print(f"  {name} start-up (JVM, planning, the job on 1 record a file): {up:.3f} s; net of it: {net}")
    if a.memory:
        memory(a, src, records, want)
    if invalid:
        print(f"!!! wrong output from {', '.join(invalid)}: not quoted", file=sys.stderr)
        return 1


def memory(a, src, records, want):
    """The stream's peak RSS behind a slow stage, over one file and all."""
    one = os.path.join(DATA, "one")
    shutil.rmtree(one, ignore_errors=True)
    os.makedirs(one)
    first = sorted(os.listdir(src))[0]
    shutil.copy(os.path.join(src, first), one)
    per = records // a.files
    slow = '[[stage]]\nname = "slow"\nfunction = "sleep"\nparams = { ms = 50 }\n[[stage]]\nname = "count"'
    for name, where, n, rows in (("one file", one, per, expected(one)[0]), ("all files", src, records, want)):
        job = stream_job(where, os.path.join(DATA, "out-mem"), a.batch_size).replace('[[stage]]\nname = "count"', slow)
        with open(os.path.join(DATA, "memory.toml"), "w") as f:
            f.write(job)
        rd = os.path.join(DATA, "rd-mem")
        shutil.rmtree(rd, ignore_errors=True)
        wall, rss = measured([a.fanout, "run", "memory.toml", "--until", f"records={n}", "--progress", "never", "--run-dir", rd])
        check(f"memory, {name}", wrong(rows, *written(os.path.join(DATA, "out-mem"))), {})
        print(f"memory, {name} ({n} records waiting, a slow stage): peak RSS {rss:.0f} MiB in {wall:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
