"""Pure transition rules: given rows (copies the caller owns) and an event, change the rows
or say what else must change. No I/O and no engine state: the writer reads rows, calls
these, and commits what they changed."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from podium.core.errors import FieldError, SpecError
from podium.core.models import (
    RETRYABLE_SHEET_STATUSES,
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    WaitingReason,
    counts_as_done,
)
from podium.core.runner.logs import truncated_at
from podium.core.runner.runner import AttemptResult
from podium.core.spec.loader import LoadedSpec
from podium.core.spec.models import RetryPolicy
from podium.core.store.rows import AttemptRow, JobRow, SheetRow

OUTPUT_TAIL_BYTES = 4096
_DEAD = frozenset({SheetStatus.FAILED, SheetStatus.SKIPPED, SheetStatus.CANCELLED})


def backoff_seconds(
    policy: RetryPolicy, retries_used: int, rng: random.Random | None = None
) -> float:
    """Exponential backoff; full jitter keeps retries of many sheets from stampeding."""
    delay = min(policy.max_delay_seconds, policy.base_delay_seconds * (2**retries_used))
    if policy.jitter:
        delay *= (rng or random).uniform(0.5, 1.0)
    return float(delay)


def set_job_status(job: JobRow, status: JobStatus, now: datetime) -> None:
    job.status = status
    job.updated_at = now
    if status is not JobStatus.PAUSED:
        job.pause_reason = None
    if status is JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    job.completed_at = now if status.is_terminal else None


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
    sheet.waiting_reason = None
    sheet.waiting_until = None


def reset_for_retry(sheet: SheetRow, now: datetime, *, fresh_budget: bool = True) -> None:
    """Back to `pending`; attempts (history) keep counting. A resume gives a fresh retry
    budget; a restart (recovery) keeps what the sheet had used."""
    sheet.status = SheetStatus.PENDING
    if fresh_budget:
        sheet.retries_used = 0
        sheet.rate_limit_hits = 0
    sheet.started_at = None
    sheet.completed_at = None
    sheet.last_error = None
    sheet.error_category = None
    sheet.updated_at = now
    sheet.waiting_reason = None
    sheet.waiting_until = None


def begin_attempt(sheet: SheetRow, attempt: int, now: datetime, log_path: str) -> None:
    sheet.status = SheetStatus.RUNNING
    sheet.attempts = attempt
    sheet.started_at = now
    sheet.completed_at = None
    sheet.waiting_reason = None
    sheet.waiting_until = None
    sheet.log_path = log_path
    sheet.updated_at = now


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
    attempt.log_truncated = result.log_truncated
    # The session the attempt ran in: the one it reported, else the one it continued (a run
    # killed before it said anything is still in that session).
    attempt.session_id = result.session_id or result.resumed_session_id
    attempt.resumed_session_id = result.resumed_session_id
    attempt.cost_usd = result.cost_usd
    attempt.input_tokens = result.input_tokens
    attempt.output_tokens = result.output_tokens
    attempt.cache_read_tokens = result.cache_read_tokens
    attempt.cache_write_tokens = result.cache_write_tokens


# Why an attempt was cut off, by each route that cuts one off (`interrupt`).
STOPPED_WHILE_RUNNING = "the conductor stopped while it ran"
LEASE_RAN_OUT = "its conductor's lease ran out"
SHUT_DOWN = "the conductor shut down"


def last_known_running(attempt: AttemptRow, now: datetime) -> datetime:
    """When an attempt whose owner died was last known to run: its last lease renewal, else
    its start. Never after `now` (its owner's clock may be another host's, running ahead)
    nor before its start."""
    seen = attempt.lease_renewed_at or attempt.started_at
    return max(attempt.started_at, min(seen, now))


def interrupt(
    now: datetime,
    why: str,
    *,
    attempt: AttemptRow | None = None,
    sheet: SheetRow | None = None,
    ended_at: datetime | None = None,
    output: str | None = None,
) -> None:
    """The one way an attempt cut off by any route (a restart after a crash, a lease taken
    back, a graceful shutdown) is recorded, on copies of the rows the caller owns. The
    attempt becomes `interrupted` ("interrupted: <why>"); `ended_at`, when given, is when it
    was last known to run and becomes its end (an attempt that already has an end keeps it,
    one with none ends `now`), and its duration follows from that end. Its sheet goes back
    to `pending` saying the same, showing that attempt's duration and `output`, what that
    attempt printed (None: nothing, or nothing this conductor can read), never an earlier
    attempt's; the sheet's retry and rate-limit budgets are kept, since an interruption is
    not a retry."""
    error = f"interrupted: {why}"
    duration: float | None = None
    if attempt is not None:
        attempt.outcome = Outcome.INTERRUPTED
        attempt.error_category = ErrorCategory.INTERRUPTED
        attempt.error = error
        if ended_at is not None or attempt.ended_at is None:
            end = ended_at or now
            attempt.ended_at = end
            attempt.duration_seconds = max(0.0, (end - attempt.started_at).total_seconds())
        duration = attempt.duration_seconds
        _note_cut_log(attempt, output)
    if sheet is not None:
        reset_for_retry(sheet, now, fresh_budget=False)
        sheet.last_error = error
        sheet.error_category = ErrorCategory.INTERRUPTED
        sheet.duration_seconds = duration
        sheet.output_tail = _kept_output(output)


def _note_cut_log(attempt: AttemptRow, output: str | None) -> None:
    """An attempt cut off has no runner's result to say its log reached log_max_bytes;
    the end of its log (`output`, read from the log after a crash or a lease taken back)
    does, with the marker the log ends with."""
    if output and truncated_at(output) is not None:
        attempt.log_truncated = True


def _kept_output(output: str | None) -> str | None:
    kept = output.encode()[-OUTPUT_TAIL_BYTES:].decode(errors="ignore") if output else ""
    return kept or None


JOB_HAD_ENDED = "the job had ended"


def interrupt_in_ended_job(
    now: datetime,
    why: str,
    *,
    attempt: AttemptRow | None,
    sheet: SheetRow,
    category: ErrorCategory,
    ended_at: datetime | None = None,
    output: str | None = None,
) -> None:
    """An attempt cut off (restart, lease taken back, a stop past its kill sequence) whose
    job had already ended (a cancel or deadline under way): the attempt is recorded as
    `interrupt` records it, and its sheet ends `cancelled` as the job did, showing that
    attempt's duration and `output` (None: nothing, or nothing this conductor can read),
    never an earlier attempt's. `attempt` None: the row says running but no attempt of it
    is in flight, so what it printed is not known."""
    if attempt is not None:
        interrupt(now, why, attempt=attempt, ended_at=ended_at, output=output)
    mark_terminal(sheet, SheetStatus.CANCELLED, now, JOB_HAD_ENDED, category)
    sheet.duration_seconds = attempt.duration_seconds if attempt is not None else None
    sheet.output_tail = _kept_output(output)


@dataclass(frozen=True)
class RetryLimits:
    max_rate_limit_retries: int
    max_rate_limit_wait_seconds: float


@dataclass(frozen=True)
class Verdict:
    """What an attempt's result did to its sheet."""

    outcome: Outcome  # recorded in history
    failed: bool = False  # the sheet failed for good: its dependents are skipped
    hold_until: datetime | None = None  # rate limited: hold its hold key until then


