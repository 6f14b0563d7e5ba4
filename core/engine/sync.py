"""Several conductors on one store: what each needs to know of the others.

A conductor on a shared store (PostgreSQL) records itself and renews that record with a
heartbeat; hears of the others' changes through the store's notifications and re-reads what
they changed (the writer does, between two groups), so pause, resume and cancel taken by any
conductor reach the sheets wherever they run; polls as a safety net for a missed
notification; and takes back the attempts of conductors whose lease ran out. The attempts
it runs carry its lease, renewed by the dispatcher.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.engine.context import EngineContext
from podium.core.engine.recovery import Recovery
from podium.core.engine.state import EngineState
from podium.core.engine.writer import Writer
from podium.core.models import JobStatus, utcnow
from podium.core.store.base import StoreChange
from podium.core.store.rows import ConductorRow

log = structlog.get_logger("podium.sync")

MIN_PERIOD_SECONDS = 0.2


class Sync:
    def __init__(
        self, ctx: EngineContext, writer: Writer, state: EngineState, recovery: Recovery
    ) -> None:
        self.ctx = ctx
        self.writer = writer
        self.state = state
        self.recovery = recovery
        self.started_at = utcnow()
        self._task_group: TaskGroup | None = None
        self._registered = False
        writer.on_synced = self._synced

    @property
    def period(self) -> float:
        """Heartbeat, poll and lease check, a third of a lease: a conductor must miss
        three in a row before the others count it gone."""
        return max(MIN_PERIOD_SECONDS, self.ctx.config.lease_seconds / 3)

    def _row(self, now: datetime) -> ConductorRow:
        config = self.ctx.config
        return ConductorRow(
            conductor_id=config.conductor_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            last_seen=now,
            expires_at=now + timedelta(seconds=config.lease_seconds),
            labels=sorted(config.host_labels),
        )

    async def register(self) -> bool:
        """Record this conductor as alive; returns whether other conductors are too."""
        now = utcnow()
        await self.writer.store.heartbeat(self._row(now))
        self._registered = True
        return await self.others_alive(now)

    async def others_alive(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        me = self.ctx.config.conductor_id
        return any(
            c.conductor_id != me and c.expires_at > now
            for c in await self.writer.store.conductors()
        )

    async def leave(self) -> None:
        if self._registered:
            self._registered = False
            with anyio.CancelScope(shield=True):
                try:
                    await self.writer.store.leave(self.ctx.config.conductor_id)
                except Exception:
                    log.exception("could not remove this conductor's record")

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            tg.start_soon(self.writer.store.watch, self._heard)
            while True:
                await anyio.sleep(self.period)
                try:
                    await self.tick()
                except Exception:
                    # The store is unreachable for now: the next tick tries again.
                    log.exception("conductor heartbeat failed")

    async def tick(self) -> None:
        store = self.writer.store
        await store.heartbeat(self._row(utcnow()))
        versions = await store.job_versions()
        stale = {
            job_id
            for job_id, version in versions.items()
            if job_id not in self.state.jobs or self.state.jobs[job_id].job.version != version
        }
        stale |= {
            job_id
            for job_id, held in self.state.jobs.items()
            if job_id not in versions and not held.job.status.is_terminal
        }
        self.writer.mark_stale(stale, holds=True)
        await self.recovery.reclaim_expired()

    def _heard(self, change: StoreChange) -> None:
        self.writer.mark_stale(
            change.jobs, sheets=change.sheets, holds=change.holds, everything=change.everything
        )
        for job_id in change.suspend:
            for entry in self.state.entries_for(job_id):
                if self._task_group is not None:
                    self._task_group.start_soon(entry.control.suspend)

    def _synced(self, job_ids: set[str]) -> None:
        """Jobs another conductor changed were re-read: act on the sheets this conductor
        runs of them as if the change had been made here."""
        for job_id in job_ids:
            entries = self.state.entries_for(job_id)
            held = self.state.jobs.get(job_id)
            if not entries or held is None:
                continue
            job = held.job
            stop = None
            if job.status is JobStatus.CANCELLED:
                stop = "cancel"
            elif job.status is JobStatus.FAILED and (job.error or "").startswith("deadline"):
                stop = "deadline"
            for entry in entries:
                if stop is not None and entry.stop_reason is None:
                    entry.stop_reason = stop
                    entry.control.request_cancel()
                elif held.dispatchable and entry.control.suspended:
                    entry.control.resume_now()
