"""bench/_harness.py: the alternation, medians and ratios every bench script shares."""

from __future__ import annotations

import pytest
from bench_loader import BENCH, load_bench_module

h = load_bench_module("_harness.py")


def test_alternate_interleaves_the_sides_and_returns_medians() -> None:
    calls: list[str] = []

    def side(name: str, values: list[float]) -> object:
        def run() -> float:
            calls.append(name)
            return values.pop(0)

        return run

    ours, peer = h.alternate(side("a", [1.0, 9.0, 3.0]), side("b", [4.0, 5.0, 60.0]), 3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert (ours, peer) == (3.0, 5.0)
    assert h.alternate(lambda: 2.0, None, 2) == (2.0, None)
    with pytest.raises(ValueError, match="rounds"):
        h.alternate(lambda: 1.0, None, 0)


def test_rotate_changes_the_order_every_round() -> None:
    order: list[int] = []
    arms = [lambda i=i: order.append(i) or float(i) for i in range(3)]
    results = h.rotate(arms, 3)
    assert order == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert results == [[0.0] * 3, [1.0] * 3, [2.0] * 3]


def test_percentile_ratio_and_line() -> None:
    values = [float(x) for x in range(100, 0, -1)]
    assert h.percentile(values, 0.5) == 51.0
    assert h.percentile(values, 0.99) == 100.0
    assert h.percentile([5.0], 0.99) == 5.0
    with pytest.raises(ValueError):
        h.percentile([], 0.5)
    assert h.ratio(10.0, 2.0) == 5.0  # a rate: ours / peer
    assert h.ratio(2.0, 10.0, higher_is_better=False) == 5.0  # a cost: peer / ours
    text = h.line("x", 10.0, "peer", 2.0, "tasks/s", 3)
    assert "ratio   5.00x" in text and "(goal >= 3x)" in text


def test_every_bench_script_imports_with_the_shared_harness() -> None:
    # taskrunner bench loads each script by path with bench/ on sys.path: the
    # sibling import of _harness must work there (a missing optional peer
    # such as huey may still make a script skip, never a missing _harness).
    from taskrunner.cli.bench_report import _load, discover

    scripts = discover(BENCH)
    assert "_harness" not in {p.stem for p in scripts}  # a helper, not a script
    for path in scripts:
        try:
            _load(path)
        except ImportError as exc:
            assert "_harness" not in str(exc), f"{path.name}: {exc}"
