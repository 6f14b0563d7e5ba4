"""Approval sheets (SPEC §4): a gate that runs no process and waits for a person.

When the dispatcher picks an approval sheet, the gate opens: the sheet becomes `waiting`
(`waiting_reason: approval`) until `waiting_until` (its `timeout_seconds` from now), with the
rendered prompt, the question, as its `output_tail`. That row is the pending approval: it is
in the store, so it survives any restart, and a decision is one op of the writer that turns
it into the sheet's attempt (decision, who, note) and the sheet's end: `completed` on
approve, `failed` with `error_category: rejected` on reject. A gate whose time runs out is
picked again and fails with `timeout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from podium.core.engine.attempts import settle_job, skip_dependents
from podium.core.engine.context import EngineContext
from podium.core.engine.rules import (
    OUTPUT_TAIL_BYTES,
    mark_terminal,
    reset_for_retry,
    set_job_status,
)
from podium.core.engine.sheet_context import template_context
from podium.core.engine.state import JobState
from podium.core.engine.tx import Op, Tx
from podium.core.errors import InvalidTransitionError, quoted
from podium.core.events import APPROVAL_EVENT, ChangeEvent
from podium.core.models import (
    Decision,
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    WaitingReason,
)
from podium.core.spec.templating import TemplateRenderError, render_sheet_prompt
from podium.core.store.rows import AttemptRow, SheetRow

MAX_NOTE_CHARS = 2000
MAX_DECIDER_CHARS = 200
# Where each decision leaves the gate's sheet.
DECIDED_STATUS = {Decision.APPROVE: SheetStatus.COMPLETED, Decision.REJECT: SheetStatus.FAILED}


def is_gate(ctx: EngineContext, instrument: str) -> bool:
    info = ctx.catalog.get(instrument)
    return info is not None and info.profile.kind == "approval"


def awaiting(sheet: SheetRow) -> bool:
    """An open gate: a question asked and not yet answered. The row says so, whatever the
    catalog says of its instrument now."""
    return sheet.status is SheetStatus.WAITING and sheet.waiting_reason is WaitingReason.APPROVAL


def _time_out(tx: Tx, job_state: JobState, sheet_num: int) -> None:
    """End an open gate whose `timeout_seconds` ran out without a decision."""
    _end(
        tx,
        job_state,
        sheet_num,
        outcome=Outcome.TIMEOUT,
        error="no decision before timeout_seconds ran out",
        category=ErrorCategory.TIMEOUT,
    )


def open_or_expire(ctx: EngineContext, tx: Tx, job_state: JobState, sheet_num: int) -> None:
    """The dispatcher picked approval sheet `sheet_num`: open its gate, or, if it was
    waiting and its time is up, fail it."""
    job_id = job_state.job_id
    sheet = tx.sheet(job_id, sheet_num)
    now = tx.now
    if awaiting(sheet):
        _time_out(tx, job_state, sheet_num)
        return
    timeout = _timeout_seconds(ctx, job_state, sheet_num)
    try:
        question = ""
        if job_state.spec is not None:
            resolved = job_state.spec.sheet(sheet_num)
            question = render_sheet_prompt(resolved, template_context(job_state, sheet_num))
    except TemplateRenderError as exc:
        _end(
            tx,
            job_state,
            sheet_num,
            outcome=Outcome.FAILED,
            error=f"template: {exc}",
            category=ErrorCategory.FAILED,
        )
        return
    edited = tx.edit_sheet(job_id, sheet_num)
    edited.status = SheetStatus.WAITING
    edited.waiting_reason = WaitingReason.APPROVAL
    edited.waiting_until = now + timedelta(seconds=timeout)
    edited.started_at = now
    edited.completed_at = None
    edited.last_error = None
    edited.error_category = None
    edited.output_tail = question.encode()[-OUTPUT_TAIL_BYTES:].decode(errors="ignore")
    edited.updated_at = now
    if tx.job(job_id).status is JobStatus.QUEUED:
        set_job_status(tx.edit_job(job_id), JobStatus.RUNNING, now)
    # The job now needs a person: a long-poll on it (`status` wait_seconds) returns.
    tx.publish(ChangeEvent(job_id, APPROVAL_EVENT, SheetStatus.WAITING.value, sheet_num))


def _timeout_seconds(ctx: EngineContext, job_state: JobState, sheet_num: int) -> float:
    resolved = job_state.spec.sheet(sheet_num) if job_state.spec is not None else None
    info = ctx.catalog.get(resolved.instrument if resolved else "approval")
    profile_timeout = info.profile.timeout_seconds if info is not None else None
    if resolved is None:
        return profile_timeout or 86400.0
    return resolved.instrument_config.effective_timeout(profile_timeout)


def _end(
    tx: Tx,
    job_state: JobState,
    sheet_num: int,
    *,
    outcome: Outcome,
    error: str | None,
    category: ErrorCategory | None,
    decision: Decision | None = None,
    decided_by: str | None = None,
    note: str | None = None,
) -> None:
    """Record the gate's attempt and end its sheet (a failure skips its dependents)."""
    job_id = job_state.job_id
    now = tx.now
    sheet = tx.edit_sheet(job_id, sheet_num)
    started = sheet.started_at or now
    duration = max(0.0, (now - started).total_seconds())
    attempt = sheet.attempts + 1
    sheet.attempts = attempt
    tx.add_attempt(
        AttemptRow(
            job_id=job_id,
            sheet_num=sheet_num,
            attempt=attempt,
            started_at=started,
            ended_at=now,
            duration_seconds=duration,
            outcome=outcome,
            error_category=category,
            error=error,
            decision=decision,
            decided_by=decided_by,
            note=note,
        )
    )
    if outcome is Outcome.COMPLETED:
        mark_terminal(sheet, SheetStatus.COMPLETED, now, None, None)
        # What a dependent's `outputs.NAME` reads: the note, else the decision.
        sheet.output_tail = note or "approved"
    else:
        mark_terminal(sheet, SheetStatus.FAILED, now, error, category)
        sheet.output_tail = note
        skip_dependents(tx, job_state, sheet_num)
    sheet.started_at = started
    sheet.duration_seconds = duration
    settle_job(tx, job_id)


