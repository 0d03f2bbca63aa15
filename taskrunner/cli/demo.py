"""``taskrunner demo``: a realistic run on a SQLite file that checks its own promises.

The flow
--------
1. A fresh SQLite job store and a *runs ledger* (a second SQLite file) are
   made.  Two worker processes start on the store
   (``python -m taskrunner worker --app taskrunner.cli.demo:app``).
2. The parent submits N jobs in waves: fast ones, CPU-bound ones, I/O-like
   ones (some of them delayed), flaky ones that fail on their first attempt
   and succeed on a retry, and one slow job.
3. Meanwhile the parent exercises the runtime on its own pool: tasks of
   mixed priorities, a sequenced runner, a bounded single-thread runner
   pushing back on a fast producer (REJECT and WAIT policies), delayed
   tasks (a quarter of them cancelled) and a fixed-rate repeating task.  The
   progress display itself is fed by a repeating task that samples the store.
4. Midway, the worker running the most attempts is killed with SIGKILL and a
   third worker starts on the same store; the survivors recover the killed
   worker's jobs once their leases expire.  The slow job is cancelled through
   the job manager while it runs.
5. When every job is final the workers get SIGTERM (a graceful stop), and the
   store and the ledger are compared: every job must be in its expected
   final state (the slow one cancelled, the rest succeeded), no attempt may
   have run twice, and no job may have run again after its outcome was
   stored.  The exit code is 0 only if that holds.

The ledger
----------
Every handler run inserts a row (job id, attempt, pid) before it starts and
sets its outcome when it ends (``ok``, ``error``, ``cancelled``); a run cut
short by the SIGKILL keeps a NULL outcome.  A handler that finished just
before the kill, whose outcome the store had not yet recorded, runs again on
recovery: that is at-least-once delivery and is reported, not counted as a
duplicate.  Only a second run of the *same* attempt, or a run after the job's
recorded outcome, is a duplicate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from taskrunner.cli.console import Progress, print_table, use_rich
from taskrunner.errors import QueueFullError
from taskrunner.jobs import (
    JobCancelled,
    JobContext,
    JobManager,
    JobSpec,
    JobState,
    JobTimeout,
    RetryPolicy,
    SQLiteJobStore,
)
from taskrunner.jobs.model import Job
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.repeating import RepeatingMode
from taskrunner.runtime.runners.sequenced import SequencedTaskRunner
from taskrunner.runtime.runners.single_thread import QueuePolicy, SingleThreadTaskRunner
from taskrunner.runtime.traits import TaskPriority, TaskTraits

__all__ = ["RUNS_ENV", "DemoError", "DemoOptions", "app", "run_demo"]

#: Environment variable naming the runs ledger the handlers write to.
RUNS_ENV = "TASKRUNNER_DEMO_RUNS"
#: Job types, in the order they are shown.
TYPES = ("fast", "cpu", "io", "flaky", "slow")
_FINAL = [JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value]
_LEASE = 2.0  # short, so the killed worker's jobs come back quickly
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
            conn = _ledger_connect(self._path)
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


def _ledger_connect(path: str) -> sqlite3.Connection:
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
        _ledger_connect(path).close()  # create the table before any job runs

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


def _workload(n: int, rng: random.Random) -> list[JobSpec]:
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


# ---------------------------------------------------------------- the runtime showcase


@dataclasses.dataclass(slots=True)
class _Check:
    what: str
    detail: str
    ok: bool | None  # None: a figure, not a promise


class _Counter:
    """A thread-safe count with a wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._cond:
            self.value += n
            self._cond.notify_all()

    def wait_for(self, target: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.value >= target, timeout)


def _runtime_showcase(pool: ThreadPool, progress: Progress, rng: random.Random) -> list[_Check]:
    """Exercise the runners in this process; returns what was checked and measured."""
    checks: list[_Check] = []
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        progress.update("runtime", done[0])

    checks.append(_priorities(rng))
    advance(_PRIORITY_TASKS)
    progress.event("runtime: 3,000 tasks of mixed priority ran on a 2-worker pool")
    checks.append(_sequenced(pool))
    advance(_SEQUENCE_TASKS)
    checks.extend(_bounded(pool))
    advance(_BOUNDED_TASKS * 2)
    progress.event("runtime: the bounded single-thread runner pushed back on a fast producer")
    checks.extend(_delayed(pool, rng))
    advance(_DELAYED_TASKS)
    progress.event("runtime: delayed tasks fired (a quarter were cancelled first)")
    return checks


