"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

A store with a few hundred jobs in every state (SQLite, then PostgreSQL) is
served by :func:`taskrunner.dashboard.serve` on 127.0.0.1; the tests open each
page, filter, page, retry a failed job and cancel a pending one (checking the
store changed), watch the overview update itself, and check that hostile job
data never runs as script and that the token and CSRF refusals hold.

The browser is Debian's ``chromium`` and ``chromium-driver`` packages
(``make chromium`` installs them; ``TASKRUNNER_CHROMIUM`` and
``TASKRUNNER_CHROMEDRIVER`` name others), never a downloaded one.  Without them
the tests are skipped, or fail when ``TASKRUNNER_CHROMIUM_REQUIRED=1`` (CI).
With ``TASKRUNNER_DASHBOARD_SCREENSHOTS=DIR`` the SQLite run saves
``overview.png``, ``job.png`` and ``pool.png`` there (the README's pictures).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("jinja2")

CHROMIUM = os.environ.get("TASKRUNNER_CHROMIUM") or shutil.which("chromium") or ""
CHROMEDRIVER = os.environ.get("TASKRUNNER_CHROMEDRIVER") or shutil.which("chromedriver") or ""
_missing = [
    name
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
    if not (path and os.access(path, os.X_OK))
]
try:
    import selenium  # noqa: F401
except ImportError:
    _missing.append("selenium (pip)")
if _missing:
    reason = f"no {', '.join(_missing)}: run `make chromium` (Debian's chromium, chromium-driver)"
    if os.environ.get("TASKRUNNER_CHROMIUM_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from dashboard_fixture import EVIL, Filled, fill_store  # noqa: E402
from pg_fixture import new_schema, require_dsn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from taskrunner.dashboard import serve  # noqa: E402
from taskrunner.dashboard.server import DashboardServer  # noqa: E402
from taskrunner.jobs import JobState, JobStore, SQLiteJobStore, new_job  # noqa: E402

pytestmark = pytest.mark.thread_unsafe(reason="one browser and one server per module")

TOKEN = "browser-test-token-0123456789"
WAIT = 60.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Site:
    kind: str
    store: JobStore
    filled: Filled
    server: DashboardServer

    def url(self, path: str = "/") -> str:
        return self.server.url.rstrip("/") + path

    def job(self, job_id: str, action: str | None = None) -> str:
        return self.url(f"/{action or 'jobs'}/{quote(job_id, safe='')}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    store: JobStore
    if request.param == "sqlite":
        store = SQLiteJobStore(tmp_path_factory.mktemp("dashboard") / "jobs.db")
    else:
        from taskrunner.jobs import PostgresJobStore

        store = PostgresJobStore(require_dsn(), schema=new_schema())
    try:
        filled = fill_store(store, time.time(), per_state=60)
        server = serve(store, port=0, refresh_seconds=1.0)
        try:
            yield Site(request.param, store, filled, server)
        finally:
            assert server.close(timeout=30)
    finally:
        store.close()


def wait_for(driver: WebDriver, what: Callable[[WebDriver], Any], message: str) -> Any:
    # The live pages replace their elements as they refresh: an element found
    # a moment before may be gone when read, which only means "look again".
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(what, message)


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def assert_no_script_ran(driver: WebDriver) -> None:
    assert driver.execute_script("return window.__pwned === undefined") is True


def screenshot(driver: WebDriver, keep: bool, name: str, tmp: Path) -> None:
    """Save a full-page screenshot; into TASKRUNNER_DASHBOARD_SCREENSHOTS if ``keep``."""
    target = os.environ.get("TASKRUNNER_DASHBOARD_SCREENSHOTS")
    directory = Path(target) if target and keep else tmp
    directory.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = directory / name
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000


# ---------------------------------------------------------------- pages


def test_overview_shows_counts_chart_workers_and_types(
    browser: WebDriver, site: Site, tmp_path: Path
) -> None:
    browser.get(site.url())
    assert browser.title.startswith("Overview")
    for state in JobState:
        card = browser.find_element(By.CSS_SELECTOR, f'.card[data-state="{state.value}"] .count')
        assert int(card.text) == site.store.count_jobs(states=[state])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart svg rect.bar")) > 20
    workers = text_of(browser, "#workers")
    assert "worker-a" in workers and "worker-b" in workers
    types = text_of(browser, "#types")
    assert "email.send" in types and "<b>evil</b>" in types  # shown as text, not markup
    assert browser.find_elements(By.CSS_SELECTOR, "#types b") == []
    assert "waiting" in text_of(browser, "#oldest")
    assert_no_script_ran(browser)
    screenshot(browser, site.kind == "sqlite", "overview.png", tmp_path)


def test_overview_updates_itself(browser: WebDriver, site: Site) -> None:
    browser.get(site.url())
    browser.execute_script("window.__same_page = true")
    before = site.store.count_jobs(states=[JobState.PENDING])
    site.store.insert(new_job("late.arrival", b"{}", now=time.time()))
    wait_for(
        browser,
        lambda d: text_of(d, '.card[data-state="pending"] .count') == str(before + 1),
        "the pending count did not update",
    )
    assert browser.execute_script("return window.__same_page") is True  # no reload


def test_jobs_filter_by_state_and_type(browser: WebDriver, site: Site) -> None:
    browser.get(site.url("/jobs"))
    Select(browser.find_element(By.ID, "filter-state")).select_by_value("failed")
    browser.find_element(By.ID, "filter-type").send_keys("invoice.charge")
    browser.find_element(By.ID, "filter-apply").click()
    wait_for(browser, lambda d: "state=failed" in d.current_url, "the filter was not applied")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.job")
    expected = site.store.count_jobs(states=["failed"], types=["invoice.charge"])
    assert len(rows) == expected > 0
    for row in rows:
        assert row.get_attribute("data-state") == "failed"
        assert row.find_elements(By.TAG_NAME, "td")[1].text == "invoice.charge"
    assert text_of(browser, "#match-count").startswith(f"{expected} matching")
    assert_no_script_ran(browser)


def test_jobs_page_through_with_the_cursor(browser: WebDriver, site: Site) -> None:
    browser.get(site.url("/jobs?state=succeeded&limit=25"))
    seen: list[str] = []
    while True:
        seen += [
            r.get_attribute("data-id") or ""
            for r in browser.find_elements(By.CSS_SELECTOR, "tr.job")
        ]
        nexts = browser.find_elements(By.ID, "next-page")
        if not nexts:
            break
        nexts[0].click()
        wait_for(browser, lambda d: "after=" in d.current_url, "no next page")
    assert seen == site.filled.ids("succeeded")
    browser.find_element(By.ID, "first-page").click()
    first = browser.find_element(By.CSS_SELECTOR, "tr.job").get_attribute("data-id")
    assert first == site.filled.ids("succeeded")[0]


def test_job_page_shows_hostile_text_as_text(
    browser: WebDriver, site: Site, tmp_path: Path
) -> None:
    browser.get(site.job(site.filled.evil_id))
    assert text_of(browser, "#job-id") == site.filled.evil_id
    assert text_of(browser, "#job-state") == "failed"
    assert EVIL in text_of(browser, "#traceback")
    assert "window.__pwned = 1" in text_of(browser, "#args")
    assert "finished: failed" in text_of(browser, "#timeline")
    assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
    assert_no_script_ran(browser)
    screenshot(browser, site.kind == "sqlite", "job.png", tmp_path)


def test_unknown_job_and_bad_cursor_get_4xx_pages(browser: WebDriver, site: Site) -> None:
    browser.get(site.url("/jobs/no-such-job"))
    assert "404 Not Found" in text_of(browser, "#error")
    assert "no job with id 'no-such-job'" in text_of(browser, "#error")
    browser.get(site.url("/jobs?after=garbage"))
    assert "400 Bad Request" in text_of(browser, "#error")
    assert "Traceback" not in browser.page_source


# ---------------------------------------------------------------- actions


def confirm(browser: WebDriver, site: Site, job_id: str, action: str) -> None:
    browser.get(site.job(job_id))
    browser.find_element(By.ID, action).click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "confirm"), "no confirmation form")
    browser.find_element(By.ID, "confirm").click()


def test_retry_a_failed_job(browser: WebDriver, site: Site) -> None:
    job_id = site.filled.ids("failed")[1]
    confirm(browser, site, job_id, "retry")
    wait_for(browser, lambda d: d.find_elements(By.ID, "flash"), "no confirmation message")
    assert "pending again" in text_of(browser, "#flash")
    assert text_of(browser, "#job-state") == "pending"
    job = site.store.get(job_id)
    assert job.state is JobState.PENDING and job.attempt == 0


def test_cancel_a_pending_job(browser: WebDriver, site: Site) -> None:
    job_id = site.filled.ids("pending")[1]
    confirm(browser, site, job_id, "cancel")
    wait_for(browser, lambda d: d.find_elements(By.ID, "flash"), "no confirmation message")
    assert text_of(browser, "#job-state") == "cancelled"
    assert site.store.get(job_id).state is JobState.CANCELLED


def test_delete_a_finished_job(browser: WebDriver, site: Site) -> None:
    from taskrunner.jobs import UnknownJobError

    job_id = site.filled.ids("cancelled")[1]
    confirm(browser, site, job_id, "delete")
    wait_for(browser, lambda d: d.find_elements(By.ID, "flash"), "no confirmation message")
    assert "Deleted" in text_of(browser, "#flash")
    with pytest.raises(UnknownJobError):
        site.store.get(job_id)


def test_an_illegal_transition_shows_the_store_error(browser: WebDriver, site: Site) -> None:
    job_id = site.filled.ids("failed")[2]
    browser.get(site.job(job_id, "retry"))
    site.store.retry(job_id, time.time())  # someone else retried it meanwhile
    browser.find_element(By.ID, "confirm").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "error"), "no error page")
    assert "409 Conflict" in text_of(browser, "#error")
    assert "illegal transition pending -> pending" in text_of(browser, "#error")


