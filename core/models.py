"""The one state model for jobs, sheets and attempts.

Every view (tools, resources, CLI) reads these records from the store; field names are the
public contract of SPEC §7, so rename nothing here without changing the spec.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with a `Z`; fixed width (microseconds always) so stored strings sort
    chronologically."""
    # The same few times are written over and over (a listing's 50 jobs, three times each,
    # on every call): a lookup costs a tenth of the formatting. Equal instants in other zones
    # are equal keys and have the same text.
    text = _TIME_TEXT.get(value)
    if text is None:
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # "...+00:00" -> "...Z"; isoformat is C code, strftime several times slower.
        text = utc.isoformat(timespec="microseconds")[:-6] + "Z"
        if len(_TIME_TEXT) >= _TIME_TEXT_MAX:
            _TIME_TEXT.clear()
        _TIME_TEXT[value] = text
    return text


_TIME_TEXT: dict[datetime, str] = {}
_TIME_TEXT_MAX = 8192


def parse_time(value: str) -> datetime:
    # fromisoformat is C code and reads the `Z`; strptime costs ten times as much per row.
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def parse_optional_time(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


UtcTime = Annotated[datetime, PlainSerializer(format_time, return_type=str, when_used="always")]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES

    @property
    def is_active(self) -> bool:
        """Active jobs are never deleted by `clear`."""
        return not self.is_terminal


TERMINAL_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class PauseReason(StrEnum):
    USER = "user"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not_started"
    SHUTDOWN = "shutdown"
    # The cost the job's instruments reported passed the spec's `cost_limit_usd`.
    COST_LIMIT = "cost_limit"


class SheetStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_SHEET_STATUSES


TERMINAL_SHEET_STATUSES = frozenset(
    {SheetStatus.COMPLETED, SheetStatus.FAILED, SheetStatus.SKIPPED, SheetStatus.CANCELLED}
)
# Sheets that may be reset and re-run by `resume` with retry_failed.
RETRYABLE_SHEET_STATUSES = frozenset(
    {SheetStatus.FAILED, SheetStatus.SKIPPED, SheetStatus.CANCELLED}
)


def counts_as_done(status: SheetStatus, category: ErrorCategory | None) -> bool:
    """Whether a sheet is done for its dependents (and its job): completed, or skipped by
    its own condition."""
    return status is SheetStatus.COMPLETED or (
        status is SheetStatus.SKIPPED and category is ErrorCategory.CONDITION
    )


class Outcome(StrEnum):
    """How one attempt ended (history `outcome`)."""

    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"


class ErrorCategory(StrEnum):
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    # Out of credits, or the plan/billing is exhausted: waiting cannot help, so no retry.
    BILLING = "billing"
    TIMEOUT = "timeout"
    TRANSIENT = "transient"
    VALIDATION_FAILED = "validation_failed"
    CRASHED = "crashed"
    FAILED = "failed"
    # Not attempt failures, but reasons a sheet or job ended without running to success.
    DEPENDENCY_FAILED = "dependency_failed"
    # Skipped by its own `skip_when`/`skip_when_command`: done, and its dependents run.
    CONDITION = "condition"
    DEADLINE = "deadline"
    # The job's stored spec no longer loads (e.g. after an upgrade); only that job fails.
    SPEC_INVALID = "spec_invalid"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    # A person turned down an approval sheet.
    REJECTED = "rejected"


class WaitingReason(StrEnum):
    RATE_LIMIT = "rate_limit"
    BACKPRESSURE = "backpressure"
    RETRY_BACKOFF = "retry_backoff"
    # An approval sheet waits for a person's decision (`approve`, `podium approve`, or a
    # task's `tasks/update`).
    APPROVAL = "approval"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


# What became of a job's `on_success` follow-up. (No docstring: it would be published in
# every job detail's output schema, where the values say it.)
class FollowUpStatus(StrEnum):
    SUBMITTED = "submitted"
    # Not submitted and never tried again: its spec has an error, it lies outside the
    # allowed folders, the conductor refused it for good.
    REFUSED = "refused"
    # The conductor refused new work for now (backpressure): it is tried again.
    DEFERRED = "deferred"
    # The job is at its chain's `max_chain`: there is no follow-up, on purpose.
    CHAIN_ENDED = "chain_ended"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class ValidationResult(_Record):
    type: str
    passed: bool
    detail: str | None = None
    # For a failed check: what it looked at, what it wanted and what it found, so a
    # diagnosis can say "report.txt has no line matching ^[0-9]+$; it starts with ...".
    path: str | None = None
    expected: str | None = None
    found: str | None = None


class HistoryEntry(_Record):
    """One attempt of one sheet; written for every attempt, including interrupted ones."""

    sheet_num: int
    attempt: int
    started_at: UtcTime
    ended_at: UtcTime | None
    exit_code: int | None
    signal: int | None = None
    duration_seconds: float | None
    outcome: Outcome | None  # null only while the attempt is in flight
    error_category: ErrorCategory | None
    error: str | None = None
    validations: list[ValidationResult] = Field(default_factory=list)
    log_path: str | None
    # The log reached log_max_bytes (a marker ends it): the attempt's later output, how it
    # ended included, is not in it.
    log_truncated: bool = False
    instrument: str | None = None
    # What the CLI reported about the attempt (null when it reports nothing of the kind):
    # the session it ran in (what a retry resumes), the session it continued, and its cost.
    session_id: str | None = None
    resumed_session_id: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # An approval sheet's attempt: what was decided, by whom (the client's name), and why.
    decision: Decision | None = None
    decided_by: str | None = None
    note: str | None = None
    # The conductor that ran it (several conductors on one store: where its log is).
    conductor_id: str | None = None


class SheetState(_Record):
    sheet_num: int
    name: str | None
    status: SheetStatus
    attempts: int
    depends_on: list[int]
    instrument: str
    started_at: UtcTime | None
    completed_at: UtcTime | None
    duration_seconds: float | None
    last_error: str | None
    error_category: ErrorCategory | None
    waiting_reason: WaitingReason | None
    waiting_until: UtcTime | None
    output_tail: str | None
    log_uri: str | None


class FollowUp(_Record):
    """The last word on a job's follow-up: what happened, when, and to which spec."""

    status: FollowUpStatus
    job_id: str | None = None  # the follow-up job, once submitted
    error: str | None = None  # why not: refused, or deferred for now
    path: str | None = None  # the spec it submits (resolved)
    at: UtcTime  # when it came to this (a deferred one: first deferred for that reason)


class JobSummary(_Record):
    job_id: str
    name: str
    status: JobStatus
    total_sheets: int
    completed_sheets: int
    failed_sheets: int
    submitted_at: UtcTime
    started_at: UtcTime | None
    completed_at: UtcTime | None
    pause_reason: PauseReason | None
    error: str | None
    labels: list[str]


class JobDetail(JobSummary):
    """The checkpoint: a job with its sheets, assembled from rows on every read."""

    workspace: str
    priority: int
    sheets_total_matching: int
    sheets: list[SheetState]
    spec: dict[str, Any] | None = None
    # Totals over every attempt of the job, as its instruments reported them (null: none
    # reported any); `cost_limit_usd` pauses the job once `cost_usd` passes it.
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_limit_usd: float | None = None
    # The job whose `on_success` submitted this one, and how many such links lead here.
    chained_from: str | None = None
    chain_depth: int = 0
    # What became of this job's own `on_success` follow-up (null: it has none, or not yet).
    follow_up: FollowUp | None = None
    # Set while the job waits to run and its `hosts` name no live conductor: nothing will
    # run it until one starts (why, and what to do).
    waiting_for_host: str | None = None


class JobStatistics(_Record):
    job_id: str
    sheets_by_status: dict[str, int]
    total_attempts: int
    attempts_by_outcome: dict[str, int]
    total_duration_seconds: float


def sheet_log_uri(job_id: str, sheet_num: int) -> str:
    return f"podium://jobs/{job_id}/sheets/{sheet_num}/log"
