"""The engine: the store's one writer, the dispatcher, control calls and recovery, composed.
This is the only part of the engine the conductor holds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from pathlib import Path

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from podium.core.config import PodiumConfig
from podium.core.engine import approvals, ratelimits
from podium.core.engine.attempts import record_result
from podium.core.engine.context import EngineContext, TerminalHook
from podium.core.engine.control import Control, resume_now
from podium.core.engine.dispatch import Dispatcher
from podium.core.engine.fallbacks import first_usable
from podium.core.engine.recovery import Recovery
from podium.core.engine.scheduler import Limits
from podium.core.engine.state import EngineState, RunningSheet
from podium.core.engine.sync import Sync
from podium.core.engine.tx import Op, Tx
from podium.core.engine.writer import Writer
from podium.core.errors import InvalidTransitionError
from podium.core.events import EventBus
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.models import Decision, FollowUp, JobStatus, JobSummary, utcnow
from podium.core.pressure import PressureLevel
from podium.core.runner.runner import AttemptResult
from podium.core.spec.loader import LoadedSpec
from podium.core.store.base import Store
from podium.core.store.rows import JobRow, TaskRow

log = structlog.get_logger("podium.engine")
SHUTDOWN_HOOK_SECONDS = 10.0


class Engine:
    def __init__(
        self,
        config: PodiumConfig,
        store: Store,
        catalog: InstrumentCatalog,
        events: EventBus,
        on_terminal: TerminalHook | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        zone: tzinfo | None = None,
    ) -> None:
        self.ctx = EngineContext(config, catalog, on_terminal, clock=clock, zone=zone)
        self.store = store
        self.events = events
        self.state = EngineState()
        self.state.set_hold_keys(catalog.hold_keys())
        self.writer = Writer(store, self.state, events)
        self.dispatcher = Dispatcher(self.ctx, self.writer, self.state, self._apply_pending_modify)
        self.control = Control(self.writer, self.state, config)
        self.recovery = Recovery(self.ctx, self.writer, self.state)
        # Only on a store that several conductors share (PostgreSQL).
        self.sync = Sync(self.ctx, self.writer, self.state, self.recovery) if store.shared else None
        self.writer.on_commit = self.dispatcher.wake
        self.writer.on_finished = self._finished
        self._task_group: TaskGroup | None = None
        self._dispatching = False
        # Terminal hooks (snapshots) under way, by job: views wait for them to settle.
        self._hooks: dict[str, anyio.Event] = {}

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, task_group: TaskGroup, *, recover: bool, dispatch: bool) -> list[str]:
        """Serve writes in `task_group`, reconcile the store (unless `recover` is false),
        take the active jobs in hand and, with `dispatch`, start running them."""
        self._task_group = task_group
        self.recovery.background = task_group
        task_group.start_soon(self.writer.serve)
        while not self.writer.serving:
            await anyio.lowlevel.checkpoint()
        touched: list[str] = []
        others_alive = False
        if self.sync is not None and dispatch:
            # Recorded before recovery: a conductor starting now sees this one as alive.
            others_alive = await self.sync.register()
        if recover:
            touched, foreign_expiry = await self.recovery.recover(others_alive)
            if foreign_expiry is not None:
                self._recheck_leases_at(foreign_expiry)
        else:
            self.state.holds = {h.hold_key: h for h in await self.store.holds()}
            for job in await self.store.active_jobs():
                await self.writer.load(job.job_id)
        if dispatch:
            self._dispatching = True
            task_group.start_soon(self.dispatcher.run, task_group)
        if self.sync is not None and dispatch:
            task_group.start_soon(self.sync.run)
        return touched

    def _recheck_leases_at(self, when: datetime) -> None:
        async def recheck() -> None:
            later = await self.recovery.reclaim_expired()
            if later is not None:
                self._recheck_leases_at(later)

        self.dispatcher.at(when, recheck)

    async def shutdown(self) -> None:
        """Stop dispatching, end running sheets, and leave their jobs paused (`shutdown`)."""
        self.dispatcher.stop()
        if self.writer.serving:
            if self._dispatching:
                # Only a conductor that ran sheets has any to stop (a control-only engine
                # must not pause jobs it never ran). Jobs other running conductors share
                # are not paused: they carry on with them.
                others_alive = False
                if self.sync is not None:
                    try:
                        others_alive = await self.sync.others_alive()
                    except Exception:
                        log.exception("could not tell whether other conductors run")
                await self.recovery.shutdown(others_alive)
            # Snapshots of jobs that just ended still record their path through the writer.
            with anyio.move_on_after(SHUTDOWN_HOOK_SECONDS):
                await self.hooks_settled()
        if self.sync is not None:
            await self.sync.leave()

    def _finished(self, job: JobRow) -> None:
        hook = self.ctx.on_terminal
        if hook is None or self._task_group is None:
            return

        done = anyio.Event()
        previous = self._hooks.get(job.job_id)

        async def run() -> None:
            try:
                if previous is not None:
                    await previous.wait()
                await hook(job)
            except Exception:
                log.exception("terminal hook failed", job_id=job.job_id)
            finally:
                done.set()
                if self._hooks.get(job.job_id) is done:
                    del self._hooks[job.job_id]

        # Registered before anyone hears the job ended, so a view can wait for it.
        self._hooks[job.job_id] = done
        self._task_group.start_soon(run)

    async def hooks_settled(self, job_id: str | None = None) -> None:
        """Return once the terminal hooks under way (of `job_id`, or of every job) are done."""
        while True:
            pending = [e for j, e in self._hooks.items() if job_id is None or j == job_id]
            if not pending:
                return
            for event in pending:
                await event.wait()

    def _apply_pending_modify(self, tx: Tx, job_id: str) -> None:
        job = tx.job(job_id)
        if job.pending_resume is None:
            return
        if job.status is JobStatus.PAUSED:
            resume_now(tx, self.state, job_id, None, job.pending_resume)
        else:
            tx.edit_job(job_id).pending_resume = None

    # ----- control calls ---------------------------------------------------------------------

    async def submit(
        self,
        loaded: LoadedSpec,
        *,
        job_id: str,
        workspace: Path,
        start: bool,
        spec_path: Path | None,
        chain: tuple[str, int] | None = None,
        task: TaskRow | None = None,
    ) -> tuple[JobRow, bool]:
        return await self.control.submit(
            loaded,
            job_id=job_id,
            workspace=workspace,
            start=start,
            spec_path=spec_path,
            choose=lambda sheet: first_usable(sheet, self.ctx.usable),
            chain=chain,
            task=task,
        )

    async def purge_tasks(self, task_ids: Sequence[str]) -> None:
        await self.control.purge_tasks(task_ids)

    async def finish_tasks(self, rows: Sequence[TaskRow]) -> None:
        await self.control.finish_tasks(rows)

    async def pause(self, job_id: str, immediate: bool) -> JobSummary:
        return await self.control.pause(job_id, immediate)

    async def resume(
        self, job_id: str, changed_spec: LoadedSpec | None, retry_failed: bool
    ) -> JobSummary:
        return await self.control.resume(job_id, changed_spec, retry_failed)

    async def cancel(self, job_id: str) -> JobSummary:
        return await self.control.cancel(job_id)

    async def decide(
        self,
        job_id: str,
        sheet_num: int,
        decision: Decision,
        decided_by: str,
        note: str | None,
    ) -> JobSummary:
        """A person's decision on a waiting approval sheet. The same decision again, once
        made, is a no-op (control calls are idempotent); anything else not waiting is an
        error that says what the sheet is doing."""
        found = await self.writer.run(
            approvals.decide(self.ctx, job_id, sheet_num, decision, decided_by, note)
        )
        if not found.applied:
            latest = await self.store.get_latest_attempt(job_id, sheet_num)
            # A decision stands only while the sheet is where it put it: one asked again
            # after a resume and then cancelled or skipped was not decided this time.
            stands = (
                latest.decision
                if latest is not None
                and latest.decision is not None
                and found.status is approvals.DECIDED_STATUS[latest.decision]
                else None
            )
            if stands is decision:
                return await self.control.summary(job_id)
            job = await self.control.summary(job_id)
            raise InvalidTransitionError(
                approvals.refusal(job_id, found, latest, stands, job.status, decision)
            )
        return await self.control.summary(job_id)

    async def lift_holds(self, keys: Sequence[str] | None) -> list[str]:
        """Lift rate-limit holds (all with None); waiting sheets behind them may go now."""
        return await self.writer.run(ratelimits.lift(self.state, keys))

    def result_op(self, entry: RunningSheet, result: AttemptResult) -> Op[None]:
        """The op recording an attempt's result (what the dispatcher runs when one ends)."""
        return record_result(self.ctx, self.state, entry, result, self._apply_pending_modify)

    async def set_snapshot_path(self, job_id: str, path: str) -> bool:
        return await self.control.set_snapshot_path(job_id, path)

    async def hook_done(self, job_id: str, hook: str) -> None:
        await self.control.hook_done(job_id, hook)

    async def record_follow_up(self, job_id: str, record: FollowUp, *, done: bool) -> None:
        await self.control.record_follow_up(job_id, record, done=done)

    async def delete_jobs(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """(deleted, kept because still active or still stopping sheets)."""
        return await self.control.delete(job_ids)

    async def wait_stopped(self, job_ids: Sequence[str], within_seconds: float) -> list[str]:
        """Wait (bounded) for ended jobs' last sheets to stop; returns those still stopping."""
        return await self.control.wait_stopped(job_ids, within_seconds)

    # ----- what the conductor reads and sets -------------------------------------------------

    @property
    def config(self) -> PodiumConfig:
        return self.ctx.config

    @property
    def catalog(self) -> InstrumentCatalog:
        return self.ctx.catalog

    @catalog.setter
    def catalog(self, catalog: InstrumentCatalog) -> None:
        self.ctx.catalog = catalog
        if self.state.set_hold_keys(catalog.hold_keys()):
            # A profile joined or left a quota pool: the jobs in hand index their ready
            # sheets by hold key, so they are indexed again.
            self.state.reindex()
            self.wake()

    @property
    def limits(self) -> Limits:
        return self.ctx.limits

    @property
    def running_count(self) -> int:
        return len(self.state.running)

    def output_so_far(
        self, job_id: str, sheet_num: int, attempt: int, max_bytes: int
    ) -> str | None:
        """The last `max_bytes` of stdout attempt `attempt` of the sheet printed so far, from
        memory; None unless this conductor runs that attempt (another conductor on a shared
        store may, or it has not started its process yet)."""
        entry = self.state.running.get((job_id, sheet_num))
        if entry is None or entry.attempt != attempt:
            return None
        return entry.control.output_so_far(max_bytes)

    @property
    def failure_rate(self) -> float | None:
        return self.ctx.failure_rate

    @property
    def pressure(self) -> PressureLevel:
        return self.ctx.pressure

    def set_pressure(self, level: PressureLevel, reason: str | None) -> None:
        if self.ctx.set_pressure(level, reason):
            self.wake()

    def apply_config(self, config: PodiumConfig) -> None:
        self.ctx.config = config
        self.control.config = config
        self.wake()

    def wake(self) -> None:
        self.dispatcher.wake()

    async def wait_busy(self) -> None:
        await self.state.wait_busy()
