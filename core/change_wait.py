"""Waiting, without polling, until a job's status changes (or any job's): the long poll
behind `status` with `wait_seconds`, driven by the change events the engine publishes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from podium.core.events import APPROVAL_EVENT, EventBus
from podium.core.models import JobStatus
from podium.core.store.base import Store
from podium.core.store.rows import JobRow

OnTick = Callable[[float], Awaitable[None]]


class Cut:
    """Whether the event of `ended_by` cut its body short."""

    def __init__(self) -> None:
        self.short = False


@asynccontextmanager
async def ended_by(event: anyio.Event) -> AsyncIterator[Cut]:
    """A body cancelled once `event` is set (at once if it is set already)."""
    cut = Cut()
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await event.wait()
            cut.short = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            yield cut
        finally:
            tg.cancel_scope.cancel()


async def wait_for_change(
    events: EventBus,
    store: Store,
    job: JobRow | None,
    wait_seconds: float,
    on_tick: OnTick | None,
    tick_seconds: float,
) -> bool:
    """Wait until `job`'s status changes or it ends (any job's status, without a job), at
    most `wait_seconds`. Returns whether something changed. `on_tick(elapsed)` is called
    every `tick_seconds` and, with a job, on each sheet transition of that job, so a caller
    can report progress."""
    job_id = job.job_id if job is not None else None
    known: dict[str, str] = {}
    if job is not None:
        if job.status.is_terminal:
            return False
        known[job.job_id] = job.status.value
    else:
        active = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED]
        known = {j.job_id: j.status.value for j in await store.jobs_with_status(active)}
    deadline = time.monotonic() + wait_seconds
    async with events.subscribe() as changes:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with anyio.move_on_after(min(remaining, tick_seconds)):
                async for event in changes:
                    if job_id is not None and event.job_id != job_id:
                        continue
                    if event.kind == "sheet":
                        if job_id is not None and on_tick is not None:
                            await on_tick(wait_seconds - (deadline - time.monotonic()))
                        continue
                    # Events fire on every transition; only a status that differs from the
                    # one seen when the wait began counts as a change, or a job that now
                    # waits for a person's approval.
                    if event.kind in ("deleted", APPROVAL_EVENT):
                        return True
                    if event.status != known.get(event.job_id):
                        return True
            if on_tick is not None and time.monotonic() < deadline:
                await on_tick(wait_seconds - (deadline - time.monotonic()))
