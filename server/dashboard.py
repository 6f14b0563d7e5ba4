"""The browser dashboard, served by the conductor's HTTP transport beside `/mcp`.

`/` is the page (the same file as the MCP App view, in HTTP mode). The page reads and
controls through a small set of the MCP tools, called over an in-memory MCP client of this
very server, so the dashboard gets exactly the tools' validation, errors and results; live
updates are the conductor's change events as server-sent events. Every route applies the
DNS-rebinding checks of `/mcp` (the SDK's Host/Origin validation), and with a token set,
`DashboardAuth` decides who may read and control.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from mcp import Client
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from podium.core.errors import quoted
from podium.core.events import ChangeEvent
from podium.server.app import PodiumServer
from podium.server.app_view import page_html
from podium.server.dashboard_auth import DashboardAuth
from podium.server.remote import cli_client_info

log = structlog.get_logger("podium.dashboard")

LOGIN_LINK_PATH = "/podium/cli/dashboard-login"
API = "/podium/dashboard"
# The tools the page calls, each with the arguments it may pass: the dashboard is a view with
# a few controls, not a second way to submit or reconfigure jobs.
DASHBOARD_TOOLS: dict[str, frozenset[str]] = {
    "show_jobs": frozenset({"status", "name", "label", "limit", "cursor"}),
    "show_job": frozenset({"job_id"}),
    "logs": frozenset({"job_id", "sheet", "attempt", "tail_lines", "offset"}),
    "pause": frozenset({"job_id", "immediate"}),
    "resume": frozenset({"job_id", "retry_failed"}),
    "cancel": frozenset({"job_id"}),
    "approve": frozenset({"job_id", "sheet", "decision", "note"}),
}
READABLE_URI = re.compile(r"podium://jobs/[^/]+/history")
# An idle event stream says it is alive this often (proxies and browsers drop silent ones);
# it checks for a conductor stop every POLL_SECONDS.
KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 0.5
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] = {}


class ResourceRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str


def _error(status: int, message: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _page_csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _notice(status: int, title: str, text: str) -> HTMLResponse:
    body = (
        "<!doctype html><meta charset='utf-8'><title>Podium</title>"
        f"<body style='font:15px system-ui;margin:40px'><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p></body>"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def event_message(event: ChangeEvent) -> str:
    data = {
        "job_id": event.job_id,
        "kind": event.kind,
        "status": event.status,
        "sheet_num": event.sheet_num,
    }
    return f"event: change\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Dashboard:
    def __init__(
        self, server: PodiumServer, security: TransportSecuritySettings, token: str | None
    ) -> None:
        self._server = server
        self._security = TransportSecurityMiddleware(security)
        self.auth = DashboardAuth(token)
        self._client: Client | None = None
        self._closing = anyio.Event()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Dashboard]:
        """Holds the in-memory MCP client the page's calls go through; on exit, open event
        streams end (within POLL_SECONDS) so the HTTP server can stop."""
        # Named for the record of decisions made on the page. Logging in takes the token,
        # which only the account the conductor runs as can read (conductor.json is 0600).
        info = cli_client_info("podium-dashboard")
        async with Client(self._server.mcp, client_info=info) as client:
            self._client = client
            try:
                yield self
            finally:
                self._closing.set()
                self._client = None

    def close(self) -> None:
        self._closing.set()

    def install(self) -> None:
        routes: list[tuple[str, str, Any]] = [
            ("/", "GET", self.page),
            ("/login", "GET", self.login),
            (LOGIN_LINK_PATH, "POST", self.login_link),
            (f"{API}/events", "GET", self.events),
            (f"{API}/call", "POST", self.call),
            (f"{API}/read", "POST", self.read),
        ]
        for path, method, endpoint in routes:
            self._server.mcp.custom_route(path, methods=[method])(endpoint)

    async def _refused(self, request: Request, *, post: bool) -> Response | None:
        return await self._security.validate_request(request, is_post=post)

    # ----- the page and logging in ---------------------------------------------------------

    async def page(self, request: Request) -> Response:
        if (refused := await self._refused(request, post=False)) is not None:
            return refused
        csrf = self.auth.csrf_token(request)
        if csrf is None:
            return _notice(
                401,
                "Log in to the Podium dashboard",
                "This conductor needs its token. Run `podium dashboard` on this machine and "
                "open the one-time link it prints.",
            )
        nonce = secrets.token_urlsafe(16)
        meta = (
            '<meta name="podium-mode" content="http">'
            f'<meta name="podium-csrf" content="{html.escape(csrf)}">'
        )
        text = page_html().replace("<head>", "<head>" + meta, 1)
        text = text.replace("<script>", f'<script nonce="{nonce}">', 1)
        headers = {**PAGE_HEADERS, "Content-Security-Policy": _page_csp(nonce)}
        return HTMLResponse(text, headers=headers)

    async def login(self, request: Request) -> Response:
        if (refused := await self._refused(request, post=False)) is not None:
            return refused
        if not self.auth.required:
            return RedirectResponse("/", status_code=303)
        response = RedirectResponse("/", status_code=303, headers=PAGE_HEADERS)
        if self.auth.redeem(request.query_params.get("code", ""), response, request):
            return response
        # A link opened again (from the history, or a second tab) by the browser it already
        # logged in grants nothing new, but that browser may read: lead it to the page.
        if self.auth.session(request) is not None:
            return RedirectResponse("/", status_code=303, headers=PAGE_HEADERS)
        return _notice(
            401,
            "This login link cannot be used",
            "It was used already or has expired (links work once, for two minutes). Run "
            "`podium dashboard` again for a new one.",
        )

    async def login_link(self, request: Request) -> Response:
        """For `podium dashboard`, which holds the token: a one-time login path."""
        if (refused := await self._refused(request, post=True)) is not None:
            return refused
        if not self.auth.required:
            return JSONResponse({"path": "/"})
        if not self.auth.has_bearer(request):
            return _error(401, "a valid bearer token is required")
        return JSONResponse({"path": f"/login?code={self.auth.issue_code()}"})

    # ----- reads, controls, live events ----------------------------------------------------

    async def _json_body(self, request: Request, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            lines = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()]
            return _error(400, "\n".join(lines))

    async def _checked_post(self, request: Request) -> Response | None:
        if (refused := await self._refused(request, post=True)) is not None:
            return refused
        if (problem := self.auth.control_problem(request)) is not None:
            return _error(*problem)
        if self._client is None:
            return _error(503, "the conductor is stopping")
        return None

    async def call(self, request: Request) -> Response:
        if (refused := await self._checked_post(request)) is not None:
            return refused
        body = await self._json_body(request, ToolCall)
        if isinstance(body, Response):
            return body
        allowed = DASHBOARD_TOOLS.get(body.name)
        if allowed is None:
            names = ", ".join(sorted(DASHBOARD_TOOLS))
            return _error(404, f"name: {quoted(body.name)} is not a dashboard tool; tools: {names}")
        extra = sorted(set(body.arguments) - allowed)
        if extra:
            return _error(400, f"arguments: {', '.join(extra)} not allowed for {body.name}")
        assert self._client is not None
        try:
            result = await self._client.call_tool(body.name, body.arguments)
        except MCPError as exc:
            return _error(400, exc.error.message)
        return JSONResponse(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def read(self, request: Request) -> Response:
        if (refused := await self._checked_post(request)) is not None:
            return refused
        body = await self._json_body(request, ResourceRead)
        if isinstance(body, Response):
            return body
        if not READABLE_URI.fullmatch(body.uri):
            allowed = "podium://jobs/JOB/history"
            return _error(404, f"uri: {quoted(body.uri)} is not readable here; {allowed} is")
        assert self._client is not None
        try:
            result = await self._client.read_resource(body.uri)
        except MCPError as exc:
            return _error(404, exc.error.message)
        return JSONResponse(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def events(self, request: Request) -> Response:
        if (refused := await self._refused(request, post=False)) is not None:
            return refused
        if not self.auth.can_read(request):
            return _error(401, "not logged in: run `podium dashboard` and open its link")
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._stream(), media_type="text/event-stream", headers=headers)

    async def _stream(self) -> AsyncIterator[str]:
        """Change events as SSE. Nothing is yielded inside a cancel scope: the receive has its
        own timeout, and the stop check runs between receives."""
        yield "retry: 2000\n\n"
        quiet = 0.0
        async with self._server.conductor.events.subscribe() as events:
            while not self._closing.is_set():
                event: ChangeEvent | None = None
                with anyio.move_on_after(POLL_SECONDS):
                    event = await events.receive()
                if event is not None:
                    quiet = 0.0
                    yield event_message(event)
                    continue
                quiet += POLL_SECONDS
                if quiet >= KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keepalive\n\n"
