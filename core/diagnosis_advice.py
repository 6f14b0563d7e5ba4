"""What a diagnosis says in words: the cause of each failing sheet, the advice it asks for
(a changed spec, a re-run, a tool call of its own), the next steps for the whole job, and
the one-line verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from podium.core.diagnosis_answer import FailedValidation, NextStep, SheetDiagnosis, WaitInfo, clip
from podium.core.estimate import span_text
from podium.core.job_hooks import DEFERRED_RETRY_SECONDS
from podium.core.models import (
    Decision,
    ErrorCategory,
    FollowUpStatus,
    HistoryEntry,
    JobDetail,
    JobStatus,
    Outcome,
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
    ErrorCategory.INTERRUPTED: "the conductor stopped while it ran",
    ErrorCategory.CANCELLED: "cancelled",
}


def rejection(last: HistoryEntry | None) -> tuple[str, str | None] | None:
    """Who turned an approval sheet down, and their note, when its last attempt is a
    rejection."""
    if last is None or last.decision is not Decision.REJECT:
        return None
    return last.decided_by or "an unnamed client", last.note


def _rejected_text(who: str, note: str | None) -> str:
    return f"rejected by {who}" + (f" with the note {clip(note, 300)!r}" if note else " (no note)")


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
    decided = rejection(last)
    if decided is not None and sheet.error_category is ErrorCategory.REJECTED:
        # A gate runs nothing: the person's decision is the whole story, there is no log.
        return f"the approval was {_rejected_text(*decided)}"
    if sheet.error_category is ErrorCategory.DEADLINE:
        if last is not None and last.outcome is Outcome.CANCELLED:
            when = "while it ran"
        else:
            when = "before it ran again" if sheet.attempts else "before it started"
        return f"the job's deadline_seconds passed {when}"
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
    if category is ErrorCategory.RATE_LIMITED and sheet.status is not SheetStatus.FAILED:
        # Not out of rate-limit waits yet: it runs again by itself once the limit lifts.
        return f"the instrument {instrument!r} is rate limited: {error}"
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
    # An approval sheet that a resume asks again (rather than re-runs).
    ask_again: bool = False
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
    ErrorCategory.DEADLINE: (
        "the job's deadline_seconds stopped {label}: a resume starts a new clock; give the job "
        "a larger deadline_seconds if its work needs longer",
        True,
        True,
    ),
    **dict.fromkeys(
        (ErrorCategory.TRANSIENT, ErrorCategory.INTERRUPTED),
        ("{label} failed for a reason outside its own work", False, True),
    ),
}


def _advice(job_id: str, sheet: SheetDiagnosis, gated: bool = False) -> _Advice:
    advice = _advice_for(job_id, sheet, gated)
    if not sheet.status.is_terminal and sheet.failed_on is None:
        # Waiting to retry: the engine runs it again by itself, no re-run is needed.
        advice.rerun = False
    return advice


def _advice_for(job_id: str, sheet: SheetDiagnosis, gated: bool) -> _Advice:
    label = f"sheet {sheet.sheet_num}"
    category = sheet.error_category
    if gated and category is ErrorCategory.TIMEOUT:
        return _Advice(
            f"{label} is an approval nobody decided in time: re-run it to ask again (and "
            "decide it with approve), or give it a longer instrument_config.timeout_seconds",
            ask_again=True,
        )
    if category is ErrorCategory.REJECTED:
        who = _rejected_text(sheet.decided_by or "an unnamed client", sheet.note)
        return _Advice(
            f"{label} is an approval gate {who}: settle what they asked for, then resume the "
            "job to ask again (a gate has no log; completed sheets never re-run)",
            ask_again=True,
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
        if sheet.status is not SheetStatus.FAILED:
            return _Advice(
                f"{label} waits out a rate limit on {instrument!r} and runs again by itself "
                "when it lifts; give it fallbacks (other instruments) to move on instead",
                extra=[lift],
            )
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


MAX_NAMED_SHEETS = 10


def _sheets_text(nums: Sequence[int]) -> str:
    if len(nums) > MAX_NAMED_SHEETS:
        # A resume covers them all; the answer names the first few.
        shown = ", ".join(str(n) for n in nums[:MAX_NAMED_SHEETS])
        return f"{len(nums)} sheets ({shown}, ...)"
    return ("sheet " if len(nums) == 1 else "sheets ") + ", ".join(str(n) for n in nums)


def next_steps(
    job_id: str,
    failing: Sequence[SheetDiagnosis],
    gates: Collection[int] = (),
    job_status: JobStatus | None = None,
) -> tuple[list[NextStep], list[NextStep]]:
    """The advice for each failing sheet, and the steps that close it (resume the job, with
    a corrected spec or as it is), which a size cap must never cut."""
    steps: list[NextStep] = []
    fix: list[int] = []
    rerun: list[int] = []
    ask: list[int] = []
    stopped: list[int] = []
    for sheet in failing:
        advice = _advice(job_id, sheet, sheet.sheet_num in gates)
        if sheet.error_category is ErrorCategory.DEADLINE:
            stopped.append(sheet.sheet_num)  # one deadline stopped them all: one line
        else:
            steps.append(NextStep(action=advice.action))
        steps.extend(advice.extra)
        if advice.fix_spec:
            fix.append(sheet.sheet_num)
        if advice.rerun:
            rerun.append(sheet.sheet_num)
        if advice.ask_again:
            ask.append(sheet.sheet_num)
    if stopped:
        steps.append(
            NextStep(
                action=_PLAIN_ADVICE[ErrorCategory.DEADLINE][0].format(
                    label=_sheets_text(stopped), instrument=None
                )
            )
        )
    closing: list[NextStep] = []
    if fix:
        closing.append(
            NextStep(
                action=f"resume with a corrected spec for {_sheets_text(fix)} (completed sheets "
                "never re-run)",
                tool="resume",
                arguments={"job_id": job_id, "spec": "<the corrected spec>"},
                cli=f"podium resume {job_id} --spec FIXED.yaml",
            )
        )
    if rerun or ask:
        as_is = "as it is" if len(rerun) == 1 else "as they are"
        parts = [f"re-run {_sheets_text(rerun)} {as_is}"] if rerun else []
        if ask:
            parts.append(f"ask {_sheets_text(ask)} again")
        why = " and ".join(parts)
        why = f"or {why}" if fix else why if rerun else f"resume the job to {why}"
        if job_status in (JobStatus.QUEUED, JobStatus.RUNNING):
            # A resume of a job that still runs does nothing.
            why = f"once the job has ended: {why}"
        closing.append(resume_step(job_id, why))
    return steps, closing


MAX_APPROVAL_STEPS = 3


def approval_steps(job_id: str, asking: Sequence[SheetState]) -> list[NextStep]:
    """What a job stopped at approval gates needs: a person's decision on each question
    (recorded with `approve`; an agent should put the question to them, not answer it)."""
    steps = [
        NextStep(
            action=f"sheet {s.sheet_num}" + (f" ({s.name})" if s.name else "") + " waits for a "
            f"person to approve or reject {clip(s.output_tail or '', 200)!r}"
            + (f" before {s.waiting_until:%Y-%m-%d %H:%M}Z" if s.waiting_until else "")
            + ": ask them, then record their decision",
            tool="approve",
            arguments={"job_id": job_id, "sheet": s.sheet_num, "decision": "<approve or reject>"},
            cli=f"podium approve {job_id} {s.sheet_num} [--reject] [--note TEXT]",
        )
        for s in asking[:MAX_APPROVAL_STEPS]
    ]
    if len(asking) > MAX_APPROVAL_STEPS:
        steps.append(
            NextStep(
                action=f"{len(asking) - MAX_APPROVAL_STEPS} more approval sheet(s) of this job "
                "wait for a decision",
                cli="podium approve --list",
            )
        )
    return steps


def host_steps(detail: JobDetail) -> list[NextStep]:
    """A job whose `hosts` name no live conductor: bring one up, or change the hosts."""
    hosts = (detail.spec or {}).get("hosts") or []
    labels = ", ".join(hosts)
    return [
        NextStep(
            action=f"start a conductor on this store whose config.yaml has host_labels: "
            f"[{labels}] (or whose conductor_id or host name is one of them)"
        ),
        NextStep(
            action="or run the job elsewhere: resume it with its spec (spec, spec_yaml or "
            "path) carrying hosts that name a live conductor, or none",
            tool="resume",
            arguments={"job_id": detail.job_id},
            cli=f"podium resume {detail.job_id} --spec SPEC",
        ),
    ]


def verdict(
    detail: JobDetail, failing: Sequence[SheetDiagnosis], waiting: Sequence[WaitInfo]
) -> str:
    status = detail.status
    progress = f"{detail.completed_sheets}/{detail.total_sheets} sheets completed"
    if status is JobStatus.COMPLETED:
        note = follow_up_note(detail)
        return f"completed: {progress}" + (f"; {note}" if note else "")
    if failing:
        causes = Counter(s.error_category.value if s.error_category else "failed" for s in failing)
        listed = ", ".join(f"{n} {c}" for c, n in causes.most_common())
        head = status.value if status.is_terminal else f"{status.value}, with failures"
        return f"{head}: {progress}; failing sheets by cause: {listed}; first: {failing[0].cause}"
    if status is JobStatus.PAUSED:
        reason = detail.pause_reason.value if detail.pause_reason else "unknown"
        return f"paused ({reason}): {progress}; nothing runs until it is resumed"
    if status is JobStatus.CANCELLED:
        cut = [s.sheet_num for s in detail.sheets if s.status is SheetStatus.CANCELLED]
        if not cut:
            return f"cancelled: {progress}"
        more = ", ..." if len(cut) > 10 else ""
        return f"cancelled: {progress}; {len(cut)} cancelled ({_sheets_text(cut[:10])}{more})"
    if detail.waiting_for_host is not None:
        return f"{status.value}: {progress}; {detail.waiting_for_host}"
    if waiting:
        reasons = Counter(w.reason.value if w.reason else "waiting" for w in waiting)
        listed = ", ".join(f"{n} on {r}" for r, n in reasons.most_common())
        return f"{status.value}: {progress}; sheets waiting: {listed}"
    if status is JobStatus.FAILED:
        return f"failed: {progress}; {detail.error or 'no sheet failed on its own'}"
    return f"{status.value}: {progress}"


def follow_up_note(detail: JobDetail) -> str | None:
    """A follow-up that was refused or is deferred, with why: the job completed, yet what
    its `on_success` submits does not run (yet)."""
    found = detail.follow_up
    if found is None or found.status not in (FollowUpStatus.REFUSED, FollowUpStatus.DEFERRED):
        return None
    spec = f" ({found.path})" if found.path else ""
    reason = clip(found.error, 300) or "no reason recorded"
    if found.status is FollowUpStatus.REFUSED:
        return f"its follow-up{spec} was refused: {reason}"
    return (
        f"its follow-up{spec} is deferred: {reason}; the conductor tries it again every "
        f"{DEFERRED_RETRY_SECONDS:g} s"
    )


def follow_up_steps(detail: JobDetail) -> list[NextStep]:
    found = detail.follow_up
    if found is None:
        return []
    if found.status is FollowUpStatus.REFUSED and found.path:
        return [
            NextStep(
                action="the follow-up was refused and is not tried again: fix its spec and "
                "submit it yourself (it then has no chained_from)",
                tool="submit_job",
                arguments={"path": found.path},
                cli=f"podium run {found.path}",
            )
        ]
    if found.status is FollowUpStatus.DEFERRED:
        return [
            NextStep(
                action="the follow-up waits until the conductor accepts new work: let running "
                "jobs finish, or raise max_memory_mb / max_processes (config.yaml, then "
                "podium reload)"
            )
        ]
    return []
