"""Batch posting: many tasks of one callable, queued with one C call per chunk.

``ThreadPool.post_tasks(fn, arg_tuples)`` is ``[pool.post_task(fn, *a) for a in
arg_tuples]`` with the per-task costs that do not need to be per task taken
out: the arguments are checked once, the pending-task dict is updated once
per chunk, and the tokens reach the C heap through ``tr_heap_push_many`` (one
call, one lock round, for up to ``CHUNK`` tasks) instead of one call each.

Contract (the same as ``post_task`` for each task): every task gets its own
handle, its own copy of the caller's context, and the claim rule of
taskrunner.runtime.task; the tasks of one call are queued in order, so at one
priority they start in that order.  Input is checked before anything is
posted: an item that is not a tuple of arguments raises TypeError naming its
index and nothing is posted.  If the pool shuts down during the call, the
chunk that met the closed queue and those after it are not posted and
RunnerClosedError is raised; the chunks queued before are the shutdown's like
any other posted task (their handles end SUCCEEDED or DROPPED).

Tasks with a category or ``may_block`` go through ``post_task`` one by one
(their gates and the blocking group decide per task).  Thread-safety: any
thread may call it, concurrently with every other post and with shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from taskrunner.errors import RunnerClosedError
from taskrunner.native.binding import CLOSED, OK, check, ffi, lib
from taskrunner.runtime.runner import _argument_tuples
from taskrunner.runtime.task import Task, check_post
from taskrunner.runtime.traits import TaskTraits

if TYPE_CHECKING:
    from taskrunner.runtime.pool.threadpool import ThreadPool

#: Tasks queued per C call.
CHUNK = 1024

_push_many = lib.tr_heap_push_many


def post_tasks(
    pool: ThreadPool,
    fn: Callable[..., Any],
    arg_tuples: Iterable[tuple[Any, ...]],
    traits: TaskTraits,
    name: str | None,
    next_token: Callable[[], int],
    now_ns: Callable[[], int],
) -> list[Task]:
    """See the module docstring; ``pool.post_tasks`` is the public entry."""
    if pool.is_closed:
        error = RunnerClosedError(f"{pool.name}: post_tasks after shutdown")
        if pool._on_rejected is not None:
            for args in _argument_tuples(arg_tuples):
                error = pool._refused(fn, args, traits, name, "post_tasks")  # reports each
        raise error
    check_post(fn, traits)
    items = _argument_tuples(arg_tuples)
    if traits.category is not None or traits.may_block:
        return [pool.post_task(fn, *args, traits=traits, name=name) for args in items]
    heap = pool._cpu_h
    live = pool._live
    priority = int(traits.priority)
    metrics = pool._metrics
    count_post = (
        None if metrics is None else pool._post_counter(pool.name, priority, traits.category)
    )
    handles: list[Task] = []
    tokens_c = ffi.new("uint64_t[]", CHUNK)
    prios_c = ffi.new("int32_t[]", [priority] * CHUNK)
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        tasks = [Task(next_token(), fn, args, copy_context(), traits, name, pool) for args in chunk]
        if count_post is not None:
            ready = now_ns()
            for task in tasks:
                task.ready_ns = ready
                count_post()
        live.update({task.token: task for task in tasks})
        for i, task in enumerate(tasks):
            tokens_c[i] = task.token
        status = _push_many(heap, tokens_c, prios_c, len(tasks))
        if status != OK:
            for task in tasks:
                if live.pop(task.token, None) is task:
                    pool._drop_claimed(task, count=False)
                # else: shutdown's dropping step claimed it first (and counted it).
            if status == CLOSED:
                if pool._on_rejected is not None:  # the chunks never tried
                    for args in items[start + len(chunk) :]:
                        pool._refused(fn, args, traits, name, "post_tasks")  # reports it
                raise RunnerClosedError(
                    f"{pool.name}: post_tasks met a shutdown after {len(handles)} of "
                    f"{len(items)} tasks were queued"
                )
            check(status, f"{pool.name}: post_tasks")
        handles.extend(tasks)
    return handles
