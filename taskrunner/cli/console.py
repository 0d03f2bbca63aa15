"""Terminal output for the command line: tables and progress, with or without rich.

rich (the ``demo`` extra) draws live progress bars and boxed tables.  Without
it, or when ``plain`` is asked for, the same information is printed as plain
lines and space-aligned columns, which is also what scripts and CI logs get
when standard output is not a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "format_table", "has_rich", "print_table", "use_rich"]


def has_rich() -> bool:
    """True if rich can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def use_rich(stream: TextIO, plain: bool) -> bool:
    """Draw with rich: it is installed, not refused, and ``stream`` is a terminal."""
    return not plain and stream.isatty() and has_rich()


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()
) -> str:
    """Space-aligned columns under a header line; columns in ``right`` align right."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            value.rjust(widths[i]) if i in right else value.ljust(widths[i])
            for i, value in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value).replace("\n", " ")


def print_table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    right: Sequence[int] = (),
    fancy: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Print a titled table: boxed by rich when ``fancy``, else plain columns."""
    out = stream or sys.stdout
    if fancy and has_rich():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left", title_style="bold")
        for i, header in enumerate(headers):
            table.add_column(header, justify="right" if i in right else "left")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        Console(file=out).print(table)
        return
    print(title, file=out)
    print(format_table(headers, rows, right), file=out)
    print(file=out)


class Progress:
    """A few named counters shown as live bars (rich) or periodic lines (plain).

    ``add(key, label, total)`` declares a counter; ``update(key, completed)``
    sets it; ``event(text)`` prints a line above the bars.  Every method may be
    called from any thread; ``_lock`` guards the plain mode's state.
    """

    def __init__(self, *, fancy: bool, stream: TextIO | None = None, every: float = 2.0) -> None:
        self._fancy = fancy and has_rich()
        self._stream = stream or sys.stdout
        self._every = every
        self._lock = threading.Lock()
        self._labels: dict[str, str] = {}
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._last_line = 0.0
        self._t0 = time.monotonic()
        self._rich: Any = None
        self._ids: dict[str, Any] = {}
        if self._fancy:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self._stream),
                refresh_per_second=8,
            )

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rich is not None:
            self._rich.refresh()
            self._rich.stop()
        else:
            self._status(force=True)

    def add(self, key: str, label: str, total: int) -> None:
        with self._lock:
            self._labels[key] = label
            self._totals[key] = total
            self._done[key] = 0
        if self._rich is not None:
            self._ids[key] = self._rich.add_task(label, total=total)

    def update(self, key: str, completed: int) -> None:
        with self._lock:
            self._done[key] = completed
        if self._rich is not None:
            self._rich.update(self._ids[key], completed=completed)
        else:
            self._status(force=False)

    def event(self, text: str) -> None:
        """A line about something that happened, stamped with the elapsed time."""
        line = f"[{time.monotonic() - self._t0:5.1f}s] {text}"
        if self._rich is not None:
            self._rich.console.print(line, highlight=False, markup=False)
        else:
            with self._lock:
                print(line, file=self._stream, flush=True)

    def _status(self, *, force: bool) -> None:
        """Plain mode: one line with every counter, at most every ``every`` seconds."""
        now = time.monotonic()
        with self._lock:
            if not self._labels or (not force and now - self._last_line < self._every):
                return
            self._last_line = now
            parts = [f"{self._labels[k]} {self._done[k]}/{self._totals[k]}" for k in self._labels]
            print(f"[{now - self._t0:5.1f}s] " + ", ".join(parts), file=self._stream, flush=True)
