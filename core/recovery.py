"""Crash recovery at start and graceful shutdown: what a stopped conductor left in flight is
reconciled from the store, never from memory."""

from __future__ import annotations

import os

import anyio
import structlog

from podium.core.manager_core import ManagerCore
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    utcnow,
)
from podium.core.runner.process import (
    ProcessGroupRef,
    groups_marked,
    kill_recorded_group,
    terminate_group,
)
from podium.core.runner.runner import attempt_marker
from podium.core.store.rows import AttemptRow
from podium.core.transitions import (
    final_job_status,
    mark_terminal,
    reset_for_retry,
    set_job_status,
)

log = structlog.get_logger("podium.manager")


class Recovery(ManagerCore):
    async def shutdown(self) -> None:
        """Stop dispatching, end running sheets, and leave their jobs paused (`shutdown`)."""
        async with self._lock:
            self._stopping = True
            now = utcnow()
            entries = list(self._running.values())
            busy = {e.job_id for e in entries}
            # Jobs in flight are paused; a queued job that never started stays queued.
            for job in await self.store.jobs_with_status([JobStatus.QUEUED, JobStatus.RUNNING]):
                if job.status is JobStatus.RUNNING or job.job_id in busy:
                    set_job_status(job, JobStatus.PAUSED, now)
                    job.pause_reason = PauseReason.SHUTDOWN
                    await self.store.write(job)
                    self._publish(job)
            for entry in entries:
                # A cancel or deadline already under way keeps its reason.
                entry.stop_reason = entry.stop_reason or "shutdown"
                entry.control.request_cancel()
        self.wake()
        await self._wait_entries(entries)

    async def _kill_leftover(self, ref: ProcessGroupRef) -> None:
        if await kill_recorded_group(ref, self.config.kill_grace_seconds):
            log.warning("killed leftover process group", pgid=ref.pgid)

    async def _kill_marked(self, attempt: AttemptRow) -> None:
        """Processes that carry this attempt's mark in their environment are ours even when no
        process group was recorded (a crash right after spawn) or the leader is gone."""
        marker = attempt_marker(
            str(self.config.home), attempt.job_id, attempt.sheet_num, attempt.attempt
        )
        groups = await anyio.to_thread.run_sync(groups_marked, "PODIUM_ATTEMPT_OF", marker)
        for pgid in groups:
            log.warning("killing unrecorded leftover process group", pgid=pgid)
            await terminate_group(pgid, self.config.kill_grace_seconds)

    async def recover(self) -> list[str]:
        """Reconcile what a dead conductor left behind; returns the job ids touched.

        In-flight attempts become `interrupted` (their process group is killed first, but only
        when pgid and leader start time both match the record), their sheets go back to
        `pending`, and active jobs become paused (`interrupted`), or continue with auto_resume.
        """
        async with self._lock:
            now = utcnow()
            touched: set[str] = set()
            in_flight = await self.store.get_in_flight_attempts()
            # Leftover groups are ended side by side: start-up waits one grace period, not one
            # per attempt.
            async with anyio.create_task_group() as kills:
                for attempt in in_flight:
                    if attempt.pgid and attempt.pid and attempt.pid_start_time is not None:
                        ref = ProcessGroupRef(attempt.pid, attempt.pgid, attempt.pid_start_time)
                        kills.start_soon(self._kill_leftover, ref)
                    kills.start_soon(self._kill_marked, attempt)
            for attempt in in_flight:
                attempt.outcome = Outcome.INTERRUPTED
                attempt.error_category = ErrorCategory.INTERRUPTED
                attempt.error = "the conductor stopped while this attempt was running"
                attempt.ended_at = now
                await self.store.write(attempts=[attempt])
                touched.add(attempt.job_id)
            active = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED]
            for job in await self.store.jobs_with_status(active):
                sheets = await self.store.get_sheets(job.job_id)
                changed = []
                for sheet in sheets:
                    if sheet.status in (SheetStatus.RUNNING, SheetStatus.WAITING):
                        interrupted = sheet.status is SheetStatus.RUNNING
                        keep_retries = sheet.retries_used
                        reset_for_retry(sheet, now)
                        sheet.retries_used = keep_retries
                        if interrupted:
                            sheet.last_error = "interrupted: the conductor stopped"
                            sheet.error_category = ErrorCategory.INTERRUPTED
                        changed.append(sheet)
                final = final_job_status(sheets)
                if final is not None:
                    set_job_status(job, final[0], now)
                    job.error = final[1]
                elif job.status is JobStatus.RUNNING or (
                    job.status is JobStatus.QUEUED and changed
                ):
                    if self.config.auto_resume:
                        set_job_status(job, JobStatus.QUEUED, now)
                    else:
                        set_job_status(job, JobStatus.PAUSED, now)
                        job.pause_reason = PauseReason.INTERRUPTED
                elif self.config.auto_resume and job.pause_reason in (
                    PauseReason.INTERRUPTED,
                    PauseReason.SHUTDOWN,
                ):
                    set_job_status(job, JobStatus.QUEUED, now)
                else:
                    if not changed:
                        continue
                job.conductor_pid = os.getpid()
                job.updated_at = now
                await self.store.write(job, changed)
                self._publish(job, changed)
                touched.add(job.job_id)
            # A job already terminal (a cancel or deadline that the crash interrupted) keeps
            # its status; its sheets that were still running or waiting are cancelled.
            for job_id in sorted({a.job_id for a in in_flight}):
                ended = await self.store.get_job(job_id)
                if ended is None or not ended.status.is_terminal:
                    continue
                leftovers = [
                    s for s in await self.store.get_sheets(job_id) if not s.status.is_terminal
                ]
                category = (
                    ErrorCategory.DEADLINE
                    if (ended.error or "").startswith("deadline")
                    else ErrorCategory.CANCELLED
                )
                for sheet in leftovers:
                    mark_terminal(sheet, SheetStatus.CANCELLED, now, "the job had ended", category)
                if leftovers:
                    await self.store.write(sheets=leftovers)
                    self._publish(ended, leftovers)
                touched.add(job_id)
        self.wake()
        return sorted(touched)
