"""One attempt's life as row changes: its plan, the record of its process, and its result
turned into its sheet's transition (and, through it, its job's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podium.core.engine import costs, ratelimits
from podium.core.engine.context import EngineContext
from podium.core.engine.rules import (
    final_job_status,
    finish_attempt_row,
    judge_attempt,
    mark_terminal,
    reset_for_retry,
    set_job_status,
    skipped_after_failure,
    with_category,
)
from podium.core.engine.state import DISPATCHABLE, EngineState, JobState, RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.errors import PodiumError
from podium.core.instruments.profile import applicable_config
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus
from podium.core.runner.process import ProcessGroupRef
from podium.core.runner.prompts import validation_feedback
from podium.core.runner.runner import AttemptPlan, AttemptResult
from podium.core.spec.models import RetryPolicy
from podium.core.spec.templating import (
    TemplateContext,
    TemplateRenderError,
    render_sheet_prompt,
    render_validation,
)
from podium.core.store.rows import AttemptRow

# Wired in by the engine (this module imports no control): a job's last running sheet ended
# within this op, and the job may have a pending modify to apply.
IdleHook = Callable[[Tx, str], None]


class AncestorOutputs(Mapping[int, str]):
    """`outputs[N]` for a sheet: the stdout tails of its ancestors, looked up only for the
    keys a template actually reads (a sheet at the end of a long chain has many)."""

    def __init__(self, job_state: JobState, sheet_num: int) -> None:
        self._state = job_state
        self._num = sheet_num
        self._ancestors: frozenset[int] | None = None

    def _known(self) -> frozenset[int]:
        if self._ancestors is None:
            self._ancestors = frozenset(self._state.ancestors(self._num))
        return self._ancestors

    def __getitem__(self, key: int) -> str:
        if key not in self._known():
            raise KeyError(key)
        return self._state.sheets[key].output_tail or ""

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._known()))

    def __len__(self) -> int:
        return len(self._known())


def template_context(job_state: JobState, sheet_num: int) -> TemplateContext:
    """What a sheet's templates (prompt, validations) may read. The job's spec must load."""
    loaded = job_state.spec
    assert loaded is not None
    resolved = loaded.sheet(sheet_num)
    job = job_state.job
    return TemplateContext(
        workspace=job.workspace,
        job_id=job.job_id,
        sheet_num=sheet_num,
        total_sheets=len(job_state.sheets),
        sheet_name=resolved.name,
        start_item=resolved.start_item,
        end_item=resolved.end_item,
        variables=loaded.spec.variables,
        outputs=AncestorOutputs(job_state, sheet_num),
        sheet_names=loaded.sheet_numbers,
    )


def skip_dependents(tx: Tx, job_state: JobState, sheet_num: int) -> None:
    """Sheet `sheet_num` failed for good: its transitive dependents are skipped, and with
    `on_failure: stop` every sheet that has not started."""
    job_id = job_state.job_id
    stop_all = job_state.spec is None or job_state.spec.spec.on_failure == "stop"
    dependents = job_state.descendants(sheet_num)
    rows = tx.sheets(job_id) if stop_all else {n: tx.sheet(job_id, n) for n in dependents}
    for other, why in skipped_after_failure(rows, dependents, sheet_num, stop_all):
        mark_terminal(
            tx.edit_sheet(job_id, other),
            SheetStatus.SKIPPED,
            tx.now,
            why,
            ErrorCategory.DEPENDENCY_FAILED,
        )


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
    attempts (latest first). A session is another CLI's after a changed spec switched the
    sheet's instrument: only the feedback carries over then."""
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
    info = ctx.catalog.get(resolved.instrument)
    if info is None:
        return f"unknown instrument {resolved.instrument!r}"
    try:
        prompt = render_sheet_prompt(resolved, template)
        validations = [render_validation(v, template) for v in resolved.validations]
    except TemplateRenderError as exc:
        return f"template: {exc}"
    config = ctx.config
    carried = continuation(previous, resolved.instrument)
    return AttemptPlan(
        job_id=job.job_id,
        sheet_num=entry.sheet_num,
        attempt=entry.attempt,
        prompt=prompt,
        workspace=Path(job.workspace),
        profile=info.profile,
        instrument_config=applicable_config(resolved.instrument_config, info.profile),
        validations=validations,
        log_path=Path(sheet.log_path or ""),
        log_max_bytes=config.log_max_bytes,
        kill_grace_seconds=config.kill_grace_seconds,
        base_env=ctx.base_env,
        home=str(config.home),
        resume_session_id=carried.session_id,
        feedback=carried.feedback if info.profile.retry_feedback else None,
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
        if stored is None:
            raise PodiumError(
                f"attempt {entry.attempt} of sheet {num} of job {job_id} is no longer "
                "this conductor's (its lease was reclaimed)"
            )
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
            reset_for_retry(sheet, now, fresh_budget=False)
            sheet.last_error = "interrupted by conductor shutdown"
            sheet.error_category = ErrorCategory.INTERRUPTED
        elif reason in ("cancel", "deadline") or (
            job.status is JobStatus.CANCELLED and result.outcome is not Outcome.COMPLETED
        ):
            outcome = Outcome.CANCELLED
            category = ErrorCategory.DEADLINE if reason == "deadline" else ErrorCategory.CANCELLED
            mark_terminal(sheet, SheetStatus.CANCELLED, now, result.error, category)
            sheet.output_tail = result.stdout_tail[-4096:]
        else:
            policy = (
                job_state.spec.spec.retry
                if job_state.spec is not None
                # The job is failing for its spec: record this attempt, retry nothing.
                else RetryPolicy(max_retries=0)
            )
            verdict = judge_attempt(sheet, result, policy, ctx.retry_limits, now)
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
        recorded = result
        if outcome is Outcome.INTERRUPTED:
            recorded = with_category(result, ErrorCategory.INTERRUPTED)
        finish_attempt_row(attempt, recorded, outcome)
        if costs.reported_usage(result):
            edited = tx.edit_job(job_id)
            costs.add_usage(edited, result)
            limit = edited.cost_limit_usd
            if edited.status in DISPATCHABLE and costs.past_limit(edited, limit):
                assert limit is not None
                costs.pause_for_cost(edited, limit, now)
        # A job whose last sheet just ended is done, whatever it cost.
        settle_job(tx, job_id)
        others = [e for e in state.entries_for(job_id) if e is not entry]
        if tx.job(job_id).pending_resume is not None and not others and reason != "shutdown":
            on_idle(tx, job_id)

        def done() -> None:
            # Leave the running table in the same step that recorded the result, so no
            # control call ever sees a finished attempt as still running.
            state.drop_running(entry)
            if counted is not None:
                ctx.recent_outcomes.append(counted)

        tx.after(done)

    return Op(apply, jobs=[entry.job_id], name="record attempt")


def record_process(entry: RunningSheet, ref: ProcessGroupRef) -> Op[None]:
    """Write which process group runs an attempt (recovery kills it only if it still is)."""

    def apply(tx: Tx) -> None:
        stored = tx.attempt((entry.job_id, entry.sheet_num, entry.attempt))
        if stored is None or stored.outcome is not None:
            return  # finished (or reclaimed) before this record got its turn
        row = tx.edit_attempt(stored, lock_job=False)
        row.pid, row.pgid, row.pid_start_time = ref.pid, ref.pgid, ref.start_time

    return Op(apply, name="record process")