Judge = Callable[[SheetRow, AttemptResult, RetryPolicy, RetryLimits, datetime], Verdict]


def _completed(
    sheet: SheetRow, result: AttemptResult, policy: RetryPolicy, limits: RetryLimits, now: datetime
) -> Verdict:
    mark_terminal(sheet, SheetStatus.COMPLETED, now, None, None)
    return Verdict(Outcome.COMPLETED)


def _rate_limited(
    sheet: SheetRow, result: AttemptResult, policy: RetryPolicy, limits: RetryLimits, now: datetime
) -> Verdict:
    # A rate limit waits without spending a retry, up to max_rate_limit_retries times.
    sheet.rate_limit_hits += 1
    if sheet.rate_limit_hits > limits.max_rate_limit_retries:
        error = f"{result.error}; still rate limited after {limits.max_rate_limit_retries} waits"
        mark_terminal(sheet, SheetStatus.FAILED, now, error, ErrorCategory.RATE_LIMITED)
        return Verdict(Outcome.RATE_LIMITED, failed=True)
    until = rate_limit_until(sheet, result, policy, limits, now)
    sheet.status = SheetStatus.WAITING
    sheet.waiting_reason = WaitingReason.RATE_LIMIT
    sheet.waiting_until = until
    sheet.last_error = result.error
    sheet.error_category = ErrorCategory.RATE_LIMITED
    return Verdict(Outcome.RATE_LIMITED, hold_until=until)


