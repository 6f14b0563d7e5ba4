"""Running what a job asks for when it ends (issue 17): its notifications (`on_complete`,
`on_failure`) and its follow-up (`on_success: {submit, max_chain}`), which the conductor
submits itself.

The writer stamps the hooks a job owes on the transition that ends it; this runner does each
one and then clears it through the writer, so every hook runs once, also when the conductor
stopped in between (those found at start are run then). A crash in the instant between a
hook's effect and its clearing repeats it: a follow-up's job id is derived from its parent,
so submitting it again returns the job already there; a notification may be sent twice.

What became of the follow-up is recorded on the parent (`follow_up`: submitted, refused,
deferred, chain_ended) in the same writer op that clears its hook. A deferred one (the
conductor refused new work for now) keeps its hook pending and is tried again every
DEFERRED_RETRY_SECONDS while the conductor runs, and at every start.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from podium.core.errors import BackpressureError, PodiumError
from podium.core.models import FollowUp, FollowUpStatus, utcnow
from podium.core.notify import send
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.spec.templating import TemplateContext, render
from podium.core.store.base import Store
from podium.core.store.rows import JobRow

log = structlog.get_logger("podium.hooks")

EVENTS = {"on_complete": "job_completed", "on_failure": "job_failed"}
# Jobs whose hooks run at once; the rest queue.
CONCURRENT_JOBS = 4
# How often a deferred follow-up is tried again while the conductor runs (read when it
# waits, so tests can shorten it).
DEFERRED_RETRY_SECONDS = 30.0
# A refusal's message as the record keeps it: a spec with many errors lists them all.
MAX_FOLLOW_UP_ERROR_CHARS = 1000


@dataclass(frozen=True)
class ChainLink:
    """A follow-up job's place in its chain."""

    parent: str
    depth: int


# The conductor's submit_job (keyword arguments path, job_id, extra_roots, chain); it raises
# PodiumError subclasses for what it refuses.
Submit = Callable[..., Awaitable[Any]]


def follow_up_id(parent: JobRow) -> str:
    """The follow-up's job id, derived from its parent's: submitting it twice (a crash
    before the hook was cleared) finds the job already there instead of adding a second."""
    digest = hashlib.sha256(parent.job_id.encode()).hexdigest()[:10]
    return f"{parent.name[:48]}-next-{digest}"


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _record(
    status: FollowUpStatus,
    path: str | None,
    *,
    job_id: str | None = None,
    error: str | None = None,
) -> FollowUp:
    if error is not None and len(error) > MAX_FOLLOW_UP_ERROR_CHARS:
        error = error[: MAX_FOLLOW_UP_ERROR_CHARS - 3] + "..."
    return FollowUp(status=status, job_id=job_id, error=error, path=path, at=utcnow())


def _same(old: dict[str, Any] | None, new: FollowUp) -> bool:
    """A deferred follow-up deferred again for the same reason: nothing new to write (its
    `at` stays when it was first deferred so)."""
    return (
        old is not None
        and old.get("status") == new.status.value
        and old.get("job_id") == new.job_id
        and old.get("error") == new.error
        and old.get("path") == new.path
    )


