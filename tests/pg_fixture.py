"""A throwaway PostgreSQL server for the tests, or the one named by ``TASKRUNNER_PG_DSN``.

When ``TASKRUNNER_PG_DSN`` is set, the tests use that server (they only create
and drop schemas and databases of their own, named ``tr_test_...``).
Otherwise the first test that asks starts a private cluster, once per test
process, and it is stopped when the process exits:

* the server binaries are the newest ``/usr/lib/postgresql/*/bin`` (Debian's
  layout), else the directory ``pg_config --bindir`` names, else ``initdb`` on
  ``PATH``;
* ``initdb`` writes into a new temporary directory; PostgreSQL refuses to run
  as root, so when we are root the directory is given to an unprivileged
  account (``postgres`` if it exists, else ``nobody``) and the server
  binaries run under it through ``runuser``;
* ``pg_ctl start`` listens on a free port of 127.0.0.1 and on a Unix socket in
  that directory (which the DSN uses); durability is off (``fsync=off``),
  since the data is thrown away;
* at exit, ``pg_ctl stop -m immediate`` and the directory is removed.

If no server can be started the tests that need one are skipped, with the
reason, or fail when ``TASKRUNNER_PG_REQUIRED=1`` (for CI, where PostgreSQL is
installed on purpose).

Test modules use :func:`pg_dsn` (the fixture), :func:`new_schema` (a fresh
schema name, dropped at exit) and :func:`new_database` (a fresh database,
dropped at exit).  Import them from the module: ``from pg_fixture import
pg_dsn``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "PgCluster",
    "PgUnavailable",
    "cluster_dsn",
    "new_database",
    "new_schema",
    "pg_dsn",
    "start_cluster",
]

ENV_DSN = "TASKRUNNER_PG_DSN"
ENV_REQUIRED = "TASKRUNNER_PG_REQUIRED"
SUPERUSER = "taskrunner"


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be started (the message says why)."""


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``/``postgres``, or None if none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            out = ""
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_account() -> str | None:
    """When we are root: the account the server runs as; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PgUnavailable("running as root and neither a 'postgres' nor a 'nobody' account exists")


@dataclass
class PgCluster:
    """A running throwaway cluster; :meth:`stop` ends it and deletes its files."""

    bindir: Path
    directory: Path
    port: int
    account: str | None
    #: Keep PostgreSQL's durability (fsync); off by default, the data being thrown away.
    durable: bool = False
    stopped: bool = field(default=False)

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def dsn(self) -> str:
        return f"host={self.directory} port={self.port} user={SUPERUSER} dbname=postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.account is not None:
            command = ["runuser", "-u", self.account, "--", *command]
        return subprocess.run(
            command,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        log = self.directory / "server.log"
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.directory}",
            "max_connections=200",
        ]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        options = " ".join(f"-c {setting}" for setting in settings)
        done = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(log), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if done.returncode != 0:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PgUnavailable(f"pg_ctl start failed: {done.stderr.strip()} {text}")

    def halt(self) -> None:
        """Stop the server at once (``-m immediate``, as a crash would) and keep its
        files: :meth:`start` brings it back (the fault harness's outage)."""
        done = self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        if done.returncode != 0:
            raise PgUnavailable(f"pg_ctl stop failed: {done.stderr.strip()}")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(*, durable: bool = False) -> PgCluster:
    """initdb a new cluster in a temporary directory and start it; raises PgUnavailable.

    ``durable`` keeps PostgreSQL's default durability (``fsync`` on): for the
    benchmark, whose figures must mean something.
    """
    bindir = find_bindir()
    if bindir is None:
        raise PgUnavailable(
            "no PostgreSQL server binaries (looked in /usr/lib/postgresql/*/bin, pg_config, "
            "PATH); install Debian's 'postgresql' package or set TASKRUNNER_PG_DSN"
        )
    account = _unprivileged_account()
    base = "/tmp" if account is not None and os.path.isdir("/tmp") else None
    directory = Path(tempfile.mkdtemp(prefix="taskrunner-pg-", dir=base))
    try:
        if account is not None:
            entry = pwd.getpwnam(account)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        cluster = PgCluster(bindir, directory, _free_port(), account, durable)
        done = cluster._run(
            "initdb", "-D", str(cluster.datadir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise PgUnavailable(f"initdb failed: {done.stderr.strip()[-2000:]}")
        last: PgUnavailable | None = None
        for _ in range(3):  # the free port may be taken between choosing and binding it
            try:
                cluster.start()
                return cluster
            except PgUnavailable as exc:
                last = exc
                cluster.port = _free_port()
        assert last is not None
        raise last
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


# ---------------------------------------------------------------- one per test process

_lock = threading.Lock()  # guards the four globals below
_cluster: PgCluster | None = None
_failure: str | None = None
_cleanup: list[tuple[str, str]] = []  # ("schema" | "database", name), dropped at exit
_exit_hook = False  # _shutdown is registered with atexit


def _hook_exit() -> None:
    """Register :func:`_shutdown` to run at exit, once (call under ``_lock``)."""
    global _exit_hook
    if not _exit_hook:
        _exit_hook = True
        atexit.register(_shutdown)


def cluster_dsn() -> str:
    """The DSN of the test server, starting the throwaway cluster on first use.

    Raises :class:`PgUnavailable` (every later call too) if none can be had.
    """
    global _cluster, _failure
    env = os.environ.get(ENV_DSN)
    if env:
        return env
    with _lock:
        if _cluster is not None:
            return _cluster.dsn
        if _failure is not None:
            raise PgUnavailable(_failure)
        try:
            _cluster = start_cluster()
        except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
            _failure = str(exc)
            raise PgUnavailable(_failure) from exc
        _hook_exit()
        return _cluster.dsn


def _shutdown() -> None:
    with _lock:
        cluster = _cluster
        doomed = list(reversed(_cleanup))
        _cleanup.clear()
    if cluster is None and doomed:  # an outside server: leave it as we found it
        _drop(os.environ[ENV_DSN], doomed)
    if cluster is not None:
        cluster.stop()


def _drop(dsn: str, doomed: list[tuple[str, str]]) -> None:
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        return
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for kind, name in doomed:
                if kind == "schema":
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                    )
                else:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
    except Exception as exc:  # cleanup at exit: report, never raise
        print(f"pg_fixture: cleanup failed: {exc}", file=sys.stderr)


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL tests need a server and none could be started: {reason}"
    if os.environ.get(ENV_REQUIRED) == "1":
        pytest.fail(message)
    print(f"\n*** SKIPPING: {message}", file=sys.stderr)
    pytest.skip(message)


def require_dsn() -> str:
    """:func:`cluster_dsn` for a test: skips it (or fails, see the module doc) if none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'taskrunner[postgres]')")
    try:
        return cluster_dsn()
    except PgUnavailable as exc:
        _unavailable(str(exc))
        raise  # not reached: _unavailable raises


@pytest.fixture
def pg_dsn() -> str:
    """The DSN of the test server (see the module docstring)."""
    return require_dsn()


def new_schema() -> str:
    """A unique schema name, for one store; the schema is dropped at exit."""
    name = f"tr_test_{os.getpid()}_{os.urandom(6).hex()}"
    with _lock:
        _cleanup.append(("schema", name))
        _hook_exit()
    return name


def new_database(dsn: str) -> str:
    """Create a new, empty database on the test server; returns its DSN.  Dropped at exit."""
    import psycopg
    from psycopg import conninfo, sql

    name = f"tr_test_{os.getpid()}_{os.urandom(6).hex()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with _lock:
        _cleanup.append(("database", name))
        _hook_exit()
    return conninfo.make_conninfo(dsn, dbname=name)
