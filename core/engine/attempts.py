"""One attempt's life as row changes: its plan, the record of its process, and its result
turned into its sheet's transition (and, through it, its job's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from podium.core.engine import costs, ratelimits
from podium.core.engine.context import EngineContext
from podium.core.engine.fallbacks import fallback_config, move_to, next_usable, reason_to_move
from podium.core.engine.prompt_inputs import (
    PromptInputError,
    assembled_prompt,
    captured_files,
    previous_outputs,
)
from podium.core.engine.rules import (
    OUTPUT_TAIL_BYTES,
    SHUT_DOWN,
    Verdict,
    final_job_status,
    finish_attempt_row,
    interrupt,
    judge_attempt,
    mark_terminal,
    set_job_status,
    skipped_after_failure,
)
from podium.core.engine.sheet_context import template_context
from podium.core.engine.state import DISPATCHABLE, EngineState, JobState, RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.errors import PodiumError
from podium.core.instruments.profile import applicable_config
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus
from podium.core.runner.process import ProcessGroupRef
from podium.core.runner.prompts import validation_feedback, with_output_tail
from podium.core.runner.runner import AttemptPlan, AttemptResult
from podium.core.spec.models import RetryPolicy
from podium.core.spec.templating import (
    TemplateRenderError,
    render_sheet_prompt,
    render_validation,
)
from podium.core.store.rows import AttemptRow

# Wired in by the engine (this module imports no control): a job's last running sheet ended
# within this op, and the job may have a pending modify to apply.
IdleHook = Callable[[Tx, str], None]


class ResultRefused(PodiumError):
    """An attempt's result came when the attempt was no longer in flight: its record stands
    and the result is dropped. `own_stop`: this conductor's graceful stop recorded it
    interrupted itself (its runner overran the kill sequence), which is expected, not a
    loss; otherwise another conductor took it back after this one's lease on it ran out."""

    def __init__(self, entry: RunningSheet, *, own_stop: bool) -> None:
        self.own_stop = own_stop
        which = f"attempt {entry.attempt} of sheet {entry.sheet_num} of job {entry.job_id}"
        if own_stop:
            why = (
                "was already recorded interrupted by this conductor's stop (its runner had "
                "not ended it within the kill sequence); its late result is dropped"
            )
        else:
            why = (
                "is no longer this conductor's: another conductor reclaimed it after this "
                "conductor's lease on it ran out; its result is refused"
            )
        super().__init__(f"{which} {why}")


def skip_dependents(tx: Tx, job_state: JobState, sheet_num: int) -> None:
    """Sheet `sheet_num` failed for good: its transitive dependents are skipped, and with
    `on_failure: stop` every sheet that has not started."""
    job_id = job_state.job_id
    stop_all = job_state.spec is None or job_state.spec.spec.on_failure == "stop"
    dependents = job_state.descendants(sheet_num)
    rows = tx.sheets(job_id) if stop_all else {n: tx.sheet(job_id, n) for n in dependents}
    # approvals.py builds on this module: imported here, where it is needed, to keep it so.
    from podium.core.engine.approvals import end_unrun

    for other, why in skipped_after_failure(rows, dependents, sheet_num, stop_all):
        # An open gate's question ends unanswered, as at a cancel: a resume asks anew.
        end_unrun(tx, job_id, other, SheetStatus.SKIPPED, why, ErrorCategory.DEPENDENCY_FAILED)


def settle_job(tx: Tx, job_id: str) -> None:
    """Once every sheet of a job that is not yet terminal is, the job is too."""
    if not tx.job(job_id).status.is_terminal and tx.open_sheets(job_id) == 0:
        final = final_job_status(tx.sheets(job_id).values())
        if final is not None:
            edited = tx.edit_job(job_id)
            set_job_status(edited, final[0], tx.now)
            edited.error = final[1]


# How an attempt ended when its CLI session holds work worth keeping: the retry continues
# that session. A plain failure (an error nobody classified) starts afresh: the session may be
# what broke; billing and auth are never retried.
RESUMABLE = frozenset(
    {
        ErrorCategory.TIMEOUT,
        ErrorCategory.TRANSIENT,
        ErrorCategory.RATE_LIMITED,
        ErrorCategory.VALIDATION_FAILED,
        ErrorCategory.INTERRUPTED,
        ErrorCategory.CRASHED,
    }
)


@dataclass(frozen=True)
class Continuation:
    """What a retry carries over from the attempts before it."""

    session_id: str | None = None  # the CLI session to resume
    feedback: str | None = None  # why the last attempt did not finish, for the prompt


def needs_earlier(row: AttemptRow) -> bool:
    """An attempt cut off (conductor stopped or died) before its CLI said which session it
    ran in: the one before it tells."""
    return row.outcome is Outcome.INTERRUPTED and row.session_id is None


