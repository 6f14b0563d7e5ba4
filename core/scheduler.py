"""Global sheet scheduling: which ready sheets to start now, across all jobs.

Pure functions over rows read from the store, so "what is ready" is always derived from
persisted state (never from in-memory sets that a restart would lose).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from podium.core.models import JobStatus, SheetStatus
from podium.core.store.rows import JobRow, SheetRow

DISPATCHABLE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class Limits:
    max_concurrent_jobs: int
    max_concurrent_sheets: int


@dataclass
class JobState:
    job: JobRow
    sheets: list[SheetRow]
    max_parallel: int
    running: int = field(init=False)

    def __post_init__(self) -> None:
        self.running = sum(1 for s in self.sheets if s.status is SheetStatus.RUNNING)


def dag_depths(sheets: Sequence[SheetRow]) -> dict[int, int]:
    by_num = {s.sheet_num: s for s in sheets}
    depths: dict[int, int] = {}

    def depth(num: int) -> int:
        if num not in depths:
            deps = [d for d in by_num[num].depends_on if d in by_num]
            # Specs are checked acyclic at submit, so this recursion terminates.
            depths[num] = 1 + max((depth(d) for d in deps), default=0)
        return depths[num]

    for num in by_num:
        depth(num)
    return depths


def ready_sheets(
    sheets: Sequence[SheetRow], now: datetime, held_instruments: Collection[str]
) -> list[SheetRow]:
    """Sheets that may start now: dependencies completed, no wait pending, instrument free.

    Order: retries first (they were already running once), then shallow DAG depth (so
    independent branches progress side by side), then sheet number.
    """
    completed = {s.sheet_num for s in sheets if s.status is SheetStatus.COMPLETED}
    depths = dag_depths(sheets)
    ready = []
    for sheet in sheets:
        if sheet.status is SheetStatus.WAITING:
            if sheet.waiting_until is not None and sheet.waiting_until > now:
                continue
        elif sheet.status is not SheetStatus.PENDING:
            continue
        if not set(sheet.depends_on) <= completed:
            continue
        if sheet.instrument in held_instruments:
            continue
        ready.append(sheet)
    ready.sort(key=lambda s: (-s.retries_used, depths[s.sheet_num], s.sheet_num))
    return ready


def pick_dispatches(
    jobs: Sequence[JobState],
    limits: Limits,
    running_total: int,
    now: datetime,
    held_instruments: Collection[str] = (),
    one_per_instrument: Collection[str] = (),
) -> list[tuple[JobState, SheetRow]]:
    """Choose sheets to start, one slot at a time, by fair share: the job with the fewest
    running sheets goes next (then job priority, then age), so a small job submitted last
    gets a slot as soon as one frees instead of waiting behind a big job.

    `one_per_instrument`: instruments just released from a rate limit; only one of their
    sheets goes first, the rest follow once it has succeeded.
    """
    free = limits.max_concurrent_sheets - running_total
    if free <= 0:
        return []
    candidates: dict[str, list[SheetRow]] = {}
    for state in jobs:
        if state.job.status in DISPATCHABLE_JOB_STATUSES:
            candidates[state.job.job_id] = ready_sheets(state.sheets, now, held_instruments)
    active_jobs = sum(1 for s in jobs if s.running > 0)
    picked: list[tuple[JobState, SheetRow]] = []
    # A released instrument whose first sheet is already running lets nothing else through.
    released_used: set[str] = {
        sheet.instrument
        for state in jobs
        for sheet in state.sheets
        if sheet.status is SheetStatus.RUNNING and sheet.instrument in one_per_instrument
    }
    while free > 0:
        eligible = []
        for state in jobs:
            queue = candidates.get(state.job.job_id)
            if not queue or state.running >= state.max_parallel:
                continue
            if state.running == 0 and active_jobs >= limits.max_concurrent_jobs:
                continue
            eligible.append(state)
        if not eligible:
            break
        state = min(
            eligible,
            key=lambda s: (s.running, s.job.priority, s.job.submitted_at, s.job.job_id),
        )
        queue = candidates[state.job.job_id]
        sheet = queue.pop(0)
        if sheet.instrument in one_per_instrument:
            if sheet.instrument in released_used:
                continue
            released_used.add(sheet.instrument)
        if state.running == 0:
            active_jobs += 1
        state.running += 1
        picked.append((state, sheet))
        free -= 1
    return picked


def next_wakeup(jobs: Sequence[JobState], held_until: Mapping[str, datetime]) -> datetime | None:
    """The earliest moment a waiting sheet or a held instrument becomes free."""
    times = [
        s.waiting_until
        for state in jobs
        for s in state.sheets
        if s.status is SheetStatus.WAITING and s.waiting_until is not None
    ]
    times += list(held_until.values())
    return min(times) if times else None
