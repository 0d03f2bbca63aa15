"""The demo's worker processes (started, killed, stopped) and the observer
sampling the store for the progress display.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskrunner.cli.console import Progress
from taskrunner.cli.demo.app import RUNS_ENV, TYPES
from taskrunner.jobs import (
    JobState,
    SQLiteJobStore,
)

_FINAL = [JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value]
_LEASE = 2.0  # short, so the killed worker's jobs come back quickly


# ---------------------------------------------------------------- observing the store


@dataclasses.dataclass(slots=True)
class _Snapshot:
    states: dict[str, int]
    finished: dict[str, int]
    running_by_pid: dict[int, int]

    @property
    def unfinished(self) -> int:
        return self.states.get("pending", 0) + self.states.get("running", 0)

    @property
    def total_finished(self) -> int:
        return sum(self.finished.values())


class Observer:
    """Samples the store and the ledger (from a repeating task) for the display and the driver."""

    def __init__(self, store: SQLiteJobStore, runs: Path, progress: Progress) -> None:
        self._store = store
        self._runs = runs
        self._progress = progress
        self._ledger_lock = threading.Lock()  # guards _ledger (used by two threads)
        self._ledger: sqlite3.Connection | None = None
        self._cond = threading.Condition()
        self._snap = _Snapshot({}, {}, {})
        self.error: BaseException | None = None

    def sample(self) -> None:
        try:
            snap = self._take()
        except Exception as exc:  # shown at the end; the driver's waits time out
            self.error = exc
            return
        with self._cond:
            self._snap = snap
            self._cond.notify_all()
        self._progress.update("jobs", snap.total_finished)
        for job_type in TYPES:
            self._progress.update(job_type, snap.finished.get(job_type, 0))

    def _take(self) -> _Snapshot:
        store = self._store
        states = {s.value: store.count_jobs(states=[s]) for s in JobState}
        finished = {t: store.count_jobs(states=_FINAL, types=[t]) for t in TYPES}
        rows = self.ledger("SELECT pid, count(*) FROM runs WHERE outcome IS NULL GROUP BY pid")
        return _Snapshot(states, finished, {int(pid): int(n) for pid, n in rows})

    def ledger(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the runs ledger (none before a worker created it)."""
        with self._ledger_lock:
            if self._ledger is None:
                if not self._runs.exists():
                    return []
                self._ledger = sqlite3.connect(self._runs, timeout=30, check_same_thread=False)
            try:
                return list(self._ledger.execute(sql, params))
            except sqlite3.OperationalError:  # the table is not created yet
                return []

    def wait(self, predicate: Callable[[_Snapshot], bool], timeout: float) -> _Snapshot | None:
        """Wait until a sample satisfies ``predicate``; None on timeout."""
        with self._cond:
            if self._cond.wait_for(lambda: predicate(self._snap), timeout):
                return self._snap
            return None

    def close(self) -> None:
        with self._ledger_lock:
            if self._ledger is not None:
                self._ledger.close()


# ---------------------------------------------------------------- worker processes


class Workers:
    """The worker processes the demo starts, numbered from 1."""

    def __init__(self, db: Path, runs: Path, logs: Path) -> None:
        self._db = db
        self._runs = runs
        self._logs = logs
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._files: list[Any] = []

    def log_path(self, number: int) -> Path:
        return self._logs / f"worker-{number}.log"

    def start(self) -> tuple[int, int]:
        """Start one more worker; returns (its number, its pid)."""
        number = len(self.procs) + 1
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, **{RUNS_ENV: str(self._runs)})
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
        )
        log = open(self.log_path(number), "wb")  # noqa: SIM115 (closed in close())
        self._files.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskrunner",
                "worker",
                "--db",
                str(self._db),
                "--app",
                "taskrunner.cli.demo:app",
                "--workers",
                "2",
                "--lease",
                str(_LEASE),
                "--poll",
                "0.2",
                "--grace",
                "10",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.procs[number] = proc
        return number, proc.pid

    def number_of(self, pid: int) -> int | None:
        return next((n for n, p in self.procs.items() if p.pid == pid), None)

    def died(self, killed: set[int]) -> list[int]:
        """Workers that exited although the demo did not stop them."""
        return [n for n, p in self.procs.items() if n not in killed and p.poll() is not None]

    def stop_all(self, killed: set[int]) -> dict[int, int | None]:
        """SIGTERM every live worker and wait; returns exit codes (None: had to be killed)."""
        codes: dict[int, int | None] = {}
        for n, proc in self.procs.items():
            if n not in killed and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for n, proc in self.procs.items():
            if n in killed:
                continue
            try:
                codes[n] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[n] = None
        return codes

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in self._files:
            f.close()