def rate_limit_until(
    sheet: SheetRow, result: AttemptResult, policy: RetryPolicy, limits: RetryLimits, now: datetime
) -> datetime:
    """When a rate-limited sheet (and its hold) may go again: the moment the CLI said the
    limit lifts, else a backoff; never further than `max_rate_limit_wait_seconds`."""
    cap = limits.max_rate_limit_wait_seconds
    wait = result.retry_after_seconds
    if result.reset_at is not None and wait is not None and wait > 0:
        # The reset moment itself, not `now` plus the seconds: it was dated by the clock the
        # runner read the output with, and the CLI named that moment.
        return result.reset_at - timedelta(seconds=max(0.0, wait - cap))
    if wait is None or wait <= 0:
        # No moment given, or one already past (a limit "resets 1pm" printed at 1:02pm is
        # not lifted yet): back off, growing with each hit.
        wait = backoff_seconds(policy, sheet.rate_limit_hits - 1)
    return now + timedelta(seconds=min(wait, cap))


def _failed(
    sheet: SheetRow, result: AttemptResult, policy: RetryPolicy, limits: RetryLimits, now: datetime
) -> Verdict:
    category = result.error_category
    # Auth and billing errors fail at once: no retry can log in or buy credits.
    retryable = category not in (ErrorCategory.AUTH, ErrorCategory.BILLING)
    if retryable and sheet.retries_used < policy.max_retries:
        delay = backoff_seconds(policy, sheet.retries_used)
        sheet.retries_used += 1
        sheet.status = SheetStatus.WAITING
        sheet.waiting_reason = WaitingReason.RETRY_BACKOFF
        sheet.waiting_until = now + timedelta(seconds=delay)
        sheet.last_error = result.error
        sheet.error_category = category
        return Verdict(result.outcome)
    mark_terminal(sheet, SheetStatus.FAILED, now, result.error, category)
    return Verdict(result.outcome, failed=True)


# How each attempt outcome moves its sheet; an outcome not listed is a failed run.
JUDGES: dict[Outcome, Judge] = {
    Outcome.COMPLETED: _completed,
    Outcome.RATE_LIMITED: _rate_limited,
}


def judge_attempt(
    sheet: SheetRow,
    result: AttemptResult,
    policy: RetryPolicy,
    limits: RetryLimits,
    now: datetime,
) -> Verdict:
    """Apply an attempt's result to its sheet (which the caller owns a copy of)."""
    sheet.updated_at = now
    sheet.duration_seconds = result.duration_seconds
    sheet.output_tail = result.stdout_tail[-OUTPUT_TAIL_BYTES:]
    return JUDGES.get(result.outcome, _failed)(sheet, result, policy, limits, now)


def skipped_after_failure(
    sheets: Mapping[int, SheetRow],
    dependents: Iterable[int],
    failed_num: int,
    stop_all: bool,
) -> list[tuple[int, str]]:
    """Sheets to mark `skipped` (with the reason) when `failed_num` failed for good: its
    transitive dependents; with `on_failure: stop`, every sheet that has not started."""
    dependent = set(dependents)
    out: list[tuple[int, str]] = []
    candidates = sorted(sheets) if stop_all else sorted(dependent)
    for num in candidates:
        sheet = sheets[num]
        if sheet.status not in (SheetStatus.PENDING, SheetStatus.WAITING):
            continue
        if num in dependent:
            out.append((num, f"skipped: depends on sheet {failed_num}, which failed"))
        else:
            out.append((num, f"skipped: sheet {failed_num} failed and on_failure is stop"))
    return out


