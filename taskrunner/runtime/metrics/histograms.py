"""Fixed-bucket histograms of integer nanoseconds, merged across sources."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


# ---- histograms --------------------------------------------------------------------------------


def scaled_bounds(bounds: Iterable[float], per_unit: float) -> tuple[int, ...]:
    out = tuple(round(b * per_unit) for b in bounds)
    if not out or any(b <= a for a, b in pairwise(out)):
        raise ValueError("histogram bounds must be a non-empty, strictly increasing sequence")
    return out


class Hist:
    """Bucket counts over integer values (not cumulative; the last is +Inf).
    Not thread-safe by itself: guarded by its collector's lock."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0
        self.count = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def observe_many(self, values: Sequence[int]) -> None:
        n = len(values)
        if n < 8:
            for v in values:
                self.observe(v)
            return
        self.total += sum(values)
        self.count += n
        # Sort once (in C; in place when handed a list, which the protocol
        # allows), then place the values bucket by bucket with one bisect each;
        # values cluster, so this usually ends after a few buckets.
        if type(values) is list:
            ordered = values
            ordered.sort()
        else:
            ordered = sorted(values)
        counts = self.counts
        placed = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect_right(ordered, bound, placed)  # values <= bound
            if upto > placed:
                counts[i] += upto - placed
                placed = upto
                if placed == n:
                    return
        counts[-1] += n - placed


@dataclass(frozen=True, slots=True)
class HistogramData:
    """A histogram read from a collector.

    ``bounds`` are the buckets' upper bounds (seconds, or a count) in
    increasing order; ``counts`` has one entry per bound plus the +Inf bucket
    and is *not* cumulative; ``sum`` and ``count`` cover every observation.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, c in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += c
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (0..1), interpolated linearly
        inside the bucket that holds it (like Prometheus'
        ``histogram_quantile``); None without observations, the last bound if
        it falls in the +Inf bucket."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = q * self.count
        lower, seen = 0.0, 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            if c and seen + c >= rank:
                return lower + (bound - lower) * ((rank - seen) / c)
            seen += c
            lower = bound
        return self.bounds[-1]

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


def merge_histograms(parts: Iterable[HistogramData]) -> HistogramData | None:
    """The sum of histograms with the same bounds (None if there are none)."""
    total: HistogramData | None = None
    for h in parts:
        if total is None:
            total = h
            continue
        if h.bounds != total.bounds:
            raise ValueError("cannot merge histograms with different bounds")
        total = HistogramData(
            bounds=total.bounds,
            counts=tuple(x + y for x, y in zip(total.counts, h.counts, strict=True)),
            sum=total.sum + h.sum,
            count=total.count + h.count,
        )
    return total
