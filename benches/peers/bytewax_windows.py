"""The stream benchmark's windowed count in Bytewax (benches/stream.py):
the JSON-lines files of DIR read in name order, each record parsed, keyed
by page, counted and summed per 10 s tumbling window of its event time
`ts` (5 s allowed: Bytewax's EventClock waits that long), the windows
written as JSON lines (page, window_start, count, sum_n) to OUT.

The files are read by a source of our own with one partition, which reads
them one after another in name order, in batches of lines: each file is
in time order (to within the 5 s), and so is the name order of the files.
Bytewax's DirSource is wrong here: it makes each file a partition, the
partitions read in parallel and interleaved, so the window operator's
clock (the largest timestamp seen, less the 5 s) runs ahead with one file
while another is still being read, and that one's records come in behind
the watermark, late, and are dropped (of 200,000 records in 4 files, 3 in
4 were; of the benchmark's 2,000,000 in 20, 94 in 100). With one
partition, `-w 2` adds a worker to the windowing (records go to workers
by page), not to the reading. The EventClock's watermark also moves on
with the system time since the last timestamp, so a stall of over 3 s in
the reading would make records late too: benches/stream.py checks the
output against its own count.

Run: STREAM_DIR=DIR STREAM_OUT=OUT python3 -m bytewax.run benches.peers.bytewax_windows:flow [-w N]
"""

import json
import os
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import List, Optional, Tuple

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.files import FileSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import EventClock, TumblingWindower

LENGTH = timedelta(seconds=10)
ALIGN = datetime(2026, 1, 1, tzinfo=timezone.utc)


class _FilesInOrder(StatefulSourcePartition[bytes, Tuple[int, int]]):
    """The files one after another; its state: (file index, byte offset)."""

    def __init__(self, paths: List[Path], batch_size: int, resume_state: Optional[Tuple[int, int]]):
        self._paths = paths
        self._batch_size = batch_size
        self._index, offset = resume_state or (0, 0)
        self._f = None
        if self._index < len(paths):
            self._f = open(paths[self._index], "rb")
            self._f.seek(offset)

    def next_batch(self) -> List[bytes]:
        while self._f is not None:
            lines = list(islice(self._f, self._batch_size))
            if lines:
                return lines
            self._f.close()
            self._index += 1
            self._f = open(self._paths[self._index], "rb") if self._index < len(self._paths) else None
        raise StopIteration()

    def snapshot(self) -> Tuple[int, int]:
        return (self._index, self._f.tell() if self._f is not None else 0)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


class FilesInOrderSource(FixedPartitionedSource[bytes, Tuple[int, int]]):
    """The lines of DIR's files matching GLOB, file by file in name order,
    as one partition (read by one worker)."""

    def __init__(self, dir_path: Path, glob_pat: str = "*", batch_size: int = 1000):
        self._dir_path = dir_path
        self._glob_pat = glob_pat
        self._batch_size = batch_size

    def list_parts(self) -> List[str]:
        return ["files"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Tuple[int, int]]) -> _FilesInOrder:
        paths = sorted(self._dir_path.glob(self._glob_pat))
        return _FilesInOrder(paths, self._batch_size, resume_state)


flow = Dataflow("clicks")
lines = op.input("in", flow, FilesInOrderSource(Path(os.environ["STREAM_DIR"]), glob_pat="*.jsonl"))
records = op.map("parse", lines, json.loads)
keyed = op.key_on("page", records, lambda r: r["page"])
clock = EventClock(
    ts_getter=lambda r: datetime.fromisoformat(r["ts"].replace("Z", "+00:00")),
    wait_for_system_duration=timedelta(seconds=5),
)
windower = TumblingWindower(length=LENGTH, align_to=ALIGN)
counted = win.fold_window(
    "count",
    keyed,
    clock,
    windower,
    lambda: (0, 0),
    lambda acc, r: (acc[0] + 1, acc[1] + r["n"]),
    lambda a, b: (a[0] + b[0], a[1] + b[1]),
)


def row(kv):
    page, (window_id, (count, sum_n)) = kv
    start = (ALIGN + LENGTH * window_id).isoformat().replace("+00:00", "Z")
    # FileSink routes (key, line) pairs: every row by one key, to one file.
    return ("all", json.dumps({"page": page, "window_start": start, "count": count, "sum_n": sum_n}))


rows = op.map("row", counted.down, row)
op.output("out", rows, FileSink(Path(os.environ["STREAM_OUT"])))