def unreachable(sheets: Mapping[int, SheetRow]) -> list[tuple[int, str]]:
    """Pending or waiting sheets that depend (transitively) on a sheet that can no longer
    complete, with the reason; they are skipped so a job never waits forever (after a resume
    without retry_failed, or a changed spec that added a dependent of a failed sheet)."""
    blocked_by: dict[int, int | None] = {}

    def first_dead(num: int) -> int | None:
        # The lowest-numbered dead ancestor, memoised; iterative so deep chains are fine.
        stack = [num]
        while stack:
            top = stack[-1]
            deps = [d for d in sheets[top].depends_on if d in sheets]
            missing = [d for d in deps if d not in blocked_by]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            found = [d for d in deps if _dead(sheets[d])]
            found += [b for d in deps if (b := blocked_by[d]) is not None]
            blocked_by[top] = min(found) if found else None
        return blocked_by[num]

    out = []
    for num in sorted(sheets):
        if sheets[num].status in (SheetStatus.PENDING, SheetStatus.WAITING):
            dead = first_dead(num)
            if dead is not None:
                out.append((num, f"skipped: depends on sheet {dead}, which did not complete"))
    return out


def _dead(sheet: SheetRow) -> bool:
    """Ended without completing, so its dependents can never run."""
    return sheet.status in _DEAD and not counts_as_done(sheet.status, sheet.error_category)


def final_job_status(sheets: Iterable[SheetRow]) -> tuple[JobStatus, str | None] | None:
    """The terminal status a job reaches once every sheet is terminal, else None."""
    rows = sorted(sheets, key=lambda s: s.sheet_num)
    if any(not s.status.is_terminal for s in rows):
        return None
    failed = [s for s in rows if s.status is SheetStatus.FAILED]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return JobStatus.FAILED, f"sheet {first.sheet_num} failed: {first.last_error}{more}"
    if all(counts_as_done(s.status, s.error_category) for s in rows):
        return JobStatus.COMPLETED, None
    if any(s.status is SheetStatus.CANCELLED for s in rows):
        return JobStatus.CANCELLED, None
    return JobStatus.FAILED, "some sheets were skipped"


def resettable(sheets: Iterable[SheetRow]) -> list[SheetRow]:
    """Sheets a resume runs again; a sheet its own condition skipped stays done."""
    return [
        s
        for s in sheets
        if s.status in RETRYABLE_SHEET_STATUSES and not counts_as_done(s.status, s.error_category)
    ]


def skip_by_condition(sheet: SheetRow, now: datetime, reason: str) -> None:
    mark_terminal(sheet, SheetStatus.SKIPPED, now, reason, ErrorCategory.CONDITION)


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


def _spec_path(new: LoadedSpec, sheet_num: int | None, field: str = "") -> str:
    """Where a sheet of the changed spec is written: `sheets.N` in the explicit form when
    the list maps one entry to one sheet (no fan-out), else the list (or batch) itself."""
    explicit = new.spec.sheets
    if explicit is None:
        return "sheet"
    if sheet_num is None or len(explicit) != len(new.sheets) or sheet_num > len(explicit):
        return "sheets"
    return f"sheets.{sheet_num - 1}" + (f".{field}" if field else "")


def _label(row: SheetRow, status: bool = False) -> str:
    said = ([repr(row.name)] if row.name else []) + ([row.status.value] if status else [])
    return f"sheet {row.sheet_num}" + (f" ({', '.join(said)})" if said else "")


# What to do instead of removing a sheet, by whether it completed.
_KEEP_IT = (
    "keep it as it is (to keep it from running, give it `skip_when: 'true'`)",
    "keep it as it is (it completed, and a resume never runs a completed sheet again)",
)


