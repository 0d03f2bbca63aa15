"""What every benchmark script in ``bench/`` shares: alternation, medians, ratios.

The speed of these shared 2-core machines moves by up to 2x between runs
(see ``shared/PERFORMANCE.md``), so a comparison is only worth quoting when
both sides ran in the same run, interleaved: :func:`alternate` runs the sides
A B A B ... (or, for more than two arms, rotates their order each round) and
returns the medians.  :func:`percentile`, :func:`ratio` and :func:`line` give
every script the same percentiles, ratio rule and printed line.

Scripts import it as a sibling (``from _harness import alternate``): running
a script puts ``bench/`` on ``sys.path``, and ``taskrunner bench`` does so
while it loads one.  The leading underscore keeps it out of both
``taskrunner bench``'s and ``make bench``'s list of scripts.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: A row for ``taskrunner bench``: (name, ours, peer_name, peer, unit); see
#: taskrunner/bench_report.py.  ``peer`` is None when the peer could not run.
Row = tuple[str, float, str, float | None, str]


def alternate(
    a: Callable[[], float], b: Callable[[], float] | None, rounds: int
) -> tuple[float, float | None]:
    """Run ``a`` and ``b`` alternately ``rounds`` times (A B A B ...); their
    medians.  ``b`` may be None (the peer is not installed): its median is None."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(rounds):
        xs.append(a())
        if b is not None:
            ys.append(b())
    return statistics.median(xs), (statistics.median(ys) if ys else None)


def alternate2(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float]:
    """:func:`alternate` when both sides always run."""
    ours, peer = alternate(a, b, rounds)
    assert peer is not None
    return ours, peer


def rotate(arms: Sequence[Callable[[], T]], rounds: int) -> list[list[T]]:
    """Run every arm once per round, the order rotated each round (A B C,
    B C A, ...); per arm, its results in round order."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    out: list[list[T]] = [[] for _ in arms]
    for r in range(rounds):
        for k in range(len(arms)):
            i = (k + r) % len(arms)
            out[i].append(arms[i]())
    return out


def median(values: Sequence[float]) -> float:
    """The median (a figure of alternated rounds is always a median)."""
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank (they need not be sorted)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ratio(ours: float, peer: float, *, higher_is_better: bool = True) -> float:
    """How many times better ours is (> 1: taskrunner wins): ``ours / peer``
    for a rate, ``peer / ours`` for a cost (the rule of ``taskrunner bench``)."""
    if higher_is_better:
        return ours / peer if peer else float("inf")
    return peer / ours if ours else float("inf")


def line(
    label: str,
    ours: float,
    peer_name: str,
    peer: float,
    unit: str,
    goal: float | None = None,
    *,
    width: int = 36,
) -> str:
    """One printed comparison: both figures, the ratio, and the goal if any."""
    higher = unit.endswith("/s")
    r = ratio(ours, peer, higher_is_better=higher)
    text = (
        f"{label:<{width}} taskrunner {ours:>12,.1f} {unit}  {peer_name} {peer:>12,.1f} {unit}  "
        f"ratio {r:6.2f}x"
    )
    if goal is not None:
        text += f"  (goal >= {goal:g}x)"
    return text


def gil_enabled() -> bool:
    """True unless this is a free-threaded interpreter running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def banner(what: str) -> str:
    """The first line of a script's output: the interpreter, the GIL, what runs."""
    return f"python {sys.version.split()[0]}, gil={'on' if gil_enabled() else 'off'}, {what}"


def idle_start_latency(
    post: Callable[[Callable[[], None]], object], wait_idle: Callable[[], object], samples: int
) -> list[float]:
    """Post -> start on an idle pool, in microseconds, ``samples`` times (issue 16's
    method): wait until idle, sleep 200 us so the workers go back to sleep, then
    time from before ``post(probe)`` to the probe's first line."""
    out: list[float] = []
    started = threading.Event()
    t_start = [0]

    def probe() -> None:
        t_start[0] = time.perf_counter_ns()
        started.set()

    for _ in range(samples):
        wait_idle()
        time.sleep(0.0002)
        started.clear()
        t0 = time.perf_counter_ns()
        post(probe)
        started.wait()
        out.append((t_start[0] - t0) / 1000)
    return out
