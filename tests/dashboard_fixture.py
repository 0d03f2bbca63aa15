"""Stores full of jobs in every state, for the dashboard tests (and its screenshots).

:func:`fill_store` writes jobs through the store's own API (insert, claim,
complete, fail, cancel), spread over the last hour before ``now``, so the
overview has something in every card, every chart minute and every table.
Some arguments, errors and one type are hostile HTML: every page must escape
them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from taskrunner.jobs import JobState, JobStore, SQLiteJobStore, new_job

#: Text that runs script if a page forgets to escape it.
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
EVIL_TYPE = "<b>evil</b>"
TYPES = ("email.send", "report.build", "image.resize", "invoice.charge", EVIL_TYPE)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app/handlers.py", line 42, in charge\n'
    "    gateway.charge(card, amount)\n"
    '  File "app/gateway.py", line 17, in charge\n'
    "    raise GatewayError(reply)\n"
    "GatewayError: card declined " + EVIL + "\n"
)


@dataclass
class Filled:
    """The ids written by :func:`fill_store`, by the state each job was left in."""

    by_state: dict[str, list[str]] = field(default_factory=dict)
    evil_id: str = ""

    def ids(self, state: str) -> list[str]:
        return self.by_state.get(state, [])


def fill_store(store: JobStore, now: float, per_state: int = 60) -> Filled:
    """Write ``per_state`` jobs in each state (plus retried ones), created over the last hour."""
    filled = Filled({s.value: [] for s in JobState})
    total = per_state * 5
    for i in range(total):
        state = list(JobState)[i % 5]
        created = now - 3500 + i * (3400 / total)
        job_type = TYPES[(i + i // 5) % len(TYPES)]  # every type in every state
        args = json.dumps(
            {"n": i, "to": f"user{i}@example.com", "note": EVIL if i % 7 == 0 else ""}
        )
        job = new_job(job_type, args.encode(), now=created, priority=i % 3, max_attempts=3)
        store.insert(job)
        owner = "worker-a" if i % 2 else "worker-b"
        if state is JobState.PENDING:
            if i % 3 == 0:  # failed once, waiting for its retry
                store.claim(job.id, owner, created + 1, lease_seconds=60)
                store.fail(
                    job.id,
                    owner,
                    created + 2,
                    "timeout talking to smtp",
                    TRACEBACK,
                    retry_at=created + 5,
                )
        elif state is JobState.RUNNING:
            store.claim(job.id, owner, created + 1, lease_seconds=7200)
        elif state is JobState.SUCCEEDED:
            store.claim(job.id, owner, created + 1, lease_seconds=60)
            if i % 4 == 0:  # succeeded on its second attempt
                store.fail(job.id, owner, created + 2, "flaky", None, retry_at=created + 3)
                store.claim(job.id, owner, created + 4, lease_seconds=60)
            took = 6 + (i * 37) % 240  # spread over the chart's minutes
            store.complete(job.id, owner, created + took, json.dumps({"ok": True, "n": i}).encode())
        elif state is JobState.FAILED:
            store.claim(job.id, owner, created + 1, lease_seconds=60)
            error = "card declined " + EVIL if i % 2 else "card declined"
            store.fail(job.id, owner, created + 3 + (i * 53) % 400, error, TRACEBACK)
        else:
            store.cancel(job.id, created + 2, "cancelled by the operator")
        filled.by_state[state.value].append(job.id)
        if i % 7 == 0 and state is JobState.FAILED and not filled.evil_id:
            filled.evil_id = job.id
    return filled


def filled_sqlite(path: Path, now: float, per_state: int = 60) -> tuple[SQLiteJobStore, Filled]:
    store = SQLiteJobStore(path)
    return store, fill_store(store, now, per_state)
