"""Runs one attempt of one sheet and returns what happened as a value.

The runner never writes job or sheet state: the manager turns an `AttemptResult` into a
transition (SPEC §2, one writer).
"""

from __future__ import annotations

import dataclasses
import signal as signal_module
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar

import anyio
import psutil

from podium.core.instruments.jsondocs import parse_documents, string_leaves
from podium.core.instruments.profile import (
    InstrumentProfile,
    Invocation,
    InvocationError,
    build_invocation,
)
from podium.core.models import ErrorCategory, Outcome, ValidationResult, utcnow
from podium.core.runner import cgroups, reaper, threads
from podium.core.runner.classify import Classification, classify_failure, describe
from podium.core.runner.escapees import MARK_VARIABLE, end_processes, find_left_behind
from podium.core.runner.groups import SETTLE_SECONDS
from podium.core.runner.logs import read_log_range
from podium.core.runner.process import ProcessGroupRef, ProcessOutcome, RunControl, run_process
from podium.core.runner.prompts import attempt_prompt
from podium.core.runner.structured import StructuredReport, read_structured
from podium.core.runner.validations import run_validations
from podium.core.spec.models import InstrumentConfig, Validation

# Failure patterns are searched in the end of the log, where CLIs print their final error.
PATTERN_SCAN_BYTES = 64 * 1024
# How much stdout is kept to parse a JSON-emitting CLI's answer from.
STRUCTURED_OUTPUT_BYTES = 1024 * 1024
# The sheet's output tail when a JSON CLI's answer could not be found.
TEXT_TAIL_BYTES = 4096
# The check, in an attempt's validations, that fails when the answer was too large to read.
STRUCTURED_OUTPUT_CHECK = "structured_output"


@dataclass(frozen=True)
class AttemptPlan:
    job_id: str
    sheet_num: int
    attempt: int
    prompt: str
    workspace: Path
    profile: InstrumentProfile
    instrument_config: InstrumentConfig
    validations: Sequence[Validation]
    log_path: Path
    log_max_bytes: int
    kill_grace_seconds: float
    base_env: Mapping[str, str]
    home: str = ""
    # A retry continues this CLI session (from the last attempt's `session_id`) with the
    # profile's resume arguments; ignored by a profile without `session`.
    resume_session_id: str | None = None
    # Why the last attempt did not finish (e.g. `validation_feedback(...)`): sent with the
    # task, or instead of it, first, when resuming (see `prompts.attempt_prompt`).
    feedback: str | None = None
    # The prompt goes exactly as rendered on every attempt, a resumed one too (assembly off,
    # or a profile whose prompt is a program): no words about the last attempt are added.
    plain_prompt: bool = False
    # How much of the end of stdout the result keeps (more than the usual 4 KiB when the job's
    # `context` asks later sheets to see more).
    keep_output_bytes: int = 4096

    @property
    def timeout_seconds(self) -> float:
        return self.instrument_config.timeout_seconds or self.profile.timeout_seconds


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    error_category: ErrorCategory | None
    error: str | None
    exit_code: int | None
    signal: int | None
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    stdout_tail: str
    log_path: str
    log_truncated: bool = False
    validations: list[ValidationResult] = field(default_factory=list)
    # Rate limits: when the limit lifts (UTC) and the seconds from the attempt's end until
    # then, when the CLI said so (else None: back off).
    retry_after_seconds: float | None = None
    reset_at: datetime | None = None
    # The instrument itself could not run (its executable would not start): a sheet with
    # fallbacks moves to the next one.
    instrument_unusable: bool = False
    # What a JSON-emitting CLI reported, on any run: its session (the one a retry resumes)
    # and what the run cost, as the CLI counts it.
    session_id: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # The session this attempt continued (None: it started a fresh one).
    resumed_session_id: str | None = None


def stop_seconds(kill_grace_seconds: float) -> float:
    """The longest an attempt takes to end once it is told to stop: its group gets the kill
    grace and a settle after SIGKILL, its leader and its pipes a settle each, then what left
    the group (`setsid` daemons) its own grace and settle, and its cgroup a last settle. A
    graceful stop waits this long for the attempts it ends to be recorded."""
    return 2 * kill_grace_seconds + 5 * SETTLE_SECONDS


