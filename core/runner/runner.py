"""Runs one attempt of one sheet and returns what happened as a value.

The runner never writes job or sheet state: the manager turns an `AttemptResult` into a
transition (SPEC §2, one writer).
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal as signal_module
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from podium.core.instruments.profile import (
    InstrumentProfile,
    InvocationError,
    OutputSpec,
    build_invocation,
)
from podium.core.models import ErrorCategory, Outcome, ValidationResult, utcnow
from podium.core.runner.logs import read_log_range
from podium.core.runner.process import ProcessGroupRef, ProcessOutcome, RunControl, run_process
from podium.core.runner.validations import run_validations
from podium.core.spec.models import InstrumentConfig, Validation

# Failure patterns are searched in the end of the log, where CLIs print their final error.
PATTERN_SCAN_BYTES = 64 * 1024
# How much stdout is kept to parse a JSON-emitting CLI's answer from.
STRUCTURED_OUTPUT_BYTES = 1024 * 1024
_MISSING = object()


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
    # Seconds the instrument asked us to wait, when a rate-limit pattern captured it.
    retry_after_seconds: float | None = None


def attempt_marker(home: str, job_id: str, sheet_num: int, attempt: int) -> str:
    return f"{home}|{job_id}|{sheet_num}|{attempt}"


def build_env(plan: AttemptPlan) -> dict[str, str]:
    env = dict(plan.base_env)
    env.update(plan.profile.env)
    env.update(plan.instrument_config.env)
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


def _failure_text(log_path: Path) -> str:
    try:
        size = log_path.stat().st_size
    except OSError:
        return ""
    text, _, _ = read_log_range(log_path, max(0, size - PATTERN_SCAN_BYTES), PATTERN_SCAN_BYTES)
    return text


def classify_failure(
    profile: InstrumentProfile, text: str
) -> tuple[ErrorCategory | None, float | None, str | None]:
    """Match a FAILED run's output against the profile's patterns (success never gets here)."""
    for pattern in profile.patterns.rate_limit:
        match = re.search(pattern.regex, text, re.IGNORECASE | re.MULTILINE)
        if match:
            wait = None
            if pattern.retry_after_group:
                try:
                    wait = float(match.group(pattern.retry_after_group))
                except (IndexError, TypeError, ValueError):
                    wait = None
            return ErrorCategory.RATE_LIMITED, wait, match.group(0)
    for regex in profile.patterns.auth:
        match = re.search(regex, text, re.IGNORECASE | re.MULTILINE)
        if match:
            return ErrorCategory.AUTH, None, match.group(0)
    for regex in profile.patterns.transient:
        match = re.search(regex, text, re.IGNORECASE | re.MULTILINE)
        if match:
            return ErrorCategory.TRANSIENT, None, match.group(0)
    return None, None, None


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def parse_structured_output(output: OutputSpec, stdout: str) -> tuple[str | None, bool]:
    """The answer at `result_path` (None when absent or unparsable) and whether the
    `error_path` flag is set, from a CLI's JSON or JSON-lines stdout."""
    if output.format == "text" or not stdout.strip():
        return None, False
    documents: list[Any] = []
    if output.format == "json":
        try:
            documents = [json.loads(stdout)]
        except ValueError:
            return None, False
    else:
        for line in reversed(stdout.splitlines()):
            try:
                documents.append(json.loads(line))
            except ValueError:
                continue
    answer: str | None = None
    flagged = False
    for document in documents:
        if answer is None and output.result_path:
            found = _lookup(document, output.result_path)
            if found is not _MISSING and found is not None:
                answer = found if isinstance(found, str) else json.dumps(found)
        if output.error_path and _lookup(document, output.error_path) is True:
            flagged = True
    return answer, flagged


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