def take_back(tx: Tx, job_id: str, sheet_num: int, why: str, category: ErrorCategory) -> SheetRow:
    """Record an open gate's question as taken back, unanswered: a cancelled attempt, so
    the question asked next is a new attempt, under a new task input key (keys must never
    name two questions). Returns the sheet to end or reset."""
    now = tx.now
    sheet = tx.edit_sheet(job_id, sheet_num)
    started = sheet.started_at or now
    sheet.attempts += 1
    tx.add_attempt(
        AttemptRow(
            job_id=job_id,
            sheet_num=sheet_num,
            attempt=sheet.attempts,
            started_at=started,
            ended_at=now,
            duration_seconds=max(0.0, (now - started).total_seconds()),
            outcome=Outcome.CANCELLED,
            error_category=category,
            error=why,
        )
    )
    return sheet


def end_unrun(
    tx: Tx,
    job_id: str,
    sheet_num: int,
    status: SheetStatus,
    why: str,
    category: ErrorCategory | None,
) -> None:
    """End a sheet that is not running (cancelled, skipped, failed with its job) without
    running it. An open gate among them has its question taken back first, whatever ends
    it: every way a gate ends but a decision or its timeout records that alike (see
    `take_back`), so a resume asks again under a new key."""
    if awaiting(tx.sheet(job_id, sheet_num)):
        # Taken back under the category it ends with (a cancel, a failed dependency, a
        # stored spec that no longer loads); with none, as cancelled.
        edited = take_back(tx, job_id, sheet_num, why, category or ErrorCategory.CANCELLED)
    else:
        edited = tx.edit_sheet(job_id, sheet_num)
    mark_terminal(edited, status, tx.now, why, category)


def withdraw(tx: Tx, job_id: str, sheet_num: int, why: str) -> None:
    """Take back an open gate's question (its sheet changed); the sheet goes back to
    pending, to ask again."""
    sheet = take_back(tx, job_id, sheet_num, why, ErrorCategory.CANCELLED)
    reset_for_retry(sheet, tx.now, fresh_budget=False)
    sheet.output_tail = None


@dataclass
class DecisionOutcome:
    """What a decision op found: `applied`, or the sheet's state when it was not waiting."""

    applied: bool
    status: SheetStatus
    label: str
    last_error: str | None = None


def refusal(
    job_id: str,
    found: DecisionOutcome,
    latest: AttemptRow | None,
    stands: Decision | None,
    job_status: JobStatus,
    decision: Decision,
) -> str:
    """Why a decision cannot apply to a gate that does not wait, and what would ask it
    (again): a decision that stands, a question that ended undecided (its job was
    cancelled, failed or changed while it waited, or it timed out), or one never asked."""
    head = (
        f"sheet: {found.label} of job {quoted(job_id)} is {found.status.value}, "
        "not waiting for approval"
    )
    if stands is not None and latest is not None:
        return f"{head}; it was already decided ({stands.value} by {latest.decided_by})"
    verb = "approved" if decision is Decision.APPROVE else "rejected"
    ask = _asks_again(found.status, job_status)
    if latest is not None and latest.decision is None and latest.outcome in _UNDECIDED:
        why = _why_undecided(latest, job_status)
        return f"{head}: its question ended undecided ({why}), so it cannot be {verb} now; {ask}"
    if found.status is SheetStatus.PENDING and not job_status.is_terminal:
        return f"{head}; its gate opens once {_opens_when(job_status)}"
    if found.status.is_terminal:
        why = found.last_error or found.status.value
        return f"{head}: it ended before its question was asked ({why}); {ask}"
    return head


