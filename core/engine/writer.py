"""The ONE writer of job, sheet, attempt and hold rows.

Every change is an `Op`: a rule run against a `Tx` (a view of committed rows with the op's
own edits on top). Ops queue up; the writer runs whatever has queued as one group: each op's
edits become a `WriteBatch`, the group is committed in one transaction (each batch all or
nothing), then, for every batch that committed, the in-memory state and ready index take the
new rows and the change events go out, in that order. A batch refused because a row moved on
(another writer on the same store) gets its jobs reloaded and its op re-run, after a short
random pause that grows with each refusal: two writers racing on one row would otherwise
refuse each other in lockstep, and the one that always re-reads just before the other writes
would starve.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from podium.core.engine.hooks_intent import stamp_hooks
from podium.core.engine.state import EngineState, JobState
from podium.core.engine.tx import Layer, Op, Tx
from podium.core.engine.view_apply import apply_committed
from podium.core.errors import ConflictError, PodiumError
from podium.core.events import ChangeEvent, EventBus
from podium.core.models import SheetStatus, utcnow
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.store.base import Store, WriteBatch, Written
from podium.core.store.rows import JobRecord, JobRow

log = structlog.get_logger("podium.writer")

R = TypeVar("R")
MAX_GROUP = 256
MAX_CONFLICT_RETRIES = 50
# Backoff after the n-th refusal of one op: uniform in [0, min(CAP, BASE * 2**n)] seconds.
RETRY_BASE = 0.002
RETRY_CAP = 0.2
# The longest a group waits for the fsync of the one before it.
GROUP_WAIT_SECONDS = 0.005


@dataclass
class _Announcement:
    written: Written | None
    events: list[ChangeEvent] = field(default_factory=list)
    done: list[_Pending[Any]] = field(default_factory=list)


@dataclass
class _Pending(Generic[R]):
    op: Op[R]
    # An asyncio event: set from the writer task, waited on by one caller; anyio's costs a
    # backend lookup per op.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: Any = None
    error: BaseException | None = None
    conflicts: int = 0


class Writer:
    """Runs ops in groups (see the module docstring). `run` must be called while `serve`
    runs in a task (the engine starts it)."""

    def __init__(
        self,
        store: Store,
        state: EngineState,
        events: EventBus,
        load: Callable[[dict[str, Any]], LoadedSpec] | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.events = events
        self._load_spec = load or (lambda data: load_spec(data=data, stored=True))
        self._queue: list[_Pending[Any]] = []
        # Refused ops waiting out their backoff: (when due, op), in order of refusal.
        self._deferred: list[tuple[float, _Pending[Any]]] = []
        self._wake = anyio.Event()
        self._serving = False
        self._closed = False
        self._announcements: MemoryObjectSendStream[_Announcement] | None = None
        self._unannounced: list[_Announcement] = []
        # Set whenever every commit made so far is durable (see `serve`).
        self._durable_now = asyncio.Event()
        self.on_commit: Callable[[], None] = lambda: None
        # Called with a job's row when it is done with: terminal, nothing of it running.
        self.on_finished: Callable[[JobRow], None] = lambda job: None
        # Called after jobs were re-read because another conductor changed them (their ids).
        self.on_synced: Callable[[set[str]], None] = lambda job_ids: None
        # What other conductors changed and this view has yet to re-read (see `mark_stale`).
        self._stale_jobs: set[str] = set()
        # Of those, jobs only some sheets of which changed (re-read: the row and those).
        self._stale_sheets: dict[str, set[int]] = {}
        self._stale_holds = False
        self._stale_all = False
        # Counters for tests and benchmarks: transactions and conflicts seen.
        self.commits = 0
        self.conflicts = 0
        self.syncs = 0

    async def run(self, op: Op[R]) -> R:
        if self._closed or not self._serving:
            raise PodiumError("the conductor is not running; no change can be made now")
        pending: _Pending[R] = _Pending(op)
        self._queue.append(pending)
        self._wake.set()
        with anyio.CancelScope(shield=True):
            # Once queued, an op is committed or refused; its caller learns which.
            await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[no-any-return]

    def submit_nowait(self, op: Op[Any]) -> None:
        """Queue an op whose outcome nobody waits for (e.g. a process record)."""
        if not self._closed:
            self._queue.append(_Pending(op))
            self._wake.set()

    async def serve(self) -> None:
        self._serving = True
        send, receive = anyio.create_memory_object_stream[_Announcement](math.inf)
        self._announcements = send
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._announce, receive)
                while True:
                    with anyio.move_on_after(self._next_retry_in()):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    # Let every task that is ready run first: what they change joins this
                    # group (one transaction) instead of the next.
                    await asyncio.sleep(0)
                    if self._unannounced and self._queue:
                        # A commit is still being made durable: what queues meanwhile is
                        # committed with the next fsync anyway, so it waits and goes in one
                        # transaction (group commit) rather than one per pass.
                        self._durable_now.clear()
                        with anyio.move_on_after(GROUP_WAIT_SECONDS):
                            await self._durable_now.wait()
                    await self._take_due_retries()
                    if self._stale_jobs or self._stale_holds or self._stale_all:
                        with anyio.CancelScope(shield=True):
                            await self._sync()
                    while self._queue:
                        group = self._queue[:MAX_GROUP]
                        del self._queue[: len(group)]
                        with anyio.CancelScope(shield=True):
                            try:
                                await self._process(group)
                            except Exception as exc:
                                self._fail_unanswered(group, exc)
        finally:
            self._serving = False
            self._closed = True
            send.close()
            for item in self._unannounced:
                # Committed, but the writer stops before it could wait for durability.
                for pending in item.done:
                    pending.done.set()
            self._unannounced.clear()
            for pending in [*self._queue, *(p for _, p in self._deferred)]:
                pending.error = PodiumError("the conductor stopped before this change was made")
                pending.done.set()
            self._queue.clear()
            self._deferred.clear()

    def _fail_unanswered(self, group: list[_Pending[Any]], exc: Exception) -> None:
        """A group failed outside its ops (reading what it needed, say): every op of it not
        answered yet fails with that error. Raised, it ended the writer with the callers
        still waiting on ops it had taken off the queue; they never returned."""
        log.exception("a group of changes failed", error=repr(exc))
        # Those committed already are answered once durable; those queued again or deferred
        # (a conflict) are still to run.
        later = {id(p) for item in self._unannounced for p in item.done}
        later |= {id(p) for p in self._queue} | {id(p) for _, p in self._deferred}
        for pending in group:
            if not pending.done.is_set() and id(pending) not in later:
                pending.error = exc
                pending.done.set()

    def mark_stale(
        self,
        job_ids: Collection[str] = (),
        *,
        sheets: Mapping[str, Collection[int]] | None = None,
        holds: bool = False,
        everything: bool = False,
    ) -> None:
        """Another conductor changed these jobs (or holds, or anything): the writer re-reads
        them between two groups, so the view never changes under an op being decided. A job
        with an entry in `sheets` changed only those sheets (and its row)."""
        for job_id in job_ids:
            nums = None if sheets is None else sheets.get(job_id)
            if job_id in self._stale_jobs and job_id not in self._stale_sheets:
                continue  # to be re-read whole already
            if nums is None:
                self._stale_sheets.pop(job_id, None)
            else:
                self._stale_sheets.setdefault(job_id, set()).update(nums)
        self._stale_jobs.update(job_ids)
        self._stale_holds = self._stale_holds or holds
        self._stale_all = self._stale_all or everything
        self._wake.set()

    async def _sync(self) -> None:
        """Re-read what other conductors changed, and announce it as if it were ours: views
        and long-polls of this conductor see every conductor's changes."""
        jobs, self._stale_jobs = self._stale_jobs, set()
        partial, self._stale_sheets = self._stale_sheets, {}
        holds, everything = self._stale_holds, self._stale_all
        self._stale_holds = self._stale_all = False
        try:
            if everything:
                jobs |= set(self.state.jobs) | set(await self.store.job_versions())
                partial = {}
            if holds or everything:
                self.state.holds = {h.hold_key: h for h in await self.store.holds()}
            changed: set[str] = set()
            for job_id in sorted(jobs):
                nums = partial.get(job_id)
                if nums is not None:
                    moved = await self._refresh_rows(job_id, nums)
                else:
                    moved = await self._reload(job_id, await self.store.load_job(job_id))
                if moved:
                    changed.add(job_id)
        except Exception:
            # The store is unreachable for now: try again at the next change or poll.
            log.exception("could not re-read what other conductors changed")
            self._stale_jobs |= jobs
            self._stale_sheets.clear()
            self._stale_holds = self._stale_holds or holds
            self._stale_all = self._stale_all or everything
            return
        self.syncs += 1
        if changed or holds or everything:
            self.on_synced(changed)
            self.on_commit()

    async def _refresh_rows(self, job_id: str, nums: set[int]) -> bool:
        """Re-read a job's row and the sheets another conductor changed, and move the view
        onto them; returns whether it moved. Falls back to re-reading the whole job when
        the view cannot take them (not held, a spec changed, an unknown sheet)."""
        held = self.state.jobs.get(job_id)
        found = await self.store.load_rows(job_id, sorted(nums))
        if held is None or found is None:
            return await self._reload(job_id, await self.store.load_job(job_id))
        job, sheets = found
        if job.spec_fingerprint != held.job.spec_fingerprint or any(
            s.sheet_num not in held.sheets for s in sheets
        ):
            return await self._reload(job_id, await self.store.load_job(job_id))
        # The job row may already be as new as this read: an earlier re-read took it after a
        # later commit had landed, whose sheets only this notice names. Each row moves on by
        # its own version, so none is left behind (a view that kept an ended sheet running
        # would never end its job).
        now = utcnow()
        moved = False
        for sheet in sheets:
            if sheet.version > held.sheets[sheet.sheet_num].version:
                held.replace_sheet(sheet, now)
                moved = True
                self.events.publish(
                    ChangeEvent(job_id, "sheet", sheet.status.value, sheet.sheet_num)
                )
        if job.version <= held.job.version:
            return moved
        if (
            held.counts[SheetStatus.COMPLETED] != job.completed_sheets
            or held.counts[SheetStatus.FAILED] != job.failed_sheets
        ):
            # The row is newer than the sheets named so far (a commit whose notice is still
            # on its way, or was lost): its counts say so. Read the whole job.
            return await self._reload(job_id, await self.store.load_job(job_id), force=True)
        held.replace_job(job)
        if job.status.is_terminal and not self.state.entries_for(job_id):
            self.state.jobs.pop(job_id, None)
        self.events.publish(ChangeEvent(job_id, "job_status", job.status.value))
        return True

    async def _reload(self, job_id: str, record: JobRecord | None, *, force: bool = False) -> bool:
        """Take another conductor's version of a job in hand; returns whether it moved
        (`force`: even when the job row's version is the one in hand)."""
        old = self.state.jobs.get(job_id)
        if record is None:
            if old is None:
                return False
            if not self.state.entries_for(job_id):
                del self.state.jobs[job_id]
            self.events.publish(ChangeEvent(job_id, "deleted"))
            return True
        if old is not None and old.job.version == record.job.version and not force:
            return False
        fresh = await self._job_state(record)
        if record.job.status.is_terminal and not self.state.entries_for(job_id):
            # Done with, by another conductor: read from the store from now on.
            self.state.jobs.pop(job_id, None)
        else:
            self.state.add(fresh)
        before = old.sheets if old is not None else {}
        if old is None:
            self.events.publish(ChangeEvent(job_id, "submitted", record.job.status.value))
        for sheet in record.sheets:
            seen = before.get(sheet.sheet_num)
            if seen is None or seen.version != sheet.version:
                self.events.publish(
                    ChangeEvent(job_id, "sheet", sheet.status.value, sheet.sheet_num)
                )
        self.events.publish(ChangeEvent(job_id, "job_status", record.job.status.value))
        return True

    def _next_retry_in(self) -> float:
        if not self._deferred:
            return math.inf
        return max(0.0, min(due for due, _ in self._deferred) - anyio.current_time())

    async def _take_due_retries(self) -> None:
        """Refused ops whose pause is over: re-read what they touch, then they go first."""
        if not self._deferred:
            return
        now = anyio.current_time()
        due = [p for when, p in self._deferred if when <= now]
        if not due:
            return
        self._deferred = [(when, p) for when, p in self._deferred if when > now]
        await self._refresh(due)
        self._queue[:0] = due

    # ----- one group ---------------------------------------------------------------------

    async def _process(self, group: list[_Pending[Any]]) -> None:
        loose = await self._prepare(group)
        now = utcnow()
        overlay = Layer()
        ran: list[tuple[_Pending[Any], Tx, WriteBatch]] = []
        for index, pending in enumerate(group):
            needs = {*pending.op.jobs, *pending.op.job_rows}
            if needs & overlay.inserted or (pending.op.sees_running and needs & overlay.starting):
                # It reads a job this group inserts, or must see the sheets an earlier op of
                # the group starts as running here: it runs once that op is committed.
                self._queue[:0] = group[index:]
                self._wake.set()
                break
            tx = Tx(self.state, overlay, loose, now)
            try:
                pending.result = pending.op.apply(tx)
                stamp_hooks(tx)
            except Exception as exc:
                pending.error = exc
                pending.done.set()
                continue
            tx.merge_into(overlay)
            ran.append((pending, tx, tx.batch()))
        todo = [item for item in ran if item[2]]
        written: Written | None = None
        if todo:
            try:
                written = await self.store.write([batch for _, _, batch in todo])
            except Exception as exc:
                await self._isolate([p for p, _, _ in ran], exc)
                return
            self.commits += 1
        results = written.results if written is not None else []
        outcome = dict(zip((id(p) for p, _, _ in todo), results, strict=True))
        retry: list[_Pending[Any]] = []
        announcement = _Announcement(written)
        # Jobs done with before this group (terminal, nothing running): letting go of a job
        # waits for the whole group, since a later op of it may have taken the job up again.
        touched = {j for _, tx, _ in ran for j in tx.touched_jobs()}
        finished_before = {
            j for j in touched if j in self.state.jobs and _finished(self.state.jobs[j])
        }
        for pending, tx, batch in ran:
            conflict = outcome.get(id(pending))
            if conflict is None:
                # Committed: state and ready index move on now (the next group reads them),
                # the change is announced once durable.
                apply_committed(self.state, tx, batch)
                announcement.events.extend(tx.events)
                announcement.done.append(pending)
                continue
            self.conflicts += 1
            pending.conflicts += 1
            log.info(
                "write refused, retrying",
                op=pending.op.name,
                table=conflict.table,
                key=conflict.key,
            )
            retry.append(pending)
        now_t = anyio.current_time()
        for pending in retry:
            if pending.conflicts > MAX_CONFLICT_RETRIES:
                pending.error = ConflictError(
                    f"{pending.op.name}: the rows kept changing under this change; try again"
                )
                pending.done.set()
                continue
            pause = random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**pending.conflicts))
            self._deferred.append((now_t + pause, pending))
        self._let_go(touched, finished_before)
        assert self._announcements is not None
        self._unannounced.append(announcement)
        self._announcements.send_nowait(announcement)
        self.on_commit()

    async def _announce(self, receive: MemoryObjectReceiveStream[_Announcement]) -> None:
        """In commit order: wait until a group's transaction is durable, then publish its
        events and hand each op its result."""
        async with receive:
            async for item in receive:
                if item.written is not None:
                    try:
                        await item.written.durable()
                    except Exception as exc:
                        log.critical("a committed change could not be made durable", error=exc)
                        for pending in item.done:
                            pending.error = PodiumError(
                                f"the store could not make this change durable: {exc}"
                            )
                for event in item.events:
                    self.events.publish(event)
                for pending in item.done:
                    pending.done.set()
                self._unannounced.remove(item)
                if not self._unannounced:
                    self._durable_now.set()

    async def _isolate(self, ran: list[_Pending[Any]], exc: Exception) -> None:
        """The group failed as a whole, not by a conflict (e.g. a batch broke a constraint):
        nothing of it was applied, so run each op alone and only the faulty one fails."""
        if len(ran) == 1:
            ran[0].error = exc
            ran[0].done.set()
            return
        for pending in ran:
            pending.result = None
            await self._process([pending])

    async def _prepare(self, group: list[_Pending[Any]]) -> dict[str, JobRow]:
        loose: dict[str, JobRow] = {}
        for pending in group:
            for job_id in pending.op.jobs:
                if job_id not in self.state.jobs:
                    await self.load(job_id)
            for job_id in pending.op.job_rows:
                if job_id not in self.state.jobs and job_id not in loose:
                    row = await self.store.get_job(job_id)
                    if row is not None:
                        loose[job_id] = row
        return loose

    async def load(self, job_id: str) -> JobState | None:
        """Take a job in hand from the store (its rows, and its spec typed)."""
        record = await self.store.load_job(job_id)
        if record is None:
            self.state.jobs.pop(job_id, None)
            return None
        job_state = await self._job_state(record)
        self.state.add(job_state)
        return job_state

    async def _job_state(self, record: JobRecord, spec: LoadedSpec | None = None) -> JobState:
        error = record.spec_error
        if spec is None and error is None:
            cached = self.state.jobs.get(record.job.job_id)
            if (
                cached is not None
                and cached.spec is not None
                and (cached.job.spec_fingerprint == record.job.spec_fingerprint)
            ):
                spec = cached.spec
            else:
                data = record.spec or {}
                try:
                    spec = await anyio.to_thread.run_sync(self._load_spec, data)
                except Exception as exc:  # any failure to load fails that job alone
                    error = str(exc)
        state = JobState(record.job, record.sheets, spec, error, self.state.hold_key_for)
        state.replace_job(record.job)
        return state

    async def _refresh(self, retry: list[_Pending[Any]]) -> None:
        """After a conflict: re-read what the refused ops touched."""
        jobs: set[str] = set()
        for pending in retry:
            jobs.update(pending.op.jobs)
            jobs.update(pending.op.job_rows)
        self.state.holds = {h.hold_key: h for h in await self.store.holds()}
        live = {
            (a.job_id, a.sheet_num, a.attempt): a for a in await self.store.in_flight_attempts()
        }
        for key in list(self.state.attempts):
            if key in live:
                self.state.attempts[key] = live[key]
            else:
                # Finished by someone else: another conductor reclaimed it after its lease
                # lapsed. Its result is not ours to record any more (fencing).
                del self.state.attempts[key]
        # The job rows last, the ones most likely to move again before the retry is written.
        for job_id in jobs:
            if job_id in self.state.jobs:
                await self.load(job_id)

    # ----- after a commit ------------------------------------------------------------------

    def _let_go(self, touched: set[str], finished_before: set[str]) -> None:
        """Drop the jobs that are done with from the view (they are read from the store from
        now on), and report those that became so."""
        for job_id in touched:
            held = self.state.jobs.get(job_id)
            if held is not None and _finished(held):
                del self.state.jobs[job_id]
                if job_id not in finished_before:
                    self.on_finished(held.job)

    async def renew_leases(
        self, conductor_id: str, until: datetime, renewed_at: datetime
    ) -> list[tuple[str, int, int]]:
        """Extend this conductor's claim on its in-flight attempts (renewed at `renewed_at`,
        which is when one of them ends if this conductor dies). Returns those that are
        not its any more: another conductor reclaimed them after their lease lapsed (this
        one was cut off or stopped for longer than a lease), so their results will be
        refused and their processes should end."""
        renewed = await self.store.renew_leases(conductor_id, until, renewed_at)
        mine = [k for k, a in self.state.attempts.items() if a.conductor_id == conductor_id]
        for key in mine:
            held = self.state.attempts[key]
            held.lease_expires_at, held.lease_renewed_at = until, renewed_at
        if renewed >= len(mine):
            return []
        live = {
            (a.job_id, a.sheet_num, a.attempt)
            for a in await self.store.in_flight_attempts()
            if a.conductor_id == conductor_id
        }
        lost = [k for k in mine if k not in live and k in self.state.attempts]
        if lost:
            log.warning(
                "attempts were reclaimed by another conductor; their results will be refused",
                attempts=[f"{j}/{n}/{a}" for j, n, a in lost],
            )
        return lost

    @property
    def serving(self) -> bool:
        return self._serving


def _finished(job_state: JobState) -> bool:
    return job_state.job.status.is_terminal and not job_state.running
