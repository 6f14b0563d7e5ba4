"""An op and the view it runs against.

An `Op` is one change: a rule run against a `Tx`, a view of the committed rows with the op's
own edits on top (and, within a group, the edits of the ops before it, at the versions they
will have once committed). Rules read rows freely and edit only copies the `Tx` hands out;
each copy carries the version it must still have in the store when written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from podium.core.engine.state import EngineState, JobState
from podium.core.errors import job_not_found
from podium.core.events import ChangeEvent
from podium.core.spec.loader import LoadedSpec
from podium.core.store.base import NewJob, WriteBatch
from podium.core.store.rows import AttemptRow, HoldRow, JobRow, SheetRow, TaskRow, clone

R = TypeVar("R")
AttemptKey = tuple[str, int, int]


@dataclass
class Op(Generic[R]):
    """A change to make: `apply` reads and edits rows through the `Tx` and returns what the
    caller gets back once the change is committed. It may run more than once (after a
    conflict), so it must not act on the world itself; `tx.after` schedules what runs once
    the commit is done."""

    apply: Callable[[Tx], R]
    jobs: Sequence[str] = ()  # jobs the op reads as a whole (rows, sheets and spec)
    job_rows: Sequence[str] = ()  # jobs the op needs only the row of
    name: str = "op"
    # The op decides on which of the job's sheets run here (cancel, pause, a deadline): it
    # never shares a group with an earlier op that starts sheets of the job, whose running
    # entries exist only once that start is committed.
    sees_running: bool = False


class Layer:
    """Rows edited but not yet committed, keyed by identity, and the version each of those
    rows will have once committed (what a later op of the same group must expect)."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRow] = {}
        self.sheets: dict[tuple[str, int], SheetRow] = {}
        self.attempts: dict[AttemptKey, AttemptRow] = {}
        self.holds: dict[str, HoldRow | None] = {}
        self.versions: dict[tuple[str, Any], int] = {}
        self.inserted: set[str] = set()  # jobs inserted by an op of the group
        self.starting: set[str] = set()  # jobs an op of the group starts sheets of