def check_spec_change(sheets: Sequence[SheetRow], new: LoadedSpec) -> None:
    """A changed spec must keep every stored sheet at its number: history, logs and
    `outputs` hang off the numbers. A named sheet is matched by its name (so it can be
    neither renamed nor removed), an unnamed one by its number (a name may be given to it);
    sheets may be added at the end. Every breach is reported at once, naming the sheet, why,
    and what is allowed instead."""
    errors = []
    by_name = {s.name: s.sheet_num for s in new.sheets if s.name}
    stored_names = {s.name for s in sheets if s.name}
    count = len(new.sheets)
    for sheet in sorted(sheets, key=lambda s: s.sheet_num):
        num = sheet.sheet_num
        keep = _KEEP_IT[sheet.status is SheetStatus.COMPLETED]
        if not sheet.name:
            if num > count:
                errors.append(
                    FieldError(
                        _spec_path(new, None),
                        f"{_label(sheet, status=True)} is not in the changed spec, "
                        f"which has {count} sheet(s) for the job's {len(sheets)}: an unnamed "
                        "sheet is matched by its number, and a changed spec keeps every "
                        "sheet of the job (removing one would move each later one into the "
                        f"place, history and logs of the one before); {keep}",
                    )
                )
            continue
        found = by_name.get(sheet.name)
        if found == num:
            continue
        if found is not None:
            errors.append(
                FieldError(
                    _spec_path(new, found),
                    f"{_label(sheet)} moved from number {num} to {found}; a changed spec "
                    f"keeps existing sheets in place (put it back at number {num}) and may "
                    "only add sheets at the end",
                )
            )
            continue
        there = new.sheets[num - 1] if num <= count else None
        if there is not None and there.name not in stored_names:
            # Another name, or none, in its place: a rename, which matching by name makes
            # a removal of this sheet and the addition of another.
            now_called = f"is named {there.name!r}" if there.name else "has no name"
            errors.append(
                FieldError(
                    _spec_path(new, num, "name"),
                    f"{_label(sheet)} {now_called} in the changed spec; sheets are "
                    "matched by name, so a changed spec cannot rename one: name it "
                    f"{sheet.name!r} again",
                )
            )
            continue
        errors.append(
            FieldError(
                _spec_path(new, None),
                f"{_label(sheet, status=True)} is not in the changed spec; a "
                "changed spec keeps every sheet of the job at its number and may only add "
                f"sheets at the end: {keep}",
            )
        )
    if errors:
        raise SpecError(errors)


@dataclass(frozen=True)
class SheetChange:
    sheet_num: int
    instrument: str
    depends_on: list[int]
    name: str | None


def spec_change(
    job: JobRow, sheets: Mapping[int, SheetRow], new: LoadedSpec, now: datetime
) -> tuple[list[SheetChange], list[SheetRow]]:
    """Point the job row (the caller's copy) at a changed spec; returns what changes in
    existing sheets and the sheets to add. Completed sheets keep their results."""
    job.spec_fingerprint = new.fingerprint()
    job.priority = new.spec.priority
    job.labels = list(new.spec.labels)
    job.description = new.spec.description
    job.cost_limit_usd = new.spec.cost_limit_usd
    job.total_sheets = len(new.sheets)
    job.updated_at = now
    changed: list[SheetChange] = []
    added: list[SheetRow] = []
    for resolved in new.sheets:
        row = sheets.get(resolved.sheet_num)
        if row is None:
            added.append(
                SheetRow(
                    job_id=job.job_id,
                    sheet_num=resolved.sheet_num,
                    name=resolved.name,
                    status=SheetStatus.PENDING,
                    instrument=resolved.instrument,
                    updated_at=now,
                    depends_on=list(resolved.depends_on),
                )
            )
            continue
        # An unnamed sheet may be given a name (it is matched by number); a named one
        # keeps its own (check_spec_change).
        name = row.name or resolved.name
        if row.status is SheetStatus.COMPLETED:
            if name != row.name:
                changed.append(SheetChange(row.sheet_num, row.instrument, row.depends_on, name))
            continue
        depends_on = list(resolved.depends_on)
        if (
            row.instrument != resolved.instrument
            or row.depends_on != depends_on
            or name != row.name
        ):
            changed.append(SheetChange(row.sheet_num, resolved.instrument, depends_on, name))
    return changed, added


def sheet_is_startable(row: SheetRow, now: datetime) -> bool:
    """Pending, or waiting with its wait over."""
    if row.status is SheetStatus.PENDING:
        return True
    return row.status is SheetStatus.WAITING and (
        row.waiting_until is None or row.waiting_until <= now
    )