_PRIORITY_TASKS = 3000
_SEQUENCE_TASKS = 2000
_BOUNDED_TASKS = 300
_DELAYED_TASKS = 1000
RUNTIME_TASKS = _PRIORITY_TASKS + _SEQUENCE_TASKS + 2 * _BOUNDED_TASKS + _DELAYED_TASKS


def _priorities(rng: random.Random) -> _Check:
    """Queue tasks of three priorities before the pool starts; see in what order they start."""
    levels = [TaskPriority(i % 3) for i in range(_PRIORITY_TASKS)]
    rng.shuffle(levels)
    order = [0] * _PRIORITY_TASKS  # order[i]: when task i started (1 = first)
    started = [0]
    lock = threading.Lock()  # guards started and order

    def task(i: int) -> None:
        with lock:
            started[0] += 1
            order[i] = started[0]
        sum(range(300))  # a little work

    pool = ThreadPool(2, name="priorities", start=False)  # deferred start: queue first
    try:
        for i, level in enumerate(levels):
            pool.post_task(task, i, traits=TaskTraits(priority=level))
        pool.start()
        pool.wait_idle()
    finally:
        pool.shutdown()
    means = {
        level: statistics.mean(order[i] for i in range(_PRIORITY_TASKS) if levels[i] is level)
        for level in TaskPriority
    }
    b, v, e = (
        means[TaskPriority.USER_BLOCKING],
        means[TaskPriority.USER_VISIBLE],
        means[TaskPriority.BEST_EFFORT],
    )
    return _Check(
        "priorities",
        f"mean start position: USER_BLOCKING {b:.0f}, USER_VISIBLE {v:.0f}, BEST_EFFORT {e:.0f}",
        b < v < e,
    )


def _sequenced(pool: ThreadPool) -> _Check:
    seq = SequencedTaskRunner(pool, name="demo-sequence")
    seen: list[int] = []
    for i in range(_SEQUENCE_TASKS):
        seq.post_task(seen.append, i)
    seq.wait_idle()
    most = seq.stats()["max_concurrency_seen"]
    seq.shutdown()
    ok = seen == list(range(_SEQUENCE_TASKS)) and most == 1
    return _Check(
        "sequenced runner",
        f"{len(seen):,} tasks on the pool ran in posting order, at most {most} at a time",
        ok,
    )


def _bounded(pool: ThreadPool) -> list[_Check]:
    """A slow consumer (0.5 ms a task) behind 16 slots, fed as fast as possible."""

    def consume() -> None:
        time.sleep(0.0005)  # simulated device I/O

    checks = []
    single = SingleThreadTaskRunner(pool, capacity=16, policy=QueuePolicy.REJECT, name="reject")
    refused = 0
    for _ in range(_BOUNDED_TASKS):
        try:
            single.post_task(consume)
        except QueueFullError:
            refused += 1
    single.wait_idle()
    stats = single.stats()
    single.shutdown()
    ran = stats["completed"]
    checks.append(
        _Check(
            "bounded runner, REJECT",
            f"capacity 16: {ran} ran, {refused} refused with QueueFullError "
            f"(counted: {stats['rejected']})",
            ran + refused == _BOUNDED_TASKS and refused == stats["rejected"] and refused > 0,
        )
    )
    single = SingleThreadTaskRunner(pool, capacity=16, policy=QueuePolicy.WAIT, name="wait")
    t0 = time.perf_counter()
    for _ in range(_BOUNDED_TASKS):
        single.post_task(consume)
    blocked = time.perf_counter() - t0
    single.wait_idle()
    stats = single.stats()
    single.shutdown()
    checks.append(
        _Check(
            "bounded runner, WAIT",
            f"capacity 16: all {stats['completed']} ran; the producer was held to the "
            f"consumer's pace ({blocked * 1000:.0f} ms to post {_BOUNDED_TASKS})",
            stats["completed"] == _BOUNDED_TASKS and stats["rejected"] == 0,
        )
    )
    return checks


