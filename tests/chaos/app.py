"""The fault harness's worker app: ``taskrunner worker --app chaos.app:register``.

Environment (set by the harness for each worker process):

* ``CHAOS_LEDGER``: the ledger file (see :mod:`ledger`);
* ``CHAOS_TYPES``: the job types this worker handles, comma-separated (a
  specialised worker registers only some of them);
* ``CHAOS_STATS``: a directory where the worker keeps ``<pid>.json``, its
  manager's ``stats()``, rewritten every 0.2 s and at exit.

A job's args: ``seconds`` (how long the handler works, in 0.05 s slices that
notice a stop request) and ``fail_first`` (attempt 1 raises, on purpose).  The handler
returns ``{"job", "attempt", "pid", "token"}``, ``token`` being fresh for each
run, so the stored result names the run that produced it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from typing import Any

from chaos.ledger import Ledger
from taskrunner.jobs import JobContext, JobManager

ALL_TYPES = ("a", "b", "c")


def register(manager: JobManager) -> None:
    ledger = Ledger(os.environ["CHAOS_LEDGER"])
    types = [t for t in os.environ.get("CHAOS_TYPES", ",".join(ALL_TYPES)).split(",") if t]
    pid = os.getpid()

    def handle(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        token = os.urandom(8).hex()
        common = {"job": ctx.job_id, "attempt": ctx.attempt, "pid": pid, "type": ctx.job_type}
        ledger.append("start", **common)
        try:
            if args.get("fail_first") and ctx.attempt == 1:
                raise RuntimeError("attempt 1 fails on purpose")
            # Work in slices of 0.05 s: a run stopped (SIGSTOP) still has its
            # remaining slices to do when it resumes, as real work would.
            for _ in range(max(1, round(float(args.get("seconds", 0.05)) / 0.05))):
                ctx.sleep(0.05)
        except BaseException as exc:
            reason = ctx.token.reason
            event = "stopped" if reason is not None else "error"
            ledger.append(event, reason=reason or f"{type(exc).__name__}: {exc}", **common)
            raise
        result = {**common, "token": token}
        ledger.append("end", result=result, **common)
        return result

    for job_type in types:
        manager.register(job_type, handle)

    stats_dir = os.environ.get("CHAOS_STATS")
    if stats_dir:
        path = os.path.join(stats_dir, f"{pid}.json")

        def write_stats() -> None:
            stats = dict(manager.stats(), types=types)
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, path)

        def keep_writing() -> None:
            while True:
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    write_stats()

        threading.Thread(target=keep_writing, name="chaos-stats", daemon=True).start()
        atexit.register(write_stats)
