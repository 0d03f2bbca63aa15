"""bench/_floor.py: the bare pool the benchmarks use as the ceiling of the design."""

from __future__ import annotations

import contextvars
import threading

from bench_loader import load_bench_module

floor = load_bench_module("_floor.py")


def test_floor_pool_runs_every_task_once_in_the_posters_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("poster")
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def record(i: int) -> None:
        with lock:
            seen.append((i, var.get()))

    pool = floor.FloorPool()
    try:
        for i in range(500):
            pool.post(record, i)
        pool.wait_idle()
    finally:
        pool.close()
    assert sorted(i for i, _ in seen) == list(range(500))
    assert {value for _, value in seen} == {"poster"}


def test_floor_run_and_latency_report_figures() -> None:
    assert floor.run(2_000) > 0
    samples = floor.latency(20)
    assert len(samples) == 20 and all(s > 0 for s in samples)
