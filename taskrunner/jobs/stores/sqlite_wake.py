"""Wake-ups across processes for the SQLite store: Unix datagram sockets beside the file.

SQLite has no LISTEN/NOTIFY, so a worker in another process would otherwise
see a new job only at its next poll.  :class:`WakeDirectory` gives it one on a
single machine:

* **The directory.**  Beside the database, ``<file>-wake/`` (like SQLite's own
  ``-wal`` and ``-shm`` files) holds one Unix datagram socket per listening
  store: ``<pid>-<random>.sock``.  When that path would be too long for a
  socket address (about 100 bytes), the directory is
  ``<tempdir>/taskrunner-wake-<hash of the file's real path>`` instead; every
  process computes the same name.
* **Poking.**  After a write that makes jobs pending commits (insert, retry,
  a failure with a retry, snooze, recovery), the store calls :meth:`poke`,
  which sends one small datagram (the earliest due time, or empty for "look
  now") to every socket in the directory but its own.  It never blocks: a full
  receive buffer means that listener has wake-ups queued already.  A socket
  whose process died refuses the datagram (``ECONNREFUSED``) and is unlinked;
  a directory or socket we may not use (permissions) is skipped.  The listing
  is cached and re-read when the directory's modification time changes
  (looked at every 20 ms at most), so a poke costs about one ``sendto`` per
  listener.
* **Listening.**  :class:`Listener` binds a socket in the directory and runs a
  thread that delivers each wake-up to a callback.  It also polls, adaptively:
  every ``min_poll`` seconds while its probe (the earliest pending job's due
  time, read on a connection of its own) finds due work, doubling up to
  ``max_poll`` while it finds none.  That fallback covers wake-ups that cannot
  arrive: no ``AF_UNIX`` (the platform), a directory we cannot create or bind
  in, a poke lost, or a transactional enqueue whose commit the store cannot
  see.  A listener delivers ``None`` once when it starts ("look now").

Thread-safety: :meth:`WakeDirectory.poke` may be called from any thread (its
cache is guarded by a lock).  A :class:`Listener` is started and stopped by
its owner; ``stop`` may be called from any thread, is idempotent and returns
within ``timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Final

from taskrunner.jobs.model import Job
from taskrunner.jobs.states import JobState

__all__ = [
    "HAVE_AF_UNIX",
    "Listener",
    "PendingProbe",
    "WakeDirectory",
    "pending_due",
    "wake_directory_for",
]

log = logging.getLogger("taskrunner.jobs.sqlite")

#: Whether this platform has Unix domain sockets (if not, listeners only poll).
HAVE_AF_UNIX: Final = hasattr(socket, "AF_UNIX")

_MAX_SOCKET_PATH: Final = 100  # sun_path is 104-108 bytes; leave room for the NUL
_SOCKET_NAME_LEN: Final = 32  # "<pid>-<16 hex>.sock", generously
_STALE: Final = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
_MAX_FUTURE: Final = 64  # distinct future due times delivered per wake-up
_RECHECK: Final = 0.02  # seconds between looks at the directory when poking

Deliver = Callable[[float | None], None]


def pending_due(result: object) -> float:
    """The earliest due time among the jobs (a job, or a list) a write left pending;
    ``inf`` if it left none (nothing to wake anyone for)."""
    jobs = result if isinstance(result, list) else [result]
    dues = [job.run_at for job in jobs if isinstance(job, Job) and job.state is JobState.PENDING]
    return min(dues) if dues else math.inf


#: Binds tried when another listener removes the directory between mkdir and bind.
_BIND_ATTEMPTS = 5


def wake_directory_for(db_path: str) -> str:
    """The wake-up directory of the database ``db_path`` (the same in every process)."""
    real = os.path.realpath(db_path)
    beside = real + "-wake"
    if len(os.fsencode(beside)) + 1 + _SOCKET_NAME_LEN <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"taskrunner-wake-{digest}")


class WakeDirectory:
    """The sockets of one database's listeners, and the poking of them.

    Thread-safe.  ``own`` names sockets (base names) this process must not
    poke: its own listeners, which the store calls back directly.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # _lock guards _names, _mtime, _sender and _own.
        self._lock = threading.Lock()
        self._names: tuple[str, ...] = ()
        self._mtime = -1
        self._checked = -math.inf  # monotonic time of the last look at the directory
        self._sender: socket.socket | None = None
        self._own: set[str] = set()
        self._warned = False

    def add_own(self, name: str) -> None:
        with self._lock:
            self._own.add(name)

    def discard_own(self, name: str) -> None:
        with self._lock:
            self._own.discard(name)

    def _listing(self) -> tuple[str, ...]:
        """The socket names in the directory; under _lock.

        Re-read when the directory's modification time changed, looked at no
        more than every :data:`_RECHECK` seconds: a listener that starts in
        between misses no job, since it looks at once and then polls."""
        now = time.monotonic()
        if now - self._checked < _RECHECK:
            return self._names
        self._checked = now
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            self._names = ()
            return ()
        if mtime != self._mtime:
            try:
                names = tuple(n for n in os.listdir(self.directory) if n.endswith(".sock"))
            except OSError:
                return ()
            self._names, self._mtime = names, mtime
        return self._names

    def poke(self, due_at: float | None = None) -> int:
        """Wake every listener of the database but our own; returns how many were sent to.

        Never raises and never blocks: wake-ups are best effort (listeners poll too)."""
        if not HAVE_AF_UNIX:
            return 0
        payload = b"" if due_at is None else repr(due_at).encode()
        with self._lock:
            names = [n for n in self._listing() if n not in self._own]
            if not names:
                return 0
            if self._sender is None:
                try:
                    self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sender.setblocking(False)
                except OSError:
                    return 0
            sender = self._sender
            sent = 0
            for name in names:
                path = os.path.join(self.directory, name)
                try:
                    sender.sendto(payload, path)
                    sent += 1
                except BlockingIOError:
                    sent += 1  # its buffer is full: it has wake-ups queued already
                except OSError as exc:
                    if exc.errno in _STALE:  # its process died without unlinking it
                        with contextlib.suppress(OSError):
                            os.unlink(path)
                        self._names = tuple(n for n in self._names if n != name)
                    elif not self._warned:
                        self._warned = True
                        log.warning("cannot wake the job store listener %s: %s", path, exc)
            return sent

    def close(self) -> None:
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()


