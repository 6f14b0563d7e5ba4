"""Shared state of the job manager: the store, the running-attempt table, the lock that
serialises every transition, and the small helpers every part of the manager uses."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.config import PodiumConfig
from podium.core.errors import FieldError, SpecError, job_not_found
from podium.core.events import ChangeEvent, EventBus
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.pressure import PressureLevel
from podium.core.runner.process import RunControl
from podium.core.scheduler import Limits
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.store.rows import JobRow, SheetRow
from podium.core.store.sqlite import SQLiteStore

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


class ManagerCore:
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
        # Jobs paused by a modify, to resume once their running sheets end -> retry_failed.
        self._pending_modify: dict[str, bool] = {}
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
            raise job_not_found(job_id)
        return job

    def _spec_for(self, job: JobRow) -> LoadedSpec:
        """The job's typed spec; raises SpecError when the stored spec no longer loads."""
        cached = self._specs.get(job.job_id)
        if cached is not None and cached[0] == job.spec_fingerprint:
            return cached[1]
        if job.spec_error is not None:
            raise SpecError([FieldError("", job.spec_error)])
        loaded = load_spec(data=job.spec)
        self._specs[job.job_id] = (job.spec_fingerprint, loaded)
        return loaded

    def _entries_for(self, job_id: str) -> list[RunningSheet]:
        return [e for (jid, _), e in self._running.items() if jid == job_id]

    async def _terminal(self, job: JobRow) -> None:
        self._specs.pop(job.job_id, None)
        if self._on_terminal is not None:
            try:
                await self._on_terminal(job)
            except Exception:
                log.exception("terminal hook failed", job_id=job.job_id)

    async def _wait_entries(self, entries: Sequence[RunningSheet]) -> None:
        with anyio.move_on_after(self.config.kill_grace_seconds + 2):
            for entry in entries:
                await entry.done.wait()
