"""Client activity of an HTTP conductor, for `idle_exit_minutes`.

A client counts as present while any HTTP request of it is open (a 2025-11-25 session keeps
its GET stream open; a 2026-07-28 `subscriptions/listen` or long-poll keeps its POST open) and
for the idle period after its last request ended.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from podium.core.conductor import Conductor
from podium.core.models import JobStatus

log = structlog.get_logger("podium.idle")

ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
CHECK_INTERVAL_SECONDS = 1.0


class ActivityTracker:
    """ASGI middleware: counts open HTTP requests and remembers when the last one ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open_requests = 0
        self.last_seen = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Health probes are supervisors, not clients: they must not keep a conductor alive.
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        self.open_requests += 1
        self.last_seen = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_requests -= 1
            self.last_seen = time.monotonic()


async def active_jobs(conductor: Conductor) -> int:
    counts = (await conductor.status()).jobs_by_status
    return sum(counts.get(s.value, 0) for s in ACTIVE_JOB_STATUSES)


async def wait_until_idle(
    conductor: Conductor,
    tracker: ActivityTracker,
    idle_seconds: float,
    *,
    jobs: Callable[[Conductor], Awaitable[int]] = active_jobs,
) -> None:
    """Return once there has been no active job and no client for `idle_seconds`."""
    busy_until = time.monotonic()
    while True:
        await anyio.sleep(min(CHECK_INTERVAL_SECONDS, idle_seconds))
        now = time.monotonic()
        if tracker.open_requests > 0 or await jobs(conductor) > 0:
            busy_until = now
        quiet_since = max(busy_until, tracker.last_seen)
        if now - quiet_since >= idle_seconds:
            log.info("idle: no active job and no client", idle_seconds=idle_seconds)
            return