def _bind(directory: str) -> tuple[socket.socket, str] | None:
    """A datagram socket bound in ``directory`` (created if missing), or None if impossible."""
    if not HAVE_AF_UNIX:
        return None
    name = f"{os.getpid()}-{secrets.token_hex(8)}.sock"
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError as exc:
        log.warning("job store wake-ups off (polling only): %s", exc)
        return None
    # The last listener to close removes the directory (_remove_if_empty): if one
    # does so between our mkdir and our bind, make it again.
    for attempt in range(_BIND_ATTEMPTS):
        try:
            os.makedirs(directory, exist_ok=True)
            sock.bind(os.path.join(directory, name))
            return sock, name
        except FileNotFoundError:
            if attempt + 1 < _BIND_ATTEMPTS:
                continue
            problem: OSError = FileNotFoundError(f"{directory} keeps disappearing")
        except OSError as exc:
            problem = exc
        break
    sock.close()
    log.warning("job store wake-ups off (polling only): cannot bind in %s: %s", directory, problem)
    return None


def _remove_if_empty(directory: str) -> None:
    """Remove the wake-up directory once its last socket is gone (not to leave
    one empty ``taskrunner-wake-*`` per database in the temp dir, or a ``-wake``
    beside the file).  A listener binding meanwhile makes it again (:func:`_bind`)."""
    with contextlib.suppress(OSError):  # not empty (another listener), or gone already
        os.rmdir(directory)


def _decode(payload: bytes) -> float | None:
    try:
        due = float(payload)
    except ValueError:
        return None
    return due if math.isfinite(due) else None


