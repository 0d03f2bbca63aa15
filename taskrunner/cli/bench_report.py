"""``taskrunner bench``: one table of ratios from the scripts in ``bench/``.

The convention
--------------
A script in ``bench/`` takes part by defining, at module level::

    def report(quick: bool) -> Iterable[Row]: ...

where each row is a plain tuple ``(name, ours, peer_name, peer, unit)``:

* ``name``: what was measured, e.g. ``"post+run no-op, 1 poster"``;
* ``ours``: taskrunner's figure; ``peer``: the peer's figure, measured in
  the same run (alternate the two sides: see ``shared/PERFORMANCE.md``);
* ``peer_name``: who the peer is, e.g. ``"ThreadPoolExecutor(2)"``; ``peer``
  may be ``None`` when the peer could not run (an optional dependency is
  missing): the row is shown without a ratio;
* ``unit``: a rate ending in ``/s`` (``"tasks/s"``: higher is better) or a
  cost (``"us"``, ``"ms"``, ``"B"``: lower is better).  An optional sixth
  element ``higher_is_better: bool`` overrides that rule.

The alternation, medians, percentiles and ratio rule come from the shared
``bench/_harness.py`` (``from _harness import alternate, Row``; a module
whose name starts with ``_`` is a helper, never run as a script).

``quick=True`` must finish in seconds (small sizes, one round).  ``report``
may be a generator: each row then appears as soon as it is measured.  The
ratio printed is how many times better taskrunner is (``ours / peer`` for a
rate, ``peer / ours`` for a cost), so above 1 means taskrunner wins.
Scripts without ``report`` are listed as skipped; a script that cannot be
imported (a missing optional dependency) is skipped with the reason; a
``report`` that raises makes the command exit with 1.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from taskrunner.cli.console import Progress, print_table, use_rich

__all__ = ["BenchRow", "BenchSetupError", "discover", "find_bench_dir", "normalise", "run"]


class BenchSetupError(Exception):
    """The report cannot run as asked (no bench folder, no matplotlib): exit code 2."""


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One comparison, as printed."""

    script: str
    name: str
    ours: float
    peer_name: str
    peer: float | None
    unit: str
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        """How many times better taskrunner is (> 1: taskrunner wins); None without a peer."""
        if self.peer is None:
            return None
        if self.higher_is_better:
            return self.ours / self.peer if self.peer else math.inf
        return self.peer / self.ours if self.ours else math.inf


def normalise(script: str, row: Sequence[Any]) -> BenchRow:
    """A row of ``report()`` checked and typed; ``ValueError`` says what is wrong."""
    if not isinstance(row, Sequence) or isinstance(row, str) or len(row) not in (5, 6):
        raise ValueError(
            f"{script}: a row must be (name, ours, peer_name, peer, unit[, higher_is_better]), "
            f"got {row!r}"
        )
    name, ours, peer_name, peer, unit = row[:5]
    for what, value in (("ours", ours), ("peer", peer)):
        if what == "peer" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{script}: row {name!r}: {what} must be a number >= 0, got {value!r}")
    higher = bool(row[5]) if len(row) == 6 else str(unit).endswith("/s")
    peer_value = None if peer is None else float(peer)
    return BenchRow(script, str(name), float(ours), str(peer_name), peer_value, str(unit), higher)


def find_bench_dir(explicit: Path | None = None) -> Path:
    """The ``bench/`` folder: ``explicit``, else ./bench, else the source checkout's."""
    if explicit is not None:
        if not explicit.is_dir():
            raise BenchSetupError(f"no such bench folder: {explicit}")
        return explicit
    for candidate in (Path.cwd() / "bench", Path(__file__).resolve().parent.parent / "bench"):
        if candidate.is_dir():
            return candidate
    raise BenchSetupError("no bench/ folder found: run from a source checkout or pass --bench-dir")


