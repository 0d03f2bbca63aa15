"""An asyncio HTTP service that offloads CPU work to a thread pool.

Run it with ``python -m taskrunner.examples.asyncio_service --port 8080`` and
try ``curl 'localhost:8080/fib?n=27'``, ``curl 'localhost:8080/primes?below=200000'``
and ``curl localhost:8080/stats``.

What it shows, for users coming from ``concurrent.futures`` and asyncio:

* The event loop never computes anything heavy.  ``/fib`` runs on the pool at
  USER_BLOCKING priority (someone is waiting for it) with ``await
  pool.run(...)``; ``/primes`` goes through an Executor view fixed at
  BEST_EFFORT (``loop.run_in_executor(batch, ...)``), so a burst of reports
  never delays interactive requests, and at most ``best_effort_limit`` of them
  run at once.
* Results come back to the loop with ``post_task_and_reply_with_result(...,
  reply_runner=AsyncioTaskRunner(loop, pool))``: the cache of Fibonacci
  numbers is touched only on the loop's thread, so it needs no lock.
* A repeating task on the loop's runner refreshes the service's counters each
  second; it waits in the pool's timing wheel, not in the loop's timers.
* A client that disconnects cancels its computation if it has not started
  (cancelling the awaiting coroutine cancels the task).

The HTTP handling is the standard library's ``asyncio.start_server`` with a
deliberately small HTTP/1.0 parser: GET only, one request per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from taskrunner import TaskPriority, TaskTraits, ThreadPool
from taskrunner.runtime.executor import RunnerExecutor
from taskrunner.runtime.runners.asyncio_runner import AsyncioTaskRunner

INTERACTIVE = TaskTraits(priority=TaskPriority.USER_BLOCKING)
BATCH = TaskTraits(priority=TaskPriority.BEST_EFFORT)
MAX_FIB = 32  # naive recursion: fib(32) takes about a second of CPU
MAX_PRIMES_BELOW = 5_000_000


def fib(n: int) -> int:
    """The n-th Fibonacci number, computed the slow way (CPU work on purpose)."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def count_primes(below: int) -> int:
    """How many primes are smaller than ``below`` (a sieve: CPU and memory)."""
    if below < 3:
        return 0
    sieve = bytearray([1]) * below
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(below**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, below, i)))
    return sum(sieve)


class BadRequest(ValueError):
    """The request cannot be served (answered with 400 and this message)."""


class Service:
    """The HTTP service: a server on the loop, CPU work on ``pool``.

    Create it inside the running loop, then ``await start()``; ``await
    stop()`` closes the server and the loop's runner (the pool is the
    caller's).  The cache and the counters are confined to the loop's thread.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.on_loop = AsyncioTaskRunner(self.loop, pool, name="http-loop")
        self.batch = RunnerExecutor(pool, traits=BATCH, name="primes")
        self.cache: dict[int, int] = {}  # loop thread only
        self.counters = {"requests": 0, "fib_computed": 0, "fib_cached": 0, "primes": 0}
        self.snapshot: dict[str, Any] = {}
        self._server: asyncio.Server | None = None
        self._ticker = self.on_loop.post_repeating_task(self._refresh, 1.0, initial_delay=0.0)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the service is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._ticker.stop()
        self.batch.shutdown(wait=False, cancel_futures=True)
        self.on_loop.shutdown()  # on the loop's thread: runs what is queued, here

    # ---- the work --------------------------------------------------------------------

    async def fib(self, n: int) -> int:
        if n in self.cache:
            self.counters["fib_cached"] += 1
            return self.cache[n]

        def remember(value: int) -> None:  # runs on the loop (the reply runner)
            self.cache[n] = value
            self.counters["fib_computed"] += 1

        future = self.pool.post_task_and_reply_with_result(
            lambda: fib(n), remember, reply_runner=self.on_loop, traits=INTERACTIVE, name="fib"
        )
        return await asyncio.wrap_future(future)

    async def primes(self, below: int) -> int:
        result = await self.loop.run_in_executor(self.batch, count_primes, below)
        self.counters["primes"] += 1
        return result

    def _refresh(self) -> None:
        """Every second, on the loop: the figures /stats serves."""
        pool = self.pool.stats()
        self.snapshot = {
            **self.counters,
            "cached": len(self.cache),
            "pool_queued": pool["queued_total"],
            "pool_running": pool["running"],
            "at": time.time(),
        }

    # ---- HTTP -------------------------------------------------------------------------

    async def route(self, target: str) -> dict[str, Any]:
        url = urlsplit(target)
        query = parse_qs(url.query)
        if url.path == "/fib":
            n = _int_arg(query, "n", 0, MAX_FIB)
            return {"n": n, "fib": await self.fib(n)}
        if url.path == "/primes":
            below = _int_arg(query, "below", 0, MAX_PRIMES_BELOW)
            return {"below": below, "primes": await self.primes(below)}
        if url.path == "/stats":
            return {**self.snapshot, **self.counters}
        raise LookupError(url.path)

    @staticmethod
    async def _unless_gone(work: Any, reader: asyncio.StreamReader) -> Any:
        """Await ``work``, unless the client hangs up first: then cancel it
        (which cancels its pool task if that has not started)."""
        job = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(reader.read(1))  # b"" once the client closed
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
            hung_up = not gone.done() or gone.exception() is not None or not gone.result()
            if not job.done() and not hung_up:  # more bytes, not a hang-up: keep waiting
                await asyncio.wait({job})
        finally:
            gone.cancel()
        if not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
            raise _ClientGone
        return job.result()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            self.counters["requests"] += 1
            if method != "GET":
                status, body = 405, {"error": "only GET is served"}
            else:
                try:
                    status, body = 200, await self._unless_gone(self.route(target), reader)
                except BadRequest as exc:
                    status, body = 400, {"error": str(exc)}
                except LookupError:
                    status, body = 404, {"error": f"no such path: {target}"}
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, body = 400, {"error": "malformed request"}
        except (ConnectionError, asyncio.CancelledError, _ClientGone):
            writer.close()
            return
        payload = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        writer.write(
            f"HTTP/1.0 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


class _ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def _int_arg(query: dict[str, list[str]], name: str, low: int, high: int) -> int:
    try:
        value = int(query[name][0])
    except (KeyError, IndexError, ValueError):
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


async def get(port: int, target: str, host: str = "127.0.0.1") -> tuple[int, dict[str, Any]]:
    """A tiny HTTP client for the service (used by the test and --demo)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


async def serve(host: str, port: int, workers: int, demo: bool) -> None:
    with ThreadPool(workers, name="cpu") as pool:
        service = Service(pool)
        await service.start(host, port)
        print(f"serving on http://{host}:{service.port}  (Ctrl-C stops)", flush=True)
        if demo:
            fibs = [get(service.port, f"/fib?n={n}") for n in (20, 24, 27, 27)]
            reports = [get(service.port, "/primes?below=300000") for _ in range(4)]
            for status, body in await asyncio.gather(*fibs, *reports):
                print(status, body, flush=True)
            print(await get(service.port, "/stats"), flush=True)
        else:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
        await service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="send a few requests, then exit")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, 0 if args.demo else args.port, args.workers, args.demo))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
