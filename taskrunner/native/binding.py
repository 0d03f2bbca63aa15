"""The compiled C core and the one place its status codes become exceptions.

``ffi`` and ``lib`` come from the cffi extension ``taskrunner.native._core`` built
from ``csrc/`` by ``taskrunner/native/_build.py``.  Every wrapper passes a
status to :func:`check`, which raises the matching exception; wrappers that
expect a status as an ordinary answer (``TR_EMPTY`` from a non-blocking pop)
test for it before calling ``check``.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from taskrunner.errors import (
    ClosedError,
    DuplicateTokenError,
    QueueEmptyError,
    QueueFullError,
    UnknownTokenError,
)
from taskrunner.native._core import ffi as _ffi
from taskrunner.native._core import lib as _lib

ffi: Any = _ffi
lib: Any = _lib

OK: int = lib.TR_OK
EMPTY: int = lib.TR_EMPTY
FULL: int = lib.TR_FULL
CLOSED: int = lib.TR_CLOSED
TIMEOUT: int = lib.TR_TIMEOUT
NOT_FOUND: int = lib.TR_NOT_FOUND
EXISTS: int = lib.TR_EXISTS
NOMEM: int = lib.TR_NOMEM
INVALID: int = lib.TR_INVALID

TOKEN_MAX = (1 << 64) - 1
INT64_MAX = (1 << 63) - 1
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def _raise(status: int, what: str) -> NoReturn:
    if status == FULL:
        raise QueueFullError(f"{what}: full")
    if status == EMPTY:
        raise QueueEmptyError(f"{what}: empty")
    if status == CLOSED:
        raise ClosedError(f"{what}: closed")
    if status == TIMEOUT:
        raise TimeoutError(f"{what}: timed out")
    if status == NOT_FOUND:
        raise UnknownTokenError(f"{what}: unknown token")
    if status == EXISTS:
        raise DuplicateTokenError(f"{what}: token already held")
    if status == NOMEM:
        raise MemoryError(f"{what}: out of memory")
    if status == INVALID:
        raise ValueError(f"{what}: invalid argument")
    raise RuntimeError(f"{what}: unexpected status {status}")


def check(status: int, what: str) -> None:
    """Raise the exception that ``status`` stands for; return on ``TR_OK``."""
    if status != OK:
        _raise(status, what)


def check_token(token: object) -> int:
    """``token`` as an int in the uint64 range, or a clear TypeError/ValueError."""
    if type(token) is not int and (isinstance(token, bool) or not isinstance(token, int)):
        raise TypeError(f"token must be an int, not {type(token).__name__}")
    if not 0 <= token <= TOKEN_MAX:
        raise ValueError(f"token must be in [0, 2**64), got {token}")
    return int(token)


def timeout_ns(timeout: float | None, what: str = "timeout") -> int:
    """A relative timeout in seconds as the core's nanoseconds (-1 = forever)."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError(f"{what} must not be NaN")
    if timeout < 0:
        raise ValueError(f"{what} must be >= 0, got {timeout}")
    if math.isinf(timeout):
        return -1
    ns = timeout * 1e9
    return INT64_MAX if ns >= INT64_MAX else round(ns)
