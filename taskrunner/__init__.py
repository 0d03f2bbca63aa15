"""taskrunner: a threading runtime whose queue core is C.

This first layer holds the C core's typed wrappers: ``taskrunner.heap``,
``taskrunner.wheel`` and ``taskrunner.ring``.
"""

from __future__ import annotations

from taskrunner.errors import (
    ClosedError,
    DuplicateTokenError,
    QueueEmptyError,
    QueueFullError,
    TaskRunnerError,
    UnknownTokenError,
)

__version__ = "0.1.0"

__all__ = [
    "ClosedError",
    "DuplicateTokenError",
    "QueueEmptyError",
    "QueueFullError",
    "TaskRunnerError",
    "UnknownTokenError",
]
