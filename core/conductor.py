"""The `Conductor`: the one facade the MCP server and the CLI call.

It owns a home (exclusive lock), the store, the instrument catalog and the engine (the one
writer of the store and the dispatch loop), and turns facade calls into engine calls; views
read the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import anyio
import structlog

from podium.core.approvals import (
    PENDING_APPROVALS_SHOWN,
    Approvals,
    approval_list,
    sheet_number,
)
from podium.core.checkpoint import LiveOutput, read_checkpoint, read_job
from podium.core.config import PodiumConfig, load_config
from podium.core.diagnosis import Diagnosis
from podium.core.engine.engine import Engine
from podium.core.errors import (
    BackpressureError,
    NotFoundError,
    PodiumError,
    SpecError,
    job_not_found,
    quoted,
)
from podium.core.estimate import Estimate
from podium.core.events import APPROVAL_EVENT, EventBus
from podium.core.home import HomeLock, ensure_home
from podium.core.housekeeping import Housekeeping
from podium.core.insight import Insight
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.job_hooks import ChainLink, JobHooks
from podium.core.job_tasks import JobTasks
from podium.core.logview import LogReader
from podium.core.models import (
    HistoryEntry,
    JobDetail,
    JobStatus,
    JobSummary,
    SheetStatus,
    utcnow,
)
from podium.core.paths import confine, resolve_workspace
from podium.core.pressure import PressureLevel, ResourceMonitor, ResourceSample
from podium.core.runner import cgroups, reaper
from podium.core.snapshots import SnapshotInfo, SnapshotStore
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.store.base import Store
from podium.core.store.open import open_store
from podium.core.store.rows import JobQuery, JobRow, TaskRow
from podium.core.version import podium_version
from podium.core.views import (
    ClearResult,
    ConductorStatus,
    ConductorView,
    InstrumentView,
    LogChunk,
    RateLimitView,
    ReloadResult,
    SheetPlan,
    SpecErrorItem,
    SubmittedJob,
    ValidationReport,
)

log = structlog.get_logger("podium.conductor")

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Snapshot cleanup runs when the oldest snapshot expires, but at most this often.
MAINTENANCE_MIN_INTERVAL_SECONDS = 60.0
SNAPSHOT_WAIT_SECONDS = 5.0
SUBMIT_SAMPLE_SECONDS = 1.0
# Readiness drops when at least this share of recent attempts failed.
ELEVATED_FAILURE_RATE = 0.9
RESTART_ONLY_KEYS = {
    "home": "the home cannot change while a conductor owns it",
    "auto_resume": "applies when the conductor starts",
    "store_url": "the store is opened when the conductor starts",
    "conductor_id": "attempts in flight are owned under the name the conductor started with",
    "lease_seconds": "applies when the conductor starts",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def new_job_id(name: str) -> str:
    return f"{name}-{utcnow().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


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
        self.monitor: ResourceMonitor | None = None
        self._clock = clock
        self._zone = zone
        self._job_hooks: JobHooks | None = None
        self.tasks = JobTasks(self)
        self.insight = Insight(self)
        self.approvals = Approvals(self)
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
            self.catalog = await anyio.to_thread.run_sync(
                InstrumentCatalog.load, self.config.instruments_dir
            )
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

    async def _check_pressure(self) -> None:
        """Refuse new work at critical pressure, with the reason (memory or processes)."""
        if self.monitor is None:
            return
        sample = self.monitor.last
        # A sample this fresh is as good as a new one; a burst of submits (an agent fanning
        # out) costs one walk of the process table, not one each.
        if time.monotonic() - sample.taken_at >= SUBMIT_SAMPLE_SECONDS:
            sample = await anyio.to_thread.run_sync(self.monitor.sample)
        self.engine.set_pressure(sample.level, sample.reason)
        if sample.level is PressureLevel.CRITICAL:
            raise BackpressureError(
                f"not accepting jobs: {sample.reason}; running jobs continue, submit again "
                "when usage drops or raise the limit (config.yaml, then podium reload)"
            )

    async def reload(self) -> ReloadResult:
        """Re-read config.yaml (and the environment) and apply what can change live."""
        fresh = await anyio.to_thread.run_sync(
            lambda: load_config(home=self.config.home, overrides=self._overrides)
        )
        applied: dict[str, list[Any]] = {}
        not_applied: dict[str, str] = {}
        for key in PodiumConfig.model_fields:
            old, new = getattr(self.config, key), getattr(fresh, key)
            if old == new:
                continue
            if key in RESTART_ONLY_KEYS:
                not_applied[key] = RESTART_ONLY_KEYS[key]
            else:
                applied[key] = [_jsonable(old), _jsonable(new)]
        self.config = fresh.model_copy(update={k: getattr(self.config, k) for k in not_applied})
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
        self.catalog = await anyio.to_thread.run_sync(
            InstrumentCatalog.load, self.config.instruments_dir
        )
        self.engine.catalog = self.catalog
        log.info("configuration reloaded", applied=applied, not_applied=not_applied)
        return ReloadResult(applied=applied, not_applied=not_applied)

    async def _on_terminal(self, job: JobRow) -> None:
        if job.pending_hooks and self._job_hooks is not None:
            # In their own task: a slow webhook must not hold up views waiting on snapshots.
            self._job_hooks.enqueue(job.job_id)
        info = await self.snapshots.capture(job.job_id, job.workspace, job.spec_path)
        if info is not None:
            self._snapshot_added.set()
            await self.engine.set_snapshot_path(job.job_id, info.path)

    # ----- specs ----------------------------------------------------------------------------

    def _load(
        self,
        spec: Mapping[str, Any] | None,
        spec_yaml: str | None,
        path: str | Path | None,
        extra_roots: Sequence[Path] = (),
    ) -> LoadedSpec:
        given = [
            name
            for name, v in (("spec", spec), ("spec_yaml", spec_yaml), ("path", path))
            if v is not None
        ]
        if len(given) != 1:
            which = ", ".join(given) if given else "none"
            raise PodiumError(f"give exactly one of spec, spec_yaml or path (got: {which})")
        confined = None
        if path is not None:
            confined = confine(path, [*self.config.roots(), *extra_roots], field="path")
        traits = self.catalog.traits if self.catalog is not None else None
        return load_spec(data=spec, text=spec_yaml, path=confined, instruments=traits)

    async def _load_off_loop(
        self,
        spec: Mapping[str, Any] | None,
        spec_yaml: str | None,
        path: str | Path | None,
        extra_roots: Sequence[Path],
    ) -> LoadedSpec:
        """Loading parses YAML, validates models and renders every template: CPU work on
        untrusted input (bounded in size and time by the loader and the sandbox), done in a
        worker thread so the event loop keeps answering every other client meanwhile."""
        return await anyio.to_thread.run_sync(self._load, spec, spec_yaml, path, extra_roots)

    async def validate_spec(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        spec_yaml: str | None = None,
        path: str | Path | None = None,
        extra_roots: Sequence[Path] = (),
    ) -> ValidationReport:
        try:
            loaded = await self._load_off_loop(spec, spec_yaml, path, extra_roots)
        except SpecError as exc:
            return ValidationReport(
                valid=False,
                errors=[SpecErrorItem(path=e.path, message=e.message) for e in exc.errors],
                sheets=[],
            )
        return ValidationReport(
            valid=True,
            errors=[],
            sheets=[
                SheetPlan(
                    sheet_num=s.sheet_num,
                    name=s.name,
                    depends_on=list(s.depends_on),
                    instrument=s.instrument,
                )
                for s in loaded.sheets
            ],
        )

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
        if job_id is not None and not JOB_ID_PATTERN.match(job_id):
            raise PodiumError(
                f"job_id: {quoted(job_id)} is not allowed; use 1-128 characters from letters, "
                "digits, "
                "'.', '_' and '-', starting with a letter or digit"
            )
        if self._stopping:
            raise PodiumError("the conductor is shutting down; submit again after it restarts")
        loaded = await self._load_off_loop(spec, spec_yaml, path, extra_roots)
        await self._check_pressure()
        job_id = job_id or new_job_id(loaded.spec.name)
        base_dir = loaded.source_path.parent if loaded.source_path else self.config.workspaces_dir
        workspace = resolve_workspace(
            loaded.spec.workspace,
            job_id=job_id,
            base_dir=base_dir,
            default_dir=self.config.workspaces_dir,
            roots=[*self.config.roots(), *extra_roots],
            home=self.config.home,
        )
        # Made before the job exists (its first sheet may start at once); removed again if
        # this submit turns out to add no job.
        made = not workspace.exists()
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            job, created = await self.engine.submit(
                loaded,
                job_id=job_id,
                workspace=workspace,
                start=start,
                spec_path=loaded.source_path,
                chain=(chain.parent, chain.depth) if chain is not None else None,
                task=task(job_id) if task is not None else None,
            )
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    workspace.rmdir()
            raise
        return SubmittedJob(**job.summary().model_dump(), workspace=job.workspace, created=created)

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
        return detail

    def _live_output(self) -> LiveOutput | None:
        # Only attempts this conductor runs have output in memory; a sheet another conductor
        # runs (a shared store) shows what the store has until its attempt ends.
        return self._engine.output_so_far if self._engine is not None else None

    async def checkpoint(self, job_id: str) -> JobDetail:
        detail = await read_checkpoint(self.store, job_id, self._live_output())
        if detail is None:
            raise job_not_found(job_id)
        return detail

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
            changed = await self._load_off_loop(spec, spec_yaml, path, ())
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
        on_tick: Callable[[float], Awaitable[None]] | None = None,
        tick_seconds: float = 5.0,
    ) -> bool:
        """Wait until the job's status changes or it ends (any job's status, without a job id),
        at most `wait_seconds`. Returns whether something changed. Driven by change events.
        `on_tick(elapsed)` is called every `tick_seconds` and, with a job id, on each sheet
        transition of that job, so a caller can report progress."""
        known: dict[str, str] = {}
        if job_id is not None:
            job = await self._job_row(job_id)
            if job.status.is_terminal:
                return False
            known[job_id] = job.status.value
        else:
            active = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED]
            known = {j.job_id: j.status.value for j in await self.store.jobs_with_status(active)}
        deadline = time.monotonic() + wait_seconds
        async with self.events.subscribe() as events:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with anyio.move_on_after(min(remaining, tick_seconds)):
                    async for event in events:
                        if job_id is not None and event.job_id != job_id:
                            continue
                        if event.kind == "sheet":
                            if job_id is not None and on_tick is not None:
                                await on_tick(wait_seconds - (deadline - time.monotonic()))
                            continue
                        # Events fire on every transition; only a status that differs from the
                        # one seen when the wait began counts as a change, or a job that now
                        # waits for a person's approval.
                        if event.kind in ("deleted", APPROVAL_EVENT):
                            return True
                        if event.status != known.get(event.job_id):
                            return True
                if on_tick is not None and time.monotonic() < deadline:
                    await on_tick(wait_seconds - (deadline - time.monotonic()))

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
        loaded = await self._load_off_loop(spec, spec_yaml, path, extra_roots)
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
        return sorted({name for key in lifted for name in _behind(keys, key)})

    # ----- conductor status -----------------------------------------------------------------

    async def status(self) -> ConductorStatus:
        now = utcnow()
        # The engine's view of the holds is the store's (kept in the same step as each
        # write): one store read less per status call.
        holds = (
            list(self._engine.state.holds.values())
            if self._engine is not None
            else await self.store.holds()
        )
        keys = self.catalog.hold_keys() if self.catalog is not None else {}
        limits = [
            RateLimitView(
                instrument=name,
                until=h.until,
                pool=h.hold_key if keys.get(name, name) != name else None,
            )
            for h in sorted(holds, key=lambda h: h.hold_key)
            if h.until > now and not h.released
            for name in _behind(keys, h.hold_key)
        ]
        sample = self.monitor.last if self.monitor is not None else None
        memory_mb = sample.memory_mb if sample is not None else None
        failure_rate = None if self._engine is None else self._engine.failure_rate
        instruments = [
            InstrumentView.from_info(i) for i in (self.catalog.all() if self.catalog else [])
        ]
        peers = []
        if self.store.shared:
            peers = [
                ConductorView(
                    conductor_id=c.conductor_id, host=c.host, labels=c.labels, last_seen=c.last_seen
                )
                for c in await self.store.conductors()
                if c.expires_at > now
            ]
        # The counts and the approvals waiting, in one store read.
        overview = await self.store.overview(PENDING_APPROVALS_SHOWN)
        approvals = approval_list(overview.approvals, overview.approvals_total)
        return ConductorStatus(
            pending_approvals=approvals.approvals,
            pending_approvals_total=approvals.total,
            version=podium_version(),
            pid=os.getpid(),
            uptime_seconds=round(time.monotonic() - self._started_monotonic, 3),
            home=str(self.config.home),
            jobs_by_status=overview.jobs_by_status,
            running_sheets=(
                await self.store.count_running_sheets()
                if self._engine is None
                else self._engine.running_count
            ),
            pressure_level=sample.level.value if sample is not None else "none",
            pressure_reason=sample.reason if sample is not None else None,
            processes=sample.processes if sample is not None else None,
            failure_rate=failure_rate,
            memory_mb=round(memory_mb, 1) if memory_mb is not None else None,
            rate_limits=limits,
            ready=(
                not self._stopping
                and self._stack is not None
                and (sample is None or sample.level is not PressureLevel.CRITICAL)
                and (failure_rate is None or failure_rate < ELEVATED_FAILURE_RATE)
            ),
            instruments=instruments,
            conductor_id=self.config.conductor_id,
            conductors=peers,
        )


def _behind(keys: Mapping[str, str], hold_key: str) -> list[str]:
    """The instruments waiting behind a hold: every member of a quota pool, else the one
    instrument (or the key itself, for a profile removed since the hold was set)."""
    names = sorted(name for name, key in keys.items() if key == hold_key)
    return names or [hold_key]


@asynccontextmanager
async def open_conductor(config: PodiumConfig) -> AsyncIterator[Conductor]:
    conductor = Conductor(config)
    await conductor.start()
    try:
        yield conductor
    finally:
        await conductor.stop()