def _delayed(pool: ThreadPool, rng: random.Random) -> list[_Check]:
    clock = pool.clock
    lateness: list[float] = []
    lock = threading.Lock()
    fired = _Counter()
    cancelled_ran = [0]

    def fire(due_ns: int, cancelled: bool) -> None:
        late_ms = (clock.now_ns() - due_ns) / 1e6
        with lock:
            lateness.append(late_ms)
            if cancelled:
                cancelled_ran[0] += 1
        fired.add()

    handles = []
    for i in range(_DELAYED_TASKS):
        delay = rng.uniform(0.05, 1.0)
        due = clock.now_ns() + int(delay * 1e9)
        handles.append(pool.post_delayed_task(fire, delay, due, i % 4 == 0))
    cancelled = sum(1 for h in handles[::4] if h.cancel())
    expected = _DELAYED_TASKS - cancelled
    complete = fired.wait_for(expected, 20.0)
    pool.wait_idle(5.0)
    with lock:
        late = sorted(lateness)
        ran_cancelled = cancelled_ran[0]
    early = sum(1 for x in late if x < 0)
    p50 = late[len(late) // 2] if late else float("nan")
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))] if late else float("nan")
    return [
        _Check(
            "delayed tasks",
            f"{len(late)} of {expected} fired, none early ({early} early); "
            f"{cancelled} cancelled, {ran_cancelled} of those ran",
            complete and len(late) == expected and early == 0 and ran_cancelled == 0,
        ),
        _Check("delayed lateness", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms after the due time", None),
    ]


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


class _Observer:
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


class _Workers:
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


# ---------------------------------------------------------------- verdict


@dataclasses.dataclass(slots=True)
class _Verdict:
    lost: list[str]
    twice: list[str]
    reexecuted: int  # handler had finished, outcome not stored before the kill: ran again
    recovered: int  # jobs interrupted by the kill and finished by another worker
    retries: int  # failed attempts that were retried (the flaky jobs)
    runs: int


def _ledger_rows(runs: Path) -> list[tuple[str, str, int, int, str | None]]:
    if not runs.exists():
        return []
    conn = sqlite3.connect(runs, timeout=30)
    try:
        return list(conn.execute("SELECT job_id, type, attempt, pid, outcome FROM runs"))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _judge(
    ids: list[str], jobs: dict[str, Job], slow_id: str, runs: Path, killed_pids: set[int]
) -> _Verdict:
    rows = _ledger_rows(runs)
    by_job: dict[str, list[tuple[int, int, str | None]]] = {}
    for job_id, _type, attempt, pid, outcome in rows:
        by_job.setdefault(job_id, []).append((attempt, pid, outcome))
    lost: list[str] = []
    twice: list[str] = []
    reexecuted = recovered = 0
    for job_id in ids:
        job = jobs.get(job_id)
        if job is None:
            lost.append(f"{job_id}: missing from the store")
            continue
        expected = JobState.CANCELLED if job_id == slow_id else JobState.SUCCEEDED
        if job.state is not expected:
            lost.append(f"{job_id} ({job.type}): {job.state}, expected {expected}")
        mine = by_job.get(job_id, [])
        attempts = [a for a, _, _ in mine]
        if len(attempts) != len(set(attempts)):
            twice.append(f"{job_id} ({job.type}): an attempt ran twice")
        if any(a > job.attempt for a in attempts):
            twice.append(f"{job_id} ({job.type}): ran after its outcome was stored")
        if job.state is JobState.SUCCEEDED and not any(
            a == job.attempt and o == "ok" for a, _, o in mine
        ):
            lost.append(f"{job_id} ({job.type}): stored as succeeded but its run never finished")
        reexecuted += sum(1 for a, _, o in mine if o == "ok" and a < job.attempt)
        if any(pid in killed_pids and (o is None or a < job.attempt) for a, pid, o in mine):
            recovered += 1  # held by the killed worker, taken back and finished by a survivor
    retries = sum(1 for _, _, _, _, o in rows if o == "error")
    return _Verdict(lost, twice, reexecuted, recovered, retries, len(rows))


def _all_jobs(store: SQLiteJobStore) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    cursor: str | None = None
    while True:
        page = store.list_jobs(limit=1000, after=cursor)
        jobs.update((j.id, j) for j in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return jobs


def _delay_of(job: Job) -> float:
    """The delay a demo job was submitted with (stored in its arguments), or 0."""
    try:
        delay = json.loads(job.args).get("delay")
    except (ValueError, AttributeError):
        return 0.0
    return float(delay) if isinstance(delay, int | float) else 0.0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


# ---------------------------------------------------------------- the driver


def _prepare(options: DemoOptions) -> tuple[Path, Path, Path, Path | None]:
    """(db, runs ledger, log directory, temporary directory to remove or None)."""
    if options.jobs < 10:
        raise DemoError(f"--jobs must be at least 10, got {options.jobs}")
    if options.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="taskrunner-demo-"))
        return tmp / "demo.db", tmp / "demo.db.runs", tmp, tmp
    db = options.db
    if not db.parent.is_dir():
        raise DemoError(f"no such directory for the database: {db.parent}")
    runs = db.with_name(db.name + ".runs")
    logs = db.with_name(db.name + ".logs")
    companions = [db, runs, *(Path(f"{p}{s}") for p in (db, runs) for s in ("-wal", "-shm"))]
    if db.exists():
        if not options.overwrite:
            raise DemoError(f"{db} exists; the demo needs a new store (pass --overwrite)")
        for path in companions:
            path.unlink(missing_ok=True)
        shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(exist_ok=True)
    return db, runs, logs, None


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo; returns 0 if no job was lost or ran twice, else 1.

    Raises :class:`DemoError` for options it cannot run with.
    """
    stream = out or sys.stdout
    db, runs, logs, tmp = _prepare(options)
    code = 1
    try:
        code = _run(options, db, runs, logs, tmp is not None, stream)
    finally:
        if tmp is not None:
            if code == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(
                    f"The store, the runs ledger and the worker logs are kept in {tmp}", file=stream
                )
    return code


def _run(
    options: DemoOptions, db: Path, runs: Path, logs: Path, temporary: bool, out: TextIO
) -> int:
    rng = random.Random(options.seed)
    fancy = use_rich(out, options.plain)
    specs = _workload(options.jobs, rng)
    per_type = {t: sum(1 for s in specs if s.job_type == t) for t in TYPES}
    print(
        f"taskrunner demo: {len(specs)} jobs on {'a temporary ' if temporary else ''}"
        f"SQLite store {db}\n"
        f"  mix: {', '.join(f'{n} {t}' for t, n in per_type.items())}; "
        f"2 worker processes, one killed with SIGKILL midway",
        file=out,
        flush=True,
    )
    store = SQLiteJobStore(db)
    pool = ThreadPool(2, name="demo")
    manager = JobManager(store, pool)  # submits and cancels; never started, so never claims
    app(manager)
    workers = _Workers(db, runs, logs)
    progress = Progress(fancy=fancy, stream=out)
    observer = _Observer(store, runs, progress)
    killed: set[int] = set()
    killed_pids: set[int] = set()
    problems: list[str] = []
    runtime: list[_Check] = []
    ticks = _Counter()
    t_start = time.time()
    try:
        with progress:
            progress.add("jobs", "jobs finished", len(specs))
            for job_type in TYPES:
                progress.add(job_type, f"  {job_type}", per_type[job_type])
            progress.add("runtime", "runtime tasks (this process)", RUNTIME_TASKS)
            for _ in range(2):
                number, pid = workers.start()
                progress.event(f"worker {number} started (pid {pid})")
            sampler = pool.post_repeating_task(
                observer.sample,
                0.1,
                initial_delay=0,
                traits=TaskTraits(may_block=True),
                name="demo-sampler",
            )
            ticker = pool.post_repeating_task(
                ticks.add,
                0.05,
                mode=RepeatingMode.FIXED_RATE,
                name="demo-ticker",
            )
            t_ticks = time.monotonic()
            showcase_result: list[list[_Check]] = []
            showcase_error: list[BaseException] = []

            def showcase() -> None:
                try:
                    showcase_result.append(_runtime_showcase(pool, progress, rng))
                except BaseException as exc:
                    showcase_error.append(exc)

            showcase_thread = threading.Thread(target=showcase, name="demo-runtime")
            showcase_thread.start()
            ids = _submit_waves(manager, specs, progress)
            slow_id = ids[0]
            _drive(
                options,
                manager,
                observer,
                workers,
                progress,
                slow_id,
                ids,
                killed,
                killed_pids,
                problems,
            )
            sampler.stop()
            ticker.stop()
            tick_seconds = time.monotonic() - t_ticks
            tick_runs = ticker.runs
            showcase_thread.join()
            observer.sample()
            codes = workers.stop_all(killed)
            for number, code in codes.items():
                if code != 0:
                    problems.append(f"worker {number} did not stop cleanly (exit code {code})")
                else:
                    progress.event(f"worker {number} stopped gracefully on SIGTERM")
        if showcase_error:
            problems.append(f"the runtime showcase failed: {showcase_error[0]!r}")
        else:
            runtime = showcase_result[0]
        runtime.append(
            _Check(
                "repeating task",
                f"fixed rate every 50 ms: {tick_runs} runs in {tick_seconds:.1f} s "
                f"(~{tick_seconds / 0.05:.0f} expected)",
                None,
            )
        )
        if observer.error is not None:
            problems.append(f"sampling the store failed: {observer.error!r}")
        jobs = _all_jobs(store)
        verdict = _judge(ids, jobs, slow_id, runs, killed_pids)
        _summary(out, fancy, jobs, verdict, runtime, t_start, problems, killed)
    finally:
        workers.close()
        observer.close()
        manager.shutdown()
        pool.shutdown()
        store.close()
    failed = bool(verdict.lost or verdict.twice or problems) or any(c.ok is False for c in runtime)
    if not temporary:
        print(
            f"\nThe store is kept: try `taskrunner jobs list --db {db} --state cancelled` "
            f"or `taskrunner jobs show --db {db} {slow_id}`.  Worker logs: {logs}\n"
            f"Look at what ran in a browser: taskrunner dashboard --db {db}",
            file=out,
        )
    return 1 if failed else 0


def _submit_waves(manager: JobManager, specs: list[JobSpec], progress: Progress) -> list[str]:
    """Submit in five waves, 0.2 s apart, as a service would over time."""
    ids: list[str] = []
    waves = 5
    size = -(-len(specs) // waves)
    for i in range(waves):
        batch = specs[i * size : (i + 1) * size]
        if not batch:
            break
        ids.extend(h.id for h in manager.submit_many(batch))
        progress.event(f"submitted {len(ids)} of {len(specs)} jobs (durably stored)")
        if i < waves - 1:
            time.sleep(0.2)  # pacing the arrivals, not synchronising
    return ids


def _drive(
    options: DemoOptions,
    manager: JobManager,
    observer: _Observer,
    workers: _Workers,
    progress: Progress,
    slow_id: str,
    ids: list[str],
    killed: set[int],
    killed_pids: set[int],
    problems: list[str],
) -> None:
    """Kill a worker midway, start another, cancel the slow job, wait for the end."""
    total = len(ids)
    deadline = time.monotonic() + options.timeout

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    # Midway: enough jobs finished and some worker is running attempts.
    snap = observer.wait(
        lambda s: (
            bool(s.running_by_pid)
            and (s.total_finished >= total * 0.4 or s.total_finished >= total - 1)
        ),
        remaining(),
    )
    if snap is None:
        problems.append("no worker was running jobs midway: nothing to kill")
        return
    running_by_pid = snap.running_by_pid
    pid = max(running_by_pid, key=lambda p: running_by_pid[p])
    victim = workers.number_of(pid)
    if victim is not None:
        os.kill(pid, signal.SIGKILL)
        workers.procs[victim].wait()
        killed.add(victim)
        killed_pids.add(pid)
        cut = observer.ledger("SELECT count(*) FROM runs WHERE pid = ? AND outcome IS NULL", (pid,))
        progress.event(
            f"SIGKILL worker {victim} (pid {pid}): {cut[0][0] if cut else 0} running attempt(s) "
            f"cut short; {snap.total_finished}/{total} jobs had finished"
        )
        number, new_pid = workers.start()
        progress.event(f"worker {number} started (pid {new_pid}) on the same store")
    # The slow job: cancel it while it runs on a live worker (if the kill cut it
    # short, once a survivor has recovered it and runs it again).
    found = _wait_running(manager, observer, slow_id, killed_pids, remaining())
    if found is None:
        problems.append("the slow job never ran on a live worker: it was not cancelled")
    else:
        job, runner_pid = found
        manager.cancel(slow_id)
        progress.event(
            f"cancelled the slow job while it ran on worker {workers.number_of(runner_pid)} "
            f"(attempt {job.attempt}); its handler stops at its next check"
        )
    snap = observer.wait(
        lambda s: s.unfinished == 0 and sum(s.states.values()) >= total, remaining()
    )
    if snap is None:
        problems.append(f"not every job finished within {options.timeout:.0f} s")
    else:
        progress.event("every job reached a final state")
    dead = workers.died(killed)
    if dead:
        problems.append(f"worker(s) {dead} exited on their own; see their logs")


def _wait_running(
    manager: JobManager, observer: _Observer, job_id: str, dead: set[int], timeout: float
) -> tuple[Job, int] | None:
    """The job and the pid running it, once a live worker runs it (polling the
    store and the ledger, which other processes write)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = manager.get(job_id)
        if job.is_final:
            return None
        if job.state is JobState.RUNNING:
            rows = observer.ledger(
                "SELECT pid FROM runs WHERE job_id = ? AND attempt = ? AND outcome IS NULL",
                (job_id, job.attempt),
            )
            pids = [int(r[0]) for r in rows if int(r[0]) not in dead]
            if pids:
                return job, pids[0]
        time.sleep(0.05)  # polling other processes' progress
    return None