async def _validate_unless_cancelled(
    plan: AttemptPlan, control: RunControl | None, started_ns: int, env: Mapping[str, str]
) -> list[ValidationResult] | None:
    """Run the validations; None when a cancel arrives first (a `command_succeeds` check can
    run long, and cancel must not wait for it)."""
    if not plan.validations:
        return []
    results: list[ValidationResult] = []
    async with anyio.create_task_group() as group:

        async def validate() -> None:
            results.extend(
                await run_validations(
                    list(plan.validations),
                    workspace=plan.workspace,
                    attempt_started_at_ns=started_ns,
                    env=env,
                    kill_grace_seconds=plan.kill_grace_seconds,
                )
            )
            group.cancel_scope.cancel()

        async def watch_cancel(control: RunControl) -> None:
            await control.wait_cancel_requested()
            group.cancel_scope.cancel()

        group.start_soon(validate)
        if control is not None:
            group.start_soon(watch_cancel, control)
    if control is not None and control.cancel_requested and len(results) < len(plan.validations):
        return None
    return results


async def run_attempt(
    plan: AttemptPlan,
    control: RunControl | None = None,
    on_spawn: Callable[[ProcessGroupRef], Awaitable[None]] | None = None,
) -> AttemptResult:
    started_wall = utcnow()
    # Validations like file_modified compare against the moment the attempt began.
    started_ns = time.time_ns()
    config = plan.instrument_config
    try:
        invocation = build_invocation(
            plan.profile,
            plan.prompt,
            model=config.model,
            permission_mode=config.permission_mode,
            extra_args=list(config.extra_args),
            prompt_file=plan.log_path.with_suffix(".prompt"),
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
    env = build_env(plan)
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
            STRUCTURED_OUTPUT_BYTES if plan.profile.output.format != "text" else 4096
        ),
    )
    answer, reported_error = parse_structured_output(plan.profile.output, proc.stdout_tail)
    if answer is not None:
        proc = dataclasses.replace(proc, stdout_tail=answer)
    elif plan.profile.output.format != "text":
        tail = proc.stdout_tail.encode()[-4096:].decode(errors="ignore")
        proc = dataclasses.replace(proc, stdout_tail=tail)
    if proc.spawn_error is not None:
        return _result(
            plan,
            proc,
            outcome=Outcome.FAILED,
            error_category=ErrorCategory.FAILED,
            error=f"could not start {invocation.argv[0]!r}: {proc.spawn_error}",
        )
    if proc.cancelled:
        return _result(
            plan,
            proc,
            outcome=Outcome.CANCELLED,
            error_category=ErrorCategory.CANCELLED,
            error="cancelled",
        )
    if proc.timed_out or proc.idle_timed_out:
        error = (
            f"no output for {config.idle_timeout_seconds:g}s (idle timeout)"
            if proc.idle_timed_out
            else f"timed out after {plan.timeout_seconds:g}s of running time"
        )
        return _result(
            plan, proc, outcome=Outcome.TIMEOUT, error_category=ErrorCategory.TIMEOUT, error=error
        )

    exited_ok = proc.signal is None and proc.exit_code in plan.profile.success_exit_codes
    validations: list[ValidationResult] = []
    if exited_ok and reported_error:
        category = ErrorCategory.FAILED
        error = (
            f"exited with code {proc.exit_code} but reported an error "
            f"({plan.profile.output.error_path})"
        )
    elif exited_ok:
        checked = await _validate_unless_cancelled(plan, control, started_ns, env)
        if checked is None:
            return _result(
                plan,
                proc,
                outcome=Outcome.CANCELLED,
                error_category=ErrorCategory.CANCELLED,
                error="cancelled while validating",
            )
        validations = checked
        failed = [v for v in validations if not v.passed]
        if not failed:
            return _result(
                plan,
                proc,
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

    # Patterns apply to failed runs only: rate-limit text in a successful run means nothing.
    matched, retry_after, excerpt = classify_failure(plan.profile, _failure_text(plan.log_path))
    outcome = Outcome.FAILED
    if matched is not None:
        category = matched
        error = f"{error}; {matched.value}: {excerpt}"
        if matched is ErrorCategory.RATE_LIMITED:
            outcome = Outcome.RATE_LIMITED
    return _result(
        plan,
        proc,
        outcome=outcome,
        error_category=category,
        error=error,
        validations=validations,
        retry_after_seconds=retry_after,
    )