# How an asked question ends without a decision: taken back (a cancel, a failure of its
# job, a changed spec, a stored spec that no longer loads) or timed out.
_UNDECIDED = frozenset({Outcome.CANCELLED, Outcome.TIMEOUT})


def _why_undecided(latest: AttemptRow, job_status: JobStatus) -> str:
    if latest.outcome is Outcome.TIMEOUT:
        return "no decision came before its timeout_seconds ran out"
    if latest.error_category is ErrorCategory.DEADLINE:
        return "the job ran past its deadline_seconds while it waited"
    if latest.error_category is ErrorCategory.CANCELLED and job_status is JobStatus.CANCELLED:
        return "the job was cancelled while it waited"
    if latest.error_category is ErrorCategory.DEPENDENCY_FAILED and latest.error:
        return f"it was skipped while it waited: {latest.error.removeprefix('skipped: ')}"
    return f"taken back while it waited: {latest.error or 'no reason recorded'}"


def _opens_when(job_status: JobStatus) -> str:
    if job_status is JobStatus.PAUSED:
        return "the job is resumed and the sheets it depends on complete"
    return "the job runs and the sheets it depends on complete"


def _asks_again(status: SheetStatus, job_status: JobStatus) -> str:
    """What asks the question again, as the sheet and its job are now."""
    if not status.is_terminal:
        # Reset already (a changed spec withdrew it, or a resume): it opens by itself.
        return f"it is asked again once {_opens_when(job_status)}"
    if job_status.is_terminal or job_status is JobStatus.PAUSED:
        # A resume of a paused job resets its failed and skipped sheets as well.
        return "a `resume` of the job asks it again"
    # Ended in a job that runs on (a failed dependency with on_failure: continue): a
    # resume is a no-op until the job has ended.
    return "once the job has ended, a `resume` of it asks it again"


def decide(
    ctx: EngineContext,
    job_id: str,
    sheet_num: int,
    decision: Decision,
    decided_by: str,
    note: str | None,
) -> Op[DecisionOutcome]:
    """The op recording a person's decision on a waiting approval sheet."""
    decided_by = decided_by[:MAX_DECIDER_CHARS]
    if note is not None:
        note = note.strip()[:MAX_NOTE_CHARS] or None

    def apply(tx: Tx) -> DecisionOutcome:
        job_state = tx.state(job_id)
        sheet = tx.sheet(job_id, sheet_num)
        label = f"sheet {sheet_num}" + (f" ({sheet.name})" if sheet.name else "")
        # An open gate takes its decision even if its profile went since it opened (a
        # reload without it): the question was asked, and it ends as a gate.
        if not awaiting(sheet) and not is_gate(ctx, sheet.instrument):
            raise InvalidTransitionError(
                f"sheet: {label} of job {quoted(job_id)} runs instrument {sheet.instrument!r}; "
                "only "
                "sheets with `instrument: approval` take a decision"
            )
        if not awaiting(sheet):
            return DecisionOutcome(False, sheet.status, label, sheet.last_error)
        if sheet.waiting_until is not None and sheet.waiting_until <= tx.now:
            # Its wait ran out before this decision came (while its job was paused, or
            # just before the dispatcher got to it): a decision after the timeout would
            # override `timeout_seconds`. It ends as the dispatcher would have ended it.
            _time_out(tx, job_state, sheet_num)
            ended = tx.sheet(job_id, sheet_num)
            return DecisionOutcome(False, ended.status, label, ended.last_error)
        if decision is Decision.APPROVE:
            _end(
                tx,
                job_state,
                sheet_num,
                outcome=Outcome.COMPLETED,
                error=None,
                category=None,
                decision=decision,
                decided_by=decided_by,
                note=note,
            )
        else:
            why = f"rejected by {decided_by}" + (f": {note}" if note else "")
            _end(
                tx,
                job_state,
                sheet_num,
                outcome=Outcome.FAILED,
                error=why,
                category=ErrorCategory.REJECTED,
                decision=decision,
                decided_by=decided_by,
                note=note,
            )
        return DecisionOutcome(True, sheet.status, label)

    return Op(apply, jobs=[job_id], name="approval decision")
