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
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, tzinfo
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import anyio
import structlog

from podium.core.checkpoint import read_checkpoint, read_job
from podium.core.config import PodiumConfig, load_config
from podium.core.diagnosis import LOG_TAIL_SCANNED, Diagnosis, diagnose
from podium.core.engine.engine import Engine
from podium.core.errors import (
    BackpressureError,
    InvalidTransitionError,
    NotFoundError,
    PodiumError,
    SpecError,
    job_not_found,
)
from podium.core.estimate import Estimate, History, SheetSamples, estimate
from podium.core.events import APPROVAL_EVENT, EventBus
from podium.core.history_samples import RunSamples, run_samples
from podium.core.home import HomeLock, ensure_home
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.job_hooks import ChainLink, JobHooks
from podium.core.logview import LogReader
from podium.core.models import (
    Decision,
    HistoryEntry,
    JobDetail,
    JobStatus,
    JobSummary,
    SheetStatus,
    WaitingReason,
    utcnow,
)
from podium.core.paths import confine, resolve_workspace
from podium.core.pressure import PressureLevel, ResourceMonitor, ResourceSample
from podium.core.runner import cgroups, reaper
from podium.core.snapshots import SnapshotInfo, SnapshotStore, snapshot_time
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.spec.models import ConcurrencySpec
from podium.core.store.base import Store
from podium.core.store.open import open_store
from podium.core.store.rows import JobQuery, JobRow, TaskRow
from podium.core.tasks import TaskState, new_task, read_task
from podium.core.views import (
    ApprovalList,
    ClearResult,
    ConductorStatus,
    InstrumentView,
    LogChunk,
    PendingApproval,
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
DIAGNOSE_HISTORY_LIMIT = 50_000
# Pending approvals listed in the conductor status (the `podium://approvals` resource and
# `podium approve --list` show up to 500).
PENDING_APPROVALS_SHOWN = 20
# The synchronous run_job waits at most this long (a tool call must not hang a session).
RUN_JOB_WAIT_SECONDS = 50.0
RUN_JOB_TICK_SECONDS = 5.0
TASK_PURGE_BATCH = 500
MAX_SHEET_PAGE = 10_000
# Earlier runs of the same job name, and recent jobs searched for an instrument's sheets.
ESTIMATE_EARLIER_RUNS = 20
ESTIMATE_INSTRUMENT_RUNS = 30
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


def podium_version() -> str:
    try:
        return package_version("podium")
    except PackageNotFoundError:
        return "0+unknown"


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
        self._task_added = anyio.Event()
        self._snapshots: SnapshotStore | None = None
        self.catalog: InstrumentCatalog | None = None
        self._started_monotonic = 0.0
        self._stopping = False
        self.monitor: ResourceMonitor | None = None
        self._clock = clock
        self._zone = zone
        self._job_hooks: JobHooks | None = None

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
                await self._reconcile_files()
            if self.dispatch:
                assert self._engine is not None
                self._job_hooks = JobHooks(
                    lambda: self.store,
                    self._engine.hook_done,
                    self.submit_job,
                    base_env=os.environ,
                    kill_grace_seconds=self.config.kill_grace_seconds,
                )
                task_group.start_soon(self._job_hooks.serve)
                task_group.start_soon(self._maintenance)
                task_group.start_soon(self._purge_tasks)
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

    async def _reconcile_files(self) -> None:
        """Finish what a crash interrupted between rows and files (SPEC §9 trap 16): log and
        snapshot dirs of jobs the store no longer has (a `clear` that died after deleting
        the rows) and partial snapshots go; a finished job whose snapshot was never
        recorded (a capture that died) is captured again."""
        await self.engine.hooks_settled()  # captures recovery itself started
        jobs = await self.store.jobs_with_status(list(JobStatus))
        known = {j.job_id for j in jobs}

        def remove() -> int:
            removed = self.snapshots.reconcile(known)
            logs = self.config.logs_dir
            for entry in logs.iterdir() if logs.is_dir() else ():
                if entry.is_dir() and entry.name not in known:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            return removed

        removed = await anyio.to_thread.run_sync(remove)
        if removed:
            log.warning("removed files left by an interrupted change", dirs=removed)
        for job in jobs:
            taken = snapshot_time(job.snapshot_path)
            if not job.status.is_terminal or job.completed_at is None:
                continue
            if taken is None or taken < job.completed_at:
                log.warning("capturing a snapshot a crash interrupted", job_id=job.job_id)
                await self._on_terminal(job)

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
                f"job_id: {job_id!r} is not allowed; use 1-128 characters from letters, digits, "
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

    # ----- run_job and its durable tasks -----------------------------------------------------

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
        async with self.events.subscribe() as events:
            submitted = await self.submit_job(
                spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id
            )
            while True:
                detail = await self.get_job(submitted.job_id)
                left = deadline - time.monotonic()
                if detail.status.is_terminal or left <= 0:
                    return detail
                if await self._awaits_approval(submitted.job_id):
                    # Read again: the gate may have opened after the first look.
                    return await self.get_job(submitted.job_id)
                with anyio.move_on_after(min(left, RUN_JOB_TICK_SECONDS)):
                    async for event in events:
                        if event.job_id == submitted.job_id:
                            break
                if on_tick is not None:
                    await on_tick(time.monotonic() - started)

    async def _awaits_approval(self, job_id: str) -> bool:
        waiting = await self.get_job(job_id, sheet_status=[SheetStatus.WAITING], sheet_limit=100)
        return any(s.waiting_reason is WaitingReason.APPROVAL for s in waiting.sheets)

    async def start_task(
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
            row = new_task(new_job_id, "run_job", self.config.task_ttl_hours, utcnow(), created_by)
            made.append(row)
            return row

        await self.submit_job(spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id, task=make)
        self._task_added.set()
        return await self.get_task(made[-1].task_id)

    async def get_task(self, task_id: str) -> TaskState:
        return await read_task(self.store, task_id, utcnow())

    async def cancel_task(self, task_id: str) -> TaskState:
        """Cancel the task's job (a no-op when it has ended: cancelling is idempotent)."""
        state = await self.get_task(task_id)
        if state.detail is not None and not state.detail.status.is_terminal:
            with contextlib.suppress(InvalidTransitionError):
                await self.engine.cancel(state.task.job_id)
        return await self.get_task(task_id)

    async def answer_task(
        self,
        task_id: str,
        answers: Mapping[str, Decision],
        notes: Mapping[str, str | None],
        decided_by: str,
    ) -> list[str]:
        """Decide the approvals the task waits on, by their input-request keys; keys that do
        not name one (unknown, already answered, superseded) are ignored. Returns the keys
        that were applied."""
        state = await self.get_task(task_id)
        applied = []
        for approval in state.approvals:
            decision = answers.get(approval.key)
            if decision is None:
                continue
            try:
                await self.engine.decide(
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

    async def _purge_tasks(self) -> None:
        """Delete expired tasks; sleeps until the next one expires (or a task is made)."""
        while True:
            added = self._task_added = anyio.Event()
            try:
                expired = await self.store.expired_tasks(utcnow(), TASK_PURGE_BATCH)
                if expired:
                    await self.engine.purge_tasks(expired)
                    log.info("expired tasks purged", count=len(expired))
                    continue
                expiry = await self.store.next_task_expiry()
            except PodiumError:
                log.exception("task purge failed")
                expiry = utcnow() + timedelta(minutes=1)
            if expiry is None:
                await added.wait()
                continue
            with anyio.move_on_after(max(0.05, (expiry - utcnow()).total_seconds())):
                await added.wait()

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
        )
        if detail is None:
            raise job_not_found(job_id)
        return detail

    async def checkpoint(self, job_id: str) -> JobDetail:
        detail = await read_checkpoint(self.store, job_id)
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
        if not job_ids and not statuses and older_than_hours is None and not all_jobs:
            raise PodiumError(
                "clear needs at least one of job_ids, statuses, older_than_hours, or all=true"
            )
        active = [s for s in (statuses or []) if s.is_active]
        if active:
            names = ", ".join(s.value for s in active)
            raise PodiumError(
                f"statuses: {names} jobs are never cleared; allowed: completed, failed, cancelled"
            )
        rows: list[JobRow] = []
        not_found: list[str] = []
        if job_ids:
            for job_id in dict.fromkeys(job_ids):
                job = await self.store.get_job(job_id)
                if job is None:
                    not_found.append(job_id)
                else:
                    rows.append(job)
        else:
            wanted = list(statuses) if statuses else list(JobStatus)
            rows = await self.store.jobs_with_status(wanted)
        cutoff = (
            utcnow() - timedelta(hours=older_than_hours) if older_than_hours is not None else None
        )
        selected = []
        for job in rows:
            if statuses and job.status not in statuses:
                continue
            if cutoff is not None and (job.completed_at is None or job.completed_at >= cutoff):
                continue
            selected.append(job)
        skipped = [j.job_id for j in selected if j.status.is_active]
        deleted = await self.engine.delete_jobs(
            [j.job_id for j in selected if not j.status.is_active]
        )
        for job_id in deleted:
            shutil.rmtree(self.config.logs_dir / job_id, ignore_errors=True)
            self.snapshots.delete_for_job(job_id)
        if deleted:
            await self.store.reclaim_space()
        return ClearResult(
            deleted=len(deleted), job_ids=deleted, skipped_active=skipped, not_found=not_found
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
        sheet: int | None = None,
        attempt: int | None = None,
        tail_lines: int = 200,
        offset: int | None = None,
    ) -> LogChunk:
        """A sheet attempt's log (latest attempt by default), or with no sheet the combined
        tail of every sheet's latest log. `offset` pages forward from a byte offset."""
        job = await self._job_row(job_id)
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
        detail = await self.checkpoint(job_id)
        entries, _ = await self.get_execution_history(job_id, limit=DIAGNOSE_HISTORY_LIMIT)

        async def read_log(sheet_num: int, attempt: int) -> str:
            try:
                chunk = await self.read_logs(
                    job_id, sheet=sheet_num, attempt=attempt, tail_lines=LOG_TAIL_SCANNED
                )
            except PodiumError:
                return ""
            return chunk.text

        status = await self.status()
        return await diagnose(
            detail,
            entries,
            read_log,
            rate_limits=[(r.instrument, r.until) for r in status.rate_limits],
            pressure_level=status.pressure_level,
            pressure_reason=status.pressure_reason,
        )

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
        history = await self._estimate_history(loaded)
        return estimate(loaded, history, max_concurrent_sheets=self.config.max_concurrent_sheets)

    async def _estimate_history(self, loaded: LoadedSpec) -> History:
        history = History()
        finished = [JobStatus.COMPLETED, JobStatus.FAILED]
        runs, _ = await self.list_jobs(
            statuses=finished, name=loaded.spec.name, limit=ESTIMATE_EARLIER_RUNS
        )
        seen: set[str] = set()
        for run in runs:
            seen.add(run.job_id)
            samples = await self._sheet_samples(run.job_id)
            if not samples.sheets:
                continue
            history.earlier_runs += 1
            for key, instrument, sample in samples.sheets:
                history.by_sheet.setdefault(key, SheetSamples()).add(sample)
                history.by_instrument.setdefault(instrument, SheetSamples()).add(sample)
            if samples.overhead is not None:
                history.overheads.append(samples.overhead)
        wanted = {s.instrument for s in loaded.sheets} - set(history.by_instrument)
        if wanted:
            recent, _ = await self.list_jobs(
                statuses=[JobStatus.COMPLETED], limit=ESTIMATE_INSTRUMENT_RUNS
            )
            for run in recent:
                if run.job_id in seen:
                    continue
                samples = await self._sheet_samples(run.job_id)
                for _, instrument, sample in samples.sheets:
                    if instrument in wanted:
                        history.by_instrument.setdefault(instrument, SheetSamples()).add(sample)
        return history

    async def _sheet_samples(self, job_id: str) -> RunSamples:
        detail = await self.get_job(job_id, sheet_limit=MAX_SHEET_PAGE, include_spec=True)
        entries, _ = await self.get_execution_history(job_id, limit=DIAGNOSE_HISTORY_LIMIT)
        concurrency = ConcurrencySpec.model_validate((detail.spec or {}).get("concurrency") or {})
        return run_samples(
            detail,
            entries,
            parallelism=min(concurrency.max_parallel_sheets, self.config.max_concurrent_sheets),
        )

    # ----- approvals ------------------------------------------------------------------------

    async def approve(
        self,
        job_id: str,
        sheet: int | str,
        decision: Decision | str,
        *,
        note: str | None = None,
        decided_by: str = "unknown client",
    ) -> JobSummary:
        """A person's decision on an approval sheet (by number or name) that waits."""
        try:
            chosen = Decision(decision)
        except ValueError:
            raise PodiumError(
                f"decision: {decision!r} is not a decision; use 'approve' or 'reject'"
            ) from None
        num = await self._sheet_number(job_id, sheet)
        return await self.engine.decide(job_id, num, chosen, decided_by, note)

    async def _sheet_number(self, job_id: str, sheet: int | str) -> int:
        if isinstance(sheet, int) or (isinstance(sheet, str) and sheet.isdigit()):
            num = int(sheet)
            if await self.store.get_sheet(job_id, num) is not None:
                return num
            await self._job_row(job_id)
            raise NotFoundError(f"sheet: job {job_id!r} has no sheet {num}")
        rows = await self.store.get_sheets(job_id)
        if not rows:
            await self._job_row(job_id)
        for row in rows:
            if row.name == sheet:
                return row.sheet_num
        names = ", ".join(r.name for r in rows if r.name) or "none"
        raise NotFoundError(f"sheet: job {job_id!r} has no sheet named {sheet!r} (names: {names})")

    async def pending_approvals(self, limit: int = PENDING_APPROVALS_SHOWN) -> ApprovalList:
        rows, total = await self.store.pending_approvals(limit)
        return ApprovalList(
            approvals=[
                PendingApproval(
                    job_id=r.job_id,
                    sheet_num=r.sheet_num,
                    name=r.name,
                    question=r.output_tail or "",
                    requested_at=r.started_at,
                    expires_at=r.waiting_until,
                )
                for r in rows
            ],
            total=total,
        )

    # ----- rate limits ----------------------------------------------------------------------

    async def clear_rate_limits(self, instrument: str | None = None) -> list[str]:
        if (
            instrument is not None
            and self.catalog is not None
            and self.catalog.get(instrument) is None
        ):
            known = ", ".join(i.name for i in self.catalog.all())
            raise NotFoundError(f"instrument: unknown instrument {instrument!r}; known: {known}")
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
        approvals = await self.pending_approvals()
        return ConductorStatus(
            pending_approvals=approvals.approvals,
            pending_approvals_total=approvals.total,
            version=podium_version(),
            pid=os.getpid(),
            uptime_seconds=round(time.monotonic() - self._started_monotonic, 3),
            home=str(self.config.home),
            jobs_by_status=await self.store.count_jobs_by_status(),
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
