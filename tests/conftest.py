"""Suite-wide pytest configuration.

``make test-parallel`` runs every test on 4 threads at once with
pytest-run-parallel (``--parallel-threads=4``), which also registers the
``thread_unsafe(reason=...)`` marker for tests that cannot run that way.  The
marker is registered here too, so that the suite (run with
``--strict-markers``) still collects where the plugin is not installed or is
disabled with ``-p no:run_parallel``.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "thread_unsafe(reason): run this test on one thread under pytest-run-parallel",
    )