def attempt_marker(home: str, job_id: str, sheet_num: int, attempt: int) -> str:
    return f"{home}|{job_id}|{sheet_num}|{attempt}"


def build_env(plan: AttemptPlan, mode_env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(plan.base_env)
    env.update(plan.profile.env)
    env.update(plan.instrument_config.env)
    # The permission mode's variables (goose's GOOSE_MODE) win: a sheet asking for `plan`
    # must not run with a job-wide env that grants more.
    env.update(mode_env or {})
    env.update(
        {
            "PODIUM_JOB_ID": plan.job_id,
            "PODIUM_SHEET_NUM": str(plan.sheet_num),
            "PODIUM_ATTEMPT": str(plan.attempt),
            "PODIUM_WORKSPACE": str(plan.workspace),
            # Marks every process of this attempt (children inherit it), so recovery can find
            # them even if the conductor died before it recorded the process group.
            "PODIUM_ATTEMPT_OF": attempt_marker(
                plan.home, plan.job_id, plan.sheet_num, plan.attempt
            ),
        }
    )
    return env


def _signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _failure_text(log_path: Path, stdout_tail: str, documents: Sequence[Any]) -> str:
    """What failure patterns search: the end of the log (stdout and stderr as they came),
    the end of stdout (past a log that hit its size cap), and the strings inside the CLI's
    JSON output, unescaped."""
    parts = []
    try:
        size = log_path.stat().st_size
    except OSError:
        size = 0
    if size:
        text, _, _ = read_log_range(log_path, max(0, size - PATTERN_SCAN_BYTES), PATTERN_SCAN_BYTES)
        parts.append(text)
    parts.append(stdout_tail[-PATTERN_SCAN_BYTES:])
    if documents:
        parts.append(string_leaves(documents, PATTERN_SCAN_BYTES))
    return "\n".join(parts)


def _lost_answer(
    profile: InstrumentProfile, report: StructuredReport, stdout_bytes: int, read_any: bool
) -> ValidationResult | None:
    """A failed check when stdout was longer than what is kept to parse it and what the
    profile reads from it was not found there: its answer (`output.result_path`), or its
    error flag (`output.error_path`, so whether the CLI reported an error cannot be told).
    Most likely they were in a JSON document too large to read; the raw end of stdout must
    not pass for the answer, nor an unread error for a success, silently. `read_any`: some
    document was read from what was kept."""
    limit = STRUCTURED_OUTPUT_BYTES
    output = profile.output
    if output.format == "text" or stdout_bytes <= limit:
        return None
    # (field, what was not found, what a document past the limit hides)
    lost: list[tuple[str, str, str]] = []
    if output.result_path is not None and report.answer is None:
        lost.append(("output.result_path", "the answer", "an answer"))
    # A stream's last events are read, and many CLIs print an error event only when there
    # is one: a stream whose kept end holds events but no flag has reported none there. One
    # JSON document (`json`), or a stream with no event left whole, may hide it anywhere.
    unreadable = output.format == "json" or not read_any
    if output.error_path is not None and not report.error_seen and unreadable:
        lost.append(("output.error_path", "whether the CLI reported an error", "an error flag"))
    if not lost:
        return None
    names = ", ".join(name for name, _, _ in lost)
    missing = " and ".join(what for _, what, _ in lost)
    shown = " or ".join(hidden for _, _, hidden in lost)
    verb = "were" if len(lost) > 1 else "was"
    detail = (
        f"{names}: {missing} {verb} not found in the last {limit} bytes of stdout, the most "
        f"read for structured output (STRUCTURED_OUTPUT_BYTES); the CLI printed "
        f"{stdout_bytes} bytes, and {shown} in a JSON document past that limit cannot be "
        "read (print a shorter answer, or JSON lines with output.format: jsonl)"
    )
    return ValidationResult(
        type=STRUCTURED_OUTPUT_CHECK,
        passed=False,
        detail=detail,
        expected=f"{names} found in the last {limit} bytes of stdout",
        found=f"{stdout_bytes} bytes of stdout",
    )


def _usage_fields(report: StructuredReport) -> dict[str, Any]:
    return {
        "session_id": report.session_id,
        "cost_usd": report.cost_usd,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "cache_read_tokens": report.cache_read_tokens,
        "cache_write_tokens": report.cache_write_tokens,
    }


def _result(plan: AttemptPlan, proc: ProcessOutcome, **fields: object) -> AttemptResult:
    return AttemptResult(
        exit_code=proc.exit_code,
        signal=proc.signal,
        started_at=proc.started_at,
        ended_at=proc.ended_at,
        duration_seconds=round(proc.duration_seconds, 3),
        stdout_tail=proc.stdout_tail,
        log_path=str(plan.log_path),
        log_truncated=proc.log_truncated,
        **fields,  # type: ignore[arg-type]
    )


T = TypeVar("T")


async def _unless_cancelled(
    control: RunControl | None, work: Callable[[], Awaitable[T]]
) -> tuple[T] | None:
    """`work`'s answer (in a 1-tuple), or None when a cancel arrives first: a check or a
    pattern search may run long, and a cancel must not wait for it."""
    answer: list[T] = []
    async with anyio.create_task_group() as group:

        async def run() -> None:
            answer.append(await work())
            group.cancel_scope.cancel()

        async def watch_cancel(control: RunControl) -> None:
            await control.wait_cancel_requested()
            group.cancel_scope.cancel()

        group.start_soon(run)
        if control is not None:
            group.start_soon(watch_cancel, control)
    return (answer[0],) if answer else None


async def _validate_unless_cancelled(
    plan: AttemptPlan, control: RunControl | None, started_ns: int, env: Mapping[str, str]
) -> list[ValidationResult] | None:
    """Run the validations; None when a cancel arrives first (a `command_succeeds` check can
    run long)."""
    if not plan.validations:
        return []
    done = await _unless_cancelled(
        control,
        lambda: run_validations(
            list(plan.validations),
            workspace=plan.workspace,
            attempt_started_at_ns=started_ns,
            env=env,
            kill_grace_seconds=plan.kill_grace_seconds,
        ),
    )
    return None if done is None else done[0]


async def _classify_unless_cancelled(
    plan: AttemptPlan,
    control: RunControl | None,
    text: str,
    documents: Sequence[Any],
    clock: Callable[[], datetime],
    zone: tzinfo | None,
) -> Classification | None:
    """The failure's class; None when a cancel arrives first (a pattern RE2 cannot run is
    searched in a child that may run to its time limit)."""
    done = await _unless_cancelled(
        control,
        lambda: classify_failure(
            plan.profile,
            text,
            documents=documents,
            now=clock(),
            zone=zone,
            kill_grace_seconds=plan.kill_grace_seconds,
        ),
    )
    return None if done is None else done[0]


async def run_attempt(
    plan: AttemptPlan,
    control: RunControl | None = None,
    on_spawn: Callable[[ProcessGroupRef], Awaitable[None]] | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    zone: tzinfo | None = None,
) -> AttemptResult:
    """Run one attempt. `clock` and `zone` only date rate-limit resets (a clock time with no
    zone is read in `zone`, default the machine's, where the CLI printed it)."""
    started_wall = utcnow()
    # Validations like file_modified compare against the moment the attempt began.
    started_ns = time.time_ns()
    config = plan.instrument_config
    resuming = plan.profile.session is not None and plan.resume_session_id is not None
    try:
        invocation = build_invocation(
            plan.profile,
            plan.prompt
            if plan.plain_prompt
            else attempt_prompt(plan.prompt, feedback=plan.feedback, resuming=resuming),
            model=config.model,
            permission_mode=config.permission_mode,
            extra_args=list(config.extra_args),
            prompt_file=plan.log_path.with_suffix(".prompt"),
            resume_session_id=plan.resume_session_id,
        )
    except InvocationError as exc:
        now = utcnow()
        return AttemptResult(
            outcome=Outcome.FAILED,
            error_category=ErrorCategory.FAILED,
            error=str(exc),
            exit_code=None,
            signal=None,
            started_at=started_wall,
            ended_at=now,
            duration_seconds=0.0,
            stdout_tail="",
            log_path=str(plan.log_path),
        )
    env = build_env(plan, invocation.env)
    mark = env[MARK_VARIABLE]
    leaders: list[int] = []

    async def spawned(ref: ProcessGroupRef) -> None:
        leaders.append(ref.pid)
        if on_spawn is not None:
            await on_spawn(ref)

    result: AttemptResult | None = None
    try:
        result = await _run_and_judge(
            plan, invocation, env, control, spawned, started_ns, clock=clock, zone=zone
        )
    finally:
        if result is not None and (result.exit_code is not None or result.signal is not None):
            # The leader exited and was collected: what it left went up to us already, and
            # its pid names nothing of ours any more.
            leaders.clear()
        # Whatever the attempt left running outside its group (`setsid` daemons, double
        # forks) ends with it, however it ended (SPEC §9 trap 15); then whatever is still in
        # its cgroup, and the orphans it left that ended by themselves are collected.
        with anyio.CancelScope(shield=True):
            settle = cgroups.enabled(plan.home) or reaper.active()
            # One trip to a worker thread for the common case, an attempt that left nothing:
            # the look for escaped processes and the settling together.
            left, refused = await threads.run_sync(
                _look_and_settle, mark, started_wall.timestamp(), leaders, settle
            )
            if left:
                await end_processes(left, plan.kill_grace_seconds)
                if settle:
                    refused = await threads.run_sync(_settle, mark)
    assert result is not None  # else the exception went up from the finally block
    if refused and result.outcome is not Outcome.COMPLETED:
        why = f"{refused} forks refused at the max_processes limit of the attempt"
        result = dataclasses.replace(
            result, error=f"{result.error}; {why}" if result.error else why
        )
    return result


def _look_and_settle(
    mark: str, since: float, leaders: list[int], settle: bool
) -> tuple[list[psutil.Process], int]:
    """The processes the attempt left outside its group; when there are none, the attempt
    settled as well (see `_settle`: how many forks were refused)."""
    left = find_left_behind(mark, since, leaders[0] if leaders else None)
    if left:
        return left, 0
    return [], _settle(mark) if settle else 0


def _settle(mark: str) -> int:
    """After the attempt: how many of its forks its cgroup refused; then the group emptied
    and removed, and the orphans it left that ended by themselves collected."""
    refused = cgroups.refused_forks(mark)
    cgroups.release(mark)
    reaper.reap_adopted()
    return refused


async def _run_and_judge(
    plan: AttemptPlan,
    invocation: Invocation,
    env: dict[str, str],
    control: RunControl | None,
    on_spawn: Callable[[ProcessGroupRef], Awaitable[None]] | None,
    started_ns: int,
    *,
    clock: Callable[[], datetime],
    zone: tzinfo | None,
) -> AttemptResult:
    config = plan.instrument_config
    output_format = plan.profile.output.format
    proc = await run_process(
        invocation.argv,
        cwd=plan.workspace,
        env=env,
        stdin_data=invocation.stdin_data,
        log_path=plan.log_path,
        log_max_bytes=plan.log_max_bytes,
        timeout_seconds=plan.timeout_seconds,
        idle_timeout_seconds=config.idle_timeout_seconds,
        kill_grace_seconds=plan.kill_grace_seconds,
        control=control,
        on_spawn=on_spawn,
        stdout_tail_bytes=(
            STRUCTURED_OUTPUT_BYTES
            if output_format != "text"
            else max(TEXT_TAIL_BYTES, plan.keep_output_bytes)
        ),
    )
    raw_stdout = proc.stdout_tail
    documents = parse_documents(output_format, raw_stdout)
    report = read_structured(plan.profile, documents)
    lost = _lost_answer(plan.profile, report, proc.stdout_bytes, bool(documents))
    if report.answer is not None:
        proc = dataclasses.replace(proc, stdout_tail=report.answer)
    elif output_format != "text":
        keep = max(TEXT_TAIL_BYTES, plan.keep_output_bytes)
        tail = raw_stdout.encode()[-keep:].decode(errors="ignore")
        proc = dataclasses.replace(proc, stdout_tail=tail)
    reported = {**_usage_fields(report), "resumed_session_id": invocation.resumed_session_id}

    def result(**fields: Any) -> AttemptResult:
        return _result(plan, proc, **reported, **fields)

    if proc.spawn_error is not None and not plan.workspace.is_dir():
        # Not the instrument's fault (no fallback takes over): the job's workspace is not
        # here, typically a conductor on another host whose disk does not have it.
        return result(
            outcome=Outcome.FAILED,
            error_category=ErrorCategory.FAILED,
            error=f"the job's workspace {str(plan.workspace)!r} does not exist on this host "
            f"({socket.gethostname()}): put workspaces on storage every conductor running "
            "the job mounts at the same path, or keep the job on the hosts that have it "
            "(`hosts:` in the spec)",
        )
    if proc.spawn_error is not None:
        return result(
            outcome=Outcome.FAILED,
            error_category=ErrorCategory.FAILED,
            error=f"could not start {invocation.argv[0]!r}: {proc.spawn_error}",
            instrument_unusable=True,
        )
    if proc.cancelled:
        return result(
            outcome=Outcome.CANCELLED, error_category=ErrorCategory.CANCELLED, error="cancelled"
        )
    if proc.timed_out or proc.idle_timed_out:
        error = (
            f"no output for {config.idle_timeout_seconds:g}s (idle timeout)"
            if proc.idle_timed_out
            else f"timed out after {plan.timeout_seconds:g}s of running time"
        )
        return result(outcome=Outcome.TIMEOUT, error_category=ErrorCategory.TIMEOUT, error=error)

    exited_ok = proc.signal is None and proc.exit_code in plan.profile.success_exit_codes
    validations: list[ValidationResult] = []
    if exited_ok and report.reported_error:
        category = ErrorCategory.FAILED
        error = f"exited with code {proc.exit_code} but reported an error (output.error_path)"
    elif exited_ok:
        checked = await _validate_unless_cancelled(plan, control, started_ns, env)
        if checked is None:
            return result(
                outcome=Outcome.CANCELLED,
                error_category=ErrorCategory.CANCELLED,
                error="cancelled while validating",
            )
        validations = checked
        if lost is not None:
            # The answer is what later sheets read as this sheet's output: a run whose answer
            # could not be read has not delivered it (and a retry is told why).
            validations = [*validations, lost]
        failed = [v for v in validations if not v.passed]
        if not failed:
            return result(
                outcome=Outcome.COMPLETED,
                error_category=None,
                error=None,
                validations=validations,
            )
        category = ErrorCategory.VALIDATION_FAILED
        error = "; ".join(f"{v.type}: {v.detail or 'failed'}" for v in failed)
    elif proc.signal is not None:
        category = ErrorCategory.CRASHED
        error = f"killed by {_signal_name(proc.signal)}"
    else:
        category = ErrorCategory.FAILED
        error = f"exited with code {proc.exit_code}"
    if lost is not None and not exited_ok:
        error = f"{error}; {lost.type}: {lost.detail}"

    # Patterns apply to failed runs only: rate-limit text in a successful run means nothing.
    classified = await _classify_unless_cancelled(
        plan, control, _failure_text(plan.log_path, raw_stdout, documents), documents, clock, zone
    )
    if classified is None:
        return result(
            outcome=Outcome.CANCELLED,
            error_category=ErrorCategory.CANCELLED,
            error="cancelled while reading the failure",
        )
    if classified.problems:
        error = f"{error}; patterns not searched to the end: {'; '.join(classified.problems)}"
    found = classified.found
    if found is None:
        return result(
            outcome=Outcome.FAILED, error_category=category, error=error, validations=validations
        )
    rate_limited = found.category is ErrorCategory.RATE_LIMITED
    return result(
        outcome=Outcome.RATE_LIMITED if rate_limited else Outcome.FAILED,
        error_category=found.category,
        error=f"{error}; {describe(found, plan.profile.name)}",
        validations=validations,
        retry_after_seconds=found.retry_after_seconds,
        reset_at=found.reset_at,
    )
