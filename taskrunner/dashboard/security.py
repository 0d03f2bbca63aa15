"""The dashboard's safety rules, free of any web library.

* **Where it listens.**  :func:`check_bind` refuses a non-loopback address
  unless a token is set: a dashboard that can retry and cancel jobs is not
  left open on a network by accident.
* **Who may look.**  With a token, every request must carry it: as the
  ``tr_token_<port>`` cookie (set when the browser first opens ``/?token=...``), or
  as ``Authorization: Bearer <token>``.  Compared in constant time.
* **Which site may ask.**  Without a token, :class:`Guard.check_host` accepts
  only the Host names the server was bound to (on loopback also
  ``localhost``, ``127.0.0.1`` and ``[::1]``), which stops DNS rebinding from
  another site.
* **Forged actions.**  Every action is a POST carrying a CSRF token: the HMAC,
  under a secret made at start-up, of the per-browser ``tr_csrf`` cookie
  (``SameSite=Strict``).  A POST whose form token does not match its cookie,
  or whose ``Origin`` is another site, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Final

__all__ = [
    "CSRF_COOKIE",
    "TOKEN_COOKIE",
    "TOKEN_ENV",
    "Guard",
    "check_bind",
    "is_loopback",
]

#: Cookie names, suffixed with the port (cookies ignore ports: two dashboards on
#: one host must not overwrite each other's).
TOKEN_COOKIE: Final = "tr_token"
CSRF_COOKIE: Final = "tr_csrf"
#: The environment variable the command line reads the token from (``--token`` wins).
TOKEN_ENV: Final = "TASKRUNNER_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH: Final = 16


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``ValueError``) a non-loopback ``host`` without a token, or a weak token."""
    if not isinstance(host, str) or not host:
        raise ValueError("host must be a non-empty address")
    if token is not None:
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token must be at least {MIN_TOKEN_LENGTH} characters long")
    if token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            f"retry and cancel jobs (give --token or set {TOKEN_ENV}, or bind to 127.0.0.1)"
        )


class Guard:
    """Token, Host and CSRF checks for one server (immutable once made; thread-safe)."""

    def __init__(self, *, host: str, port: int, token: str | None) -> None:
        check_bind(host, token)
        self._token = token
        self.token_cookie = f"{TOKEN_COOKIE}_{port}"
        self.csrf_cookie = f"{CSRF_COOKIE}_{port}"
        self._secret = secrets.token_bytes(32)
        names = {host.lower()}
        if is_loopback(host):
            names |= {"localhost", "127.0.0.1", "[::1]"}
        self._hosts = frozenset(f"{n}:{port}" for n in names) | (
            frozenset(names) if port == 80 else frozenset()
        )

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    def token_ok(self, presented: str | None) -> bool:
        """True if no token is needed, or ``presented`` is the token."""
        if self._token is None:
            return True
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self._token.encode())

    def check_host(self, host_header: str | None) -> bool:
        """True if the request's Host header names this server, or a token is required.

        The check stops DNS rebinding against a dashboard with no token (on
        loopback).  With a token it is the token that keeps others out, and the
        server, perhaps bound to ``0.0.0.0``, cannot know every name it is
        reached by, so any Host is accepted.
        """
        if self._token is not None:
            return True
        return host_header is not None and host_header.lower() in self._hosts

    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, cookie: str) -> str:
        """The form token that goes with this browser's CSRF cookie."""
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str | None, form_token: str | None) -> bool:
        if not cookie or not form_token:
            return False
        return hmac.compare_digest(self.csrf_token(cookie), form_token)

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        """A POST's ``Origin`` (when the browser sends one) must be this server."""
        if origin is None:
            return True
        scheme, _, rest = origin.partition("://")
        return scheme in ("http", "https") and host_header is not None and rest == host_header