def continuation(previous: Sequence[AttemptRow], instrument: str) -> Continuation:
    """What the next attempt (run with `instrument`) continues, from the sheet's last
    attempts (latest first). A session is another CLI's after a changed spec or a fallback
    switched the sheet's instrument: only the feedback carries over then."""
    for row in previous:
        if needs_earlier(row):
            continue
        if row.error_category not in RESUMABLE:
            return Continuation()
        feedback = None
        if row.error_category is ErrorCategory.VALIDATION_FAILED:
            feedback = validation_feedback(row.validations)
        same_cli = row.instrument is None or row.instrument == instrument
        return Continuation(row.session_id if same_cli else None, feedback)
    return Continuation()


def plan_attempt(
    ctx: EngineContext,
    state: EngineState,
    entry: RunningSheet,
    previous: Sequence[AttemptRow] = (),
) -> AttemptPlan | str:
    """What the runner needs for the attempt: the prompt and validations rendered, the
    instrument resolved, and what it continues of the attempts before it (`previous`, latest
    first); or why it cannot start (the attempt then fails before any process)."""
    job_state = state.jobs.get(entry.job_id)
    if job_state is None:
        return "the job is no longer known to this conductor"
    if job_state.spec is None:
        return f"spec: the stored spec no longer loads ({job_state.spec_error})"
    loaded = job_state.spec
    resolved = loaded.sheet(entry.sheet_num)
    job = job_state.job
    sheet = job_state.sheets[entry.sheet_num]
    template = template_context(job_state, entry.sheet_num)
    workspace = Path(job.workspace)
    context = loaded.spec.context
    # The sheet row says which instrument runs it now: its own, or a fallback it moved to.
    instrument = sheet.instrument
    info = ctx.catalog.get(instrument)
    if info is None:
        return f"unknown instrument {instrument!r}"
    settings = applicable_config(resolved.instrument_config, info.profile)
    if instrument != resolved.instrument:
        settings = fallback_config(settings, info.profile)
    # Prompt assembly is for requests, never for a prompt that is a program (shell).
    assembling = loaded.spec.prompt_assembly and info.profile.retry_feedback
    try:
        earlier: dict[int, str] = {}
        files: dict[str, str] = {}
        if context is not None:
            earlier = previous_outputs(job_state, context, entry.sheet_num)
            files = captured_files(context, template, workspace) if context.files else {}
            template = template_context(
                job_state, entry.sheet_num, previous_outputs=earlier, previous_files=files
            )
        prompt = render_sheet_prompt(resolved, template)
        validations = [render_validation(v, template) for v in resolved.validations]
        if assembling:
            prompt = assembled_prompt(
                prompt,
                loaded,
                entry.sheet_num,
                template,
                workspace=workspace,
                spec_path=job.spec_path,
                checks=validations,
                previous=earlier,
                files=files,
            )
    except TemplateRenderError as exc:
        return f"template: {exc}"
    except PromptInputError as exc:
        return f"prompt: {exc}"
    # Sessions are the instrument's the sheet runs on now (a fallback starts afresh).
    carried = continuation(previous, instrument)
    feedback = carried.feedback if assembling else None
    if feedback is not None:
        feedback = with_output_tail(feedback, sheet.output_tail)
    config = ctx.config
    return AttemptPlan(
        job_id=job.job_id,
        sheet_num=entry.sheet_num,
        attempt=entry.attempt,
        prompt=prompt,
        workspace=workspace,
        profile=info.profile,
        instrument_config=settings,
        validations=validations,
        log_path=Path(sheet.log_path or ""),
        log_max_bytes=config.log_max_bytes,
        kill_grace_seconds=config.kill_grace_seconds,
        base_env=ctx.base_env,
        home=str(config.home),
        resume_session_id=carried.session_id,
        feedback=feedback,
        plain_prompt=not assembling,
        keep_output_bytes=max(OUTPUT_TAIL_BYTES, context.output_bytes if context else 0),
    )


