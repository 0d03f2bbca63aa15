"""The process-wide default pool and the runner factories that use it.

Go programs of the original call ``taskrunner.InitGlobalThreadPool`` once and
then create runners without naming a pool.  Here that is:

* :func:`default_pool` returns the process's default :class:`ThreadPool`,
  creating and starting it on first use (``ThreadPool(name="default")``);
* :func:`set_default_pool` installs a pool of your own instead, once, before
  anything used the default (a second call, or a call after the default was
  created, raises :class:`DefaultPoolError`: two parts of a program must not
  silently disagree about it);
* :func:`create_sequenced_runner`, :func:`create_parallel_runner` and
  :func:`create_single_thread_runner` build runners on it.

At interpreter exit (``atexit``) the default pool, whichever it is, is shut
down gracefully: queued tasks get up to :data:`EXIT_TIMEOUT` seconds (plus the
shutdown grace) to finish, then what has not started is dropped and the
process exits; a task still running then ends with the process (the workers
are daemon threads).  :func:`shutdown_default_pool` does the same earlier.

Thread-safety: every function may be called from any thread; ``_lock``
serialises creation and installation, so racing first uses get one pool.
The default pool holds its runners weakly, like any pool: a runner created
here and dropped by its user is collected.
"""

from __future__ import annotations

import atexit
import threading

from taskrunner.errors import RunnerClosedError, TaskRunnerError
from taskrunner.runtime.pool import ShutdownReport, ThreadPool
from taskrunner.runtime.runners.sequenced import ParallelTaskRunner, SequencedTaskRunner
from taskrunner.runtime.runners.single_thread import (
    QueuePolicy,
    RejectionCallback,
    SingleThreadTaskRunner,
)
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskTraits

__all__ = [
    "EXIT_TIMEOUT",
    "DefaultPoolError",
    "create_parallel_runner",
    "create_sequenced_runner",
    "create_single_thread_runner",
    "default_pool",
    "set_default_pool",
    "shutdown_default_pool",
]

#: Seconds the exit-time shutdown of the default pool waits for queued and
#: running tasks (settable before exit: ``taskrunner.runtime.defaults.EXIT_TIMEOUT = 1``).
EXIT_TIMEOUT: float = 5.0


class DefaultPoolError(TaskRunnerError):
    """The default pool was already chosen (set, or created by first use)."""


# Guards _pool and _exit_hooked.
_lock = threading.Lock()
_pool: ThreadPool | None = None
_exit_hooked = False


def default_pool() -> ThreadPool:
    """The process's default pool: the one given to :func:`set_default_pool`,
    else one created and started now (``ThreadPool(name="default")``).

    Always the same object for the life of the process (after its shutdown
    too: posts to it then raise ``RunnerClosedError``)."""
    global _pool
    pool = _pool
    if pool is not None:
        return pool
    with _lock:
        if _pool is None:
            _pool = ThreadPool(name="default")
            _hook_exit()
        return _pool


def set_default_pool(pool: ThreadPool) -> None:
    """Make ``pool`` the default pool.  Allowed once, and only before anything
    used the default (:class:`DefaultPoolError` otherwise; TypeError for
    something that is not a ThreadPool, RunnerClosedError for a closed one).
    The pool is shut down at exit like the created default (a ``start=False``
    pool is not started here)."""
    global _pool
    if not isinstance(pool, ThreadPool):
        raise TypeError(f"the default pool must be a ThreadPool, not {type(pool).__name__}")
    if pool.is_closed:
        raise RunnerClosedError(f"{pool.name}: cannot make a closed pool the default")
    with _lock:
        if _pool is not None:
            raise DefaultPoolError(
                f"the default pool is already set ({_pool.name!r}); set_default_pool "
                "may be called once, before the first use of default_pool()"
            )
        _pool = pool
        _hook_exit()


def shutdown_default_pool(timeout: float | None = None) -> ShutdownReport | None:
    """Shut the default pool down gracefully now, bounded by ``timeout``
    (default :data:`EXIT_TIMEOUT`); None if there is none yet.  It stays the
    default (closed), so later posts to it raise instead of starting a new one."""
    with _lock:
        pool = _pool
    if pool is None:
        return None
    return pool.shutdown(wait=True, timeout=EXIT_TIMEOUT if timeout is None else timeout)


def create_sequenced_runner(
    *, traits: TaskTraits = DEFAULT_TRAITS, name: str | None = None, budget: float = 0.002
) -> SequencedTaskRunner:
    """A :class:`SequencedTaskRunner` on :func:`default_pool` (same arguments)."""
    return SequencedTaskRunner(default_pool(), traits=traits, name=name, budget=budget)


def create_parallel_runner(
    max_concurrency: int,
    *,
    traits: TaskTraits = DEFAULT_TRAITS,
    name: str | None = None,
    budget: float = 0.002,
) -> ParallelTaskRunner:
    """A :class:`ParallelTaskRunner` on :func:`default_pool` (same arguments)."""
    return ParallelTaskRunner(
        default_pool(), max_concurrency, traits=traits, name=name, budget=budget
    )


def create_single_thread_runner(
    *,
    capacity: int = 1024,
    policy: QueuePolicy = QueuePolicy.WAIT,
    wait_timeout: float | None = None,
    on_rejected: RejectionCallback | None = None,
    traits: TaskTraits = DEFAULT_TRAITS,
    name: str | None = None,
) -> SingleThreadTaskRunner:
    """A :class:`SingleThreadTaskRunner` on :func:`default_pool` (same
    arguments): its own thread, with the default pool's timing wheel and clock
    for its delayed tasks."""
    return SingleThreadTaskRunner(
        default_pool(),
        capacity=capacity,
        policy=policy,
        wait_timeout=wait_timeout,
        on_rejected=on_rejected,
        traits=traits,
        name=name,
    )


def _hook_exit() -> None:
    """Register the exit-time shutdown once (caller holds ``_lock``)."""
    global _exit_hooked
    if not _exit_hooked:
        _exit_hooked = True
        atexit.register(_shutdown_at_exit)


def _shutdown_at_exit() -> None:
    try:
        shutdown_default_pool()
    except Exception:  # never let exit fail over it; say so in the log
        import logging

        logging.getLogger("taskrunner.pool").exception("shutting down the default pool failed")


def _forget_for_tests() -> ThreadPool | None:
    """Tests only: drop the default (returned, not shut down) so the next
    use creates or sets a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    return pool
