"""The stream benchmark's windowed count in Bytewax (benches/stream.py):
the JSON-lines files of DIR read by Bytewax's DirSource, each record
parsed, keyed by page, counted and summed per 10 s tumbling window of its
event time `ts` (5 s allowed: Bytewax's EventClock waits that long), the
windows written as JSON lines to OUT.

Run: STREAM_DIR=DIR STREAM_OUT=OUT python3 -m bytewax.run benches.peers.bytewax_windows:flow [-w N]
"""

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.files import DirSource, FileSink
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower

flow = Dataflow("clicks")
lines = op.input("in", flow, DirSource(Path(os.environ["STREAM_DIR"]), glob_pat="*.jsonl"))
records = op.map("parse", lines, json.loads)
keyed = op.key_on("page", records, lambda r: r["page"])
clock = EventClock(
    ts_getter=lambda r: datetime.fromisoformat(r["ts"].replace("Z", "+00:00")),
    wait_for_system_duration=timedelta(seconds=5),
)
windower = TumblingWindower(length=timedelta(seconds=10), align_to=datetime(2026, 1, 1, tzinfo=timezone.utc))
counted = win.fold_window(
    "count",
    keyed,
    clock,
    windower,
    lambda: (0, 0),
    lambda acc, r: (acc[0] + 1, acc[1] + r["n"]),
    lambda a, b: (a[0] + b[0], a[1] + b[1]),
)
# FileSink routes (key, line) pairs: every row by one key, to one file.
rows = op.map(
    "row",
    counted.down,
    lambda kv: ("all", json.dumps({"page": kv[0], "window": kv[1][0], "count": kv[1][1][0], "sum_n": kv[1][1][1]})),
)
op.output("out", rows, FileSink(Path(os.environ["STREAM_OUT"])))
