"""Control calls on jobs (SPEC §6 table): pause, resume (including a modify with a changed
spec) and cancel. Each is one locked read-decide-write on the store."""

from __future__ import annotations

from collections.abc import Sequence

from podium.core.errors import InvalidTransitionError
from podium.core.manager_core import ManagerCore
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    JobSummary,
    PauseReason,
    SheetStatus,
    WaitingReason,
    utcnow,
)
from podium.core.spec.loader import LoadedSpec
from podium.core.store.rows import JobRow, SheetRow
from podium.core.transitions import (
    apply_spec_change,
    final_job_status,
    mark_terminal,
    match_sheets,
    reset_for_retry,
    resettable,
    set_job_status,
    skip_unreachable,
)


class ControlCalls(ManagerCore):
    async def pause(self, job_id: str, immediate: bool) -> JobSummary:
        async with self._lock:
            job = await self._require_job(job_id)
            if job.status.is_terminal:
                raise InvalidTransitionError(
                    f"job {job_id!r} is {job.status.value}; only queued or running jobs can be "
                    "paused"
                )
            # An explicit pause also calls off the automatic resume of a pending modify.
            self._pending_modify.pop(job_id, None)
            if job.status is JobStatus.PAUSED:
                return job.summary()
            set_job_status(job, JobStatus.PAUSED, utcnow())
            job.pause_reason = PauseReason.USER
            await self.store.write(job)
            self._publish(job)
            if immediate:
                for entry in self._entries_for(job_id):
                    await entry.control.suspend()
            return job.summary()

    async def resume(
        self, job_id: str, changed_spec: LoadedSpec | None, retry_failed: bool
    ) -> JobSummary:
        async with self._lock:
            job = await self._require_job(job_id)
            if job.status is JobStatus.COMPLETED:
                raise InvalidTransitionError(
                    f"job {job_id!r} is completed; there is nothing to resume (submit it again "
                    "to re-run)"
                )
            sheets = await self.store.get_sheets(job_id)
            if changed_spec is not None:
                # Validate before touching anything: a bad changed spec leaves the job as it was.
                match_sheets(sheets, changed_spec)
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                if changed_spec is None:
                    return job.summary()
                # A modify: the new spec is saved at once (so a crash cannot lose it), no new
                # sheet starts, and the job resumes by itself once its running sheets end.
                now = utcnow()
                changed = apply_spec_change(job, sheets, changed_spec, now)
                self._specs[job_id] = (job.spec_fingerprint, changed_spec)
                set_job_status(job, JobStatus.PAUSED, now)
                job.pause_reason = PauseReason.USER
                await self.store.write(job, changed)
                self._publish(job, changed)
                self._pending_modify[job_id] = retry_failed
                if not self._entries_for(job_id):
                    await self._apply_pending_modify(job_id)
                job = await self._require_job(job_id)
                return job.summary()
            summary = await self._resume_now(job, sheets, changed_spec, retry_failed)
        self.wake()
        return summary

    async def _apply_pending_modify(self, job_id: str) -> None:
        retry_failed = self._pending_modify.pop(job_id)
        job = await self._require_job(job_id)
        if job.status is not JobStatus.PAUSED:
            return
        sheets = await self.store.get_sheets(job_id)
        await self._resume_now(job, sheets, None, retry_failed)
        self.wake()

    async def _resume_now(
        self,
        job: JobRow,
        sheets: list[SheetRow],
        changed_spec: LoadedSpec | None,
        retry_failed: bool,
    ) -> JobSummary:
        now = utcnow()
        self._pending_modify.pop(job.job_id, None)
        if job.status.is_terminal:
            # A finished job resumed is a new run: its deadline counts from the restart.
            job.started_at = None
        changed: list[SheetRow] = []
        if changed_spec is not None:
            changed += apply_spec_change(job, sheets, changed_spec, now)
            self._specs[job.job_id] = (job.spec_fingerprint, changed_spec)
        if retry_failed:
            for sheet in resettable(sheets):
                reset_for_retry(sheet, now)
                changed.append(sheet)
        entries = self._entries_for(job.job_id)
        set_job_status(job, JobStatus.RUNNING if entries else JobStatus.QUEUED, now)
        job.error = None
        changed += skip_unreachable(sheets, now)
        final = final_job_status(sheets)
        if final is not None:
            set_job_status(job, final[0], now)
            job.error = final[1]
        unique = list({s.sheet_num: s for s in changed}.values())
        await self.store.write(job, unique)
        self._publish(job, changed)
        for entry in entries:
            if entry.control.suspended:
                await entry.control.resume()
        if final is not None and self._task_group is not None:
            self._task_group.start_soon(self._terminal, job)
        return job.summary()

    async def cancel(self, job_id: str) -> JobSummary:
        async with self._lock:
            job = await self._require_job(job_id)
            if job.status is JobStatus.CANCELLED:
                return job.summary()
            if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise InvalidTransitionError(
                    f"job {job_id!r} is already {job.status.value}; only queued, running or "
                    "paused jobs can be cancelled"
                )
            now = utcnow()
            self._pending_modify.pop(job_id, None)
            sheets = await self.store.get_sheets(job_id)
            entries = self._entries_for(job_id)
            running = {e.sheet_num for e in entries}
            changed = []
            for sheet in sheets:
                if not sheet.status.is_terminal and sheet.sheet_num not in running:
                    mark_terminal(
                        sheet, SheetStatus.CANCELLED, now, "cancelled", ErrorCategory.CANCELLED
                    )
                    changed.append(sheet)
            set_job_status(job, JobStatus.CANCELLED, now)
            job.error = None
            await self.store.write(job, changed)
            self._publish(job, changed)
            for entry in entries:
                entry.stop_reason = "cancel"
                entry.control.request_cancel()
        await self._wait_entries(entries)
        await self._terminal(job)
        job = await self._require_job(job_id)
        return job.summary()

    async def lift_rate_limits(self, instruments: Sequence[str]) -> None:
        """Rate limits were cleared by hand: waiting sheets of those instruments may go now."""
        async with self._lock:
            now = utcnow()
            for job in await self.store.jobs_with_status(
                [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED]
            ):
                changed = []
                for sheet in await self.store.get_sheets(job.job_id):
                    if (
                        sheet.status is SheetStatus.WAITING
                        and sheet.waiting_reason is WaitingReason.RATE_LIMIT
                        and sheet.instrument in instruments
                    ):
                        sheet.waiting_until = now
                        sheet.updated_at = now
                        changed.append(sheet)
                if changed:
                    await self.store.write(sheets=changed)
                    self._publish(job, changed)
        self.wake()
