"""Pure state-transition rules: given rows and an event, compute the changed rows.

No I/O here; the manager loads rows, calls these, and writes the result in one transaction.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from podium.core.errors import FieldError, SpecError
from podium.core.models import (
    RETRYABLE_SHEET_STATUSES,
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    WaitingReason,
)
from podium.core.runner.runner import AttemptResult
from podium.core.spec.loader import LoadedSpec
from podium.core.spec.models import RetryPolicy
from podium.core.store.rows import AttemptRow, JobRow, SheetRow

OUTPUT_TAIL_BYTES = 4096


def descendants(sheets: Sequence[SheetRow], sheet_num: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for sheet in sheets:
        for dep in sheet.depends_on:
            children.setdefault(dep, []).append(sheet.sheet_num)
    found: set[int] = set()
    stack = [sheet_num]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def ancestors(by_num: Mapping[int, SheetRow], sheet_num: int) -> set[int]:
    found: set[int] = set()
    stack = list(by_num[sheet_num].depends_on)
    while stack:
        num = stack.pop()
        if num not in found and num in by_num:
            found.add(num)
            stack.extend(by_num[num].depends_on)
    return found


def backoff_seconds(
    policy: RetryPolicy, retries_used: int, rng: random.Random | None = None
) -> float:
    """Exponential backoff; full jitter keeps retries of many sheets from stampeding."""
    delay = min(policy.max_delay_seconds, policy.base_delay_seconds * (2**retries_used))
    if policy.jitter:
        delay *= (rng or random).uniform(0.5, 1.0)
    return float(delay)


def finish_attempt_row(attempt: AttemptRow, result: AttemptResult, outcome: Outcome) -> None:
    attempt.ended_at = result.ended_at
    attempt.exit_code = result.exit_code
    attempt.signal = result.signal
    attempt.duration_seconds = result.duration_seconds
    attempt.outcome = outcome
    attempt.error_category = result.error_category
    attempt.error = result.error
    attempt.validations = list(result.validations)
    attempt.log_path = result.log_path


def _clear_waiting(sheet: SheetRow) -> None:
    sheet.waiting_reason = None
    sheet.waiting_until = None


def mark_terminal(
    sheet: SheetRow,
    status: SheetStatus,
    now: datetime,
    error: str | None,
    category: ErrorCategory | None,
) -> None:
    sheet.status = status
    sheet.completed_at = now
    sheet.updated_at = now
    sheet.last_error = error
    sheet.error_category = category
    _clear_waiting(sheet)


def skip_after_failure(
    job: JobRow, sheets: Sequence[SheetRow], failed_num: int, now: datetime
) -> list[SheetRow]:
    """Transitive dependents of a failed sheet become `skipped`; with `on_failure: stop`,
    every other sheet that has not started is skipped too (running ones finish)."""
    changed = []
    dependents = descendants(sheets, failed_num)
    stop_all = job.spec.get("on_failure", "stop") == "stop"
    for sheet in sheets:
        if sheet.status not in (SheetStatus.PENDING, SheetStatus.WAITING):
            continue
        if sheet.sheet_num in dependents:
            reason = f"skipped: depends on sheet {failed_num}, which failed"
        elif stop_all:
            reason = f"skipped: sheet {failed_num} failed and on_failure is stop"
        else:
            continue
        mark_terminal(sheet, SheetStatus.SKIPPED, now, reason, ErrorCategory.DEPENDENCY_FAILED)
        changed.append(sheet)
    return changed


def skip_unreachable(sheets: Sequence[SheetRow], now: datetime) -> list[SheetRow]:
    """Pending or waiting sheets that depend (transitively) on a sheet that can no longer
    complete are skipped, so a job never waits forever (e.g. after a resume without
    retry_failed, or a changed spec that added a dependent of a failed sheet)."""
    by_num = {s.sheet_num: s for s in sheets}
    dead = {
        s.sheet_num
        for s in sheets
        if s.status in (SheetStatus.FAILED, SheetStatus.SKIPPED, SheetStatus.CANCELLED)
    }
    changed = []
    for sheet in sorted(sheets, key=lambda s: s.sheet_num):
        if sheet.status not in (SheetStatus.PENDING, SheetStatus.WAITING):
            continue
        blocked = sorted(ancestors(by_num, sheet.sheet_num) & dead)
        if blocked:
            mark_terminal(
                sheet,
                SheetStatus.SKIPPED,
                now,
                f"skipped: depends on sheet {blocked[0]}, which did not complete",
                ErrorCategory.DEPENDENCY_FAILED,
            )
            changed.append(sheet)
    return changed


def apply_attempt_result(
    job: JobRow,
    sheets: Sequence[SheetRow],
    sheet: SheetRow,
    result: AttemptResult,
    policy: RetryPolicy,
    now: datetime,
    *,
    max_rate_limit_retries: int,
    max_rate_limit_wait_seconds: float,
) -> tuple[Outcome, list[SheetRow], float | None]:
    """Decide what an attempt's result does to its sheet (and, on final failure, to others).

    Returns the outcome recorded in history, the changed sheets, and for a rate limit the
    seconds the instrument should be held.
    """
    sheet.updated_at = now
    sheet.duration_seconds = result.duration_seconds
    sheet.output_tail = result.stdout_tail[-OUTPUT_TAIL_BYTES:]
    changed = [sheet]
    category = result.error_category

    if result.outcome is Outcome.COMPLETED:
        mark_terminal(sheet, SheetStatus.COMPLETED, now, None, None)
        return Outcome.COMPLETED, changed, None

    if result.outcome is Outcome.RATE_LIMITED:
        sheet.rate_limit_hits += 1
        if sheet.rate_limit_hits <= max_rate_limit_retries:
            wait = result.retry_after_seconds
            if wait is None:
                wait = backoff_seconds(policy, sheet.rate_limit_hits - 1)
            wait = min(max(wait, 0.0), max_rate_limit_wait_seconds)
            sheet.status = SheetStatus.WAITING
            sheet.waiting_reason = WaitingReason.RATE_LIMIT
            sheet.waiting_until = now + timedelta(seconds=wait)
            sheet.last_error = result.error
            sheet.error_category = ErrorCategory.RATE_LIMITED
            return Outcome.RATE_LIMITED, changed, wait
        error = f"{result.error}; still rate limited after {max_rate_limit_retries} waits"
        mark_terminal(sheet, SheetStatus.FAILED, now, error, ErrorCategory.RATE_LIMITED)
        changed += skip_after_failure(job, sheets, sheet.sheet_num, now)
        return Outcome.RATE_LIMITED, changed, None

    retryable = category is not ErrorCategory.AUTH
    if retryable and sheet.retries_used < policy.max_retries:
        delay = backoff_seconds(policy, sheet.retries_used)
        sheet.retries_used += 1
        sheet.status = SheetStatus.WAITING
        sheet.waiting_reason = WaitingReason.RETRY_BACKOFF
        sheet.waiting_until = now + timedelta(seconds=delay)
        sheet.last_error = result.error
        sheet.error_category = category
        return result.outcome, changed, None

    mark_terminal(sheet, SheetStatus.FAILED, now, result.error, category)
    changed += skip_after_failure(job, sheets, sheet.sheet_num, now)
    return result.outcome, changed, None


def reset_for_retry(sheet: SheetRow, now: datetime) -> None:
    """Back to `pending` with a fresh retry budget; attempts (history) keep counting."""
    sheet.status = SheetStatus.PENDING
    sheet.retries_used = 0
    sheet.rate_limit_hits = 0
    sheet.started_at = None
    sheet.completed_at = None
    sheet.last_error = None
    sheet.error_category = None
    sheet.updated_at = now
    _clear_waiting(sheet)


def resettable(sheets: Iterable[SheetRow]) -> list[SheetRow]:
    return [s for s in sheets if s.status in RETRYABLE_SHEET_STATUSES]


def final_job_status(sheets: Sequence[SheetRow]) -> tuple[JobStatus, str | None] | None:
    """The terminal status a job reaches once every sheet is terminal, else None."""
    if any(not s.status.is_terminal for s in sheets):
        return None
    failed = [s for s in sheets if s.status is SheetStatus.FAILED]
    if not failed and all(s.status is SheetStatus.COMPLETED for s in sheets):
        return JobStatus.COMPLETED, None
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return JobStatus.FAILED, f"sheet {first.sheet_num} failed: {first.last_error}{more}"
    cancelled = [s for s in sheets if s.status is SheetStatus.CANCELLED]
    if cancelled:
        return JobStatus.CANCELLED, None
    return JobStatus.FAILED, "some sheets were skipped"


def set_job_status(job: JobRow, status: JobStatus, now: datetime) -> None:
    job.status = status
    job.updated_at = now
    if status is not JobStatus.PAUSED:
        job.pause_reason = None
    if status is JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    job.completed_at = now if status.is_terminal else None


def failed_before_start(error: str, now: datetime, log_path: str) -> AttemptResult:
    """An attempt that never reached a process (e.g. a prompt that failed to render)."""
    return AttemptResult(
        outcome=Outcome.FAILED,
        error_category=ErrorCategory.FAILED,
        error=error,
        exit_code=None,
        signal=None,
        started_at=now,
        ended_at=now,
        duration_seconds=0.0,
        stdout_tail="",
        log_path=log_path,
    )


def with_category(result: AttemptResult, category: ErrorCategory) -> AttemptResult:
    return dataclasses.replace(result, error_category=category)


def _sheet_key(name: str | None, sheet_num: int) -> str:
    return f"name:{name}" if name else f"num:{sheet_num}"


def match_sheets(sheets: Sequence[SheetRow], new: LoadedSpec) -> dict[int, int]:
    """Map each stored sheet to its sheet in a changed spec (by name, else by number).

    Sheet numbers are identities in the store (history and logs hang off them), so a changed
    spec must keep every existing sheet at its number; it may add sheets at the end.
    """
    errors = []
    new_by_key = {_sheet_key(s.name, s.sheet_num): s.sheet_num for s in new.sheets}
    mapping = {}
    for sheet in sheets:
        key = _sheet_key(sheet.name, sheet.sheet_num)
        label = f"sheet {sheet.name!r}" if sheet.name else f"sheet {sheet.sheet_num}"
        found = new_by_key.get(key)
        if found is None:
            errors.append(FieldError("sheets", f"{label} is missing from the changed spec"))
        elif found != sheet.sheet_num:
            errors.append(
                FieldError(
                    f"sheets.{found - 1}",
                    f"{label} moved from number {sheet.sheet_num} to {found}; a changed spec "
                    "keeps existing sheets in place and may only add sheets at the end",
                )
            )
        else:
            mapping[sheet.sheet_num] = found
    if errors:
        raise SpecError(errors)
    return mapping


def apply_spec_change(
    job: JobRow, sheets: list[SheetRow], new: LoadedSpec, now: datetime
) -> list[SheetRow]:
    """Point the job at a changed spec; completed sheets keep their results."""
    match_sheets(sheets, new)
    job.spec = new.to_storable()
    job.spec_fingerprint = new.fingerprint()
    job.priority = new.spec.priority
    job.labels = list(new.spec.labels)
    job.description = new.spec.description
    job.total_sheets = len(new.sheets)
    changed = []
    by_num = {s.sheet_num: s for s in sheets}
    for resolved in new.sheets:
        row = by_num.get(resolved.sheet_num)
        if row is None:
            row = SheetRow(
                job_id=job.job_id,
                sheet_num=resolved.sheet_num,
                name=resolved.name,
                status=SheetStatus.PENDING,
                instrument=resolved.instrument,
                updated_at=now,
            )
            sheets.append(row)
        elif row.status is SheetStatus.COMPLETED:
            continue
        row.instrument = resolved.instrument
        row.depends_on = list(resolved.depends_on)
        row.updated_at = now
        changed.append(row)
    return changed
