#!/usr/bin/env python3
"""Macro benchmarks: fanout against the hand-written limit (benches/limits.rs)
and peers, in the same command, so only ratios are quoted.

Usage: python3 benches/macro.py [--size 1GiB] [--runs 3]
           [--only wordcount,groupby,pi,dispatch,exec,lambda,http,s3,shuffle,tasks]
           [--s3-size 256MiB] [--s3-server moto|s3s-fs] [--shuffle-size 64MiB]
           [--tasks 1000000,10000000] [--baseline OLD_FANOUT_BINARY]

With --baseline, every workload also runs the given (older) fanout binary,
interleaved round by round with this one, so a before/after comparison is
one command's ratios. `tasks` (not run by default: minutes at 10^7) runs a
million-task (and larger) job and reports peak RSS, time per task and the
run directory's bytes per invocation.

Builds the release binaries, generates the data under target/macro/ (kept
between runs), runs each program --runs times and prints the median wall
time, peak RSS and the ratio to the limit. DuckDB and Polars are measured
when their Python packages are installed (pip install duckdb polars); GNU
parallel when it is on PATH (apt-get install parallel). `s3` (W8) reads the
word count's input from moto's S3 server on loopback (pip install
'moto[server]' boto3), against the same file read locally; `shuffle` (W9)
runs a word count's both stages on a `fanout serve` host, shuffling on the
coordinator and through moto's S3 server.
"""
import argparse, json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "target", "macro")
FANOUT = os.path.join(ROOT, "target", "release", "fanout")
BASELINE = None


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def limits_binary():
    out = sh(["cargo", "bench", "--bench", "limits", "--no-run", "--message-format=json"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "limits" and msg.get("executable"):
            return msg["executable"]
    sys.exit("limits binary not found")


def measure(cmd, runs, env=None):
    """Median wall seconds and max peak RSS (MiB) of `runs` runs of cmd."""
    walls, rss = [], []
    for _ in range(runs):
        out = open(os.path.join(DATA, "stdout"), "w+b")
        err = open(os.path.join(DATA, "stderr"), "w+b")
        t = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"{cmd} failed: {err.read().decode()[-2000:]}")
        rss.append(usage.ru_maxrss / 1024)
        out.seek(0)
        stdout = out.read().decode()
    return statistics.median(walls), max(rss), stdout


def compare(programs, runs):
    """Runs the programs in interleaved rounds (A B C, B C A, C A B, ...), so
    that this VM's drift between minutes hits each program alike. Returns
    rows of (name, walls, max peak RSS MiB) in the programs' order."""
    walls = [[] for _ in programs]
    rss = [0.0 for _ in programs]
    for r in range(runs):
        # Each round starts with another program, so that whatever the
        # program before does to the machine (caches, memory) lands on
        # each alike.
        order = list(range(len(programs)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            _, cmd, env = programs[i]
            wall, peak, _ = measure(cmd, 1, env)
            walls[i].append(wall)
            rss[i] = max(rss[i], peak)
    return [(name, walls[i], rss[i]) for i, (name, _, _) in enumerate(programs)]


def report(title, size_bytes, rows):
    """Prints rows of (name, walls, rss): the median wall, and each
    program's time over the first's, the median of the per-round ratios
    and their range."""
    print(f"\n## {title}")
    print("| program | wall s (median) | MiB/s | peak RSS MiB | x first (median, range over rounds) |")
    print("|---|---|---|---|---|")
    base = rows[0][1]
    for name, walls, rss in rows:
        wall = statistics.median(walls)
        mibs = f"{size_bytes / 2**20 / wall:.0f}" if size_bytes else "-"
        ratios = [w / b for w, b in zip(walls, base)]
        spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
        print(f"| {name} | {wall:.2f} | {mibs} | {rss:.0f} | {statistics.median(ratios):.2f}{spread} |")
    sys.stdout.flush()


def job_file(name, text):
    path = os.path.join(DATA, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def wordcount_job(name, path):
    """W1's job: the 100 most frequent words of the text at `path`."""
    return job_file(f"{name}.toml", f"""
[input]
path = "{path}"
chunk_size = "16MiB"
[[stage]]
function = "word_count"
[[stage]]
name = "total"
function = "aggregate"
key = ["word"]
params = {{ sum = ["count"] }}
[output]
path = "{DATA}/{name}-out.csv"
sort = ["-sum_count", "word"]
limit = 100
mode = "overwrite"
""")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="wordcount,groupby,pi,dispatch,exec,lambda,http")
    ap.add_argument("--tasks", default="1000000,10000000")
    ap.add_argument("--s3-size", default="256MiB")
    ap.add_argument("--shuffle-size", default="64MiB")
    ap.add_argument("--s3-server", default="moto", choices=["moto", "s3s-fs"])
    ap.add_argument("--baseline", help="an older fanout binary, run interleaved with this one")
    a = ap.parse_args()
    only = a.only.split(",")
    global BASELINE
    BASELINE = a.baseline
    os.makedirs(DATA, exist_ok=True)
    sh(["cargo", "build", "--release", "--bin", "fanout"])
    limits = limits_binary()
    print(f"machine: {os.cpu_count()} cores; runs: {a.runs} (interleaved rounds; median)")

    if "wordcount" in only:
        text = os.path.join(DATA, f"text-{a.size}.txt")
        if not os.path.exists(text):
            sh([FANOUT, "datasets", "gen", "text", "--size", a.size, "--seed", "1", "--out", text])
        size = os.path.getsize(text)
        job = wordcount_job("wordcount", text)
        programs = [("limit (rayon, hand-written)", [limits, "wordcount", text], None),
                    ("fanout run", [FANOUT, "run", job, "--progress", "never", "--show", "0"], None)]
        programs += baseline_of(programs[-1])
        try:
            import duckdb  # noqa: F401
            q = (f"SET threads=2; SELECT w, count(*) c FROM (SELECT unnest(string_split(line, ' ')) w FROM "
                 f"read_csv('{text}', columns={{'line':'VARCHAR'}}, header=false, delim='\\t', quote='', escape='', "
                 f"auto_detect=false)) WHERE w <> '' GROUP BY w ORDER BY c DESC, w LIMIT 100")
            programs.append(("DuckDB", [sys.executable, "-c", f"import duckdb; duckdb.sql(\"\"\"{q}\"\"\").fetchall()"], None))
        except ImportError:
            pass
        report(f"W1 word count, {a.size} text", size, compare(programs, a.runs))

    if "s3" in only:
        bench_s3(a.s3_size, a.runs, a.s3_server)

    if "shuffle" in only:
        bench_shuffle(a.shuffle_size, a.runs)

    if "groupby" in only:
        csv = os.path.join(DATA, "events-5M.csv")
        if not os.path.exists(csv):
            sh([FANOUT, "datasets", "gen", "csv", "--rows", "5000000", "--seed", "1", "--out", csv])
        size = os.path.getsize(csv)
        job = job_file("groupby.toml", f"""
[input]
path = "{csv}"
chunk_size = "16MiB"
[[stage]]
name = "by_group"
function = "aggregate"
key = ["country", "category"]
params = {{ count = true, sum = ["amount"] }}
[output]
path = "{DATA}/groupby-out.csv"
sort = ["country", "category"]
mode = "overwrite"
""")
        programs = []
        try:
            import duckdb  # noqa: F401
            q = (f"SET threads=2; SELECT country, category, sum(amount), count(*) FROM read_csv('{csv}', header=true) "
                 f"GROUP BY 1, 2")
            programs.append(("DuckDB (as the reference)",
                             [sys.executable, "-c", f"import duckdb; duckdb.sql(\"\"\"{q}\"\"\").fetchall()"], None))
        except ImportError:
            print("DuckDB not installed: pip install duckdb")
        try:
            import polars  # noqa: F401
            code = (f"import polars as pl; pl.scan_csv('{csv}').group_by(['country','category'])"
                    f".agg(pl.col('amount').sum(), pl.len()).collect()")
            programs.append(("Polars", [sys.executable, "-c", code], dict(os.environ, POLARS_MAX_THREADS="2")))
        except ImportError:
            pass
        programs.append(("fanout run", [FANOUT, "run", job, "--progress", "never", "--show", "0"], None))
        programs += baseline_of(programs[-1])
        report(f"W3 csv group-by, {size / 2**20:.0f} MiB events csv (5M rows, quoted notes)", size,
               compare(programs, a.runs))

    if "pi" in only:
        rng = os.path.join(DATA, "range-1000.csv")
        if not os.path.exists(rng):
            sh([FANOUT, "datasets", "gen", "range", "--rows", "1000", "--out", rng])
        job = job_file("pi.toml", f"""
[input]
path = "{rng}"
chunk_size = 16
[[stage]]
function = "pi"
params = {{ samples = 200000, seed = 42 }}
[[stage]]
name = "total"
function = "aggregate"
key = []
params = {{ sum = ["inside", "samples"] }}
[output]
path = "{DATA}/pi-out.csv"
mode = "overwrite"
""")
        programs = [("limit (rayon, hand-written)", [limits, "pi", "1000", "200000"], None),
                    ("fanout run", [FANOUT, "run", job, "--progress", "never", "--show", "0"], None)]
        programs += baseline_of(programs[-1])
        report("W4 Monte Carlo pi, 2e8 samples in 1,000 rows", 0, compare(programs, a.runs))

    if "dispatch" in only:
        tiny = os.path.join(DATA, "tiny-100k.txt")
        if not os.path.exists(tiny):
            with open(tiny, "w") as f:
                f.write("a\n" * 100_000)
        job = job_file("dispatch.toml", f"""
[input]
path = "{tiny}"
chunk_size = 1
[[stage]]
function = "burn"
params = {{ ms = 0 }}
[output]
path = "{DATA}/dispatch-out.csv"
mode = "overwrite"
""")
        print(f"\n## W2 dispatch: 100,000 empty invocations (one 2-byte split each)")
        for what, extra in [("--no-journal", ["--no-journal"]), ("journal (default)", [])]:
            programs = [("fanout run", [FANOUT, "run", job, "--progress", "never", "--show", "0", *extra], None)]
            programs += baseline_of(programs[0])
            for name, walls, rss in compare(programs, a.runs):
                wall = statistics.median(walls)
                print(f"{name}, {what}: {wall:.2f} s wall (median), {100_000 / wall:,.0f} invocations/s end to end "
                      f"(rounds {100_000 / max(walls):,.0f}–{100_000 / min(walls):,.0f}); peak RSS {rss:.0f} MiB")

    if "exec" in only:
        bench_exec(a.runs)
    if "lambda" in only:
        bench_lambda(a.runs)
    if "http" in only:
        bench_http(a.runs)
    if "tasks" in only:
        bench_tasks([int(n) for n in a.tasks.split(",")])


def baseline_of(program):
    """The same program run by the --baseline binary, if one was given."""
    if not BASELINE:
        return []
    name, cmd, env = program
    return [(name + " (baseline)", [BASELINE, *cmd[1:]], env)]


def bench_tasks(sizes):
    """Many tiny tasks: N one-line splits -> burn ms=0 -> a keyed count over
    97 keys. Memory must not grow with N, time must grow linearly, and the
    run directory must stay small (records and journal per invocation)."""
    print("\n## Tasks: N one-line splits -> burn ms=0 -> aggregate count by key (97 keys)")
    print("| program | tasks | wall s | tasks/s | peak RSS MiB | records B/invocation | journal B/task |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for n in sizes:
        path = os.path.join(DATA, f"keys-{n}.txt")
        if not os.path.exists(path):
            with open(path, "w") as f:
                for i in range(n):
                    f.write(f"k{i % 97}\n")
        job = job_file(f"tasks-{n}.toml", f"""
[input]
path = "{path}"
chunk_size = 1
[[stage]]
name = "work"
function = "burn"
params = {{ ms = 0 }}
[[stage]]
name = "count"
function = "aggregate"
key = ["line"]
params = {{ count = true }}
[output]
path = "{DATA}/tasks-out.csv"
mode = "overwrite"
""")
        binaries = [("fanout run", FANOUT)] + ([("fanout run (baseline)", BASELINE)] if BASELINE else [])
        for name, binary in binaries:
            run_dir = os.path.join(DATA, "tasks-run")
            subprocess.run(["rm", "-rf", run_dir], check=True)
            wall, rss, out = measure([binary, "run", job, "--progress", "never", "--json", "--run-dir", run_dir], 1)
            s = json.loads(out)
            invocations = s["invocations"]["total"]
            records = sum(os.path.getsize(os.path.join(run_dir, f)) for f in os.listdir(run_dir)
                          if f.startswith("invocations."))
            journal = os.path.getsize(os.path.join(run_dir, "journal.jsonl"))
            print(f"| {name} | {n:,} | {wall:.1f} | {n / wall:,.0f} | {rss:.0f} | {records / invocations:.1f} | "
                  f"{journal / n:.1f} |")
            sys.stdout.flush()
            if name == "fanout run":
                if base is None:
                    base = (n, wall)
                else:
                    print(f"(time for {n:,} tasks: {wall / base[1]:.2f}x that for {base[0]:,})")


def run_json(job, runs, extra=(), binary=None):
    """Median wall seconds and the summary of a fanout run."""
    wall, _, out = measure([binary or FANOUT, "run", job, "--progress", "never", "--json", *extra], runs)
    return wall, json.loads(out)


def tiny_lines(n):
    """A file of n two-byte lines: with chunk_size = 1, n tasks of one record."""
    path = os.path.join(DATA, f"tiny-{n}.txt")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("a\n" * n)
    return path


def bench_exec(runs):
    """W5: a process per small chunk. fanout's exec backend and GNU parallel
    --pipepart on the same 1 KiB blocks of a text, `cat` as the tool."""
    text = os.path.join(DATA, "text-2MiB.txt")
    if not os.path.exists(text):
        sh([FANOUT, "datasets", "gen", "text", "--size", "2MiB", "--seed", "1", "--out", text])

    def job(name, function):
        return job_file(f"{name}.toml", f"""
[input]
path = "{text}"
chunk_size = "1KiB"
[[stage]]
function = {function}
[output]
path = "{DATA}/{name}-out.csv"
mode = "overwrite"
""")

    exec_wall, s = run_json(job("exec-cat", '{ exec = ["cat"] }'), runs)
    tasks = s["invocations"]["total"]
    local_wall, _ = run_json(job("exec-local", '"select"\nparams = { columns = ["line"] }'), runs)
    rows = [("fanout, in-process (select)", local_wall), ("fanout, exec cat", exec_wall)]
    if BASELINE:
        base_wall, _ = run_json(job("exec-cat", '{ exec = ["cat"] }'), runs, binary=BASELINE)
        rows.append(("fanout (baseline), exec cat", base_wall))
    print(f"\n## W5 exec: {tasks:,} chunks of 1 KiB, a process each")
    print("| program | wall s | jobs/s | x GNU parallel |")
    print("|---|---|---|---|")
    par = None
    if subprocess.run(["sh", "-c", "command -v parallel"], capture_output=True).returncode == 0:
        cmd = ["sh", "-c", f"parallel --pipepart -a {text} --block 1k -j2 cat > /dev/null"]
        par, _, _ = measure(cmd, runs)
    for name, wall in rows + ([("GNU parallel --pipepart --block 1k -j2 cat", par)] if par else []):
        ratio = f"{par / wall:.1f}" if par else "-"
        print(f"| {name} | {wall:.2f} | {tasks / wall:,.0f} | {ratio} |")
    sys.stdout.flush()


def rate_table(title, rows):
    """Prints (name, wall, invocations, per second in the run) rows against
    the first (the in-process backend)."""
    print(f"\n## {title}")
    print("| program | wall s | invocations/s (end to end) | invocations/s (in the run) | x in-process |")
    print("|---|---|---|---|---|")
    base = rows[0][3]
    for name, wall, total, per_second in rows:
        print(f"| {name} | {wall:.2f} | {total / wall:,.0f} | {per_second:,.0f} | {per_second / base:.3f} |")
    sys.stdout.flush()


def bench_lambda(runs):
    """W6: warm Lambda Runtime API invocations of a trivial Rust function
    (the lambda_runtime fixture), against the in-process backend on the
    same one-record tasks, and the stdlib Python runtime."""
    target = os.path.join(ROOT, "target", "fixtures")
    sh(["cargo", "build", "--release", "--manifest-path", "tests/fixtures/lambda-rust/Cargo.toml"],
       env=dict(os.environ, CARGO_TARGET_DIR=target))
    rust = os.path.join(target, "release", "fanout-lambda-fixture")
    n = 20_000
    tiny = tiny_lines(n)

    def job(name, function, schema):
        return job_file(f"{name}.toml", f"""
[input]
path = "{tiny}"
chunk_size = 1
[[stage]]
function = {function}
[output]
path = "{DATA}/{name}-out.csv"
mode = "overwrite"
[platform]
concurrency = 2
""")

    rows = []
    for name, function in [
        ("in-process (select)", '"select"\nparams = { columns = ["line"] }'),
        ("lambda, Rust lambda_runtime", f'{{ lambda = ["{rust}"], schema = ["line:utf8", "echoed:bool"] }}'),
        ("lambda, Python stdlib runtime",
         f'{{ lambda = ["python3", "{ROOT}/tests/fixtures/lambda/bootstrap.py"], handler = "handlers.echo" }}'),
    ]:
        wall, s = run_json(job(f"lambda-{len(rows)}", function, None), runs, ["--no-journal"])
        rows.append((name, wall, s["invocations"]["total"], s["invocations"]["per_second"]))
        if "Rust" in name:
            wall, s = run_json(job(f"lambda-{len(rows) - 1}", function, None), runs)
            rows.append((name + ", journal on", wall, s["invocations"]["total"], s["invocations"]["per_second"]))
            if BASELINE:
                for extra, what in [(["--no-journal"], ""), ([], ", journal on")]:
                    wall, s = run_json(job(f"lambda-{len(rows)}", function, None), runs, extra, BASELINE)
                    rows.append((name + what + " (baseline)", wall, s["invocations"]["total"],
                                 s["invocations"]["per_second"]))
    rate_table(f"W6 lambda: {n:,} one-record invocations, concurrency 2, --no-journal unless said", rows)


def bench_http(runs):
    """W7: empty invocations over loopback HTTP to one `fanout serve`
    (`select` of the one column, keep-alive connections), against the same
    function in-process, one-record tasks, concurrency 2."""
    n = 20_000
    tiny = tiny_lines(n)
    host = subprocess.Popen([FANOUT, "serve", "--listen", "127.0.0.1:0", "--concurrency", "8"],
                            stderr=subprocess.PIPE, text=True)
    try:
        addr = host.stderr.readline().split("http://")[1].split()[0]

        def job(name, function):
            return job_file(f"{name}.toml", f"""
[input]
path = "{tiny}"
chunk_size = 1
[[stage]]
function = {function}
params = {{ columns = ["line"] }}
[output]
path = "{DATA}/{name}-out.csv"
mode = "overwrite"
[platform]
concurrency = 2
""")

        rows = []
        for name, function in [("in-process (select)", '"select"'),
                               ("http, fanout serve (select)", f'{{ http = "http://{addr}/functions/select" }}')]:
            for extra, what in [(["--no-journal"], ""), ([], ", journal on")]:
                wall, s = run_json(job(f"http-{len(rows)}", function), runs, extra)
                rows.append((name + what, wall, s["invocations"]["total"], s["invocations"]["per_second"]))
    finally:
        host.terminate()
        host.wait()
    rate_table(f"W7 http: {n:,} one-record invocations over loopback, concurrency 2", rows)


class Moto:
    """An S3 server on loopback with the bucket `bench`: moto's server mode
    (PyPI), or with `server="s3s-fs"` the s3s-fs binary (crates.io: `cargo
    install s3s-fs@0.14.1 --features binary`), which serves a ranged GET
    by reading only the range, where moto copies the whole object. `client`
    is boto3's, `env` the standard AWS environment pointing at it."""

    def __init__(self, server="moto"):
        self.kind = server

    def __enter__(self):
        import socket
        import tempfile
        import boto3
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if self.kind == "s3s-fs":
            self.root = tempfile.TemporaryDirectory(dir=DATA)
            cmd = ["s3s-fs", "--host", "127.0.0.1", "--port", str(port), "--access-key", "bench",
                   "--secret-key", "bench", self.root.name]
        else:
            cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self.server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                                   aws_secret_access_key="bench", region_name="us-east-1")
        self.client.create_bucket(Bucket="bench")
        self.env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
                        AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
        return self

    def __exit__(self, *_):
        self.server.terminate()
        self.server.wait()


def text_parts(size, n=16):
    """The text of `size` and the same text as `n` part files cut at line
    ends, as data lakes hold it: (text, parts directory)."""
    text = os.path.join(DATA, f"text-{size}.txt")
    if not os.path.exists(text):
        sh([FANOUT, "datasets", "gen", "text", "--size", size, "--seed", "1", "--out", text])
    parts = os.path.join(DATA, f"text-{size}-parts")
    os.makedirs(parts, exist_ok=True)
    with open(text, "rb") as f:
        data = f.read()
    at = 0
    for i in range(n):
        end = len(data) if i == n - 1 else data.index(b"\n", (i + 1) * len(data) // n) + 1
        with open(os.path.join(parts, f"part-{i:02}.txt"), "wb") as out:
            out.write(data[at:end])
        at = end
    return text, parts


def bench_s3(size, runs, server):
    """W8: the word count of a text read from an S3 server on loopback
    (moto's server mode or s3s-fs, sharing the cores with fanout) against
    the same file read locally."""
    text, parts = text_parts(size)
    with Moto(server) as s3:
        s3.client.upload_file(text, "bench", "text.txt")
        # The parts too, as moto serves ranges fast only from small
        # objects: it copies the whole object for each ranged GET.
        for name in sorted(os.listdir(parts)):
            s3.client.upload_file(os.path.join(parts, name), "bench", f"parts/{name}")
        env = s3.env
        job = wordcount_job
        quiet = ["--progress", "never", "--show", "0"]
        programs = [("local file", [FANOUT, "run", job("s3-local", text)] + quiet, None),
                    ("s3://, one object", [FANOUT, "run", job("s3-remote", "s3://bench/text.txt")] + quiet, env),
                    ("local, 16 part files", [FANOUT, "run", job("s3-local-parts", f"{parts}/*.txt")] + quiet, None),
                    ("s3://, 16 part objects", [FANOUT, "run", job("s3-remote-parts", "s3://bench/parts/*.txt")] + quiet,
                     env)]
        report(f"W8 S3 reads ({server}): word count of {size} text", os.path.getsize(text), compare(programs, runs))


def bench_shuffle(size, runs):
    """W9: the word count of 16 part files with both stages on one
    `fanout serve` host over loopback HTTP, its shuffle on the coordinator
    (records inline) against the same through moto's S3 server (the host
    writes each map task's partitions as one object, the reducers read
    their pieces); and the same job in-process. Everything shares the two
    cores."""
    text, parts = text_parts(size)
    with Moto() as s3:
        host = subprocess.Popen([FANOUT, "serve", "--listen", "127.0.0.1:0", "--concurrency", "8"],
                                stderr=subprocess.PIPE, text=True, env=s3.env)
        try:
            addr = host.stderr.readline().split("http://")[1].split()[0]

            def job(name, map_fn, reduce_fn, extra=""):
                return job_file(f"{name}.toml", f"""
[input]
path = "{parts}/*.txt"
chunk_size = "4MiB"
[[stage]]
function = {map_fn}
[[stage]]
function = {reduce_fn}
key = ["word"]
partitions = 16
params = {{ sum = ["count"] }}
[output]
path = "{DATA}/{name}-out.csv"
sort = ["-sum_count", "word"]
limit = 100
mode = "overwrite"
[platform]
concurrency = 2
{extra}""")

            remote_map = f'{{ http = "http://{addr}/functions/word_count", schema = ["word:utf8", "count:int64"] }}'
            remote_sum = f'{{ http = "http://{addr}/functions/aggregate", schema = ["word:utf8", "sum_count:int64"] }}'
            quiet = ["--progress", "never", "--show", "0", "--no-journal"]
            programs = [
                ("in-process", [FANOUT, "run", job("shuffle-local", '"word_count"', '"aggregate"')] + quiet, None),
                ("fanout serve, shuffle on the coordinator",
                 [FANOUT, "run", job("shuffle-inline", remote_map, remote_sum)] + quiet, s3.env),
                ("fanout serve, shuffle through s3://",
                 [FANOUT, "run", job("shuffle-s3", remote_map, remote_sum,
                                     '[storage]\nscratch = "s3://bench/tmp/"\n')] + quiet, s3.env),
            ]
            rows = compare(programs, runs)
            outputs = {open(f"{DATA}/shuffle-{n}-out.csv").read() for n in ["local", "inline", "s3"]}
            if len(outputs) != 1:
                sys.exit("W9: the three runs' outputs differ")
            report(f"W9 shuffle: word count of {size} text in 16 parts, 16 partitions", os.path.getsize(text), rows)
        finally:
            host.terminate()
            host.wait()


if __name__ == "__main__":
    main()
