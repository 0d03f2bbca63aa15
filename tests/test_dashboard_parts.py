"""The dashboard's parts: the overview's data, the chart, the bind rules, the server, the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest

from taskrunner.dashboard import data
from taskrunner.dashboard.security import Guard, check_bind, is_loopback
from taskrunner.jobs import MemoryJobStore, SQLiteJobStore, new_job

NOW = 1_700_000_000.0
TOKEN = "s3cret-token-0123456789"


# ---------------------------------------------------------------- the overview's data


def _store_with_history() -> MemoryJobStore:
    store = MemoryJobStore()

    def add(job_id: str, job_type: str, created: float, **kw: object) -> None:
        store.insert(new_job(job_type, b"{}", now=created, id=job_id, **kw))  # type: ignore[arg-type]

    add("ok1", "a", NOW - 600)
    store.claim("ok1", "w1", NOW - 599, lease_seconds=30)
    store.complete("ok1", "w1", NOW - 590)  # 10 minutes ago
    add("ok2", "a", NOW - 600)
    store.claim("ok2", "w1", NOW - 599, lease_seconds=30)
    store.fail("ok2", "w1", NOW - 598, "flaky", retry_at=NOW - 597)
    store.claim("ok2", "w1", NOW - 596, lease_seconds=30)
    store.complete("ok2", "w1", NOW - 590)  # retried, then succeeded in the same minute
    add("bad", "b", NOW - 300)
    store.claim("bad", "w2", NOW - 299, lease_seconds=30)
    store.fail("bad", "w2", NOW - 290, "boom")  # failed 290 s ago
    add("again", "b", NOW - 120)
    store.claim("again", "w2", NOW - 119, lease_seconds=30)
    store.fail("again", "w2", NOW - 110, "later", retry_at=NOW + 60)  # waits for a retry
    add("run1", "c", NOW - 50)
    store.claim("run1", "w3", NOW - 40, lease_seconds=100)
    add("run2", "c", NOW - 50)
    store.claim("run2", "w3", NOW - 30, lease_seconds=100)
    add("old", "c", NOW - 7200)  # ancient, due long ago, still waiting
    add("late", "a", NOW - 10, run_at=NOW + 3600)  # not due yet
    add("older-due", "a", NOW - 100, run_at=NOW - 9000)
    return store


def test_read_overview_counts_charts_workers_and_waiting() -> None:
    ov = data.read_overview(_store_with_history(), NOW)
    assert ov.counts == {
        "pending": 4,
        "running": 2,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert ov.total == 9 and not ov.partial
    assert [(w.owner, w.running, w.lease_until) for w in ov.workers] == [("w3", 2, NOW + 70)]
    assert ov.oldest_waiting is not None and ov.oldest_waiting.id == "older-due"
    by_type = {row.type: row for row in ov.types}
    assert sorted(by_type) == ["a", "b", "c"]
    assert by_type["c"].counts["running"] == 2 and by_type["c"].counts["pending"] == 1
    assert by_type["c"].oldest_waiting is not None and by_type["c"].oldest_waiting.id == "old"
    assert by_type["b"].oldest_waiting is None  # its pending job is not due
    assert len(ov.chart) == data.CHART_BUCKETS
    assert sum(b.succeeded for b in ov.chart) == 2
    assert sum(b.failed for b in ov.chart) == 1
    assert sum(b.retried for b in ov.chart) == 2  # ok2 (two attempts) and "again" (waiting)
    minute = {int((NOW - b.start) // 60): b for b in ov.chart}
    assert minute[10].succeeded == 2 and minute[10].retried == 1
    assert minute[5].failed == 1
    assert minute[2].retried == 1


@pytest.mark.thread_unsafe(reason="patches a module constant")
def test_read_overview_says_when_it_is_partial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "SCAN_LIMIT", 2)
    ov = data.read_overview(_store_with_history(), NOW)
    assert ov.partial
    assert ov.counts["pending"] == 4  # the counts stay exact


def test_an_empty_store_has_an_empty_overview() -> None:
    ov = data.read_overview(MemoryJobStore(), NOW)
    assert ov.total == 0 and ov.workers == () and ov.types == () and ov.oldest_waiting is None


def test_payloads_are_shown_as_json_or_hex() -> None:
    assert data.decode_payload(None) is None
    assert data.decode_payload(b'{"a": [1]}') == '{\n  "a": [\n    1\n  ]\n}'
    assert data.decode_payload(b"\xff\x00") == "(not JSON; 2 bytes) ff00"


def test_the_chart_scales_to_the_busiest_minute() -> None:
    from taskrunner.dashboard.chart import layout

    buckets = [data.ChartBucket(NOW + 60 * i, i % 3, 1 if i == 7 else 0, 0) for i in range(60)]
    chart = layout(buckets)
    assert chart.totals == (sum(i % 3 for i in range(60)), 1, 0)
    assert [v for _, v in chart.y_ticks] == [0, 2, 5]  # 1, 2 or 5 x 10^k, at least 4
    assert all(chart.plot_top - 0.01 <= bar.y <= chart.plot_bottom for bar in chart.bars)
    assert [label for _, label in chart.x_ticks] == ["-60m", "-45m", "-30m", "-15m", "now"]
    assert len(chart.retry_points.split()) == 60


# ---------------------------------------------------------------- bind rules


def test_loopback_needs_no_token_any_other_address_does() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match="without a token"):
            check_bind(host, None)
        check_bind(host, TOKEN)
    with pytest.raises(ValueError, match="at least 16 characters"):
        check_bind("127.0.0.1", "short")
    with pytest.raises(ValueError, match="at least 16"):
        Guard(host="0.0.0.0", port=80, token="short")


def test_host_names_are_checked_unless_a_token_guards_the_server() -> None:
    local = Guard(host="127.0.0.1", port=8765, token=None)
    for name in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765", "[::1]:8765"):
        assert local.check_host(name)
    for name in ("evil.example:8765", "127.0.0.1:8766", "127.0.0.1", "", None):
        assert not local.check_host(name)
    anywhere = Guard(host="0.0.0.0", port=8765, token=TOKEN)  # only built, never bound
    assert anywhere.check_host("build-box.internal:8765") and anywhere.check_host(None)


def test_csrf_tokens_fit_only_their_cookie() -> None:
    guard = Guard(host="127.0.0.1", port=1, token=None)
    a, b = guard.new_csrf_cookie(), guard.new_csrf_cookie()
    assert a != b
    assert guard.csrf_ok(a, guard.csrf_token(a))
    assert not guard.csrf_ok(b, guard.csrf_token(a))
    assert not guard.csrf_ok(None, guard.csrf_token(a)) and not guard.csrf_ok(a, None)
    other = Guard(host="127.0.0.1", port=1, token=None)  # another server: another secret
    assert not other.csrf_ok(a, guard.csrf_token(a))
    assert guard.origin_ok(None, "127.0.0.1:1")
    assert guard.origin_ok("http://127.0.0.1:1", "127.0.0.1:1")
    assert not guard.origin_ok("null", "127.0.0.1:1")
    assert not guard.origin_ok("http://evil.example", "127.0.0.1:1")


# ---------------------------------------------------------------- the server

needs_web = pytest.mark.skipif(
    find_spec("werkzeug") is None or find_spec("jinja2") is None,
    reason="the dashboard extra (werkzeug, jinja2) is not installed",
)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@needs_web
def test_serve_answers_on_loopback_and_closes_from_another_thread(tmp_path: Path) -> None:
    from taskrunner.dashboard import serve

    store = SQLiteJobStore(tmp_path / "jobs.db")
    store.insert(new_job("hello", b"{}", now=time.time()))
    server = serve(store, port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        status, page = _get(server.url)
        assert status == 200 and "hello" in page
        results: list[bool] = []
        closer = threading.Thread(target=lambda: results.append(server.close(timeout=30)))
        closer.start()
        closer.join(60)
        assert results == [True]
        assert server.close() is True  # idempotent
        with pytest.raises(OSError):
            urllib.request.urlopen(server.url, timeout=5)
        with pytest.raises(RuntimeError, match="closed"):
            server.start()
    finally:
        server.close()
        store.close()


@needs_web
def test_serve_refuses_other_addresses_without_a_token_before_binding() -> None:
    from taskrunner.dashboard import serve

    with pytest.raises(ValueError, match="without a token"):
        serve(MemoryJobStore(), host="0.0.0.0", port=0)


@needs_web
def test_serve_runs_requests_on_a_given_pool_and_leaves_it_running() -> None:
    from taskrunner import ThreadPool
    from taskrunner.dashboard import serve

    with ThreadPool(2, name="app") as pool:
        server = serve(MemoryJobStore(), port=0, pool=pool)
        try:
            assert _get(server.url + "jobs")[0] == 200
        finally:
            assert server.close(timeout=30)
        assert not pool.is_closed
        assert pool.post_task(lambda: 42) is not None


# ---------------------------------------------------------------- the command line


def test_import_taskrunner_needs_no_web_library() -> None:
    code = (
        "import sys, taskrunner, taskrunner.cli.main, taskrunner.dashboard; "
        "taskrunner.cli.main.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('werkzeug', 'jinja2')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_refuses_a_missing_file_and_an_open_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskrunner.cli.main import main

    assert main(["dashboard", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no such database file" in capsys.readouterr().err
    SQLiteJobStore(tmp_path / "jobs.db").close()
    assert main(["dashboard", "--db", str(tmp_path / "jobs.db"), "--host", "0.0.0.0"]) == 2
    assert "without a token" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--db", str(tmp_path / "jobs.db"), "--port", "70000"])
    assert exit_info.value.code == 2
    assert "a port is in [0, 65535]" in capsys.readouterr().err


@needs_web
def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    store = SQLiteJobStore(db)
    store.insert(new_job("from-the-cli", b"{}", now=time.time()))
    store.close()
    env = {**os.environ, "TASKRUNNER_DASHBOARD_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskrunner", "dashboard", "--db", str(db), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"open (http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
        assert match, line
        url, token = match.groups()
        assert token == TOKEN
        assert _get(url)[0] == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert "from-the-cli" in reply.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_web
def test_mount_adds_a_live_view_of_the_pool_and_its_manager() -> None:
    from taskrunner import SequencedTaskRunner, ThreadPool
    from taskrunner.dashboard import mount, serve
    from taskrunner.jobs import JobManager
    from taskrunner.runtime.metrics import InProcessMetrics

    with ThreadPool(2, name="app-pool", metrics=InProcessMetrics()) as pool:
        manager = JobManager(MemoryJobStore(), pool=pool)
        manager.register("greet", lambda ctx, args: f"hello {args}")
        manager.start()
        try:
            handle = manager.submit("greet", "<you>")
            assert handle.result(timeout=60) == "hello <you>"
            orders = SequencedTaskRunner(pool, name="orders")
            for _ in range(5):
                orders.post_task(lambda: None)
            assert pool.flush(timeout=60)
            server = mount(pool, manager, port=0)
            try:
                status, page = _get(server.url + "pool")
                assert status == 200
                assert "app-pool" in page and 'data-name="orders"' in page
                assert "SequencedTaskRunner" in page and manager.owner in page
                assert "greet" in page and "USER_VISIBLE" in page
                status, live = _get(server.url + "live/pool")
                assert status == 200 and "<html" not in live
                status, jobs = _get(server.url + "jobs")
                assert status == 200 and "&lt;you&gt;" not in jobs and "greet" in jobs
                assert 'id="nav-pool"' in _get(server.url)[1]
            finally:
                assert server.close(timeout=30)
            assert not pool.is_closed
            plain = serve(manager.store, port=0)
            try:
                status, page = _get(plain.url + "pool")
                assert status == 404 and "mount" in page
            finally:
                plain.close()
        finally:
            manager.shutdown()
    with pytest.raises(TypeError, match="pool must be a ThreadPool"):
        mount("pool", manager)  # type: ignore[arg-type]
