"""Durable tasks: the handle a `run_job` call can answer with, mapped to its job.

A task row holds its unguessable id, its job, when it was made and when it expires. While
the task runs, its status is read from the job on every look, so it never drifts from it and
survives any restart with the job itself:

| job | task |
|---|---|
| queued, running, paused, no approval waiting | `working` (the message says the progress) |
| an approval sheet waits | `input_required` (one input request per waiting sheet) |
| completed | `completed` |
| failed | `completed`, its result an error (`failed` is for protocol errors only) |
| cancelled | `cancelled` |
| gone (cleared) | `failed` |

A terminal status is final (the tasks extension): the first time a task is seen ended (when
its job ends, when it is read, and at the latest before its job is resumed or cleared), its
status, message and result are written to its row (`final_*`), and every later read answers
from there. A resumed job goes on under a new task (`run_job` with its `job_id`); a cleared
job's task keeps answering what it ended with.

The protocol shapes (task handles, input requests, tool results) belong to the server; this
module knows jobs and sheets only.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from podium.core.checkpoint import read_job
from podium.core.errors import NotFoundError, quoted
from podium.core.models import JobDetail, JobStatus, SheetState, SheetStatus, WaitingReason
from podium.core.store.base import Store
from podium.core.store.rows import TaskRow, clone

TASK_ID_BYTES = 24  # 192 bits: an id nobody can guess or enumerate
POLL_INTERVAL_MS = 2000
# Waiting sheets read per look (approvals among them are the task's input requests).
WAITING_SHEETS_READ = 100


class TaskNotFoundError(NotFoundError):
    pass


class TaskExpiredError(TaskNotFoundError):
    pass


def new_task_id() -> str:
    return "task-" + secrets.token_urlsafe(TASK_ID_BYTES)


def new_task(job_id: str, tool: str, ttl_hours: float, now: datetime, created_by: str) -> TaskRow:
    ttl = timedelta(hours=ttl_hours)
    return TaskRow(
        task_id=new_task_id(),
        job_id=job_id,
        tool=tool,
        created_at=now,
        expires_at=now + ttl,
        ttl_ms=max(1, int(ttl.total_seconds() * 1000)),
        poll_interval_ms=POLL_INTERVAL_MS,
        created_by=created_by,
    )


@dataclass(frozen=True)
class AwaitedApproval:
    """An approval sheet the task waits on; `key` names this one question for the task's
    whole life (a sheet asked again after a resume is a new attempt, so a new key)."""

    key: str
    sheet_num: int
    name: str | None
    question: str
    expires_at: datetime | None


def approval_key(sheet: SheetState) -> str:
    return f"approve-sheet-{sheet.sheet_num}-attempt-{sheet.attempts + 1}"


@dataclass
class TaskState:
    task: TaskRow
    status: str
    message: str
    last_updated_at: datetime
    detail: JobDetail | None = None
    approvals: list[AwaitedApproval] = field(default_factory=list)
    # The job failed (the tool result is an error), or, for `failed`, why the task failed.
    job_failed: bool = False
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_TASK_STATUSES

    @property
    def final(self) -> bool:
        """Read from the task's stored final state (not derived from its job)."""
        return self.task.final_status is not None


TERMINAL_TASK_STATUSES = ("completed", "cancelled", "failed")


def final_row(state: TaskState) -> TaskRow:
    """The task's row with `state`, a terminal one, as its final state."""
    row = clone(state.task)
    row.final_status = state.status
    row.final_message = state.message
    row.final_at = state.last_updated_at
    row.final_error = state.error
    row.final_job_failed = state.job_failed
    row.final_detail = state.detail.model_dump(mode="json") if state.detail is not None else None
    return row


def _stored_final(task: TaskRow) -> TaskState:
    detail = JobDetail.model_validate(task.final_detail) if task.final_detail is not None else None
    return TaskState(
        task,
        task.final_status or "failed",
        task.final_message or "",
        task.final_at or task.created_at,
        detail,
        job_failed=task.final_job_failed,
        error=task.final_error,
    )


async def read_task(store: Store, task_id: str, now: datetime) -> TaskState:
    """The task as it is: its stored final state once it has one, else derived from its job
    (a terminal state derived here is the caller's to store, see `JobTasks.get`)."""
    task = await store.get_task(task_id)
    if task is None:
        # Expired rows are purged: the id alone cannot tell which, so say both.
        raise TaskNotFoundError(
            f"taskId: task {quoted(task_id)} not found (never made, or expired and purged)"
        )
    if task.expires_at <= now:
        raise TaskExpiredError(f"taskId: task {quoted(task_id)} has expired (its ttlMs passed)")
    return await task_state(store, task)


async def task_state(store: Store, task: TaskRow) -> TaskState:
    """The task as it is, its TTL aside: what it was when it expired, for a listener that
    must tell a task that ended just before from one that was still going."""
    if task.final_status is not None:
        return _stored_final(task)
    return await derive_task(store, task)


def expired_state(task: TaskRow) -> TaskState:
    """A task whose `ttlMs` passed before its job ended, as a listener is told: `failed`
    (the tasks extension lets a server fail a task once its TTL is over). The job goes on."""
    why = (
        f"task expired: its ttlMs ({task.ttl_ms}) passed before job {task.job_id!r} ended; "
        f"the job goes on (follow it with status job_id={task.job_id})"
    )
    return TaskState(task, "failed", why, task.expires_at, error=why)


async def derive_task(store: Store, task: TaskRow) -> TaskState:
    """The task's state as its job is now."""
    detail = await read_job(store, task.job_id, sheet_limit=100)
    if detail is None:
        return TaskState(
            task,
            "failed",
            f"job {task.job_id!r} no longer exists (it was cleared)",
            task.created_at,
            error=f"job {task.job_id!r} no longer exists (it was cleared)",
        )
    updated = max(task.created_at, detail.completed_at or detail.started_at or task.created_at)
    status = detail.status
    progress = f"{detail.completed_sheets}/{detail.total_sheets} sheets completed"
    job = f"job {task.job_id}"
    if status is JobStatus.COMPLETED:
        return TaskState(task, "completed", f"{job} completed: {progress}", updated, detail)
    if status is JobStatus.FAILED:
        message = f"{job} failed: {detail.error or progress}"
        return TaskState(task, "completed", message, updated, detail, job_failed=True)
    if status is JobStatus.CANCELLED:
        return TaskState(task, "cancelled", f"{job} cancelled", updated, detail)
    waiting = await read_job(
        store, task.job_id, sheet_status=[SheetStatus.WAITING], sheet_limit=WAITING_SHEETS_READ
    )
    sheets = waiting.sheets if waiting is not None else []
    approvals = [
        AwaitedApproval(approval_key(s), s.sheet_num, s.name, s.output_tail or "", s.waiting_until)
        for s in sheets
        if s.waiting_reason is WaitingReason.APPROVAL
    ]
    for sheet in sheets:
        if sheet.started_at is not None and sheet.started_at > updated:
            updated = sheet.started_at
    if approvals:
        names = ", ".join(a.name or f"sheet {a.sheet_num}" for a in approvals)
        message = f"{job} waits for approval: {names}; {progress}"
        return TaskState(task, "input_required", message, updated, detail, approvals)
    if status is JobStatus.PAUSED:
        reason = detail.pause_reason.value if detail.pause_reason else "paused"
        message = f"{job} paused ({reason}): resume it to continue; {progress}"
    else:
        message = f"{job} {status.value}: {progress}"
    return TaskState(task, "working", message, updated, detail)
