"""Turns the conductor's change events into MCP resource-updated notifications, for both
protocol eras: `subscriptions/listen` (2026-07-28) through the SDK's subscription bus, and
`resources/subscribe` + `notifications/resources/updated` (2025-11-25) per session."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from mcp.server import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from podium.core.events import ChangeEvent, EventBus
from podium.server.sdk_seams import add_request_handler, connection_of

log = structlog.get_logger("podium.notifier")

JOBS_URI = "podium://jobs"
MIN_INTERVAL_SECONDS = 1.0
# Past this many URIs in the throttle table, those out of their quiet period are dropped.
PRUNE_AT = 256


_CHECKPOINT = re.compile(r"podium://jobs/(?P<job_id>[^/]+)/checkpoint")
# Why a URI cannot be subscribed to (None: it can); checks that the job exists.
SubscribeCheck = Callable[[str], Awaitable[str | None]]


def checkpoint_uri(job_id: str) -> str:
    return f"podium://jobs/{job_id}/checkpoint"


def checkpoint_job(uri: str) -> str | None:
    """The job id of a checkpoint URI, else None."""
    match = _CHECKPOINT.fullmatch(uri)
    return match["job_id"] if match else None


class ChangeNotifier:
    """At most about one notification per second per URI; the last change is never dropped
    (a change inside the quiet period is sent when the period ends)."""

    def __init__(self, bus: InMemorySubscriptionBus, events: EventBus) -> None:
        self._bus = bus
        self._events = events
        # URI -> the subscribed connections, each with a session to send on.
        self._legacy: dict[str, dict[object, Any]] = {}
        self._last_sent: dict[str, float] = {}
        self._pending: set[str] = set()
        self._wake = anyio.Event()

    def install_legacy_handlers(self, mcp: MCPServer[Any], check: SubscribeCheck) -> None:
        """`check(uri)` refuses a subscription to a resource that does not exist (an unknown
        job) with a "not found" error instead of a silent success."""

        async def subscribe(
            ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
        ) -> EmptyResult:
            uri = str(params.uri)
            problem = await check(uri)
            if problem is not None:
                raise MCPError(code=INVALID_PARAMS, message=problem, data={"uri": uri})
            self._legacy.setdefault(uri, {})[connection_of(ctx.session)] = ctx.session
            return EmptyResult()

        async def unsubscribe(
            ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
        ) -> EmptyResult:
            uri = str(params.uri)
            sessions = self._legacy.get(uri)
            if sessions is not None:
                sessions.pop(connection_of(ctx.session), None)
                if not sessions:
                    del self._legacy[uri]
            return EmptyResult()

        add_request_handler(mcp, "resources/subscribe", SubscribeRequestParams, subscribe)
        add_request_handler(mcp, "resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg, self._events.subscribe() as events:
            tg.start_soon(self._flush_loop)
            async for event in events:
                for uri in self._uris(event):
                    self._pending.add(uri)
                self._wake.set()

    @staticmethod
    def _uris(event: ChangeEvent) -> list[str]:
        uris = [checkpoint_uri(event.job_id)]
        if event.kind in ("submitted", "job_status", "deleted"):
            uris.append(JOBS_URI)
        return uris

    async def _flush_loop(self) -> None:
        """Sends what is pending as soon as its URI's quiet period is over; sleeps until the
        next change (or the end of the nearest quiet period), never on a fixed tick."""
        while True:
            if not self._pending:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            now = time.monotonic()
            due = [
                uri
                for uri in self._pending
                if now - self._last_sent.get(uri, 0.0) >= MIN_INTERVAL_SECONDS
            ]
            for uri in due:
                self._pending.discard(uri)
                self._last_sent[uri] = now
                await self._send(uri)
            if len(self._last_sent) > PRUNE_AT:
                # A URI last sent a quiet period ago throttles nothing: kept, the table grew
                # by one entry for every job a long-running conductor ever had.
                self._last_sent = {
                    uri: sent
                    for uri, sent in self._last_sent.items()
                    if now - sent < MIN_INTERVAL_SECONDS
                }
            if self._pending and not due:
                soonest = min(self._last_sent.get(uri, 0.0) for uri in self._pending)
                self._wake = anyio.Event()
                with anyio.move_on_after(max(0.0, soonest + MIN_INTERVAL_SECONDS - now)):
                    await self._wake.wait()

    async def _send(self, uri: str) -> None:
        await self._bus.publish(ResourceUpdated(uri=uri))
        for connection, session in list(self._legacy.get(uri, {}).items()):
            try:
                await session.send_resource_updated(uri)
            except Exception:  # a closed session must not stop notifications for others
                subscribed = self._legacy.get(uri, {})
                subscribed.pop(connection, None)
                if not subscribed:
                    self._legacy.pop(uri, None)
                log.debug("dropped legacy subscriber", uri=uri)
