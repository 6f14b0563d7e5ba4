"""What a diagnosis says in words: the cause of each failing sheet, the advice it asks for
(a changed spec, a re-run, a tool call of its own), the next steps for the whole job, and
the one-line verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from podium.core.diagnosis_answer import FailedValidation, NextStep, SheetDiagnosis, WaitInfo, clip
from podium.core.estimate import span_text
from podium.core.models import (
    ErrorCategory,
    HistoryEntry,
    JobDetail,
    JobStatus,
    SheetState,
    SheetStatus,
)

# The cause of a sheet's failure by its category ({error}: the error recorded, {instrument}:
# the instrument whose attempt failed); a failed validation says which, below.
_CAUSES = {
    ErrorCategory.TIMEOUT: "the run was stopped: {error}",
    ErrorCategory.AUTH: "the instrument {instrument!r} reported an authentication error ({error})",
    ErrorCategory.BILLING: (
        "the instrument {instrument!r} reported that its account is out of credits "
        "or its plan is exhausted ({error})"
    ),
    ErrorCategory.RATE_LIMITED: "the instrument {instrument!r} stayed rate limited: {error}",
    ErrorCategory.TRANSIENT: "a transient error (network, overload) on the last attempt: {error}",
    ErrorCategory.CRASHED: "the process was {error}",
    ErrorCategory.SPEC_INVALID: "the job's stored spec no longer loads",
    ErrorCategory.DEADLINE: "the job's deadline_seconds passed while it ran",
    ErrorCategory.INTERRUPTED: "the conductor stopped while it ran",
    ErrorCategory.CANCELLED: "cancelled",
}


def sheet_cause(
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
    failed_on = failed_instrument(sheet, last)
    if failed_on is not None and sheet.status is not SheetStatus.FAILED:
        return f"{cause}; the sheet moved on to {sheet.instrument!r}"
    return cause


def failed_instrument(sheet: SheetState, last: HistoryEntry | None) -> str | None:
    if last is None or last.instrument is None or last.instrument == sheet.instrument:
        return None
    return last.instrument


def _cause_on(
    sheet: SheetState, last: HistoryEntry | None, failed: Sequence[FailedValidation]
) -> str:
    category = sheet.error_category
    error = sheet.last_error or (last.error if last else None) or "no error recorded"
    # The instrument whose attempt failed: the sheet may have moved to a fallback since.
    instrument = failed_instrument(sheet, last) or sheet.instrument
    if category is ErrorCategory.VALIDATION_FAILED and failed:
        first = failed[0]
        where = f" on {first.path}" if first.path else ""
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        found = f"; found: {clip(first.found, 80)!r}" if first.found else ""
        return (
            f"the run exited successfully but validation {first.type}{where} failed: "
            f"{first.detail}{found}{more}"
        )
    causes = _CAUSES.get(category) if category is not None else None
    return (causes or "the run failed: {error}").format(error=error, instrument=instrument)


def resume_step(job_id: str, why: str) -> NextStep:
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


# The advice for a sheet that failed by these categories ({label}: the sheet, {instrument}:
# the instrument its attempt failed on), and whether a changed spec, a re-run, can fix it.
_PLAIN_ADVICE: dict[ErrorCategory, tuple[str, bool, bool]] = {
    ErrorCategory.TIMEOUT: (
        "{label} needs more time: raise instrument_config.timeout_seconds (or "
        "idle_timeout_seconds) for it",
        True,
        False,
    ),
    ErrorCategory.AUTH: (
        "log the {instrument!r} CLI in (run it once by hand, or set its API key in "
        "instrument_config.env), then re-run",
        False,
        True,
    ),
    ErrorCategory.BILLING: (
        "add credits to (or upgrade the plan of) the account {instrument!r} uses, "
        "then re-run; waiting does not help",
        False,
        True,
    ),
    ErrorCategory.SPEC_INVALID: ("{label}: the job's stored spec no longer loads", True, False),
    **dict.fromkeys(
        (ErrorCategory.TRANSIENT, ErrorCategory.INTERRUPTED, ErrorCategory.DEADLINE),
        ("{label} failed for a reason outside its own work", False, True),
    ),
}


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
    plain = _PLAIN_ADVICE.get(category) if category is not None else None
    if plain is not None:
        action, fix_spec, rerun = plain
        return _Advice(
            action.format(label=label, instrument=instrument), fix_spec=fix_spec, rerun=rerun
        )
    logs = NextStep(
        action=f"read {label}'s log to see why it failed",
        tool="logs",
        arguments={"job_id": job_id, "sheet": sheet.sheet_num},
        cli=f"podium logs {job_id} --sheet {sheet.sheet_num}",
    )
    return _Advice(f"{label} failed: {sheet.cause}", fix_spec=True, rerun=True, extra=[logs])


def _sheets_text(nums: Sequence[int]) -> str:
    return ("sheet " if len(nums) == 1 else "sheets ") + ", ".join(str(n) for n in nums)


def next_steps(
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
        steps.append(resume_step(job_id, f"or re-run {_sheets_text(rerun)} as they are"))
    return steps


def verdict(
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
