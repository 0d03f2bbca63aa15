"""The dashboard as a WSGI application: pages, actions and the safety rules.

Built on Werkzeug (routing, request parsing, HTTP errors) and Jinja2 (templates,
every value escaped by default: job arguments, results and errors are
attacker-controlled text).  :class:`DashboardApp` reads and acts on a
:class:`~taskrunner.jobs.JobStore` through its public API only, the same calls
the command line makes (``count_jobs``, ``list_jobs``, ``get``, ``retry``,
``cancel``, ``delete``), so it works on every store alike.

Pages: ``/`` (overview; ``/live/overview`` is its live part, which
``static/live.js`` fetches again every few seconds), ``/jobs`` (filtered by
``state``, ``type`` and ``since``, paged by the store's cursor ``after``),
``/jobs/<id>``, and the actions ``/retry/<id>``, ``/cancel/<id>`` and ``/delete/<id>``:
a GET shows a confirmation form, its POST (with the CSRF token) acts and
redirects back to the job.  Given a ``pool`` (see ``mount``), ``/pool`` shows
it live: its queues by priority, running and delayed tasks, its runners, and
the job manager of this process.  Bad input gets a 4xx page saying what was wrong;
an illegal transition shows the store's own error (409); an unexpected error a
plain 500 page (logged, never shown).  See :mod:`taskrunner.dashboard.security`
for the token, Host and CSRF rules; ``read_only`` hides and refuses every action.

The application holds no mutable state of its own beyond what it was given, so
any number of server threads may call it at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPException,
    InternalServerError,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from taskrunner.dashboard import chart
from taskrunner.dashboard.data import decode_payload, read_overview
from taskrunner.dashboard.pool_view import read_pool
from taskrunner.dashboard.security import Guard
from taskrunner.jobs import (
    CorruptJobError,
    DuplicateJobError,
    IllegalTransitionError,
    JobManager,
    JobRunningError,
    JobState,
    JobStore,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import MAX_NAME_LENGTH
from taskrunner.runtime.pool import ThreadPool

__all__ = ["DashboardApp"]

log = logging.getLogger("taskrunner.dashboard")

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
_STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": Chromium then sends "Origin: null" with same-site form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: What the job page says after an action (the query carries only the key).
_DONE: Final = {
    "retried": "Retried: the job is pending again.",
    "cancelled": "Cancelled.",
    "cancel-requested": "Cancellation requested: the job stops at its worker's next check.",
    "deleted": "Deleted: the job is gone from the store.",
}


def job_url(job_id: str, action: str | None = None) -> str:
    """The path of a job's page, or of an action on it (the id quoted: any text is an id)."""
    return f"/{action or 'jobs'}/{quote(job_id, safe='')}"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign, s = ("-" if seconds < 0 else ""), abs(seconds)
    if s < 60:
        return f"{sign}{s:.1f}s"
    if s < 3600:
        return f"{sign}{int(s // 60)}m {int(s % 60)}s"
    if s < 86400:
        return f"{sign}{int(s // 3600)}h {int(s % 3600 // 60)}m"
    return f"{sign}{int(s // 86400)}d {int(s % 86400 // 3600)}h"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


# Guards the building of URL maps.  werkzeug compiles each rule with ast.parse
# and compile(), and CPython 3.11 keeps the AST converter's recursion depth in
# state shared by every thread: two dashboards built at once on two threads
# failed once in this project's tests with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905).  Built one at a time,
# they cannot interleave there.
_ROUTING_LOCK = threading.Lock()


