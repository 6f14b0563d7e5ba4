"""What the engine keeps in memory: the committed rows of every job it has in hand, and the
ready index the dispatcher reads (ready sheets per job and hold key, running sheets, waits).

The store stays the truth. These structures are a cache of committed rows, changed only by
the writer, in the same step as each commit, and rebuilt from the store at start (or after a
compare-and-set conflict shows another writer moved a job on).
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio

from podium.core.models import JobStatus, SheetStatus, WaitingReason, counts_as_done
from podium.core.runner.process import RunControl
from podium.core.spec.loader import LoadedSpec
from podium.core.store.rows import AttemptRow, HoldRow, JobRow, SheetRow

DISPATCHABLE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
# A moment the dispatcher must act at: (when, kind, job_id, sheet_num); kind is "wait" (a
# waiting sheet's time comes) or "deadline" (the job's deadline_seconds run out).
Timer = tuple[datetime, str, str, int]
_STARTABLE = frozenset({SheetStatus.PENDING, SheetStatus.WAITING})
# Why a ready sheet may be shown waiting although nothing of its own holds it (holding.py).
HELD_BACK = frozenset({WaitingReason.RATE_LIMIT, WaitingReason.BACKPRESSURE})


def own_key(instrument: str) -> str:
    """An instrument outside any quota pool waits behind a hold of its own name."""
    return instrument


@dataclass
class RunningSheet:
    """An attempt this conductor runs: how to reach its process, and why it is stopped."""

    job_id: str
    sheet_num: int
    attempt: int
    control: RunControl = field(default_factory=RunControl)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the conductor is stopping this attempt: "cancel", "deadline" or "shutdown".
    stop_reason: str | None = None
    # Its processes are gone and its result is on the way to the store: its slot is free.
    ended: bool = False
    # The graceful stop recorded it interrupted itself (its runner overran the kill
    # sequence): the runner's late result is dropped as expected, not as a lost lease.
    recorded_by_stop: bool = False


class JobState:
    """One job's committed rows plus the derived indexes that make each transition O(1):
    unmet dependency counts, ready heaps per hold key, status counts, running sheets."""

    def __init__(
        self,
        job: JobRow,
        sheets: list[SheetRow],
        spec: LoadedSpec | None,
        spec_error: str | None,
        key_of: Callable[[str], str] = own_key,
    ) -> None:
        self.job = job
        self.spec = spec
        self.spec_error = spec_error
        self.sheets: dict[int, SheetRow] = {s.sheet_num: s for s in sheets}
        self.children: dict[int, list[int]] = {n: [] for n in self.sheets}
        for sheet in sheets:
            for dep in sheet.depends_on:
                if dep in self.children:
                    self.children[dep].append(sheet.sheet_num)
        self.depth = _depths(self.sheets)
        self.counts: Counter[SheetStatus] = Counter(s.status for s in sheets)
        self.unmet: dict[int, int] = {}
        self.running: set[int] = set()
        # Waiting sheets and when their wait ends (a timer in the dispatcher).
        self.waiting: dict[int, datetime] = {}
        self._heaps: dict[str, list[tuple[int, int, int]]] = {}
        self._ready: dict[str, set[int]] = {}
        self._key: dict[int, str] = {}
        self._key_of = key_of
        # Ready sheets whose row says they wait for a hold or for backpressure: when that is
        # over they go back to pending (holding.py) without a scan of every sheet.
        self.held_back: set[int] = set()
        # Where new timers go (the dispatcher drains it); set by EngineState.add.
        self.timers: list[Timer] | None = None
        self._deadline_timer: datetime | None = None
        for sheet in sheets:
            self._key[sheet.sheet_num] = key_of(sheet.instrument)
            self.unmet[sheet.sheet_num] = sum(
                1 for d in sheet.depends_on if d in self.sheets and not _done(self.sheets[d])
            )
        for sheet in sheets:
            self._enter(sheet)

    # ----- reading ---------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def dispatchable(self) -> bool:
        return self.job.status in DISPATCHABLE and self.spec_error is None

    @property
    def max_parallel(self) -> int:
        return self.spec.spec.concurrency.max_parallel_sheets if self.spec else 1

    @property
    def open_sheets(self) -> int:
        """Sheets not yet terminal; the job is done when this reaches 0."""
        return sum(n for status, n in self.counts.items() if not status.is_terminal)

    @property
    def deadline(self) -> datetime | None:
        seconds = self.spec.spec.deadline_seconds if self.spec else None
        if seconds is None or self.job.started_at is None:
            return None
        return self.job.started_at + timedelta(seconds=seconds)

    def ready_keys(self) -> dict[str, int]:
        """Ready sheets per hold key (only keys with any)."""
        return {k: len(v) for k, v in self._ready.items() if v}

    def ready_behind(self, key: str) -> list[int]:
        """The ready sheets behind hold key `key`, in sheet order."""
        return sorted(self._ready.get(key, ()))

    def best_ready(self, n: int, keys: Collection[str]) -> list[tuple[int, str]]:
        """The first `n` ready sheets behind `keys`, in the order the dispatcher takes them
        (sheet, key), found by walking the heaps from their tops: a few steps, not a scan."""
        frontier: list[tuple[tuple[int, int, int], str, int]] = []
        for key in keys:
            heap = self._heaps.get(key)
            if heap:
                frontier.append((heap[0], key, 0))
        heapq.heapify(frontier)
        found: list[tuple[int, str]] = []
        seen: set[int] = set()
        while frontier and len(found) < n:
            entry, key, index = heapq.heappop(frontier)
            heap = self._heaps[key]
            num = entry[2]
            if num in self._ready.get(key, ()) and num not in seen:
                seen.add(num)
                found.append((num, key))
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], key, child))
        return found

    def ready_count(self) -> int:
        return sum(len(v) for v in self._ready.values())

    def is_ready(self, sheet_num: int) -> bool:
        return sheet_num in self._ready.get(self._key[sheet_num], ())

    def hold_key(self, sheet_num: int) -> str:
        return self._key[sheet_num]

    def peek(self, key: str) -> tuple[int, int, int] | None:
        """The order key of the best ready sheet behind hold key `key`, or None."""
        heap = self._heaps.get(key)
        ready = self._ready.get(key)
        while heap:
            entry = heap[0]
            if ready is not None and entry[2] in ready:
                return entry
            heapq.heappop(heap)  # stale: the sheet left the ready set since it was pushed
        return None

    def pop(self, key: str) -> int | None:
        """Take the best ready sheet behind `key` out of the ready set (it is starting)."""
        entry = self.peek(key)
        if entry is None:
            return None
        heapq.heappop(self._heaps[key])
        self._ready[key].discard(entry[2])
        self.held_back.discard(entry[2])
        return entry[2]

    def push_back(self, sheet_num: int) -> None:
        """Undo `pop` for a sheet that did not start after all."""
        sheet = self.sheets[sheet_num]
        if sheet_num in self.waiting:
            # Its row was made to wait (a hold shown on it) after the pick: the timer brings
            # it back, as for any wait.
            return
        if sheet.status in _STARTABLE and self.unmet[sheet_num] == 0:
            self._make_ready(sheet)

    # ----- changing (the writer only, after a commit) ---------------------------------------

    def replace_job(self, job: JobRow) -> None:
        job.completed_sheets = self.counts[SheetStatus.COMPLETED]
        job.failed_sheets = self.counts[SheetStatus.FAILED]
        job.total_sheets = len(self.sheets)
        self.job = job
        self.announce_timers()

    def announce_timers(self) -> None:
        """Hand the dispatcher the moments this job needs it at (once each)."""
        if self.timers is None:
            return
        deadline = self.deadline
        if deadline is not None and deadline != self._deadline_timer and self.dispatchable:
            self._deadline_timer = deadline
            self.timers.append((deadline, "deadline", self.job_id, 0))
        if self.spec_error is not None and self.job.status in DISPATCHABLE:
            # Due at once: the job fails for its spec as soon as it would run.
            self.timers.append((self.job.updated_at, "spec", self.job_id, 0))

    def clear_deadline_timer(self, when: datetime) -> None:
        """The deadline timer fired (acted on or not); a later start may set a new one."""
        if self._deadline_timer == when:
            self._deadline_timer = None

    def replace_sheet(self, new: SheetRow, now: datetime) -> None:
        num = new.sheet_num
        old = self.sheets.get(num)
        if old is None:
            raise KeyError(f"sheet {num} of job {self.job_id} is not known; rebuild the job")
        self.sheets[num] = new
        if old.status is not new.status:
            self.counts[old.status] -= 1
            self.counts[new.status] += 1
            if _done(old) != _done(new):
                step = -1 if _done(new) else 1
                for child in self.children[num]:
                    self.unmet[child] += step
                    if step < 0 and self.unmet[child] == 0:
                        self._enter(self.sheets[child], now)
                    elif step > 0:
                        self._leave_ready(child)
        self._leave(old)
        if old.instrument != new.instrument:
            # Moved to a fallback: it waits behind that instrument's holds from now on.
            self._key[num] = self._key_of(new.instrument)
        self._enter(new, now)

    def wait_over(self, sheet_num: int, now: datetime) -> bool:
        """A waiting sheet's time came: it is ready (if nothing else holds it)."""
        sheet = self.sheets.get(sheet_num)
        if sheet is None or sheet.status is not SheetStatus.WAITING:
            return False
        until = self.waiting.get(sheet_num)
        if until is None or until > now:
            return False
        del self.waiting[sheet_num]
        if self.unmet[sheet_num] == 0:
            self._make_ready(sheet)
        return True

    def _leave(self, old: SheetRow) -> None:
        num = old.sheet_num
        self.running.discard(num)
        self.waiting.pop(num, None)
        self._leave_ready(num)

    def _leave_ready(self, num: int) -> None:
        self.held_back.discard(num)
        ready = self._ready.get(self._key[num])
        if ready is not None:
            ready.discard(num)

    def _enter(self, sheet: SheetRow, now: datetime | None = None) -> None:
        num = sheet.sheet_num
        if sheet.status is SheetStatus.RUNNING:
            self.running.add(num)
            return
        until = sheet.waiting_until if sheet.status is SheetStatus.WAITING else None
        if until is not None and (now is None or until > now):
            self.waiting[num] = until
            if self.timers is not None:
                self.timers.append((until, "wait", self.job_id, num))
            return
        if sheet.status in _STARTABLE and self.unmet[num] == 0:
            self._make_ready(sheet)

    def _make_ready(self, sheet: SheetRow) -> None:
        key = self._key[sheet.sheet_num]
        ready = self._ready.setdefault(key, set())
        if sheet.sheet_num in ready:
            return
        ready.add(sheet.sheet_num)
        if sheet.status is SheetStatus.WAITING and sheet.waiting_reason in HELD_BACK:
            self.held_back.add(sheet.sheet_num)
        # Retries first (they already ran once), then shallow DAG depth (independent branches
        # progress side by side), then sheet number.
        entry = (-sheet.retries_used, self.depth[sheet.sheet_num], sheet.sheet_num)
        heapq.heappush(self._heaps.setdefault(key, []), entry)

    def descendants(self, sheet_num: int) -> set[int]:
        found: set[int] = set()
        stack = [sheet_num]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def ancestors(self, sheet_num: int) -> Iterator[int]:
        seen: set[int] = set()
        stack = list(self.sheets[sheet_num].depends_on)
        while stack:
            num = stack.pop()
            if num not in seen and num in self.sheets:
                seen.add(num)
                yield num
                stack.extend(self.sheets[num].depends_on)