# ---------------------------------------------------------------- safety


def test_a_forged_csrf_token_is_refused(browser: WebDriver, site: Site) -> None:
    job_id = site.filled.ids("failed")[3]
    browser.get(site.job(job_id, "retry"))
    browser.execute_script("document.querySelector('input[name=csrf]').value = 'forged'")
    browser.find_element(By.ID, "confirm").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "error"), "no error page")
    assert "403 Forbidden" in text_of(browser, "#error") and "CSRF" in text_of(browser, "#error")
    assert site.store.get(job_id).state is JobState.FAILED


def test_a_form_from_another_site_is_refused(browser: WebDriver, site: Site) -> None:
    job_id = site.filled.ids("failed")[4]
    target = site.job(job_id, "retry")
    browser.get(f"data:text/html,<form method=post action='{target}'><input name=csrf></form>")
    browser.execute_script("document.forms[0].submit()")
    wait_for(browser, lambda d: d.find_elements(By.ID, "error"), "no error page")
    assert "403 Forbidden" in text_of(browser, "#error")
    assert site.store.get(job_id).state is JobState.FAILED


def test_the_token_is_required_then_remembered(browser: WebDriver, site: Site) -> None:
    guarded = serve(site.store, port=0, token=TOKEN)
    try:
        browser.get(guarded.url)
        assert "401 Unauthorized" in text_of(browser, "#error")
        browser.get(guarded.url + "?token=wrong-token-000000000")
        assert "401 Unauthorized" in text_of(browser, "#error")
        browser.get(guarded.url + "jobs?state=failed&token=" + TOKEN)
        wait_for(browser, lambda d: d.find_elements(By.ID, "jobs"), "the token was not accepted")
        assert "token" not in browser.current_url
        assert browser.current_url.endswith("/jobs?state=failed")
        browser.get(guarded.url)  # the cookie carries the token from now on
        assert browser.find_elements(By.ID, "state-counts")
    finally:
        assert guarded.close(timeout=30)