class DashboardApp:
    """The WSGI application over ``store`` (see the module docstring).

    ``guard`` holds the token, Host and CSRF rules; ``read_only`` hides and
    refuses every action; ``clock`` gives epoch seconds (the ``now`` passed to
    the store); ``refresh_seconds`` is how often the overview refreshes itself.
    ``pool`` (and the ``manager`` running on it) add the live ``/pool`` page.
    The store is not closed by the application: its owner closes it.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        guard: Guard,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 5.0,
        title: str = "taskrunner",
        pool: ThreadPool | None = None,
        manager: JobManager | None = None,
    ) -> None:
        if not isinstance(store, JobStore):
            raise TypeError(f"store must be a JobStore, got {type(store).__name__}")
        if not isinstance(guard, Guard):
            raise TypeError(f"guard must be a Guard, got {type(guard).__name__}")
        if not (isinstance(refresh_seconds, int | float) and refresh_seconds > 0):
            raise ValueError(f"refresh_seconds must be a number > 0, got {refresh_seconds!r}")
        if pool is not None and not isinstance(pool, ThreadPool):
            raise TypeError(f"pool must be a ThreadPool, got {type(pool).__name__}")
        self.store = store
        self.guard = guard
        self._pool = pool
        self._manager = manager
        self.read_only = bool(read_only)
        self._clock = clock
        self._refresh_ms = int(refresh_seconds * 1000)
        self._title = title
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("taskrunner.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when
        self._env.filters["duration"] = _duration
        self._env.filters["ms"] = _ms
        self._env.globals["job_url"] = job_url
        static = resources.files("taskrunner.dashboard").joinpath("static")
        self._static = {
            f.name: f.read_bytes()
            for f in static.iterdir()
            if f.name.endswith(tuple(_STATIC_TYPES))
        }
        with _ROUTING_LOCK:
            self._urls = self._url_map()

    @staticmethod
    def _url_map() -> Map:
        return Map(
            [
                Rule("/", endpoint="overview", methods=["GET"]),
                Rule("/live/overview", endpoint="overview_live", methods=["GET"]),
                Rule("/jobs", endpoint="jobs", methods=["GET"]),
                Rule("/jobs/<path:job_id>", endpoint="job", methods=["GET"]),
                Rule(
                    "/<any(retry, cancel, delete):action>/<path:job_id>",
                    endpoint="action",
                    methods=["GET", "POST"],
                ),
                Rule("/static/<name>", endpoint="static", methods=["GET"]),
                Rule("/pool", endpoint="pool", methods=["GET"]),
                Rule("/live/pool", endpoint="pool_live", methods=["GET"]),
            ],
            strict_slashes=False,
        )

    # ---------------------------------------------------------------- WSGI

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self._respond(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _respond(self, request: Request) -> Response:
        csrf_cookie = request.cookies.get(self.guard.csrf_cookie)
        new_cookie = None
        if not csrf_cookie:
            csrf_cookie = new_cookie = self.guard.new_csrf_cookie()
        try:
            response = self._checked(request, csrf_cookie)
        except HTTPException as exc:
            response = self._error(exc, csrf_cookie)
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.path)
            response = self._error(InternalServerError("The server failed; see its log."), "")
        if new_cookie is not None:
            response.set_cookie(
                self.guard.csrf_cookie, new_cookie, httponly=True, samesite="Strict", path="/"
            )
        return response

    def _checked(self, request: Request, csrf_cookie: str) -> Response:
        if not self.guard.check_host(request.host):
            raise BadRequest(f"This server does not answer to the host name {request.host!r}.")
        public = request.path.startswith("/static/")  # the style, script and icon of every page
        if self.guard.needs_token and not public:
            given = request.args.get("token")
            if given is not None:
                if not self.guard.token_ok(given):
                    raise Unauthorized("Wrong token.")
                # Keep the token out of the address bar, history and logs from now on.
                args = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
                # One leading slash: "//host/..." would send the browser to another site.
                path = "/" + quote(request.path, safe="/").lstrip("/")
                target = path + (f"?{urlencode(args)}" if args else "")
                response = Response(status=303, headers={"Location": target})
                response.set_cookie(
                    self.guard.token_cookie, given, httponly=True, samesite="Strict", path="/"
                )
                return response
            auth = request.headers.get("Authorization", "")
            presented = (
                auth[7:]
                if auth.startswith("Bearer ")
                else request.cookies.get(self.guard.token_cookie)
            )
            if not self.guard.token_ok(presented):
                raise Unauthorized(
                    "This dashboard needs its token: open the address it printed at start-up "
                    "(…/?token=…), or send Authorization: Bearer <token>."
                )
        adapter = self._urls.bind_to_environ(request.environ)
        endpoint, values = adapter.match()
        handler = getattr(self, f"_page_{endpoint}")
        try:
            result: Response = handler(request, csrf_cookie, **values)
        except StoreError as exc:
            first = (str(exc).strip().splitlines() or [repr(exc)])[0]
            raise ServiceUnavailable(f"The store failed: {first}") from None
        except CorruptJobError as exc:
            raise InternalServerError(f"A stored job cannot be decoded: {exc}") from None
        return result

    # ---------------------------------------------------------------- rendering

    def _render(
        self, template_name: str, csrf_cookie: str, /, status: int = 200, **context: Any
    ) -> Response:
        template = self._env.get_template(template_name)
        html = template.render(
            title=self._title,
            read_only=self.read_only,
            csrf=self.guard.csrf_token(csrf_cookie) if csrf_cookie else "",
            states=[s.value for s in JobState],
            has_pool=self._pool is not None,
            **context,
        )
        return Response(html, status=status, mimetype="text/html")

    def _error(self, exc: HTTPException, csrf_cookie: str) -> Response:
        code = exc.code or 500
        response = self._render(
            "error.html",
            csrf_cookie,
            status=code,
            code=code,
            name=exc.name,
            message=exc.description or "",
        )
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # e.g. the Allow of a 405
                response.headers[name] = value
        if code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="taskrunner dashboard"'
        return response

    # ---------------------------------------------------------------- pages

    def _overview_context(self) -> dict[str, Any]:
        now = self._clock()
        overview = read_overview(self.store, now)
        return {"ov": overview, "chart": chart.layout(overview.chart), "now": now}

    def _page_overview(self, request: Request, csrf_cookie: str) -> Response:
        return self._render(
            "overview.html", csrf_cookie, refresh_ms=self._refresh_ms, **self._overview_context()
        )

    def _page_overview_live(self, request: Request, csrf_cookie: str) -> Response:
        return self._render("_overview_live.html", csrf_cookie, **self._overview_context())

    def _pool_context(self) -> dict[str, Any]:
        if self._pool is None:
            raise NotFound(
                "This dashboard shows no pool: mount it in a process with "
                "taskrunner.dashboard.mount(pool, manager)."
            )
        return {"pv": read_pool(self._pool, self._manager), "now": self._clock()}

    def _page_pool(self, request: Request, csrf_cookie: str) -> Response:
        return self._render(
            "pool.html", csrf_cookie, refresh_ms=self._refresh_ms, **self._pool_context()
        )

    def _page_pool_live(self, request: Request, csrf_cookie: str) -> Response:
        return self._render("_pool_live.html", csrf_cookie, **self._pool_context())

    def _page_static(self, request: Request, csrf_cookie: str, name: str) -> Response:
        data = self._static.get(name)
        if data is None:
            raise NotFound(f"No static file {name!r}.")
        suffix = name[name.rfind(".") :]
        response = Response(data, content_type=_STATIC_TYPES[suffix])
        response.headers["Cache-Control"] = "max-age=300"
        return response

    def _page_jobs(self, request: Request, csrf_cookie: str) -> Response:
        from taskrunner.cli.args import parse_since

        args = request.args
        state = args.get("state", "").strip()
        if state and state not in {s.value for s in JobState}:
            raise BadRequest(
                f"Unknown state {state!r}: use one of {', '.join(s.value for s in JobState)}."
            )
        job_type = args.get("type", "").strip()
        if len(job_type) > MAX_NAME_LENGTH:
            raise BadRequest(f"The type is longer than {MAX_NAME_LENGTH} characters.")
        since_text = args.get("since", "").strip()
        since = None
        if since_text:
            try:
                since = parse_since(since_text, self._clock())
            except Exception as exc:  # argparse.ArgumentTypeError: the message says why
                raise BadRequest(f"Bad 'since': {exc}") from None
        limit_text = args.get("limit", str(DEFAULT_PAGE_SIZE))
        try:
            limit = int(limit_text)
        except ValueError:
            raise BadRequest(f"Bad 'limit' {limit_text!r}: give a whole number.") from None
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise BadRequest(f"'limit' must be between 1 and {MAX_PAGE_SIZE}, got {limit}.")
        after = args.get("after") or None
        filters: dict[str, Any] = {
            "states": [state] if state else None,
            "types": [job_type] if job_type else None,
            "since": since,
        }
        try:
            page = self.store.list_jobs(limit=limit, after=after, **filters)
        except ValueError as exc:
            raise BadRequest(f"Bad page cursor 'after': {exc}") from None
        total = self.store.count_jobs(**filters)
        kept = {
            "state": state,
            "type": job_type,
            "since": since_text,
            "limit": str(limit) if limit != DEFAULT_PAGE_SIZE else "",
        }
        query = {k: v for k, v in kept.items() if v}
        next_url = (
            "/jobs?" + urlencode({**query, "after": page.next_cursor})
            if page.next_cursor is not None
            else None
        )
        first_url = "/jobs" + (f"?{urlencode(query)}" if query else "")
        return self._render(
            "jobs.html",
            csrf_cookie,
            jobs=page.jobs,
            total=total,
            filters=kept,
            paged=after is not None,
            next_url=next_url,
            first_url=first_url,
            message=_DONE.get(args.get("done", "")),
        )

    def _get_job(self, job_id: str) -> Any:
        try:
            return self.store.get(job_id)
        except UnknownJobError:
            raise NotFound(f"There is no job with id {job_id!r}.") from None
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"Bad job id: {exc}") from None

    def _page_job(self, request: Request, csrf_cookie: str, job_id: str) -> Response:
        job = self._get_job(job_id)
        done = request.args.get("done")
        timeline = sorted(
            (
                (at, what)
                for at, what in (
                    (job.created_at, "created"),
                    (job.run_at, "due"),
                    (job.updated_at, "last change"),
                    (job.lease_expires_at, "lease expires"),
                    (job.finished_at, f"finished: {job.state.value}"),
                )
                if at is not None
            ),
            key=lambda item: item[0],
        )
        return self._render(
            "job.html",
            csrf_cookie,
            job=job,
            args_text=decode_payload(job.args),
            result_text=decode_payload(job.result),
            timeline=timeline,
            message=_DONE.get(done or ""),
            can_retry=job.state in (JobState.FAILED, JobState.CANCELLED),
            can_cancel=job.state in (JobState.PENDING, JobState.RUNNING)
            and not job.cancel_requested,
            can_delete=job.state is not JobState.RUNNING,
            now=self._clock(),
        )

    def _page_action(
        self, request: Request, csrf_cookie: str, job_id: str, action: str
    ) -> Response:
        if self.read_only:
            raise Forbidden("This dashboard is read-only (--read-only): actions are off.")
        job = self._get_job(job_id)
        if request.method == "GET":
            return self._render("confirm.html", csrf_cookie, job=job, action=action)
        if not self.guard.origin_ok(request.headers.get("Origin"), request.host):
            raise Forbidden("Refused: the request came from another site (Origin).")
        if not self.guard.csrf_ok(
            request.cookies.get(self.guard.csrf_cookie), request.form.get("csrf")
        ):
            raise Forbidden(
                "Refused: the form's CSRF token is missing or wrong. Reload the page and try again."
            )
        now = self._clock()
        try:
            if action == "retry":
                self.store.retry(job.id, now)
                done = "retried"
            elif action == "delete":
                self.store.delete(job.id)
                return Response(status=303, headers={"Location": "/jobs?done=deleted"})
            else:
                after = self.store.cancel(job.id, now, "cancelled from the dashboard")
                if after.state is JobState.CANCELLED and job.state is not JobState.CANCELLED:
                    done = "cancelled"
                elif after.state is JobState.RUNNING:
                    done = "cancel-requested"
                else:
                    raise Conflict(f"Not cancelled: the job already {after.state.value}.")
        except (IllegalTransitionError, DuplicateJobError, JobRunningError) as exc:
            raise Conflict(f"The store refused: {exc}") from None
        except UnknownJobError:
            raise NotFound(f"There is no job with id {job_id!r}.") from None
        return Response(status=303, headers={"Location": f"{job_url(job.id)}?done={done}"})
