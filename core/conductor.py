"""The `Conductor`: the one facade the MCP server and the CLI call.

It owns a home (exclusive lock), the store, the instrument catalog and the engine (the one
writer of the store and the dispatch loop), and turns facade calls into engine calls; views
read the store. What a call needs beyond that lives beside it: specs coming in (intake.py),
the status (conductor_status.py), waiting for changes (change_wait.py), approvals, tasks,
diagnose and estimate (insight.py), and clearing jobs (housekeeping.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import anyio
import structlog

from podium.core import change_wait
from podium.core.approvals import Approvals, sheet_number
from podium.core.checkpoint import LiveOutput, read_checkpoint, read_job
from podium.core.conductor_status import behind, conductor_status
from podium.core.config import PodiumConfig, load_config, reloaded, setting_source
from podium.core.diagnosis_answer import Diagnosis
from podium.core.engine.engine import Engine
from podium.core.errors import NotFoundError, PodiumError, job_not_found, quoted
from podium.core.estimate import Estimate
from podium.core.events import EventBus
from podium.core.home import HomeLock, ensure_home
from podium.core.housekeeping import Housekeeping
from podium.core.insight import Insight
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.intake import Intake, SpecSource
from podium.core.job_hooks import ChainLink, JobHooks
from podium.core.job_tasks import JobTasks
from podium.core.logview import LogReader
from podium.core.models import HistoryEntry, JobDetail, JobStatus, JobSummary, SheetStatus, utcnow
from podium.core.placement import placed
from podium.core.pressure import ResourceMonitor, ResourceSample
from podium.core.runner import cgroups, reaper
from podium.core.snapshots import SnapshotInfo, SnapshotStore
from podium.core.store.base import Store
from podium.core.store.open import open_store
from podium.core.store.rows import JobQuery, JobRow, TaskRow
from podium.core.views import (
    ClearResult,
    ConductorStatus,
    LogChunk,
    ReloadResult,
    SubmittedJob,
    ValidationReport,
)

log = structlog.get_logger("podium.conductor")

# Snapshot cleanup runs when the oldest snapshot expires, but at most this often.
MAINTENANCE_MIN_INTERVAL_SECONDS = 60.0
SNAPSHOT_WAIT_SECONDS = 5.0


class Conductor:
    def __init__(
        self,
        config: PodiumConfig,
        *,
        dispatch: bool = True,
        read_only: bool = False,
        overrides: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
        zone: tzinfo | None = None,
    ) -> None:
        """`dispatch=False` opens the home for control calls only (the CLI's pause, cancel...
        when no server runs): nothing is started, and stopping pauses nothing.
        `read_only=True` only reads the store, without the home lock, so the CLI can show
        jobs while another process owns the home (WAL lets readers run beside the writer).
        `clock` and `zone` date the reset times AI CLIs print ("resets 1pm"): tests freeze
        them; `zone` defaults to the machine's, where the CLIs print them."""
        self.config = config
        # CLI flags keep winning over config.yaml when the config is reloaded.
        self._overrides = dict(overrides or {})
        # Said in the status and conductor.json: a CLI configured for another store names it.
        self.store_source = setting_source(config, "store_url", self._overrides)
        self.read_only = read_only
        self.dispatch = dispatch and not read_only
        self.events = EventBus()
        self._lock = HomeLock(config.lock_path)
        self._stack: AsyncExitStack | None = None
        self._store: Store | None = None
        self._engine: Engine | None = None
        self._snapshot_added = anyio.Event()
        self._snapshots: SnapshotStore | None = None
        self.catalog: InstrumentCatalog | None = None
        self._started_monotonic = 0.0
        self._stopping = False
        self._stop_begun = anyio.Event()
        self.monitor: ResourceMonitor | None = None
        self._clock = clock
        self._zone = zone
        self._job_hooks: JobHooks | None = None
        self.tasks = JobTasks(self)
        self.insight = Insight(self)
        self.approvals = Approvals(self)
        self.intake = Intake(self)
        self.housekeeping = Housekeeping(self, self._on_terminal)

    # ----- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the home, open the store, reconcile a previous crash, start dispatching.
        `stop()` must be called from the same task (it closes the background task group)."""
        ensure_home(self.config)
        if not self.read_only:
            self._lock.acquire()
        stack = AsyncExitStack()
        try:
            stack.callback(self._lock.release)
            self._store = await open_store(self.config)
            stack.push_async_callback(self._store.close)
            self.catalog = await self._load_catalog()
            self._snapshots = SnapshotStore(
                self.config.snapshots_dir, self._store, self.config.logs_dir
            )
            self.monitor = await anyio.to_thread.run_sync(
                lambda: ResourceMonitor(
                    self.config.max_memory_mb,
                    self.config.max_processes,
                    self.config.monitor_interval_seconds,
                )
            )
            if not self.read_only and self.dispatch:
                # Attempts get pids cgroups where the kernel offers them: bounded in number,
                # and nothing they start can leave (SPEC §9 trap 15).
                home = str(self.config.home)
                if cgroups.enable(home, self.config.max_processes):
                    stack.callback(cgroups.disable, home)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            if not self.read_only:
                engine = Engine(
                    self.config,
                    self._store,
                    self.catalog,
                    self.events,
                    self._on_terminal,
                    clock=self._clock,
                    zone=self._zone,
                )
                engine.set_pressure(self.monitor.last.level, self.monitor.last.reason)
                self._engine = engine
                recovered = await engine.start(task_group, recover=True, dispatch=self.dispatch)
                if recovered:
                    log.info("reconciled jobs after restart", job_ids=recovered)
                await self.housekeeping.reconcile_files()
            if self.dispatch:
                assert self._engine is not None
                self._job_hooks = JobHooks(
                    lambda: self.store,
                    self._engine.hook_done,
                    self.submit_job,
                    record_follow_up=self._engine.record_follow_up,
                    base_env={**os.environ, "PODIUM_HOME": str(self.config.home)},
                    kill_grace_seconds=self.config.kill_grace_seconds,
                )
                task_group.start_soon(self._job_hooks.serve)
                task_group.start_soon(self._maintenance)
                task_group.start_soon(self.tasks.purge_expired)
                task_group.start_soon(self.tasks.finish_ended)
                task_group.start_soon(self._sample_while_busy)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._started_monotonic = time.monotonic()
        log.info("conductor started", home=str(self.config.home), pid=os.getpid())

    async def stop(self) -> None:
        """Graceful stop: running sheets are ended and their jobs paused (`shutdown`)."""
        if self._stack is None:
            return
        self.begin_stop()
        self._stopping = True
        if self._job_hooks is not None:
            self._job_hooks.stopping = True
        if self._engine is not None:
            with anyio.CancelScope(shield=True):
                await self._engine.shutdown()
        # Not inside the shield: the task group's own cancel scope must exit in the task's
        # current scope.
        stack, self._stack = self._stack, None
        await stack.aclose()
        log.info("conductor stopped", home=str(self.config.home))

    def begin_stop(self) -> None:
        """The conductor is about to stop: every long-poll (`wait_for_change`, run_job's
        wait) returns what it has now. A server calls this before it closes its connections,
        so a waiting client gets its answer rather than a connection cut mid-wait."""
        self._stop_begun.set()

    @property
    def stop_begun(self) -> anyio.Event:
        return self._stop_begun

    async def __aenter__(self) -> Conductor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise PodiumError("the conductor is not started")
        return self._store

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise PodiumError(
                "the conductor is not started"
                if self._store is None
                else "this conductor only reads the store (another process owns the home)"
            )
        return self._engine

    # The name earlier callers used for the engine.
    manager = engine

    @property
    def snapshots(self) -> SnapshotStore:
        if self._snapshots is None:
            raise PodiumError("the conductor is not started")
        return self._snapshots

    @property
    def engine_or_none(self) -> Engine | None:
        """The engine, or None before the start and in a conductor that only reads the
        store."""
        return self._engine

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def accepting(self) -> bool:
        """Started and not stopping."""
        return not self._stopping and self._stack is not None

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self._started_monotonic

    async def _maintenance(self) -> None:
        """Remove expired snapshots; sleeps until the oldest one expires (or, with none, until
        one is taken), never on a fixed tick."""
        while True:
            ttl = self.config.snapshot_ttl_hours
            try:
                removed = await anyio.to_thread.run_sync(self.snapshots.cleanup, ttl)
                if removed:
                    log.info("expired snapshots removed", count=removed)
                expiry = await anyio.to_thread.run_sync(self.snapshots.next_expiry, ttl)
            except OSError:
                log.exception("snapshot cleanup failed")
                expiry = utcnow() + timedelta(hours=1)
            added = self._snapshot_added = anyio.Event()
            if expiry is None:
                await added.wait()
                continue
            delay = max(MAINTENANCE_MIN_INTERVAL_SECONDS, (expiry - utcnow()).total_seconds())
            await anyio.sleep(delay)

    async def _sample_while_busy(self) -> None:
        """Resource samples while sheets run; an idle conductor is sampled on demand (submit)
        instead of on a timer."""
        assert self.monitor is not None
        while True:
            await self.engine.wait_busy()
            await anyio.sleep(self.monitor.interval_seconds)
            self._on_sample(await anyio.to_thread.run_sync(self.monitor.sample))
            if reaper.active():
                # Orphans adopted from sheets that ended on their own, while sheets still run.
                await anyio.to_thread.run_sync(reaper.reap_adopted)

    def _on_sample(self, sample: ResourceSample) -> None:
        self.engine.set_pressure(sample.level, sample.reason)

    async def reload(self) -> ReloadResult:
        """Re-read config.yaml (and the environment) and apply what can change live."""
        fresh = await anyio.to_thread.run_sync(
            lambda: load_config(home=self.config.home, overrides=self._overrides)
        )
        self.config, applied, not_applied = reloaded(self.config, fresh)
        self.engine.apply_config(self.config)
        if cgroups.enabled(str(self.config.home)):
            cgroups.enable(str(self.config.home), self.config.max_processes)
        if self.monitor is not None:
            self.monitor.set_limits(
                self.config.max_memory_mb,
                self.config.max_processes,
                self.config.monitor_interval_seconds,
            )
            self.engine.set_pressure(self.monitor.last.level, self.monitor.last.reason)
        self.catalog = await self._load_catalog()
        self.engine.catalog = self.catalog
        log.info("configuration reloaded", applied=applied, not_applied=not_applied)
        return ReloadResult(applied=applied, not_applied=not_applied)

    async def _load_catalog(self) -> InstrumentCatalog:
        catalog = await anyio.to_thread.run_sync(
            InstrumentCatalog.load, self.config.instruments_dir
        )
        for error in catalog.load_errors:  # else a refused override leaves the built-in, unsaid
            log.warning("instrument profile not loaded", error=error)
        return catalog

    async def _on_terminal(self, job: JobRow) -> None:
        if job.pending_hooks and self._job_hooks is not None:
            # In their own task: a slow webhook must not hold up views waiting on snapshots.
            self._job_hooks.enqueue(job.job_id)
        info = await self.snapshots.capture(job.job_id, job.workspace, job.spec_path)
        if info is not None:
            if not await self.engine.set_snapshot_path(job.job_id, info.path):
                # Cleared while it was being taken: nothing may stay of a job that is gone.
                await anyio.to_thread.run_sync(self.snapshots.delete_for_job, job.job_id)
                return
            self._snapshot_added.set()

    # ----- specs ----------------------------------------------------------------------------

    async def validate_spec(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        extra_roots: Sequence[Path] = (),
    ) -> ValidationReport:
        return await self.intake.validate(SpecSource(spec, spec_yaml, path, extra_roots))

    # ----- jobs -----------------------------------------------------------------------------

    async def submit_job(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        job_id: str | None = None,
        start: bool = True,
        extra_roots: Sequence[Path] = (),
        chain: ChainLink | None = None,
        task: Callable[[str], TaskRow] | None = None,
    ) -> SubmittedJob:
        return await self.intake.submit(
            SpecSource(spec, spec_yaml, path, extra_roots),
            job_id=job_id,
            start=start,
            chain=chain,
            task=task,
        )

    async def _job_row(self, job_id: str) -> JobRow:
        job = await self.store.get_job(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def get_job(
        self,
        job_id: str,
        *,
        sheet_status: Sequence[SheetStatus] | None = None,
        sheet_offset: int = 0,
        sheet_limit: int = 100,
        include_spec: bool = False,
    ) -> JobDetail:
        detail = await read_job(
            self.store,
            job_id,
            sheet_status=sheet_status,
            sheet_offset=sheet_offset,
            sheet_limit=sheet_limit,
            include_spec=include_spec,
            live=self._live_output(),
        )
        if detail is None:
            raise job_not_found(job_id)
        return await self._placed(detail)

    async def _placed(self, detail: JobDetail) -> JobDetail:
        # The engine holds every active job's spec: no store read for the common case.
        held = self._engine.state.jobs.get(detail.job_id) if self._engine is not None else None
        hosts = held.spec.spec.hosts if held is not None and held.spec is not None else None
        return await placed(self.store, self.config, detail, hosts)

    def _live_output(self) -> LiveOutput | None:
        # Only attempts this conductor runs have output in memory; a sheet another conductor
        # runs (a shared store) shows what the store has until its attempt ends.
        return self._engine.output_so_far if self._engine is not None else None

    async def checkpoint(self, job_id: str) -> JobDetail:
        detail = await read_checkpoint(self.store, job_id, self._live_output())
        if detail is None:
            raise job_not_found(job_id)
        return await self._placed(detail)

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] = (),
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobSummary], str | None]:
        query = JobQuery(
            statuses=tuple(statuses), name=name, label=label, limit=limit, cursor=cursor
        )
        rows, next_cursor = await self.store.query_jobs(query)
        return [r.summary() for r in rows], next_cursor

    async def list_jobs_json(
        self,
        *,
        statuses: Sequence[JobStatus] = (),
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """`list_jobs` as the JSON of `{jobs, next_cursor}`, each summary built straight
        from its row (the MCP tool's answer: no model per row only to be dumped again)."""
        query = JobQuery(
            statuses=tuple(statuses), name=name, label=label, limit=limit, cursor=cursor
        )
        rows, next_cursor = await self.store.query_jobs(query)
        return {"jobs": [r.summary_json() for r in rows], "next_cursor": next_cursor}

    async def pause_job(self, job_id: str, *, immediate: bool = False) -> JobSummary:
        return await self.engine.pause(job_id, immediate)

    async def resume_job(
        self,
        job_id: str,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        retry_failed: bool = True,
    ) -> JobSummary:
        changed = None
        if spec is not None or spec_yaml is not None or path is not None:
            await self._job_row(job_id)
            changed = await self.intake.load(SpecSource(spec, spec_yaml, path))
        # A task that ended with the job stays ended: its final state is stored before the
        # job runs again (the resumed run is followed with a new task).
        await self.tasks.finish_jobs([job_id])
        return await self.engine.resume(job_id, changed, retry_failed)

    async def cancel_job(self, job_id: str) -> JobSummary:
        return await self.engine.cancel(job_id)

    async def clear_jobs(
        self,
        *,
        job_ids: Sequence[str] | None = None,
        statuses: Sequence[JobStatus] | None = None,
        older_than_hours: float | None = None,
        all_jobs: bool = False,
    ) -> ClearResult:
        """Delete finished jobs with their logs and snapshots (never workspaces, never active
        jobs). Filters combine with AND; with none, `all_jobs` must be set."""
        return await self.housekeeping.clear(
            job_ids=job_ids, statuses=statuses, older_than_hours=older_than_hours, all_jobs=all_jobs
        )

    async def get_execution_history(
        self, job_id: str, *, sheet_num: int | None = None, limit: int = 1000, offset: int = 0
    ) -> tuple[list[HistoryEntry], int]:
        await self._job_row(job_id)
        attempts, total = await self.store.get_history(job_id, sheet_num, limit, offset)
        return [a.entry() for a in attempts], total

    async def list_snapshots(self, job_id: str | None = None) -> list[SnapshotInfo]:
        if job_id is not None:
            await self._job_row(job_id)
        if self._engine is not None:
            # A job that just ended is listed with its snapshot, not a moment before it.
            with anyio.move_on_after(SNAPSHOT_WAIT_SECONDS):
                await self._engine.hooks_settled(job_id)
        return await anyio.to_thread.run_sync(self.snapshots.list_snapshots, job_id)

    async def cleanup_snapshots(self, max_age_hours: float | None = None) -> int:
        ttl = self.config.snapshot_ttl_hours if max_age_hours is None else max_age_hours
        return await anyio.to_thread.run_sync(self.snapshots.cleanup, ttl)

    # ----- logs -------------------------------------------------------------------------------

    async def read_logs(
        self,
        job_id: str,
        *,
        sheet: int | str | None = None,
        attempt: int | None = None,
        tail_lines: int = 200,
        offset: int | None = None,
    ) -> LogChunk:
        """A sheet attempt's log (latest attempt by default), or with no sheet the combined
        tail of every sheet's latest log. `offset` pages forward from a byte offset. A sheet
        is named by number or by name, as for `approve`."""
        job = await self._job_row(job_id)
        if isinstance(sheet, str):
            sheet = await sheet_number(self.store, job_id, sheet)
        reader = LogReader(self.store, self.config.logs_dir)
        return await reader.read(
            job, sheet=sheet, attempt=attempt, tail_lines=tail_lines, offset=offset
        )

    # ----- waiting for changes --------------------------------------------------------------

    async def wait_for_change(
        self,
        job_id: str | None,
        wait_seconds: float,
        on_tick: change_wait.OnTick | None = None,
        tick_seconds: float = 5.0,
    ) -> bool:
        """Wait until the job's status changes or it ends (any job's, without a job id), at
        most `wait_seconds` (change_wait.py), or the conductor begins to stop; whether
        something changed (a stop counts)."""
        job = await self._job_row(job_id) if job_id is not None else None
        changed = False
        async with change_wait.ended_by(self._stop_begun) as cut:
            changed = await change_wait.wait_for_change(
                self.events, self.store, job, wait_seconds, on_tick, tick_seconds
            )
        return changed or cut.short

    # ----- diagnose and estimate -------------------------------------------------------------

    async def diagnose(self, job_id: str) -> Diagnosis:
        """Why a job failed or is stuck, with next steps, in one answer of bounded size."""
        return await self.insight.diagnose(job_id)

    async def estimate(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        extra_roots: Sequence[Path] = (),
    ) -> Estimate:
        """Expected duration and cost of a spec from the history of similar jobs."""
        loaded = await self.intake.load(SpecSource(spec, spec_yaml, path, extra_roots))
        return await self.insight.estimate(loaded)

    # ----- rate limits ----------------------------------------------------------------------

    async def clear_rate_limits(self, instrument: str | None = None) -> list[str]:
        if (
            instrument is not None
            and self.catalog is not None
            and self.catalog.get(instrument) is None
        ):
            known = ", ".join(i.name for i in self.catalog.all())
            raise NotFoundError(
                f"instrument: unknown instrument {quoted(instrument)}; known: {known}"
            )
        keys = self.catalog.hold_keys() if self.catalog is not None else {}
        wanted = None
        if instrument is not None:
            # An instrument in a quota pool waits behind the pool's hold: lifting it lifts
            # the pool (its own name too, for a hold set before it joined the pool).
            wanted = sorted({instrument, keys.get(instrument, instrument)})
        lifted = await self.engine.lift_holds(wanted)
        return sorted({name for key in lifted for name in behind(keys, key)})

    # ----- conductor status -----------------------------------------------------------------

    async def status(self) -> ConductorStatus:
        return await conductor_status(self)


@asynccontextmanager
async def open_conductor(config: PodiumConfig) -> AsyncIterator[Conductor]:
    conductor = Conductor(config)
    await conductor.start()
    try:
        yield conductor
    finally:
        await conductor.stop()