def test_read_only_offers_no_action(browser: WebDriver, site: Site) -> None:
    viewer = serve(site.store, port=0, read_only=True)
    try:
        job_id = site.filled.ids("failed")[5]
        browser.get(viewer.url + "jobs/" + job_id)
        assert browser.find_elements(By.ID, "read-only")
        assert browser.find_elements(By.ID, "retry") == []
        browser.get(viewer.url + "retry/" + job_id)
        assert "403 Forbidden" in text_of(browser, "#error")
        assert site.store.get(job_id).state is JobState.FAILED
    finally:
        assert viewer.close(timeout=30)


# ---------------------------------------------------------------- embedded in a process


def test_mounted_pool_view_updates_live(browser: WebDriver, tmp_path: Path) -> None:
    from taskrunner import SequencedTaskRunner, ThreadPool
    from taskrunner.dashboard import mount
    from taskrunner.jobs import JobManager
    from taskrunner.runtime.metrics import InProcessMetrics

    store = SQLiteJobStore(tmp_path / "jobs.db")
    fill_store(store, time.time(), per_state=4)
    with ThreadPool(2, name="service", metrics=InProcessMetrics()) as pool:
        manager = JobManager(store, pool=pool, owner="service-1")
        manager.register("email.send", lambda ctx, args: None)
        orders = SequencedTaskRunner(pool, name="orders")
        server = mount(pool, manager, port=0, refresh_seconds=1.0)
        try:
            browser.get(server.url)
            browser.find_element(By.ID, "nav-pool").click()
            wait_for(browser, lambda d: d.find_elements(By.ID, "runners"), "no pool page")
            assert "service-1" in text_of(browser, "#manager")
            assert "email.send" in text_of(browser, "#manager")
            row = '.runner[data-name="orders"] td:nth-child(5)'
            assert text_of(browser, row) == "0"
            for _ in range(7):
                orders.post_task(lambda: None)
            wait_for(browser, lambda d: text_of(d, row) == "7", "the runner row did not update")
            screenshot(browser, True, "pool.png", tmp_path)
        finally:
            assert server.close(timeout=30)
            manager.shutdown()
    store.close()
