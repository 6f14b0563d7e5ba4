"""The job manager: the ONE writer of job and sheet state.

Control calls (submit, pause, resume, cancel), the dispatch loop and attempt results all go
through here; each reads rows from the store, applies a rule from `transitions`, and writes
the changed rows in one transaction before anything is announced.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.config import PodiumConfig
from podium.core.errors import ConflictError, InvalidTransitionError, NotFoundError
from podium.core.events import ChangeEvent, EventBus
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    JobSummary,
    Outcome,
    PauseReason,
    SheetStatus,
    WaitingReason,
    utcnow,
)
from podium.core.pressure import PressureLevel
from podium.core.runner.process import ProcessGroupRef, RunControl, kill_recorded_group
from podium.core.runner.runner import AttemptPlan, AttemptResult, run_attempt
from podium.core.scheduler import JobState, Limits, next_wakeup, pick_dispatches
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.spec.templating import (
    TemplateContext,
    TemplateRenderError,
    render_sheet_prompt,
    render_validation,
)
from podium.core.store.rows import AttemptRow, JobRow, RateLimitRow, SheetRow
from podium.core.store.sqlite import SQLiteStore
from podium.core.transitions import (
    ancestors,
    apply_attempt_result,
    apply_spec_change,
    failed_before_start,
    final_job_status,
    finish_attempt_row,
    mark_terminal,
    match_sheets,
    reset_for_retry,
    resettable,
    set_job_status,
    with_category,
)

log = structlog.get_logger("podium.manager")

TerminalHook = Callable[[JobRow], Awaitable[None]]

# Longest the dispatch loop sleeps without a wake-up, as a safety net for missed events.
IDLE_RECHECK_SECONDS = 5.0
HIGH_PRESSURE_GAP_SECONDS = 2.0
RECENT_OUTCOMES = 50
MIN_OUTCOMES_FOR_RATE = 10
_PRESSURE_ORDER = list(PressureLevel)


@dataclass
class RunningSheet:
    job_id: str
    sheet_num: int
    attempt: int
    control: RunControl = field(default_factory=RunControl)
    done: anyio.Event = field(default_factory=anyio.Event)
    # Why the conductor is stopping this attempt: "cancel", "deadline" or "shutdown".
    stop_reason: str | None = None


class JobManager:
    def __init__(
        self,
        config: PodiumConfig,
        store: SQLiteStore,
        catalog: InstrumentCatalog,
        events: EventBus,
        on_terminal: TerminalHook | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.catalog = catalog
        self.events = events
        self._on_terminal = on_terminal
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._running: dict[tuple[str, int], RunningSheet] = {}
        self._specs: dict[str, tuple[str, LoadedSpec]] = {}
        self._pending_modify: dict[str, tuple[LoadedSpec, bool]] = {}
        self._released_instruments: set[str] = set()
        self._task_group: TaskGroup | None = None
        self._stopping = False
        self.pressure = PressureLevel.NONE
        self.pressure_reason: str | None = None
        self._last_slow_dispatch = 0.0
        self.recent_outcomes: deque[bool] = deque(maxlen=RECENT_OUTCOMES)
        self.limits = Limits(config.max_concurrent_jobs, config.max_concurrent_sheets)
        self._base_env = dict(os.environ)

    # ----- plumbing -------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _publish(self, job: JobRow, sheets: Sequence[SheetRow] = (), kind: str = "sheet") -> None:
        self.events.publish(ChangeEvent(job.job_id, "job_status", job.status.value))
        for sheet in sheets:
            self.events.publish(
                ChangeEvent(job.job_id, kind, sheet.status.value, sheet_num=sheet.sheet_num)
            )

    async def _require_job(self, job_id: str) -> JobRow:
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"job_id: no job {job_id!r} (list_jobs shows the known jobs)")
        return job

    def _spec_for(self, job: JobRow) -> LoadedSpec:
        cached = self._specs.get(job.job_id)
        if cached is not None and cached[0] == job.spec_fingerprint:
            return cached[1]
        loaded = load_spec(data=job.spec)
        self._specs[job.job_id] = (job.spec_fingerprint, loaded)
        return loaded

    def _entries_for(self, job_id: str) -> list[RunningSheet]:
        return [e for (jid, _), e in self._running.items() if jid == job_id]

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
                deadline = self._deadline(job)
                if deadline is not None:
                    if deadline <= now:
                        await self._expire(job, sheets, now)
                        continue
                    deadlines.append(deadline)
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
        loaded = self._spec_for(job)
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
            instrument_config=resolved.instrument_config,
            validations=validations,
            log_path=log_path,
            log_max_bytes=self.config.log_max_bytes,
            kill_grace_seconds=self.config.kill_grace_seconds,
            base_env=self._base_env,
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
            attempt = await self.store.get_attempt(entry.job_id, entry.sheet_num, entry.attempt)
            if attempt is None:
                return
            attempt.pid, attempt.pgid, attempt.pid_start_time = ref.pid, ref.pgid, ref.start_time
            await self.store.write(attempts=[attempt])

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
            if result.outcome is Outcome.COMPLETED and reason != "shutdown":
                reason = None  # it finished before the stop reached it: keep the work
            if reason == "shutdown":
                outcome = Outcome.INTERRUPTED
                reset_for_retry(sheet, now)
                sheet.retries_used = 0
                sheet.last_error = "interrupted by conductor shutdown"
                sheet.error_category = ErrorCategory.INTERRUPTED
            elif reason in ("cancel", "deadline") or job.status is JobStatus.CANCELLED:
                outcome = Outcome.CANCELLED
                category = (
                    ErrorCategory.DEADLINE if reason == "deadline" else ErrorCategory.CANCELLED
                )
                mark_terminal(sheet, SheetStatus.CANCELLED, now, result.error, category)
                sheet.output_tail = result.stdout_tail[-4096:]
            else:
                loaded = self._spec_for(job)
                outcome, changed, hold = apply_attempt_result(
                    job,
                    sheets,
                    sheet,
                    result,
                    loaded.spec.retry,
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

    async def _terminal(self, job: JobRow) -> None:
        self._specs.pop(job.job_id, None)
        if self._on_terminal is not None:
            try:
                await self._on_terminal(job)
            except Exception:
                log.exception("terminal hook failed", job_id=job.job_id)

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

    # ----- control calls --------------------------------------------------------------------

    async def pause(self, job_id: str, immediate: bool) -> JobSummary:
        async with self._lock:
            job = await self._require_job(job_id)
            if job.status.is_terminal:
                raise InvalidTransitionError(
                    f"job {job_id!r} is {job.status.value}; only queued or running jobs can be "
                    "paused"
                )
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
                # A modify: no new sheets start; running ones end; then the new spec applies.
                self._pending_modify[job_id] = (changed_spec, retry_failed)
                set_job_status(job, JobStatus.PAUSED, utcnow())
                job.pause_reason = PauseReason.USER
                await self.store.write(job)
                self._publish(job)
                if not self._entries_for(job_id):
                    await self._apply_pending_modify(job_id)
                job = await self._require_job(job_id)
                return job.summary()
            summary = await self._resume_now(job, sheets, changed_spec, retry_failed)
        self.wake()
        return summary

    async def _apply_pending_modify(self, job_id: str) -> None:
        changed_spec, retry_failed = self._pending_modify.pop(job_id)
        job = await self._require_job(job_id)
        if job.status is not JobStatus.PAUSED:
            return
        sheets = await self.store.get_sheets(job_id)
        await self._resume_now(job, sheets, changed_spec, retry_failed)
        self.wake()

    async def _resume_now(
        self,
        job: JobRow,
        sheets: list[SheetRow],
        changed_spec: LoadedSpec | None,
        retry_failed: bool,
    ) -> JobSummary:
        now = utcnow()
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

    async def _wait_entries(self, entries: Sequence[RunningSheet]) -> None:
        with anyio.move_on_after(self.config.kill_grace_seconds + 2):
            for entry in entries:
                await entry.done.wait()

    # ----- recovery and shutdown ------------------------------------------------------------

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
                entry.stop_reason = "shutdown"
                entry.control.request_cancel()
        self.wake()
        await self._wait_entries(entries)

    async def recover(self) -> list[str]:
        """Reconcile what a dead conductor left behind; returns the job ids touched.

        In-flight attempts become `interrupted` (their process group is killed first, but only
        when pgid and leader start time both match the record), their sheets go back to
        `pending`, and active jobs become paused (`interrupted`), or continue with auto_resume.
        """
        async with self._lock:
            now = utcnow()
            touched: set[str] = set()
            for attempt in await self.store.get_in_flight_attempts():
                if attempt.pgid and attempt.pid and attempt.pid_start_time is not None:
                    ref = ProcessGroupRef(attempt.pid, attempt.pgid, attempt.pid_start_time)
                    killed = await kill_recorded_group(ref, self.config.kill_grace_seconds)
                    if killed:
                        log.warning("killed leftover process group", pgid=ref.pgid)
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
        self.wake()
        return sorted(touched)