def _summary(
    out: TextIO,
    fancy: bool,
    jobs: dict[str, Job],
    verdict: _Verdict,
    runtime: list[_Check],
    t_start: float,
    problems: list[str],
    killed: set[int],
) -> None:
    print(file=out)
    states = {s: sum(1 for j in jobs.values() if j.state is s) for s in JobState}
    succeeded = [j for j in jobs.values() if j.state is JobState.SUCCEEDED]
    latencies = sorted(
        j.finished_at - j.created_at - _delay_of(j) for j in succeeded if j.finished_at
    )
    first = min((j.created_at for j in succeeded), default=t_start)
    last = max((j.finished_at for j in succeeded if j.finished_at), default=first)
    span = max(last - first, 1e-9)
    shown = (JobState.SUCCEEDED, JobState.CANCELLED, JobState.FAILED)
    rows: list[tuple[str, object]] = [
        (f"jobs {s.value}", states[s]) for s in JobState if states[s] or s in shown
    ]
    rows += [
        ("retries (failed attempts retried)", verdict.retries),
        ("recovered after the SIGKILL", verdict.recovered),
        ("re-run: done, unrecorded at the kill", verdict.reexecuted),
        ("handler runs recorded", verdict.runs),
        ("throughput", f"{len(succeeded) / span:,.1f} jobs/s over {span:.1f} s"),
        ("latency p50 (due -> finished)", f"{_percentile(latencies, 0.5) * 1000:,.0f} ms"),
        ("latency p99 (due -> finished)", f"{_percentile(latencies, 0.99) * 1000:,.0f} ms"),
    ]
    print_table(
        "Jobs (store + runs ledger)", ["", "value"], rows, right=(1,), fancy=fancy, stream=out
    )
    checks = [(c.what, c.detail, {True: "ok", False: "FAILED", None: ""}[c.ok]) for c in runtime]
    print_table(
        "Runtime (this process)", ["", "what happened", ""], checks, fancy=fancy, stream=out
    )
    for problem in problems:
        print(f"problem: {problem}", file=out)
    for item in (verdict.lost + verdict.twice)[:10]:
        print(f"  {item}", file=out)
    total = len(jobs)
    if verdict.lost or verdict.twice:
        print(
            f"FAIL: {len(verdict.lost)} job(s) lost, {len(verdict.twice)} run twice, "
            f"out of {total}",
            file=out,
        )
    elif problems:
        print(f"FAIL: the demo could not check its promises ({len(problems)} problem(s))", file=out)
    elif any(c.ok is False for c in runtime):
        broken = ", ".join(c.what for c in runtime if c.ok is False)
        print(f"FAIL: no job lost or run twice, but a runtime check failed: {broken}", file=out)
    else:
        print(
            f"PASS: no job lost, none run twice: all {total} jobs reached their expected final "
            f"state across {len(killed)} SIGKILL; no attempt ran twice and no job ran after its "
            "outcome was stored",
            file=out,
        )
        if verdict.reexecuted:
            print(
                f"note: {verdict.reexecuted} handler run(s) had finished when their worker was "
                "killed, before the store recorded the outcome, so the job ran again on recovery "
                "(at-least-once delivery: keep handlers idempotent)",
                file=out,
            )
