"""Who may read and control the dashboard, for a conductor that has a bearer token.

The long-lived token never appears in a URL. `podium dashboard` (holding the token from the
0600 `conductor.json`) asks for a one-time login code; opening the printed link redeems the
code for a browser session: an HttpOnly, SameSite=Strict cookie with a random session id,
unrelated to the token. A used or expired code is worthless, so the link left in a browser's
history or a terminal's scrollback grants nothing.

Controls (POSTs) need more than the cookie: the page echoes its session's CSRF token in a
header, which a cross-site form cannot set and a cross-site script cannot read. A request
with the bearer token itself (the CLI, scripts) is not exposed to CSRF and needs no header.
Without a token (a loopback `podium serve` started without one) reads are open, as `/mcp`
is, and controls still need the page's per-process CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

CSRF_HEADER = "x-podium-csrf"
LOGIN_CODE_SECONDS = 120.0
SESSION_SECONDS = 12 * 3600.0
# Bounded so that a client asking for codes in a loop cannot grow memory.
MAX_PENDING_CODES = 64
MAX_SESSIONS = 256


@dataclass
class BrowserSession:
    csrf: str
    expires: float


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class DashboardAuth:
    def __init__(self, token: str | None) -> None:
        self.token = token
        self._codes: dict[str, float] = {}
        self._sessions: dict[str, BrowserSession] = {}
        # The CSRF token of every page of a token-less conductor.
        self._open_csrf = secrets.token_urlsafe(24)

    @property
    def required(self) -> bool:
        return self.token is not None

    @staticmethod
    def cookie_name(request: Request) -> str:
        # Cookies are shared by every port of a host: one name per port keeps two conductors
        # on 127.0.0.1 (two homes) from overwriting each other's session.
        return f"podium_session_{request.url.port or 80}"

    # ----- login ---------------------------------------------------------------------------

    def has_bearer(self, request: Request) -> bool:
        if self.token is None:
            return False
        return _same(request.headers.get("authorization", ""), f"Bearer {self.token}")

    def issue_code(self) -> str:
        now = time.monotonic()
        self._codes = {c: t for c, t in self._codes.items() if t > now}
        while len(self._codes) >= MAX_PENDING_CODES:
            self._codes.pop(next(iter(self._codes)))
        code = secrets.token_urlsafe(24)
        self._codes[code] = now + LOGIN_CODE_SECONDS
        return code

    def redeem(self, code: str, response: Response, request: Request) -> bool:
        """Trade a login code (once) for a session cookie set on `response`."""
        expires = self._codes.pop(code, None) if code else None
        if expires is None or expires < time.monotonic():
            return False
        now = time.monotonic()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = BrowserSession(
            csrf=secrets.token_urlsafe(24), expires=now + SESSION_SECONDS
        )
        response.set_cookie(
            self.cookie_name(request),
            session_id,
            max_age=int(SESSION_SECONDS),
            path="/",
            httponly=True,
            samesite="strict",
        )
        return True

    # ----- checks --------------------------------------------------------------------------

    def session(self, request: Request) -> BrowserSession | None:
        session_id = request.cookies.get(self.cookie_name(request))
        session = self._sessions.get(session_id) if session_id else None
        if session is None or session.expires < time.monotonic():
            return None
        return session

    def can_read(self, request: Request) -> bool:
        return not self.required or self.has_bearer(request) or self.session(request) is not None

    def csrf_token(self, request: Request) -> str | None:
        """The token the page must echo on POSTs; None when the request may not read."""
        if not self.required:
            return self._open_csrf
        session = self.session(request)
        return session.csrf if session is not None else None

    def control_problem(self, request: Request) -> tuple[int, str] | None:
        """Why a POST may not run (status code, message), or None."""
        if self.has_bearer(request):
            return None
        expected = self.csrf_token(request)
        if expected is None:
            return 401, "not logged in: run `podium dashboard` and open the link it prints"
        if not _same(request.headers.get(CSRF_HEADER, ""), expected):
            return 403, f"missing or wrong {CSRF_HEADER} header (reload the dashboard)"
        return None
