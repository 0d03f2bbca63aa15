"""The fault harness, short: ``make test`` runs it on SQLite and PostgreSQL
(``make chaos`` runs the long version; see ``tests/chaos/run.py``)."""

from __future__ import annotations

import pytest
from chaos.run import Config, run_chaos

pytestmark = [
    pytest.mark.slow,
    pytest.mark.thread_unsafe(reason="starts worker processes, a server, and mounts a tmpfs"),
]


def test_chaos_sqlite_short() -> None:
    lines: list[str] = []
    verdict = run_chaos(Config("sqlite", seconds=12, jobs=80, seed=14, out=lines.append))
    print("\n".join(lines))
    assert not verdict.violations, "\n".join(lines)
    assert verdict.counts["final: succeeded"] >= 80  # and the ticks and transactional jobs
    assert verdict.counts["tick occurrences (every 1 s, misfire=all)"] >= 5
    assert verdict.counts["transactional enqueues: committed"] >= 1


def test_chaos_postgres_short() -> None:
    from pg_fixture import require_dsn

    require_dsn()  # skips (or fails, when PostgreSQL is required) without a server
    lines: list[str] = []
    verdict = run_chaos(Config("postgres", seconds=12, jobs=80, seed=14, out=lines.append))
    print("\n".join(lines))
    assert not verdict.violations, "\n".join(lines)
    assert verdict.counts["final: succeeded"] >= 80  # and the ticks and transactional jobs
    assert verdict.counts["tick occurrences (every 1 s, misfire=all)"] >= 5
    assert verdict.counts["transactional enqueues: committed"] >= 1
    assert verdict.counts["fault: pg-outage-mid-commit"] >= 1
