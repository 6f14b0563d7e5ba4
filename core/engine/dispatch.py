"""The dispatch loop: starts ready sheets from the in-memory ready index, runs each attempt
as a task, and hands its result to the writer. It sleeps until something changes or a timer
it holds comes due (a waiting sheet, a deadline, a hold's end, a lease renewal); with
nothing to do it never wakes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.engine import approvals, fallbacks, holding, ratelimits
from podium.core.engine.attempts import (
    IdleHook,
    needs_earlier,
    plan_attempt,
    record_process,
    settle_job,
)
from podium.core.engine.conditions import skip_command_reason, skip_when_reason
from podium.core.engine.context import HIGH_PRESSURE_GAP_SECONDS, EngineContext
from podium.core.engine.control import expire, fail_unloadable
from podium.core.engine.picking import pick_ready
from podium.core.engine.recording import record_attempt
from podium.core.engine.rules import (
    begin_attempt,
    failed_before_start,
    set_job_status,
    sheet_is_startable,
    skip_by_condition,
)
from podium.core.engine.sheet_context import template_context
from podium.core.engine.state import DISPATCHABLE, EngineState, JobState, RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.engine.writer import Writer
from podium.core.errors import PodiumError
from podium.core.models import JobStatus, utcnow
from podium.core.pressure import PressureLevel
from podium.core.runner.process import ProcessGroupRef
from podium.core.runner.runner import AttemptPlan, run_attempt
from podium.core.spec.templating import TemplateRenderError, render
from podium.core.store.base import StoreUnavailableError
from podium.core.store.rows import AttemptRow

log = structlog.get_logger("podium.dispatch")
# After a pass that failed (the store unreachable), how long until the next one.
PASS_RETRY_SECONDS = 1.0

PROCESS_RECORD_DELAY_SECONDS = 0.2

Action = Callable[[], Awaitable[None]]


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
        self._holding = holding.Holding()
        self.passes = 0  # for tests: how often the loop woke

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
                try:
                    wake_at = await self._pass()
                except Exception:
                    # The store unreachable for a moment, say: raised, it ended the
                    # conductor. What the pass did not do, the next one does.
                    log.exception("a dispatch pass failed; trying again shortly")
                    wake_at = utcnow() + timedelta(seconds=PASS_RETRY_SECONDS)
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
        self.passes += 1
        now = utcnow()
        for when, kind, job_id, num in self.state.timers:
            heapq.heappush(self._timers, (when, next(self._seq), kind, job_id, num))
        self.state.timers.clear()
        await self._fire_due(now)
        if any(not h.released and h.until <= now for h in self.state.holds.values()):
            await self.writer.run(ratelimits.release_due(now))
        moves = fallbacks.moves_off_holds(self.state, now, self.ctx.usable)
        if moves:
            await self._run_quietly(fallbacks.move_off_holds(moves))
        await self._renew_leases(now)
        if self._task_group is not None and self.ctx.may_dispatch():
            picks = pick_ready(self.ctx, self.state, now)
            if picks:
                # The start is committed in its own task: slots that free meanwhile are
                # filled by the next pass, whose start can share the same commit.
                for job_id, _ in picks:
                    self.state.take_slot(job_id)
                self.state.starting.update(picks)
                plain = [p for p in picks if not self._probed(p)]
                if plain:
                    self._task_group.start_soon(self._start, plain)
                for pick in picks:
                    if self._probed(pick):
                        self._task_group.start_soon(self._probe_then_start, pick)
        if self.state.holds or self.ctx.pressure in holding.PRESSURED or self._holding.armed:
            await self._holding.show(self.state, self.ctx, now, self._run_quietly)
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
            if gap > 0:
                # Only while the pause holds a start back: once it is over and this pass
                # found nothing to start, a wake-up "now" would spin the loop, never
                # yielding; new work wakes it anyway.
                times.append(utcnow() + timedelta(seconds=gap))
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
            # Read afresh: the pass may have spent a while on writes, and the renewal time is
            # what a dead conductor's attempts are recorded to end at.
            renewed_at = utcnow()
            until = renewed_at + timedelta(seconds=self.ctx.config.lease_seconds)
            try:
                lost = await self.writer.renew_leases(
                    self.ctx.config.conductor_id, until, renewed_at
                )
            except Exception:
                # The store is unreachable: the lease may lapse; try again next period.
                log.exception("could not renew leases")
                lost = []
            self._lease_due = now + timedelta(seconds=period)
            for job_id, num, attempt in lost:
                self.state.attempts.pop((job_id, num, attempt), None)
                entry = self.state.running.get((job_id, num))
                if entry is not None and entry.attempt == attempt:
                    # Not ours any more: its process must not run on beside the new owner's.
                    entry.stop_reason = entry.stop_reason or "reclaimed"
                    entry.control.request_cancel()

    # ----- starting and running ------------------------------------------------------------

    def _probed(self, pick: tuple[str, int]) -> bool:
        """Whether the sheet has a `skip_when_command` to run before it may start."""
        job_state = self.state.jobs.get(pick[0])
        spec = job_state.spec if job_state is not None else None
        return spec is not None and spec.sheet(pick[1]).skip_when_command is not None

    async def _probe_then_start(self, pick: tuple[str, int]) -> None:
        """Run the sheet's `skip_when_command` (its slot held), then start or skip it."""
        skip: str | None = None
        error: str | None = None
        try:
            skip, error = await self._probe(*pick)
        except Exception:  # a bug must not keep the slot: the sheet just starts
            log.exception("skip_when_command failed", job_id=pick[0], sheet=pick[1])
        await self._start([pick], skips={pick: skip} if skip else None, errors={pick: error})

    async def _probe(self, job_id: str, num: int) -> tuple[str | None, str | None]:
        job_state = self.state.jobs.get(job_id)
        if job_state is None or job_state.spec is None or not job_state.dispatchable:
            return None, None
        loaded = job_state.spec
        resolved = loaded.sheet(num)
        condition = resolved.skip_when_command
        assert condition is not None
        context = template_context(job_state, num)
        try:
            if skip_when_reason(resolved, context, job_state.sheets, loaded.sheet_numbers):
                return None, None  # the start op skips it without running the command
            command = render(condition.command, context)
        except TemplateRenderError as exc:
            return None, None if resolved.skip_when else f"skip_when_command: {exc}"
        workspace = job_state.job.workspace
        env = {
            **self.ctx.base_env,
            **resolved.instrument_config.env,
            "PODIUM_JOB_ID": job_id,
            "PODIUM_SHEET_NUM": str(num),
            "PODIUM_WORKSPACE": workspace,
        }
        reason, did = await skip_command_reason(
            condition,
            command,
            workspace=Path(workspace),
            env=env,
            kill_grace_seconds=self.ctx.config.kill_grace_seconds,
        )
        log.info("skip_when_command", job_id=job_id, sheet=num, result=did)
        return reason, None

    async def _start(
        self,
        picks: list[tuple[str, int]],
        skips: Mapping[tuple[str, int], str] | None = None,
        errors: Mapping[tuple[str, int], str | None] | None = None,
    ) -> None:
        """Commit the start of `picks` (slots already taken for them), then launch them;
        a sheet whose condition says so is skipped instead (`skips`: decided before, by its
        command). `errors`: why a pick's attempt must fail at once."""
        ctx = self.ctx

        gated: list[tuple[str, int]] = []

        def apply(tx: Tx) -> list[tuple[str, int, int]]:
            started: list[tuple[str, int, int]] = []
            failing: dict[tuple[str, int, int], str] = {}
            gated.clear()
            if self._stopping:
                return started
            lease = timedelta(seconds=ctx.config.lease_seconds)
            mine = set(picks)
            room: dict[str, int] = {}
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
                error = (errors or {}).get((job_id, num))
                skip = (skips or {}).get((job_id, num))
                if skip is None and error is None:
                    skip, error = _skip_when(tx, job_state, num)
                if skip is not None:
                    skip_by_condition(tx.edit_sheet(job_id, num), tx.now, skip)
                    _settle(tx, job_id)
                    continue
                if approvals.awaiting(sheet) or approvals.is_gate(ctx, sheet.instrument):
                    # No process: the gate opens (or its wait ran out) in this same commit.
                    # An open gate whose profile went since (a reload) still ends as a gate.
                    approvals.open_or_expire(ctx, tx, job_state, num)
                    gated.append((job_id, num))
                    continue
                if tx.job(job_id).status not in DISPATCHABLE:
                    continue  # paused or ended by an earlier op of the same group
                if job_id not in room:
                    room[job_id] = self._room(job_state, mine)
                if room[job_id] <= 0:
                    # Another conductor started sheets of the job since the pick (this op
                    # re-runs on fresh rows after a refused write): its limit holds.
                    continue
                if ratelimits.is_held(tx.hold(job_state.hold_key(num)), tx.now):
                    # A slot frees when a process ends, before its result is committed: the
                    # rate limit that result set since the pick holds this sheet back (or,
                    # with fallbacks, moves it on) instead of sending it into the limit.
                    continue
                attempt = sheet.attempts + 1
                if not ratelimits.claim_first(tx, job_state.hold_key(num), job_id, num, attempt):
                    continue  # another conductor's sheet goes first behind the same hold
                room[job_id] -= 1
                if error is not None:
                    failing[(job_id, num, attempt)] = error
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
                        instrument=sheet.instrument,
                    )
                )
                if tx.job(job_id).status is JobStatus.QUEUED:
                    set_job_status(tx.edit_job(job_id), JobStatus.RUNNING, tx.now)
                started.append((job_id, num, attempt))
                tx.starts_sheets(job_id)
            if started:
                tx.after(lambda: self._launch(started, failing))
            return started

        started: list[tuple[str, int, int]] = []
        try:
            started = await self.writer.run(Op(apply, name="start sheets"))
        except StoreUnavailableError as exc:
            log.warning("could not start sheets; trying again shortly", error=str(exc))
            await anyio.sleep(PASS_RETRY_SECONDS)
        except PodiumError as exc:
            log.warning("could not start sheets", error=str(exc))
        except Exception:
            # The store failed the write (unreachable for a moment, say): raised, it ended
            # the conductor. The sheets go back to be picked again, after a pause, so a
            # store that stays down is not asked in a busy loop.
            log.exception("could not start sheets; trying again shortly")
            await anyio.sleep(PASS_RETRY_SECONDS)
        finally:
            self.state.starting.difference_update(picks)
            for job_id, _ in picks:
                self.state.free_slot(job_id)
            begun = {(j, n) for j, n, _ in started} | set(gated)
            for job_id, num in picks:
                if (job_id, num) not in begun and job_id in self.state.jobs:
                    self.state.jobs[job_id].push_back(num)
            self.wake()

    def _room(self, job_state: JobState, mine: set[tuple[str, int]]) -> int:
        """How many more sheets of the job may start now: its `max_parallel_sheets` less
        the sheets running on any conductor (the rows) and other starts of this one that are
        not committed yet."""
        job_id = job_state.job_id
        running = self.state.running
        pending = sum(
            1
            for key in self.state.starting
            if key[0] == job_id and key not in mine and key[1] not in job_state.running
        )
        # A sheet of this conductor whose process has ended frees its place already (its
        # result may share this commit), as the pick counted it.
        ended = sum(
            1
            for num in job_state.running
            if (entry := running.get((job_id, num))) is not None and entry.ended
        )
        return job_state.max_parallel - len(job_state.running) + ended - pending

    def _log_path(self, job_id: str, sheet_num: int, attempt: int) -> str:
        logs = self._logs_dir
        if logs is None:
            logs = self._logs_dir = str(self.ctx.config.logs_dir)
        return f"{logs}/{job_id}/sheet-{sheet_num}-attempt-{attempt}.log"

    def _launch(
        self, started: list[tuple[str, int, int]], failing: Mapping[tuple[str, int, int], str]
    ) -> None:
        """Runs right after the start is committed, before any other change: a control call
        made from now on finds these attempts in the running table."""
        assert self._task_group is not None
        for job_id, num, attempt in started:
            entry = RunningSheet(job_id, num, attempt)
            self.state.add_running(entry)
            self._task_group.start_soon(self._run_sheet, entry, failing.get((job_id, num, attempt)))
        self.state.started_running()

    async def _run_sheet(self, entry: RunningSheet, error: str | None = None) -> None:
        started = utcnow()
        ctx = self.ctx
        try:
            if error is not None:
                plan: AttemptPlan | str = error
            else:
                previous = await self._previous_attempts(entry)
                plan = plan_attempt(ctx, self.state, entry, previous)
            if isinstance(plan, str):
                result = failed_before_start(plan, started, "")
            else:
                result = await run_attempt(
                    plan,
                    entry.control,
                    on_spawn=self._recorder(entry),
                    clock=ctx.clock,
                    zone=ctx.zone,
                )
        except Exception as exc:  # a bug must fail the sheet, never wedge the job
            log.exception("attempt crashed", job_id=entry.job_id, sheet=entry.sheet_num)
            result = failed_before_start(f"internal error: {exc!r}", started, "")
        self.state.end_running(entry)
        self.wake()
        try:
            await record_attempt(self.writer, self.ctx, self.state, entry, result, self._on_idle)
        finally:
            self.state.drop_running(entry)
            entry.done.set()
            self.wake()

    async def _previous_attempts(self, entry: RunningSheet) -> list[AttemptRow]:
        """The attempts a retry carries its session and feedback over from, latest first, as
        stored (so they survive a restart); a first attempt reads nothing."""
        previous: list[AttemptRow] = []
        store = self.writer.store
        for number in range(entry.attempt - 1, max(0, entry.attempt - 3), -1):
            row = await store.get_attempt(entry.job_id, entry.sheet_num, number)
            if row is None:
                break
            previous.append(row)
            if not needs_earlier(row):
                break
        return previous

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


def _skip_when(tx: Tx, job_state: JobState, num: int) -> tuple[str | None, str | None]:
    """(skip reason, error) of the sheet's `skip_when`, on the rows this op reads."""
    loaded = job_state.spec
    if loaded is None or loaded.sheet(num).skip_when is None:
        return None, None
    context = template_context(job_state, num)
    try:
        reason = skip_when_reason(
            loaded.sheet(num), context, tx.sheets(job_state.job_id), loaded.sheet_numbers
        )
    except TemplateRenderError as exc:
        return None, f"skip_when: {exc}"
    return reason, None


def _settle(tx: Tx, job_id: str) -> None:
    """A sheet ended without an attempt: the job runs, or ends if that was its last."""
    if tx.job(job_id).status is JobStatus.QUEUED:
        set_job_status(tx.edit_job(job_id), JobStatus.RUNNING, tx.now)
    settle_job(tx, job_id)
