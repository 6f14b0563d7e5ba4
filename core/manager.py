"""The job manager: the ONE writer of job and sheet state.

Control calls (submit, pause, resume, cancel), the dispatch loop and attempt results all go
through here; each reads rows from the store, applies a rule from `transitions`, and writes
the changed rows in one transaction before anything is announced.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.config import PodiumConfig
from podium.core.control import ControlCalls
from podium.core.errors import ConflictError, SpecError
from podium.core.events import ChangeEvent
from podium.core.instruments.profile import applicable_config
from podium.core.manager_core import (
    _PRESSURE_ORDER,
    HIGH_PRESSURE_GAP_SECONDS,
    IDLE_RECHECK_SECONDS,
    MIN_OUTCOMES_FOR_RATE,
    RunningSheet,
)
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    utcnow,
)
from podium.core.pressure import PressureLevel
from podium.core.recovery import Recovery
from podium.core.runner.process import ProcessGroupRef
from podium.core.runner.runner import AttemptPlan, AttemptResult, run_attempt
from podium.core.scheduler import JobState, Limits, next_wakeup, pick_dispatches
from podium.core.spec.loader import LoadedSpec
from podium.core.spec.models import RetryPolicy
from podium.core.spec.templating import (
    TemplateContext,
    TemplateRenderError,
    render_sheet_prompt,
    render_validation,
)
from podium.core.store.rows import AttemptRow, JobRow, RateLimitRow, SheetRow
from podium.core.transitions import (
    ancestors,
    apply_attempt_result,
    failed_before_start,
    final_job_status,
    finish_attempt_row,
    mark_terminal,
    reset_for_retry,
    set_job_status,
    skip_unreachable,
    with_category,
)

log = structlog.get_logger("podium.manager")

TerminalHook = Callable[[JobRow], Awaitable[None]]


class JobManager(ControlCalls, Recovery):
    """Submit, the dispatch loop and attempt results; control calls and recovery come from
    the mixed-in parts. All share one lock, so transitions never interleave."""

    # ----- submit ---------------------------------------------------------------------------

    async def submit(
        self,
        loaded: LoadedSpec,
        *,
        job_id: str,
        workspace: Path,
        start: bool,
        spec_path: Path | None,
    ) -> tuple[JobRow, bool]:
        """Register a job; returns (job, created). The same job_id with the same spec returns
        the existing job, so a retried submit is safe."""
        async with self._lock:
            existing = await self.store.get_job(job_id)
            fingerprint = loaded.fingerprint()
            if existing is not None:
                if existing.spec_fingerprint == fingerprint:
                    return existing, False
                raise ConflictError(
                    f"job_id: job {job_id!r} already exists with a different spec; "
                    "choose another job_id or omit it"
                )
            now = utcnow()
            spec = loaded.spec
            job = JobRow(
                job_id=job_id,
                name=spec.name,
                description=spec.description,
                status=JobStatus.QUEUED if start else JobStatus.PAUSED,
                pause_reason=None if start else PauseReason.NOT_STARTED,
                workspace=str(workspace),
                spec=loaded.to_storable(),
                spec_fingerprint=fingerprint,
                spec_path=str(spec_path) if spec_path else None,
                total_sheets=len(loaded.sheets),
                submitted_at=now,
                updated_at=now,
                priority=spec.priority,
                labels=list(spec.labels),
                conductor_pid=os.getpid(),
            )
            sheets = [
                SheetRow(
                    job_id=job_id,
                    sheet_num=s.sheet_num,
                    name=s.name,
                    status=SheetStatus.PENDING,
                    instrument=s.instrument,
                    updated_at=now,
                    depends_on=list(s.depends_on),
                )
                for s in loaded.sheets
            ]
            await self.store.create_job(job, sheets)
            self._specs[job_id] = (fingerprint, loaded)
        self.events.publish(ChangeEvent(job_id, "submitted", job.status.value))
        self.wake()
        return job, True

    # ----- dispatch loop --------------------------------------------------------------------

    async def run(self, task_group: TaskGroup) -> None:
        """Dispatch until stopped. Sheet attempts run as tasks in `task_group`."""
        self._task_group = task_group
        while not self._stopping:
            self._wake = anyio.Event()
            wake_at = await self.dispatch_once()
            timeout = IDLE_RECHECK_SECONDS
            if wake_at is not None:
                timeout = min(timeout, max(0.0, (wake_at - utcnow()).total_seconds()))
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    async def _held_instruments(self, now: datetime) -> dict[str, datetime]:
        held = {}
        for row in await self.store.get_rate_limits():
            if row.until > now:
                held[row.instrument] = row.until
            else:
                # The wait is over: one sheet goes first, the rest follow once it succeeds.
                await self.store.clear_rate_limit(row.instrument)
                self._released_instruments.add(row.instrument)
        return held

    async def dispatch_once(self) -> datetime | None:
        async with self._lock:
            if self._stopping or self._task_group is None:
                return None
            now = utcnow()
            states: list[JobState] = []
            deadlines: list[datetime] = []
            for job in await self.store.jobs_with_status([JobStatus.QUEUED, JobStatus.RUNNING]):
                sheets = await self.store.get_sheets(job.job_id)
                try:
                    self._spec_for(job)
                except SpecError as exc:
                    await self._fail_unloadable(job, sheets, exc, now)
                    continue
                deadline = self._deadline(job)
                if deadline is not None:
                    if deadline <= now:
                        await self._expire(job, sheets, now)
                        continue
                    deadlines.append(deadline)
                unreachable = skip_unreachable(sheets, now)
                if unreachable:
                    await self.store.write(sheets=unreachable)
                    self._publish(job, unreachable)
                final = final_job_status(sheets)
                if final is not None:
                    await self._finish_job(job, final, now)
                    continue
                max_parallel = int(job.spec.get("concurrency", {}).get("max_parallel_sheets", 4))
                states.append(JobState(job, sheets, max_parallel))
            held = await self._held_instruments(now)
            if self._may_dispatch():
                picks = pick_dispatches(
                    states,
                    self.limits,
                    len(self._running),
                    now,
                    held_instruments=held.keys(),
                    one_per_instrument=self._released_instruments,
                )
                if self.pressure is PressureLevel.HIGH:
                    # High pressure: keep going, but one sheet at a time with a pause between.
                    picks = picks[:1]
                    if picks:
                        self._last_slow_dispatch = time.monotonic()
                for state, sheet in picks:
                    await self._start_sheet(state.job, state.sheets, sheet, now)
                    # A job that just started has a deadline from now on: wake for it.
                    deadline = self._deadline(state.job)
                    if deadline is not None:
                        deadlines.append(deadline)
            wake_at = next_wakeup(states, held)
            if self.pressure is PressureLevel.HIGH:
                slow = now + timedelta(seconds=HIGH_PRESSURE_GAP_SECONDS)
                wake_at = min(wake_at, slow) if wake_at else slow
            if deadlines:
                wake_at = min([*deadlines, wake_at] if wake_at else deadlines)
            return wake_at

    def _may_dispatch(self) -> bool:
        if self.pressure is PressureLevel.CRITICAL:
            return False
        if self.pressure is PressureLevel.HIGH:
            return time.monotonic() - self._last_slow_dispatch >= HIGH_PRESSURE_GAP_SECONDS
        return True

    def set_pressure(self, level: PressureLevel, reason: str | None) -> None:
        eased = _PRESSURE_ORDER.index(level) < _PRESSURE_ORDER.index(self.pressure)
        self.pressure, self.pressure_reason = level, reason
        if eased:
            self.wake()

    def apply_config(self, config: PodiumConfig) -> None:
        self.config = config
        self.limits = Limits(config.max_concurrent_jobs, config.max_concurrent_sheets)
        self.wake()

    @property
    def failure_rate(self) -> float | None:
        if len(self.recent_outcomes) < MIN_OUTCOMES_FOR_RATE:
            return None
        return 1 - sum(self.recent_outcomes) / len(self.recent_outcomes)

    def _deadline(self, job: JobRow) -> datetime | None:
        seconds = job.spec.get("deadline_seconds")
        if seconds is None or job.started_at is None:
            return None
        return job.started_at + timedelta(seconds=float(seconds))

    async def _start_sheet(
        self, job: JobRow, sheets: list[SheetRow], sheet: SheetRow, now: datetime
    ) -> None:
        attempt_no = sheet.attempts + 1
        log_path = (
            self.config.logs_dir / job.job_id / f"sheet-{sheet.sheet_num}-attempt-{attempt_no}.log"
        )
        sheet.status = SheetStatus.RUNNING
        sheet.attempts = attempt_no
        sheet.started_at = now
        sheet.completed_at = None
        sheet.waiting_reason = None
        sheet.waiting_until = None
        sheet.log_path = str(log_path)
        sheet.updated_at = now
        attempt = AttemptRow(
            job_id=job.job_id,
            sheet_num=sheet.sheet_num,
            attempt=attempt_no,
            started_at=now,
            log_path=str(log_path),
        )
        if job.status is JobStatus.QUEUED:
            set_job_status(job, JobStatus.RUNNING, now)
        job.updated_at = now
        await self.store.write(job, [sheet], [attempt])
        self._publish(job, [sheet])
        entry = RunningSheet(job.job_id, sheet.sheet_num, attempt_no)
        self._running[(job.job_id, sheet.sheet_num)] = entry
        plan_or_error = self._plan(job, sheets, sheet, attempt_no, log_path)
        assert self._task_group is not None
        self._task_group.start_soon(self._run_sheet, entry, plan_or_error)

    def _plan(
        self, job: JobRow, sheets: list[SheetRow], sheet: SheetRow, attempt_no: int, log_path: Path
    ) -> AttemptPlan | str:
        try:
            loaded = self._spec_for(job)
        except SpecError as exc:
            return f"spec: the stored spec no longer loads ({exc})"
        resolved = loaded.sheets[sheet.sheet_num - 1]
        by_num = {s.sheet_num: s for s in sheets}
        outputs = {n: by_num[n].output_tail or "" for n in ancestors(by_num, sheet.sheet_num)}
        ctx = TemplateContext(
            workspace=job.workspace,
            job_id=job.job_id,
            sheet_num=sheet.sheet_num,
            total_sheets=len(sheets),
            sheet_name=resolved.name,
            start_item=resolved.start_item,
            end_item=resolved.end_item,
            variables=loaded.spec.variables,
            outputs=outputs,
            sheet_names={s.name: s.sheet_num for s in loaded.sheets if s.name is not None},
        )
        info = self.catalog.get(resolved.instrument)
        if info is None:
            return f"unknown instrument {resolved.instrument!r}"
        try:
            prompt = render_sheet_prompt(resolved, ctx)
            validations = [render_validation(v, ctx) for v in resolved.validations]
        except TemplateRenderError as exc:
            return f"template: {exc}"
        return AttemptPlan(
            job_id=job.job_id,
            sheet_num=sheet.sheet_num,
            attempt=attempt_no,
            prompt=prompt,
            workspace=Path(job.workspace),
            profile=info.profile,
            instrument_config=applicable_config(resolved.instrument_config, info.profile),
            validations=validations,
            log_path=log_path,
            log_max_bytes=self.config.log_max_bytes,
            kill_grace_seconds=self.config.kill_grace_seconds,
            base_env=self._base_env,
            home=str(self.config.home),
        )

    async def _run_sheet(self, entry: RunningSheet, plan: AttemptPlan | str) -> None:
        started = utcnow()
        try:
            if isinstance(plan, str):
                result = failed_before_start(plan, started, "")
            else:
                result = await run_attempt(
                    plan, entry.control, on_spawn=self._spawn_recorder(entry)
                )
        except Exception as exc:  # a bug must fail the sheet, never wedge the job
            log.exception("attempt crashed", job_id=entry.job_id, sheet=entry.sheet_num)
            result = failed_before_start(f"internal error: {exc!r}", started, "")
        with anyio.CancelScope(shield=True):
            try:
                await self._apply_result(entry, result)
            finally:
                self._running.pop((entry.job_id, entry.sheet_num), None)
                entry.done.set()
                self.wake()

    def _spawn_recorder(self, entry: RunningSheet) -> Callable[[ProcessGroupRef], Awaitable[None]]:
        async def record(ref: ProcessGroupRef) -> None:
            await self.store.set_attempt_process(
                entry.job_id, entry.sheet_num, entry.attempt, ref.pid, ref.pgid, ref.start_time
            )

        return record

    async def _apply_result(self, entry: RunningSheet, result: AttemptResult) -> None:
        async with self._lock:
            job = await self.store.get_job(entry.job_id)
            if job is None:
                return
            sheets = await self.store.get_sheets(entry.job_id)
            sheet = next(s for s in sheets if s.sheet_num == entry.sheet_num)
            attempt = await self.store.get_attempt(entry.job_id, entry.sheet_num, entry.attempt)
            if attempt is None:
                attempt = AttemptRow(
                    entry.job_id, entry.sheet_num, entry.attempt, result.started_at
                )
            now = utcnow()
            changed: list[SheetRow] = [sheet]
            reason = entry.stop_reason
            if result.outcome is Outcome.COMPLETED:
                # It finished (validations passed) before any stop reached it: the work is
                # kept, whatever is happening to the job now. Nothing completed is re-run.
                reason = None
            if reason == "shutdown":
                outcome = Outcome.INTERRUPTED
                reset_for_retry(sheet, now)
                sheet.retries_used = 0
                sheet.last_error = "interrupted by conductor shutdown"
                sheet.error_category = ErrorCategory.INTERRUPTED
            elif reason in ("cancel", "deadline") or (
                job.status is JobStatus.CANCELLED and result.outcome is not Outcome.COMPLETED
            ):
                outcome = Outcome.CANCELLED
                category = (
                    ErrorCategory.DEADLINE if reason == "deadline" else ErrorCategory.CANCELLED
                )
                mark_terminal(sheet, SheetStatus.CANCELLED, now, result.error, category)
                sheet.output_tail = result.stdout_tail[-4096:]
            else:
                try:
                    policy = self._spec_for(job).spec.retry
                except SpecError:
                    # The job is failing for its spec: record this attempt, retry nothing.
                    policy = RetryPolicy(max_retries=0)
                outcome, changed, hold = apply_attempt_result(
                    job,
                    sheets,
                    sheet,
                    result,
                    policy,
                    now,
                    max_rate_limit_retries=self.config.max_rate_limit_retries,
                    max_rate_limit_wait_seconds=self.config.max_rate_limit_wait_seconds,
                )
                if hold is not None:
                    await self.store.set_rate_limit(
                        RateLimitRow(
                            sheet.instrument, now + timedelta(seconds=hold), result.error, now
                        )
                    )
                if outcome is Outcome.COMPLETED:
                    self._released_instruments.discard(sheet.instrument)
                if outcome is not Outcome.RATE_LIMITED:
                    self.recent_outcomes.append(outcome is Outcome.COMPLETED)
            result_for_row = result
            if outcome is Outcome.INTERRUPTED:
                result_for_row = with_category(result, ErrorCategory.INTERRUPTED)
            finish_attempt_row(attempt, result_for_row, outcome)
            became_terminal = False
            if not job.status.is_terminal:
                final = final_job_status(sheets)
                if final is not None:
                    set_job_status(job, final[0], now)
                    job.error = final[1]
                    became_terminal = True
            job.updated_at = now
            await self.store.write(job, changed, [attempt])
            # Leave the running table in the same locked section that recorded the result, so
            # no control call ever sees a finished attempt as still running.
            self._running.pop((entry.job_id, entry.sheet_num), None)
            self._publish(job, changed)
            if job.job_id in self._pending_modify and not self._entries_for_other(entry):
                await self._apply_pending_modify(job.job_id)
        if became_terminal:
            await self._terminal(job)

    def _entries_for_other(self, entry: RunningSheet) -> list[RunningSheet]:
        return [e for e in self._entries_for(entry.job_id) if e is not entry]

    async def _finish_job(
        self, job: JobRow, final: tuple[JobStatus, str | None], now: datetime
    ) -> None:
        set_job_status(job, final[0], now)
        job.error = final[1]
        await self.store.write(job)
        self._publish(job)
        if self._task_group is not None:
            self._task_group.start_soon(self._terminal, job)

    async def _fail_unloadable(
        self, job: JobRow, sheets: list[SheetRow], exc: SpecError, now: datetime
    ) -> None:
        """A stored spec that no longer loads fails its own job with the reason; the loop and
        every other job go on. Running sheets finish and are recorded as usual."""
        reason = "; ".join(str(e) for e in exc.errors[:5])
        log.error("stored spec no longer loads", job_id=job.job_id, errors=reason)
        changed = []
        for sheet in sheets:
            if not sheet.status.is_terminal and (job.job_id, sheet.sheet_num) not in self._running:
                mark_terminal(
                    sheet,
                    SheetStatus.FAILED,
                    now,
                    "the job's stored spec no longer loads",
                    ErrorCategory.SPEC_INVALID,
                )
                changed.append(sheet)
        set_job_status(job, JobStatus.FAILED, now)
        job.error = (
            f"spec: the stored spec no longer loads ({reason}); resume with a corrected spec "
            "(resume with spec, spec_yaml or path)"
        )
        await self.store.write(job, changed)
        self._publish(job, changed)
        if self._task_group is not None:
            self._task_group.start_soon(self._terminal, job)

    async def _expire(self, job: JobRow, sheets: list[SheetRow], now: datetime) -> None:
        """The job ran past `deadline_seconds`: stop its sheets and fail it."""
        seconds = job.spec.get("deadline_seconds")
        changed = []
        for sheet in sheets:
            if not sheet.status.is_terminal and (job.job_id, sheet.sheet_num) not in self._running:
                mark_terminal(
                    sheet, SheetStatus.CANCELLED, now, "deadline reached", ErrorCategory.DEADLINE
                )
                changed.append(sheet)
        set_job_status(job, JobStatus.FAILED, now)
        job.error = f"deadline: the job ran longer than deadline_seconds={seconds}"
        await self.store.write(job, changed)
        self._publish(job, changed)
        for entry in self._entries_for(job.job_id):
            entry.stop_reason = "deadline"
            entry.control.request_cancel()
        if self._task_group is not None:
            self._task_group.start_soon(self._terminal, job)
