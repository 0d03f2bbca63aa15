"""The dashboard's WSGI application, driven without a browser (Werkzeug's test client).

Every store kind: the pages, the actions through the store's transitions, and
the safety rules (Host, token, CSRF, Origin, read-only, escaping, 4xx pages).
The same flows in a real browser are in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

from dashboard_fixture import EVIL_TYPE, Filled, fill_store
from pg_fixture import new_schema, require_dsn
from werkzeug.test import Client, TestResponse

from taskrunner.dashboard.app import DashboardApp, job_url
from taskrunner.dashboard.security import Guard
from taskrunner.jobs import JobState, JobStore, MemoryJobStore, SQLiteJobStore

HOST = "127.0.0.1:8765"
TOKEN = "s3cret-token-0123456789"


def make_store(kind: str, directory: Path) -> JobStore:
    if kind == "memory":
        return MemoryJobStore()
    if kind == "sqlite":
        return SQLiteJobStore(directory / "jobs.db")
    from taskrunner.jobs import PostgresJobStore

    return PostgresJobStore(require_dsn(), schema=new_schema())


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, Filled]]:
    store = make_store(request.param, tmp_path)
    try:
        yield store, fill_store(store, time.time(), per_state=12)
    finally:
        store.close()


def client(store: JobStore, *, token: str | None = None, read_only: bool = False) -> Client:
    guard = Guard(host="127.0.0.1", port=8765, token=token)
    return Client(DashboardApp(store, guard=guard, read_only=read_only))


def get(c: Client, url: str, **kw: object) -> TestResponse:
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    headers.setdefault("Host", HOST)
    return c.get(url, headers=headers, **kw)  # type: ignore[arg-type]


def csrf_of(page: TestResponse) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match, page.text
    return match.group(1)


def post_action(c: Client, action: str, job_id: str, csrf: str | None = None) -> TestResponse:
    url = job_url(job_id, action)
    if csrf is None:
        csrf = csrf_of(get(c, url))
    return c.post(url, data={"csrf": csrf}, headers={"Host": HOST})


# ---------------------------------------------------------------- pages


def test_overview_counts_every_state_and_escapes(filled: tuple[JobStore, Filled]) -> None:
    store, _ = filled
    page = get(client(store), "/")
    assert page.status_code == 200
    for state in JobState:
        count = store.count_jobs(states=[state])
        assert re.search(
            rf'data-state="{state.value}">\s*<span class="count">{count}</span>', page.text
        )
    assert "worker-a" in page.text and "worker-b" in page.text
    assert "<svg" in page.text and 'class="bar succeeded"' in page.text
    assert EVIL_TYPE not in page.text and "&lt;b&gt;evil&lt;/b&gt;" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    live = get(client(store), "/live/overview")
    assert live.status_code == 200 and "<html" not in live.text and "state-counts" in live.text


def test_jobs_filters_and_pages_with_the_store_cursor(filled: tuple[JobStore, Filled]) -> None:
    store, data = filled
    c = client(store)
    seen: list[str] = []
    url = "/jobs?state=failed&limit=5"
    while url:
        page = get(c, url)
        assert page.status_code == 200
        rows = re.findall(r'<tr class="job" data-id="([^"]+)" data-state="(\w+)">', page.text)
        assert {s for _, s in rows} <= {"failed"}
        seen += [i for i, _ in rows]
        match = re.search(r'<a href="([^"]+)" id="next-page">', page.text)
        url = match.group(1).replace("&amp;", "&") if match else ""
    assert seen == data.ids("failed")
    assert "12 matching jobs" in get(c, "/jobs?state=failed").text
    typed = get(c, "/jobs?type=email.send&state=succeeded").text
    rows = re.findall(r'data-id="([^"]+)" data-state="succeeded"', typed)
    assert rows and all(store.get(i).type == "email.send" for i in rows)
    assert "no matching jobs" in get(c, "/jobs?since=1s").text.lower()


def test_job_page_shows_payloads_traceback_and_timeline_escaped(
    filled: tuple[JobStore, Filled],
) -> None:
    store, data = filled
    page = get(client(store), job_url(data.evil_id))
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "created" in page.text and "finished: failed" in page.text
    assert 'id="retry"' in page.text and 'id="cancel"' not in page.text
    assert "<tr><th>Queue</th><td>default</td></tr>" in page.text
    done = get(client(store), job_url(data.ids("succeeded")[0])).text
    assert 'id="result"' in done and "&#34;ok&#34;: true" in done


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("/jobs/no-such-job", 404, "no job with id"),
        ("/jobs?state=bogus", 400, "Unknown state"),
        ("/jobs?after=not-a-cursor", 400, "Bad page cursor"),
        ("/jobs?since=yesterday-ish", 400, "Bad &#39;since&#39;"),
        ("/jobs?limit=0", 400, "between 1 and 500"),
        ("/jobs?limit=ten", 400, "whole number"),
        ("/nowhere", 404, "Not Found"),
        ("/retry/no-such-job", 404, "no job with id"),
        ("/static/secrets.txt", 404, "No static file"),
    ],
)
def test_bad_input_gets_a_clear_4xx_page(tmp_path: Path, url: str, code: int, says: str) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        page = get(client(store), url)
    finally:
        store.close()
    assert page.status_code == code
    assert says in page.text
    assert "Traceback" not in page.text and 'id="error"' in page.text


def test_a_job_id_with_a_slash_and_markup_round_trips(tmp_path: Path) -> None:
    from taskrunner.jobs import new_job

    store = MemoryJobStore()
    job = new_job("t", b"{}", now=time.time(), id="a/b <i>c</i>")
    store.insert(job)
    c = client(store)
    page = get(c, job_url(job.id))
    assert page.status_code == 200 and "a/b &lt;i&gt;c&lt;/i&gt;" in page.text
    assert post_action(c, "cancel", job.id).status_code == 303
    assert store.get(job.id).state is JobState.CANCELLED


# ---------------------------------------------------------------- actions


@pytest.mark.thread_unsafe(reason="acts on given jobs of a shared store: one retry wins")
def test_retry_and_cancel_go_through_the_store(filled: tuple[JobStore, Filled]) -> None:
    store, data = filled
    c = client(store)
    failed, pending, running = data.ids("failed")[0], data.ids("pending")[0], data.ids("running")[0]
    reply = post_action(c, "retry", failed)
    assert reply.status_code == 303 and reply.headers["Location"].endswith("?done=retried")
    assert store.get(failed).state is JobState.PENDING
    assert "pending again" in get(c, reply.headers["Location"]).text
    assert post_action(c, "cancel", pending).status_code == 303
    assert store.get(pending).state is JobState.CANCELLED
    reply = post_action(c, "cancel", running)
    assert reply.headers["Location"].endswith("?done=cancel-requested")
    assert store.get(running).cancel_requested


@pytest.mark.thread_unsafe(reason="deletes given jobs of a shared store: one delete wins")
def test_delete_goes_through_the_store_and_is_refused_while_running(
    filled: tuple[JobStore, Filled],
) -> None:
    from taskrunner.jobs import UnknownJobError

    store, data = filled
    c = client(store)
    done, running = data.ids("succeeded")[1], data.ids("running")[1]
    page = get(c, job_url(done))
    assert 'id="delete"' in page.text
    assert 'id="delete"' not in get(c, job_url(running)).text  # refused while it runs
    reply = post_action(c, "delete", done)
    assert reply.status_code == 303 and reply.headers["Location"] == "/jobs?done=deleted"
    assert "Deleted: the job is gone" in get(c, reply.headers["Location"]).text
    with pytest.raises(UnknownJobError):
        store.get(done)
    assert get(c, job_url(done)).status_code == 404
    reply = post_action(c, "delete", running)
    assert reply.status_code == 409 and "The store refused" in reply.text
    assert store.get(running).state is JobState.RUNNING


def test_an_illegal_transition_shows_the_store_error(filled: tuple[JobStore, Filled]) -> None:
    store, data = filled
    c = client(store)
    succeeded = data.ids("succeeded")[0]
    csrf = csrf_of(get(c, job_url(data.ids("failed")[0], "retry")))
    reply = post_action(c, "retry", succeeded, csrf)
    assert reply.status_code == 409
    assert "illegal transition succeeded -&gt; pending" in reply.text
    assert store.get(succeeded).state is JobState.SUCCEEDED
    reply = post_action(c, "cancel", succeeded, csrf)
    assert reply.status_code == 409 and "already succeeded" in reply.text


# ---------------------------------------------------------------- safety


def test_actions_need_the_csrf_token_of_this_browser(filled: tuple[JobStore, Filled]) -> None:
    store, data = filled
    failed = data.ids("failed")[0]
    c = client(store)
    good = csrf_of(get(c, job_url(failed, "retry")))
    for bad in ("", "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1")):
        reply = c.post(job_url(failed, "retry"), data={"csrf": bad}, headers={"Host": HOST})
        assert reply.status_code == 403 and "CSRF" in reply.text
    other = client(store)  # another browser: its own cookie, so this token does not fit
    get(other, "/")
    assert post_action(other, "retry", failed, good).status_code == 403
    evil_origin = c.post(
        job_url(failed, "retry"),
        data={"csrf": good},
        headers={"Host": HOST, "Origin": "http://evil.example"},
    )
    assert evil_origin.status_code == 403 and "another site" in evil_origin.text
    assert store.get(failed).state is JobState.FAILED
    assert c.get(job_url(failed, "retry"), headers={"Host": HOST}).status_code == 200
    assert c.get_cookie("tr_csrf_8765", domain="127.0.0.1") is not None


def test_read_only_hides_and_refuses_actions(filled: tuple[JobStore, Filled]) -> None:
    store, data = filled
    failed = data.ids("failed")[0]
    c = client(store, read_only=True)
    page = get(c, job_url(failed))
    assert 'id="retry"' not in page.text and 'id="read-only"' in page.text
    assert get(c, job_url(failed, "retry")).status_code == 403
    reply = c.post(job_url(failed, "retry"), data={"csrf": "x"}, headers={"Host": HOST})
    assert reply.status_code == 403 and "read-only" in reply.text
    assert store.get(failed).state is JobState.FAILED


def test_a_token_is_required_when_set(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        c = client(store, token=TOKEN)
        assert get(c, "/").status_code == 401
        assert get(c, "/?token=wrong-token-0000000").status_code == 401
        reply = get(c, "/jobs?state=failed&token=" + TOKEN)
        assert reply.status_code == 303 and reply.headers["Location"] == "/jobs?state=failed"
        assert c.get_cookie("tr_token_8765", domain="127.0.0.1") is not None
        assert get(c, "/jobs").status_code == 200  # the cookie carries it now
        fresh = client(store, token=TOKEN)
        reply = fresh.get(
            "/",
            headers={"Host": HOST},
            environ_overrides={"PATH_INFO": "//evil.example/x", "QUERY_STRING": "token=" + TOKEN},
        )
        assert reply.status_code == 303 and reply.headers["Location"] == "/evil.example/x"
        assert get(fresh, "/static/dashboard.css").status_code == 200  # the 401 page's style
        bearer = client(store, token=TOKEN)
        assert get(bearer, "/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert get(bearer, "/", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        store.close()


def test_a_wrong_method_gets_405_with_the_allowed_ones() -> None:
    reply = client(MemoryJobStore()).post("/jobs", headers={"Host": HOST})
    assert reply.status_code == 405 and "Method Not Allowed" in reply.text
    assert set(reply.headers["Allow"].split(", ")) == {"GET", "HEAD"}


def test_other_host_names_are_refused(tmp_path: Path) -> None:
    store = MemoryJobStore()
    c = client(store)
    assert get(c, "/", headers={"Host": "evil.example:8765"}).status_code == 400
    assert get(c, "/", headers={"Host": "localhost:8765"}).status_code == 200
    assert get(c, "/", headers={"Host": "127.0.0.1:9999"}).status_code == 400
