"""The SQLite store's wake-ups across processes (taskrunner.jobs.stores.sqlite_wake).

A job delayed by an hour is never found by the adaptive poll (it only
delivers due times within its interval), so a callback that receives that
job's exact ``run_at`` was woken by the datagram its insert sent."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from taskrunner.jobs import JobManager, SQLiteJobStore
from taskrunner.jobs.model import new_job
from taskrunner.jobs.stores import sqlite_wake
from taskrunner.jobs.stores.sqlite_wake import WakeDirectory, wake_directory_for

pytestmark = [pytest.mark.thread_unsafe(reason="files, sockets and a monkeypatched module flag")]

needs_unix = pytest.mark.skipif(not sqlite_wake.HAVE_AF_UNIX, reason="no AF_UNIX")


class Inbox:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.got: list[float | None] = []

    def __call__(self, due: float | None) -> None:
        with self.cond:
            self.got.append(due)
            self.cond.notify_all()

    def wait_for(self, value: float | None, timeout: float = 30.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: value in self.got, timeout)


def far_job(job_type: str = "x") -> Any:
    now = time.time()
    return new_job(job_type, b"null", now=now, run_at=now + 3600)


@needs_unix
def test_an_insert_by_another_store_wakes_a_listener(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SQLiteJobStore(path) as listening, SQLiteJobStore(path) as writing:
        inbox = Inbox()
        unsubscribe = listening.subscribe(inbox)
        assert listening.wait_listening(10)
        assert inbox.wait_for(None)  # "look now" once listening
        job = far_job()
        writing.insert(job)
        assert inbox.wait_for(job.run_at)
        unsubscribe()


@needs_unix
def test_a_commit_in_another_process_wakes_a_listener(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SQLiteJobStore(path) as store:
        inbox = Inbox()
        store.subscribe(inbox)
        assert store.wait_listening(10)
        run_at = time.time() + 7200
        code = (
            "import sys; from taskrunner.jobs import SQLiteJobStore; "
            "from taskrunner.jobs.model import new_job\n"
            f"s = SQLiteJobStore({str(path)!r})\n"
            f"s.insert(new_job('x', b'null', now={run_at - 7200!r}, run_at={run_at!r}))\n"
            "s.close()\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
        assert inbox.wait_for(run_at)


@needs_unix
def test_retry_and_snooze_wake_listeners(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SQLiteJobStore(path) as listening, SQLiteJobStore(path) as writing:
        inbox = Inbox()
        listening.subscribe(inbox)
        assert listening.wait_listening(10)
        now = time.time()
        writing.insert(new_job("x", b"null", now=now))
        (job,) = writing.claim_due("me", now, limit=1, lease_seconds=60)
        later = now + 5000
        writing.snooze(job.id, "me", now, later, attempt=job.attempt)
        assert inbox.wait_for(later)
        writing.cancel(job.id, now)
        again = now + 6000
        writing.retry(job.id, now, again)
        assert inbox.wait_for(again)


@needs_unix
def test_a_dead_processs_socket_is_removed_by_the_next_poke(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    directory = wake_directory_for(str(path))
    os.makedirs(directory)
    stale = os.path.join(directory, "99999999-dead.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(stale)
    sock.close()  # closed without unlinking: what a killed process leaves
    assert os.path.exists(stale)
    wake = WakeDirectory(directory)
    assert wake.poke(1.0) == 0
    assert not os.path.exists(stale)
    wake.close()


def test_without_af_unix_listeners_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_wake, "HAVE_AF_UNIX", False)
    path = tmp_path / "jobs.db"
    with SQLiteJobStore(path) as listening, SQLiteJobStore(path) as writing:
        inbox = Inbox()
        listening.subscribe(inbox)
        assert listening.wait_listening(10)
        assert not os.path.exists(wake_directory_for(str(path)))
        now = time.time()
        job = new_job("x", b"null", now=now, run_at=now)
        writing.insert(job)
        assert inbox.wait_for(job.run_at)  # found by the adaptive poll


def test_an_unusable_wake_directory_falls_back_to_polling(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    Path(wake_directory_for(str(path))).write_text("not a directory")
    with SQLiteJobStore(path) as listening, SQLiteJobStore(path) as writing:
        inbox = Inbox()
        listening.subscribe(inbox)
        assert listening.wait_listening(10)
        now = time.time()
        job = new_job("x", b"null", now=now, run_at=now)
        writing.insert(job)  # its poke finds no directory: no error
        assert inbox.wait_for(job.run_at)


def test_a_long_path_uses_a_short_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    directory = wake_directory_for(str(deep / "jobs.db"))
    assert len(directory) < 80
    assert directory == wake_directory_for(str(deep / "jobs.db"))


@needs_unix
def test_a_long_paths_wake_directory_in_tmp_is_removed_on_close(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    directory = Path(wake_directory_for(str(deep / "jobs.db")))
    with SQLiteJobStore(deep / "jobs.db") as store:
        store.subscribe(Inbox())
        assert store.wait_listening(10)
        assert directory.is_dir()
    assert not directory.exists()  # no empty taskrunner-wake-* left in the temp dir


@needs_unix
def test_a_listener_binds_even_if_the_directory_vanishes_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another store's close removes the (empty) directory while this one binds."""
    from taskrunner.jobs.stores import sqlite_wake

    path = tmp_path / "jobs.db"
    directory = wake_directory_for(str(path))
    real_makedirs = os.makedirs
    calls = []

    def makedirs_then_vanish(name: str, *args: object, **kwargs: object) -> None:
        real_makedirs(name, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(name)
        if len(calls) == 1:
            os.rmdir(name)  # the other store's close, between mkdir and bind

    monkeypatch.setattr(sqlite_wake.os, "makedirs", makedirs_then_vanish)
    bound = sqlite_wake._bind(directory)
    assert bound is not None
    sock, name = bound
    assert os.path.exists(os.path.join(directory, name))
    sock.close()
    os.unlink(os.path.join(directory, name))


def test_memory_database_subscribers_are_called(tmp_path: Path) -> None:
    with SQLiteJobStore(":memory:") as store:
        inbox = Inbox()
        unsubscribe = store.subscribe(inbox)
        job = far_job()
        store.insert(job)
        assert inbox.wait_for(job.run_at)
        unsubscribe()


@needs_unix
def test_close_stops_the_listener_and_removes_its_socket(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteJobStore(path)
    store.subscribe(Inbox())
    assert store.wait_listening(10)
    directory = Path(wake_directory_for(str(path)))
    assert len(list(directory.glob("*.sock"))) == 1
    threads = [t for t in threading.enumerate() if t.name == "taskrunner-sqlite-wake"]
    assert threads
    store.close()
    assert not directory.exists()  # the last listener removes the directory too
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    collected = threading.Event()
    weakref.finalize(store, collected.set)
    del store
    gc.collect()
    assert collected.is_set()


@needs_unix
def test_a_manager_runs_a_job_another_process_submitted(tmp_path: Path) -> None:
    """Poll interval of an hour: only the wake-up (or the store's adaptive poll) runs the job."""
    path = tmp_path / "jobs.db"
    ran = threading.Event()
    with SQLiteJobStore(path) as worker_store:
        manager = JobManager(worker_store, poll_interval=3600)
        manager.register("ping", lambda ctx, args: ran.set())
        manager.start()
        try:
            code = (
                "from taskrunner.jobs import JobManager, SQLiteJobStore\n"
                f"s = SQLiteJobStore({str(path)!r})\n"
                "m = JobManager(s)\n"
                "m.register('ping', lambda ctx, args: None)\n"
                "m.submit('ping')\n"
                "m.shutdown(); s.close()\n"
            )
            subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
            assert ran.wait(30)
        finally:
            manager.shutdown()


@needs_unix
def test_wake_ups_that_queued_up_keep_each_future_due_time(tmp_path: Path) -> None:
    """A listener that fell behind delivers "now" once, then each distinct later due time
    (a delayed job poked behind a due one must not be lost in a minimum)."""
    wake = WakeDirectory(wake_directory_for(str(tmp_path / "jobs.db")))
    probe = sqlite_wake.PendingProbe(str(tmp_path / "jobs.db"), 1.0)
    listener = sqlite_wake.Listener(wake, probe, lambda due: None)  # not started
    poker = WakeDirectory(wake.directory)
    later = time.time() + 3600
    for due in (time.time() - 1, later, None, later + 1, later):
        assert poker.poke(due) == 1
    assert listener._receive(5.0) == [None, later, later + 1]
    listener.stop()
    poker.close()
    wake.close()
