"""The fault harness's ledger: what every handler run did, independent of the job store.

Each handler run appends records to one file shared by every worker process:
``start`` when the handler begins, then exactly one of ``end`` (it returned; the
record carries the result it returned), ``error`` (it raised on purpose) or
``stopped`` (it was told to stop: lease lost, shutdown, ...) -- unless its process
was killed first.  A record is one JSON line written with a single ``write`` on a
file opened with ``O_APPEND`` and made durable with ``fsync`` before the handler
goes on, so the ledger survives SIGKILL and lines of concurrent writers never
interleave.  Times are ``time.monotonic()`` (one clock for every process on the
machine, so runs and fault windows compare) and ``time.time()``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "Run", "read_runs"]


class Ledger:
    """An append-only ledger file; thread-safe (each append is one ``write``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()  # guards nothing in memory: orders write+fsync pairs

    def append(self, event: str, **fields: Any) -> None:
        record = {"ev": event, "m": time.monotonic(), "t": time.time(), **fields}
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        with self._lock:
            written = os.write(self._fd, line)
            os.fsync(self._fd)
        if written != len(line):  # a short write to a regular file: the disk is full
            raise OSError(f"ledger: short write ({written} of {len(line)} bytes)")

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class Run:
    """One handler run, assembled from its ledger records."""

    job: str
    attempt: int
    pid: int
    type: str
    start_m: float
    start_t: float
    end: str | None = None  # "end", "error", "stopped", or None (its process was killed)
    end_m: float | None = None
    reason: str | None = None
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_runs(path: str | os.PathLike[str]) -> tuple[list[Run], list[str]]:
    """The runs in the ledger at ``path``, in start order, and the problems found
    in it (a record that is not JSON, an end without a start, two starts of one
    (job, attempt), two ends of one run)."""
    problems: list[str] = []
    runs: dict[tuple[str, int], list[Run]] = {}
    text = Path(path).read_bytes().decode(errors="replace") if Path(path).exists() else ""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            problems.append(f"ledger line {number} is not a record: {line[:80]!r}")
            continue
        key = (rec["job"], int(rec["attempt"]))
        if rec["ev"] == "start":
            run = Run(rec["job"], key[1], rec["pid"], rec["type"], rec["m"], rec["t"])
            runs.setdefault(key, []).append(run)
            continue
        mine = [r for r in runs.get(key, []) if r.pid == rec["pid"]]
        if not mine:
            problems.append(f"ledger line {number}: {rec['ev']} of {key} without a start")
            continue
        run = mine[-1]
        if run.end is not None:
            problems.append(f"ledger line {number}: a second end of run {key}")
            continue
        run.end, run.end_m = rec["ev"], rec["m"]
        run.reason, run.result = rec.get("reason"), rec.get("result")
    flat = sorted((r for rs in runs.values() for r in rs), key=lambda r: r.start_m)
    return flat, problems
