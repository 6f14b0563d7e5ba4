"""Changes that span rows and files, kept crash-safe (SPEC §9 trap 16): `clear` deletes
rows first and files after, and at every start whatever a crash left between the two is
finished (dirs without rows removed, captures that died taken again)."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import structlog

from podium.core.errors import PodiumError
from podium.core.models import JobStatus, utcnow
from podium.core.snapshots import snapshot_time
from podium.core.store.rows import JobRow
from podium.core.views import ClearResult

if TYPE_CHECKING:
    from podium.core.conductor import Conductor

log = structlog.get_logger("podium.conductor")

# How long `clear` waits for the snapshots of jobs that have just ended (a capture copies a
# job's logs: a second for a large one); a capture still running after that removes its
# snapshot itself once it finds the job gone.
CAPTURE_WAIT_SECONDS = 10.0


class Housekeeping:
    def __init__(
        self, conductor: Conductor, recapture: Callable[[JobRow], Awaitable[None]]
    ) -> None:
        self._c = conductor
        self._recapture = recapture
        # How long `clear` waits for the sheets of a job that has just been cancelled (or
        # has run past its deadline) to stop: as long as the cancel itself may take.
        self.stopping_wait_seconds: float = conductor.config.kill_grace_seconds + 2

    async def clear(
        self,
        *,
        job_ids: Sequence[str] | None = None,
        statuses: Sequence[JobStatus] | None = None,
        older_than_hours: float | None = None,
        all_jobs: bool = False,
    ) -> ClearResult:
        """Delete finished jobs with their logs and snapshots (never workspaces, never active
        jobs). Filters combine with AND; with none, `all_jobs` must be set."""
        if not job_ids and not statuses and older_than_hours is None and not all_jobs:
            raise PodiumError(
                "clear needs at least one of job_ids, statuses, older_than_hours, or all=true"
            )
        active = [s for s in (statuses or []) if s.is_active]
        if active:
            names = ", ".join(s.value for s in active)
            raise PodiumError(
                f"statuses: {names} jobs are never cleared; allowed: completed, failed, cancelled"
            )
        rows: list[JobRow] = []
        not_found: list[str] = []
        if job_ids:
            for job_id in dict.fromkeys(job_ids):
                job = await self._c.store.get_job(job_id)
                if job is None:
                    not_found.append(job_id)
                else:
                    rows.append(job)
        else:
            wanted = list(statuses) if statuses else list(JobStatus)
            rows = await self._c.store.jobs_with_status(wanted)
        cutoff = (
            utcnow() - timedelta(hours=older_than_hours) if older_than_hours is not None else None
        )
        selected = []
        for job in rows:
            if statuses and job.status not in statuses:
                continue
            if cutoff is not None and (job.completed_at is None or job.completed_at >= cutoff):
                continue
            selected.append(job)
        skipped = [j.job_id for j in selected if j.status.is_active]
        ended = [j.job_id for j in selected if not j.status.is_active]
        # A job cancelled a moment ago may still be stopping its sheets, whose attempts are
        # yet to be written into its rows: wait for them (bounded); a job still stopping
        # after that is kept, and reported with the active ones.
        stopping = await self._c.engine.wait_stopped(ended, self.stopping_wait_seconds)
        skipped += stopping
        ended = [j for j in ended if j not in stopping]
        # A job that has just ended may still be having its snapshot taken: deleting its
        # files under that capture would leave the snapshot of a job that no longer exists.
        with anyio.move_on_after(CAPTURE_WAIT_SECONDS):
            for job_id in ended:
                await self._c.engine.hooks_settled(job_id)
        # Their tasks keep answering what they ended with once the jobs are gone.
        await self._c.tasks.finish_jobs(ended)
        deleted, kept = await self._c.engine.delete_jobs(ended)
        skipped += kept
        for job_id in deleted:
            shutil.rmtree(self._c.config.logs_dir / job_id, ignore_errors=True)
            self._c.snapshots.delete_for_job(job_id)
        if deleted:
            await self._c.store.reclaim_space()
        return ClearResult(
            deleted=len(deleted), job_ids=deleted, skipped_active=skipped, not_found=not_found
        )

    async def reconcile_files(self) -> None:
        """Finish what a crash interrupted between rows and files (SPEC §9 trap 16): log and
        snapshot dirs of jobs the store no longer has (a `clear` that died after deleting
        the rows) and partial snapshots go; a finished job whose snapshot was never
        recorded (a capture that died) is captured again."""
        await self._c.engine.hooks_settled()  # captures recovery itself started
        jobs = await self._c.store.job_files()
        known = {j.job_id for j in jobs}

        def remove() -> int:
            removed = self._c.snapshots.reconcile(known)
            logs = self._c.config.logs_dir
            for entry in logs.iterdir() if logs.is_dir() else ():
                if entry.is_dir() and entry.name not in known:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            return removed

        removed = await anyio.to_thread.run_sync(remove)
        if removed:
            log.warning("removed files left by an interrupted change", dirs=removed)
        for job in jobs:
            if not job.status.is_terminal or job.completed_at is None:
                continue
            taken = snapshot_time(job.snapshot_path)
            if taken is None or taken < job.completed_at:
                row = await self._c.store.get_job(job.job_id)
                if row is not None:
                    log.warning("capturing a snapshot a crash interrupted", job_id=job.job_id)
                    await self._recapture(row)