class JobHooks:
    def __init__(
        self,
        store: Callable[[], Store],
        hook_done: Callable[[str, str], Awaitable[None]],
        submit: Submit,
        *,
        record_follow_up: Callable[..., Awaitable[None]],
        base_env: Mapping[str, str],
        kill_grace_seconds: float,
    ) -> None:
        """`record_follow_up(job_id, FollowUp, done=...)` writes the record through the
        writer, clearing the "on_success" hook when `done`."""
        self._store = store
        self._hook_done = hook_done
        self._submit = submit
        self._record_follow_up = record_follow_up
        # Jobs whose follow-up was deferred, tried again at the next retry.
        self._deferred: set[str] = set()
        # Set when a follow-up is deferred: the retry timer runs only then.
        self._deferral: anyio.Event | None = None
        self._base_env = dict(base_env)
        self._grace = kill_grace_seconds
        self._send, self._receive = anyio.create_memory_object_stream[str](1000)
        self._busy: set[str] = set()
        self._limit = anyio.CapacityLimiter(CONCURRENT_JOBS)
        self.stopping = False

    def enqueue(self, job_id: str) -> None:
        try:
            self._send.send_nowait(job_id)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.warning("end hooks not run now; they run at the next start", job_id=job_id)

    async def serve(self) -> None:
        """Run the hooks of jobs that ended while no conductor ran, then every job's as it
        ends."""
        try:
            for job in await self._store().jobs_with_pending_hooks():
                self.enqueue(job.job_id)
            async with anyio.create_task_group() as group, self._receive:
                group.start_soon(self._retry_deferred)
                async for job_id in self._receive:
                    if job_id not in self._busy:
                        self._busy.add(job_id)
                        group.start_soon(self._run_job, job_id)
        finally:
            self._send.close()

    async def _retry_deferred(self) -> None:
        while True:
            # No timer while nothing is deferred: an idle conductor never wakes.
            if not self._deferred:
                self._deferral = anyio.Event()
                await self._deferral.wait()
            await anyio.sleep(DEFERRED_RETRY_SECONDS)
            waiting, self._deferred = self._deferred, set()
            for job_id in sorted(waiting):
                self.enqueue(job_id)

    async def _run_job(self, job_id: str) -> None:
        try:
            async with self._limit:
                await self._run_hooks(job_id)
        except Exception:
            log.exception("end hooks failed", job_id=job_id)
        finally:
            self._busy.discard(job_id)

    async def _run_hooks(self, job_id: str) -> None:
        store = self._store()
        job = await store.get_job(job_id)
        if job is None or not job.pending_hooks:
            return
        data = await store.get_spec(job_id)
        loaded: LoadedSpec | None = None
        load_error = ""
        try:
            loaded = await anyio.to_thread.run_sync(lambda: load_spec(data=data or {}, stored=True))
        except PodiumError as exc:
            log.warning(
                "end hooks skipped: the spec no longer loads", job_id=job_id, error=str(exc)
            )
            load_error = f"the job's stored spec no longer loads: {exc}"
        summary = job.summary().model_dump(mode="json")
        for hook in list(job.pending_hooks):
            if self.stopping:
                return  # left pending: the next start runs it
            if hook == "on_success":
                if loaded is None:
                    record: FollowUp | None = _record(
                        FollowUpStatus.REFUSED, None, error=load_error
                    )
                else:
                    record = await self._chain(job, loaded)
                if record is None:
                    return  # not tried (the conductor stops): the next start tries it
                await self._settle(job, record)
                continue
            if loaded is not None and hook in EVENTS:
                await self._notify(job, loaded, hook, summary)
            await self._hook_done(job_id, hook)

    async def _settle(self, job: JobRow, record: FollowUp) -> None:
        """Write what became of the follow-up; a deferred one stays pending for the next
        retry."""
        deferred = record.status is FollowUpStatus.DEFERRED
        if deferred:
            self._deferred.add(job.job_id)
            if self._deferral is not None:
                self._deferral.set()
            if _same(job.follow_up, record):
                return
        await self._record_follow_up(job.job_id, record, done=not deferred)

    async def _notify(
        self, job: JobRow, loaded: LoadedSpec, hook: str, summary: Mapping[str, Any]
    ) -> None:
        notifications = loaded.spec.notifications
        if notifications is None:
            return
        notes = notifications.on_complete if hook == "on_complete" else notifications.on_failure
        event = EVENTS[hook]
        env = {
            **self._base_env,
            "PODIUM_JOB_ID": job.job_id,
            "PODIUM_JOB_STATUS": job.status.value,
            "PODIUM_EVENT": event,
            "PODIUM_WORKSPACE": job.workspace,
        }
        for index, note in enumerate(notes):
            outcome = await send(
                note,
                event,
                summary,
                workspace=Path(job.workspace),
                env=env,
                kill_grace_seconds=self._grace,
            )
            log.info(
                "notification", job_id=job.job_id, hook=f"{hook}.{index}", kind=note.type,
                result=outcome,
            )  # fmt: skip

    async def _chain(self, job: JobRow, loaded: LoadedSpec) -> FollowUp | None:
        """Submit the follow-up, saying what became of it; None when it was not tried (the
        conductor began to stop)."""
        chain = loaded.spec.on_success
        if chain is None:
            return _record(FollowUpStatus.REFUSED, None, error="the spec has no on_success")
        folder = Path(job.spec_path).parent if job.spec_path else None
        path, problem = self._target(job, loaded, chain.submit, folder)
        if job.chain_depth >= chain.max_chain:
            log.info("chain ends at max_chain", job_id=job.job_id, max_chain=chain.max_chain)
            # Not an error: the chain is as long as the spec asked for.
            return _record(FollowUpStatus.CHAIN_ENDED, path if problem is None else None)
        if problem is not None:
            log.warning("follow-up not submitted", job_id=job.job_id, path=path, error=problem)
            return _record(FollowUpStatus.REFUSED, path, error=problem)
        # The follow-up may live where its parent was allowed to: its spec's folder was an
        # allowed root, or granted for that submit (`podium run` grants the file's folder).
        workspace = os.path.realpath(job.workspace)
        extra = [Path(workspace)] + ([folder] if folder is not None else [])
        try:
            child = await self._submit(
                path=path,
                job_id=follow_up_id(job),
                extra_roots=extra,
                chain=ChainLink(job.job_id, job.chain_depth + 1),
            )
        except BackpressureError as exc:
            log.warning("follow-up deferred", job_id=job.job_id, error=str(exc))
            # The conductor submits it again by itself: the record says why not now, not
            # the "submit again" a person who submitted is told.
            why = f"not accepting jobs: {exc.reason}" if exc.reason else str(exc)
            return _record(FollowUpStatus.DEFERRED, path, error=why)
        except PodiumError as exc:
            if self.stopping:
                # Refused because the conductor is shutting down: not the spec's fault.
                return None
            log.warning("follow-up not submitted", job_id=job.job_id, error=str(exc))
            return _record(FollowUpStatus.REFUSED, path, error=str(exc))
        log.info("follow-up submitted", job_id=job.job_id, follow_up=child.job_id)
        return _record(FollowUpStatus.SUBMITTED, path, job_id=child.job_id)

    def _target(
        self, job: JobRow, loaded: LoadedSpec, template: str, folder: Path | None
    ) -> tuple[str, str | None]:
        """The follow-up's spec path, and why it may not be submitted (None: it may). A
        path whose template does not render is the template itself."""
        ctx = TemplateContext(
            workspace=job.workspace,
            job_id=job.job_id,
            sheet_num=0,
            total_sheets=job.total_sheets,
            sheet_name=None,
            start_item=None,
            end_item=None,
            variables=loaded.spec.variables,
            outputs={},
        )
        workspace = os.path.realpath(job.workspace)
        roots = [workspace] + ([os.path.realpath(folder)] if folder is not None else [])
        try:
            rendered = render(template, ctx)
        except PodiumError as exc:
            return template, str(exc)
        path = os.path.realpath((folder or Path(job.workspace)) / rendered)
        if not _inside(path, roots):
            return path, "the path is outside the job's workspace and its spec's folder"
        return path, None
