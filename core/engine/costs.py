"""What a job's attempts cost, as its instruments report it, and the spec's `cost_limit_usd`
(SPEC §4): the writer adds each attempt's figures to its job's totals in the same write that
records the attempt, and pauses the job once the total passes the limit."""

from __future__ import annotations

from datetime import datetime

from podium.core.engine.rules import set_job_status
from podium.core.errors import InvalidTransitionError
from podium.core.models import JobStatus, PauseReason
from podium.core.runner.runner import AttemptResult
from podium.core.store.rows import JobRow

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def reported_usage(result: AttemptResult) -> bool:
    return result.cost_usd is not None or any(getattr(result, n) is not None for n in _TOKENS)


def add_usage(job: JobRow, result: AttemptResult) -> None:
    """Add what the attempt reported to the job's totals (the caller's copy of the row); a
    figure no attempt reported stays null rather than becoming a misleading 0."""
    if result.cost_usd is not None:
        job.cost_usd = round((job.cost_usd or 0.0) + result.cost_usd, 9)
    for name in _TOKENS:
        value = getattr(result, name)
        if value is not None:
            setattr(job, name, (getattr(job, name) or 0) + value)


def _dollars(value: float) -> str:
    """$0.60, $0.0421, $12.50: cents always, sub-cent digits only where there are some."""
    if value >= 1:
        return f"${value:.2f}"
    whole, cents = f"{value:.4f}".split(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


def past_limit(job: JobRow, limit: float | None) -> bool:
    return limit is not None and job.cost_usd is not None and job.cost_usd > limit


def pause_for_cost(job: JobRow, limit: float, now: datetime) -> None:
    """The job's total passed its limit: pause it as a user's pause would (running sheets
    finish and are recorded; nothing new starts) and say why."""
    set_job_status(job, JobStatus.PAUSED, now)
    job.pause_reason = PauseReason.COST_LIMIT
    job.pending_resume = None
    job.error = _limit_error(job, limit)


def restate_cost_limit(job: JobRow, limit: float | None) -> None:
    """A job paused at its limit whose running sheets went on and reported more: its error
    says the total now, not the one it paused at."""
    paused_for_it = job.status is JobStatus.PAUSED and job.pause_reason is PauseReason.COST_LIMIT
    if paused_for_it and limit is not None and past_limit(job, limit):
        job.error = _limit_error(job, limit)


def _limit_error(job: JobRow, limit: float) -> str:
    return (
        f"cost limit: the job's instruments reported {_dollars(job.cost_usd or 0.0)}, past "
        f"cost_limit_usd {_dollars(limit)}; resume with a changed spec carrying a higher "
        "cost_limit_usd to go on"
    )


def check_resumable(job: JobRow, limit: float | None) -> None:
    """A job already past the limit it would run under must not start more work."""
    if past_limit(job, limit):
        assert limit is not None
        raise InvalidTransitionError(
            f"cost_limit_usd: job {job.job_id!r} has cost {_dollars(job.cost_usd or 0.0)}, "
            f"past its cost_limit_usd of {_dollars(limit)}; resume it with a changed spec "
            "(spec, spec_yaml or path) carrying a higher cost_limit_usd, or none"
        )
