"""The example service (taskrunner/examples/asyncio_service.py) serves its
routes, offloads CPU work to the pool with priorities, replies on the loop,
cancels the work of a client that hung up, and shuts down cleanly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from taskrunner import ThreadPool
from taskrunner.examples import asyncio_service as svc

LONG = 30.0


def test_routes_and_replies_on_the_loop() -> None:
    async def main() -> None:
        with ThreadPool(2) as pool:
            service = svc.Service(pool)
            await service.start()
            port = service.port
            results = await asyncio.gather(
                svc.get(port, "/fib?n=15"),
                svc.get(port, "/primes?below=1000"),
                svc.get(port, "/fib?n=16"),
            )
            assert results == [
                (200, {"n": 15, "fib": 610}),
                (200, {"below": 1000, "primes": 168}),
                (200, {"n": 16, "fib": 987}),
            ]
            # The reply ran on the loop: the cache is filled, and served next time.
            assert service.cache == {15: 610, 16: 987}
            assert await svc.get(port, "/fib?n=15") == (200, {"n": 15, "fib": 610})
            status, stats = await svc.get(port, "/stats")
            assert status == 200
            assert stats["requests"] == 5 and stats["fib_cached"] == 1
            assert stats["fib_computed"] == 2 and stats["primes"] == 1
            assert (await svc.get(port, "/fib?n=x"))[0] == 400
            assert (await svc.get(port, f"/fib?n={svc.MAX_FIB + 1}"))[0] == 400
            assert (await svc.get(port, "/nope"))[0] == 404
            await service.stop()
            assert service.on_loop.is_closed

    asyncio.run(main())


def test_a_client_that_hangs_up_cancels_its_work() -> None:
    async def main() -> None:
        with ThreadPool(1) as pool:
            service = svc.Service(pool)
            await service.start()
            gate = threading.Event()
            pool.post_task(gate.wait, LONG)  # the only worker is busy
            _, writer = await asyncio.open_connection("127.0.0.1", service.port)
            writer.write(b"GET /fib?n=20 HTTP/1.0\r\n\r\n")
            await writer.drain()
            for _ in range(1000):  # until the request reached the pool
                if pool.stats()["queued_total"]:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(1000):
                if pool.stats()["cancelled"]:
                    break
                await asyncio.sleep(0.01)
            assert pool.stats()["cancelled"] == 1
            gate.set()
            await service.stop()

    asyncio.run(main())


@pytest.mark.thread_unsafe(reason="patches the example module")
def test_priorities_put_interactive_work_first(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    fib, count_primes = svc.fib, svc.count_primes
    monkeypatch.setattr(svc, "fib", lambda n: (ran.append("fib"), fib(n))[1])
    monkeypatch.setattr(svc, "count_primes", lambda b: (ran.append("primes"), count_primes(b))[1])

    async def main() -> None:
        with ThreadPool(1) as pool:
            service = svc.Service(pool)
            await service.start()
            gate = threading.Event()
            pool.post_task(gate.wait, LONG)  # queue everything behind this
            reports = [
                asyncio.ensure_future(svc.get(service.port, "/primes?below=100")) for _ in range(3)
            ]
            while pool.stats()["queued"]["BEST_EFFORT"] < 3:
                await asyncio.sleep(0.01)
            interactive = asyncio.ensure_future(svc.get(service.port, "/fib?n=10"))
            while pool.stats()["queued"]["USER_BLOCKING"] < 1:
                await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(interactive, *reports)
            await service.stop()

    asyncio.run(main())
    assert ran[0] == "fib" and ran.count("primes") == 3  # posted last, ran first


@pytest.mark.thread_unsafe(reason="starts an interpreter")
def test_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "taskrunner.examples.asyncio_service", "--demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "'fib': 196418" in out.stdout and "'primes': 25997" in out.stdout