def _done(sheet: SheetRow) -> bool:
    return counts_as_done(sheet.status, sheet.error_category)


def _depths(sheets: dict[int, SheetRow]) -> dict[int, int]:
    depths: dict[int, int] = {}
    for start in sheets:
        if start in depths:
            continue
        # Iterative post-order: a 10,000-sheet chain must not hit the recursion limit.
        stack: list[tuple[int, bool]] = [(start, False)]
        while stack:
            num, expanded = stack.pop()
            if num in depths:
                continue
            deps = [d for d in sheets[num].depends_on if d in sheets]
            if expanded:
                depths[num] = 1 + max((depths[d] for d in deps), default=0)
                continue
            stack.append((num, True))
            # Specs are checked acyclic at submit, so this terminates.
            stack.extend((d, False) for d in deps if d not in depths)
    return depths


class EngineState:
    """Every job the engine has in hand, the holds, and the attempts this conductor runs."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobState] = {}
        self.holds: dict[str, HoldRow] = {}
        # In-flight attempts this conductor started (the rows, for their final write).
        self.attempts: dict[tuple[str, int, int], AttemptRow] = {}
        self.running: dict[tuple[str, int], RunningSheet] = {}
        # Picks whose start is being committed: not running yet, but a released hold they
        # sit behind already has its one sheet going first.
        self.starting: set[tuple[str, int]] = set()
        # Slots in use, in total and by job: attempts whose processes still run, and picks
        # whose start is being committed.
        self.live = 0
        self.live_by_job: dict[str, int] = {}
        self.timers: list[Timer] = []
        self._busy = anyio.Event()
        # Instrument -> the hold its sheets wait behind (its quota pool); absent: its own.
        self._hold_keys: dict[str, str] = {}
        # Bumped whenever instruments move to other holds (see `set_hold_keys`).
        self.key_generation = 0

    def hold_key_for(self, instrument: str) -> str:
        return self._hold_keys.get(instrument, instrument)

    def set_hold_keys(self, keys: Mapping[str, str]) -> bool:
        """Take the catalog's pools (instrument -> hold key; instruments outside a pool may
        be left out). Returns whether any instrument moved to another hold: the caller then
        rebuilds the jobs in hand, whose ready sets are kept by hold key."""
        fresh = {i: k for i, k in keys.items() if k != i}
        if fresh == self._hold_keys:
            return False
        self._hold_keys = fresh
        self.key_generation += 1
        return True

    def started_running(self) -> None:
        self._busy.set()

    async def wait_busy(self) -> None:
        """Return once this conductor runs at least one attempt."""
        while not self.running:
            if self._busy.is_set():
                self._busy = anyio.Event()
            await self._busy.wait()

    def add(self, job_state: JobState) -> None:
        self.jobs[job_state.job_id] = job_state
        job_state.timers = self.timers
        for num, until in job_state.waiting.items():
            self.timers.append((until, "wait", job_state.job_id, num))
        job_state.announce_timers()

    def reindex(self) -> None:
        """Index every job in hand again from its rows (after the hold keys changed)."""
        for old in list(self.jobs.values()):
            fresh = JobState(
                old.job, list(old.sheets.values()), old.spec, old.spec_error, self.hold_key_for
            )
            fresh.replace_job(old.job)
            self.add(fresh)

    def entries_for(self, job_id: str) -> list[RunningSheet]:
        return [e for (jid, _), e in self.running.items() if jid == job_id]

    def take_slot(self, job_id: str) -> None:
        self.live_by_job[job_id] = self.live_by_job.get(job_id, 0) + 1
        self.live += 1

    def free_slot(self, job_id: str) -> None:
        self.live -= 1
        left = self.live_by_job[job_id] - 1
        if left:
            self.live_by_job[job_id] = left
        else:
            del self.live_by_job[job_id]

    def add_running(self, entry: RunningSheet) -> None:
        self.running[(entry.job_id, entry.sheet_num)] = entry
        self.take_slot(entry.job_id)

    def end_running(self, entry: RunningSheet) -> None:
        """The attempt's processes are gone: its slot is free, though its result may still
        be on the way to the store (the sheet stays `running` there until it lands)."""
        if entry.ended:
            return
        entry.ended = True
        self.free_slot(entry.job_id)

    def drop_running(self, entry: RunningSheet) -> None:
        self.end_running(entry)
        if self.running.get((entry.job_id, entry.sheet_num)) is entry:
            del self.running[(entry.job_id, entry.sheet_num)]

    def held_keys(self, now: datetime) -> set[str]:
        return {k for k, h in self.holds.items() if not h.released and h.until > now}

    def released_keys(self) -> set[str]:
        return {k for k, h in self.holds.items() if h.released}
