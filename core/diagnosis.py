"""Why a job failed or is stuck, in one bounded answer (the `diagnose` tool).

Built from what the store already holds — the job detail, every attempt in history (with
validation results), the tail of each failing attempt's log, waits and conductor pressure —
so an agent does not need five calls and several KB of reading to learn what went wrong and
what to do next. Pure: the conductor gathers the inputs and passes a log reader.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from podium.core.estimate import span_text
from podium.core.models import (
    ErrorCategory,
    HistoryEntry,
    JobDetail,
    JobStatus,
    Outcome,
    PauseReason,
    SheetState,
    SheetStatus,
    UtcTime,
    WaitingReason,
)

# The whole answer, serialized as JSON, stays under this many bytes (documented in docs/).
MAX_DIAGNOSIS_BYTES = 16 * 1024
MAX_FAILING_SHEETS = 10
MAX_LISTED_SHEETS = 20
MAX_EXCERPT_LINES = 12
MAX_NEXT_STEPS = 12
MAX_LINE_CHARS = 240
MAX_ERROR_CHARS = 600
LOG_TAIL_SCANNED = 400
_CONTEXT_BEFORE = 5
_CONTEXT_AFTER = 4
# What an error line tends to contain, when the recorded error names nothing to search for.
_ERRORISH = re.compile(
    r"error|fail|exception|traceback|denied|not found|no such|timed? ?out|fatal|panic|"
    r"refused|invalid|unauthori[sz]ed|forbidden|limit",
    re.IGNORECASE,
)
# A classified failure ends with "; <category>: <matched text>", a rate limit with "; rate
# limited by <instrument>[ until <moment>]: <matched text>" (see `classify.describe`; the
# older "; rate_limited: " of stored errors too), and the engine may add why it gave up.
_MATCHED_TEXT = re.compile(
    r"; (?:rate_limited|auth|transient|billing"
    r"|rate limited by [a-z0-9._-]+(?: until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)?)"
    r": (.+?)(?:; still rate limited after \d+ waits)?$",
    re.DOTALL,
)

LogReader = Callable[[int, int], Awaitable[str]]  # (sheet_num, attempt) -> log tail text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FailedValidation(_Model):
    type: str
    detail: str | None
    path: str | None = None
    expected: str | None = None
    found: str | None = None


class LogExcerpt(_Model):
    attempt: int
    lines: list[str] = Field(description="a few lines around the error, not the whole log")
    matched: str | None = Field(
        None, description="the text the excerpt is centred on, when one was found"
    )
    log_uri: str | None


class SheetDiagnosis(_Model):
    sheet_num: int
    name: str | None
    status: SheetStatus
    instrument: str
    failed_on: str | None = Field(
        None,
        description="the instrument the last failed attempt ran on, when it is not the "
        "sheet's instrument now (the sheet moved to a fallback)",
    )
    error_category: ErrorCategory | None
    cause: str = Field(description="one sentence: why this sheet did not complete")
    error: str | None
    attempts: int
    outcomes: list[str] = Field(description="outcome of each attempt, oldest first")
    rate_limit_waits: int
    running_seconds: float = Field(
        description="time spent running, all attempts together (an approval's wait is none)"
    )
    failed_validations: list[FailedValidation]
    log_excerpt: LogExcerpt | None


class ListedSheet(_Model):
    sheet_num: int
    name: str | None
    reason: str | None


class WaitInfo(_Model):
    sheet_num: int
    name: str | None
    reason: WaitingReason | None
    until: UtcTime | None
    detail: str | None


class HeldInstrument(_Model):
    instrument: str
    until: UtcTime


class NextStep(_Model):
    action: str = Field(description="what to do, in one line")
    tool: str | None = Field(None, description="the MCP tool that does it")
    arguments: dict[str, Any] | None = Field(None, description="arguments for that tool")
    cli: str | None = Field(None, description="the same from a terminal")


class Diagnosis(_Model):
    job_id: str
    name: str
    status: JobStatus
    pause_reason: PauseReason | None
    error: str | None
    verdict: str = Field(description="one line: the state of the job and the main cause")
    total_sheets: int
    completed_sheets: int
    failing: list[SheetDiagnosis] = Field(description="failed sheets (and any stuck ones)")
    failing_total: int
    skipped: list[ListedSheet]
    skipped_total: int
    waiting: list[WaitInfo]
    rate_limits: list[HeldInstrument]
    pressure_level: str | None
    pressure_reason: str | None
    next_steps: list[NextStep]
    truncated: bool = Field(description="true when lists or excerpts were cut to fit the cap")
    max_bytes: int = MAX_DIAGNOSIS_BYTES


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def _label(sheet: SheetState) -> str:
    return f"sheet {sheet.sheet_num}" + (f" ({sheet.name})" if sheet.name else "")


def excerpt_around(text: str, error: str | None) -> tuple[list[str], str | None]:
    """A few lines of a log tail centred on the recorded error: the text a pattern matched
    when there is one, else the last line that looks like an error, else the last lines."""
    lines = text.splitlines()
    if not lines:
        return [], None
    needle = None
    if error:
        found = _MATCHED_TEXT.search(error)
        if found:
            needle = (
                found.group(1).strip().splitlines()[0][:120] if found.group(1).strip() else None
            )
    index = None
    if needle:
        for i in range(len(lines) - 1, -1, -1):
            if needle in lines[i]:
                index = i
                break
    if index is None:
        for i in range(len(lines) - 1, -1, -1):
            if _ERRORISH.search(lines[i]):
                index = i
                needle = None
                break
    if index is None:
        chosen = lines[-MAX_EXCERPT_LINES:]
    else:
        start = max(0, index - _CONTEXT_BEFORE)
        chosen = lines[start : min(len(lines), index + _CONTEXT_AFTER + 1)]
        if index < len(lines) - 1 - _CONTEXT_AFTER:
            # The error is not at the end: the last line says how the run ended.
            chosen = [*chosen[: MAX_EXCERPT_LINES - 2], "...", lines[-1]]
    matched = needle or (lines[index] if index is not None else None)
    return [_clip(line, MAX_LINE_CHARS) or "" for line in chosen[-MAX_EXCERPT_LINES:]], _clip(
        matched, MAX_LINE_CHARS
    )


def _failed_validations(entry: HistoryEntry | None) -> list[FailedValidation]:
    if entry is None:
        return []
    return [
        FailedValidation(
            type=v.type,
            detail=_clip(v.detail, 300),
            path=v.path,
            expected=_clip(v.expected, 200),
            found=_clip(v.found, 300),
        )
        for v in entry.validations
        if not v.passed
    ]


def _cause(
    sheet: SheetState,
    last: HistoryEntry | None,
    failed: Sequence[FailedValidation],
    gated: bool = False,
) -> str:
    if gated and sheet.error_category is ErrorCategory.TIMEOUT:
        # Nothing ran: the gate waited for a person who did not decide.
        waited = f" (it waited {span_text(last.duration_seconds or 0.0)})" if last else ""
        return f"nobody approved or rejected it before its timeout_seconds ran out{waited}"
    cause = _cause_on(sheet, last, failed)
    failed_on = _failed_on(sheet, last)
    if failed_on is not None and sheet.status is not SheetStatus.FAILED:
        return f"{cause}; the sheet moved on to {sheet.instrument!r}"
    return cause


def _failed_on(sheet: SheetState, last: HistoryEntry | None) -> str | None:
    if last is None or last.instrument is None or last.instrument == sheet.instrument:
        return None
    return last.instrument


def _cause_on(
    sheet: SheetState, last: HistoryEntry | None, failed: Sequence[FailedValidation]
) -> str:
    category = sheet.error_category
    error = sheet.last_error or (last.error if last else None) or "no error recorded"
    # The instrument whose attempt failed: the sheet may have moved to a fallback since.
    instrument = _failed_on(sheet, last) or sheet.instrument
    if category is ErrorCategory.VALIDATION_FAILED and failed:
        first = failed[0]
        where = f" on {first.path}" if first.path else ""
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        found = f"; found: {_clip(first.found, 80)!r}" if first.found else ""
        return (
            f"the run exited successfully but validation {first.type}{where} failed: "
            f"{first.detail}{found}{more}"
        )
    if category is ErrorCategory.TIMEOUT:
        return f"the run was stopped: {error}"
    if category is ErrorCategory.AUTH:
        return f"the instrument {instrument!r} reported an authentication error ({error})"
    if category is ErrorCategory.BILLING:
        return (
            f"the instrument {instrument!r} reported that its account is out of credits "
            f"or its plan is exhausted ({error})"
        )
    if category is ErrorCategory.RATE_LIMITED:
        return f"the instrument {instrument!r} stayed rate limited: {error}"
    if category is ErrorCategory.TRANSIENT:
        return f"a transient error (network, overload) on the last attempt: {error}"
    if category is ErrorCategory.CRASHED:
        return f"the process was {error}"
    if category is ErrorCategory.SPEC_INVALID:
        return "the job's stored spec no longer loads"
    if category is ErrorCategory.DEADLINE:
        return "the job's deadline_seconds passed while it ran"
    if category is ErrorCategory.INTERRUPTED:
        return "the conductor stopped while it ran"
    if category is ErrorCategory.CANCELLED:
        return "cancelled"
    return f"the run failed: {error}"


def _resume(job_id: str, why: str) -> NextStep:
    return NextStep(
        action=why,
        tool="resume",
        arguments={"job_id": job_id, "retry_failed": True},
        cli=f"podium resume {job_id}",
    )


@dataclass
class _Advice:
    """What one failing sheet asks for: a line of advice, whether a changed spec or a plain
    re-run can fix it, and any tool call of its own."""

    action: str
    fix_spec: bool = False
    rerun: bool = False
    extra: list[NextStep] = field(default_factory=list)


def _advice(job_id: str, sheet: SheetDiagnosis, gated: bool = False) -> _Advice:
    label = f"sheet {sheet.sheet_num}"
    category = sheet.error_category
    if gated and category is ErrorCategory.TIMEOUT:
        return _Advice(
            f"{label} is an approval nobody decided in time: re-run it to ask again (and "
            "decide it with approve), or give it a longer instrument_config.timeout_seconds",
            rerun=True,
        )
    if sheet.failed_on is not None and sheet.status is not SheetStatus.FAILED:
        # Moved to a fallback and not done yet: nothing to re-run or fix for it to go on.
        return _Advice(
            f"{label} moved from {sheet.failed_on!r} to {sheet.instrument!r} after "
            f"{category.value if category else 'a failure'} and goes on there; fix "
            f"{sheet.failed_on!r} only to have later sheets run on it"
        )
    instrument = sheet.failed_on or sheet.instrument
    if category is ErrorCategory.VALIDATION_FAILED:
        first = sheet.failed_validations[0] if sheet.failed_validations else None
        what = f" ({first.type} on {first.path})" if first and first.path else ""
        return _Advice(
            f"{label} does not produce what its validation{what} expects: fix its prompt or "
            "the validation",
            fix_spec=True,
            rerun=True,
        )
    if category is ErrorCategory.TIMEOUT:
        return _Advice(
            f"{label} needs more time: raise instrument_config.timeout_seconds (or "
            "idle_timeout_seconds) for it",
            fix_spec=True,
        )
    if category is ErrorCategory.AUTH:
        return _Advice(
            f"log the {instrument!r} CLI in (run it once by hand, or set its API key in "
            "instrument_config.env), then re-run",
            rerun=True,
        )
    if category is ErrorCategory.BILLING:
        return _Advice(
            f"add credits to (or upgrade the plan of) the account {instrument!r} uses, "
            "then re-run; waiting does not help",
            rerun=True,
        )
    if category is ErrorCategory.RATE_LIMITED:
        lift = NextStep(
            action=f"wait for {instrument!r}'s limit to reset, or lift Podium's wait",
            tool="clear_rate_limits",
            arguments={"instrument": instrument},
            cli=f"podium clear --rate-limits --instrument {instrument}",
        )
        # Nothing in the spec is wrong: waiting, or another instrument, is what helps.
        return _Advice(
            f"{label} stayed rate limited on {instrument!r}: re-run it once the limit lifts, "
            "or give it fallbacks (other instruments) so it moves on instead of waiting",
            rerun=True,
            extra=[lift],
        )
    if category is ErrorCategory.SPEC_INVALID:
        return _Advice(f"{label}: the job's stored spec no longer loads", fix_spec=True)
    if category in (ErrorCategory.TRANSIENT, ErrorCategory.INTERRUPTED, ErrorCategory.DEADLINE):
        return _Advice(f"{label} failed for a reason outside its own work", rerun=True)
    logs = NextStep(
        action=f"read {label}'s log to see why it failed",
        tool="logs",
        arguments={"job_id": job_id, "sheet": sheet.sheet_num},
        cli=f"podium logs {job_id} --sheet {sheet.sheet_num}",
    )
    return _Advice(f"{label} failed: {sheet.cause}", fix_spec=True, rerun=True, extra=[logs])


def _sheets_text(nums: Sequence[int]) -> str:
    return ("sheet " if len(nums) == 1 else "sheets ") + ", ".join(str(n) for n in nums)


def _next_steps(
    job_id: str, failing: Sequence[SheetDiagnosis], gates: Collection[int] = ()
) -> list[NextStep]:
    steps: list[NextStep] = []
    fix: list[int] = []
    rerun: list[int] = []
    for sheet in failing:
        advice = _advice(job_id, sheet, sheet.sheet_num in gates)
        steps.append(NextStep(action=advice.action))
        steps.extend(advice.extra)
        if advice.fix_spec:
            fix.append(sheet.sheet_num)
        if advice.rerun:
            rerun.append(sheet.sheet_num)
    if fix:
        steps.append(
            NextStep(
                action=f"resume with a corrected spec for {_sheets_text(fix)} (completed sheets "
                "never re-run)",
                tool="resume",
                arguments={"job_id": job_id, "spec": "<the corrected spec>"},
                cli=f"podium resume {job_id} --spec FIXED.yaml",
            )
        )
    if rerun:
        steps.append(_resume(job_id, f"or re-run {_sheets_text(rerun)} as they are"))
    return steps


def _verdict(
    detail: JobDetail, failing: Sequence[SheetDiagnosis], waiting: Sequence[WaitInfo]
) -> str:
    status = detail.status
    progress = f"{detail.completed_sheets}/{detail.total_sheets} sheets completed"
    if status is JobStatus.COMPLETED:
        return f"completed: {progress}"
    if failing:
        causes = Counter(s.error_category.value if s.error_category else "failed" for s in failing)
        listed = ", ".join(f"{n} {c}" for c, n in causes.most_common())
        head = status.value if status.is_terminal else f"{status.value}, with failures"
        return f"{head}: {progress}; failing sheets by cause: {listed}; first: {failing[0].cause}"
    if status is JobStatus.PAUSED:
        reason = detail.pause_reason.value if detail.pause_reason else "unknown"
        return f"paused ({reason}): {progress}; nothing runs until it is resumed"
    if status is JobStatus.CANCELLED:
        return f"cancelled: {progress}"
    if waiting:
        reasons = Counter(w.reason.value if w.reason else "waiting" for w in waiting)
        listed = ", ".join(f"{n} on {r}" for r, n in reasons.most_common())
        return f"{status.value}: {progress}; sheets waiting: {listed}"
    if status is JobStatus.FAILED:
        return f"failed: {progress}; {detail.error or 'no sheet failed on its own'}"
    return f"{status.value}: {progress}"


def _held_detail(sheet: Any) -> str | None:
    """Why a sheet the engine shows waiting although nothing of its own failed waits."""
    if sheet.attempts and sheet.error_category is not None:
        return None  # its own failure (a rate limit it hit) says it better
    if sheet.waiting_reason is WaitingReason.RATE_LIMIT:
        return f"ready: {sheet.instrument!r} is held by a rate limit"
    if sheet.waiting_reason is WaitingReason.BACKPRESSURE:
        return "ready: held back by backpressure (high or critical)"
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
    if detail.status is JobStatus.CANCELLED:
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
    for sheet in problem_sheets[:MAX_FAILING_SHEETS]:
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
        excerpt = None
        if last_failed is not None and last_failed.log_path:
            tail = await read_log(sheet.sheet_num, last_failed.attempt)
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
                failed_on=_failed_on(sheet, last_failed),
                error_category=sheet.error_category,
                cause=_clip(
                    _cause(sheet, last_failed, failed, sheet.sheet_num in gates), MAX_ERROR_CHARS
                )
                or "",
                error=_clip(sheet.last_error, MAX_ERROR_CHARS),
                attempts=sheet.attempts,
                outcomes=[a.outcome.value for a in finished if a.outcome is not None][-10:],
                rate_limit_waits=sum(1 for a in finished if a.outcome is Outcome.RATE_LIMITED),
                running_seconds=round(sum(a.duration_seconds or 0.0 for a in ran), 3),
                failed_validations=failed[:5],
                log_excerpt=excerpt,
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
            detail=_clip(_held_detail(s) or s.last_error, 200),
        )
        for s in detail.sheets
        if s.status is SheetStatus.WAITING
    ]
    waiting = sorted([*waiting, *_behind_holds(detail, held)], key=lambda w: w.sheet_num)
    steps = _next_steps(detail.job_id, failing, gates)
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
    elif not failing and detail.status is JobStatus.PAUSED:
        steps.append(_resume(detail.job_id, "resume the job"))
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
    if not steps and detail.status.is_terminal and detail.status is not JobStatus.COMPLETED:
        steps.append(_resume(detail.job_id, "re-run what did not complete"))
    result = Diagnosis(
        job_id=detail.job_id,
        name=detail.name,
        status=detail.status,
        pause_reason=detail.pause_reason,
        error=_clip(detail.error, MAX_ERROR_CHARS),
        verdict=_clip(_verdict(detail, failing, waiting), MAX_ERROR_CHARS) or "",
        total_sheets=detail.total_sheets,
        completed_sheets=detail.completed_sheets,
        failing=failing,
        failing_total=len(problem_sheets),
        skipped=[
            ListedSheet(sheet_num=s.sheet_num, name=s.name, reason=_clip(s.last_error, 160))
            for s in skipped[:MAX_LISTED_SHEETS]
        ],
        skipped_total=len(skipped),
        waiting=waiting[:MAX_LISTED_SHEETS],
        rate_limits=[HeldInstrument(instrument=i, until=u) for i, u in held.items()][:20],
        pressure_level=pressure_level,
        pressure_reason=pressure_reason,
        next_steps=steps[:MAX_NEXT_STEPS],
        truncated=len(problem_sheets) > MAX_FAILING_SHEETS
        or len(skipped) > MAX_LISTED_SHEETS
        or len(waiting) > MAX_LISTED_SHEETS,
    )
    return fit(result)


def size_of(value: BaseModel) -> int:
    return len(json.dumps(value.model_dump(mode="json"), separators=(",", ":")).encode())


def fit(diagnosis: Diagnosis, max_bytes: int = MAX_DIAGNOSIS_BYTES) -> Diagnosis:
    """Cut the least useful parts first until the answer fits: log excerpts of later sheets,
    then their validations, then whole later sheets."""
    if size_of(diagnosis) <= max_bytes:
        return diagnosis
    diagnosis = diagnosis.model_copy(deep=True)
    diagnosis.truncated = True
    for sheet in reversed(diagnosis.failing[1:]):
        if sheet.log_excerpt is not None:
            sheet.log_excerpt.lines = sheet.log_excerpt.lines[-3:]
            if size_of(diagnosis) <= max_bytes:
                return diagnosis
    for sheet in reversed(diagnosis.failing[1:]):
        sheet.log_excerpt = None
        sheet.failed_validations = sheet.failed_validations[:1]
        if size_of(diagnosis) <= max_bytes:
            return diagnosis
    while len(diagnosis.failing) > 1 and size_of(diagnosis) > max_bytes:
        diagnosis.failing.pop()
    while diagnosis.skipped and size_of(diagnosis) > max_bytes:
        diagnosis.skipped.pop()
    while diagnosis.waiting and size_of(diagnosis) > max_bytes:
        diagnosis.waiting.pop()
    return diagnosis