def record_result(
    ctx: EngineContext,
    state: EngineState,
    entry: RunningSheet,
    result: AttemptResult,
    on_idle: IdleHook,
) -> Op[None]:
    """The op that turns an attempt's result into its sheet's (and job's) transition."""

    def apply(tx: Tx) -> None:
        job_id, num = entry.job_id, entry.sheet_num
        job_state = tx.state(job_id)
        stored = tx.attempt((job_id, num, entry.attempt))
        if stored is None or stored.outcome is not None:
            # Seen ended (an earlier op of this group recorded it: only this conductor's
            # stop does that to an attempt it runs), or gone from the attempts in flight.
            own = entry.recorded_by_stop or stored is not None
            raise ResultRefused(entry, own_stop=own)
        sheet = tx.edit_sheet(job_id, num)
        attempt = tx.edit_attempt(stored)
        now = tx.now
        job = tx.job(job_id)
        reason = entry.stop_reason
        if result.outcome is Outcome.COMPLETED:
            # It finished (validations passed) before any stop reached it: the work is
            # kept, whatever is happening to the job now. Nothing completed is re-run.
            reason = None
        counted: bool | None = None
        if reason == "shutdown":
            outcome = Outcome.INTERRUPTED
        elif reason in ("cancel", "deadline") or (
            job.status is JobStatus.CANCELLED and result.outcome is not Outcome.COMPLETED
        ):
            outcome = Outcome.CANCELLED
            category = ErrorCategory.DEADLINE if reason == "deadline" else ErrorCategory.CANCELLED
            mark_terminal(sheet, SheetStatus.CANCELLED, now, result.error, category)
            # This attempt's own output and time, as any other end of an attempt shows.
            sheet.output_tail = result.stdout_tail[-OUTPUT_TAIL_BYTES:]
            sheet.duration_seconds = result.duration_seconds
        else:
            policy = (
                job_state.spec.spec.retry
                if job_state.spec is not None
                # The job is failing for its spec: record this attempt, retry nothing.
                else RetryPolicy(max_retries=0)
            )
            retries_before = sheet.retries_used
            verdict = judge_attempt(sheet, result, policy, ctx.retry_limits, now)
            if job_state.spec is not None and job_state.spec.spec.context is not None:
                keep = job_state.spec.spec.context.output_bytes
                if keep > OUTPUT_TAIL_BYTES:
                    sheet.output_tail = result.stdout_tail[-keep:]
            moved = _fallback(ctx, job_state, num, result, verdict, now)
            if moved is not None:
                move_to(sheet, moved[0], moved[1], result, retries_before)
                verdict = dataclasses.replace(verdict, failed=False)
            outcome = verdict.outcome
            key = job_state.hold_key(num)
            if verdict.hold_until is not None:
                ratelimits.hold(tx, key, verdict.hold_until, result.error)
            if outcome is Outcome.COMPLETED:
                ratelimits.succeeded(tx, key)
            if verdict.failed:
                skip_dependents(tx, job_state, num)
            if outcome is not Outcome.RATE_LIMITED:
                counted = outcome is Outcome.COMPLETED
        finish_attempt_row(attempt, result, outcome)
        if outcome is Outcome.INTERRUPTED:
            # The runner timed it: the attempt keeps the end and duration it measured.
            interrupt(now, SHUT_DOWN, attempt=attempt, sheet=sheet, output=result.stdout_tail)
        if costs.reported_usage(result):
            edited = tx.edit_job(job_id)
            costs.add_usage(edited, result)
            limit = edited.cost_limit_usd
            if edited.status in DISPATCHABLE and costs.past_limit(edited, limit):
                assert limit is not None
                costs.pause_for_cost(edited, limit, now)
            else:
                costs.restate_cost_limit(edited, limit)
        # A job whose last sheet just ended is done, whatever it cost.
        settle_job(tx, job_id)
        if tx.job(job_id).pending_resume is not None and reason != "shutdown":
            others = [e for e in state.entries_for(job_id) if e is not entry]
            # Sheets of the job running on other conductors count as well (the rows say).
            if not others and not any(
                s.status is SheetStatus.RUNNING for s in tx.sheets(job_id).values()
            ):
                on_idle(tx, job_id)

        def done() -> None:
            # Leave the running table in the same step that recorded the result, so no
            # control call ever sees a finished attempt as still running.
            state.drop_running(entry)
            if counted is not None:
                ctx.recent_outcomes.append(counted)

        tx.after(done)

    return Op(apply, jobs=[entry.job_id], name="record attempt")


def _fallback(
    ctx: EngineContext,
    job_state: JobState,
    num: int,
    result: AttemptResult,
    verdict: Verdict,
    now: datetime,
) -> tuple[str, str] | None:
    """(next instrument, why) when this result moves the sheet to a fallback."""
    loaded = job_state.spec
    if loaded is None or not loaded.sheet(num).fallbacks:
        return None
    why = reason_to_move(result, verdict, now, loaded.spec.fallback_wait_seconds)
    if why is None:
        return None
    current = job_state.sheets[num].instrument
    target = next_usable(loaded.sheet(num), current, ctx.usable)
    return None if target is None else (target, why)


def record_process(entry: RunningSheet, ref: ProcessGroupRef) -> Op[None]:
    """Write which process group runs an attempt (recovery kills it only if it still is)."""

    def apply(tx: Tx) -> None:
        stored = tx.attempt((entry.job_id, entry.sheet_num, entry.attempt))
        if stored is None or stored.outcome is not None:
            return  # finished (or reclaimed) before this record got its turn
        row = tx.edit_attempt(stored, lock_job=False)
        row.pid, row.pgid, row.pid_start_time = ref.pid, ref.pgid, ref.start_time

    return Op(apply, name="record process")
