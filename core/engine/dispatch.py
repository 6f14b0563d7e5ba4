"""The dispatch loop: starts ready sheets from the in-memory ready index, runs each attempt
as a task, and hands its result to the writer. It sleeps until something changes or a timer
it holds comes due (a waiting sheet, a deadline, a hold's end, a lease renewal); with
nothing to do it never wakes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.engine import ratelimits
from podium.core.engine.context import HIGH_PRESSURE_GAP_SECONDS, EngineContext
from podium.core.engine.rules import (
    begin_attempt,
    failed_before_start,
    final_job_status,
    finish_attempt_row,
    judge_attempt,
    mark_terminal,
    reset_for_retry,
    set_job_status,
    skipped_after_failure,
    with_category,
)
from podium.core.engine.scheduler import Candidate, free_slots, pick_next
from podium.core.engine.state import EngineState, JobState, RunningSheet
from podium.core.engine.writer import Op, Tx, Writer, sheet_is_startable
from podium.core.errors import NotFoundError, PodiumError
from podium.core.instruments.profile import applicable_config
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    utcnow,
)
from podium.core.pressure import PressureLevel
from podium.core.runner.process import ProcessGroupRef
from podium.core.runner.runner import AttemptPlan, AttemptResult, run_attempt
from podium.core.spec.models import RetryPolicy
from podium.core.spec.templating import (
    TemplateContext,
    TemplateRenderError,
    render_sheet_prompt,
    render_validation,
)
from podium.core.store.rows import AttemptRow

log = structlog.get_logger("podium.dispatch")

PROCESS_RECORD_DELAY_SECONDS = 0.2

# Rules the engine wires in from other parts (dispatch imports neither control nor recovery).
IdleHook = Callable[[Tx, str], None]  # a job's last running sheet ended within this op
Action = Callable[[], Awaitable[None]]


class _AncestorOutputs(Mapping[int, str]):
    """`outputs[N]` for a sheet: the stdout tails of its ancestors, looked up only for the
    keys a template actually reads (a sheet at the end of a long chain has many)."""

    def __init__(self, job_state: JobState, sheet_num: int) -> None:
        self._state = job_state
        self._num = sheet_num
        self._ancestors: frozenset[int] | None = None

    def _known(self) -> frozenset[int]:
        if self._ancestors is None:
            self._ancestors = frozenset(self._state.ancestors(self._num))
        return self._ancestors

    def __getitem__(self, key: int) -> str:
        if key not in self._known():
            raise KeyError(key)
        return self._state.sheets[key].output_tail or ""

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._known()))

    def __len__(self) -> int:
        return len(self._known())


class Dispatcher:
    def __init__(
        self,
        ctx: EngineContext,
        writer: Writer,
        state: EngineState,
        on_idle: IdleHook,
    ) -> None:
        self.ctx = ctx
        self.writer = writer
        self.state = state
        self._on_idle = on_idle
        # An asyncio event: set from timer callbacks and other tasks, waited on by the loop.
        self._wake = asyncio.Event()
        self._stopping = False
        self._task_group: TaskGroup | None = None
        self._timers: list[tuple[datetime, int, str, str, int]] = []
        self._actions: dict[int, Action] = {}
        self._seq = itertools.count()
        self._lease_due: datetime | None = None
        self._logs_dir: str | None = None

    # ----- control -------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """No new attempt starts from now on; running ones are left to their owners."""
        self._stopping = True
        self.wake()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def at(self, when: datetime, action: Action) -> None:
        """Run `action` (in the loop) once `when` has come."""
        seq = next(self._seq)
        self._actions[seq] = action
        heapq.heappush(self._timers, (when, seq, "action", "", 0))
        self.wake()

    # ----- the loop ------------------------------------------------------------------------

    async def run(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        loop = asyncio.get_running_loop()
        alarm: asyncio.TimerHandle | None = None
        alarm_at: datetime | None = None
        try:
            while not self._stopping:
                self._wake.clear()
                wake_at = await self._pass()
                if self._stopping:
                    break
                if wake_at != alarm_at:
                    # One timer for the next moment due, moved only when that moment moves
                    # (a timeout per loop turn would cost a cancel scope every pass).
                    if alarm is not None:
                        alarm.cancel()
                    alarm, alarm_at = None, wake_at
                    if wake_at is not None:
                        delay = max(0.0, (wake_at - utcnow()).total_seconds())
                        alarm = loop.call_later(delay, self._alarm)
                if wake_at is not None and wake_at <= utcnow():
                    continue
                await self._wake.wait()
        finally:
            if alarm is not None:
                alarm.cancel()

    def _alarm(self) -> None:
        self._wake.set()

    async def _pass(self) -> datetime | None:
        now = utcnow()
        for when, kind, job_id, num in self.state.timers:
            heapq.heappush(self._timers, (when, next(self._seq), kind, job_id, num))
        self.state.timers.clear()
        await self._fire_due(now)
        if any(not h.released and h.until <= now for h in self.state.holds.values()):
            await self.writer.run(ratelimits.release_due(now))
        await self._renew_leases(now)
        if self._task_group is not None and self.ctx.may_dispatch():
            picks = self._pick(now)
            if picks:
                # The start is committed in its own task: slots that free meanwhile are
                # filled by the next pass, whose start can share the same commit.
                for job_id, _ in picks:
                    self.state.take_slot(job_id)
                self._task_group.start_soon(self._start, picks)
        return self._next_wake()

    def _next_wake(self) -> datetime | None:
        times = []
        if self._timers:
            times.append(self._timers[0][0])
        release = ratelimits.next_release(self.state)
        if release is not None:
            times.append(release)
        if self._lease_due is not None:
            times.append(self._lease_due)
        if self.ctx.pressure is PressureLevel.HIGH:
            gap = HIGH_PRESSURE_GAP_SECONDS - (time.monotonic() - self.ctx.last_slow_dispatch)
            times.append(utcnow() + timedelta(seconds=max(0.0, gap)))
        return min(times) if times else None

    async def _fire_due(self, now: datetime) -> None:
        while self._timers and self._timers[0][0] <= now:
            when, seq, kind, job_id, num = heapq.heappop(self._timers)
            if kind == "action":
                action = self._actions.pop(seq)
                try:
                    await action()
                except Exception:
                    log.exception("timed action failed")
                continue
            job_state = self.state.jobs.get(job_id)
            if job_state is None:
                continue
            if kind == "wait":
                job_state.wait_over(num, now)
            elif kind == "deadline":
                job_state.clear_deadline_timer(when)
                deadline = job_state.deadline
                if job_state.dispatchable and deadline is not None and deadline <= now:
                    await self._run_quietly(expire(self.state, job_id))
            elif (
                kind == "spec"
                and job_state.spec_error is not None
                and job_state.job.status
                in (
                    JobStatus.QUEUED,
                    JobStatus.RUNNING,
                )
            ):
                await self._run_quietly(fail_unloadable(self.state, job_id))

    async def _run_quietly(self, op: Op[None]) -> None:
        try:
            await self.writer.run(op)
        except PodiumError as exc:
            log.warning("timed change not made", op=op.name, error=str(exc))

    async def _renew_leases(self, now: datetime) -> None:
        if not self.state.attempts:
            self._lease_due = None
            return
        period = self.ctx.config.lease_seconds / 3
        if self._lease_due is None:
            self._lease_due = now + timedelta(seconds=period)
            return
        if self._lease_due <= now:
            until = now + timedelta(seconds=self.ctx.config.lease_seconds)
            await self.writer.renew_leases(self.ctx.config.conductor_id, until)
            self._lease_due = now + timedelta(seconds=period)

    # ----- picking -------------------------------------------------------------------------

    def _pick(self, now: datetime) -> list[tuple[str, int]]:
        limits = self.ctx.limits
        # A slot is a live process: an attempt whose processes ended frees its slot while
        # its result is still being committed, so the next sheet's start shares that commit.
        state = self.state
        free = free_slots(limits, state.live)
        if free <= 0:
            return []
        held = state.held_keys(now)
        released = state.released_keys()
        busy = ratelimits.busy_released(state, released)
        candidates: dict[str, Candidate] = {}
        active_jobs = len(state.live_by_job)
        pool: Iterable[JobState] = state.jobs.values()
        if active_jobs >= limits.max_concurrent_jobs:
            # No other job may start: only the jobs running now can take a slot, so a pass
            # looks at those few rather than every job in hand.
            pool = [state.jobs[j] for j in state.live_by_job if j in state.jobs]
        for job_state in pool:
            if not job_state.dispatchable:
                continue
            keys = job_state.ready_keys()
            if not keys:
                continue
            startable = _startable(keys, held, released, busy)
            if startable:
                job = job_state.job
                candidates[job.job_id] = Candidate(
                    job.job_id,
                    state.live_by_job.get(job.job_id, 0),
                    job_state.max_parallel,
                    job.priority,
                    job.submitted_at,
                    startable,
                )
        picks: list[tuple[str, int]] = []
        while free > 0 and candidates:
            chosen = pick_next(candidates.values(), limits, active_jobs)
            if chosen is None:
                break
            job_state = self.state.jobs[chosen.job_id]
            key = _best_key(job_state, held, released, busy)
            num = job_state.pop(key) if key is not None else None
            if num is None:
                del candidates[chosen.job_id]
                continue
            if key in released:
                busy.add(key)
                for other in candidates.values():
                    keys = self.state.jobs[other.job_id].ready_keys()
                    other.startable = _startable(keys, held, released, busy)
            if chosen.running == 0:
                active_jobs += 1
            chosen.running += 1
            chosen.startable = _startable(job_state.ready_keys(), held, released, busy)
            picks.append((chosen.job_id, num))
            free -= 1
            if self.ctx.pressure is PressureLevel.HIGH:
                # High pressure: keep going, but one sheet at a time with a pause between.
                self.ctx.last_slow_dispatch = time.monotonic()
                break
        return picks

    # ----- starting and running ------------------------------------------------------------

    async def _start(self, picks: list[tuple[str, int]]) -> None:
        """Commit the start of `picks` (slots already taken for them), then launch them."""
        ctx = self.ctx

        def apply(tx: Tx) -> list[tuple[str, int, int]]:
            started: list[tuple[str, int, int]] = []
            if self._stopping:
                return started
            lease = timedelta(seconds=ctx.config.lease_seconds)
            for job_id, num in picks:
                job_state = self.state.jobs.get(job_id)
                sheet = tx.sheet(job_id, num) if job_state is not None else None
                if (
                    job_state is None
                    or sheet is None
                    or not job_state.dispatchable
                    or not sheet_is_startable(sheet, tx.now)
                ):
                    continue
                attempt = sheet.attempts + 1
                log_path = self._log_path(job_id, num, attempt)
                begin_attempt(tx.edit_sheet(job_id, num), attempt, tx.now, log_path)
                tx.add_attempt(
                    AttemptRow(
                        job_id=job_id,
                        sheet_num=num,
                        attempt=attempt,
                        started_at=tx.now,
                        log_path=log_path,
                        conductor_id=ctx.config.conductor_id,
                        lease_expires_at=tx.now + lease,
                    )
                )
                if tx.job(job_id).status is JobStatus.QUEUED:
                    set_job_status(tx.edit_job(job_id), JobStatus.RUNNING, tx.now)
                started.append((job_id, num, attempt))
            if started:
                tx.after(lambda: self._launch(started))
            return started

        started: list[tuple[str, int, int]] = []
        try:
            started = await self.writer.run(Op(apply, name="start sheets"))
        except PodiumError as exc:
            log.warning("could not start sheets", error=str(exc))
        finally:
            for job_id, _ in picks:
                self.state.free_slot(job_id)
            begun = {(j, n) for j, n, _ in started}
            for job_id, num in picks:
                if (job_id, num) not in begun and job_id in self.state.jobs:
                    self.state.jobs[job_id].push_back(num)
            self.wake()

    def _log_path(self, job_id: str, sheet_num: int, attempt: int) -> str:
        logs = self._logs_dir
        if logs is None:
            logs = self._logs_dir = str(self.ctx.config.logs_dir)
        return f"{logs}/{job_id}/sheet-{sheet_num}-attempt-{attempt}.log"

    def _launch(self, started: list[tuple[str, int, int]]) -> None:
        """Runs right after the start is committed, before any other change: a control call
        made from now on finds these attempts in the running table."""
        assert self._task_group is not None
        for job_id, num, attempt in started:
            entry = RunningSheet(job_id, num, attempt)
            self.state.add_running(entry)
            self._task_group.start_soon(self._run_sheet, entry)
        self.state.started_running()

    async def _run_sheet(self, entry: RunningSheet) -> None:
        started = utcnow()
        try:
            plan = self._plan(entry)
            if isinstance(plan, str):
                result = failed_before_start(plan, started, "")
            else:
                result = await run_attempt(plan, entry.control, on_spawn=self._recorder(entry))
        except Exception as exc:  # a bug must fail the sheet, never wedge the job
            log.exception("attempt crashed", job_id=entry.job_id, sheet=entry.sheet_num)
            result = failed_before_start(f"internal error: {exc!r}", started, "")
        self.state.end_running(entry)
        self.wake()
        try:
            with anyio.CancelScope(shield=True):
                await self.writer.run(self._finish(entry, result))
        except (NotFoundError, PodiumError) as exc:
            log.warning(
                "attempt result not recorded",
                job_id=entry.job_id,
                sheet=entry.sheet_num,
                error=str(exc),
            )
        finally:
            self.state.drop_running(entry)
            entry.done.set()
            self.wake()

    def _plan(self, entry: RunningSheet) -> AttemptPlan | str:
        job_state = self.state.jobs.get(entry.job_id)
        if job_state is None:
            return "the job is no longer known to this conductor"
        if job_state.spec is None:
            return f"spec: the stored spec no longer loads ({job_state.spec_error})"
        loaded = job_state.spec
        resolved = loaded.sheet(entry.sheet_num)
        job = job_state.job
        sheet = job_state.sheets[entry.sheet_num]
        ctx = TemplateContext(
            workspace=job.workspace,
            job_id=job.job_id,
            sheet_num=entry.sheet_num,
            total_sheets=len(job_state.sheets),
            sheet_name=resolved.name,
            start_item=resolved.start_item,
            end_item=resolved.end_item,
            variables=loaded.spec.variables,
            outputs=_AncestorOutputs(job_state, entry.sheet_num),
        )
        info = self.ctx.catalog.get(resolved.instrument)
        if info is None:
            return f"unknown instrument {resolved.instrument!r}"
        try:
            prompt = render_sheet_prompt(resolved, ctx)
            validations = [render_validation(v, ctx) for v in resolved.validations]
        except TemplateRenderError as exc:
            return f"template: {exc}"
        config = self.ctx.config
        return AttemptPlan(
            job_id=job.job_id,
            sheet_num=entry.sheet_num,
            attempt=entry.attempt,
            prompt=prompt,
            workspace=Path(job.workspace),
            profile=info.profile,
            instrument_config=applicable_config(resolved.instrument_config, info.profile),
            validations=validations,
            log_path=Path(sheet.log_path or ""),
            log_max_bytes=config.log_max_bytes,
            kill_grace_seconds=config.kill_grace_seconds,
            base_env=self.ctx.base_env,
            home=str(config.home),
        )

    def _recorder(self, entry: RunningSheet) -> Callable[[ProcessGroupRef], Awaitable[None]]:
        async def record(ref: ProcessGroupRef) -> None:
            def submit() -> None:
                if not entry.ended:
                    # Not awaited: the process runs on while the record waits for a commit.
                    self.writer.submit_nowait(record_process(entry, ref))

            # Only an attempt still running a moment after its spawn gets its group recorded:
            # one that crashes with its conductor before that is found by the mark every one
            # of its processes carries in its environment (recovery looks for both).
            asyncio.get_running_loop().call_later(PROCESS_RECORD_DELAY_SECONDS, submit)

        return record

    def _finish(self, entry: RunningSheet, result: AttemptResult) -> Op[None]:
        ctx = self.ctx
        state = self.state

        def apply(tx: Tx) -> None:
            job_id, num = entry.job_id, entry.sheet_num
            job_state = tx.state(job_id)
            stored = tx.attempt((job_id, num, entry.attempt))
            if stored is None:
                raise PodiumError(
                    f"attempt {entry.attempt} of sheet {num} of job {job_id} is no longer "
                    "this conductor's (its lease was reclaimed)"
                )
            sheet = tx.edit_sheet(job_id, num)
            attempt = tx.edit_attempt(stored)
            now = tx.now
            job = tx.job(job_id)
            reason = entry.stop_reason
            if result.outcome is Outcome.COMPLETED:
                # It finished (validations passed) before any stop reached it: the work is
                # kept, whatever is happening to the job now. Nothing completed is re-run.
                reason = None
            counted: bool | None = None
            if reason == "shutdown":
                outcome = Outcome.INTERRUPTED
                reset_for_retry(sheet, now, fresh_budget=False)
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
                policy = (
                    job_state.spec.spec.retry
                    if job_state.spec is not None
                    # The job is failing for its spec: record this attempt, retry nothing.
                    else RetryPolicy(max_retries=0)
                )
                verdict = judge_attempt(sheet, result, policy, ctx.retry_limits, now)
                outcome = verdict.outcome
                key = job_state.hold_key(num)
                if verdict.hold_seconds is not None:
                    ratelimits.hold(tx, key, verdict.hold_seconds, result.error)
                if outcome is Outcome.COMPLETED:
                    ratelimits.succeeded(tx, key)
                if verdict.failed:
                    stop_all = job_state.spec is None or job_state.spec.spec.on_failure == "stop"
                    rows = (
                        tx.sheets(job_id)
                        if stop_all
                        else {n: tx.sheet(job_id, n) for n in job_state.descendants(num)}
                    )
                    dependents = job_state.descendants(num)
                    for other, why in skipped_after_failure(rows, dependents, num, stop_all):
                        mark_terminal(
                            tx.edit_sheet(job_id, other),
                            SheetStatus.SKIPPED,
                            now,
                            why,
                            ErrorCategory.DEPENDENCY_FAILED,
                        )
                if outcome is not Outcome.RATE_LIMITED:
                    counted = outcome is Outcome.COMPLETED
            recorded = result
            if outcome is Outcome.INTERRUPTED:
                recorded = with_category(result, ErrorCategory.INTERRUPTED)
            finish_attempt_row(attempt, recorded, outcome)
            if not job.status.is_terminal and tx.open_sheets(job_id) == 0:
                final = final_job_status(tx.sheets(job_id).values())
                if final is not None:
                    edited = tx.edit_job(job_id)
                    set_job_status(edited, final[0], now)
                    edited.error = final[1]
            others = [e for e in state.entries_for(job_id) if e is not entry]
            if tx.job(job_id).pending_resume is not None and not others and reason != "shutdown":
                self._on_idle(tx, job_id)

            def done() -> None:
                # Leave the running table in the same step that recorded the result, so no
                # control call ever sees a finished attempt as still running.
                state.drop_running(entry)
                if counted is not None:
                    ctx.recent_outcomes.append(counted)

            tx.after(done)

        return Op(apply, jobs=[entry.job_id], name="record attempt")


def _startable(keys: Mapping[str, int], held: set[str], released: set[str], busy: set[str]) -> int:
    total = 0
    for key, count in keys.items():
        if key in held:
            continue
        if key in released:
            total += 0 if key in busy else 1
        else:
            total += count
    return total


def _best_key(
    job_state: JobState, held: set[str], released: set[str], busy: set[str]
) -> str | None:
    best: tuple[tuple[int, int, int], str] | None = None
    for key in job_state.ready_keys():
        if key in held or (key in released and key in busy):
            continue
        top = job_state.peek(key)
        if top is not None and (best is None or top < best[0]):
            best = (top, key)
    return None if best is None else best[1]


def record_process(entry: RunningSheet, ref: ProcessGroupRef) -> Op[None]:
    """Write which process group runs an attempt (recovery kills it only if it still is)."""

    def apply(tx: Tx) -> None:
        stored = tx.attempt((entry.job_id, entry.sheet_num, entry.attempt))
        if stored is None or stored.outcome is not None:
            return  # finished (or reclaimed) before this record got its turn
        row = tx.edit_attempt(stored, lock_job=False)
        row.pid, row.pgid, row.pid_start_time = ref.pid, ref.pgid, ref.start_time

    return Op(apply, name="record process")


def expire(state: EngineState, job_id: str) -> Op[None]:
    """The job ran past `deadline_seconds`: stop its sheets and fail it."""

    def apply(tx: Tx) -> None:
        job_state = tx.state(job_id)
        seconds = job_state.spec.spec.deadline_seconds if job_state.spec else None
        entries = state.entries_for(job_id)
        running = {e.sheet_num for e in entries}
        for num, sheet in tx.sheets(job_id).items():
            if not sheet.status.is_terminal and num not in running:
                mark_terminal(
                    tx.edit_sheet(job_id, num),
                    SheetStatus.CANCELLED,
                    tx.now,
                    "deadline reached",
                    ErrorCategory.DEADLINE,
                )
        job = tx.edit_job(job_id)
        set_job_status(job, JobStatus.FAILED, tx.now)
        limit = f"{seconds:g}" if seconds is not None else "?"
        job.error = f"deadline: the job ran longer than deadline_seconds={limit}"
        job.pending_resume = None

        def stop_running() -> None:
            for entry in entries:
                entry.stop_reason = "deadline"
                entry.control.request_cancel()

        tx.after(stop_running)

    return Op(apply, jobs=[job_id], name="deadline")


def fail_unloadable(state: EngineState, job_id: str) -> Op[None]:
    """A stored spec that no longer loads fails its own job with the reason; the loop and
    every other job go on. Running sheets finish and are recorded as usual."""

    def apply(tx: Tx) -> None:
        job_state = tx.state(job_id)
        reason = job_state.spec_error or "unknown error"
        log.error("stored spec no longer loads", job_id=job_id, errors=reason)
        running = {e.sheet_num for e in state.entries_for(job_id)}
        for num, sheet in tx.sheets(job_id).items():
            if not sheet.status.is_terminal and num not in running:
                mark_terminal(
                    tx.edit_sheet(job_id, num),
                    SheetStatus.FAILED,
                    tx.now,
                    "the job's stored spec no longer loads",
                    ErrorCategory.SPEC_INVALID,
                )
        job = tx.edit_job(job_id)
        set_job_status(job, JobStatus.FAILED, tx.now)
        job.error = (
            f"spec: the stored spec no longer loads ({reason}); resume with a corrected spec "
            "(resume with spec, spec_yaml or path)"
        )

    return Op(apply, jobs=[job_id], name="fail unloadable spec")
