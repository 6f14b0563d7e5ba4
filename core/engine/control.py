"""Control calls on jobs (SPEC §6 table): submit, pause, resume (including a modify with a
changed spec), cancel, and the bookkeeping writes (snapshot path, deletion). Each is one op
of the writer: read rows, decide by the table, write."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from podium.core.config import PodiumConfig
from podium.core.engine.approvals import awaiting, end_unrun, withdraw
from podium.core.engine.costs import check_resumable
from podium.core.engine.rules import (
    check_spec_change,
    final_job_status,
    reset_for_retry,
    resettable,
    set_job_status,
    spec_change,
    unreachable,
)
from podium.core.engine.state import EngineState, RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.engine.writer import Writer
from podium.core.errors import ConflictError, InvalidTransitionError, NotFoundError, quoted
from podium.core.events import ChangeEvent
from podium.core.models import (
    ErrorCategory,
    FollowUp,
    JobStatus,
    JobSummary,
    PauseReason,
    SheetStatus,
)
from podium.core.spec.loader import LoadedSpec, ResolvedSheet
from podium.core.store.base import StoreChange
from podium.core.store.rows import JobRow, SheetRow, TaskRow, clone

log = structlog.get_logger("podium.control")
# While a cancel waits for another conductor's sheets to end, it re-reads them this often
# (besides every change it hears of).
SETTLE_RECHECK_SECONDS = 0.25


def resume_now(
    tx: Tx,
    state: EngineState,
    job_id: str,
    changed_spec: LoadedSpec | None,
    retry_failed: bool,
) -> None:
    """Queue the job again (running, if sheets of it still run): with a changed spec applied
    to every sheet not completed, and failed/skipped/cancelled sheets reset unless
    `retry_failed` is false. Also what ends a pending modify."""
    now = tx.now
    job = tx.edit_job(job_id)
    job.pending_resume = None
    ended_run = (job.status, job.started_at, job.completed_at) if job.status.is_terminal else None
    if ended_run is not None:
        # A finished job resumed is a new run: its deadline counts from the restart.
        job.started_at = None
    if changed_spec is not None:
        _change_spec(tx, job, changed_spec)
    if retry_failed:
        for sheet in resettable(tx.sheets(job_id).values()):
            reset_for_retry(tx.edit_sheet(job_id, sheet.sheet_num), now)
    entries = state.entries_for(job_id)
    # Sheets may run on other conductors too: the rows say, not this conductor's table. An
    # open gate is work in progress too: nothing would dispatch to make the job running.
    running = (
        entries or running_sheets(tx, job_id) or any(map(awaiting, tx.sheets(job_id).values()))
    )
    set_job_status(job, JobStatus.RUNNING if running else JobStatus.QUEUED, now)
    job.error = None
    for num, why in unreachable(tx.sheets(job_id)):
        end_unrun(tx, job_id, num, SheetStatus.SKIPPED, why, ErrorCategory.DEPENDENCY_FAILED)
    final = final_job_status(tx.sheets(job_id).values())
    if final is not None:
        set_job_status(job, final[0], now)
        job.error = final[1]
        if ended_run is not None and job.started_at is None:
            # Nothing was left to run (no retry_failed): no new run began, so the one the
            # job had keeps its times rather than a null start.
            status, job.started_at, completed_at = ended_run
            if status is final[0]:
                job.completed_at = completed_at

    def continue_suspended() -> None:
        for entry in entries:
            if entry.control.suspended:
                # Sends SIGCONT at once; the coroutine does no waiting.
                entry.control.resume_now()

    tx.after(continue_suspended)


def running_sheets(tx: Tx, job_id: str) -> list[int]:
    """Sheets of the job running on any conductor, as the rows say."""
    return [n for n, s in tx.sheets(job_id).items() if s.status is SheetStatus.RUNNING]


def _change_spec(tx: Tx, job: JobRow, new: LoadedSpec) -> None:
    old = tx.state(job.job_id).spec
    sheets = tx.sheets(job.job_id)
    changes, added = spec_change(job, sheets, new, tx.now)
    tx.replace_spec(job.job_id, new)
    for change in changes:
        row = tx.edit_sheet(job.job_id, change.sheet_num)
        row.instrument = change.instrument
        row.depends_on = list(change.depends_on)
        row.name = change.name
        row.updated_at = tx.now
    for sheet in added:
        tx.add_sheet(sheet)
    # An open gate's question, timeout and instrument were fixed when it opened, under the
    # old spec: a gate whose sheet changed goes back to pending, to be asked again (or run,
    # if it is no longer a gate), instead of waiting on under a spec that no longer says so.
    for num, row in sheets.items():
        if awaiting(row) and (old is None or old.sheet(num) != new.sheet(num)):
            withdraw(tx, job.job_id, num, "question withdrawn: the changed spec changed this sheet")


class _Committed:
    """The job's summary as the op's commit left it (taken in that same step)."""

    def __init__(self, tx: Tx, state: EngineState, job_id: str) -> None:
        self.summary: JobSummary | None = None

        def take() -> None:
            held = state.jobs.get(job_id)
            self.summary = (held.job if held is not None else tx.job(job_id)).summary()

        tx.after(take)


class Control:
    def __init__(self, writer: Writer, state: EngineState, config: PodiumConfig) -> None:
        self.writer = writer
        self.state = state
        self.config = config

    async def summary(self, job_id: str) -> JobSummary:
        held = self.state.jobs.get(job_id)
        if held is not None:
            return held.job.summary()
        row = await self.writer.store.get_job(job_id)
        if row is None:
            raise InvalidTransitionError(f"job {quoted(job_id)} was deleted meanwhile")
        return row.summary()

    # ----- submit ----------------------------------------------------------------------------

    async def submit(
        self,
        loaded: LoadedSpec,
        *,
        job_id: str,
        workspace: Path,
        start: bool,
        spec_path: Path | None,
        choose: Callable[[ResolvedSheet], str] | None = None,
        chain: tuple[str, int] | None = None,
        task: TaskRow | None = None,
    ) -> tuple[JobRow, bool]:
        """Register a job; returns (job, created). The same job_id with the same spec returns
        the existing job, so a retried submit is safe. `choose` picks the instrument each
        sheet starts on (its own, or a fallback when its own is not installed). `task` (a
        durable task handle of the job) is committed in the same transaction: it exists
        once this returns."""
        fingerprint = loaded.fingerprint()

        taken: list[JobRow] = []

        def take() -> None:
            held = self.state.jobs.get(job_id)
            if held is not None:
                taken.append(clone(held.job))

        def apply(tx: Tx) -> bool:
            tx.after(take)
            if tx.has_job(job_id):
                if tx.job(job_id).spec_fingerprint == fingerprint:
                    if task is not None:
                        tx.insert_task(task)
                        tx.lock_job(job_id)
                    return False
                raise ConflictError(
                    f"job_id: job {quoted(job_id)} already exists with a different spec; "
                    "choose another job_id or omit it"
                )
            now = tx.now
            spec = loaded.spec
            job = JobRow(
                job_id=job_id,
                name=spec.name,
                description=spec.description,
                status=JobStatus.QUEUED if start else JobStatus.PAUSED,
                pause_reason=None if start else PauseReason.NOT_STARTED,
                workspace=str(workspace),
                spec_fingerprint=fingerprint,
                spec_path=str(spec_path) if spec_path else None,
                total_sheets=len(loaded.sheets),
                submitted_at=now,
                updated_at=now,
                priority=spec.priority,
                labels=list(spec.labels),
                cost_limit_usd=spec.cost_limit_usd,
                chained_from=chain[0] if chain else None,
                chain_depth=chain[1] if chain else 0,
            )
            sheets = [
                SheetRow(
                    job_id=job_id,
                    sheet_num=s.sheet_num,
                    name=s.name,
                    status=SheetStatus.PENDING,
                    instrument=choose(s) if choose is not None else s.instrument,
                    updated_at=now,
                    depends_on=list(s.depends_on),
                )
                for s in loaded.sheets
            ]
            tx.insert_job(job, sheets, loaded)
            if task is not None:
                tx.insert_task(task)
            return True

        created = await self.writer.run(Op(apply, job_rows=[job_id], name="submit"))
        # The job as this submit committed it (it may be running by the time we return).
        job = taken[-1] if taken else await self.writer.store.get_job(job_id)
        if job is None:
            raise InvalidTransitionError(f"job {quoted(job_id)} was deleted meanwhile")
        return job, created

    # ----- pause / resume / cancel -----------------------------------------------------------

    async def pause(self, job_id: str, immediate: bool) -> JobSummary:
        def apply(tx: Tx) -> tuple[list[RunningSheet], _Committed]:
            committed = _Committed(tx, self.state, job_id)
            job = tx.job(job_id)
            if job.status.is_terminal:
                raise InvalidTransitionError(
                    f"job {quoted(job_id)} is {job.status.value}; only queued or running jobs can "
                    "be "
                    "paused"
                )
            if job.status is JobStatus.PAUSED:
                # An explicit pause also calls off the automatic resume of a pending modify.
                if job.pending_resume is not None:
                    tx.edit_job(job_id).pending_resume = None
                return [], committed
            edited = tx.edit_job(job_id)
            set_job_status(edited, JobStatus.PAUSED, tx.now)
            edited.pause_reason = PauseReason.USER
            edited.pending_resume = None
            return self.state.entries_for(job_id), committed

        entries, committed = await self.writer.run(
            Op(apply, job_rows=[job_id], name="pause", sees_running=True)
        )
        if immediate:
            for entry in entries:
                await entry.control.suspend()
            if self.writer.store.shared:
                # Sheets of it on other conductors are suspended by theirs.
                await self.writer.store.announce(StoreChange(suspend=frozenset({job_id})))
        return committed.summary or await self.summary(job_id)

    async def resume(
        self, job_id: str, changed_spec: LoadedSpec | None, retry_failed: bool
    ) -> JobSummary:
        state = self.state

        def apply(tx: Tx) -> _Committed:
            committed = _Committed(tx, state, job_id)
            job = tx.job(job_id)
            if job.status is JobStatus.COMPLETED:
                raise InvalidTransitionError(
                    f"job {quoted(job_id)} is completed; there is nothing to resume (submit it "
                    "again "
                    "to re-run)"
                )
            if changed_spec is not None:
                # Validate before touching anything: a bad changed spec leaves the job as it was.
                check_spec_change(list(tx.sheets(job_id).values()), changed_spec)
            no_op = changed_spec is None and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
            runs_under = changed_spec or tx.state(job_id).spec
            if runs_under is not None and not no_op:
                # Past the limit it would run under, the job would only spend more.
                check_resumable(job, runs_under.spec.cost_limit_usd)
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                if changed_spec is None:
                    return committed
                # A modify: the new spec is saved at once (so a crash cannot lose it), no new
                # sheet starts, and the job resumes by itself once its running sheets end; that
                # intent is stored with the job, so a restart knows it was not a user's pause.
                edited = tx.edit_job(job_id)
                _change_spec(tx, edited, changed_spec)
                set_job_status(edited, JobStatus.PAUSED, tx.now)
                edited.pause_reason = PauseReason.USER
                edited.pending_resume = retry_failed
                if not state.entries_for(job_id) and not running_sheets(tx, job_id):
                    resume_now(tx, state, job_id, None, retry_failed)
                return committed
            resume_now(tx, state, job_id, changed_spec, retry_failed)
            return committed

        committed = await self.writer.run(
            Op(apply, jobs=[job_id], name="resume", sees_running=True)
        )
        return committed.summary or await self.summary(job_id)

    async def cancel(self, job_id: str) -> JobSummary:
        state = self.state

        def apply(tx: Tx) -> tuple[list[RunningSheet], list[int]]:
            job = tx.job(job_id)
            if job.status is JobStatus.CANCELLED:
                return [], []
            if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise InvalidTransitionError(
                    f"job {quoted(job_id)} is already {job.status.value}; only queued, running or "
                    "paused jobs can be cancelled"
                )
            entries = state.entries_for(job_id)
            # A running sheet is left to the conductor that runs it (this one or another,
            # which hears of the cancel): it ends its process group and records the end.
            running = {e.sheet_num for e in entries} | set(running_sheets(tx, job_id))
            cancel_idle_sheets(tx, job_id, running, "cancelled", ErrorCategory.CANCELLED)
            edited = tx.edit_job(job_id)
            set_job_status(edited, JobStatus.CANCELLED, tx.now)
            edited.error = None
            edited.pending_resume = None
            stop_after_commit(tx, entries, "cancel")
            return entries, sorted(running - {e.sheet_num for e in entries})

        grace = self.config.kill_grace_seconds
        with anyio.move_on_after(grace + 2):
            async with self.writer.events.subscribe() as events:
                entries, elsewhere = await self.writer.run(
                    Op(apply, jobs=[job_id], name="cancel", sees_running=True)
                )
                await wait_entries(entries, grace)
                if elsewhere:
                    await self._settled(job_id, elsewhere, events)
        return await self.summary(job_id)

    async def _settled(
        self, job_id: str, nums: Sequence[int], events: MemoryObjectReceiveStream[ChangeEvent]
    ) -> None:
        """Wait until sheets run by other conductors have ended (their conductor records it;
        this one hears of it as a change, or sees it on a re-read)."""
        while True:
            rows = {s.sheet_num: s for s in await self.writer.store.get_sheets(job_id)}
            if all(n not in rows or rows[n].status.is_terminal for n in nums):
                return
            with anyio.move_on_after(SETTLE_RECHECK_SECONDS):
                async for event in events:
                    if event.job_id == job_id:
                        break

    # ----- bookkeeping -----------------------------------------------------------------------

    async def set_snapshot_path(self, job_id: str, path: str) -> bool:
        """Record the job's snapshot; False when the job is gone (cleared meanwhile)."""

        def apply(tx: Tx) -> bool:
            if not tx.has_job(job_id):
                return False
            tx.edit_job(job_id).snapshot_path = path
            return True

        try:
            recorded: bool = await self.writer.run(
                Op(apply, job_rows=[job_id], name="snapshot path")
            )
        except NotFoundError:
            return False
        return recorded

    async def hook_done(self, job_id: str, hook: str) -> None:
        """A job's end hook ran (or gave up): it is not run again, even after a restart."""

        def apply(tx: Tx) -> None:
            if tx.has_job(job_id) and hook in tx.job(job_id).pending_hooks:
                tx.edit_job(job_id).pending_hooks.remove(hook)

        await self.writer.run(Op(apply, job_rows=[job_id], name="hook done"))

    async def record_follow_up(self, job_id: str, record: FollowUp, *, done: bool) -> None:
        """What became of a job's follow-up, in one op with clearing its "on_success" hook
        (`done`; a deferred one stays pending): a crash cannot leave the record saying one
        thing and the hook another."""
        value = record.model_dump(mode="json")

        def apply(tx: Tx) -> None:
            if not tx.has_job(job_id):
                return  # cleared meanwhile
            row = tx.edit_job(job_id)
            row.follow_up = value
            if done and "on_success" in row.pending_hooks:
                row.pending_hooks.remove("on_success")

        await self.writer.run(Op(apply, job_rows=[job_id], name="follow-up"))

    async def purge_tasks(self, task_ids: Sequence[str]) -> None:
        def apply(tx: Tx) -> None:
            tx.delete_tasks(task_ids)

        await self.writer.run(Op(apply, name="purge tasks"))

    async def finish_tasks(self, rows: Sequence[TaskRow]) -> None:
        """Store tasks' final states, each derived from its job as read before this op: one
        whose job has moved on since (another status, or a job where there was none) is left
        as it is, to be derived again; one whose job was cleared since is stored as read (it
        had ended). The job's row is locked, so a writer elsewhere that changes the job
        meanwhile makes this op read it again."""

        def apply(tx: Tx) -> None:
            for row in rows:
                read_as = (row.final_detail or {}).get("status")
                if tx.has_job(row.job_id):
                    if read_as != tx.job(row.job_id).status.value:
                        continue
                    tx.lock_job(row.job_id)
                tx.finish_task(row)

        job_ids = sorted({r.job_id for r in rows})
        await self.writer.run(Op(apply, job_rows=job_ids, name="finish tasks"))

    async def _still_stopping(self, job_id: str) -> bool:
        """Sheets of the ended job still running: a cancel (or a deadline) is still stopping
        them, and their attempts are still to be written. On a shared store another
        conductor may be the one stopping them: the rows say."""
        if self.state.entries_for(job_id):
            return True
        if self.writer.store.shared:
            rows = await self.writer.store.get_sheets(job_id)
        else:
            held = self.state.jobs.get(job_id)
            rows = list(held.sheets.values()) if held is not None else []
        return any(s.status is SheetStatus.RUNNING for s in rows)

    async def wait_stopped(self, job_ids: Sequence[str], within_seconds: float) -> list[str]:
        """Wait, at most `within_seconds`, until no sheet of these ended jobs runs any more;
        returns the jobs still stopping sheets after that."""
        wanted = list(job_ids)
        with anyio.move_on_after(within_seconds):
            async with self.writer.events.subscribe() as events:
                while True:
                    wanted = [j for j in wanted if await self._still_stopping(j)]
                    if not wanted:
                        return []
                    with anyio.move_on_after(SETTLE_RECHECK_SECONDS):
                        async for event in events:
                            if event.job_id in wanted:
                                break
        return wanted

    def _runs(self, tx: Tx, job_id: str) -> bool:
        if self.state.entries_for(job_id):
            return True
        if job_id not in self.state.jobs:
            # Not in hand: on a store of its own, no conductor runs a sheet of it; on a
            # shared one the op read the whole job, so it is in hand.
            return False
        return any(s.status is SheetStatus.RUNNING for s in tx.sheets(job_id).values())

    async def delete(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete the given jobs that have ended; returns (deleted, kept active). Active
        ones are never deleted, and neither is an ended one whose sheets are still being
        stopped: their attempts are still to be written into its rows."""
        shared = self.writer.store.shared

        def apply(tx: Tx) -> tuple[list[str], list[str]]:
            deleted: list[str] = []
            active: list[str] = []
            for job_id in job_ids:
                if not tx.has_job(job_id):
                    continue  # cleared meanwhile
                if not tx.job(job_id).status.is_terminal or self._runs(tx, job_id):
                    active.append(job_id)
                    continue
                tx.delete_job(job_id)
                deleted.append(job_id)
            return deleted, active

        # On a shared store an ended job's sheets may still run on another conductor: the
        # op reads them (the whole job), not only the job's row.
        whole = list(job_ids) if shared else []
        rows = [] if shared else list(job_ids)
        return await self.writer.run(Op(apply, jobs=whole, job_rows=rows, name="delete jobs"))


def cancel_idle_sheets(
    tx: Tx, job_id: str, running: set[int], error: str, category: ErrorCategory
) -> None:
    """Every non-terminal sheet not running ends `cancelled` now; running ones are left to
    the conductor that runs them, which records their end."""
    for num, sheet in tx.sheets(job_id).items():
        if not sheet.status.is_terminal and num not in running:
            # A gate's open question ends unanswered: a resume asks anew.
            end_unrun(tx, job_id, num, SheetStatus.CANCELLED, error, category)


def stop_after_commit(tx: Tx, entries: Sequence[RunningSheet], reason: str) -> None:
    """Signal the running attempts only once the transition is committed, so a stop never
    reaches a process before the store says why."""

    def stop_running() -> None:
        for entry in entries:
            entry.stop_reason = reason
            entry.control.request_cancel()

    tx.after(stop_running)


async def wait_entries(entries: Sequence[RunningSheet], grace_seconds: float) -> None:
    """Wait until the attempts have ended, at most grace + 2 s (SPEC §6 cancel)."""
    with anyio.move_on_after(grace_seconds + 2):
        for entry in entries:
            await entry.done.wait()


def expire(state: EngineState, job_id: str) -> Op[None]:
    """The job ran past `deadline_seconds`: stop its sheets and fail it."""

    def apply(tx: Tx) -> None:
        job_state = tx.state(job_id)
        if tx.job(job_id).status.is_terminal:
            return  # ended meanwhile (another conductor's deadline, or a cancel)
        seconds = job_state.spec.spec.deadline_seconds if job_state.spec else None
        entries = state.entries_for(job_id)
        running = {e.sheet_num for e in entries}
        cancel_idle_sheets(tx, job_id, running, "deadline reached", ErrorCategory.DEADLINE)
        job = tx.edit_job(job_id)
        set_job_status(job, JobStatus.FAILED, tx.now)
        limit = f"{seconds:g}" if seconds is not None else "?"
        job.error = f"deadline: the job ran longer than deadline_seconds={limit}"
        job.pending_resume = None
        stop_after_commit(tx, entries, "deadline")

    return Op(apply, jobs=[job_id], name="deadline", sees_running=True)


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
                # An open gate's question is taken back, as at a cancel: the spec a resume
                # brings asks it anew, under a new key.
                end_unrun(
                    tx,
                    job_id,
                    num,
                    SheetStatus.FAILED,
                    "the job's stored spec no longer loads",
                    ErrorCategory.SPEC_INVALID,
                )
        job = tx.edit_job(job_id)
        set_job_status(job, JobStatus.FAILED, tx.now)
        job.error = (
            f"spec: the stored spec no longer loads ({reason}); resume with a corrected spec "
            "(resume with spec, spec_yaml or path)"
        )

    return Op(apply, jobs=[job_id], name="fail unloadable spec", sees_running=True)
