"""`run_job` and its durable tasks, over the conductor's facade: a job submitted with its
task row in one transaction, read back as a task state, cancelled, answered (approvals the
task waits on) and purged once its TTL is over. The MCP side (server/tasks.py) maps these to
the tasks extension's methods."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from podium.core import change_wait
from podium.core.errors import InvalidTransitionError, PodiumError
from podium.core.models import Decision, JobDetail, JobStatus, SheetStatus, WaitingReason, utcnow
from podium.core.store.rows import TaskRow
from podium.core.tasks import (
    TaskExpiredError,
    TaskState,
    derive_task,
    final_row,
    new_task,
    read_task,
    task_state,
)

if TYPE_CHECKING:
    from podium.core.conductor import Conductor

log = structlog.get_logger("podium.conductor")

# The synchronous run_job waits at most this long (a tool call must not hang a session).
RUN_JOB_WAIT_SECONDS = 50.0
RUN_JOB_TICK_SECONDS = 5.0
TASK_PURGE_BATCH = 500
# Jobs looked up per query for tasks to finish (a clear can name thousands).
TASK_FINISH_BATCH = 500
TERMINAL_JOB_VALUES = frozenset(s.value for s in JobStatus if s.is_terminal)


class JobTasks:
    def __init__(self, conductor: Conductor) -> None:
        self._c = conductor
        self._task_added = anyio.Event()

    async def run_job(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        job_id: str | None = None,
        wait_seconds: float = RUN_JOB_WAIT_SECONDS,
        on_tick: Callable[[float], Awaitable[None]] | None = None,
    ) -> JobDetail:
        """Submit and wait, at most `wait_seconds`, until the job ends or waits for a
        person's approval; then the job detail as it is (the caller goes on with `status`)."""
        started = time.monotonic()
        deadline = started + wait_seconds
        # Subscribed before the job exists: no transition can slip between a look and a wait.
        async with self._c.events.subscribe() as events:
            submitted = await self._c.submit_job(
                spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id
            )
            while True:
                detail = await self._c.get_job(submitted.job_id)
                left = deadline - time.monotonic()
                if detail.status.is_terminal or left <= 0:
                    return detail
                if await self._awaits_approval(submitted.job_id):
                    # Read again: the gate may have opened after the first look.
                    return await self._c.get_job(submitted.job_id)
                async with change_wait.ended_by(self._c.stop_begun) as stopping:
                    with anyio.move_on_after(min(left, RUN_JOB_TICK_SECONDS)):
                        async for event in events:
                            if event.job_id == submitted.job_id:
                                break
                if stopping.short:
                    return await self._c.get_job(submitted.job_id)
                if on_tick is not None:
                    await on_tick(time.monotonic() - started)

    async def _awaits_approval(self, job_id: str) -> bool:
        waiting = await self._c.get_job(job_id, sheet_status=[SheetStatus.WAITING], sheet_limit=100)
        return any(s.waiting_reason is WaitingReason.APPROVAL for s in waiting.sheets)

    async def start(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        job_id: str | None = None,
        created_by: str = "unknown client",
    ) -> TaskState:
        """`run_job` answered with a durable task: the job and the task row are committed in
        one transaction before this returns, so the task can be read at once."""
        made: list[TaskRow] = []

        def make(new_job_id: str) -> TaskRow:
            row = new_task(
                new_job_id, "run_job", self._c.config.task_ttl_hours, utcnow(), created_by
            )
            made.append(row)
            return row

        await self._c.submit_job(
            spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id, task=make
        )
        self._task_added.set()
        try:
            return await self.get(made[-1].task_id)
        except TaskExpiredError:
            # A `task_ttl_hours` shorter than making the task took: the job was submitted and
            # runs, so the caller gets its handle (whose ttlMs says it is over), never an
            # error that reads as if nothing was submitted and invites a second submit.
            return await task_state(self._c.store, made[-1])

    async def get(self, task_id: str) -> TaskState:
        state = await read_task(self._c.store, task_id, utcnow())
        if state.terminal and not state.final:
            # Seen ended for the first time: stored, so it stays what it is now. A conductor
            # that only reads the store leaves that to the one that owns it (which stores it
            # as the job ends, and before any resume or clear).
            try:
                await self._finish([state])
            except PodiumError as exc:
                log.info("task final state not stored here", task_id=task_id, reason=str(exc))
                return state
            state = await read_task(self._c.store, task_id, utcnow())
        return state

    async def finish_jobs(self, job_ids: Sequence[str]) -> None:
        """Store the final state of every task of these jobs that has ended and has none
        yet: what a resume or a clear of them must do first, so that no task that ended ever
        runs again or loses its result."""
        for start in range(0, len(job_ids), TASK_FINISH_BATCH):
            chunk = job_ids[start : start + TASK_FINISH_BATCH]
            ended = []
            for task in await self._c.store.open_tasks(chunk):
                state = await derive_task(self._c.store, task)
                if state.terminal:
                    ended.append(state)
            if ended:
                await self._finish(ended)

    async def _finish(self, states: Sequence[TaskState]) -> None:
        await self._c.engine.finish_tasks([final_row(s) for s in states])

    async def finish_ended(self) -> None:
        """Store tasks' final states as their jobs end (a read or a resume would do it
        later; now, the result is the job as it ended)."""
        async with self._c.events.subscribe() as events:
            async for event in events:
                if event.kind != "job_status" or event.status not in TERMINAL_JOB_VALUES:
                    continue
                try:
                    await self.finish_jobs([event.job_id])
                except PodiumError:
                    log.exception("storing the final state of tasks failed", job_id=event.job_id)

    async def cancel(self, task_id: str) -> TaskState:
        """Cancel the task's job (a no-op when it has ended: cancelling is idempotent)."""
        state = await self.get(task_id)
        if state.detail is not None and not state.detail.status.is_terminal:
            with contextlib.suppress(InvalidTransitionError):
                await self._c.engine.cancel(state.task.job_id)
        return await self.get(task_id)

    async def answer(
        self,
        task_id: str,
        answers: Mapping[str, Decision],
        notes: Mapping[str, str | None],
        decided_by: str,
    ) -> list[str]:
        """Decide the approvals the task waits on, by their input-request keys; keys that do
        not name one (unknown, already answered, superseded) are ignored. Returns the keys
        that were applied."""
        state = await self.get(task_id)
        applied = []
        for approval in state.approvals:
            decision = answers.get(approval.key)
            if decision is None:
                continue
            try:
                await self._c.engine.decide(
                    state.task.job_id,
                    approval.sheet_num,
                    decision,
                    decided_by,
                    notes.get(approval.key),
                )
            except InvalidTransitionError:
                continue  # decided meanwhile (another client, the CLI): the first one stands
            applied.append(approval.key)
        return applied

    async def purge_expired(self) -> None:
        """Delete expired tasks; sleeps until the next one expires (or a task is made)."""
        while True:
            added = self._task_added = anyio.Event()
            try:
                expired = await self._c.store.expired_tasks(utcnow(), TASK_PURGE_BATCH)
                if expired:
                    await self._c.engine.purge_tasks(expired)
                    log.info("expired tasks purged", count=len(expired))
                    continue
                expiry = await self._c.store.next_task_expiry()
            except PodiumError:
                log.exception("task purge failed")
                expiry = utcnow() + timedelta(minutes=1)
            if expiry is None:
                await added.wait()
                continue
            with anyio.move_on_after(max(0.05, (expiry - utcnow()).total_seconds())):
                await added.wait()
