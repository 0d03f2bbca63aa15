"""The app of the queue tests' worker processes: one handler, ``send``, that returns "sent"."""

from __future__ import annotations

from typing import Any

from taskrunner.jobs import JobContext, JobManager


def register(manager: JobManager) -> None:
    def send(ctx: JobContext, args: Any) -> str:
        return "sent"

    manager.register("send", send)