class Listener:
    """A thread that delivers wake-ups of one database to ``deliver``, and polls adaptively.

    ``probe()`` returns the earliest due time of pending jobs (or None); it runs
    on the listener's thread, which closes it as it ends.  ``deliver`` is
    called on that thread, one call at a time, with the earliest due time
    woken about (``None``: look now).
    """

    def __init__(
        self,
        wake: WakeDirectory | None,
        probe: PendingProbe,
        deliver: Deliver,
        *,
        min_poll: float = 0.05,
        max_poll: float = 1.0,
    ) -> None:
        self._wake = wake
        self._probe = probe
        self._deliver = deliver
        self._min_poll = min_poll
        self._max_poll = max_poll
        bound = None if wake is None else _bind(wake.directory)
        self._sock: socket.socket | None = None
        self.name: str | None = None
        if wake is not None and bound is not None:
            self._sock, self.name = bound
            wake.add_own(self.name)
        self._stop = threading.Event()
        #: Set once the socket is bound and the thread runs (or wake-ups are off).
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._run, name="taskrunner-sqlite-wake", daemon=True)

    @property
    def has_socket(self) -> bool:
        """Whether wake-ups from other processes can reach this listener (else it only polls)."""
        return self._sock is not None

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with contextlib.suppress(Exception):
                self._probe.close()

    def _loop(self) -> None:
        interval = self._min_poll
        self.listening.set()
        self._safe_deliver(None)
        next_probe = time.monotonic() + interval
        while not self._stop.is_set():
            wait = max(0.0, next_probe - time.monotonic())
            woken = self._receive(wait)
            if self._stop.is_set():
                break
            if woken is not None:
                for due in woken:
                    self._safe_deliver(due)
                continue
            if time.monotonic() < next_probe:
                continue
            try:
                earliest = self._probe()
            except Exception as exc:  # the store is busy or gone: poll again later
                log.debug("job store probe failed: %s", exc)
                earliest = None
            if earliest is not None and earliest <= time.time() + interval:
                self._safe_deliver(earliest)
                interval = self._min_poll  # work is about: look again soon
            else:
                interval = min(interval * 2, self._max_poll)
            next_probe = time.monotonic() + interval

    def _receive(self, wait: float) -> list[float | None] | None:
        """Wait up to ``wait`` s for wake-ups; None if none came, else what to deliver.

        Wake-ups that queued up are delivered together: one "now" (``None``) for
        all those already due, then each distinct future due time (up to
        :data:`_MAX_FUTURE`; the adaptive poll finds the others when they are due)."""
        sock = self._sock
        if sock is None:
            self._stop.wait(wait)
            return None
        sock.settimeout(wait)
        try:
            first = sock.recv(64)
        except TimeoutError:
            return None
        except OSError:
            self._stop.wait(wait)
            return None
        dues = [_decode(first)]
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            while len(dues) < 1024:  # drain what queued up
                dues.append(_decode(sock.recv(64)))
        now = time.time()
        future = sorted({d for d in dues if d is not None and d > now})[:_MAX_FUTURE]
        due_now = any(d is None or d <= now for d in dues)
        return ([None] if due_now else []) + list(future)

    def _safe_deliver(self, due: float | None) -> None:
        try:
            self._deliver(due)
        except Exception:
            log.exception("a job store subscriber failed")

    def join(self, timeout: float) -> None:
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (within ``timeout``) and remove the socket.  Idempotent."""
        self._stop.set()
        sock, name, wake = self._sock, self.name, self._wake
        if sock is not None and name is not None and wake is not None:
            with contextlib.suppress(OSError):  # wake it now rather than at its next probe
                poker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    poker.setblocking(False)
                    poker.sendto(b"", os.path.join(wake.directory, name))
                finally:
                    poker.close()
        self.join(timeout)
        if sock is not None and name is not None and wake is not None:
            wake.discard_own(name)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(wake.directory, name))
            _remove_if_empty(wake.directory)
            sock.close()
            self._sock = None


class PendingProbe:
    """A probe for :class:`Listener`: the earliest due time of pending jobs in ``db_path``.

    It opens its own connection on first use (on the listener's thread) and
    only reads, so it never takes SQLite's write lock; :meth:`close` (called by
    the listener as it ends, on its thread) closes it.  With ``read``, a
    private database's probe, it calls that instead."""

    def __init__(
        self,
        db_path: str,
        busy_timeout: float,
        read: Callable[[], float | None] | None = None,
    ) -> None:
        self._path = db_path
        self._timeout = busy_timeout
        self._read = read  # a private database: ask its store instead
        self._conn: sqlite3.Connection | None = None  # used only by the listener's thread

    def __call__(self) -> float | None:
        if self._read is not None:
            return self._read()
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
        row = self._conn.execute("SELECT min(run_at) FROM jobs WHERE state = 'pending'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
