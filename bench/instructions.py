"""Instructions per no-op task, counted by callgrind: a figure that noise cannot move.

Timings on these 2-core machines drift by up to 2x between runs; an instruction
count does not: ``valgrind --tool=callgrind`` gives the same count for the same
binary and input whatever else the machine is doing.  Each subject below runs in
its own interpreter under callgrind twice, with ``SMALL`` and ``LARGE`` tasks,
and the per-task figure is the difference divided by ``LARGE - SMALL``, so the
interpreter's start-up, the imports and the pool's start and shutdown cancel out.

``--separate-threads=yes`` splits the count by thread: the main thread is the
post side (it only posts, then waits), every other thread (workers, the timer)
is the run side.  Valgrind runs one thread at a time, so the count includes no
lock contention: it is the work done, not the time waited.  The count of a
subject that does not batch (ThreadPoolExecutor) repeats to within 0.5%; the
pool's moves by up to ~6% between runs, because how valgrind's scheduler
interleaves the threads decides how large the workers' batches are.

    python bench/instructions.py [--small N] [--large N] [--only pool,tpe,...]

Prints one line per subject and the ratio to ThreadPoolExecutor's total.
Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Each subject is a program run as ``python -c PROGRAM N``: it posts N no-op
# tasks from the main thread and waits until all have run.
_PRELUDE = "import sys\nn = int(sys.argv[1])\ndef noop():\n    pass\n"

SUBJECTS: dict[str, str] = {
    "pool": _PRELUDE
    + (
        "from taskrunner import ThreadPool\n"
        "with ThreadPool(2, name='instr') as pool:\n"
        "    post = pool.post_task\n"
        "    for _ in range(n):\n"
        "        post(noop)\n"
        "    pool.wait_idle()\n"
    ),
    "pool_batch": _PRELUDE
    + (
        "from taskrunner import ThreadPool\n"
        "with ThreadPool(2, name='instr') as pool:\n"
        "    pool.post_tasks(noop, [()] * n)\n"
        "    pool.wait_idle()\n"
    ),
    "pool_map": _PRELUDE
    + (
        "from taskrunner import ThreadPool\n"
        "with ThreadPool(2, name='instr') as pool:\n"
        "    for _ in pool.map(lambda item: None, range(n)):\n"
        "        pass\n"
    ),
    "sequenced": _PRELUDE
    + (
        "from taskrunner import SequencedTaskRunner, ThreadPool\n"
        "with ThreadPool(2, name='instr') as pool:\n"
        "    runner = SequencedTaskRunner(pool)\n"
        "    post = runner.post_task\n"
        "    for _ in range(n):\n"
        "        post(noop)\n"
        "    runner.wait_idle()\n"
        "    runner.shutdown()\n"
    ),
    "single_thread": _PRELUDE
    + (
        "from taskrunner import SingleThreadTaskRunner, ThreadPool\n"
        "with ThreadPool(2, name='instr') as pool:\n"
        "    runner = SingleThreadTaskRunner(pool)\n"
        "    post = runner.post_task\n"
        "    for _ in range(n):\n"
        "        post(noop)\n"
        "    runner.wait_idle()\n"
        "    runner.shutdown()\n"
    ),
    # The least a pool on the same C heap can do per task (see bench/_floor.py).
    "floor": _PRELUDE
    + (
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import taskrunner  # the same imports as the other subjects\n"
        "import _floor\n"
        "_floor.run(n, noop)\n"
    ),
    "queue": _PRELUDE
    + (
        "import queue, threading\n"
        "import taskrunner  # the same imports as the other subjects\n"
        "q = queue.Queue(1024)\n"
        "def consume():\n"
        "    while (fn := q.get()) is not None:\n"
        "        fn()\n"
        "t = threading.Thread(target=consume)\n"
        "t.start()\n"
        "put = q.put\n"
        "for _ in range(n):\n"
        "    put(noop)\n"
        "put(None)\n"
        "t.join()\n"
    ),
    "tpe": _PRELUDE
    + (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import taskrunner  # the same imports as the other subjects\n"
        "ex = ThreadPoolExecutor(2)\n"
        "submit = ex.submit\n"
        "for _ in range(n):\n"
        "    submit(noop)\n"
        "ex.shutdown(wait=True)\n"
    ),
}

_GIL_PROBE = "import sys, taskrunner; print(getattr(sys, '_is_gil_enabled', lambda: True)())"
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Count:
    """Instructions of one run, split into the main thread and all the others."""

    main: int
    others: int

    @property
    def total(self) -> int:
        return self.main + self.others


def _count(program: str, n: int, python: str) -> Count:
    """Runs ``program`` with ``n`` tasks under callgrind; returns its instruction counts."""
    with tempfile.TemporaryDirectory(prefix="tr-instr-") as tmp:
        out = Path(tmp) / "cg.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            python,
            "-c",
            program,
            str(n),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        # One file per thread: cg.out-01 is the main thread, the rest are workers.
        files = sorted(Path(tmp).glob("cg.out-*"))
        if not files:
            raise RuntimeError(f"callgrind wrote no per-thread output in {tmp}")
        counts = []
        for f in files:
            match = _TOTALS.search(f.read_text(errors="replace"))
            counts.append(int(match.group(1)) if match else 0)
        return Count(main=counts[0], others=sum(counts[1:]))


@dataclass(frozen=True)
class PerTask:
    subject: str
    post: float
    run: float

    @property
    def total(self) -> float:
        return self.post + self.run


def measure(subject: str, small: int, large: int, python: str = sys.executable) -> PerTask:
    """Instructions per task for ``subject``: the (large - small) difference per task."""
    program = SUBJECTS[subject]
    a, b = _count(program, small, python), _count(program, large, python)
    span = large - small
    return PerTask(subject, (b.main - a.main) / span, (b.others - a.others) / span)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=12_000)
    parser.add_argument("--only", default=",".join(SUBJECTS), help="comma-separated subjects")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("instructions: valgrind not found (apt-get install valgrind); skipped")
        return 0
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and smaller than --large")
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUBJECTS]
    if unknown:
        parser.error(f"unknown subject(s) {unknown}; choose from {sorted(SUBJECTS)}")
    gil = subprocess.run(
        [args.python, "-c", _GIL_PROBE],
        capture_output=True,
        text=True,
    ).stdout.strip()
    version = subprocess.run(
        [args.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"instructions per no-op task (callgrind), python {version}, GIL enabled: {gil}, "
        f"{args.large - args.small:,} tasks"
    )
    results = {name: measure(name, args.small, args.large, args.python) for name in names}
    tpe = results.get("tpe")
    for r in results.values():
        ratio = f"  {r.total / tpe.total:5.2f}x TPE" if tpe and r.subject != "tpe" else ""
        print(
            f"{r.subject:<14} post {r.post:8,.0f}  run {r.run:8,.0f}  total {r.total:8,.0f}{ratio}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