class Tx:
    """One op's view: its own edits, over earlier ops of the same group, over what is
    committed. Reads return rows to look at (never to change); `edit_*` returns this op's
    own copy to change, carrying the version the row is expected to have when written."""

    def __init__(
        self, state: EngineState, group: Layer, loose: dict[str, JobRow], now: datetime
    ) -> None:
        self.now = now
        self._state = state
        self._group = group
        self._loose = loose
        self._own = Layer()
        self._locks: dict[str, int] = {}
        self.new_jobs: list[NewJob] = []
        self.new_specs: dict[str, LoadedSpec] = {}
        self.specs: dict[str, LoadedSpec] = {}  # replaced specs
        self.new_sheets: list[SheetRow] = []
        self._added: dict[tuple[str, int], SheetRow] = {}
        self.new_attempts: list[AttemptRow] = []
        self.deleted_jobs: list[JobRow] = []
        self.new_tasks: list[TaskRow] = []
        self.deleted_tasks: list[str] = []
        self.finished_tasks: list[TaskRow] = []
        self.events: list[ChangeEvent] = []
        self._after: list[Callable[[], None]] = []
        self._starting: set[str] = set()

    # ----- reading ---------------------------------------------------------------------------

    def state(self, job_id: str) -> JobState:
        found = self._state.jobs.get(job_id)
        if found is None:
            raise job_not_found(job_id)
        return found

    def has_job(self, job_id: str) -> bool:
        return (
            job_id in self._own.jobs
            or job_id in self._group.jobs
            or job_id in self._state.jobs
            or job_id in self._loose
        )

    def job(self, job_id: str) -> JobRow:
        for layer in (self._own.jobs, self._group.jobs):
            if job_id in layer:
                return layer[job_id]
        found = self._state.jobs.get(job_id)
        if found is not None:
            return found.job
        loose = self._loose.get(job_id)
        if loose is None:
            raise job_not_found(job_id)
        return loose

    def committed_job(self, job_id: str) -> JobRow | None:
        """The job row as it was before this op (with the group's earlier edits)."""
        if job_id in self._group.jobs:
            return self._group.jobs[job_id]
        found = self._state.jobs.get(job_id)
        return found.job if found is not None else self._loose.get(job_id)

    def spec_of(self, job_id: str) -> LoadedSpec | None:
        """The job's spec as this op leaves it (None when not in hand)."""
        if job_id in self.specs:
            return self.specs[job_id]
        found = self._state.jobs.get(job_id)
        return found.spec if found is not None else None

    def sheet(self, job_id: str, sheet_num: int) -> SheetRow:
        key = (job_id, sheet_num)
        added = self._added.get(key)
        if added is not None:
            return added
        for layer in (self._own.sheets, self._group.sheets):
            if key in layer:
                return layer[key]
        return self.state(job_id).sheets[sheet_num]

    def sheet_or_none(self, job_id: str, sheet_num: int) -> SheetRow | None:
        """The sheet as this op sees it, or None for a job (or sheet) not in view."""
        if (job_id, sheet_num) not in self._added and job_id not in self._state.jobs:
            return None
        try:
            return self.sheet(job_id, sheet_num)
        except KeyError:
            return None

    def sheets(self, job_id: str) -> dict[int, SheetRow]:
        """Every sheet of the job as this op sees it (O(sheets): not for the hot path)."""
        merged = dict(self.state(job_id).sheets)
        for layer in (self._group.sheets, self._own.sheets):
            for (jid, num), row in layer.items():
                if jid == job_id:
                    merged[num] = row
        for row in self.new_sheets:
            if row.job_id == job_id:
                merged[row.sheet_num] = row
        return merged

    def open_sheets(self, job_id: str) -> int:
        """Sheets of the job not terminal, counting this op's and the group's edits."""
        state = self.state(job_id)
        count = state.open_sheets
        seen: set[int] = set()
        for layer in (self._own.sheets, self._group.sheets):
            for (jid, num), row in layer.items():
                if jid != job_id or num in seen:
                    continue
                seen.add(num)
                before = state.sheets[num].status.is_terminal if num in state.sheets else True
                count += int(before) - int(row.status.is_terminal)
        count += sum(1 for r in self.new_sheets if r.job_id == job_id and not r.status.is_terminal)
        return count

    def attempt(self, key: AttemptKey) -> AttemptRow | None:
        for layer in (self._own.attempts, self._group.attempts):
            if key in layer:
                return layer[key]
        return self._state.attempts.get(key)

    def hold(self, key: str) -> HoldRow | None:
        for layer in (self._own.holds, self._group.holds):
            if key in layer:
                return layer[key]
        return self._state.holds.get(key)

    def holds(self) -> dict[str, HoldRow]:
        merged: dict[str, HoldRow | None] = dict(self._state.holds)
        merged.update(self._group.holds)
        merged.update(self._own.holds)
        return {k: v for k, v in merged.items() if v is not None}

    def _expected(self, kind: str, key: Any, row: Any) -> int:
        """The version `row` (as read) will have when this op's write of it is checked."""
        version: int = self._group.versions.get((kind, key), row.version)
        return version

    # ----- editing ---------------------------------------------------------------------------

    def edit_job(self, job_id: str) -> JobRow:
        row = self._own.jobs.get(job_id)
        if row is None:
            base = self.job(job_id)
            row = self._own.jobs[job_id] = clone(base)
            locked = self._locks.pop(job_id, 0)
            row.version = locked or self._expected("job", job_id, base)
        return row

    def lock_job(self, job_id: str) -> None:
        """Write the job row's version with this op even if nothing in it changes: every
        change to a job's sheets is then serialised against every other writer of the job, so
        no rule ever decides on sheets another writer has changed meanwhile."""
        if job_id not in self._own.jobs and job_id not in self._locks:
            self._locks[job_id] = self._expected("job", job_id, self.job(job_id))

    def edit_sheet(self, job_id: str, sheet_num: int) -> SheetRow:
        key = (job_id, sheet_num)
        added = self._added.get(key)
        if added is not None:
            return added  # inserted by this op: still ours to change
        row = self._own.sheets.get(key)
        if row is None:
            base = self.sheet(job_id, sheet_num)
            row = self._own.sheets[key] = clone(base)
            row.version = self._expected("sheet", key, base)
            self.lock_job(job_id)
        return row

    def add_sheet(self, row: SheetRow) -> None:
        self.new_sheets.append(row)
        self._added[(row.job_id, row.sheet_num)] = row
        self.lock_job(row.job_id)

    def add_attempt(self, row: AttemptRow) -> None:
        self.new_attempts.append(row)
        self._own.attempts[(row.job_id, row.sheet_num, row.attempt)] = row
        self.lock_job(row.job_id)

    def edit_attempt(self, row: AttemptRow, *, lock_job: bool = True) -> AttemptRow:
        """A copy of `row` (read here or from the store) to change and write back."""
        key = (row.job_id, row.sheet_num, row.attempt)
        own = self._own.attempts.get(key)
        if own is not None:
            return own
        base = self.attempt(key) or row
        edited = self._own.attempts[key] = clone(base)
        edited.version = self._expected("attempt", key, base)
        if lock_job:
            self.lock_job(row.job_id)
        return edited

    def edit_hold(self, key: str) -> HoldRow | None:
        """This op's copy of hold `key` to change (None when there is no such hold)."""
        own = self._own.holds.get(key)
        if own is not None or key in self._own.holds:
            return own
        base = self.hold(key)
        if base is None:
            return None
        edited = clone(base)
        edited.version = self._expected("hold", key, base)
        self._own.holds[key] = edited
        return edited

    def put_hold(self, row: HoldRow) -> None:
        """A new hold (version 0), or one from `edit_hold`."""
        self._own.holds[row.hold_key] = row

    def delete_hold(self, key: str) -> None:
        if self.hold(key) is not None:
            self._own.holds[key] = None

    def insert_job(self, job: JobRow, sheets: list[SheetRow], spec: LoadedSpec) -> None:
        self.new_jobs.append(NewJob(job, spec.to_storable(), sheets))
        self.new_specs[job.job_id] = spec

    def replace_spec(self, job_id: str, spec: LoadedSpec) -> None:
        self.specs[job_id] = spec
        self.lock_job(job_id)

    def delete_job(self, job_id: str) -> None:
        base = self.job(job_id)
        row = clone(base)
        row.version = self._expected("job", job_id, base)
        self.deleted_jobs.append(row)

    def insert_task(self, row: TaskRow) -> None:
        """A durable task, committed with the rest of this op (e.g. with its job)."""
        self.new_tasks.append(row)

    def delete_tasks(self, task_ids: Sequence[str]) -> None:
        self.deleted_tasks.extend(task_ids)

    def finish_task(self, row: TaskRow) -> None:
        """Write the task's final state (kept only if it has none yet: the first stands)."""
        self.finished_tasks.append(row)

    def starts_sheets(self, job_id: str) -> None:
        """This op starts sheets of the job (their running entries come once committed)."""
        self._starting.add(job_id)

    def publish(self, event: ChangeEvent) -> None:
        self.events.append(event)

    def after(self, action: Callable[[], None]) -> None:
        """Run `action` once this op's changes are committed and applied."""
        self._after.append(action)

    # ----- finishing -------------------------------------------------------------------------

    def batch(self) -> WriteBatch:
        own = self._own
        inserted = {(a.job_id, a.sheet_num, a.attempt) for a in self.new_attempts}
        batch = WriteBatch(
            new_jobs=list(self.new_jobs),
            jobs=list(own.jobs.values()),
            locks=dict(self._locks),
            specs={jid: spec.to_storable() for jid, spec in self.specs.items()},
            new_sheets=list(self.new_sheets),
            sheets=list(own.sheets.values()),
            new_attempts=list(self.new_attempts),
            attempts=[a for k, a in own.attempts.items() if k not in inserted],
            holds=[h for h in own.holds.values() if h is not None],
            deleted_holds=[],
            deleted_jobs=list(self.deleted_jobs),
            new_tasks=list(self.new_tasks),
            deleted_tasks=list(self.deleted_tasks),
            finished_tasks=list(self.finished_tasks),
        )
        for key, hold in own.holds.items():
            if hold is None:
                existing = self._group.holds.get(key) or self._state.holds.get(key)
                if existing is not None:
                    row = clone(existing)
                    row.version = self._expected("hold", key, existing)
                    batch.deleted_holds.append(row)
        return batch

    def merge_into(self, group: Layer) -> None:
        """Later ops of the group see this op's rows, and expect the versions they will have
        once this op's batch is committed."""
        versions = group.versions
        for jid, job in self._own.jobs.items():
            group.jobs[jid] = job
            versions[("job", jid)] = job.version + 1
        for jid, expected in self._locks.items():
            versions[("job", jid)] = expected + 1
        for key, sheet in self._own.sheets.items():
            group.sheets[key] = sheet
            versions[("sheet", key)] = sheet.version + 1
        for row in self.new_sheets:
            group.sheets[(row.job_id, row.sheet_num)] = row
            versions[("sheet", (row.job_id, row.sheet_num))] = 1
        for akey, attempt in self._own.attempts.items():
            group.attempts[akey] = attempt
            versions[("attempt", akey)] = attempt.version + 1
        for hkey, hold in self._own.holds.items():
            group.holds[hkey] = hold
            if hold is not None:
                versions[("hold", hkey)] = hold.version + 1
        for new in self.new_jobs:
            group.inserted.add(new.job.job_id)
        group.starting |= self._starting

    def touched_jobs(self) -> set[str]:
        jobs = set(self._own.jobs) | set(self._locks) | {n.job.job_id for n in self.new_jobs}
        return jobs | {j.job_id for j in self.deleted_jobs}

    def own(self) -> Layer:
        return self._own

    def actions(self) -> list[Callable[[], None]]:
        return self._after
