"""The public API's types catch mistakes at the call site: mypy (strict, with
the project's configuration) accepts ``typing_cases/accepted.py`` and
reports exactly the errors marked ``# E: <text>`` in
``typing_cases/rejected.py`` (wrong argument types and counts for
``post_task``, ``post_delayed_task``, ``submit``, the Executor methods, and
wrong result and reply types)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

pytestmark = [
    pytest.mark.thread_unsafe(reason="runs mypy in a subprocess"),
    pytest.mark.timeout(600),
]

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "typing_cases"
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")
_MARK = re.compile(r"#\s*E:\s*(?P<text>.+?)\s*$")


def _mypy(path: Path, cache: Path) -> tuple[int, list[tuple[int, str]]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(cache),
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = []
    for line in out.stdout.splitlines():
        m = _ERROR.match(line)
        if m:
            errors.append((int(m["line"]), m["message"]))
    return out.returncode, errors


def test_mypy_accepts_correct_calls(tmp_path: Path) -> None:
    status, errors = _mypy(CASES / "accepted.py", tmp_path)
    assert errors == [] and status == 0, errors


def test_mypy_reports_each_wrong_call(tmp_path: Path) -> None:
    expected: dict[int, str] = {}
    source = (CASES / "rejected.py").read_text().splitlines()
    for number, text in enumerate(source, start=1):
        m = _MARK.search(text)
        if m:
            expected[number] = m["text"]
    assert len(expected) >= 10
    status, errors = _mypy(CASES / "rejected.py", tmp_path)
    assert status == 1
    found: dict[int, list[str]] = {}
    for line, message in errors:
        found.setdefault(line, []).append(message)
    assert sorted(found) == sorted(expected), (
        f"unexpected errors on lines {sorted(set(found) - set(expected))}, "
        f"missing on lines {sorted(set(expected) - set(found))}: {errors}"
    )
    for line, text in expected.items():
        assert any(text in message for message in found[line]), (line, text, found[line])
