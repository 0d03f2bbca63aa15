"""The demo's job app (``taskrunner worker --app taskrunner.cli.demo:app``), its
runs ledger, its options and its workload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from taskrunner.jobs import (
    JobCancelled,
    JobContext,
    JobManager,
    JobSpec,
    JobTimeout,
    RetryPolicy,
)

#: Environment variable naming the runs ledger the handlers write to.
RUNS_ENV = "TASKRUNNER_DEMO_RUNS"
#: Job types, in the order they are shown.
TYPES = ("fast", "cpu", "io", "flaky", "slow")
_SLOW_SECONDS = 300.0  # the slow job never ends by itself: it is cancelled


class DemoError(Exception):
    """The demo cannot run as asked (a bad path, say): exit code 2."""


# ---------------------------------------------------------------- the job app


class _Ledger:
    """The runs ledger of one process: one SQLite connection per thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = ledger_connect(self._path)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def run(self, ctx: JobContext) -> Iterator[None]:
        """Record one handler run around the ``with`` body."""
        conn = self._conn()
        row = conn.execute(
            "INSERT INTO runs (job_id, type, attempt, pid, started) VALUES (?, ?, ?, ?, ?)"
            " RETURNING rowid",
            (ctx.job_id, ctx.job_type, ctx.attempt, os.getpid(), time.time()),
        ).fetchone()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except (JobCancelled, JobTimeout):
            outcome = "cancelled"
            raise
        finally:
            conn.execute("UPDATE runs SET outcome = ? WHERE rowid = ?", (outcome, row[0]))


def ledger_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # A committed row survives the process being killed (not a power cut): enough here.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS runs (job_id TEXT NOT NULL, type TEXT NOT NULL,"
        " attempt INTEGER NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL, outcome TEXT)"
    )
    return conn


def app(manager: JobManager) -> None:
    """Register the demo's job handlers (``taskrunner worker --app taskrunner.cli.demo:app``).

    If ``TASKRUNNER_DEMO_RUNS`` names a file, every run is recorded there.
    """
    path = os.environ.get(RUNS_ENV)
    ledger = _Ledger(path) if path else None
    if path:
        ledger_connect(path).close()  # create the table before any job runs

    def recorded(fn: Callable[[JobContext, Any], Any]) -> Callable[[JobContext, Any], Any]:
        def handler(ctx: JobContext, args: Any) -> Any:
            if ledger is None:
                return fn(ctx, args)
            with ledger.run(ctx):
                return fn(ctx, args)

        return handler

    manager.register("fast", recorded(_fast))
    manager.register("cpu", recorded(_cpu), may_block=False)
    manager.register("io", recorded(_io))
    manager.register(
        "flaky",
        recorded(_flaky),
        retry=RetryPolicy(max_attempts=4, initial_delay=0.2, ratio=2.0, max_delay=2.0, jitter=0.2),
    )
    manager.register("slow", recorded(_slow))


def _fast(ctx: JobContext, args: Any) -> int:
    """A job that is done at once."""
    return int(args["n"]) * 2


def _cpu(ctx: JobContext, args: Any) -> str:
    """CPU-bound: a chain of SHA-256 hashes (on the pool's CPU workers)."""
    digest = str(args["n"]).encode()
    for i in range(int(args["rounds"])):
        digest = hashlib.sha256(digest).digest()
        if i % 2000 == 0:
            ctx.check()
    return digest.hex()[:16]


def _io(ctx: JobContext, args: Any) -> int:
    """I/O-like: waits (on the blocking workers), waking early if cancelled."""
    ctx.sleep(float(args["ms"]) / 1000)
    return int(args["n"])


def _flaky(ctx: JobContext, args: Any) -> str:
    """Fails with a transient error before attempt ``succeed_on``, then succeeds."""
    if ctx.attempt < int(args["succeed_on"]):
        raise ConnectionError(f"simulated outage on attempt {ctx.attempt}")
    return f"ok on attempt {ctx.attempt}"


def _slow(ctx: JobContext, args: Any) -> str:
    """Runs for ``seconds`` unless cancelled (the demo cancels it)."""
    end = time.monotonic() + float(args["seconds"])
    while time.monotonic() < end:
        ctx.sleep(0.05)
    return "done"


# ---------------------------------------------------------------- options and workload


@dataclasses.dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``taskrunner demo`` was asked to do."""

    db: Path | None = None
    jobs: int = 400
    overwrite: bool = False
    plain: bool = False
    timeout: float = 120.0
    seed: int = 7


def workload(n: int, rng: random.Random) -> list[JobSpec]:
    """N job specs: the slow job first, then a shuffled mix of the other types."""
    flaky = max(1, n // 10)
    cpu = n // 5
    io = (n * 3) // 10
    fast = max(0, n - 1 - flaky - cpu - io)
    specs: list[JobSpec] = []
    for i in range(fast):
        delay = round(rng.uniform(0.3, 1.5), 3) if rng.random() < 0.1 else None
        args = {"n": i, "delay": delay}
        specs.append(JobSpec("fast", args, priority=rng.choice((-1, 0, 0, 1)), delay=delay))
    for i in range(cpu):
        specs.append(JobSpec("cpu", {"n": i, "rounds": 20_000}, priority=rng.choice((-1, 0, 1))))
    for i in range(io):
        delay = round(rng.uniform(0.3, 1.5), 3) if rng.random() < 0.1 else None
        args = {"n": i, "ms": rng.randint(50, 250), "delay": delay}
        specs.append(JobSpec("io", args, priority=rng.choice((0, 1)), delay=delay))
    for i in range(flaky):
        specs.append(JobSpec("flaky", {"n": i, "succeed_on": 2}, max_attempts=4))
    rng.shuffle(specs)
    slow = JobSpec("slow", {"seconds": _SLOW_SECONDS}, priority=10)
    return [slow, *specs[: max(0, n - 1)]]
