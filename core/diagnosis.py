"""Why a job failed or is stuck, in one bounded answer (the `diagnose` tool).

Built from what the store already holds — the job detail, every attempt in history (with
validation results), the tail of each failing attempt's log, waits and conductor pressure —
so an agent does not need five calls and several KB of reading to learn what went wrong and
what to do next. Pure: the conductor gathers the inputs and passes a log reader. The answer's
shape and size cap are in diagnosis_answer.py, its words in diagnosis_advice.py, the log
excerpts in log_excerpt.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from podium.core.diagnosis_advice import (
    approval_steps,
    failed_instrument,
    follow_up_steps,
    host_steps,
    next_steps,
    rejection,
    resume_step,
    sheet_cause,
    verdict,
)
from podium.core.diagnosis_answer import (
    Diagnosis,
    FailedValidation,
    HeldInstrument,
    ListedSheet,
    LogExcerpt,
    NextStep,
    SheetDiagnosis,
    WaitInfo,
    clip,
    fit,
)
from podium.core.log_excerpt import excerpt_around, truncated_at
from podium.core.models import (
    ErrorCategory,
    HistoryEntry,
    JobDetail,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    WaitingReason,
    format_time,
)

MAX_FAILING_SHEETS = 10
MAX_LISTED_SHEETS = 20
MAX_NEXT_STEPS = 12
MAX_ERROR_CHARS = 600

LogReader = Callable[[int, int], Awaitable[str]]  # (sheet_num, attempt) -> log tail text


def _failed_validations(entry: HistoryEntry | None) -> list[FailedValidation]:
    if entry is None:
        return []
    return [
        FailedValidation(
            type=v.type,
            detail=clip(v.detail, 300),
            path=v.path,
            expected=clip(v.expected, 200),
            found=clip(v.found, 300),
        )
        for v in entry.validations
        if not v.passed
    ]


def _held_detail(sheet: Any) -> str | None:
    """Why a sheet the engine shows waiting although nothing of its own failed waits."""
    if sheet.attempts and sheet.error_category is not None:
        return None  # its own failure (a rate limit it hit) says it better
    if sheet.waiting_reason is WaitingReason.RATE_LIMIT:
        return f"ready: {sheet.instrument!r} is held by a rate limit"
    if sheet.waiting_reason is WaitingReason.BACKPRESSURE:
        return "ready: held back by backpressure (high or critical)"
    if sheet.waiting_reason is WaitingReason.APPROVAL:
        return f"asks: {sheet.output_tail or ''}"
    return None


def _behind_holds(detail: JobDetail, held: dict[str, Any]) -> list[WaitInfo]:
    """Pending sheets of a running job that could start but for a rate-limit hold on their
    instrument (set by any sheet, in any job) and that the engine has not shown waiting (it
    marks only a job's free slots' worth): they have no wait of their own to show."""
    if not held or detail.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return []
    status = {s.sheet_num: s.status for s in detail.sheets}
    done = (SheetStatus.COMPLETED, SheetStatus.SKIPPED)
    return [
        WaitInfo(
            sheet_num=s.sheet_num,
            name=s.name,
            reason=WaitingReason.RATE_LIMIT,
            until=held[s.instrument],
            detail=f"pending: {s.instrument!r} is held by a rate limit",
        )
        for s in detail.sheets
        if s.status is SheetStatus.PENDING
        and s.instrument in held
        and all(status.get(d) in done for d in s.depends_on)
    ]


def _truncated_text(truncated: bool, cut_at: int | None) -> str:
    """`truncated`: the attempt's stored flag, or its log's marker (an attempt recorded
    before the flag was stored reads false); `cut_at`: the cap the marker names, when the
    log could be read (the cap of the conductor that ran it, which may not be this one's)."""
    if not truncated:
        return ""
    at = f"at {cut_at} bytes (log_max_bytes)" if cut_at is not None else "at log_max_bytes"
    # A flood: what the run printed last, its error included, may be past the cap.
    return (
        f"; its log was truncated {at}: the output after that "
        "was discarded, so the log does not show how the run ended"
    )


def _moment(until: Any) -> str:
    return format_time(until) if isinstance(until, datetime) else str(until)


def _held_for_rerun(detail: JobDetail, held: dict[str, Any]) -> dict[str, Any]:
    """The holds a re-run of an ended job would wait behind: those on the instruments of
    the sheets it runs again (every sheet not completed)."""
    if not detail.status.is_terminal or detail.status is JobStatus.COMPLETED:
        return {}
    again = {s.instrument for s in detail.sheets if s.status is not SheetStatus.COMPLETED}
    return {i: until for i, until in held.items() if i in again}


def _warn_of_holds(steps: list[NextStep], holds: dict[str, Any]) -> list[NextStep]:
    """A re-run of sheets whose instrument a rate limit still holds waits behind it: the
    step says so, and how to lift it."""
    if not holds:
        return steps
    words = ", ".join(
        f"{i!r} is still held by a rate limit until {_moment(u)}" for i, u in holds.items()
    )
    out = [
        step.model_copy(
            update={
                "action": f"{step.action} ({words}: the re-run waits for it; clear_rate_limits "
                "lifts it if you know the limit is gone)"
            }
        )
        if step.tool == "resume" and (step.arguments or {}).get("retry_failed") is True
        else step
        for step in steps
    ]
    one = next(iter(holds)) if len(holds) == 1 else None
    out.append(
        NextStep(
            action="lift the rate limit that holds the re-run, if you know it is gone",
            tool="clear_rate_limits",
            arguments={"instrument": one} if one else {},
            cli="podium clear --rate-limits" + (f" --instrument {one}" if one else ""),
        )
    )
    return out


def _key(step: NextStep) -> str:
    # Two steps that make the same call are one, whatever their words.
    if step.tool is None:
        return step.action
    return f"{step.tool} {json.dumps(step.arguments, sort_keys=True)}"


def _assembled(advice: Sequence[NextStep], closing: Sequence[NextStep]) -> list[NextStep]:
    """The sheets' advice, then the steps that end the job's trouble (resume it, lift a
    hold), without repeats (two sheets held by one rate limit ask for one lift), at most
    MAX_NEXT_STEPS: the sheets' advice is cut first, saying so, never the closing steps."""
    ends: dict[str, NextStep] = {}
    for step in closing:
        ends.setdefault(_key(step), step)
    own: dict[str, NextStep] = {}
    for step in advice:
        if _key(step) not in ends:
            own.setdefault(_key(step), step)
    first, tail = list(own.values()), list(ends.values())
    if len(first) + len(tail) <= MAX_NEXT_STEPS:
        return [*first, *tail]
    room = max(0, MAX_NEXT_STEPS - 1 - len(tail))
    more = NextStep(
        action=f"{len(first) - room} more step(s) for the other failing sheets: see failing"
    )
    return [*first[:room], more, *tail]


async def diagnose(
    detail: JobDetail,
    history: Sequence[HistoryEntry],
    read_log: LogReader,
    *,
    rate_limits: Sequence[tuple[str, Any]] = (),
    pressure_level: str | None = None,
    pressure_reason: str | None = None,
    gate: Callable[[str], bool] = lambda instrument: False,
) -> Diagnosis:
    """`detail` must carry every sheet; `history` every attempt of the job (oldest first).
    `gate`: whether an instrument is an approval gate (its attempts ran nothing)."""
    by_num = {s.sheet_num: s for s in detail.sheets}
    by_sheet: dict[int, list[HistoryEntry]] = {}
    for entry in history:
        by_sheet.setdefault(entry.sheet_num, []).append(entry)
    problem_sheets = [s for s in detail.sheets if s.status is SheetStatus.FAILED]
    # A deadline fails the job and cancels its unfinished sheets: they are why it failed.
    problem_sheets += [
        s
        for s in detail.sheets
        if s.status is SheetStatus.CANCELLED and s.error_category is ErrorCategory.DEADLINE
    ]
    # Sheets that failed an attempt and are waiting to retry are the cause of a slow job.
    problem_sheets += [
        s
        for s in detail.sheets
        if s.status in (SheetStatus.WAITING, SheetStatus.PENDING)
        and s.error_category is not None
        and s.error_category is not ErrorCategory.INTERRUPTED
        and s.attempts > 0
    ]
    failing: list[SheetDiagnosis] = []
    gates: set[int] = set()
    # Every problem sheet counts in the verdict and the steps (a resume re-runs them all);
    # only the listed ones have their logs read.
    for index, sheet in enumerate(problem_sheets):
        attempts = by_sheet.get(sheet.sheet_num, [])
        finished = [a for a in attempts if a.outcome is not None]
        # An attempt records the instrument it ran on; a gate's decision records none.
        ran = [a for a in finished if not gate(a.instrument or sheet.instrument)]
        if len(ran) < len(finished):
            gates.add(sheet.sheet_num)
        last_failed = next(
            (a for a in reversed(finished) if a.outcome is not Outcome.COMPLETED), None
        )
        failed = _failed_validations(last_failed)
        decided = rejection(last_failed)
        excerpt = None
        cut_at = None
        if index < MAX_FAILING_SHEETS and last_failed is not None and last_failed.log_path:
            tail = await read_log(sheet.sheet_num, last_failed.attempt)
            cut_at = truncated_at(tail)
            lines, matched = excerpt_around(tail, sheet.last_error or last_failed.error)
            if lines:
                excerpt = LogExcerpt(
                    attempt=last_failed.attempt, lines=lines, matched=matched, log_uri=sheet.log_uri
                )
        failing.append(
            SheetDiagnosis(
                sheet_num=sheet.sheet_num,
                name=sheet.name,
                status=sheet.status,
                instrument=sheet.instrument,
                failed_on=failed_instrument(sheet, last_failed),
                error_category=sheet.error_category,
                cause=clip(
                    sheet_cause(sheet, last_failed, failed, sheet.sheet_num in gates)
                    + _truncated_text(
                        cut_at is not None
                        or (last_failed is not None and last_failed.log_truncated),
                        cut_at,
                    ),
                    MAX_ERROR_CHARS,
                )
                or "",
                error=clip(sheet.last_error, MAX_ERROR_CHARS),
                attempts=sheet.attempts,
                outcomes=[a.outcome.value for a in finished if a.outcome is not None][-10:],
                rate_limit_waits=sum(1 for a in finished if a.outcome is Outcome.RATE_LIMITED),
                running_seconds=round(sum(a.duration_seconds or 0.0 for a in ran), 3),
                failed_validations=failed[:5],
                log_excerpt=excerpt,
                decided_by=clip(decided[0], 200) if decided else None,
                note=clip(decided[1], MAX_ERROR_CHARS) if decided else None,
            )
        )
    skipped = [s for s in detail.sheets if s.status is SheetStatus.SKIPPED]
    # Only the holds on instruments this job's sheets run on concern it.
    used = {s.instrument for s in detail.sheets}
    held = {instrument: until for instrument, until in rate_limits if instrument in used}
    waiting = [
        WaitInfo(
            sheet_num=s.sheet_num,
            name=s.name,
            reason=s.waiting_reason,
            until=s.waiting_until,
            detail=clip(_held_detail(s) or s.last_error, 200),
        )
        for s in detail.sheets
        if s.status is SheetStatus.WAITING
    ]
    waiting = sorted([*waiting, *_behind_holds(detail, held)], key=lambda w: w.sheet_num)
    advice, steps = next_steps(detail.job_id, failing, gates, detail.status)
    listed = failing[:MAX_FAILING_SHEETS]
    if detail.pause_reason is PauseReason.COST_LIMIT:
        steps.append(
            NextStep(
                action="the job passed its cost_limit_usd: if it is worth more, resume it "
                "with its spec (spec, spec_yaml or path) carrying a higher cost_limit_usd",
                tool="resume",
                arguments={"job_id": detail.job_id},
                cli=f"podium resume {detail.job_id} --spec SPEC",
            )
        )
    elif detail.waiting_for_host is not None:
        steps.extend(host_steps(detail))
    elif not failing and detail.status is JobStatus.PAUSED:
        steps.append(resume_step(detail.job_id, "resume the job"))
    asking = [s for s in detail.sheets if s.waiting_reason is WaitingReason.APPROVAL]
    steps.extend(approval_steps(detail.job_id, asking))
    limited = {
        by_num[w.sheet_num].instrument for w in waiting if w.reason is WaitingReason.RATE_LIMIT
    }
    if limited:
        one = next(iter(limited)) if len(limited) == 1 else None
        steps.append(
            NextStep(
                action="sheets wait for an instrument's rate limit to reset; lift it only if "
                "you know the limit is gone",
                tool="clear_rate_limits",
                arguments={"instrument": one} if one else {},
                cli="podium clear --rate-limits" + (f" --instrument {one}" if one else ""),
            )
        )
    if pressure_level in ("high", "critical"):
        steps.append(
            NextStep(action=f"the conductor is under {pressure_level} pressure: {pressure_reason}")
        )
    if (
        not advice
        and not steps
        and detail.status.is_terminal
        and detail.status is not JobStatus.COMPLETED
    ):
        steps.append(resume_step(detail.job_id, "re-run what did not complete"))
    steps.extend(follow_up_steps(detail))
    steps = _warn_of_holds(steps, _held_for_rerun(detail, held))
    result = Diagnosis(
        job_id=detail.job_id,
        name=detail.name,
        status=detail.status,
        pause_reason=detail.pause_reason,
        error=clip(detail.error, MAX_ERROR_CHARS),
        verdict=clip(verdict(detail, failing, waiting), MAX_ERROR_CHARS) or "",
        total_sheets=detail.total_sheets,
        completed_sheets=detail.completed_sheets,
        failing=listed,
        failing_total=len(problem_sheets),
        skipped=[
            ListedSheet(sheet_num=s.sheet_num, name=s.name, reason=clip(s.last_error, 160))
            for s in skipped[:MAX_LISTED_SHEETS]
        ],
        skipped_total=len(skipped),
        waiting=waiting[:MAX_LISTED_SHEETS],
        rate_limits=[HeldInstrument(instrument=i, until=u) for i, u in held.items()][:20],
        pressure_level=pressure_level,
        pressure_reason=pressure_reason,
        next_steps=_assembled(advice, steps),
        truncated=len(problem_sheets) > MAX_FAILING_SHEETS
        or len(skipped) > MAX_LISTED_SHEETS
        or len(waiting) > MAX_LISTED_SHEETS,
    )
    return fit(result)