def discover(bench_dir: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The benchmark scripts of ``bench_dir`` (not conftest or _private), by name."""
    scripts = sorted(
        p for p in bench_dir.glob("*.py") if p.name != "conftest.py" and not p.name.startswith("_")
    )
    if only:
        scripts = [p for p in scripts if any(o in p.stem for o in only)]
    return scripts


def _load(path: Path) -> ModuleType:
    """Import a script by path (its folder on sys.path meanwhile, for sibling imports)."""
    name = f"_taskrunner_bench_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _gil() -> str:
    check = getattr(sys, "_is_gil_enabled", None)
    return "on" if check is None or check() else "off"


def run(
    *,
    quick: bool = False,
    plot: Path | None = None,
    only: Sequence[str] | None = None,
    bench_dir: Path | None = None,
    as_json: bool = False,
    plain: bool = False,
) -> int:
    """Run the reports and print the table (or JSON); returns the exit code."""
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BenchSetupError(
                "--plot needs matplotlib: pip install 'taskrunner[plot]'"
            ) from None
        if not plot.parent.is_dir():
            raise BenchSetupError(f"no such directory for the plot: {plot.parent}")
    folder = find_bench_dir(bench_dir)
    scripts = discover(folder, only)
    if not scripts:
        raise BenchSetupError(
            f"no benchmark scripts in {folder}" + (" match --only" if only else "")
        )
    err = sys.stderr
    rows: list[BenchRow] = []
    skipped: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    header = (
        f"python {sys.version.split()[0]}, GIL {_gil()}, "
        f"{'quick' if quick else 'full'} run, {len(scripts)} script(s) in {folder}"
    )
    print(header, file=err, flush=True)
    t0 = time.monotonic()
    with Progress(fancy=use_rich(err, plain), stream=err) as progress:
        progress.add("scripts", "benchmark scripts", len(scripts))
        for done, path in enumerate(scripts, 1):
            _run_one(path, quick, rows, skipped, failed, progress)
            progress.update("scripts", done)
    elapsed = time.monotonic() - t0
    if as_json:
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "gil": _gil(),
                    "quick": quick,
                    "seconds": round(elapsed, 1),
                    "rows": [dict(asdict(r), ratio=r.ratio) for r in rows],
                    "skipped": [{"script": s, "reason": r} for s, r in skipped],
                    "failed": [{"script": s, "error": e} for s, e in failed],
                },
                indent=2,
            )
        )
    else:
        _print(rows, skipped, failed, header, elapsed, fancy=use_rich(sys.stdout, plain))
    if plot is not None:
        if any(r.ratio is not None for r in rows):
            plot_ratios(rows, plot, header)
            print(f"bar chart written to {plot}", file=err)
        else:
            print("no ratio to plot: no chart written", file=err)
    return 1 if failed else 0


def _run_one(
    path: Path,
    quick: bool,
    rows: list[BenchRow],
    skipped: list[tuple[str, str]],
    failed: list[tuple[str, str]],
    progress: Progress,
) -> None:
    script = path.name
    try:
        module = _load(path)
    except ImportError as exc:
        skipped.append((script, f"cannot import: {exc}"))
        progress.event(f"{script}: skipped (cannot import: {exc})")
        return
    except Exception as exc:
        failed.append((script, f"import failed: {type(exc).__name__}: {exc}"))
        progress.event(f"{script}: FAILED to import ({type(exc).__name__}: {exc})")
        return
    report = getattr(module, "report", None)
    if not callable(report):
        skipped.append((script, "no report(quick) function"))
        return
    progress.event(f"{script}: running")
    try:
        produced: Iterable[Sequence[Any]] = report(quick)
        for raw in produced:
            row = normalise(script, raw)
            rows.append(row)
            progress.event(
                f"{script}: {row.name}: {_fmt(row.ours)} vs {_fmt(row.peer)} {row.unit} "
                f"({row.peer_name}) -> {_ratio(row.ratio)}"
            )
    except Exception as exc:
        failed.append((script, f"{type(exc).__name__}: {exc}"))
        progress.event(f"{script}: FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return "n/a"
    return "inf" if math.isinf(ratio) else f"{ratio:.2f}x"


def _print(
    rows: list[BenchRow],
    skipped: list[tuple[str, str]],
    failed: list[tuple[str, str]],
    header: str,
    elapsed: float,
    *,
    fancy: bool,
) -> None:
    table = [
        (
            r.name,
            f"{_fmt(r.ours)} {r.unit}",
            r.peer_name,
            f"{_fmt(r.peer)} {r.unit}",
            _ratio(r.ratio),
        )
        for r in rows
    ]
    print_table(
        f"taskrunner vs peers ({header}; {elapsed:.0f} s). Ratio > 1: taskrunner is better",
        ["benchmark", "taskrunner", "peer", "peer's", "ratio"],
        table,
        right=(1, 3, 4),
        fancy=fancy,
    )
    for script, reason in skipped:
        print(f"skipped {script}: {reason}")
    for script, error in failed:
        print(f"FAILED {script}: {error}")


def plot_ratios(rows: Sequence[BenchRow], path: Path, title: str) -> None:
    """A horizontal bar chart of the ratios (log scale, a line at 1x) written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    finite = [(r, r.ratio) for r in rows if r.ratio is not None and 0 < r.ratio < math.inf]
    labels = [f"{r.name}\nvs {r.peer_name}" for r, _ in finite]
    ratios = [x for _, x in finite]
    height = max(2.5, 0.55 * len(finite) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    try:
        colors = ["#2a9d8f" if x >= 1 else "#e76f51" for x in ratios]
        # Bars grow from 1x (a tie), right when taskrunner wins, left when it loses.
        bars = ax.barh(range(len(finite)), [x - 1 for x in ratios], left=1.0, color=colors)
        ax.set_yticks(range(len(finite)), labels=labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        low, high = min([*ratios, 1.0]), max([*ratios, 1.0])
        lo, hi = low / 1.6, high * 1.6
        ax.set_xlim(lo, hi)
        steps = [m * 10.0**e for e in range(-3, 4) for m in (1, 2, 5)]
        ax.set_xticks([t for t in steps if lo <= t <= hi])
        ax.minorticks_off()
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}x"))
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("times better than the peer (log scale; > 1: taskrunner wins)")
        ax.set_title(title, fontsize=9)
        ax.bar_label(bars, labels=[f"{x:.2f}x" for x in ratios], fontsize=8, padding=3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
