"""The overview's chart as geometry for a server-rendered SVG (no JavaScript).

:func:`layout` turns the per-minute :class:`~taskrunner.dashboard.data.ChartBucket`
list into rectangles (succeeded and failed, stacked per minute), a polyline
(retried) and axis ticks, in SVG user units; the template ``_chart.html``
draws them.  Pure arithmetic, no web library.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from taskrunner.dashboard.data import ChartBucket

__all__ = ["Bar", "ChartLayout", "layout"]

WIDTH: Final = 720
HEIGHT: Final = 200
LEFT: Final = 40  # room for the y labels
BOTTOM: Final = 20  # room for the x labels
TOP: Final = 10


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # "succeeded" or "failed": the CSS class
    title: str


@dataclass(frozen=True, slots=True)
class ChartLayout:
    width: int
    height: int
    bars: tuple[Bar, ...]
    retry_points: str  # an SVG polyline's points
    y_ticks: tuple[tuple[float, int], ...]  # (y, value)
    x_ticks: tuple[tuple[float, str], ...]  # (x, label)
    plot_top: float
    plot_bottom: float
    plot_left: float
    plot_right: float
    totals: tuple[int, int, int]  # succeeded, failed, retried over the hour


def _nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at or above ``value`` (at least 4)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= max(value, 4):
                return m * step
        step *= 10


def layout(buckets: Sequence[ChartBucket]) -> ChartLayout:
    """The chart of ``buckets`` (oldest first), scaled to the busiest minute."""
    n = max(len(buckets), 1)
    plot_w = WIDTH - LEFT - 10
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    top_value = _nice_max(max((max(b.succeeded + b.failed, b.retried) for b in buckets), default=0))
    scale = plot_h / top_value
    slot = plot_w / n
    bars: list[Bar] = []
    points: list[str] = []
    for i, b in enumerate(buckets):
        x = LEFT + i * slot
        when = dt.datetime.fromtimestamp(b.start).strftime("%H:%M")
        y = float(bottom)
        for kind, count in (("succeeded", b.succeeded), ("failed", b.failed)):
            if count:
                h = count * scale
                y -= h
                bars.append(Bar(x + 1, y, max(slot - 2, 1), h, kind, f"{when}: {count} {kind}"))
        points.append(f"{x + slot / 2:.1f},{bottom - b.retried * scale:.1f}")
    y_ticks = tuple((bottom - v * scale, v) for v in (0, top_value // 2, top_value))
    x_ticks: list[tuple[float, str]] = []
    for i in range(0, n + 1, 15):
        minutes = n - i
        x_ticks.append((LEFT + i * slot, f"-{minutes}m" if minutes else "now"))
    return ChartLayout(
        width=WIDTH,
        height=HEIGHT,
        bars=tuple(bars),
        retry_points=" ".join(points),
        y_ticks=y_ticks,
        x_ticks=tuple(x_ticks),
        plot_top=TOP,
        plot_bottom=bottom,
        plot_left=LEFT,
        plot_right=LEFT + plot_w,
        totals=(
            sum(b.succeeded for b in buckets),
            sum(b.failed for b in buckets),
            sum(b.retried for b in buckets),
        ),
    )
