"""The stream benchmark's windowed count in PyFlink (benches/stream.py):
Flink SQL run from Python, in streaming mode. The JSON-lines files of DIR
are a filesystem table (format json, `ts` read as an ISO-8601 TIMESTAMP_LTZ)
with the watermark `ts - INTERVAL '5' SECOND` (5 s allowed out-of-orderness);
a TUMBLE window TVF of 10 s, grouped by page and window, gives COUNT(*) and
SUM(n) per page and window, written as JSON lines to OUT.

The source is bounded (no monitor interval), so at the end of input it
emits a final watermark and every window fires. The rows (one per page and
window: a few thousand) come back to Python by to_pandas, in Arrow
batches, and are written to OUT (a filesystem sink in streaming mode
commits its files only on checkpoints).

Run: STREAM_DIR=DIR STREAM_OUT=OUT target/peers/pyflink/bin/python benches/peers/pyflink_windows.py [PARALLELISM]
(PARALLELISM: the argument, else STREAM_PARALLELISM, else 1.) PyFlink lives
in its own virtualenv, apart from the system's Python packages:
  python3 -m venv target/peers/pyflink && target/peers/pyflink/bin/pip install apache-flink==2.3.0
It needs a JDK 11, 17 or 21 on the PATH (Debian: openjdk-17-jre-headless).
Flink's logs go to FLINK_LOG_DIR (default target/peers/pyflink-log), its
temporary files to /tmp.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Set before pyflink starts its JVM gateway, which reads it.
os.environ.setdefault("FLINK_LOG_DIR", os.path.join(ROOT, "target", "peers", "pyflink-log"))
os.makedirs(os.environ["FLINK_LOG_DIR"], exist_ok=True)

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402


def sql_string(s):
    return "'" + s.replace("'", "''") + "'"


def main():
    src = os.path.abspath(os.environ["STREAM_DIR"])
    out = os.environ["STREAM_OUT"]
    parallelism = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STREAM_PARALLELISM", "1"))

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("parallelism.default", str(parallelism))
    conf.set("table.local-time-zone", "UTC")
    conf.set("io.tmp.dirs", "/tmp")

    # One source table per file, in name order, unioned: each file is a
    # time-ordered partition of the stream with its own watermark, and the
    # window's watermark is their minimum (as with a Kafka topic's
    # partitions). One table over the whole directory is wrong here: the
    # FileSource hands its files to readers in no particular order, a
    # reader's watermark only goes forward, and a file read after a later
    # one is all late and dropped (half the records, on a 4-file test).
    files = sorted(f for f in os.listdir(src) if f.endswith(".jsonl"))
    for i, name in enumerate(files):
        t_env.execute_sql(f"""
            CREATE TEMPORARY TABLE clicks_{i} (
                page STRING,
                ts TIMESTAMP_LTZ(3),
                n BIGINT,
                WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
            ) WITH (
                'connector' = 'filesystem',
                'path' = {sql_string("file://" + os.path.join(src, name))},
                'format' = 'json',
                'json.timestamp-format.standard' = 'ISO-8601'
            )""")
    t_env.execute_sql("CREATE TEMPORARY VIEW clicks AS "
                      + " UNION ALL ".join(f"SELECT page, ts, n FROM clicks_{i}" for i in range(len(files))))
    windows = t_env.sql_query("""
        SELECT page,
               DATE_FORMAT(window_start, 'yyyy-MM-dd''T''HH:mm:ss.SSS''Z''') AS window_start,
               COUNT(*) AS `count`,
               SUM(n) AS sum_n
        FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
        GROUP BY page, window_start, window_end""")
    # to_pandas runs the job and brings its rows back in Arrow batches;
    # execute().collect() crosses Py4J once a row (25 s for 10,050 rows).
    rows = windows.to_pandas()
    with open(out, "w") as f:
        for page, start, count, sum_n in rows.itertuples(index=False):
            f.write(json.dumps({"page": page, "window_start": start, "count": int(count), "sum_n": int(sum_n)}) + "\n")


if __name__ == "__main__":
    main()
